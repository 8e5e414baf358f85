package viewer

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// The first-use flow: open, refused passwords with their reasons, a good one, the message.
func TestFirstUseSetPassword(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{})
		id, link := f.message(phoneA, "Lab results", "Your results are normal.\n<script>alert(1)</script>")
		br := f.browser()

		r := br.get("/m/" + link)
		wantStatus(t, "landing", r, http.StatusOK)
		wantBody(t, "landing", r, "You have a secure message", "Riverside Clinic", "Continue")
		wantNoBody(t, "landing", r, "Lab results", "normal")

		r = br.step(link, "open")
		wantStatus(t, "open", r, http.StatusOK)
		wantBody(t, "open", r, "Choose a password", "at least 15 characters")
		if got := f.status(id); got != store.StatusOpened {
			t.Errorf("status after the explicit open = %s, want opened", got)
		}

		for _, tc := range []struct {
			pw, confirm, want string
			code              int
		}{
			{"short one", "short one", "too short: use at least 15 characters (this one has 9)", http.StatusUnprocessableEntity},
			{"passwordpassword", "passwordpassword", "list of common or leaked passwords", http.StatusUnprocessableEntity},
			{"Password1234567!", "Password1234567!", "list of common or leaked passwords", http.StatusUnprocessableEntity},
			{"aaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaa", "repeats the same few characters", http.StatusUnprocessableEntity},
			{"1234567890123456", "1234567890123456", "", http.StatusUnprocessableEntity}, // block-listed or sequential
			{"Riverside Clinic 2025", "Riverside Clinic 2025", "mostly the name of this service", http.StatusUnprocessableEntity},
			{goodPassword, goodPassword + "x", "are not the same", http.StatusUnprocessableEntity},
		} {
			r = br.step(link, "set-password", "password", tc.pw, "confirm", tc.confirm)
			wantStatus(t, "password "+tc.pw, r, tc.code)
			wantBody(t, "password "+tc.pw, r, `role="alert"`, tc.want)
		}
		if rc := f.recipientByPhone(phoneA); rc.PasswordHash != "" {
			t.Fatal("a refused password was stored")
		}

		r = br.step(link, "set-password", "password", goodPassword, "confirm", goodPassword)
		wantStatus(t, "good password", r, http.StatusOK)
		wantBody(t, "message page", r, "Lab results", "Your results are normal.", "&lt;script&gt;alert(1)&lt;/script&gt;", "Sign out")
		wantNoBody(t, "message page", r, "<script>")
		if got := f.status(id); got != store.StatusRead {
			t.Errorf("status after reveal = %s, want read", got)
		}
		want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindPasswordSet, audit.KindRevealed}
		if got := f.events(id); !slices.Equal(got, want) {
			t.Errorf("message events = %v, want %v", got, want)
		}
		// Setting a first password again is refused: the page asks for the existing one.
		r = br.step(link, "set-password", "password", "another long password here", "confirm", "another long password here")
		wantBody(t, "second first password", r, "already been set")
	})
}

func TestLoginAndNewSessionID(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{})
		_, link := f.message(phoneA, "Appointment", "See you Tuesday.")
		first := f.browser()
		wantStatus(t, "set password", first.setFirstPassword(link, goodPassword), http.StatusOK)
		firstSession := first.cookie(sessionCookie)
		if !tokenShape.MatchString(firstSession) {
			t.Fatalf("session cookie %q is not a token", firstSession)
		}

		// Another browser: wrong password, then the right one.
		br := f.browser()
		wantBody(t, "open", br.step(link, "open"), "Enter your password")
		r := br.login(link, "not the password at all")
		wantStatus(t, "wrong password", r, http.StatusUnauthorized)
		wantBody(t, "wrong password", r, "That password is not right")
		wantNoBody(t, "wrong password", r, "See you Tuesday")
		r = br.login(link, goodPassword)
		wantStatus(t, "right password", r, http.StatusOK)
		wantBody(t, "message", r, "See you Tuesday.")
		s1 := br.cookie(sessionCookie)

		// Signing in again from the same browser replaces its session id; the old one is gone.
		r = br.login(link, goodPassword)
		wantStatus(t, "sign in again", r, http.StatusOK)
		s2 := br.cookie(sessionCookie)
		if s1 == "" || s2 == "" || s1 == s2 || s1 == firstSession {
			t.Fatalf("session ids %q, %q, %q: want a new one at every sign-in", firstSession, s1, s2)
		}
		if _, err := f.Store.Session(context.Background(), token.Hash(s1)); err == nil {
			t.Error("the session replaced at sign-in still exists")
		}
		// A session id planted before sign-in (fixation) is never adopted.
		planted := token.New()
		br.jar.SetCookies(mustURL(f.Server.URL), []*http.Cookie{{Name: sessionCookie, Value: planted, Path: "/"}})
		wantStatus(t, "sign in with a planted id", br.login(link, goodPassword), http.StatusOK)
		if got := br.cookie(sessionCookie); got == planted {
			t.Error("sign-in kept the session id the browser brought")
		}
		// Cookie attributes.
		resp := br.login(link, goodPassword)
		var found bool
		for _, c := range resp.Cookies() {
			if c.Name == sessionCookie {
				found = true
				if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
					t.Errorf("session cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", c)
				}
			}
		}
		if !found {
			t.Error("sign-in set no session cookie")
		}
		login := 0
		for _, e := range f.allEvents() {
			if e.Kind == audit.KindLogin {
				login++
			}
		}
		if login != 5 {
			t.Errorf("%d login events, want 5", login)
		}
	})
}

