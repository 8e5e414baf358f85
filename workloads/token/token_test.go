package token

import (
	"crypto/sha256"
	"regexp"
	"testing"
)

func TestNew(t *testing.T) {
	short, long := regexp.MustCompile(`^[a-z2-7]{26}$`), regexp.MustCompile(`^[a-z2-7]{52}$`)
	seen := map[string]bool{}
	for range 1000 {
		tok := New()
		if !short.MatchString(tok) {
			t.Fatalf("token %q is not 26 lowercase base32 characters", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
		if l := NewLong(); !long.MatchString(l) {
			t.Fatalf("long token %q is not 52 lowercase base32 characters", l)
		}
	}
}

func TestHash(t *testing.T) {
	if Hash("abc") != sha256.Sum256([]byte("abc")) || Hash("abc") == Hash("abd") {
		t.Fatal("Hash is not SHA-256 of the token")
	}
}
