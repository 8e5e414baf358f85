package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/store"
)

// TestAuditExportThenVerify exports a real (SQLite) store's trail, signed by the local keystore, and
// verifies it; a tampered copy fails at the changed event.
func TestAuditExportThenVerify(t *testing.T) {
	ctx := context.Background()
	dir, dsn, keyFile, st := auditTenant(t)
	for i := range 3 {
		ev := audit.Event{Time: time.Now(), Kind: audit.KindAdminAction, Actor: "operator", Detail: map[string]string{"n": string(rune('0' + i))}}
		if err := st.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.SequenceAudit(ctx, 100); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out := filepath.Join(dir, "export.ndjson")
	if err := runAudit(ctx, []string{"export", "-dsn", dsn, "-tenant", "clinic-a", "-local-key-file", keyFile, "-o", out}, io.Discard, io.Discard); err != nil {
		t.Fatalf("export: %v", err)
	}
	local, err := keystore.NewLocal(keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := runAudit(ctx, []string{"verify", "-key", base64.StdEncoding.EncodeToString(pub), out}, io.Discard, io.Discard); err != nil {
		t.Fatalf("verify the export: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyWithKey(f, pub)
	f.Close()
	if err != nil || rep.Events != 3 {
		t.Fatalf("export holds %d verified events (%v), want 3", rep.Events, err)
	}

	raw, _ := os.ReadFile(out)
	tampered := filepath.Join(dir, "tampered.ndjson")
	if err := os.WriteFile(tampered, bytes.Replace(raw, []byte(`"n":"1"`), []byte(`"n":"9"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	err = auditVerify([]string{"-key", base64.StdEncoding.EncodeToString(pub), tampered}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "2") {
		t.Fatalf("verify a tampered export: %v; want a failure at sequence 2", err)
	}

	// Refusals that say what to fix.
	for _, args := range [][]string{
		{"-tenant", "clinic-a", "-local-key-file", keyFile},
		{"-dsn", dsn, "-tenant", "clinic-a"},
		{"-dsn", dsn, "-tenant", "clinic-a", "-local-key-file", keyFile, "-keystore-url", "https://127.0.0.1:1"},
		{"-dsn", dsn, "-tenant", "clinic-a", "-local-key-file", keyFile, "-o", out}, // exists: never overwritten
	} {
		if err := auditExport(ctx, args, io.Discard, io.Discard); err == nil {
			t.Errorf("export %v succeeded", args)
		}
	}
}

// auditTenant makes tenant clinic-a's SQLite database and local key file in a temporary folder
// for the audit commands, and returns the folder, the DSN, the key file and the open store.
func auditTenant(t *testing.T) (dir, dsn, keyFile string, st *store.Store) {
	t.Helper()
	dir = t.TempDir()
	dsn = "sqlite:" + filepath.Join(dir, "tenant.db")
	keyFile = filepath.Join(dir, "keystore.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), dsn, "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	return dir, dsn, keyFile, st
}
