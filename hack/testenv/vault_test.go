package testenv

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
)

func TestVaultTransit(t *testing.T) {
	v := StartVault(t)
	client := v.Client(t)
	logical := client.Logical()
	ctx := t.Context()

	if err := client.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("enable transit: %v", err)
	}
	write := func(path string, data map[string]any) *vaultapi.Secret {
		t.Helper()
		secret, err := logical.WriteWithContext(ctx, path, data)
		if err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		return secret
	}
	b64 := base64.StdEncoding.EncodeToString

	t.Run("aes256-gcm96", func(t *testing.T) {
		write("transit/keys/messages", map[string]any{"type": "aes256-gcm96"})
		plaintext := []byte("patient 4711: potassium 6.1 mmol/L")

		ciphertext := write("transit/encrypt/messages", map[string]any{"plaintext": b64(plaintext)}).Data["ciphertext"].(string)
		if !strings.HasPrefix(ciphertext, "vault:v1:") {
			t.Fatalf("ciphertext %q: want prefix vault:v1:", ciphertext)
		}
		decrypted := write("transit/decrypt/messages", map[string]any{"ciphertext": ciphertext}).Data["plaintext"].(string)
		if got, err := base64.StdEncoding.DecodeString(decrypted); err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("decrypt: got %q (%v), want %q", got, err, plaintext)
		}

		// Flip one bit of the sealed box: AES-GCM's tag must reject it.
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(ciphertext, "vault:v1:"))
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)/2] ^= 1
		tampered := "vault:v1:" + b64(raw)
		if _, err := logical.WriteWithContext(ctx, "transit/decrypt/messages", map[string]any{"ciphertext": tampered}); err == nil {
			t.Fatal("decrypting a tampered ciphertext succeeded")
		} else if re := (*vaultapi.ResponseError)(nil); !errors.As(err, &re) || re.StatusCode != 400 {
			t.Fatalf("decrypt tampered: want a 400 response, got %v", err)
		}
	})

	t.Run("batch", func(t *testing.T) {
		var items []map[string]any
		for i := range 3 {
			items = append(items, map[string]any{"plaintext": b64(fmt.Appendf(nil, "item %d", i))})
		}
		results := write("transit/encrypt/messages", map[string]any{"batch_input": items}).Data["batch_results"].([]any)
		if len(results) != 3 {
			t.Fatalf("batch encrypt: %d results, want 3", len(results))
		}
		var decryptItems []map[string]any
		for i, r := range results {
			r := r.(map[string]any)
			if r["error"] != nil && r["error"] != "" {
				t.Fatalf("batch item %d: %v", i, r["error"])
			}
			decryptItems = append(decryptItems, map[string]any{"ciphertext": r["ciphertext"]})
		}
		decrypted := write("transit/decrypt/messages", map[string]any{"batch_input": decryptItems}).Data["batch_results"].([]any)
		for i, r := range decrypted {
			if got, want := r.(map[string]any)["plaintext"], items[i]["plaintext"]; got != want {
				t.Errorf("batch item %d: decrypted %v, want %v", i, got, want)
			}
		}
	})

	t.Run("ed25519", func(t *testing.T) {
		write("transit/keys/checkpoints", map[string]any{"type": "ed25519"})
		input := b64([]byte("tree size 42, head 9f86d081884c7d65"))
		signature := write("transit/sign/checkpoints", map[string]any{"input": input}).Data["signature"].(string)

		verify := func(input string) bool {
			t.Helper()
			return write("transit/verify/checkpoints", map[string]any{"input": input, "signature": signature}).Data["valid"].(bool)
		}
		if !verify(input) {
			t.Fatal("signature does not verify")
		}
		if verify(b64([]byte("tree size 41, head 9f86d081884c7d65"))) {
			t.Fatal("signature verifies for other input")
		}
	})
}

// TestVaultStopStart stops the server and starts another, as outage tests do.
func TestVaultStopStart(t *testing.T) {
	v := StartVault(t)
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := v.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	client := v.Client(t)
	client.SetMaxRetries(0)
	if _, err := client.Sys().HealthWithContext(t.Context()); err == nil {
		t.Fatal("stopped Vault still answers")
	}

	v2 := StartVault(t)
	health, err := v2.Client(t).Sys().HealthWithContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !health.Initialized || health.Sealed {
		t.Fatalf("restarted Vault: initialized=%v sealed=%v", health.Initialized, health.Sealed)
	}
}
