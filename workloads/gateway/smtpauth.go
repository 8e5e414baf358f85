package gateway

// SMTP AUTH limits across connections.
//
// A connection closes after smtpMaxAuthFailures failed AUTHs, but a client can reconnect at
// once, so failures are also counted per client address and per user name. Each count is a
// leaky bucket: a failure adds one, and a full budget drains in AuthFailureWindow. An AUTH
// whose address, or whose user name, has used its budget is answered 454 4.7.0 (RFC 4954 §6:
// a temporary failure, so a sender's MTA retries later, when the count has drained) before
// any password is hashed: past its budget an attacker costs a TLS handshake, not an argon2id
// hash. Only hashed failures count, so a client refused for its budget does not keep itself
// refused, and a guesser gets at most the budget per window.
//
// A user name over its budget would otherwise let anyone who knows it keep its sender out.
// An address from which that user name logged in successfully (within smtpKnownAddressTTL)
// is exempt from the user name's budget, though not from its own: the sender's relay keeps
// working while a guesser elsewhere is refused.
//
// Fairness: each argon2id hash takes one of the few process-wide hashing slots (package
// password). An address may have one verification in flight; its other logins wait for that
// one here, in the gateway, not in the slots' queue. However many connections an address
// opens, it holds or queues for one slot at a time, so logins from other addresses are not
// queued behind its attempts.
//
// The counts live in memory, per replica: with N gateway replicas a client gets up to N
// budgets, and a restart forgets them (and the known addresses, so after a restart a user
// name under attack may refuse its own sender until the count drains). That is acceptable
// because the budgets bound the load and the pace of guessing, not a lifetime total, and the
// passwords `securetext sender` makes are random tokens far beyond guessing anyway.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Defaults of the SMTP AUTH limits in SMTPConfig.
const (
	DefaultSMTPAuthFailuresPerAddress = 10
	DefaultSMTPAuthFailuresPerUser    = 20
	DefaultSMTPAuthFailureWindow      = 15 * time.Minute
)

const (
	// smtpKnownAddressTTL is how long a successful login exempts its address from the user
	// name's budget, and smtpKnownAddressesPerUser how many such addresses a user name keeps
	// (the oldest goes first).
	smtpKnownAddressTTL       = 7 * 24 * time.Hour
	smtpKnownAddressesPerUser = 16
	// smtpAuthMaxTracked bounds the buckets held; past it drained buckets are dropped, and a
	// new address or user name is not counted until there is room again (its connection's own
	// limit still holds).
	smtpAuthMaxTracked = 1 << 16
)

// smtpAuthKey names a bucket: a client network or the SHA-256 of a user name (user names are
// not kept as typed: people type passwords into them).
type smtpAuthKey struct {
	addr netip.Prefix
	user [sha256.Size]byte
}

// smtpAuthBucket is a failure count that drains at the limiter's rate.
type smtpAuthBucket struct {
	level float64
	at    time.Time
}

// smtpAuthGate lets one verification of an address run at a time; refs counts the logins
// holding or waiting for it, so that an unused gate is dropped.
type smtpAuthGate struct {
	slot    chan struct{}
	refs    int
	waiting int
}

// smtpAuthLimiter holds the buckets, known addresses and gates of one SMTP server.
type smtpAuthLimiter struct {
	perAddress, perUser int
	window              time.Duration
	now                 func() time.Time

	mu      sync.Mutex
	buckets map[smtpAuthKey]*smtpAuthBucket
	known   map[[sha256.Size]byte]map[netip.Prefix]time.Time
	gates   map[netip.Prefix]*smtpAuthGate
}

func newSMTPAuthLimiter(perAddress, perUser int, window time.Duration, now func() time.Time) *smtpAuthLimiter {
	return &smtpAuthLimiter{
		perAddress: perAddress, perUser: perUser, window: window, now: now,
		buckets: map[smtpAuthKey]*smtpAuthBucket{},
		known:   map[[sha256.Size]byte]map[netip.Prefix]time.Time{},
		gates:   map[netip.Prefix]*smtpAuthGate{},
	}
}

