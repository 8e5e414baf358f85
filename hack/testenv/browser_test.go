package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"image/png"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// strictCSP is the policy the viewer sends: nothing but its own stylesheet, never framed.
const strictCSP = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"

const styleSheet = `body { font-family: sans-serif; margin: 0 1rem; color: #1a1a1a; background: #fff; }
a { color: #0b57d0; }
label { display: block; margin-top: 1rem; }
input, button { font-size: 1rem; padding: .5rem; max-width: 100%; }
.faint { color: #bbb; }
.wide { width: 600px; }`

// pageInlineScript is accessiblePage's one script, inline and without a nonce.
const pageInlineScript = `document.body.dataset.inlineScriptRan = "yes"`

// A page that passes WCAG 2.2 AA and axe's best practices. Its inline script has no nonce, so
// the strict CSP must block it: the test checks that it did, so axe provably ran under the CSP.
const accessiblePage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Your message – Clinic</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header><p>Example Clinic</p></header>
<main>
<h1>You have a secure message</h1>
<p>Enter your password to read it.</p>
<form method="post" action="/login">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Show message</button>
</form>
<script>` + pageInlineScript + `</script>
</main>
<footer><p>Questions? Call <a href="tel:+15555550100">555-0100</a>.</p></footer>
</body>
</html>`

// A page with three classic failures: an image without alt text, an input without a label,
// and text with too little contrast; and a paragraph too wide for a phone.
const inaccessiblePage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Broken</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<main>
<h1>Broken page</h1>
<img src="/logo.png">
<input id="code" name="code" type="text">
<p class="faint">This text is too faint to read.</p>
<p class="wide">This paragraph is wider than a phone.</p>
</main>
</body>
</html>`

// A 1×1 transparent PNG.
var tinyPNG = []byte{
	0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
	0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
	0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
	0x42, 0x60, 0x82,
}

func nonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// siteHandler serves the test pages, each with the strict CSP (plus a nonce where a page
// needs script).
func siteHandler(t testing.TB) http.Handler {
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", strictCSP)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, body)
		}
	}
	// scripted serves a page whose one script carries a fresh nonce the CSP allows.
	scripted := func(title, script string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n := nonce()
			w.Header().Set("Content-Security-Policy", strictCSP+"; script-src 'nonce-"+n+"'")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title></head>
<body><main><h1>%s</h1><script nonce="%s">%s</script></main></body></html>`, title, title, n, script)
		}
	}
	mux.HandleFunc("GET /app.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, styleSheet)
	})
	mux.HandleFunc("GET /logo.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(tinyPNG)
	})
	mux.HandleFunc("GET /{$}", page(accessiblePage))
	mux.HandleFunc("GET /broken", page(inaccessiblePage))
	mux.HandleFunc("GET /clean", scripted("Clean", `void 0`))
	mux.HandleFunc("GET /store", scripted("Store", `localStorage.setItem("k", "v"); sessionStorage.setItem("s", "1")`))
	mux.HandleFunc("GET /noisy", func(w http.ResponseWriter, r *http.Request) {
		n := nonce()
		w.Header().Set("Content-Security-Policy", strictCSP+"; script-src 'nonce-"+n+"'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html lang="en"><head><title>Noisy</title></head><body><main>
<script nonce="%s">console.error("boom", 7); setTimeout(() => { throw new Error("kaput") })</script>
<script>console.log("no nonce: CSP blocks this")</script></main></body></html>`, n)
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("password") != "correct horse battery staple" {
			http.Error(w, "wrong password", http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "__Host-session", Value: nonce(), Path: "/",
			Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/inbox", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /inbox", func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie("__Host-session"); err != nil {
			http.Error(w, "no session", http.StatusUnauthorized)
			return
		}
		page(`<!doctype html><html lang="en"><head><title>Inbox</title></head><body><main><h1 id="inbox">Inbox</h1></main></body></html>`)(w, r)
	})
	return mux
}

// site starts the test pages on an HTTPS server on 127.0.0.1 and a browser that trusts it.
func site(t *testing.T, opts ...BrowserOption) (*httptest.Server, context.Context) {
	t.Helper()
	srv := httptest.NewTLSServer(siteHandler(t))
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("test server at %s, want loopback", srv.URL)
	}
	ctx := Browser(t, append([]BrowserOption{WithTrustedCerts(srv.Certificate())}, opts...)...)
	return srv, ctx
}

func navigate(t testing.TB, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
}

// fakeTB records failures instead of failing, so that a check's failing path can be tested.
// Everything else (Logf, Name, TempDir, …) goes to the real test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failures []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Error(args ...any) { f.Errorf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.failures) > 0
}

