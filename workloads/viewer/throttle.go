package viewer

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// Brute-force defences besides the sign-in throttle in the database (store.BeginLogin, with
// the decision of Policy.nextAttempt):
//
//   - addressLimiter counts failed attempts (wrong passwords, wrong codes) and codes texted per
//     client address in a fixed window, on any recipient, and blocks the address once it
//     reaches the limit: one address cannot spray many recipients.
//   - phantoms gives links that do not exist the same throttle and code behaviour a real
//     recipient has, so that whether a link exists cannot be learnt by counting attempts.
//
// Both live in this process's memory: with several replicas behind a load balancer an address
// gets the limit once per replica. The per-recipient throttle, which is what protects a
// password, is in the database and shared.

// maxTracked bounds each table; when full, expired entries go first, then the oldest.
const maxTracked = 100_000

type window struct {
	start time.Time
	count int
}

// addressLimiter counts events per client address in fixed windows.
type addressLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	counts map[netip.Addr]*window
}

func newAddressLimiter(limit int, w time.Duration) *addressLimiter {
	return &addressLimiter{limit: limit, window: w, counts: map[netip.Addr]*window{}}
}

// blocked reports whether addr has reached the limit at now.
func (l *addressLimiter) blocked(addr netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.counts[addr]
	return w != nil && now.Sub(w.start) < l.window && w.count >= l.limit
}

// add counts one event from addr at now.
func (l *addressLimiter) add(addr netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.counts[addr]
	if w == nil || now.Sub(w.start) >= l.window {
		if w == nil && len(l.counts) >= maxTracked {
			l.evict(now)
		}
		w = &window{start: now}
		l.counts[addr] = w
	}
	w.count++
}

func (l *addressLimiter) evict(now time.Time) {
	var oldest netip.Addr
	var oldestStart time.Time
	for a, w := range l.counts {
		if now.Sub(w.start) >= l.window {
			delete(l.counts, a)
			continue
		}
		if oldestStart.IsZero() || w.start.Before(oldestStart) {
			oldest, oldestStart = a, w.start
		}
	}
	if len(l.counts) >= maxTracked {
		delete(l.counts, oldest)
	}
}

// phantom is the sign-in state of a link that does not exist, as a real recipient's would be
// for clients that never signed in (nobody signs in on a phantom).
type phantom struct {
	failures []phantomFailure
	codes    []phantomCode
	seen     time.Time
}

type phantomFailure struct {
	client [32]byte
	at     time.Time
}

type phantomCode struct {
	requester, browser [32]byte
	at                 time.Time
	tries              int
	used               bool
}

// counts are the phantom's store.LoginCounts for client at now, as loginCounts in the store
// computes them for a client that is not trusted.
func (p *phantom) counts(client store.LoginClient, now time.Time, window time.Duration) store.LoginCounts {
	var c store.LoginCounts
	recent := p.failures[:0]
	for _, f := range p.failures {
		if !f.at.After(now.Add(-window)) {
			continue
		}
		recent = append(recent, f)
		if f.client == client.Address {
			if c.Client == 0 {
				c.ClientOldest = f.at
			}
			c.Client++
		}
		if c.Shared == 0 {
			c.SharedOldest = f.at
		}
		c.Shared++
		c.SharedLast = f.at
	}
	p.failures = recent
	return c
}

// phantoms tracks links that do not exist, by token hash.
type phantoms struct {
	mu sync.Mutex
	m  map[[32]byte]*phantom
}

func newPhantoms() *phantoms { return &phantoms{m: map[[32]byte]*phantom{}} }

// with runs fn on the phantom of hash, creating it if needed.
func (p *phantoms) with(hash [32]byte, now time.Time, fn func(*phantom)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ph := p.m[hash]
	if ph == nil {
		if len(p.m) >= maxTracked {
			var oldest [32]byte
			var oldestSeen time.Time
			for h, x := range p.m {
				if oldestSeen.IsZero() || x.seen.Before(oldestSeen) {
					oldest, oldestSeen = h, x.seen
				}
			}
			delete(p.m, oldest)
		}
		ph = &phantom{}
		p.m[hash] = ph
	}
	ph.seen = now
	fn(ph)
}

// nextAttempt is when a client with counts c may next try a password (not after now: at
// once). It is the whole throttle decision; the store applies it atomically.
func (p Policy) nextAttempt(c store.LoginCounts) time.Time {
	var t time.Time
	later := func(u time.Time) {
		if u.After(t) {
			t = u
		}
	}
	if c.Client >= p.MaxFailuresPerClient {
		later(c.ClientOldest.Add(p.FailureWindow))
	}
	if !c.Trusted {
		if c.Shared >= p.MaxFailures {
			later(c.SharedOldest.Add(p.FailureWindow))
		}
		later(c.SharedLast.Add(p.sharedDelay(c.Shared)))
	}
	return t
}

// sharedDelay is how long after the last failure of an untrusted client the next untrusted
// attempt waits, after n such failures: none until n reaches MaxFailuresPerClient, then one
// minute, doubling up to MaxDelay.
func (p Policy) sharedDelay(n int) time.Duration {
	free := p.MaxFailuresPerClient
	if n < free {
		return 0
	}
	d := time.Minute
	for i := free; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	return min(d, p.MaxDelay)
}

// afterFailure returns c as it is once the attempt it was read for has failed at now.
func afterFailure(c store.LoginCounts, now time.Time) store.LoginCounts {
	if c.Client == 0 {
		c.ClientOldest = now
	}
	c.Client++
	if !c.Trusted {
		if c.Shared == 0 {
			c.SharedOldest = now
		}
		c.Shared++
		c.SharedLast = now
	}
	return c
}

// clientAddr returns the address limits apply to: the connection's peer, or, when the peer
// is a trusted proxy, the last address in X-Forwarded-For that is not a trusted proxy.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	addr = addr.Unmap()
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !isTrusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		a = a.Unmap()
		if !isTrusted(a) {
			return a
		}
		addr = a
	}
	return addr
}

// failureDelay is the progressive delay after the n-th consecutive failure: none for the
// first two, then base·2^(n-3), at most ceiling.
func failureDelay(n int, base, ceiling time.Duration) time.Duration {
	if n < 3 || base <= 0 {
		return 0
	}
	d := base
	for i := 3; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// loginClient is who makes a request, for the throttle: the hashes of the browser's device
// token (zero if it has none) and of the client's address.
func (v *Viewer) loginClient(r *http.Request) store.LoginClient {
	var c store.LoginClient
	if t := cookieToken(r, deviceCookieName(r)); t != "" {
		c.Browser = token.Hash(t)
	}
	c.Address = token.Hash("address:" + clientAddr(r, v.cfg.TrustedProxies).String())
	return c
}
