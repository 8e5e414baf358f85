package viewer

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// wantHeaders are on every response of the viewer.
var wantHeaders = map[string]string{
	"Cache-Control":              "no-store",
	"Referrer-Policy":            "no-referrer",
	"Content-Security-Policy":    "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; style-src 'self'; img-src 'self' data:",
	"X-Content-Type-Options":     "nosniff",
	"Cross-Origin-Opener-Policy": "same-origin",
}

var hsts = regexp.MustCompile(`^max-age=([0-9]+)`)

func checkHeaders(t *testing.T, name string, h http.Header) {
	t.Helper()
	for k, want := range wantHeaders {
		got := h.Get(k)
		if k == "Content-Security-Policy" {
			got = strings.TrimSuffix(got, "; sandbox")
		}
		if got != want {
			t.Errorf("%s: %s = %q, want %q", name, k, got, want)
		}
	}
	m := hsts.FindStringSubmatch(h.Get("Strict-Transport-Security"))
	if m == nil || len(m[1]) < 8 || m[1] < "31536000" && len(m[1]) == 8 {
		t.Errorf("%s: Strict-Transport-Security = %q, want max-age of at least a year", name, h.Get("Strict-Transport-Security"))
	}
}

// Every header on every route and status: pages, errors, 404s, 405s, health, assets,
// downloads, gone pages, forged posts, and a keystore outage.
func TestSecurityHeadersEverywhere(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	ctx := context.Background()
	_, link := f.message(phoneA, "S", "text", content.Attachment{Name: "a.pdf", ContentType: "application/pdf", Data: []byte("%PDF")})
	revokedID, revoked := f.message(phoneA, "S", "text")
	if err := f.Store.Transition(ctx, revokedID, store.StatusRevoked, audit.Event{Kind: audit.KindRevoked, Actor: "ehr"}); err != nil {
		t.Fatal(err)
	}
	unknown := token.New()
	br := f.browser()

	type call struct {
		name string
		do   func() response
		code int
	}
	get := func(p string) func() response { return func() response { return br.get(p) } }
	method := func(m, p string) func() response {
		return func() response {
			req, _ := http.NewRequest(m, f.Server.URL+p, nil)
			return br.do(req)
		}
	}
	step := func(l, s string, kv ...string) func() response {
		return func() response { return br.step(l, s, kv...) }
	}
	calls := []call{
		{"home", get("/"), 200},
		{"landing", get("/m/" + link), 200},
		{"landing unknown", get("/m/" + unknown), 200},
		{"malformed link", get("/m/not-a-token"), 404},
		{"no such page", get("/nope"), 404},
		{"favicon", get("/favicon.ico"), 404},
		{"style", get("/static/style.css"), 200},
		{"theme", get("/static/theme.css"), 200},
		{"logo", get("/static/logo"), 200},
		{"healthz", get("/healthz"), 200},
		{"readyz", get("/readyz"), 200},
		{"head landing", method(http.MethodHead, "/m/"+link), 200},
		{"put", method(http.MethodPut, "/m/"+link), 404},
		{"get logout", method(http.MethodGet, "/logout"), 404},
		{"forged post", method(http.MethodPost, "/m/"+link), 403},
		{"unknown step", step(link, "dance"), 400},
		{"revoked", get("/m/" + revoked), 410},
		{"open", step(link, "open"), 200},
		{"set password refused", step(link, "set-password", "password", "short", "confirm", "short"), 422},
		{"set password", step(link, "set-password", "password", goodPassword, "confirm", goodPassword), 200},
		{"download", step(link, "download", "n", "0"), 200},
		{"no such attachment", step(link, "download", "n", "7"), 404},
		{"wrong password", step(link, "login", "password", "wrong wrong wrong"), 401},
		{"send code", step(link, "send-code", "purpose", "reset"), 200},
		{"logout", func() response { return br.post("/logout", url.Values{}) }, 200},
		{"keystore down", func() response {
			_ = f.ksHTTP.Close()
			f.keys.CloseIdleConnections()
			return br.step(link, "login", "password", goodPassword)
		}, 503},
		{"readyz keystore down", get("/readyz"), 503},
	}
	for _, c := range calls {
		r := c.do()
		if r.StatusCode != c.code {
			t.Errorf("%s: status %d, want %d", c.name, r.StatusCode, c.code)
		}
		checkHeaders(t, c.name, r.Header)
		if c.name == "download" {
			if cd := r.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
				t.Errorf("download: Content-Disposition = %q", cd)
			}
		}
	}
}

// A scanner fetching the link ten times, with or without the patient's session cookie, leaves
// the message unopened, writes no audit event and reveals nothing.
func TestGetChangesNothing(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{})
		_, first := f.message(phoneA, "First", "first text")
		id, link := f.message(phoneA, "Lab results", "secret lab text")
		before := f.events(id)
		scanner := f.browser()
		for range 10 {
			r := scanner.get("/m/" + link)
			wantStatus(t, "scanner GET", r, http.StatusOK)
			wantNoBody(t, "scanner GET", r, "secret lab text", "Lab results")
		}
		// The patient's own browser, signed in: GET still only offers the button.
		patient := f.browser()
		patient.setFirstPassword(first, goodPassword)
		for range 10 {
			r := patient.get("/m/" + link)
			wantBody(t, "signed-in GET", r, "Show message")
			wantNoBody(t, "signed-in GET", r, "secret lab text", "Lab results")
		}
		if got := f.status(id); got != store.StatusAccepted {
			t.Errorf("status after GETs = %s, want accepted (unopened)", got)
		}
		if got := f.events(id); !slices.Equal(got, before) {
			t.Errorf("events after GETs = %v, want %v", got, before)
		}
	})
}

