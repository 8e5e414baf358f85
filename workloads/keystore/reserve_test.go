package keystore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/tenantpki"
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
// reserve of size keys. The reserve's clock moves only when a test moves it, and its expiry
// timers only fire when a test fires them.
type reserveFixture struct {
	local   Service
	counted *gatedService
	keys    *switchedService
	client  *Client
	now     time.Time
	timers  []reserveTimer // armed by the reserve, in order
}

type reserveTimer struct {
	after time.Duration
	fire  func()
}

func newReserveFixture(t *testing.T, size int, maxAge time.Duration) *reserveFixture {
	f := &reserveFixture{local: newTestLocal(t), now: time.Now()}
	f.keys = &switchedService{Service: f.local}
	f.counted = &gatedService{Service: f.keys, gate: make(chan struct{}), entered: make(chan struct{}), perReq: map[context.Context]int{}}
	close(f.counted.gate) // count, never hold
	ks := startKeystore(t, f.counted, nil)
	c, err := NewClient(ClientConfig{URL: ks.url, Certificate: ks.clientCert(t, testTenant, tenantpki.ComponentGateway),
		RootCAs: ks.ca.CertPool(), Reserve: ReserveConfig{Size: size, MaxAge: maxAge}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f.client = c
	// Set before any call, so no other goroutine reads them yet; afterwards the reserve calls
	// them with its lock held, and tests read f.timers after wrap or expire, which wait for it.
	c.reserve.now = func() time.Time { return f.now }
	c.reserve.afterFunc = func(d time.Duration, fire func()) *time.Timer {
		f.timers = append(f.timers, reserveTimer{d, fire})
		return time.NewTimer(0) // a Timer to Stop; it runs nothing
	}
	return f
}

// wrap calls WrapNewKey and waits for the refill it may have started.
func (f *reserveFixture) wrap(t *testing.T) (DataKey, error) {
	t.Helper()
	k, err := f.client.WrapNewKey(context.Background())
	f.client.reserve.filled.Wait()
	return k, err
}

// mustWrap is wrap that fails the test on an error.
func (f *reserveFixture) mustWrap(t *testing.T) DataKey {
	t.Helper()
	k, err := f.wrap(t)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// requests returns the keys per keystore request, smallest first.
func (f *reserveFixture) requests() []int { return f.counted.requestSizes() }

// held returns how many keys the reserve holds.
func (f *reserveFixture) held() int {
	r := f.client.reserve
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

// heldPlaintexts returns the plaintext slices of the keys the reserve holds (shared, not
// copied: to see them zeroed).
func (f *reserveFixture) heldPlaintexts() [][]byte {
	r := f.client.reserve
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, k := range r.keys {
		out = append(out, k.key.Plaintext)
	}
	return out
}

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

func zeroed(p []byte) bool { return bytes.Equal(p, make([]byte, DataKeySize)) }

// TestClientReserveFillsAhead: only the first WrapNewKey asks the keystore; it fills the
// reserve with as many keys as were used, and each later call takes a key and, when it leaves
// the reserve at half or less, refills it to what has been used, up to Size.
func TestClientReserveFillsAhead(t *testing.T) {
	f := newReserveFixture(t, 8, 0)
	var keys []DataKey
	for range 8 {
		keys = append(keys, f.mustWrap(t))
	}
	// 1: the first call, which found the reserve empty. Then the refills, each up to the keys
	// used so far: 1 after the first call; 2 after each of the next five; none after the
	// seventh, which left 5 of 8; 4 after the eighth.
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 2, 2, 2, 2, 2, 4}) {
		t.Fatalf("keys per keystore request %v, want [1 1 2 2 2 2 2 4]", got)
	}
	if n := f.held(); n != 8 {
		t.Errorf("reserve holds %d keys, want 8", n)
	}
	f.checkKeys(t, keys)
}

// TestClientReserveFollowsDemand: a gateway that sends a message now and then asks for one
// key ahead, not for Size keys that expire unused.
func TestClientReserveFollowsDemand(t *testing.T) {
	const maxAge = 30 * time.Second
	f := newReserveFixture(t, 128, maxAge)
	var keys []DataKey
	for range 5 {
		keys = append(keys, f.mustWrap(t))
		if n := f.held(); n != 1 {
			t.Fatalf("reserve holds %d keys, want 1", n)
		}
		f.now = f.now.Add(maxAge + 10*time.Second) // the key held expires unused
	}
	// Each call: the key it found had expired, so it asked for one, and the refill asked for one.
	if got := f.requests(); !slices.Equal(got, slices.Repeat([]int{1}, 10)) {
		t.Fatalf("keys per keystore request %v, want ten of 1", got)
	}
	f.checkKeys(t, keys)
}

// TestClientReserveOutage: while the keystore is down, WrapNewKey gives the keys the reserve
// holds, each once, and then fails with a temporary error; a failed refill is not retried
// within reserveRetry, and calls that find the reserve empty start none. Once the keystore is
// back, the reserve fills again.
func TestClientReserveOutage(t *testing.T) {
	f := newReserveFixture(t, 4, 0)
	var keys []DataKey
	for range 4 {
		keys = append(keys, f.mustWrap(t))
	}
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 2, 2, 2}) || f.held() != 4 {
		t.Fatalf("before the outage: requests %v and %d keys held, want [1 1 2 2 2] and 4", got, f.held())
	}

	f.keys.down.Store(true)
	for i := range 4 {
		k, err := f.wrap(t)
		if err != nil {
			t.Fatalf("key %d of the reserve during the outage: %v", i+1, err)
		}
		keys = append(keys, k)
	}
	f.now = f.now.Add(reserveRetry) // a refill may be tried again now, but nothing starts one
	for range 3 {
		if _, err := f.wrap(t); !errors.Is(err, ErrUnavailable) || !IsTemporary(err) {
			t.Fatalf("reserve spent, keystore down: %v, want a temporary ErrUnavailable", err)
		}
	}
	// During the outage: the refill of 2 when the second call left 2 of 4, and the three calls
	// that found the reserve empty.
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 1, 1, 1, 2, 2, 2, 2}) {
		t.Fatalf("keys per keystore request %v, want [1 1 1 1 1 2 2 2 2]", got)
	}
	f.checkKeys(t, keys)

	f.keys.down.Store(false)
	keys = append(keys, f.mustWrap(t))
	if n := f.held(); n != 4 {
		t.Errorf("keystore back: reserve holds %d keys, want 4", n)
	}
	f.checkKeys(t, keys)
}

