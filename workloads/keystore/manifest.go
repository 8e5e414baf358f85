package keystore

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// Discovery manifests are the second thing the tenant's audit key signs, beside audit
// checkpoints. POST /v1/manifest with {"statement": "<base64 of a discovery statement>"}
// answers {"signature": "<base64>", "key_id": "ed25519:…"}; only the gateway may call it
// (manifestComponents), since only the gateway exports legal holds.
//
// The keystore signs a statement only if discovery.ParseStatement reads it back to exactly the
// bytes given and it names this keystore's tenant: it then starts with the line "securetext
// discovery manifest v1" and the origin securetext.io/discovery/<tenant>. The notary builds
// every checkpoint body itself, starting with securetext.io/audit/<tenant>. So this route
// cannot be used to get a checkpoint signed, the notary cannot be used to get a manifest
// signed, and a signature made for one purpose never verifies for the other.

// ErrNotManifest means a body offered for a manifest signature is not a discovery manifest
// statement of this keystore's tenant. Nothing was signed; retrying does not help.
var ErrNotManifest = errors.New("keystore: not a discovery manifest statement of this tenant")

// manifestComponents may have manifests signed.
var manifestComponents = []string{tenantpki.ComponentGateway}

// signManifest signs body, which must be a discovery manifest statement of tenant, with signer
// (the backend's audit signing key).
func signManifest(ctx context.Context, signer audit.Signer, tenant string, body []byte) ([]byte, string, error) {
	st, err := discovery.ParseStatement(body)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrNotManifest, err)
	}
	if st.Tenant != tenant {
		return nil, "", fmt.Errorf("%w: it names tenant %s", ErrNotManifest, st.Tenant)
	}
	sig, keyID, err := signer.Sign(ctx, body)
	if err != nil {
		return nil, "", fmt.Errorf("sign the discovery manifest of hold %s: %w", st.Hold, err)
	}
	return sig, keyID, nil
}

type manifestRequest struct {
	Statement []byte `json:"statement"`
}

type manifestAnswer struct {
	Signature []byte `json:"signature"`
	KeyID     string `json:"key_id"`
}

// signManifestRoute serves POST /v1/manifest. Each signature is logged with what it covers
// (hold, account, count, the statement's SHA-256): the keystore's own record of every export,
// out of the database's reach.
func (s *Server) signManifestRoute(w http.ResponseWriter, r *http.Request) {
	const example = `{"statement": "<base64 of the discovery manifest statement>"}`
	var req manifestRequest
	if !decodeRequest(w, r, &req, false, example) {
		return
	}
	signer, ok := s.svc.(audit.Signer)
	if !ok {
		s.fail(w, r, "sign-manifest", errors.New("the backend holds no audit signing key"))
		return
	}
	sig, keyID, err := signManifest(r.Context(), signer, s.tenant, req.Statement)
	switch {
	case errors.Is(err, ErrNotManifest):
		badRequest(w, err.Error()+"; send "+example)
		return
	case err != nil:
		s.fail(w, r, "sign-manifest", err)
		return
	}
	st, _ := discovery.ParseStatement(req.Statement) // parsed once already
	sum := sha256.Sum256(req.Statement)
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "keystore signed a discovery manifest",
		slog.String("tenant", s.tenant), slog.String("hold", st.Hold), slog.String("hold_uid", st.HoldUID),
		slog.String("exported_by", st.ExportedBy), slog.String("messages", strconv.Itoa(st.Messages)),
		slog.String("statement_sha256", hex.EncodeToString(sum[:])), slog.String("key_id", keyID))
	writeJSONValue(w, manifestAnswer{Signature: sig, KeyID: keyID})
}

// SignManifest has the keystore sign body, a discovery manifest statement of this tenant, with
// the tenant's audit key. A body that is not one is refused before it is sent, with an error
// wrapping ErrNotManifest; the keystore checks again.
func (c *Client) SignManifest(ctx context.Context, body []byte) ([]byte, string, error) {
	if _, err := discovery.ParseStatement(body); err != nil {
		return nil, "", fmt.Errorf("keystore: sign-manifest: %w: %w", ErrNotManifest, err)
	}
	req, err := json.Marshal(manifestRequest{Statement: body})
	if err != nil {
		return nil, "", fmt.Errorf("keystore: sign-manifest: encode request: %w", err)
	}
	var ans manifestAnswer
	if err := c.call(ctx, "sign-manifest", http.MethodPost, "/v1/manifest", req, &ans); err != nil {
		return nil, "", err
	}
	if len(ans.Signature) != ed25519.SignatureSize || ans.KeyID == "" {
		return nil, "", fmt.Errorf("keystore: sign-manifest: the answer holds a %d-byte signature and key id %q", len(ans.Signature), ans.KeyID)
	}
	return ans.Signature, ans.KeyID, nil
}

// SignManifest signs a discovery manifest statement of the notary's tenant with the backend's
// audit key, as the keystore's route does: what `securetext dev` uses.
func (p InProcess) SignManifest(ctx context.Context, body []byte) ([]byte, string, error) {
	signer, ok := p.Service.(audit.Signer)
	if !ok || p.Notary == nil {
		return nil, "", errors.New("keystore: sign-manifest: the in-process backend holds no audit signing key")
	}
	return signManifest(ctx, signer, p.Notary.Tenant(), body)
}
