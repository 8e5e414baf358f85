package viewer

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// First use with the one-time-code policy: the phone is confirmed with a texted code (6 digits,
// 10 minutes, single use, rate-limited) before the first password, which may then be 8
// characters long.
func TestOneTimeCodeFirstUse(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{OneTimeCode: true, MinPasswordLength: 8, CodesPerClient: 3}})
		id, link := f.message(phoneA, "S", "code text")
		br := f.browser()
		r := br.step(link, "open")
		wantBody(t, "open", r, "Confirm it is you", "Text me a code")
		if f.SMS.count() != 0 {
			t.Fatal("opening the link texted a code")
		}
		r = br.step(link, "send-code", "purpose", "setup")
		wantStatus(t, "send code", r, http.StatusOK)
		wantBody(t, "send code", r, "We texted a 6-digit code", "works for 10 minutes", `autocomplete="one-time-code"`)
		wantNoBody(t, "send code", r, phoneA, "0143")
		code := f.SMS.lastCode(t, phoneA)
		if f.SMS.sent[0].Reference != id || strings.Contains(f.SMS.sent[0].Body, "code text") {
			t.Errorf("code text %+v", f.SMS.sent[0])
		}

		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		set := func(code, pw string) response {
			return br.step(link, "set-password", "code", code, "password", pw, "confirm", pw)
		}
		r = set(wrong, "tulip sky")
		wantStatus(t, "wrong code", r, http.StatusUnauthorized)
		wantBody(t, "wrong code", r, "That code is not right")
		r = set(code, "tulip")
		wantStatus(t, "short password", r, http.StatusUnprocessableEntity)
		wantBody(t, "short password", r, "at least 8 characters")
		r = set(code, "tulip sky")
		wantStatus(t, "right code", r, http.StatusOK)
		wantBody(t, "right code", r, "code text")
		// Single use: the same code cannot set a password again (nor reset one).
		r = f.browser().step(link, "reset", "code", code, "password", "another pass", "confirm", "another pass")
		wantStatus(t, "reused code", r, http.StatusUnauthorized)
		wantBody(t, "reused code", r, "That code has expired")

		kinds := f.events(id)
		if !slices.Contains(kinds, audit.KindCodeSent) || !slices.Contains(kinds, audit.KindPasswordSet) {
			t.Errorf("events %v lack code-sent or password-set", kinds)
		}
	})
}

func TestOneTimeCodeExpiryAndRateLimit(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{OneTimeCode: true, CodesPerClient: 3, CodeWindow: time.Hour}})
	_, link := f.message(phoneA, "S", "text")
	br := f.browser()
	br.step(link, "open")
	wantStatus(t, "send code", br.step(link, "send-code", "purpose", "setup"), http.StatusOK)
	code := f.SMS.lastCode(t, phoneA)
	f.Clock.Advance(10*time.Minute + time.Second)
	r := br.step(link, "set-password", "code", code, "password", goodPassword, "confirm", goodPassword)
	wantStatus(t, "expired code", r, http.StatusUnauthorized)
	wantBody(t, "expired code", r, "That code has expired")

	// A newer code replaces the older one.
	br.step(link, "send-code", "purpose", "setup")
	older := f.SMS.lastCode(t, phoneA)
	br.step(link, "send-code", "purpose", "setup")
	newer := f.SMS.lastCode(t, phoneA)
	r = br.step(link, "send-code", "purpose", "setup")
	wantStatus(t, "fourth code in an hour", r, http.StatusTooManyRequests)
	wantBody(t, "fourth code in an hour", r, "Several codes were sent")
	if f.SMS.count() != 3 {
		t.Errorf("%d texts sent, want 3", f.SMS.count())
	}
	if older != newer {
		r = br.step(link, "set-password", "code", older, "password", goodPassword, "confirm", goodPassword)
		wantStatus(t, "superseded code", r, http.StatusUnauthorized)
	}
	r = br.step(link, "set-password", "code", newer, "password", goodPassword, "confirm", goodPassword)
	wantStatus(t, "newest code", r, http.StatusOK)

	// Too many wrong tries kill a code.
	f.Clock.Advance(time.Hour)
	br2 := f.browser()
	br2.step(link, "send-code", "purpose", "reset")
	code = f.SMS.lastCode(t, phoneA)
	for range 5 {
		br2.step(link, "reset", "code", "12345x", "password", goodPassword+" two", "confirm", goodPassword+" two")
	}
	r = br2.step(link, "reset", "code", code, "password", goodPassword+" two", "confirm", goodPassword+" two")
	wantStatus(t, "right code after five wrong ones", r, http.StatusUnauthorized)

	// A failing SMS provider: the patient is told to retry.
	f.SMS.fail = true
	f.Clock.Advance(time.Hour)
	r = br2.step(link, "send-code", "purpose", "reset")
	wantStatus(t, "provider down", r, http.StatusServiceUnavailable)
	wantBody(t, "provider down", r, "could not send the text")
}

