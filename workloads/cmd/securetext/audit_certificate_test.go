package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// TestAuditCertificateFromStore: a message purged in a real (SQLite) store gets a certificate
// of destruction that `audit verify` checks with the tenant's key; a message not purged gets
// none.
func TestAuditCertificateFromStore(t *testing.T) {
	ctx := context.Background()
	dir, dsn, keyFile, st := auditTenant(t)
	accept := func(phone string) string {
		r := storetest.NewClockRequest(phone, time.Now())
		if _, err := st.AcceptMessage(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r.MessageID
	}
	gone, kept := accept("+12025550143"), accept("+12025550144")
	if err := st.Purge(ctx, gone, audit.Event{Kind: audit.KindPurged, Actor: "retention", Detail: map[string]string{"rule": "hipaa-standard"}}); err != nil {
		t.Fatal(err)
	}
	accept("+12025550145") // an event after the purge, in the certificate's segment
	st.Close()

	local, err := keystore.NewLocal(keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "certificate.ndjson")
	args := []string{"certificate", "-dsn", dsn, "-tenant", "clinic-a", "-local-key-file", keyFile}
	if err := runAudit(ctx, append(args, "-message", gone, "-o", out), io.Discard, io.Discard); err != nil {
		t.Fatalf("certificate: %v", err)
	}
	var said bytes.Buffer
	if err := runAudit(ctx, []string{"verify", "-key", base64.StdEncoding.EncodeToString(pub), out}, &said, io.Discard); err != nil {
		t.Fatalf("verify the certificate: %v", err)
	}
	if want := "certificate of destruction: message " + gone + " purged at "; !strings.Contains(said.String(), want) ||
		!strings.Contains(said.String(), "under retention rule hipaa-standard") {
		t.Errorf("verify says\n%s\nwant %q and the rule", said.String(), want)
	}
	err = runAudit(ctx, append(args, "-message", kept), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "has no purge in the audit trail") {
		t.Errorf("a certificate for a message not purged: %v", err)
	}
}