// A remembered session shows a second message for the same recipient with one click, and
// never for another recipient.
func TestRememberedSession(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{})
		_, link1 := f.message(phoneA, "First", "first text")
		id2, link2 := f.message(phoneA, "Second", "second text")
		_, other := f.message(phoneB, "Other", "someone else's text")
		br := f.browser()
		wantStatus(t, "first message", br.setFirstPassword(link1, goodPassword), http.StatusOK)

		r := br.get("/m/" + link2)
		wantBody(t, "landing of the second message", r, "You are signed in", "Show message")
		wantNoBody(t, "landing of the second message", r, "second text")
		if got := f.status(id2); got != store.StatusAccepted {
			t.Errorf("GET changed the status to %s", got)
		}
		r = br.step(link2, "open")
		wantStatus(t, "one click", r, http.StatusOK)
		wantBody(t, "one click", r, "second text")
		want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindRevealed}
		if got := f.events(id2); !slices.Equal(got, want) {
			t.Errorf("events of the second message = %v, want %v", got, want)
		}

		// Another recipient's link: the session does not count.
		r = br.get("/m/" + other)
		wantNoBody(t, "other recipient's landing", r, "You are signed in")
		r = br.step(other, "open")
		wantNoBody(t, "other recipient's message", r, "someone else")
		r = br.step(other, "download", "n", "0")
		wantStatus(t, "other recipient's download", r, http.StatusUnauthorized)
	})
}

func TestLogout(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	_, link := f.message(phoneA, "S", "text")
	br := f.browser()
	br.setFirstPassword(link, goodPassword)
	sess := br.cookie(sessionCookie)
	r := br.post("/logout", url.Values{})
	wantStatus(t, "logout", r, http.StatusOK)
	wantBody(t, "logout", r, "You are signed out")
	if _, err := f.Store.Session(context.Background(), token.Hash(sess)); err == nil {
		t.Error("session survives logout")
	}
	// The old cookie value, replayed, is worth nothing.
	br.jar.SetCookies(mustURL(f.Server.URL), []*http.Cookie{{Name: sessionCookie, Value: sess, Path: "/"}})
	wantNoBody(t, "landing after logout", br.get("/m/"+link), "You are signed in")
	wantNoBody(t, "open after logout", br.step(link, "open"), "text</div>")
	var logout bool
	for _, e := range f.allEvents() {
		logout = logout || e.Kind == audit.KindLogout
	}
	if !logout {
		t.Error("logout was not audited")
	}
}

func TestIdleTimeoutAndLifetime(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{IdleTimeout: 15 * time.Minute, SessionLifetime: 2 * time.Hour}})
		_, link := f.message(phoneA, "S", "idle text")
		br := f.browser()
		br.setFirstPassword(link, goodPassword)

		f.Clock.Advance(14 * time.Minute)
		wantBody(t, "after 14 idle minutes", br.get("/m/"+link), "You are signed in")
		f.Clock.Advance(14 * time.Minute) // 14 minutes after the last use
		wantBody(t, "14 minutes after the last use", br.step(link, "open"), "idle text")
		f.Clock.Advance(15 * time.Minute)
		r := br.get("/m/" + link)
		wantNoBody(t, "after 15 idle minutes", r, "You are signed in")
		if _, err := f.Store.Session(context.Background(), token.Hash(br.cookie(sessionCookie))); err == nil {
			t.Error("an idle session was not deleted")
		}
		wantBody(t, "open after idle timeout", br.step(link, "open"), "Enter your password")

		// Absolute lifetime: used every 10 minutes, the session still ends after 2 hours.
		wantStatus(t, "sign in", br.login(link, goodPassword), http.StatusOK)
		for range 11 {
			f.Clock.Advance(10 * time.Minute)
			wantBody(t, "in use", br.get("/m/"+link), "You are signed in")
		}
		f.Clock.Advance(10 * time.Minute)
		wantNoBody(t, "after the lifetime", br.get("/m/"+link), "You are signed in")
	})
}

