package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Checkpoint commits to a tenant's chain up to Size events: Head is the hash of event Size.
// Tenant, Size, Head and Time are signed (see CheckpointBody); KeyID only names the key.
type Checkpoint struct {
	Tenant    string
	Size      uint64
	Head      [32]byte
	Time      time.Time
	KeyID     string
	Signature []byte
}

// ErrBadSignature means a checkpoint signature does not verify under the given key.
var ErrBadSignature = errors.New("audit: checkpoint signature does not verify")

// CheckpointBody is the signed message, modelled on the C2SP tlog-checkpoint note body: an
// origin line, the tree size in decimal, the head hash in standard base64, each ending in a
// newline, then one extension line (C2SP allows them after the first three) with the signing
// time, so that "the trail had N events at time T" is itself signed. The tenant is part of the
// origin, so a checkpoint cannot be replayed for another tenant.
func CheckpointBody(tenant string, size uint64, head [32]byte, at time.Time) []byte {
	return []byte(CheckpointOrigin(tenant) +
		strconv.FormatUint(size, 10) + "\n" +
		base64.StdEncoding.EncodeToString(head[:]) + "\n" +
		"time " + at.UTC().Format(time.RFC3339Nano) + "\n")
}

// CheckpointOrigin is the first line of every checkpoint body of tenant, newline included. A
// signer that signs only bodies starting with it cannot be used to sign anything else.
func CheckpointOrigin(tenant string) string { return "securetext.io/audit/" + tenant + "\n" }

// Signer signs checkpoint bodies. The keystore implements it with a Vault Transit ed25519 key
// (POST transit/sign/:name), so the database never holds the signing key.
type Signer interface {
	Sign(ctx context.Context, msg []byte) (sig []byte, keyID string, err error)
}

// SignCheckpoint signs the chain head (size, head) of tenant.
func SignCheckpoint(ctx context.Context, signer Signer, tenant string, size uint64, head [32]byte, now time.Time) (Checkpoint, error) {
	// A newline in the tenant would let one origin line pose as another body.
	if tenant == "" || strings.ContainsAny(tenant, "\n\r") {
		return Checkpoint{}, errors.New("sign audit checkpoint: tenant name must be non-empty and a single line")
	}
	now = now.UTC()
	sig, keyID, err := signer.Sign(ctx, CheckpointBody(tenant, size, head, now))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("sign audit checkpoint for tenant %s at size %d: %w", tenant, size, err)
	}
	return Checkpoint{Tenant: tenant, Size: size, Head: head, Time: now, KeyID: keyID, Signature: sig}, nil
}

// VerifyCheckpoint checks c's signature under pub.
func VerifyCheckpoint(pub ed25519.PublicKey, c Checkpoint) error {
	// ed25519.Verify panics on a public key of the wrong length.
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify audit checkpoint: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, CheckpointBody(c.Tenant, c.Size, c.Head, c.Time), c.Signature) {
		return fmt.Errorf("verify audit checkpoint at size %d: %w", c.Size, ErrBadSignature)
	}
	return nil
}

// Ed25519Signer signs with a key held in memory. It serves tests and the local development
// backend only; production signs in Vault Transit.
type Ed25519Signer struct {
	key   ed25519.PrivateKey
	keyID string
}

// NewEd25519Signer returns a Signer over key. Its key id is KeyID(key.Public()).
func NewEd25519Signer(key ed25519.PrivateKey) *Ed25519Signer {
	return &Ed25519Signer{key: key, keyID: KeyID(key.Public().(ed25519.PublicKey))}
}

// Sign implements Signer.
func (s *Ed25519Signer) Sign(_ context.Context, msg []byte) ([]byte, string, error) {
	return ed25519.Sign(s.key, msg), s.keyID, nil
}

// KeyID names a public key by fingerprint ("ed25519:" and the first 8 bytes of its SHA-256, in
// hex), short enough to read aloud when comparing with the key the tenant published.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}
