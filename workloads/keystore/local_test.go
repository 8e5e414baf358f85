package keystore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

var discardLogger = slog.New(slog.DiscardHandler)

// newTestLocal creates a key file in a temporary directory and loads it.
func newTestLocal(t testing.TB) *Local {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keystore.json")
	if err := GenerateLocalKeyFile(path); err != nil {
		t.Fatalf("GenerateLocalKeyFile: %v", err)
	}
	l, err := NewLocal(path, discardLogger)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

func TestGenerateLocalKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	if err := GenerateLocalKeyFile(path); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %v, want 0600", perm)
	}
	before, _ := os.ReadFile(path)
	if err := GenerateLocalKeyFile(path); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second GenerateLocalKeyFile: %v, want a refusal to overwrite", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("refused GenerateLocalKeyFile changed the existing file")
	}
	var kf map[string]string
	if err := json.Unmarshal(before, &kf); err != nil || kf["format"] != LocalKeyFileFormat {
		t.Errorf("key file is not the documented JSON (format %q): %v", kf["format"], err)
	}

	// Two files hold different keys.
	other := filepath.Join(t.TempDir(), "keystore.json")
	if err := GenerateLocalKeyFile(other); err != nil {
		t.Fatal(err)
	}
	if otherBytes, _ := os.ReadFile(other); bytes.Equal(before, otherBytes) {
		t.Error("two generated key files are identical")
	}
}

func TestNewLocalWarns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json")
	if err := GenerateLocalKeyFile(path); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := NewLocal(path, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "never use with patient data") {
		t.Errorf("NewLocal did not warn that it is for development only; log:\n%s", logs.String())
	}
}

func TestNewLocalRejectsBadFiles(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	file := func(format, wrapping, seed string) string {
		return `{"format":"` + format + `","wrapping_key":"` + wrapping + `","signing_seed":"` + seed + `"}`
	}
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", "", "empty"},
		{"not JSON", "wrapping_key=" + key, "syntax error"},
		{"array", "[]", "wrong type"},
		{"wrong format", file("securetext-local-keystore/v0", key, key), "field format"},
		{"short wrapping key", file(LocalKeyFileFormat, short, key), "wrapping_key holds 16 bytes"},
		{"missing signing seed", `{"format":"` + LocalKeyFileFormat + `","wrapping_key":"` + key + `"}`, "signing_seed holds 0 bytes"},
		{"bad base64", file(LocalKeyFileFormat, "!!!!"+key[4:], key), "not standard base64"},
		{"unknown field", `{"format":"` + LocalKeyFileFormat + `","wrapping_key":"` + key + `","signing_seed":"` + key + `","extra":1}`, "unknown field"},
		{"trailing data", file(LocalKeyFileFormat, key, key) + "{}", "after the JSON object"},
		{"number instead of string", `{"format":1}`, "wrong type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keystore.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := NewLocal(path, discardLogger)
			if err == nil {
				t.Fatal("NewLocal succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), key[:12]) || strings.Contains(err.Error(), short[:12]) {
				t.Errorf("error quotes key material: %q", err)
			}
		})
	}
	if _, err := NewLocal(filepath.Join(t.TempDir(), "missing.json"), discardLogger); err == nil {
		t.Error("NewLocal of a missing file succeeded")
	}
	if _, err := NewLocal(t.TempDir(), discardLogger); err == nil {
		t.Error("NewLocal of a directory succeeded")
	}
}

func TestLocalWrapUnwrap(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keystore.json")
	if err := GenerateLocalKeyFile(path); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(path, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := l.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dk.Plaintext) != DataKeySize || !strings.HasPrefix(dk.Wrapped, "local:v1:") {
		t.Fatalf("WrapNewKey = %d-byte key, wrapped %q", len(dk.Plaintext), dk.Wrapped)
	}
	got, err := l.Unwrap(ctx, dk.Wrapped)
	if err != nil || !bytes.Equal(got, dk.Plaintext) {
		t.Fatalf("Unwrap = %x, %v; want the wrapped key", got, err)
	}
	// The same file loaded again (a restart) unwraps what the first instance wrapped.
	reloaded, err := NewLocal(path, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reloaded.Unwrap(ctx, dk.Wrapped); err != nil || !bytes.Equal(got, dk.Plaintext) {
		t.Fatalf("Unwrap after reload = %x, %v; want the wrapped key", got, err)
	}
	dk2, err := l.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(dk.Plaintext, dk2.Plaintext) || dk.Wrapped == dk2.Wrapped {
		t.Error("two WrapNewKey calls returned the same key")
	}

	foreign := newTestLocal(t)
	for name, wrapped := range badWrappedKeys(t, dk.Wrapped, foreign) {
		t.Run(name, func(t *testing.T) {
			key, err := l.Unwrap(ctx, wrapped)
			if !errors.Is(err, ErrInvalidWrappedKey) || key != nil {
				t.Errorf("Unwrap(%q) = %x, %v; want ErrInvalidWrappedKey", wrapped, key, err)
			}
		})
	}
}

// badWrappedKeys returns wrapped keys that must not unwrap, derived from a good one, and one
// wrapped by foreign's key.
func badWrappedKeys(t testing.TB, good string, foreign Service) map[string]string {
	t.Helper()
	fdk, err := foreign.WrapNewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	enc := strings.TrimPrefix(good, "local:v1:")
	flip := func(i int) string {
		b := []byte(enc)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return "local:v1:" + string(b)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(enc)
	raw[len(raw)-1] ^= 1
	return map[string]string{
		"empty":                 "",
		"prefix only":           "local:v1:",
		"other version":         "local:v2:" + enc,
		"vault form":            "vault:v1:" + enc,
		"flipped nonce char":    flip(0),
		"flipped middle char":   flip(len(enc) / 2),
		"flipped tag bit":       "local:v1:" + base64.RawURLEncoding.EncodeToString(raw),
		"truncated":             good[:len(good)-4],
		"extended":              good + "AAAA",
		"padded":                good + "==",
		"standard base64":       "local:v1:" + base64.StdEncoding.EncodeToString(raw),
		"newline inside":        "local:v1:" + enc[:40] + "\n" + enc[40:],
		"wrapped by other file": fdk.Wrapped,
		"not base64":            "local:v1:" + strings.Repeat("*", len(enc)),
	}
}

func TestLocalSign(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t)
	pub, err := l.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := audit.CheckpointBody("acme", 3, [32]byte{1}, time.Unix(1700000000, 0))
	sig, keyID, err := l.Sign(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, sig) || keyID != audit.KeyID(pub) {
		t.Errorf("signature does not verify or key id %q != %q", keyID, audit.KeyID(pub))
	}
	if err := l.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	pub[0] ^= 1 // PublicKey returns a copy
	if again, _ := l.PublicKey(ctx); again[0] == pub[0] {
		t.Error("PublicKey returned Local's own slice")
	}
}
