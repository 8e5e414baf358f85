package keystore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// switchedService fails every call with ErrUnavailable while down is set: a key holder that
// went away.
type switchedService struct {
	Service
	down atomic.Bool
}

func (s *switchedService) WrapNewKey(ctx context.Context) (DataKey, error) {
	if s.down.Load() {
		return DataKey{}, unavailable("wrap", errors.New("vault sealed"))
	}
	return s.Service.WrapNewKey(ctx)
}

// reserveFixture is a keystore whose requests are counted, and a gateway client of it with a
// reserve of size keys.
type reserveFixture struct {
	local   Service
	counted *gatedService
	keys    *switchedService
	client  *Client
	now     time.Time // the reserve's clock, which moves only when a test moves it
}

func newReserveFixture(t *testing.T, size int, maxAge time.Duration) *reserveFixture {
	f := &reserveFixture{local: newTestLocal(t)}
	f.keys = &switchedService{Service: f.local}
	f.counted = &gatedService{Service: f.keys, gate: make(chan struct{}), entered: make(chan struct{}), perReq: map[context.Context]int{}}
	close(f.counted.gate) // count, never hold
	ks := startKeystore(t, f.counted, nil)
	c, err := NewClient(ClientConfig{URL: ks.url, Certificate: ks.clientCert(t, testTenant, ComponentGateway),
		RootCAs: ks.ca.CertPool(), Reserve: ReserveConfig{Size: size, MaxAge: maxAge}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f.client, f.now = c, time.Now()
	c.reserve.now = func() time.Time { return f.now }
	return f
}

// wrap calls WrapNewKey and waits for the refill it may have started.
func (f *reserveFixture) wrap(t *testing.T) (DataKey, error) {
	t.Helper()
	k, err := f.client.WrapNewKey(context.Background())
	f.client.reserve.filled.Wait()
	return k, err
}

// requests returns the keys per keystore request, smallest first.
func (f *reserveFixture) requests() []int { return f.counted.requestSizes() }

// checkKeys fails unless the keys are all different and each unwraps to its plaintext.
func (f *reserveFixture) checkKeys(t *testing.T, keys []DataKey) {
	t.Helper()
	seen := map[string]bool{}
	for i, k := range keys {
		if seen[k.Wrapped] {
			t.Fatalf("key %d was given out twice", i)
		}
		seen[k.Wrapped] = true
		got, err := f.local.Unwrap(context.Background(), k.Wrapped)
		if err != nil || len(k.Plaintext) != DataKeySize || !bytes.Equal(got, k.Plaintext) {
			t.Fatalf("key %d does not unwrap to its plaintext: %v", i, err)
		}
	}
}

// TestClientReserveFillsAhead: the first WrapNewKey asks the keystore and fills the reserve in
// one request; later calls take keys from it without a request of their own, and a call that
// leaves it at half refills it.
func TestClientReserveFillsAhead(t *testing.T) {
	f := newReserveFixture(t, 8, 0)
	var keys []DataKey
	for range 8 {
		k, err := f.wrap(t)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	// 1: the first call; 8: the fill it started; 4: the refill when the fifth call (the fourth
	// from the reserve) left 4 of 8. The last three took keys without a request.
	if got := f.requests(); !slices.Equal(got, []int{1, 4, 8}) {
		t.Fatalf("keys per keystore request %v, want [1 4 8]", got)
	}
	if n := f.client.reserve.held(); n != 5 {
		t.Errorf("reserve holds %d keys, want 5", n)
	}
	f.checkKeys(t, keys)
}

// TestClientReserveOutage: while the keystore is down, WrapNewKey gives the keys the reserve
// holds, each once, and then fails with a temporary error; the failed refill is not retried
// on every call (the clock stands still), and an empty reserve adds no requests to a
// keystore that is down.
func TestClientReserveOutage(t *testing.T) {
	f := newReserveFixture(t, 4, 0)
	first, err := f.wrap(t)
	if err != nil {
		t.Fatal(err)
	}
	f.keys.down.Store(true)
	keys := []DataKey{first}
	for i := range 4 {
		k, err := f.wrap(t)
		if err != nil {
			t.Fatalf("key %d of the reserve during the outage: %v", i+1, err)
		}
		keys = append(keys, k)
	}
	for range 3 {
		if _, err := f.wrap(t); !errors.Is(err, ErrUnavailable) || !IsTemporary(err) {
			t.Fatalf("reserve spent, keystore down: %v, want a temporary ErrUnavailable", err)
		}
	}
	// 1 and 4 before the outage; during it one refill of 2 (when the reserve fell to half)
	// and the three calls that found it empty.
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 1, 1, 2, 4}) {
		t.Fatalf("keys per keystore request %v, want [1 1 1 1 2 4]", got)
	}
	f.checkKeys(t, keys)

	f.keys.down.Store(false)
	k, err := f.wrap(t)
	if err != nil {
		t.Fatalf("keystore back: %v", err)
	}
	f.checkKeys(t, append(keys, k))
}

// TestClientReserveKeysExpire: a key that waited MaxAge is zeroed and never given out; the
// call then asks the keystore.
func TestClientReserveKeysExpire(t *testing.T) {
	const maxAge = time.Minute
	f := newReserveFixture(t, 4, maxAge)
	first, err := f.wrap(t)
	if err != nil {
		t.Fatal(err)
	}
	held := f.heldPlaintexts(t)
	if len(held) != 4 {
		t.Fatalf("reserve holds %d keys, want 4", len(held))
	}

	f.now = f.now.Add(maxAge)
	k, err := f.wrap(t)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range held {
		if !bytes.Equal(p, make([]byte, DataKeySize)) {
			t.Errorf("expired key %d was not zeroed", i)
		}
		if bytes.Equal(p, k.Plaintext) {
			t.Errorf("expired key %d was given out", i)
		}
	}
	// The second call found only expired keys: it asked the keystore, which refilled.
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 4, 4}) {
		t.Fatalf("keys per keystore request %v, want [1 1 4 4]", got)
	}
	f.checkKeys(t, []DataKey{first, k})
}

