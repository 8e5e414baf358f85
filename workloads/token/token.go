// Package token is the one place SecureText makes bearer secrets: link tokens, session ids
// and API keys. Each is 128 bits or more from crypto/rand, and only its SHA-256 is stored, so
// a database leak discloses no usable token.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
)

// encoding is lowercase base32 without padding: safe in URLs, SMS and cookies, and easy to
// read aloud.
var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Bits is the entropy of a token from New.
const Bits = 128

// New returns a fresh token: 128 random bits as 26 lowercase base32 characters.
func New() string { return newN(Bits / 8) }

// NewLong returns a fresh 256-bit token (52 characters), for long-lived credentials such as
// API keys.
func NewLong() string { return newN(32) }

func newN(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error (Go 1.24+)
	return encoding.EncodeToString(b)
}

// Hash is what is stored in place of a token.
func Hash(t string) [32]byte { return sha256.Sum256([]byte(t)) }
