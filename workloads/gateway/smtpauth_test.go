package gateway

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	netsmtp "net/smtp"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// smtpTestClock is a clock that moves only when a test moves it.
type smtpTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *smtpTestClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *smtpTestClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// authFrom connects from local to the STARTTLS listener and authenticates with auth.
func (h *smtpHarness) authFrom(t testing.TB, local string, auth netsmtp.Auth) error {
	t.Helper()
	c, err := h.dialFrom(local, h.addr)
	if err != nil {
		t.Fatalf("connect from %s: %v", local, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.Auth(auth)
}

// failFrom sends wrong passwords for user from local, on connections of their own once the
// server closes one, and returns the replies' errors.
func (h *smtpHarness) failFrom(t testing.TB, local, user string, n int) []error {
	t.Helper()
	var errs []error
	var c *netsmtp.Client
	for len(errs) < n {
		if c == nil {
			conn, err := h.dialFrom(local, h.addr)
			if err != nil {
				t.Fatalf("connect from %s: %v", local, err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			c = conn
		}
		_, msg, err := smtpCmd(c, 235, "AUTH PLAIN %s", badPlain(user))
		if err == nil {
			t.Fatalf("a wrong password was accepted: %s", msg)
		}
		errs = append(errs, err)
		if _, _, err := smtpCmd(c, 250, "NOOP"); err != nil {
			c = nil // closed after its last allowed failure
		}
	}
	return errs
}

// TestSMTPAuthFailuresLimitedPerAddress: failed AUTHs from one address count across its
// connections; over the budget even the right password gets 454 4.7.0 (nothing is hashed),
// another address still logs in, and the count drains with time.
func TestSMTPAuthFailuresLimitedPerAddress(t *testing.T) {
	clock := &smtpTestClock{t: time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)}
	h := newSMTPHarness(t, sqliteBackend, func(c *SMTPConfig) {
		c.AuthFailuresPerAddress, c.AuthFailuresPerUser, c.AuthFailureWindow = 4, 100, 8*time.Minute
		c.Now = clock.Now
	})
	user := h.f.Sender.SMTPUsername

	// Four failures on two connections (the first closes after its third) use the budget.
	for _, err := range h.failFrom(t, "127.0.0.2", user, 4) {
		wantReply(t, err, 535, "5.7.8")
	}
	// The fifth, and the right password on a new connection, are refused before hashing.
	wantReply(t, h.failFrom(t, "127.0.0.2", user, 1)[0], 454, "4.7.0", "Too many failed logins from your address", "try again in 2 minutes")
	wantReply(t, h.authFrom(t, "127.0.0.2", h.plainAuth()), 454, "4.7.0", "Too many failed logins from your address")
	if got := smtpRefusals(t, h.metrics, ReasonRateLimited); got != 2 {
		t.Errorf("%v rate-limited logins counted, want 2", got)
	}
	if got := smtpRefusals(t, h.metrics, ReasonUnauthenticated); got != 4 {
		t.Errorf("%v failed logins counted, want 4", got)
	}

	// Another address is not affected.
	if err := h.authFrom(t, "127.0.0.1", h.plainAuth()); err != nil {
		t.Fatalf("login from another address: %v", err)
	}

	// A budget of 4 in 8 minutes drains one failure every 2 minutes.
	clock.Add(2 * time.Minute)
	if err := h.authFrom(t, "127.0.0.2", h.plainAuth()); err != nil {
		t.Fatalf("login once the count has drained: %v", err)
	}
	h.wantLog(t, `"msg":"smtp login refused"`, `"reply":"454 4.7.0"`, `"reason":"address-over-budget"`, `"remote":"127.0.0.2"`)
}

// TestSMTPAuthFailuresLimitedPerUser: failures for one user name from many addresses, each
// within its own budget, use up the user name's budget; a new address is then refused for that
// user name, while the address the sender logged in from before still logs in, and other user
// names are not affected.
func TestSMTPAuthFailuresLimitedPerUser(t *testing.T) {
	clock := &smtpTestClock{t: time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)}
	h := newSMTPHarness(t, sqliteBackend, func(c *SMTPConfig) {
		c.AuthFailuresPerAddress, c.AuthFailuresPerUser, c.AuthFailureWindow = 3, 5, 10*time.Minute
		c.Now = clock.Now
	})
	user := h.f.Sender.SMTPUsername
	if err := h.authFrom(t, "127.0.0.1", h.plainAuth()); err != nil {
		t.Fatalf("the sender's first login: %v", err)
	}
	for _, err := range append(h.failFrom(t, "127.0.0.2", user, 3), h.failFrom(t, "127.0.0.3", user, 2)...) {
		wantReply(t, err, 535, "5.7.8")
	}

	wantReply(t, h.authFrom(t, "127.0.0.4", h.plainAuth()), 454, "4.7.0", "Too many failed logins for this user name", "try again in 2 minutes")
	if err := h.authFrom(t, "127.0.0.1", h.plainAuth()); err != nil {
		t.Fatalf("login from the sender's known address while its user name is over budget: %v", err)
	}
	wantReply(t, h.failFrom(t, "127.0.0.4", "someone-else@clinic.example", 1)[0], 535, "5.7.8")

	clock.Add(2 * time.Minute)
	if err := h.authFrom(t, "127.0.0.4", h.plainAuth()); err != nil {
		t.Fatalf("login from a new address once the user name's count has drained: %v", err)
	}
	h.wantLog(t, `"msg":"smtp login refused"`, `"reply":"454 4.7.0"`, `"reason":"user-over-budget"`)
}

// TestSMTPAuthSlotPerAddress: an address has one password verification in flight at a time, so
// its other logins wait in the gateway and not for the process's hashing slots. With the
// attacker's address holding its slot, the attacker's next login waits, and a login from
// another address is verified meanwhile.
func TestSMTPAuthSlotPerAddress(t *testing.T) {
	h := newSMTPHarness(t, sqliteBackend, nil)
	attacker := smtpClientNetwork(netip.MustParseAddr("127.0.0.2"))
	release, err := h.srv.auth.slot(context.Background(), attacker)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			release()
		}
	}()

	c, err := h.dialFrom("127.0.0.2", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	attack := make(chan error, 1)
	go func() {
		_, _, err := smtpCmd(c, 235, "AUTH PLAIN %s", badPlain(h.f.Sender.SMTPUsername))
		attack <- err
	}()
	for i := 0; h.srv.auth.waiting(attacker) != 1; i++ {
		if i == 1000 {
			t.Fatal("the attacker's second login did not wait for its address's slot")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := h.authFrom(t, "127.0.0.1", h.plainAuth()); err != nil {
		t.Fatalf("login from another address: %v", err)
	}
	select {
	case err := <-attack:
		t.Fatalf("the attacker's login was answered (%v) while its address's slot was held", err)
	default:
	}

	release()
	released = true
	wantReply(t, <-attack, 535, "5.7.8")
	if n := h.srv.auth.waiting(attacker); n != 0 {
		t.Errorf("%d logins still wait", n)
	}
}

func TestSMTPClientNetwork(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
	} {
		if got := smtpClientNetwork(netip.MustParseAddr(tt.ip)); got.String() != tt.want {
			t.Errorf("smtpClientNetwork(%s) = %s, want %s", tt.ip, got, tt.want)
		}
	}
}

// dialFrom connects to addr from the loopback address local (127.0.0.0/8 is all loopback
// on Linux, so 127.0.0.2 is another client address), says EHLO and starts TLS.
func (h *smtpHarness) dialFrom(local, addr string) (*netsmtp.Client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := netsmtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := c.Hello("client.example"); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.StartTLS(h.clientTLS); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// badPlain is an AUTH PLAIN initial response with a wrong password for user.
func badPlain(user string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00PHI-wrong-password"))
}

// BenchmarkSMTPLoginUnderAttack measures one valid login (connect, STARTTLS, AUTH PLAIN at
// OWASP's argon2id cost) from 127.0.0.1 while attacking connections from 127.0.0.2 keep
// sending wrong passwords for the same user name, reconnecting whenever the server closes the
// connection. "budgets=off" raises the failure budgets out of reach, so that only the
// per-address verification slot keeps the login fair; attempts/s counts the attack's replies.
func BenchmarkSMTPLoginUnderAttack(b *testing.B) {
	for _, bc := range []struct {
		attackers  int
		budgetsOff bool
	}{{0, false}, {19, false}, {19, true}} {
		name := fmt.Sprintf("attackers=%d", bc.attackers)
		if bc.budgetsOff {
			name += "/budgets=off"
		}
		b.Run(name, func(b *testing.B) {
			h := newSMTPHarness(b, sqliteBackend, func(c *SMTPConfig) {
				c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
				if bc.budgetsOff {
					c.AuthFailuresPerAddress, c.AuthFailuresPerUser = 1<<30, 1<<30
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var attempts atomic.Int64
			for range bc.attackers {
				wg.Go(func() {
					for ctx.Err() == nil {
						c, err := h.dialFrom("127.0.0.2", h.addr)
						if err != nil {
							continue
						}
						for ctx.Err() == nil {
							if _, _, err := smtpCmd(c, 235, "AUTH PLAIN %s", badPlain(h.f.Sender.SMTPUsername)); err == nil {
								panic("a wrong password was accepted")
							}
							attempts.Add(1)
							if _, _, err := smtpCmd(c, 250, "NOOP"); err != nil {
								break // closed by the server
							}
						}
						_ = c.Close()
					}
				})
			}
			b.Cleanup(func() { cancel(); wg.Wait() })
			for attempts.Load() < int64(bc.attackers) { // the attack is under way
				time.Sleep(time.Millisecond)
			}
			attempts.Store(0)
			for b.Loop() {
				c, err := h.dialFrom("127.0.0.1", h.addr)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Auth(h.plainAuth()); err != nil {
					b.Fatalf("valid login: %v", err)
				}
				_ = c.Close()
			}
			b.ReportMetric(float64(attempts.Load())/b.Elapsed().Seconds(), "attempts/s")
		})
	}
}
