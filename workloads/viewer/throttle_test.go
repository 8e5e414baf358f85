package viewer

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// The proxy the attack tests run behind: the test server's peer is 127.0.0.1, and each
// attacking browser names its own address in X-Forwarded-For, as many machines would.
var loopbackProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// attackerBrowser is a fresh browser (no cookies) at its own address.
func (f *fixture) attackerBrowser(n int) *browser {
	br := f.browser()
	br.header.Set("X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", n/250, 1+n%250))
	return br
}

// retryAfter is the Retry-After of r.
func retryAfter(t *testing.T, r response) time.Duration {
	t.Helper()
	s, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil {
		t.Fatalf("Retry-After %q: %v", r.Header.Get("Retry-After"), err)
	}
	return time.Duration(s) * time.Second
}

// #19 item 2, the attack: someone holding link A fails sign-ins without end, from ever new
// browsers and addresses, asks for codes and guesses them. The patient, with link B (another
// message to the same phone), is never kept out: the remembered session keeps working, the
// browser they signed in from before signs in at once with the right password, a new browser
// waits at most MaxDelay while the guessing budget lasts, and a code to the phone, asked for
// in the patient's browser, always comes and works.
func TestAttackerCannotHoldPatientOut(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{IdleTimeout: 12 * time.Hour, SessionLifetime: 12 * time.Hour},
			trustedProxies: loopbackProxy})
		policy := f.Viewer.cfg.Policy
		_, linkA := f.message(phoneA, "A", "text of message A")
		_, linkB := f.message(phoneA, "B", "text of message B")

		// Before the attack the patient signed in on their phone's browser (then signed out)
		// and on a tablet, which keeps its session.
		phone := f.attackerBrowser(10_000)
		wantBody(t, "first password", phone.setFirstPassword(linkB, goodPassword), "text of message B")
		wantStatus(t, "sign out", phone.post("/logout", url.Values{}), http.StatusOK)
		tablet := f.attackerBrowser(10_001)
		tablet.step(linkB, "open")
		wantBody(t, "tablet sign-in", tablet.login(linkB, goodPassword), "text of message B")

		attackers := 0
		attack := func() response {
			attackers++
			br := f.attackerBrowser(attackers)
			br.step(linkA, "open")
			return br.login(linkA, fmt.Sprintf("guess number %d", attackers))
		}
		patientGetsIn := func(what string, remembered bool) {
			t.Helper()
			if remembered {
				wantBody(t, what+": remembered session", tablet.step(linkB, "open"), "text of message B")
			}
			r := phone.login(linkB, goodPassword)
			wantStatus(t, what+": the patient's browser", r, http.StatusOK)
			wantBody(t, what+": the patient's browser", r, "text of message B")
			wantStatus(t, what+": sign out", phone.post("/logout", url.Values{}), http.StatusOK)
		}

		// A burst: attempts from new clients until the shared delay holds them back.
		for range 30 {
			attack()
		}
		patientGetsIn("after a burst", true)
		// A new browser of the patient waits at most MaxDelay.
		fresh := f.attackerBrowser(10_002)
		fresh.step(linkB, "open")
		r := fresh.login(linkB, goodPassword)
		if r.StatusCode == http.StatusTooManyRequests {
			if d := retryAfter(t, r); d > policy.MaxDelay {
				t.Fatalf("a new browser of the patient is told to wait %v, more than MaxDelay %v", d, policy.MaxDelay)
			}
			f.Clock.Advance(retryAfter(t, r))
			r = fresh.login(linkB, goodPassword)
		}
		wantBody(t, "a new browser within MaxDelay", r, "text of message B")

		// The long attack: whenever held back, the attacker waits exactly as long as told, and
		// also asks for codes and guesses them.
		start := f.Clock.Now()
		for f.Clock.Now().Before(start.Add(3 * 24 * time.Hour)) {
			r := attack()
			if r.StatusCode == http.StatusTooManyRequests {
				f.Clock.Advance(min(retryAfter(t, r), 6*time.Hour))
				patientGetsIn(fmt.Sprintf("after %d attacking browsers", attackers), false)
			}
			if attackers%7 == 0 {
				br := f.attackerBrowser(attackers)
				br.step(linkA, "send-code", "purpose", "reset")
				for range 6 {
					br.step(linkA, "reset", "code", "000000", "password", "attacker pass phrase", "confirm", "attacker pass phrase")
				}
			}
		}

		// The budget is spent, so a new browser of the patient cannot use the password.
		fresh = f.attackerBrowser(10_003)
		fresh.step(linkB, "open")
		wantStatus(t, "a new browser once the budget is spent", fresh.login(linkB, goodPassword), http.StatusTooManyRequests)
		// A code to the phone: one attacking client cannot use up the codes of new browsers...
		f.Clock.Advance(policy.CodeWindow)
		for range 10 {
			one := f.attackerBrowser(1)
			one.step(linkA, "send-code", "purpose", "reset")
		}
		wantStatus(t, "patient asks for a code", fresh.step(linkB, "send-code", "purpose", "reset"), http.StatusOK)
		code := f.SMS.lastCode(t, phoneA)
		// ...and many attacking clients cannot use up those of a browser the patient signed in from.
		for i := range 20 {
			f.attackerBrowser(20_000+i).step(linkA, "send-code", "purpose", "reset")
		}
		sent := f.SMS.count()
		wantStatus(t, "the patient's browser asks for a code", phone.step(linkB, "send-code", "purpose", "reset"), http.StatusOK)
		if f.SMS.count() != sent+1 || f.SMS.lastCode(t, phoneA) == "" {
			t.Fatal("no code was texted for the patient's browser")
		}
		// Nobody else can use or use up the patient's code, not even with its digits.
		for i := range 10 {
			br := f.attackerBrowser(30_000 + i)
			br.step(linkA, "send-code", "purpose", "reset")
			for _, guess := range []string{code, fmt.Sprintf("%06d", i)} {
				r := br.step(linkA, "reset", "code", guess, "password", "attacker pass phrase", "confirm", "attacker pass phrase")
				wantNoBody(t, "attacker's code guess", r, "text of message A")
			}
		}
		r = fresh.step(linkB, "reset", "code", code, "password", "a brand new pass phrase", "confirm", "a brand new pass phrase")
		wantStatus(t, "reset with the patient's code", r, http.StatusOK)
		wantBody(t, "reset with the patient's code", r, "text of message B")
	})
}

