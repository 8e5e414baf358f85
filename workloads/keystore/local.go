package keystore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
)

// LocalKeyFileFormat is the "format" value of a local key file.
//
// A local key file is one JSON object, written by GenerateLocalKeyFile with mode 0600:
//
//	{
//	  "format": "securetext-local-keystore/v1",
//	  "wrapping_key": "<standard base64 of 32 random bytes: the AES-256-GCM key that wraps data keys>",
//	  "signing_seed": "<standard base64 of 32 random bytes: the ed25519 seed (RFC 8032) that signs checkpoints>"
//	}
//
// No other field is allowed. Losing the file makes every message wrapped with it unreadable.
const LocalKeyFileFormat = "securetext-local-keystore/v1"

const (
	// localWrappedPrefix starts every data key wrapped by Local; the rest is unpadded base64url
	// (RFC 4648 §5) of nonce ‖ AES-256-GCM ciphertext ‖ tag.
	localWrappedPrefix = "local:v1:"
	// localWrapAD is the associated data of every wrap, so that a wrapping key reused
	// elsewhere (it should not be) never opens something that is not a wrapped data key.
	localWrapAD = "securetext/keystore/local/wrap/v1"

	localNonceSize  = 12
	localWrappedLen = localNonceSize + DataKeySize + 16
	localKeyFileMax = 4096
)

// Local is the development backend: the wrapping and signing keys are in a file on disk
// instead of in Vault. It is for the embedded single-process mode only and logs a warning
// saying so. The wrapped form is "local:v1:" followed by unpadded base64url of
// nonce (12 bytes) ‖ AES-256-GCM ciphertext of the data key ‖ tag.
type Local struct {
	aead    cipher.AEAD
	signing ed25519.PrivateKey
	public  ed25519.PublicKey
	keyID   string
}

// localKeyFile is the on-disk form; see LocalKeyFileFormat.
type localKeyFile struct {
	Format      string `json:"format"`
	WrappingKey []byte `json:"wrapping_key"`
	SigningSeed []byte `json:"signing_seed"`
}

// GenerateLocalKeyFile writes a new local key file with fresh random keys at path, readable by
// its owner only. It refuses to overwrite an existing file: that would make every message
// wrapped with the old keys unreadable.
func GenerateLocalKeyFile(path string) error {
	kf := localKeyFile{
		Format:      LocalKeyFileFormat,
		WrappingKey: make([]byte, 32),
		SigningSeed: make([]byte, ed25519.SeedSize),
	}
	defer envelope.Zero(kf.WrappingKey)
	defer envelope.Zero(kf.SigningSeed)
	if _, err := rand.Read(kf.WrappingKey); err != nil {
		return fmt.Errorf("keystore: generate local key file %s: %w", path, err)
	}
	if _, err := rand.Read(kf.SigningSeed); err != nil {
		return fmt.Errorf("keystore: generate local key file %s: %w", path, err)
	}
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return fmt.Errorf("keystore: generate local key file %s: encode: %w", path, err)
	}
	defer envelope.Zero(b)
	b = append(b, '\n')

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keystore: generate local key file: %s already exists; refusing to overwrite keys (move it away first if you really mean to lose what it wrapped)", path)
	}
	if err != nil {
		return fmt.Errorf("keystore: generate local key file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path) // a half-written key file must not be mistaken for a good one
		return fmt.Errorf("keystore: generate local key file %s: %w", path, err)
	}
	return nil
}

// NewLocal loads the local key file at path (see LocalKeyFileFormat). logger receives the
// development-only warning; nil means slog.Default().
func NewLocal(path string, logger *slog.Logger) (*Local, error) {
	if logger == nil {
		logger = slog.Default()
	}
	b, info, err := readLocalKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer envelope.Zero(b)
	l, err := parseLocalKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("keystore: load local key file %s: %w (create one with GenerateLocalKeyFile)", path, err)
	}
	logger.Warn("local keystore backend: keys are in a file, for development only; never use with patient data",
		slog.String("key_file", path), slog.String("key_id", l.keyID))
	if info.Mode().Perm()&0o077 != 0 {
		logger.Warn("local keystore key file is readable by other users; chmod 600 it",
			slog.String("key_file", path), slog.String("mode", info.Mode().Perm().String()))
	}
	return l, nil
}

func readLocalKeyFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: load local key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: load local key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("keystore: load local key file %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, localKeyFileMax+1))
	if err != nil {
		envelope.Zero(b)
		return nil, nil, fmt.Errorf("keystore: load local key file: %w", err)
	}
	if len(b) > localKeyFileMax {
		envelope.Zero(b)
		return nil, nil, fmt.Errorf("keystore: load local key file %s: larger than %d bytes, so not a key file", path, localKeyFileMax)
	}
	return b, info, nil
}

