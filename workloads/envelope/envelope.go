// Package envelope encrypts one part of one message (its body or an attachment) under that
// message's data key with AES-256-GCM.
//
// Every sealed part is bound to where it belongs: the tenant, the message id and the part name
// are authenticated as associated data, so a ciphertext copied to another row, part or tenant
// does not open. Open never returns unauthenticated plaintext: any change to the sealed bytes,
// the associated data or the key yields an error wrapping ErrDecrypt.
//
// Sealed format (version 1):
//
//	0x01 ‖ nonce (12 bytes, crypto/rand) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)
//
// Random 96-bit nonces are safe here because each data key seals only the few parts of a single
// message, far below the 2^32 invocations per key that NIST SP 800-38D §8.3 allows for random
// nonces.
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// Version1 is the first byte of every envelope this package writes.
const Version1 byte = 0x01

// KeySize is the data key length: AES-256.
const KeySize = 32

const (
	nonceSize = 12 // GCM standard nonce (NIST SP 800-38D §5.2.1.1)
	tagSize   = 16
	overhead  = 1 + nonceSize + tagSize

	// domain separates envelope associated data from any other use of the same key.
	domain = "securetext/envelope/v1"
)

var (
	// ErrDecrypt means the envelope could not be authenticated: it was altered, truncated,
	// moved to another tenant, message or part, or the key is wrong. The causes are
	// deliberately indistinguishable.
	ErrDecrypt = errors.New("envelope: authentication failed")
	// ErrUnsupportedVersion means the first byte names a format this code does not know.
	ErrUnsupportedVersion = errors.New("envelope: unsupported format version")
	// ErrKeySize means the data key is not exactly KeySize bytes.
	ErrKeySize = errors.New("envelope: data key must be 32 bytes")
)

// AssociatedData names the place a sealed part belongs to. None of it is secret, but none of it
// may be message content either: it is bound to the ciphertext and appears in errors.
type AssociatedData struct {
	Tenant    string
	MessageID string
	Part      string // "body", "attachment/0", …
}

// encode returns the canonical associated data for the given format version: every field is
// length-prefixed, so no two distinct values encode to the same bytes (e.g. tenant "a",
// message "bc" versus tenant "ab", message "c").
func (ad AssociatedData) encode(version byte) []byte {
	fields := []string{domain, ad.Tenant, ad.MessageID, ad.Part}
	n := 1
	for _, f := range fields {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, version)
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// Seal encrypts plaintext under dataKey, bound to ad, and returns the version-1 envelope.
func Seal(dataKey []byte, ad AssociatedData, plaintext []byte) ([]byte, error) {
	aead, err := newGCM(dataKey)
	if err != nil {
		return nil, fmt.Errorf("seal part %q: %w", ad.Part, err)
	}
	out := make([]byte, 1+nonceSize, overhead+len(plaintext))
	out[0] = Version1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal part %q: read nonce: %w", ad.Part, err)
	}
	return aead.Seal(out, out[1:], plaintext, ad.encode(Version1)), nil
}

// Open authenticates and decrypts an envelope written by Seal for the same ad.
func Open(dataKey []byte, ad AssociatedData, sealed []byte) ([]byte, error) {
	aead, err := newGCM(dataKey)
	if err != nil {
		return nil, fmt.Errorf("open part %q: %w", ad.Part, err)
	}
	if len(sealed) == 0 {
		return nil, fmt.Errorf("open part %q: empty input: %w", ad.Part, ErrDecrypt)
	}
	if v := sealed[0]; v != Version1 {
		return nil, fmt.Errorf("open part %q: version 0x%02x: %w", ad.Part, v, ErrUnsupportedVersion)
	}
	if len(sealed) < overhead {
		return nil, fmt.Errorf("open part %q: truncated: %w", ad.Part, ErrDecrypt)
	}
	nonce, ciphertext := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	plaintext, err := aead.Open(nil, nonce, ciphertext, ad.encode(Version1))
	if err != nil {
		// crypto/cipher returns a single opaque error; ours says which part failed.
		return nil, fmt.Errorf("open part %q: %w", ad.Part, ErrDecrypt)
	}
	return plaintext, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Zero overwrites b with zeros. Call it on a data key as soon as it is no longer needed.
//
// This is best effort. Go gives no guarantee that key material exists only in b: the garbage
// collector may have moved or copied it, an append may have left an older backing array behind,
// and crypto/aes keeps its own expanded key schedule inside the cipher.Block, which this package
// cannot reach and which lives until collected. Zero shortens the window in which a heap dump or
// swapped page reveals the key; it does not close it.
func Zero(b []byte) {
	clear(b)
}
