package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
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

// The attack of #19 item 1: someone with write access to the tenant's database replaces its
// audit trail (31 events) with a shorter one re-linked from genesis (15 events) and no
// checkpoints. The signer refuses to sign it, and audit verify refuses every export of it
// against the key and against the checkpoint a compliance officer kept.
func TestAuditRewriteAttackRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbFile := filepath.Join(dir, "tenant.db")
	keyFile := filepath.Join(dir, "keystore.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	appendEvents := func(file string, n int, mark string) {
		t.Helper()
		st, err := store.Open(ctx, "sqlite:"+file, "clinic-a")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := range n {
			ev := audit.Event{Time: time.Unix(1700000000+int64(i), 0), Kind: audit.KindAdminAction, Actor: "operator", Detail: map[string]string{"n": fmt.Sprint(mark, i)}}
			if err := st.AppendAudit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		for {
			n, err := st.SequenceAudit(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
	}
	export := func(name string, extra ...string) (string, error) {
		out := filepath.Join(dir, name)
		args := append([]string{"export", "-dsn", "sqlite:" + dbFile, "-tenant", "clinic-a", "-local-key-file", keyFile, "-o", out}, extra...)
		return out, runAudit(ctx, args, io.Discard, io.Discard)
	}
	local, err := keystore.NewLocal(keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := local.PublicKey(ctx)
	key := base64.StdEncoding.EncodeToString(pub)
	verify := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := auditVerify(append([]string{"-key", key}, args...), &out, io.Discard)
		return out.String(), err
	}

	// The honest trail, exported twice a month apart; the officer keeps the first export.
	appendEvents(dbFile, 31, "honest")
	month1, err := export("month1.ndjson")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	appendEvents(dbFile, 5, "later")
	month2, err := export("month2.ndjson")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if out, err := verify("-trusted", month1, month2); err != nil || !strings.Contains(out, "extends the trusted checkpoint at size 31") {
		t.Fatalf("the honest export against last month's: %q %v", out, err)
	}

	// The rewrite: a database whose trail is 15 events from genesis, no checkpoints.
	forgedFile := filepath.Join(dir, "forged.db")
	appendEvents(forgedFile, 15, "forged")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(dbFile + suffix)
		if b, err := os.ReadFile(forgedFile + suffix); err == nil {
			if err := os.WriteFile(dbFile+suffix, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err = export("rewritten.ndjson")
	if err == nil || !strings.Contains(err.Error(), audit.ErrNotExtension.Error()) {
		t.Fatalf("export of the rewritten trail: %v; want the signer's refusal", err)
	}
	t.Logf("the signer answered: %v", err)

	// An export of the rewritten trail that carries last month's real checkpoints, and one
	// signed with a key of the forger's own.
	st, err := store.Open(ctx, "sqlite:"+dbFile, "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := st.AuditEvents(ctx, 0, 100)
	st.Close()
	if err != nil || len(forged) != 15 {
		t.Fatalf("forged events: %d (%v)", len(forged), err)
	}
	f, _ := os.Open(month1)
	realCP, err := audit.ReadTrustedCheckpoint(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	forgerKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	selfSigned, err := audit.SignCheckpoint(ctx, audit.NewEd25519Signer(forgerKey), "clinic-a", 15, forged[14].Hash, time.Unix(1800000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, pub ed25519.PublicKey, cps []audit.Checkpoint) string {
		var buf bytes.Buffer
		if err := audit.Export(&buf, pub, forged, cps); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	realCPAt15 := realCP
	realCPAt15.Size, realCPAt15.Head = 15, forged[14].Hash // the signature covers size 31 and the real head
	reSigned := write("resigned.ndjson", forgerKey.Public().(ed25519.PublicKey), []audit.Checkpoint{selfSigned})
	withRealCP := write("with-real-checkpoint.ndjson", pub, []audit.Checkpoint{realCPAt15})
	for name, args := range map[string][]string{
		"re-signed with the forger's key, against the tenant's key": {reSigned},
		"re-signed, against last month's checkpoint (no -key)":      {"-trusted", month1, reSigned},
		"the real checkpoint moved to the forged head":              {withRealCP},
	} {
		if name == "re-signed, against last month's checkpoint (no -key)" {
			var out bytes.Buffer
			err = auditVerify(args, &out, io.Discard)
		} else {
			_, err = verify(args...)
		}
		if err == nil {
			t.Errorf("%s: verified", name)
			continue
		}
		t.Logf("audit verify, %s: %v", name, err)
	}
}
