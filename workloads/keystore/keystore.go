// Package keystore wraps and unwraps per-message data keys and signs audit checkpoints for one
// tenant. It is the only component with a Vault identity: gateway and viewer reach it through
// Client, over mutually authenticated TLS, and never hold a Vault token themselves.
//
// Guarantees:
//   - WrapNewKey returns a data key only together with its wrapped form: a key that could not be
//     wrapped is zeroed and never leaves the keystore.
//   - A failure of the key holder (Vault sealed, unreachable, slow, refusing with 403/429/5xx)
//     is an error for which IsTemporary reports true, returned within the configured timeout,
//     so callers answer SMTP 451 / HTTP 503 and the sender retries. Nothing else is temporary.
//     (A Client's WrapNewKey first gives the keys its reserve holds: ReserveConfig.)
//   - A wrapped key that was altered, or wrapped by another tenant's key, does not unwrap: the
//     error wraps ErrInvalidWrappedKey and is permanent.
//   - A checkpoint is signed only for a chain that extends the last checkpoint signed for the
//     tenant (audit.Notary): the keystore re-hashes the events in between and records the new
//     checkpoint where the database's credentials cannot write (Vault KV, CheckpointState).
//   - Errors never contain key material, plaintext or message content.
package keystore

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"

	"github.com/securetext/securetext/workloads/audit"
)

// DataKeySize is the length of a data key: AES-256 (envelope.KeySize).
const DataKeySize = 32

// DataKey is a fresh data key and the same key wrapped by the tenant's key.
type DataKey struct {
	// Plaintext is the 256-bit data key. The caller seals with it, then clears it with
	// envelope.Zero; it is never stored.
	Plaintext []byte
	// Wrapped is stored beside the ciphertext. It is an opaque ASCII string such as
	// "vault:v3:…" (Transit, key version 3) or "local:v1:…", so a later rotation can tell which
	// key version wrapped it.
	Wrapped string
}

// Service is what gateway and viewer ask of the keystore. Transit (Vault) and Local (a key
// file, development only) implement it in-process, Client implements it over the network, and
// Server serves any Service. Checkpoints are signed through audit.CheckpointSigner, which
// Client and Server carry too, and discovery manifests through SignManifest (manifest.go): the
// raw Sign of Transit and Local is for an audit.Notary, which builds each checkpoint body, and
// for discovery statements the keystore parses back byte for byte; it is never served, so no
// caller can get an arbitrary body signed.
type Service interface {
	// WrapNewKey returns a fresh random data key and its wrapped form.
	WrapNewKey(ctx context.Context) (DataKey, error)
	// Unwrap returns the data key inside wrapped.
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
	// PublicKey returns the public half of the signing key, for audit exports.
	PublicKey(ctx context.Context) (ed25519.PublicKey, error)
	// Health returns nil when the key holder answers and can serve requests.
	Health(ctx context.Context) error
}

var (
	// ErrUnavailable means the key holder cannot serve right now: Vault is sealed,
	// unreachable, too slow, rate-limiting or refusing this keystore's token. Retry later.
	ErrUnavailable = errors.New("keystore: key holder temporarily unavailable")
	// ErrInvalidWrappedKey means a wrapped key is malformed, was altered, or was wrapped by
	// another key. Retrying does not help.
	ErrInvalidWrappedKey = errors.New("keystore: wrapped key is invalid or was not wrapped by this tenant's key")
	// ErrUnauthenticated means the caller presented no valid credentials.
	ErrUnauthenticated = errors.New("keystore: caller is not authenticated")
	// ErrForbidden means the caller is authenticated but not allowed to call this keystore,
	// for example a component of another tenant.
	ErrForbidden = errors.New("keystore: caller is not allowed to use this tenant's keys")
)

// IsTemporary reports whether err means "try again later": the caller should answer with a
// temporary failure (SMTP 451 4.3.0, HTTP 503 with Retry-After), never drop the message.
func IsTemporary(err error) bool { return errors.Is(err, ErrUnavailable) }

// InProcess is a backend used in the caller's own process, with the notary that signs its
// checkpoints: what `securetext dev` and `securetext audit export -local-key-file` use in place
// of a Client.
type InProcess struct {
	Service
	*audit.Notary
}

// NewLocalInProcess opens the local key file for tenant, with the checkpoint state kept beside
// it (LocalCheckpointStatePath), so that every process using the key file keeps one record.
func NewLocalInProcess(keyFile, tenant string, log *slog.Logger) (InProcess, error) {
	l, err := NewLocal(keyFile, log)
	if err != nil {
		return InProcess{}, err
	}
	n, err := audit.NewNotary(tenant, l, NewFileCheckpointState(LocalCheckpointStatePath(keyFile)), nil)
	if err != nil {
		return InProcess{}, err
	}
	return InProcess{Service: l, Notary: n}, nil
}