var csrfField = regexp.MustCompile(`name="csrf" value="[a-z2-7]{26}"`)

func normalise(body string) string { return csrfField.ReplaceAllString(body, `name="csrf" value="-"`) }

// A link that does not exist and a real link (whose recipient has a password) answer alike:
// same status, same bytes apart from the anti-forgery token, a password verification on every
// attempt, and the same lock after the same number of failures.
func TestUnknownAndKnownLinksIndistinguishable(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		f := newFixture(t, b, fixtureOptions{policy: Policy{MaxFailures: 3}})
		_, known := f.message(phoneA, "S", "text")
		f.browser().setFirstPassword(known, goodPassword)
		unknown := token.New()

		compare := func(what string, do func(br *browser, link string) response) {
			t.Helper()
			var got []response
			var verifies []int64
			for _, link := range []string{known, unknown} {
				before := f.verifys.Load()
				got = append(got, do(f.browser(), link))
				verifies = append(verifies, f.verifys.Load()-before)
			}
			if got[0].StatusCode != got[1].StatusCode {
				t.Errorf("%s: status %d for a real link, %d for an unknown one", what, got[0].StatusCode, got[1].StatusCode)
			}
			if normalise(got[0].body) != normalise(got[1].body) {
				t.Errorf("%s: bodies differ:\nreal:\n%s\nunknown:\n%s", what, got[0].body, got[1].body)
			}
			if verifies[0] != verifies[1] {
				t.Errorf("%s: %d password verifications for a real link, %d for an unknown one", what, verifies[0], verifies[1])
			}
			for _, h := range []string{"Content-Type", "Content-Length", "Retry-After"} {
				if got[0].Header.Get(h) != got[1].Header.Get(h) {
					t.Errorf("%s: %s %q vs %q", what, h, got[0].Header.Get(h), got[1].Header.Get(h))
				}
			}
		}
		compare("GET", func(br *browser, l string) response { return br.get("/m/" + l) })
		compare("open", func(br *browser, l string) response { return br.step(l, "open") })
		compare("set password", func(br *browser, l string) response {
			return br.step(l, "set-password", "password", goodPassword, "confirm", goodPassword)
		})
		compare("wrong password", func(br *browser, l string) response { return br.login(l, "wrong wrong wrong") })
		compare("second wrong password", func(br *browser, l string) response { return br.login(l, "wrong wrong wrong") })
		compare("third wrong password: locked", func(br *browser, l string) response { return br.login(l, "wrong wrong wrong") })
		compare("while locked", func(br *browser, l string) response { return br.login(l, goodPassword) })
		compare("forgot password", func(br *browser, l string) response { return br.step(l, "send-code", "purpose", "reset") })
		compare("wrong code", func(br *browser, l string) response {
			return br.step(l, "reset", "code", "000000", "password", goodPassword+"!", "confirm", goodPassword+"!")
		})
		if f.verifys.Load() == 0 {
			t.Fatal("no password was verified at all")
		}
	})
}

// Tenants have separate stores: a session of tenant A means nothing to tenant B's viewer,
// even when the browser sends the cookie there (same host, another port).
func TestTenantIsolation(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		a := newFixture(t, b, fixtureOptions{tenant: "clinic-a"})
		bb := newFixture(t, b, fixtureOptions{tenant: "clinic-b"})
		_, linkA := a.message(phoneA, "A", "tenant A text")
		idB, linkB := bb.message(phoneA, "B", "tenant B text") // the same phone number
		br := a.browser()
		wantBody(t, "tenant A message", br.setFirstPassword(linkA, goodPassword), "tenant A text")

		atB := br.on(bb)
		if atB.cookie(sessionCookie) == "" {
			t.Fatal("the browser does not send tenant A's session cookie to tenant B: the test proves nothing")
		}
		wantNoBody(t, "tenant B landing", atB.get("/m/"+linkB), "You are signed in")
		r := atB.step(linkB, "open")
		wantNoBody(t, "tenant B open", r, "tenant B text")
		wantBody(t, "tenant B open", r, "Choose a password")
		wantStatus(t, "tenant B download", atB.step(linkB, "download", "n", "0"), http.StatusUnauthorized)
		// Tenant A's link at tenant B is unknown; tenant B's password does not open A.
		wantNoBody(t, "tenant A link at B", atB.step(linkA, "open"), "tenant A text")
		if got := bb.status(idB); got == store.StatusRead {
			t.Error("tenant B's message was read")
		}
	})
}

func TestAddressLimit(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{MaxFailuresPerAddress: 3}})
	_, link := f.message(phoneA, "S", "text")
	f.browser().setFirstPassword(link, goodPassword)
	br := f.browser()
	for range 3 {
		wantStatus(t, "wrong password", br.login(token.New(), "wrong wrong wrong"), http.StatusUnauthorized)
	}
	r := br.login(link, goodPassword)
	wantStatus(t, "attempt over the address limit", r, http.StatusTooManyRequests)
	wantBody(t, "attempt over the address limit", r, "too many failed attempts from your network")
	f.Clock.Advance(16 * 60e9)
	wantStatus(t, "after the window", br.login(link, goodPassword), http.StatusOK)
}