// failures runs check with a fakeTB (on its own goroutine, since Fatal ends it) and returns
// what it reported.
func failures(t *testing.T, check func(tb testing.TB)) string {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(f)
	}()
	<-done
	return strings.Join(f.failures, "\n")
}

func TestBrowserAccessiblePageUnderStrictCSP(t *testing.T) {
	srv, ctx := site(t)
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(srv.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Headers["Content-Security-Policy"]; got != strictCSP {
		t.Fatalf("page sent CSP %v, want %q", got, strictCSP)
	}
	// The CSP is in force: the page's own inline script was refused, and the browser said so.
	ran, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`"inlineScriptRan" in document.body.dataset`))
	if err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Fatal("the inline script ran: the CSP was not enforced, so this test proves nothing")
	}

	// axe runs under that CSP and finds nothing, at phone width and at 320 px.
	CheckAccessibility(t, ctx)
	violations, err := AxeViolations(ctx)
	if err != nil || len(violations) != 0 {
		t.Errorf("AxeViolations = %v, %v; want none", violations, err)
	}
	Screenshot(t, ctx, "phone")

	SetViewport(t, ctx, NarrowPhone)
	CheckNoHorizontalScroll(t, ctx)
	CheckAccessibility(t, ctx)
	Screenshot(t, ctx, "320px")

	// After two axe runs, the one CSP violation is still the page's own script: Chromium names
	// a blocked inline script by the hash that would allow it. The harness injected nothing the
	// CSP blocked (axe and the probes run through Runtime.evaluate, which no CSP governs).
	sum := sha256.Sum256([]byte(pageInlineScript))
	own := "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
	csp := func(m string) bool { return strings.Contains(m, "Content Security Policy") }
	if errs := slices.DeleteFunc(ConsoleErrors(ctx), func(m string) bool { return !csp(m) }); len(errs) != 1 || !strings.Contains(errs[0], own) {
		t.Errorf("want one CSP violation, for the page's inline script (%s); got %q", own, errs)
	}

	// The page tried to reach nothing beyond loopback. Chromium's own background requests
	// (updates, on some builds despite --disable-component-update) are not the page's.
	CheckNoRequestsBeyondLoopback(t, ctx)
}

func TestBrowserInaccessiblePageFails(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/broken")

	violations, err := AxeViolations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Violation{}
	for _, v := range violations {
		got[v.ID] = v
	}
	for id, html := range map[string]string{"image-alt": "<img", "label": `id="code"`, "color-contrast": `class="faint"`} {
		v, ok := got[id]
		if !ok {
			t.Errorf("axe did not report %s; it reported:\n%s", id, FormatViolations(violations))
			continue
		}
		if v.Impact == "" || v.Help == "" || !strings.HasPrefix(v.HelpURL, "https://") {
			t.Errorf("%s: incomplete report %+v", id, v)
		}
		if len(v.Nodes) != 1 || len(v.Nodes[0].Target) == 0 || !strings.Contains(v.Nodes[0].HTML, html) {
			t.Errorf("%s: nodes %+v, want one like %s", id, v.Nodes, html)
		}
	}

	// CheckAccessibility fails the test and names each rule and element.
	msg := failures(t, func(tb testing.TB) { CheckAccessibility(tb, ctx) })
	for _, want := range []string{"violation", "image-alt (critical)", "label (critical)", "color-contrast (serious)", `<img src="/logo.png">`, "#code", srv.URL + "/broken"} {
		if !strings.Contains(msg, want) {
			t.Errorf("CheckAccessibility's failure lacks %q:\n%s", want, msg)
		}
	}
	t.Logf("CheckAccessibility reports:\n%s", msg)

	if msg := failures(t, func(tb testing.TB) { CheckNoHorizontalScroll(tb, ctx) }); !strings.Contains(msg, "scrolls sideways") {
		t.Errorf("CheckNoHorizontalScroll reported %q for a 600 px paragraph", msg)
	}
}

func TestBrowserScreenshot(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/")
	path := Screenshot(t, ctx, "login page")

	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "testoutput", "hack", "testenv", "TestBrowserScreenshot", "login_page.png")
	if os.Getenv(TestOutputEnv) == "" && path != want {
		t.Errorf("screenshot at %s, want %s", path, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", path, err)
	}
	// Full page at the phone's width (device pixel ratio 1).
	if cfg.Width != int(Phone.Width) || cfg.Height < 200 {
		t.Errorf("screenshot is %dx%d, want %d wide", cfg.Width, cfg.Height, Phone.Width)
	}
}

