package envelope

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func testKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

var testAD = AssociatedData{Tenant: "clinic-a", MessageID: "01J9ZQ3V8K", Part: "body"}

func TestRoundTrip(t *testing.T) {
	key := testKey(t)
	for _, size := range []int{0, 1, 15, 16, 17, 1024, 1 << 20} {
		plaintext := bytes.Repeat([]byte{'x'}, size)
		sealed, err := Seal(key, testAD, plaintext)
		if err != nil {
			t.Fatalf("size %d: seal: %v", size, err)
		}
		if got, want := len(sealed), size+overhead; got != want {
			t.Fatalf("size %d: sealed length %d, want %d", size, got, want)
		}
		if sealed[0] != Version1 {
			t.Fatalf("size %d: version byte 0x%02x", size, sealed[0])
		}
		got, err := Open(key, testAD, sealed)
		if err != nil {
			t.Fatalf("size %d: open: %v", size, err)
		}
		if !bytes.Equal(got, plaintext) {
			t.Fatalf("size %d: round trip changed the plaintext", size)
		}
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	key := testKey(t)
	const secret = "Your biopsy result is ready"
	sealed, err := Seal(key, testAD, []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte { b[i] ^= 0x01; return b }
	}
	last := len(sealed) - 1
	tagStart := len(sealed) - tagSize

	tests := []struct {
		name    string
		key     []byte
		ad      AssociatedData
		mutate  func([]byte) []byte
		wantErr error
	}{
		{name: "nonce first byte", mutate: flip(1), wantErr: ErrDecrypt},
		{name: "nonce last byte", mutate: flip(nonceSize), wantErr: ErrDecrypt},
		{name: "ciphertext first byte", mutate: flip(1 + nonceSize), wantErr: ErrDecrypt},
		{name: "ciphertext last byte", mutate: flip(tagStart - 1), wantErr: ErrDecrypt},
		{name: "tag first byte", mutate: flip(tagStart), wantErr: ErrDecrypt},
		{name: "tag last byte", mutate: flip(last), wantErr: ErrDecrypt},
		{name: "version byte", mutate: flip(0), wantErr: ErrUnsupportedVersion},
		{name: "version zero", mutate: func(b []byte) []byte { b[0] = 0; return b }, wantErr: ErrUnsupportedVersion},
		{name: "truncated tag", mutate: func(b []byte) []byte { return b[:last] }, wantErr: ErrDecrypt},
		{name: "truncated to header", mutate: func(b []byte) []byte { return b[:1+nonceSize] }, wantErr: ErrDecrypt},
		{name: "version only", mutate: func(b []byte) []byte { return b[:1] }, wantErr: ErrDecrypt},
		{name: "empty", mutate: func(b []byte) []byte { return nil }, wantErr: ErrDecrypt},
		{name: "extended", mutate: func(b []byte) []byte { return append(b, 0) }, wantErr: ErrDecrypt},
		{name: "other tenant", ad: AssociatedData{"clinic-b", testAD.MessageID, testAD.Part}, wantErr: ErrDecrypt},
		{name: "other message", ad: AssociatedData{testAD.Tenant, "01J9ZQ3V8L", testAD.Part}, wantErr: ErrDecrypt},
		{name: "other part", ad: AssociatedData{testAD.Tenant, testAD.MessageID, "attachment/0"}, wantErr: ErrDecrypt},
		// Same concatenation, different field boundaries: the length prefixes must tell them apart.
		{name: "shifted boundary", ad: AssociatedData{"clinic-a0", "1J9ZQ3V8K", "body"}, wantErr: ErrDecrypt},
		{name: "tenant and message swapped", ad: AssociatedData{testAD.MessageID, testAD.Tenant, testAD.Part}, wantErr: ErrDecrypt},
		{name: "wrong key", key: testKey(t), wantErr: ErrDecrypt},
		{name: "short key", key: key[:16], wantErr: ErrKeySize},
		{name: "long key", key: append(bytes.Clone(key), 0), wantErr: ErrKeySize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, ad, in := key, testAD, bytes.Clone(sealed)
			if tt.key != nil {
				k = tt.key
			}
			if tt.ad != (AssociatedData{}) {
				ad = tt.ad
			}
			if tt.mutate != nil {
				in = tt.mutate(in)
			}
			got, err := Open(k, ad, in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open error = %v, want %v", err, tt.wantErr)
			}
			if got != nil {
				t.Fatalf("Open returned %d bytes alongside an error", len(got))
			}
			msg := err.Error()
			if !strings.Contains(msg, `part "`+ad.Part+`"`) {
				t.Errorf("error %q does not name the part", msg)
			}
			if strings.Contains(msg, "biopsy") {
				t.Errorf("error %q leaks content", msg)
			}
		})
	}
}

func TestSealRejectsBadKey(t *testing.T) {
	if _, err := Seal(make([]byte, 16), testAD, []byte("x")); !errors.Is(err, ErrKeySize) {
		t.Fatalf("Seal with a 16-byte key: err = %v, want ErrKeySize", err)
	}
}

func TestNoncesDiffer(t *testing.T) {
	key := testKey(t)
	seen := make(map[string]bool)
	for range 1000 {
		sealed, err := Seal(key, testAD, []byte("same plaintext"))
		if err != nil {
			t.Fatal(err)
		}
		nonce := string(sealed[1 : 1+nonceSize])
		if seen[nonce] {
			t.Fatal("nonce repeated")
		}
		seen[nonce] = true
	}
}

func TestZero(t *testing.T) {
	key := testKey(t)
	Zero(key)
	if !bytes.Equal(key, make([]byte, KeySize)) {
		t.Fatal("Zero left key bytes behind")
	}
}

func benchmarkSeal(b *testing.B, size int) {
	key, plaintext := testKey(b), make([]byte, size)
	b.SetBytes(int64(size))
	for b.Loop() {
		if _, err := Seal(key, testAD, plaintext); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkOpen(b *testing.B, size int) {
	key := testKey(b)
	sealed, err := Seal(key, testAD, make([]byte, size))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	for b.Loop() {
		if _, err := Open(key, testAD, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B) { benchmarkSeal(b, 1<<10) }
func BenchmarkOpen1KiB(b *testing.B) { benchmarkOpen(b, 1<<10) }
func BenchmarkSeal1MiB(b *testing.B) { benchmarkSeal(b, 1<<20) }
func BenchmarkOpen1MiB(b *testing.B) { benchmarkOpen(b, 1<<20) }