// parseLocalKeyFile validates b and builds a Local from it. Its errors name the field at
// fault but never quote the file, which holds keys.
func parseLocalKeyFile(b []byte) (*Local, error) {
	var kf localKeyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&kf)
	defer envelope.Zero(kf.WrappingKey)
	defer envelope.Zero(kf.SigningSeed)
	if err == nil && dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	if err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			return nil, fmt.Errorf("not a JSON object: syntax error at byte %d", syntax.Offset)
		case errors.As(err, &typ):
			return nil, fmt.Errorf("field %q has the wrong type, want a string", typ.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, fmt.Errorf("%s; allowed fields are format, wrapping_key, signing_seed", strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.EOF):
			return nil, errors.New("file is empty")
		}
		var corrupt base64.CorruptInputError
		if errors.As(err, &corrupt) {
			return nil, fmt.Errorf("a key field is not standard base64 (bad byte at offset %d)", int64(corrupt))
		}
		return nil, errors.New("not a valid key file")
	}
	if kf.Format != LocalKeyFileFormat {
		return nil, fmt.Errorf("field format must be %q", LocalKeyFileFormat)
	}
	if len(kf.WrappingKey) != 32 {
		return nil, fmt.Errorf("field wrapping_key holds %d bytes, want 32", len(kf.WrappingKey))
	}
	if len(kf.SigningSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("field signing_seed holds %d bytes, want %d", len(kf.SigningSeed), ed25519.SeedSize)
	}
	block, err := aes.NewCipher(kf.WrappingKey)
	if err != nil {
		return nil, fmt.Errorf("wrapping key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("wrapping key: %w", err)
	}
	signing := ed25519.NewKeyFromSeed(kf.SigningSeed)
	public := signing.Public().(ed25519.PublicKey)
	return &Local{aead: aead, signing: signing, public: public, keyID: audit.KeyID(public)}, nil
}

// WrapNewKey implements Service.
func (l *Local) WrapNewKey(context.Context) (DataKey, error) {
	key := make([]byte, DataKeySize)
	if _, err := rand.Read(key); err != nil {
		return DataKey{}, fmt.Errorf("keystore: generate data key: %w", err)
	}
	sealed := make([]byte, localNonceSize, localWrappedLen)
	if _, err := rand.Read(sealed); err != nil {
		envelope.Zero(key)
		return DataKey{}, fmt.Errorf("keystore: wrap data key: read nonce: %w", err)
	}
	sealed = l.aead.Seal(sealed, sealed[:localNonceSize], key, []byte(localWrapAD))
	return DataKey{Plaintext: key, Wrapped: localWrappedPrefix + base64.RawURLEncoding.EncodeToString(sealed)}, nil
}

// Unwrap implements Service. Anything but an unaltered "local:v1:" key wrapped by this file's
// wrapping key is refused with ErrInvalidWrappedKey.
func (l *Local) Unwrap(_ context.Context, wrapped string) ([]byte, error) {
	enc, ok := strings.CutPrefix(wrapped, localWrappedPrefix)
	if !ok {
		return nil, fmt.Errorf("keystore: unwrap data key: not a %q wrapped key: %w", localWrappedPrefix, ErrInvalidWrappedKey)
	}
	// An exact length also refuses the CR and LF that base64 decoders skip, so every wrapped
	// key has one spelling.
	if len(enc) != base64.RawURLEncoding.EncodedLen(localWrappedLen) {
		return nil, fmt.Errorf("keystore: unwrap data key: wrong length: %w", ErrInvalidWrappedKey)
	}
	sealed, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(sealed) != localWrappedLen {
		return nil, fmt.Errorf("keystore: unwrap data key: not base64url: %w", ErrInvalidWrappedKey)
	}
	key, err := l.aead.Open(nil, sealed[:localNonceSize], sealed[localNonceSize:], []byte(localWrapAD))
	if err != nil {
		return nil, fmt.Errorf("keystore: unwrap data key: altered or wrapped by another key: %w", ErrInvalidWrappedKey)
	}
	return key, nil
}

// Sign implements audit.Signer for an audit.Notary, never for callers.
func (l *Local) Sign(_ context.Context, msg []byte) ([]byte, string, error) {
	return ed25519.Sign(l.signing, msg), l.keyID, nil
}

// PublicKey implements Service.
func (l *Local) PublicKey(context.Context) (ed25519.PublicKey, error) {
	return bytes.Clone(l.public), nil
}

// Health implements Service: the keys are in memory, so Local is always healthy.
func (l *Local) Health(context.Context) error { return nil }