func TestBrowserDeviceStorage(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/clean")
	if use := DeviceStorage(t, ctx); !use.Empty() {
		t.Errorf("clean page: %+v, want nothing", use)
	}
	CheckNothingStored(t, ctx)

	// With JavaScript off the page's script cannot store anything; the helpers still work.
	SetJavaScriptEnabled(t, ctx, false)
	navigate(t, ctx, srv.URL+"/store")
	if use := DeviceStorage(t, ctx); !use.Empty() {
		t.Errorf("JavaScript off: %+v, want nothing", use)
	}

	SetJavaScriptEnabled(t, ctx, true)
	navigate(t, ctx, srv.URL+"/store")
	use := DeviceStorage(t, ctx)
	if use.LocalStorage != 1 || use.SessionStorage != 1 {
		t.Errorf("after the page stored: %+v, want 1 localStorage and 1 sessionStorage key", use)
	}
	if msg := failures(t, func(tb testing.TB) { CheckNothingStored(tb, ctx) }); !strings.Contains(msg, "LocalStorage:1") {
		t.Errorf("CheckNothingStored reported %q", msg)
	}
}

func TestBrowserFormLoginAndCookies(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/")
	if c := Cookies(t, ctx); len(c) != 0 {
		t.Fatalf("fresh browser has cookies: %+v", c)
	}

	// Type like a person and submit; RunResponse waits for the page the POST leads to
	// (after the 303).
	resp, err := chromedp.RunResponse(ctx,
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery staple"),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusOK || resp.URL != srv.URL+"/inbox" {
		t.Fatalf("after login: %d %s", resp.Status, resp.URL)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("inbox"))); err != nil {
		t.Fatal(err)
	}

	c := Cookie(t, ctx, "__Host-session")
	if c == nil {
		t.Fatalf("no session cookie; cookies: %+v", Cookies(t, ctx))
	}
	if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || !c.Session || c.Path != "/" || c.Domain != "127.0.0.1" {
		t.Errorf("session cookie %+v", c)
	}
	// HttpOnly: the page cannot read it.
	js, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil || js != "" {
		t.Errorf("document.cookie = %q, %v", js, err)
	}
	Screenshot(t, ctx, "inbox")
}

func TestBrowserTLSTrust(t *testing.T) {
	// Every httptest server presents the same built-in certificate, so the trusted server
	// gets one of its own.
	trusted := httptest.NewUnstartedServer(siteHandler(t))
	trusted.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	trusted.Config.ErrorLog = quietLog // the refused handshakes below are the point
	trusted.StartTLS()
	t.Cleanup(trusted.Close)
	untrusted := httptest.NewUnstartedServer(siteHandler(t))
	untrusted.Config.ErrorLog = quietLog
	untrusted.StartTLS()
	t.Cleanup(untrusted.Close)

	// Without a pinned certificate the browser verifies as usual and refuses both.
	plain := Browser(t)
	if err := chromedp.Do(plain, chromedp.Navigate(trusted.URL+"/")); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Errorf("no certificates pinned: err = %v, want a certificate error", err)
	}

	// With one pinned, the browser accepts that server and still refuses the other.
	ctx := Browser(t, WithTrustedCerts(trusted.Certificate()))
	navigate(t, ctx, trusted.URL+"/")
	if err := chromedp.Do(ctx, chromedp.Navigate(untrusted.URL+"/")); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Errorf("navigate to a server whose certificate is not pinned: err = %v, want a certificate error", err)
	}
}

var quietLog = log.New(io.Discard, "", 0)

// selfSigned makes a certificate for 127.0.0.1 that nothing trusts.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestBrowserLoopbackOnly(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/")

	// A live server on 127.0.0.2 stands in for any address beyond the ones the browser may
	// reach (127.0.0.1, localhost, [::1]): the browser must not get to it. (Were the harness
	// broken, the connection would still stay on this machine.)
	var reached atomic.Int32
	outside := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
	}))
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	outside.Listener = ln
	outside.Start()
	t.Cleanup(outside.Close)
	port := ln.Addr().(*net.TCPAddr).Port

	for _, url := range []string{
		fmt.Sprintf("http://127.0.0.2:%d/secret", port),
		fmt.Sprintf("https://127.0.0.2:%d/", port),
		"http://outside.example/page?token=x",
		"https://outside.example/",
	} {
		// http gets the sink's 403 page; https fails to open a tunnel.
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
		if err == nil && resp.Status != http.StatusForbidden {
			t.Errorf("navigate to %s: %d, want the sink's 403 or an error", url, resp.Status)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the browser reached the server on 127.0.0.2 %d times", n)
	}
	blocked := BlockedRequests(ctx)
	for _, want := range []string{
		fmt.Sprintf("GET http://127.0.0.2:%d/secret", port),
		fmt.Sprintf("CONNECT 127.0.0.2:%d", port),
		"GET http://outside.example/page?token=x",
		"CONNECT outside.example:443",
	} {
		if !slices.Contains(blocked, want) {
			t.Errorf("the sink did not see %q; it saw %q", want, blocked)
		}
	}
}

