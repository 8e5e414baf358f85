package password

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h, err := Hash(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not use argon2id with OWASP's parameters", h)
	}
	if err := Check(h); err != nil {
		t.Fatalf("Check(own hash): %v", err)
	}
	if err := Verify(ctx, "correct horse battery staple", h); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Verify(ctx, "correct horse battery stapl", h); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := Hash(ctx, "correct horse battery staple")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
}

func TestNFKC(t *testing.T) {
	ctx := context.Background()
	// U+FB01 (ﬁ ligature) is NFKC-equal to "fi"; "é" composed and decomposed are equal.
	h, err := HashWith(ctx, "ﬁne café", Params{MemoryKiB: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, "fine cafe\u0301", h); err != nil {
		t.Fatalf("NFKC-equal password refused: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	ctx := context.Background()
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=18$m=19456,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
	} {
		if err := Verify(ctx, "x", h); !errors.Is(err, ErrMalformedHash) {
			t.Errorf("Verify with %q: %v, want ErrMalformedHash", h, err)
		}
	}
	weak, _ := HashWith(ctx, "x", Params{MemoryKiB: 64, Time: 1, Threads: 1})
	if err := Check(weak); !errors.Is(err, ErrMalformedHash) {
		t.Errorf("Check accepted a hash below the minimum cost: %v", err)
	}
}

func TestCanceledWait(t *testing.T) {
	for range cap(slots) {
		slots <- struct{}{}
	}
	defer func() {
		for range cap(slots) {
			<-slots
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Hash(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with all slots busy and a canceled context: %v", err)
	}
}

func BenchmarkHash(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