// #19 item 2, the bound: however many clients guess, and however long each waits as told, a
// recipient's password is checked for at most MaxFailures wrong guesses in FailureWindow.
func TestGuessingBudget(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{trustedProxies: loopbackProxy})
		policy := f.Viewer.cfg.Policy
		id, link := f.message(phoneA, "S", "text")
		f.browser().setFirstPassword(link, goodPassword)
		before := f.verifys.Load()
		start := f.Clock.Now()
		attempts := 0
		// The loop stops early once more than MaxFailures passwords were checked: the test has
		// failed by then.
		for f.Clock.Now().Before(start.Add(policy.FailureWindow-time.Second)) && f.verifys.Load()-before <= int64(policy.MaxFailures) {
			attempts++
			br := f.attackerBrowser(attempts)
			r := br.login(link, fmt.Sprintf("guess number %d", attempts))
			if r.StatusCode == http.StatusTooManyRequests {
				f.Clock.Advance(min(retryAfter(t, r), start.Add(policy.FailureWindow-time.Second).Sub(f.Clock.Now())+time.Second))
			}
		}
		guesses := f.verifys.Load() - before
		if guesses != int64(policy.MaxFailures) {
			t.Errorf("%d passwords checked in %v from %d clients, want exactly MaxFailures (%d)", guesses, policy.FailureWindow, attempts, policy.MaxFailures)
		}
		var locked int
		for _, k := range f.events(id) {
			if k == audit.KindLocked {
				locked++
			}
		}
		if locked != 1 {
			t.Errorf("%d locked events, want 1 (the shared budget reached)", locked)
		}
	})
}

// #19 item 3: without a trusted proxy, X-Forwarded-For names nobody: a forged header does not
// change whose count a request adds to. From the configured proxy it does.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies []netip.Prefix
		paused  bool // the fourth attempt hits the client's own limit (one client)
	}{
		{"no trusted proxy", nil, true},
		{"trusted proxy", loopbackProxy, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{MaxFailuresPerClient: 3}, trustedProxies: tc.proxies})
			_, link := f.message(phoneA, "S", "text")
			f.browser().setFirstPassword(link, goodPassword)
			var r response
			for i := range 4 {
				r = f.attackerBrowser(i).login(link, "wrong wrong wrong")
			}
			// Both answers are 429: the fourth attempt from anywhere waits the shared delay of
			// a minute; only one client's own limit waits for the failures to age out.
			wantStatus(t, "fourth attempt", r, http.StatusTooManyRequests)
			if got := retryAfter(t, r) > time.Hour; got != tc.paused {
				t.Errorf("fourth attempt waits %v; want the client's own limit: %v", retryAfter(t, r), tc.paused)
			}
		})
	}
}

// #19 item 3: failed sign-ins are stored with their audit event: every failure the throttle
// counts has its auth-failed event, and the failure that reaches a limit its locked event.
func TestFailuresAuditedWithTheirCount(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{MaxFailuresPerClient: 2}})
	id, link := f.message(phoneA, "S", "text")
	f.browser().setFirstPassword(link, goodPassword)
	br := f.browser()
	br.login(link, "wrong wrong wrong")
	br.login(link, "wrong wrong wrong")
	var details []map[string]string
	for _, e := range f.allEvents() {
		if e.MessageID == id && (e.Kind == audit.KindAuthFailed || e.Kind == audit.KindLocked) {
			details = append(details, e.Detail)
		}
	}
	if len(details) != 3 || details[0]["failures"] != "1" || details[1]["failures"] != "2" || details[2]["scope"] != "client" {
		t.Errorf("events %v, want auth-failed 1, auth-failed 2, locked (client)", details)
	}
	a, err := f.Store.BeginLogin(context.Background(), f.recipientByPhone(phoneA).ID, store.LoginClient{Address: [32]byte{1}},
		f.Clock.Now(), time.Hour, func(store.LoginCounts) bool { return false })
	if err != nil || a.Counts.Shared != 2 {
		t.Errorf("shared count %d (%v), want the 2 audited failures", a.Counts.Shared, err)
	}
}

// #19 item 5: pages show times in the tenant's zone; without one, in DefaultTimeZone, never UTC.
func TestPagesShowTenantTimeZone(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 1, 15, 15, 4, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		loc  *time.Location
		want string
	}{
		{"default", nil, "Sent January 15, 2025 at 10:04 AM EST"},
		{"tenant zone", tokyo, "Sent January 16, 2025 at 12:04 AM JST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, sqliteBackend, fixtureOptions{location: tc.loc, start: start})
			_, link := f.message(phoneA, "S", "text")
			r := f.browser().setFirstPassword(link, goodPassword)
			wantBody(t, "message page", r, tc.want)
			if strings.Contains(r.body, "UTC") {
				t.Errorf("the message page shows UTC:\n%s", r.body)
			}
		})
	}
}