// A host given to WithLoopbackHosts reaches the server on 127.0.0.1 under its own name (the Host
// header the page sends is that name); a name not given still goes nowhere.
func TestBrowserLoopbackHosts(t *testing.T) {
	var hosts []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>mapped</title><p>mapped")
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ctx := Browser(t, WithLoopbackHosts("view.clinic.test"))

	navigate(t, ctx, fmt.Sprintf("http://view.clinic.test:%d/", port))
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.title`))
	if err != nil {
		t.Fatal(err)
	}
	if title != "mapped" {
		t.Errorf("view.clinic.test: title %q, want the loopback server's page", title)
	}
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(fmt.Sprintf("http://api.clinic.test:%d/", port)))
	if err == nil && resp.Status != http.StatusForbidden {
		t.Errorf("api.clinic.test (not mapped): %d, want the sink's 403 or an error", resp.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	// The page and, as Chromium may ask for it, /favicon.ico.
	want := fmt.Sprintf("view.clinic.test:%d", port)
	if len(hosts) == 0 || slices.ContainsFunc(hosts, func(h string) bool { return h != want }) {
		t.Errorf("the server saw hosts %q, want only %q", hosts, want)
	}
}

// Chromium's own traffic (here: a tab opened in the browser's default context, outside the
// page's, which stands for the updater and the other background services whose requests vary
// with the build) is refused like the page's but kept apart from it: BlockedRequests lists
// only what the page under test asked for.
func TestBrowserOwnRequestsAreNotThePages(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/")
	if _, err := chromedp.Run(ctx, chromedp.NavigateResponse("http://page.example/from-the-page")); err != nil {
		t.Logf("navigate beyond loopback: %v", err)
	}

	// Target.createTarget without a browser context id opens the tab in the default context.
	if _, err := chromedp.CallBrowser(ctx, target.CreateTarget,
		target.CreateTargetParams{URL: "http://updates.example/service/update2/json"}); err != nil {
		t.Fatal(err)
	}
	const own = "GET http://updates.example/service/update2/json"
	for deadline := time.Now().Add(10 * time.Second); !slices.Contains(BrowserRequests(ctx), own); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the browser's sink never saw %q; it saw %q", own, BrowserRequests(ctx))
		}
	}
	page := BlockedRequests(ctx)
	if msg := failures(t, func(tb testing.TB) { CheckNoRequestsBeyondLoopback(tb, ctx) }); !strings.Contains(msg, "GET http://page.example/from-the-page") || strings.Contains(msg, "updates.example") {
		t.Errorf("CheckNoRequestsBeyondLoopback said %q, want the page's request and not Chromium's", msg)
	}
	if !slices.Contains(page, "GET http://page.example/from-the-page") {
		t.Errorf("the page's request is not among BlockedRequests %q", page)
	}
	if slices.ContainsFunc(page, func(r string) bool { return strings.Contains(r, "updates.example") }) {
		t.Errorf("Chromium's own request is counted as the page's: %q", page)
	}
	if slices.ContainsFunc(BrowserRequests(ctx), func(r string) bool { return strings.Contains(r, "page.example") }) {
		t.Errorf("the page's request went through the browser's own proxy: %q", BrowserRequests(ctx))
	}
}

func TestBrowserConsoleErrors(t *testing.T) {
	srv, ctx := site(t)
	navigate(t, ctx, srv.URL+"/clean")
	CheckConsole(t, ctx)

	navigate(t, ctx, srv.URL+"/noisy")
	// The thrown error comes from a timer: wait until the browser reported it.
	Eventually(t, "console errors", func() error {
		if n := len(ConsoleErrors(ctx)); n < 3 {
			return fmt.Errorf("%d so far: %q", n, ConsoleErrors(ctx))
		}
		return nil
	})
	errs := strings.Join(ConsoleErrors(ctx), "\n")
	for _, want := range []string{"console.error: boom 7", "kaput", "Content Security Policy"} {
		if !strings.Contains(errs, want) {
			t.Errorf("console errors lack %q:\n%s", want, errs)
		}
	}
	if msg := failures(t, func(tb testing.TB) { CheckConsole(tb, ctx) }); !strings.Contains(msg, "boom 7") {
		t.Errorf("CheckConsole reported %q", msg)
	}
}
