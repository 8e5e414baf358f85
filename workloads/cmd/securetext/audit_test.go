package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

func TestAuditVerify(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	c := audit.NewChain("clinic-a", 0, [32]byte{})
	e := c.Append(audit.Event{Time: time.Unix(0, 0), Kind: audit.KindAccepted, Actor: "system"})
	cp, err := audit.SignCheckpoint(context.Background(), audit.NewEd25519Signer(key), "clinic-a", e.Seq, e.Hash, e.Time)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := audit.Export(&buf, pub, []audit.Event{e}, []audit.Checkpoint{cp}); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "good.ndjson")
	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(good, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, bytes.Replace(buf.Bytes(), []byte(`"system"`), []byte(`"admin"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := verifyExport(good, "", "", io.Discard); err != nil {
		t.Errorf("good export: %v", err)
	}
	if err := verifyExport(good, base64.StdEncoding.EncodeToString(pub), "", io.Discard); err != nil {
		t.Errorf("good export with -key: %v", err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if err := verifyExport(good, base64.StdEncoding.EncodeToString(other), "", io.Discard); err == nil {
		t.Error("good export accepted under another -key")
	}
	if err := verifyExport(bad, "", "", io.Discard); err == nil || !strings.Contains(err.Error(), "event 1 (line 2)") {
		t.Errorf("tampered export: err = %v", err)
	}
	if err := verifyExport(good, "not-base64", "", io.Discard); err == nil {
		t.Error("bad -key accepted")
	}
}

// Every subcommand is reached through run, the binary's one entry point; each refuses to start
// without what it needs and says what is missing.
func TestRunDispatchesSubcommands(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"keystore"}, "-tenant is required"},
		{[]string{"audit"}, "give export, certificate or verify"},
		{[]string{"audit", "export"}, "-dsn and -tenant are required"},
		{[]string{"audit", "verify"}, "want one FILE"},
		{[]string{"gateway", "-no-such-flag"}, "no-such-flag"},
		{[]string{"viewer", "-no-such-flag"}, "no-such-flag"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{nil, "no command given"},
	} {
		err := run(t.Context(), c.args, env, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("securetext %v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// TestAuditVerifyCertificate: `securetext audit verify` checks a certificate of destruction
// offline with the tenant's key and says what it certifies.
func TestAuditVerifyCertificate(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	c := audit.NewChain("clinic-a", 0, [32]byte{})
	c.Append(audit.Event{Time: time.Unix(0, 0), Kind: audit.KindAccepted, Actor: "ehr", MessageID: "m1"})
	purged := c.Append(audit.Event{Time: time.Unix(3600, 0), Kind: audit.KindPurged, Actor: "retention", MessageID: "m1",
		Detail: map[string]string{"rule": "hipaa-standard", "generation": "2"}})
	after := c.Append(audit.Event{Time: time.Unix(3601, 0), Kind: audit.KindAccepted, Actor: "ehr", MessageID: "m2"})
	cp, err := audit.SignCheckpoint(context.Background(), audit.NewEd25519Signer(key), "clinic-a", after.Seq, after.Hash, after.Time)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := audit.WriteCertificate(&buf, pub, []audit.Event{purged, after}, cp); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "certificate.ndjson")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := verifyExport(path, base64.StdEncoding.EncodeToString(pub), "", &out); err != nil {
		t.Fatal(err)
	}
	want := "certificate of destruction: message m1 purged at 1970-01-01T01:00:00Z under retention rule hipaa-standard (generation 2); event 2 of the signed audit trail"
	if !strings.Contains(out.String(), want) {
		t.Errorf("verify says\n%s\nwant a line\n%s", out.String(), want)
	}
	altered := filepath.Join(t.TempDir(), "altered.ndjson")
	if err := os.WriteFile(altered, bytes.Replace(buf.Bytes(), []byte(`"messageId":"m1","seq"`), []byte(`"messageId":"m9","seq"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := verifyExport(altered, base64.StdEncoding.EncodeToString(pub), "", io.Discard); err == nil || !strings.Contains(err.Error(), "names message m9") {
		t.Errorf("an altered certificate: %v", err)
	}
}
