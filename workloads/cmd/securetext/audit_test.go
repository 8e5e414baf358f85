package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

func TestRun(t *testing.T) {
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

	if err := run(good, ""); err != nil {
		t.Errorf("good export: %v", err)
	}
	if err := run(good, base64.StdEncoding.EncodeToString(pub)); err != nil {
		t.Errorf("good export with -key: %v", err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if err := run(good, base64.StdEncoding.EncodeToString(other)); err == nil {
		t.Error("good export accepted under another -key")
	}
	if err := run(bad, ""); err == nil || !strings.Contains(err.Error(), "event 1 (line 2)") {
		t.Errorf("tampered export: err = %v", err)
	}
	if err := run(good, "not-base64"); err == nil {
		t.Error("bad -key accepted")
	}
}
