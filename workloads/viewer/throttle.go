package viewer

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Brute-force defences that are not the per-recipient lock in the database:
//
//   - addressLimiter counts failed attempts (wrong passwords, wrong codes) and codes texted per
//     client address in a fixed window, and blocks the address once it reaches the limit.
//   - phantoms gives links that do not exist the same lock behaviour a real recipient has, so
//     that whether a link exists cannot be learnt by counting attempts until a lock.
//
// Both live in this process's memory: with several replicas behind a load balancer an address
// gets the limit once per replica. The per-recipient lock, which is what protects a password,
// is in the database and shared.

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

// phantom is the login state of a link that does not exist, as a real recipient's would be.
type phantom struct {
	failures    int
	lockedUntil time.Time
	codes       []time.Time // when codes were "sent", within the rate-limit window
	codeTries   int         // wrong tries of the last "sent" code
	seen        time.Time
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