// TestClientReserveKeysExpire: a key that waited MaxAge is zeroed and never given out; the
// call then asks the keystore.
func TestClientReserveKeysExpire(t *testing.T) {
	const maxAge = time.Minute
	f := newReserveFixture(t, 4, maxAge)
	first := f.mustWrap(t)
	held := f.heldPlaintexts()
	if len(held) != 1 {
		t.Fatalf("reserve holds %d keys, want 1", len(held))
	}

	f.now = f.now.Add(maxAge)
	k := f.mustWrap(t)
	if !zeroed(held[0]) {
		t.Error("the expired key was not zeroed")
	}
	if bytes.Equal(held[0], k.Plaintext) {
		t.Error("the expired key was given out")
	}
	// The second call found only an expired key: it asked the keystore, and the refill asked
	// for the two keys used.
	if got := f.requests(); !slices.Equal(got, []int{1, 1, 1, 2}) {
		t.Fatalf("keys per keystore request %v, want [1 1 1 2]", got)
	}
	f.checkKeys(t, []DataKey{first, k})
}

// TestClientReserveExpiresWhileIdle: a timer zeroes keys when MaxAge is up, without a call to
// take them.
func TestClientReserveExpiresWhileIdle(t *testing.T) {
	const maxAge = time.Minute
	f := newReserveFixture(t, 4, maxAge)
	f.mustWrap(t)
	held := f.heldPlaintexts()
	if len(held) != 1 || len(f.timers) != 1 || f.timers[0].after != maxAge {
		t.Fatalf("%d keys held and timers %v, want 1 key and one timer of %v", len(held), f.timers, maxAge)
	}
	f.now = f.now.Add(maxAge)
	f.timers[0].fire()
	if n := f.held(); n != 0 || !zeroed(held[0]) {
		t.Errorf("after the timer: %d keys held, key zeroed %v; want none held, zeroed", n, zeroed(held[0]))
	}
	if len(f.timers) != 1 {
		t.Errorf("%d timers armed for an empty reserve, want none more", len(f.timers)-1)
	}
}

