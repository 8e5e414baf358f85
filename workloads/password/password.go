// Package password is the one place SecureText hashes and checks secrets that people choose:
// patients' passwords and senders' SMTP passwords. It uses argon2id with at least OWASP's
// parameters (19 MiB, 2 passes, 1 lane), stores PHC strings, compares in constant time, and
// bounds how many hashes run at once, because each one holds 19 MiB.
//
// Passwords are normalised to Unicode NFKC before hashing (NIST SP 800-63B §5.1.1.2), so the
// same password typed on two keyboards matches.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// Params are argon2id's cost parameters.
type Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// Default is OWASP's minimum for argon2id: m=19 MiB, t=2, p=1 (about 30 ms per hash here).
var Default = Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// ErrMismatch means the password does not match the hash.
var ErrMismatch = errors.New("password does not match")

// ErrMalformedHash means a stored hash is not an argon2id PHC string this package wrote.
var ErrMalformedHash = errors.New("password hash is not an argon2id PHC string")

// slots bounds concurrent hashes: 19 MiB each adds up under a login storm.
var slots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

func acquire(ctx context.Context) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait to hash a password: %w", context.Cause(ctx))
	}
}

func release() { <-slots }

// Hash returns the PHC string of password with Default parameters and a fresh salt.
func Hash(ctx context.Context, password string) (string, error) {
	return HashWith(ctx, password, Default)
}

// HashWith is Hash with chosen parameters (tests use cheaper ones; never below Default in
// production).
func HashWith(ctx context.Context, password string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt)
	if err := acquire(ctx); err != nil {
		return "", err
	}
	defer release()
	key := argon2.IDKey([]byte(norm.NFKC.String(password)), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify returns nil if password matches hash, ErrMismatch if it does not, and
// ErrMalformedHash if hash cannot be read.
func Verify(ctx context.Context, password, hash string) error {
	p, salt, want, err := parse(hash)
	if err != nil {
		return err
	}
	if err := acquire(ctx); err != nil {
		return err
	}
	defer release()
	got := argon2.IDKey([]byte(norm.NFKC.String(password)), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}

// Check reports whether hash is an argon2id PHC string with at least Default's cost, for
// validating configuration at start.
func Check(hash string) error {
	p, _, _, err := parse(hash)
	if err != nil {
		return err
	}
	if p.MemoryKiB < Default.MemoryKiB || p.Time < Default.Time {
		return fmt.Errorf("%w: cost m=%d,t=%d is below the minimum m=%d,t=%d", ErrMalformedHash,
			p.MemoryKiB, p.Time, Default.MemoryKiB, Default.Time)
	}
	return nil
}

func parse(hash string) (Params, []byte, []byte, error) {
	// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return Params{}, nil, nil, ErrMalformedHash
	}
	var p Params
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil ||
		p.MemoryKiB < 8 || p.Time < 1 || p.Threads < 1 || p.MemoryKiB > 4<<20 || p.Time > 64 {
		return Params{}, nil, nil, ErrMalformedHash
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(f[4])
	key, err2 := b64.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return Params{}, nil, nil, ErrMalformedHash
	}
	return p, salt, key, nil
}