// smtpClientNetwork is the unit an address budget applies to: an IPv4 address, or an IPv6
// /64 (one host usually holds a whole /64, so counting single IPv6 addresses would give it
// 2^64 budgets).
func smtpClientNetwork(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

func smtpUserKey(username string) [sha256.Size]byte {
	return sha256.Sum256([]byte(username))
}

// level returns b's count at now, drained at budget per window.
func (l *smtpAuthLimiter) level(b *smtpAuthBucket, budget int, now time.Time) float64 {
	if b == nil {
		return 0
	}
	drained := now.Sub(b.at).Seconds() * float64(budget) / l.window.Seconds()
	return math.Max(0, b.level-max(0, drained))
}

// over returns how long until the bucket at key allows another failure, or 0 if it does now.
func (l *smtpAuthLimiter) over(key smtpAuthKey, budget int, now time.Time) time.Duration {
	lvl := l.level(l.buckets[key], budget, now)
	if lvl < float64(budget) {
		return 0
	}
	wait := (lvl - float64(budget) + 1) * l.window.Seconds() / float64(budget)
	return time.Duration(math.Ceil(wait)) * time.Second
}

// smtpAuthRefusal is why an AUTH is refused before its password is hashed.
type smtpAuthRefusal struct {
	user       bool // the user name's budget, else the address's
	retryAfter time.Duration
}

// check returns a refusal when net or username has used its budget; a user name's budget does
// not apply to an address that logged in as that user.
func (l *smtpAuthLimiter) check(net netip.Prefix, username string) *smtpAuthRefusal {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if wait := l.over(smtpAuthKey{addr: net}, l.perAddress, now); wait > 0 {
		return &smtpAuthRefusal{retryAfter: wait}
	}
	user := smtpUserKey(username)
	if seen, ok := l.known[user][net]; ok && now.Sub(seen) < smtpKnownAddressTTL {
		return nil
	}
	if wait := l.over(smtpAuthKey{user: user}, l.perUser, now); wait > 0 {
		return &smtpAuthRefusal{user: true, retryAfter: wait}
	}
	return nil
}

// failed counts a hashed failure against net and username.
func (l *smtpAuthLimiter) failed(net netip.Prefix, username string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(smtpAuthKey{addr: net}, l.perAddress, now)
	l.add(smtpAuthKey{user: smtpUserKey(username)}, l.perUser, now)
}

func (l *smtpAuthLimiter) add(key smtpAuthKey, budget int, now time.Time) {
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= smtpAuthMaxTracked {
			for k, old := range l.buckets {
				kb := l.perAddress
				if !k.addr.IsValid() {
					kb = l.perUser
				}
				if l.level(old, kb, now) == 0 {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= smtpAuthMaxTracked {
				return
			}
		}
		b = &smtpAuthBucket{}
		l.buckets[key] = b
	}
	b.level, b.at = l.level(b, budget, now)+1, now
}

// succeeded remembers net as an address username logs in from.
func (l *smtpAuthLimiter) succeeded(net netip.Prefix, username string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	user := smtpUserKey(username)
	addrs := l.known[user]
	if addrs == nil {
		addrs = map[netip.Prefix]time.Time{}
		l.known[user] = addrs
	}
	addrs[net] = now
	for len(addrs) > smtpKnownAddressesPerUser {
		var oldest netip.Prefix
		for a, t := range addrs {
			if !oldest.IsValid() || t.Before(addrs[oldest]) {
				oldest = a
			}
		}
		delete(addrs, oldest)
	}
}

// slot waits until net may start a verification, and returns the function that ends it.
func (l *smtpAuthLimiter) slot(ctx context.Context, net netip.Prefix) (release func(), err error) {
	l.mu.Lock()
	g := l.gates[net]
	if g == nil {
		g = &smtpAuthGate{slot: make(chan struct{}, 1)}
		l.gates[net] = g
	}
	g.refs++
	g.waiting++
	l.mu.Unlock()

	var waitErr error
	select {
	case g.slot <- struct{}{}:
	case <-ctx.Done():
		waitErr = fmt.Errorf("wait for this address's other login: %w", context.Cause(ctx))
	}
	l.mu.Lock()
	g.waiting--
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if g.refs--; g.refs == 0 {
			delete(l.gates, net)
		}
	}
	if waitErr != nil {
		done()
		return nil, waitErr
	}
	return func() {
		<-g.slot
		done()
	}, nil
}

// waiting reports how many logins of net wait for its slot (for tests).
func (l *smtpAuthLimiter) waiting(net netip.Prefix) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.gates[net]; g != nil {
		return g.waiting
	}
	return 0
}

// smtpRetryText says when to retry, in whole minutes (at least one).
func smtpRetryText(d time.Duration) string {
	m := int(math.Ceil(d.Minutes()))
	if m <= 1 {
		return "in a minute"
	}
	return fmt.Sprintf("in %d minutes", m)
}