// TestClientCloseZeroesReserve: Close zeroes the keys the reserve holds.
func TestClientCloseZeroesReserve(t *testing.T) {
	f := newReserveFixture(t, 4, 0)
	for range 3 {
		f.mustWrap(t)
	}
	held := f.heldPlaintexts()
	if len(held) == 0 {
		t.Fatal("reserve holds no keys")
	}
	f.client.Close()
	for i, p := range held {
		if !zeroed(p) {
			t.Errorf("key %d of the reserve was not zeroed by Close", i)
		}
	}
	if n := f.held(); n != 0 {
		t.Errorf("reserve holds %d keys after Close", n)
	}
}

// TestReserveCloseDuringFill: keys that arrive after Close are zeroed, Close waits for them,
// and a closed reserve neither gives keys nor fills.
func TestReserveCloseDuringFill(t *testing.T) {
	local := newTestLocal(t)
	release := make(chan struct{})
	var (
		mu      sync.Mutex
		fetched [][]byte
		fetches int
	)
	r := newReserve(ReserveConfig{Size: 4}, time.Minute, func(ctx context.Context, n int) ([]DataKey, error) {
		mu.Lock()
		fetches++
		mu.Unlock()
		<-release
		var keys []DataKey
		for range n {
			k, err := local.WrapNewKey(ctx)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			fetched = append(fetched, k.Plaintext)
			mu.Unlock()
			keys = append(keys, k)
		}
		return keys, nil
	})
	r.wrapped() // a key was used: the refill starts and waits for release
	closed := make(chan struct{})
	go func() { r.close(); close(closed) }()
	for {
		r.mu.Lock()
		c := r.closed
		r.mu.Unlock()
		if c {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-closed:
		t.Fatal("close returned before the refill under way ended")
	default:
	}
	close(release)
	<-closed
	mu.Lock()
	defer mu.Unlock()
	if len(fetched) == 0 {
		t.Fatal("the refill fetched no keys")
	}
	for i, p := range fetched {
		if !zeroed(p) {
			t.Errorf("key %d that arrived after Close was not zeroed", i)
		}
	}
	if _, ok := r.take(); ok {
		t.Error("a closed reserve gave a key")
	}
	r.wrapped()
	r.filled.Wait()
	if fetches != 1 {
		t.Errorf("%d refills, want 1: a closed reserve started another", fetches)
	}
}

// TestClientReserveSize: Size defaults to 128 and is capped at MaxReserve, the keys one
// request may ask for.
func TestClientReserveSize(t *testing.T) {
	for _, c := range []struct{ size, want int }{{0, DefaultReserveSize}, {1, 1}, {MaxReserve, MaxReserve}, {MaxReserve + 1, MaxReserve}} {
		if got := newReserve(ReserveConfig{Size: c.size}, time.Second, nil).size; got != c.want {
			t.Errorf("Size %d: reserve of %d, want %d", c.size, got, c.want)
		}
	}
}

// TestClientReserveOnDemand: a client that only unwraps (the viewer's) never asks for keys,
// and a caller that gave up gets no key.
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
	if n := f.held(); n != 0 {
		t.Errorf("reserve holds %d keys after an unwrap, want none", n)
	}

	f.mustWrap(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.client.WrapNewKey(ctx); !IsTemporary(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: %v, want a temporary error wrapping context.Canceled", err)
	}
}