// Forgot password: a code to the phone replaces the password, clears the failure counts and
// signs out every other session.
func TestForgotPassword(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{MaxFailuresPerClient: 2}})
		id, link := f.message(phoneA, "S", "reset text")
		other := f.browser()
		other.setFirstPassword(link, goodPassword)
		otherSession := other.cookie(sessionCookie)

		br := f.browser()
		br.step(link, "open")
		br.login(link, "wrong wrong wrong")
		wantStatus(t, "paused", br.login(link, "wrong wrong wrong"), http.StatusTooManyRequests)
		r := br.step(link, "send-code", "purpose", "reset")
		wantStatus(t, "forgot", r, http.StatusOK)
		wantBody(t, "forgot", r, "Choose a new password", "We texted a 6-digit code")
		code := f.SMS.lastCode(t, phoneA)
		r = br.step(link, "reset", "code", code, "password", "new sunny meadow path", "confirm", "new sunny meadow path")
		wantStatus(t, "reset", r, http.StatusOK)
		wantBody(t, "reset", r, "reset text")

		if _, err := f.Store.Session(context.Background(), token.Hash(otherSession)); err == nil {
			t.Error("another browser's session survived the reset")
		}
		fresh := f.browser()
		fresh.step(link, "open")
		wantStatus(t, "old password", fresh.login(link, goodPassword), http.StatusUnauthorized)
		wantStatus(t, "new password", fresh.login(link, "new sunny meadow path"), http.StatusOK)
		if !slices.Contains(f.events(id), audit.KindPasswordReset) {
			t.Errorf("events %v lack password-reset", f.events(id))
		}
		if got := f.status(id); got != store.StatusRead {
			t.Errorf("status %s, want read", got)
		}
	})
}

// Without an SMS provider there is no code: the login page says whom to contact.
func TestNoSMSProvider(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{noSMS: true})
	_, link := f.message(phoneA, "S", "text")
	f.browser().setFirstPassword(link, goodPassword)
	br := f.browser()
	r := br.step(link, "open")
	wantBody(t, "login", r, "to have your password reset")
	wantNoBody(t, "login", r, "Text me a code")
	wantStatus(t, "send code anyway", br.step(link, "send-code", "purpose", "reset"), http.StatusBadRequest)
	if _, err := New(Config{Tenant: "x", Store: f.Store, Keys: f.keys, Policy: Policy{OneTimeCode: true},
		Branding: Branding{DisplayName: "X", SupportPhone: "1"}}, nil); err == nil {
		t.Error("a code policy without an SMS provider was accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	base := Config{Tenant: "x", Store: f.Store, Keys: f.keys, Branding: Branding{DisplayName: "X", SupportPhone: "1"}}
	for name, mutate := range map[string]func(*Config){
		"no name":                  func(c *Config) { c.Branding.DisplayName = " " },
		"bad colour":               func(c *Config) { c.Branding.PrimaryColor = "red;}body{" },
		"no support":               func(c *Config) { c.Branding.SupportPhone = "" },
		"short passwords":          func(c *Config) { c.Policy.MinPasswordLength = 10 },
		"too many failures":        func(c *Config) { c.Policy.MaxFailures = 101 },
		"long codes":               func(c *Config) { c.Policy.CodeLifetime = time.Hour },
		"svg-less logo type":       func(c *Config) { c.Branding.Logo = []byte("x"); c.Branding.LogoType = "text/html" },
		"script support url":       func(c *Config) { c.Branding.SupportURL = "javascript:alert(1)" },
		"idle longer than session": func(c *Config) { c.Policy.IdleTimeout = 13 * time.Hour },
	} {
		c := base
		mutate(&c)
		if _, err := New(c, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(base, nil); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestThemeContrast(t *testing.T) {
	for _, c := range []string{"#000000", "#ffffff", "#777777", "#1f4e79", "#ffcc00", "#e91e63", "#00a0a0"} {
		css := string(themeCSS(c))
		fg := "#ffffff"
		if strings.Contains(css, "; color: #000000") {
			fg = "#000000"
		}
		if r := contrast(c, fg); r < 4.5 {
			t.Errorf("colour %s with text %s: contrast %.2f < 4.5", c, fg, r)
		}
	}
}