// One client's wrong passwords pause that client's password sign-in until they age out; even
// the right password is then not checked.
func TestClientPaused(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{MaxFailuresPerClient: 4, FailureWindow: 24 * time.Hour}})
		id, link := f.message(phoneA, "S", "paused text")
		f.browser().setFirstPassword(link, goodPassword)
		br := f.browser()
		br.step(link, "open")
		for i := 1; i < 4; i++ {
			wantStatus(t, "wrong password", br.login(link, "wrong wrong wrong wrong"), http.StatusUnauthorized)
		}
		r := br.login(link, "wrong wrong wrong wrong")
		wantStatus(t, "fourth wrong password", r, http.StatusTooManyRequests)
		wantBody(t, "paused", r, "Sign-in is paused", "Text me a code")
		if ra := r.Header.Get("Retry-After"); ra != "86400" {
			t.Errorf("Retry-After = %q, want 86400 (the failures age out in a day)", ra)
		}
		// The right password does not help while paused, and is not even checked.
		before := f.verifys.Load()
		r = br.login(link, goodPassword)
		wantStatus(t, "right password while paused", r, http.StatusTooManyRequests)
		wantNoBody(t, "right password while paused", r, "paused text")
		if f.verifys.Load() != before {
			t.Error("a paused client's password was verified")
		}
		if got := f.takeSleeps(); !slices.Equal(got, []time.Duration{0, 0, time.Second, 2 * time.Second}) {
			t.Errorf("progressive delays = %v, want [0 0 1s 2s]", got)
		}
		f.Clock.Advance(24 * time.Hour)
		wantBody(t, "after the failures aged out", br.login(link, goodPassword), "paused text")
		var failed, locked int
		for _, k := range f.events(id) {
			switch k {
			case audit.KindAuthFailed:
				failed++
			case audit.KindLocked:
				locked++
			}
		}
		if failed != 5 || locked != 1 {
			t.Errorf("%d auth-failed and %d locked events, want 5 and 1", failed, locked)
		}
	})
}

func TestGonePages(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{})
		ctx := context.Background()
		_, expiring := f.messageExpiring(phoneA, time.Minute, "S", "expiring text")
		revokedID, revoked := f.message(phoneA, "S", "revoked text")
		purgedID, purged := f.message(phoneA, "S", "purged text")
		if err := f.Store.Transition(ctx, revokedID, store.StatusRevoked, audit.Event{Kind: audit.KindRevoked, Actor: "ehr"}); err != nil {
			t.Fatal(err)
		}
		if err := f.Store.Purge(ctx, purgedID, audit.Event{Kind: audit.KindPurged, Actor: "system"}); err != nil {
			t.Fatal(err)
		}
		f.Clock.Advance(2 * time.Minute)
		br := f.browser()
		for _, tc := range []struct{ link, heading, body string }{
			{expiring, "This message has expired", "could be read until"},
			{revoked, "This message was withdrawn", "The sender withdrew"},
			{purged, "This message was deleted", "rules for how long messages are kept"},
		} {
			for _, r := range []response{br.get("/m/" + tc.link), br.step(tc.link, "open"), br.login(tc.link, goodPassword)} {
				wantStatus(t, tc.heading, r, http.StatusGone)
				wantBody(t, tc.heading, r, tc.heading, tc.body, "contact Riverside Clinic", "202-555-0100", "help@clinic.example")
			}
		}
	})
}

func TestAttachmentDownload(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	_, link := f.message(phoneA, "Forms", "See attached.",
		content.Attachment{Name: "../../etc/Consent form.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.4 consent")},
		content.Attachment{Name: "page.html", ContentType: "text/html", Data: []byte("<script>alert(1)</script>")})
	br := f.browser()
	r := br.step(link, "download", "n", "0")
	wantStatus(t, "download before sign-in", r, http.StatusUnauthorized)
	wantNoBody(t, "download before sign-in", r, "%PDF")
	wantBody(t, "message", br.setFirstPassword(link, goodPassword), "Consent form.pdf", "page.html")

	r = br.step(link, "download", "n", "0")
	wantStatus(t, "download", r, http.StatusOK)
	if r.body != "%PDF-1.4 consent" {
		t.Errorf("download body = %q", r.body)
	}
	if cd := r.Header.Get("Content-Disposition"); cd != `attachment; filename="Consent form.pdf"` {
		t.Errorf("Content-Disposition = %q", cd)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/pdf" {
		t.Errorf("Content-Type = %q", ct)
	}
	r = br.step(link, "download", "n", "1")
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("an HTML attachment is served as %q, want application/octet-stream", ct)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.HasSuffix(csp, "; sandbox") {
		t.Errorf("download CSP %q lacks sandbox", csp)
	}
	wantStatus(t, "no such attachment", br.step(link, "download", "n", "2"), http.StatusNotFound)
}

func TestForgery(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	id, link := f.message(phoneA, "S", "text")
	br := f.browser()
	br.get("/")
	for _, tc := range []struct {
		name   string
		mutate func(*http.Request)
		csrf   string
	}{
		{"no token", nil, "-"},
		{"wrong token", nil, token.New()},
		{"cross-site fetch", func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, ""},
		{"foreign origin", func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }, ""},
	} {
		form := "step=open"
		switch tc.csrf {
		case "":
			form += "&csrf=" + br.cookie(csrfCookie)
		case "-":
		default:
			form += "&csrf=" + tc.csrf
		}
		req, _ := http.NewRequest(http.MethodPost, f.Server.URL+"/m/"+link, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tc.mutate != nil {
			tc.mutate(req)
		}
		r := br.do(req)
		wantStatus(t, tc.name, r, http.StatusForbidden)
	}
	if got := f.status(id); got != store.StatusAccepted {
		t.Errorf("a forged post changed the status to %s", got)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