// TestClientCloseZeroesReserve: Close zeroes the keys the reserve holds.
func TestClientCloseZeroesReserve(t *testing.T) {
	f := newReserveFixture(t, 4, 0)
	if _, err := f.wrap(t); err != nil {
		t.Fatal(err)
	}
	held := f.heldPlaintexts(t)
	f.client.Close()
	for i, p := range held {
		if !bytes.Equal(p, make([]byte, DataKeySize)) {
			t.Errorf("key %d of the reserve was not zeroed by Close", i)
		}
	}
	if n := f.client.reserve.held(); n != 0 {
		t.Errorf("reserve holds %d keys after Close", n)
	}
}

// TestClientReserveOnDemand: a client that only unwraps (the viewer's) never asks for keys.
func TestClientReserveOnDemand(t *testing.T) {
	f := newReserveFixture(t, 4, 0)
	k, err := f.local.WrapNewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Unwrap(context.Background(), k.Wrapped); err != nil {
		t.Fatal(err)
	}
	f.client.reserve.filled.Wait()
	if n := f.client.reserve.held(); n != 0 {
		t.Errorf("reserve holds %d keys after an unwrap, want none", n)
	}
}

// heldPlaintexts returns the plaintext slices of the keys the reserve holds (shared, not
// copied: to see them zeroed).
func (f *reserveFixture) heldPlaintexts(t *testing.T) [][]byte {
	t.Helper()
	r := f.client.reserve
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, k := range r.keys {
		out = append(out, k.key.Plaintext)
	}
	return out
}

// TestClientReserveExpiresWhileIdle: keys are zeroed once MaxAge is up even if no call comes
// to take them. The reserve's clock is the real one here, and MaxAge short.
func TestClientReserveExpiresWhileIdle(t *testing.T) {
	f := newReserveFixture(t, 4, 50*time.Millisecond)
	f.client.reserve.mu.Lock()
	f.client.reserve.now = time.Now
	f.client.reserve.mu.Unlock()
	if _, err := f.wrap(t); err != nil {
		t.Fatal(err)
	}
	held := f.heldPlaintexts(t)
	if len(held) != 4 {
		t.Fatalf("reserve holds %d keys, want 4", len(held))
	}
	for deadline := time.Now().Add(10 * time.Second); f.client.reserve.held() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("reserve still holds %d keys 10 s after they expired", f.client.reserve.held())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, p := range held {
		if !bytes.Equal(p, make([]byte, DataKeySize)) {
			t.Errorf("expired key %d was not zeroed", i)
		}
	}
}
