package keystore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// testStatement is a discovery statement of tenant.
func testStatement(t testing.TB, tenant string) []byte {
	t.Helper()
	body, err := discovery.Statement{
		Tenant: tenant, Hold: "matter-117", HoldUID: "5d0c7a51", ExportedBy: "legal-1",
		ExportedAt: time.Unix(1700000000, 0), Messages: 3, Bytes: 4096, SHA256: [32]byte{1, 2, 3},
	}.Body()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func manifestRequestBody(statement []byte) string {
	return `{"statement":"` + base64.StdEncoding.EncodeToString(statement) + `"}`
}

// TestServerSignsManifests: the gateway gets a discovery statement of its tenant signed with the
// audit key, and nothing else for this purpose: a checkpoint body, another tenant's statement or
// a statement not in canonical form is refused, and so is every caller but the gateway.
func TestServerSignsManifests(t *testing.T) {
	ctx := context.Background()
	local := newTestLocal(t)
	var logged bytes.Buffer
	f := startKeystore(t, local, func(c *ServerConfig) { c.Logger = slog.New(slog.NewJSONHandler(&logged, nil)) })
	gw := f.gateway(t)
	pub, err := local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}

	body := testStatement(t, testTenant)
	sig, keyID, err := gw.SignManifest(ctx, body)
	if err != nil {
		t.Fatalf("SignManifest: %v", err)
	}
	if !ed25519.Verify(pub, body, sig) || keyID != audit.KeyID(pub) {
		t.Fatalf("signature does not verify under the audit key, or key id %s is not %s", keyID, audit.KeyID(pub))
	}
	if !strings.Contains(logged.String(), `"msg":"keystore signed a discovery manifest"`) || !strings.Contains(logged.String(), `"hold":"matter-117"`) {
		t.Errorf("the signature is not in the keystore's log:\n%s", logged.String())
	}

	// The client refuses to send what is not a statement; the server refuses it too.
	checkpoint := audit.CheckpointBody(testTenant, 9, [32]byte{7}, time.Unix(1700000000, 0))
	if _, _, err := gw.SignManifest(ctx, checkpoint); !errors.Is(err, ErrNotManifest) {
		t.Errorf("client SignManifest of a checkpoint body: %v, want ErrNotManifest", err)
	}
	cert := f.clientCert(t, testTenant, tenantpki.ComponentGateway)
	hc := f.httpClient(t, &cert)
	for name, offered := range map[string][]byte{
		"a checkpoint body":          checkpoint,
		"another tenant's statement": testStatement(t, "globex"),
		"a statement with more":      append(append([]byte(nil), body...), "extra line\n"...),
		"a statement not canonical":  bytes.Replace(body, []byte("messages 3\n"), []byte("messages 03\n"), 1),
		"an empty body":              nil,
	} {
		a := f.do(t, hc, http.MethodPost, "/v1/manifest", manifestRequestBody(offered))
		if a.status != http.StatusBadRequest || !strings.Contains(a.problem(t).Detail, "not a discovery manifest statement") {
			t.Errorf("%s: %d %s, want 400 naming the refusal", name, a.status, a.body)
		}
	}

	// Only the gateway exports holds, so only the gateway may have manifests signed.
	viewer := f.client(t, f.clientCert(t, testTenant, tenantpki.ComponentViewer), 0)
	if _, _, err := viewer.SignManifest(ctx, body); !errors.Is(err, ErrForbidden) {
		t.Fatalf("viewer SignManifest: %v, want ErrForbidden", err)
	}
	wantAudit(t, f, "keystore-client:viewer", map[string]string{"reason": ReasonComponentNotAllowed, "operation": "sign-manifest"})
}

// TestManifestAndCheckpointSignaturesDoNotCross: one key signs both, and neither signature
// passes for the other.
func TestManifestAndCheckpointSignaturesDoNotCross(t *testing.T) {
	ctx := context.Background()
	local := newTestLocal(t)
	f := startKeystore(t, local, nil)
	gw := f.gateway(t)
	pub, err := local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chain := audit.NewChain(testTenant, 0, [32]byte{})
	cp, err := gw.ExtendCheckpoint(ctx, []audit.Event{chain.Append(audit.Event{Time: time.Unix(1700000000, 0), Kind: audit.KindAccepted, Actor: "system"})})
	if err != nil {
		t.Fatal(err)
	}
	body := testStatement(t, testTenant)
	sig, _, err := gw.SignManifest(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	asCheckpoint := cp
	asCheckpoint.Signature = sig
	if err := audit.VerifyCheckpoint(pub, asCheckpoint); !errors.Is(err, audit.ErrBadSignature) {
		t.Errorf("a manifest signature verifies as a checkpoint: %v", err)
	}
	if ed25519.Verify(pub, body, cp.Signature) {
		t.Error("a checkpoint signature verifies as a manifest")
	}
	// No checkpoint body is a statement, whatever the tenant: the first lines differ.
	for _, tenant := range []string{testTenant, "securetext discovery manifest v1", "x\nsecuretext discovery manifest v1"} {
		if _, err := discovery.ParseStatement(audit.CheckpointBody(tenant, 1, [32]byte{}, time.Now())); !errors.Is(err, discovery.ErrNotStatement) {
			t.Errorf("checkpoint body of tenant %q parses as a statement: %v", tenant, err)
		}
	}
}

// TestInProcessSignsManifests: what securetext dev signs with, the same checks in process.
func TestInProcessSignsManifests(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "local-key.json")
	if err := GenerateLocalKeyFile(path); err != nil {
		t.Fatal(err)
	}
	keys, err := NewLocalInProcess(path, testTenant, discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := testStatement(t, testTenant)
	sig, keyID, err := keys.SignManifest(ctx, body)
	if err != nil || !ed25519.Verify(pub, body, sig) || keyID != audit.KeyID(pub) {
		t.Fatalf("SignManifest: %v", err)
	}
	for name, offered := range map[string][]byte{
		"a checkpoint body":          audit.CheckpointBody(testTenant, 1, [32]byte{}, time.Now()),
		"another tenant's statement": testStatement(t, "globex"),
	} {
		if _, _, err := keys.SignManifest(ctx, offered); !errors.Is(err, ErrNotManifest) {
			t.Errorf("%s: %v, want ErrNotManifest", name, err)
		}
	}
}

// TestTransitSignsManifests: in production the signature is made in Vault Transit, with the
// key that signs checkpoints, through the keystore's route.
func TestTransitSignsManifests(t *testing.T) {
	fx := newTransitFixture(t)
	ks := fx.start(t, transitOpts{})
	waitReady(t, ks)
	ctx := t.Context()
	f := startKeystore(t, ks, nil)
	gw := f.gateway(t)
	pub, err := ks.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := testStatement(t, testTenant)
	sig, keyID, err := gw.SignManifest(ctx, body)
	if err != nil {
		t.Fatalf("SignManifest through Transit: %v", err)
	}
	if !ed25519.Verify(pub, body, sig) || keyID != audit.KeyID(pub) {
		t.Fatalf("Transit's manifest signature does not verify under the audit key (key id %s)", keyID)
	}
	a := f.do(t, f.httpClient(t, new(f.clientCert(t, testTenant, tenantpki.ComponentGateway))), http.MethodPost, "/v1/manifest",
		manifestRequestBody(audit.CheckpointBody(testTenant, 1, [32]byte{}, time.Now())))
	if a.status != http.StatusBadRequest {
		t.Errorf("a checkpoint body through Transit: %d %s, want 400", a.status, a.body)
	}
}
