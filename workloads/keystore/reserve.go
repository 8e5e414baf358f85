package keystore

import (
	"context"
	"sync"
	"time"

	"github.com/securetext/securetext/workloads/envelope"
)

// ReserveConfig controls the fresh data keys a Client holds ready for WrapNewKey.
//
// Every accepted message needs a new data key, and asking the keystore for one puts a keystore
// request and a Vault call on the path of each message, in batches only as big as the
// messages that happen to arrive together. A reserve asks for keys ahead, in one request
// whenever it is at half or less, so a message takes its key from memory. Each refill asks
// for as many keys as were used in the last MaxAge, up to Size: a gateway that sends a
// message a minute asks for one key at a time, and one under load fills up.
//
// Each key is still fresh from the keystore, wrapped by the tenant's key, and given out once.
// What the reserve changes is that up to Size data keys wait in the process's memory for a
// message, and for at most MaxAge: a key that waits longer is zeroed unused, by a timer, also
// when no message comes; Close zeroes the rest. The process that holds them reads the
// messages they will encrypt anyway. While the keystore is unreachable, WrapNewKey gives keys
// from the reserve until it is spent and then fails as without one; a message stored
// meanwhile is encrypted as any other.
//
// The reserve fills only after WrapNewKey got a key: a Client that never calls it (the
// viewer's) never asks for keys, and a keystore that is down gets no more requests than
// without a reserve.
type ReserveConfig struct {
	// Disabled: every WrapNewKey asks the keystore (through Batch).
	Disabled bool
	// Size is the most keys held. Default DefaultReserveSize, at most MaxReserve.
	Size int
	// MaxAge is how long a key may wait to be used. Default DefaultReserveMaxAge, at most
	// MaxReserveMaxAge.
	MaxAge time.Duration
}

// MaxReserve is the largest ReserveConfig.Size: the keys one keystore request may ask for.
const MaxReserve = maxWrapCount

// Defaults of ReserveConfig.
const (
	DefaultReserveSize   = 128
	DefaultReserveMaxAge = 30 * time.Second
	// MaxReserveMaxAge keeps a reserved key, wrapped before a rotation of the wrapping key,
	// from being stored later than RotationSettle after the rotation.
	MaxReserveMaxAge = RotationSettle / 4
)

// reserveRetry is how long a reserve waits after a failed refill before it tries again;
// meanwhile WrapNewKey asks the keystore whenever the reserve is empty.
const reserveRetry = time.Second

// reserve holds fresh data keys, oldest first.
type reserve struct {
	size      int
	maxAge    time.Duration
	timeout   time.Duration
	fetch     func(ctx context.Context, n int) ([]DataKey, error)
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) *time.Timer // time.AfterFunc; tests run the timer themselves

	mu       sync.Mutex
	keys     []reservedKey
	filling  bool
	retryAt  time.Time // no refill before then (the last one failed)
	closed   bool
	stopFill context.CancelFunc
	fillCtx  context.Context
	filled   sync.WaitGroup
	expiry   *time.Timer // set while keys are held: fires when the oldest expires
	// Keys used (taken, or asked for when the reserve was empty) in the window that started
	// at windowStart and lasts maxAge, and in the one before it.
	windowStart       time.Time
	usedNow, usedLast int
}

type reservedKey struct {
	key     DataKey
	expires time.Time
}

func newReserve(cfg ReserveConfig, timeout time.Duration, fetch func(ctx context.Context, n int) ([]DataKey, error)) *reserve {
	if cfg.Size <= 0 {
		cfg.Size = DefaultReserveSize
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultReserveMaxAge
	}
	r := &reserve{size: min(cfg.Size, MaxReserve), maxAge: min(cfg.MaxAge, MaxReserveMaxAge), timeout: timeout, fetch: fetch,
		now: time.Now, afterFunc: time.AfterFunc}
	r.fillCtx, r.stopFill = context.WithCancel(context.Background())
	return r
}

// take returns the oldest key that has not expired, if there is one, and starts a refill when
// it leaves the reserve at half or less. An empty reserve starts none: WrapNewKey asks the
// keystore itself then, and calls wrapped once that succeeds.
func (r *reserve) take() (DataKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.dropExpired(now)
	if len(r.keys) == 0 {
		return DataKey{}, false
	}
	k := r.keys[0].key
	r.keys[0] = reservedKey{}
	r.keys = r.keys[1:]
	r.used(now)
	r.startFill(now)
	return k, true
}

// wrapped notes that WrapNewKey found the reserve empty and got a key from the keystore: the
// reserve fills.
func (r *reserve) wrapped() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.used(now)
	r.startFill(now)
}

// used counts a key given out at now. r.mu is held.
func (r *reserve) used(now time.Time) {
	r.rotate(now)
	r.usedNow++
}

// rotate starts a new window of use when the current one is over. r.mu is held.
func (r *reserve) rotate(now time.Time) {
	switch elapsed := now.Sub(r.windowStart); {
	case elapsed >= 2*r.maxAge:
		r.windowStart, r.usedNow, r.usedLast = now, 0, 0
	case elapsed >= r.maxAge:
		r.windowStart, r.usedNow, r.usedLast = r.windowStart.Add(r.maxAge), 0, r.usedNow
	}
}

// demand estimates how many keys were used in the last maxAge: those of the current window,
// and those of the last one in proportion to how much of it lies within maxAge of now, rounded
// down. r.mu is held.
func (r *reserve) demand(now time.Time) int {
	r.rotate(now)
	rest := 1 - float64(now.Sub(r.windowStart))/float64(r.maxAge)
	return r.usedNow + int(float64(r.usedLast)*rest)
}

// startFill starts a refill if the reserve is at half or less, holds fewer keys than the
// demand, no refill is under way, and the last one did not fail within reserveRetry. r.mu is
// held.
func (r *reserve) startFill(now time.Time) {
	if len(r.keys) > r.size/2 || r.filling || r.closed || now.Before(r.retryAt) {
		return
	}
	n := min(r.size, r.demand(now)) - len(r.keys)
	if n <= 0 {
		return
	}
	r.filling = true
	r.filled.Add(1)
	go r.fill(n)
}

// dropExpired zeroes and removes the keys that expired by now. Keys expire in the order they
// are held. r.mu is held.
func (r *reserve) dropExpired(now time.Time) {
	n := 0
	for n < len(r.keys) && !now.Before(r.keys[n].expires) {
		envelope.Zero(r.keys[n].key.Plaintext)
		r.keys[n] = reservedKey{}
		n++
	}
	r.keys = r.keys[n:]
}

// fill asks the keystore for n keys in one request and adds them.
func (r *reserve) fill(n int) {
	defer r.filled.Done()
	askedAt := r.now()
	ctx, cancel := context.WithTimeout(r.fillCtx, r.timeout)
	keys, err := r.fetch(ctx, n)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.filling = false
	if err != nil {
		r.retryAt = r.now().Add(reserveRetry)
		return
	}
	if r.closed {
		zeroKeys(keys)
		return
	}
	// A key's age counts from when it was asked for: it may have been made any time since.
	for _, k := range keys {
		r.keys = append(r.keys, reservedKey{key: k, expires: askedAt.Add(r.maxAge)})
	}
	r.armExpiry()
}

// armExpiry sets the timer that zeroes the oldest key when it expires, so that keys do not
// outlive MaxAge in a process that stopped taking them. r.mu is held.
func (r *reserve) armExpiry() {
	if r.closed || len(r.keys) == 0 || r.expiry != nil {
		return
	}
	r.expiry = r.afterFunc(max(0, r.keys[0].expires.Sub(r.now())), r.expire)
}

// expire zeroes the keys that expired and sets the timer for the next.
func (r *reserve) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expiry = nil
	r.dropExpired(r.now())
	r.armExpiry()
}

// close zeroes the keys held and stops any refill; keys that arrive later are zeroed.
func (r *reserve) close() {
	r.mu.Lock()
	r.closed = true
	r.stopFill()
	if r.expiry != nil {
		r.expiry.Stop()
		r.expiry = nil
	}
	for i := range r.keys {
		envelope.Zero(r.keys[i].key.Plaintext)
	}
	r.keys = nil
	r.mu.Unlock()
	r.filled.Wait()
}

// zeroKeys zeroes the plaintext of keys.
func zeroKeys(keys []DataKey) {
	for _, k := range keys {
		envelope.Zero(k.Plaintext)
	}
}
