package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium with chromedp. `make test-binaries` runs
// `hack/browser.sh ensure`, which installs chromium with apt and axe-core with npm into bin/.

// ChromiumEnv overrides where the browser binary is looked up (default /usr/bin/chromium).
const ChromiumEnv = "SECURETEXT_CHROMIUM"

// AxeEnv overrides where axe.min.js is looked up (default
// <bin>/axe-core/node_modules/axe-core/axe.min.js, as `hack/browser.sh ensure` installs it).
const AxeEnv = "SECURETEXT_AXE_JS"

// TestOutputEnv overrides the root of the test output folder (default <repo>/testoutput).
const TestOutputEnv = "SECURETEXT_TESTOUTPUT"

const browserMissingHint = "run `make test-binaries` (or `hack/browser.sh ensure`): it installs Debian's chromium and axe-core"

// Viewport is the size of the emulated screen, in CSS pixels.
type Viewport struct {
	Width, Height int64
	// Mobile emulates a phone: the page's <meta name="viewport"> applies (without one a page is
	// laid out 980 px wide, as on a real phone), touch events are on, scrollbars overlay.
	Mobile bool
	// Scale is the device pixel ratio; 0 means 1. Screenshots are Width×Scale pixels wide.
	Scale float64
}

// The viewports the viewer is checked at. Phone is the default of Browser.
var (
	// Phone is a common phone screen (375×812, the iPhone X class).
	Phone = Viewport{Width: 375, Height: 812, Mobile: true}
	// NarrowPhone is 320 CSS px wide: WCAG 2.2 SC 1.4.10 (Reflow) requires content to be
	// readable there without horizontal scrolling.
	NarrowPhone = Viewport{Width: 320, Height: 640, Mobile: true}
	// Desktop is a laptop window.
	Desktop = Viewport{Width: 1280, Height: 800}
)

// BrowserOption changes how Browser starts the browser.
type BrowserOption func(*browserConfig)

type browserConfig struct {
	viewport         Viewport
	trusted          []*x509.Certificate
	ignoreCertErrors bool
	timeout          time.Duration
	loopbackHosts    []string
}

// WithViewport sets the emulated screen (default Phone). SetViewport changes it later.
func WithViewport(v Viewport) BrowserOption {
	return func(c *browserConfig) { c.viewport = v }
}

// WithTrustedCerts makes the browser accept TLS servers that present one of these certificates
// (for an httptest server: srv.Certificate()), and no others that fail verification. It uses
// Chromium's --ignore-certificate-errors-spki-list, which pins the certificates' public keys.
func WithTrustedCerts(certs ...*x509.Certificate) BrowserOption {
	return func(c *browserConfig) { c.trusted = append(c.trusted, certs...) }
}

// WithIgnoreCertErrors makes the browser accept any TLS certificate. Chromium has no flag that
// takes a CA file, and the harness lets the browser reach loopback only, so this is safe in
// tests; prefer WithTrustedCerts, which accepts only the servers under test.
func WithIgnoreCertErrors() BrowserOption {
	return func(c *browserConfig) { c.ignoreCertErrors = true }
}

// WithLoopbackHosts makes the browser resolve these host names to 127.0.0.1 and reach them
// directly: a service's public names (view.clinic.test) served on a loopback port, such as an
// ingress controller that kind publishes there. Every other name still fails to resolve.
func WithLoopbackHosts(hosts ...string) BrowserOption {
	return func(c *browserConfig) { c.loopbackHosts = append(c.loopbackHosts, hosts...) }
}

// WithTimeout bounds everything done with the returned context (default 3 minutes), so that a
// wait for an element that never appears fails this test instead of hanging the whole run
// until go test's -timeout.
func WithTimeout(d time.Duration) BrowserOption {
	return func(c *browserConfig) { c.timeout = d }
}

// ChromiumPath returns the browser binary: $SECURETEXT_CHROMIUM, else /usr/bin/chromium; or an
// error that says how to install it.
func ChromiumPath() (string, error) {
	path := os.Getenv(ChromiumEnv)
	if path == "" {
		path = "/usr/bin/chromium"
	}
	info, err := os.Stat(path)
	if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("chromium not found at %s: %s", path, browserMissingHint)
	}
	return path, nil
}

// AxePath returns axe.min.js: $SECURETEXT_AXE_JS, else the copy `hack/browser.sh ensure`
// installed under bin/; or an error that says how to install it.
func AxePath() (string, error) {
	path := os.Getenv(AxeEnv)
	if path == "" {
		dir, err := BinDir()
		if err != nil {
			return "", err
		}
		path = filepath.Join(dir, "axe-core", "node_modules", "axe-core", "axe.min.js")
	}
	if info, err := os.Stat(path); err != nil || info.IsDir() || info.Size() == 0 {
		return "", fmt.Errorf("axe-core not found at %s: %s", path, browserMissingHint)
	}
	return path, nil
}

// session is what the harness keeps about one test's browser; the context Browser returns
// carries it, so the helpers below need only the context.
type session struct {
	// page is the proxy of the tab's browser context: every request the page makes beyond
	// loopback (navigations, subresources, preconnects, workers) lands there. browser is
	// the proxy of Chromium's own network context, which the page cannot use: component and
	// extension updates, sign-in, variations and whatever else a build does in the background.
	page, browser *netSink
	contextID     cdp.BrowserContextID

	mu      sync.Mutex
	console []string // console errors, uncaught exceptions and browser-log errors
}

type sessionKey struct{}

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// mustSession is sessionOf for the helpers that need a browser: a ctx from elsewhere fails t,
// naming the helper.
func mustSession(t testing.TB, ctx context.Context, helper string) *session {
	t.Helper()
	s := sessionOf(ctx)
	if s == nil {
		t.Fatal(helper + ": ctx does not come from testenv.Browser")
	}
	return s
}

// Browser starts a headless Chromium for this test and returns the chromedp context of its
// tab: use it with chromedp.Run/Do and with the helpers in this file. The browser is stopped and
// its profile removed when the test ends.
//
// Each test gets its own browser process with an empty profile (in t.TempDir()): no cookie,
// storage or cache can leak from one test into another, and a test may run in parallel with
// others. Starting one takes 1.5–2 s on a busy 2-core machine, stopping it well under one.
//
// The browser reaches 127.0.0.1, localhost and [::1] only. Every other request goes to a proxy
// inside the test that refuses it and records it, and the browser resolves no host name but
// localhost itself. The tab lives in a browser context of its own (Target.createBrowserContext)
// whose proxy is not the browser's: what the page asks for beyond loopback is told apart from
// Chromium's own background traffic by where it arrives, not by a list of hosts that changes
// with every Chromium release. BlockedRequests returns the page's; BrowserRequests returns
// Chromium's own (updates and the like), which the harness refuses too but which are no fault
// of the page. Chromium's background services (updates, sign-in, autofill, safe browsing, …)
// are turned off or pointed at the browser's sink as far as flags and prefs allow.
//
// A missing chromium fails the test with a message naming `make test-binaries`; it never skips.
func Browser(t testing.TB, opts ...BrowserOption) context.Context {
	t.Helper()
	cfg := browserConfig{viewport: Phone, timeout: 3 * time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	exe, err := ChromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	// TempDir before Cleanup: cleanups run last-in first-out, so the browser is gone before
	// the testing package removes its profile directory.
	home := t.TempDir()
	profile := filepath.Join(home, "profile")

	if err := writeProfilePrefs(profile); err != nil {
		t.Fatalf("prepare the browser profile: %v", err)
	}
	pageSink, err := startNetSink()
	if err != nil {
		t.Fatalf("start the page's outbound sink: %v", err)
	}
	sink, err := startNetSink()
	if err != nil {
		pageSink.close()
		t.Fatalf("start the browser's outbound sink: %v", err)
	}
	output := &LogTail{}
	logger := &guardedLog{t: t}
	bypass := strings.Join(append([]string{loopbackOnly}, cfg.loopbackHosts...), ";")

	flags := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(profile),
		// Chromium refuses to start as root with its sandbox on (CI runs as root).
		chromedp.Flag("no-sandbox", os.Geteuid() == 0),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(int(cfg.viewport.Width), int(cfg.viewport.Height)),
		// Loopback only: everything but 127.0.0.1, localhost and [::1] goes to a sink. The
		// tab's browser context has a proxy of its own (below); this one gets Chromium's own.
		chromedp.ProxyServer("http://"+sink.addr()),
		chromedp.Flag("proxy-bypass-list", bypass),
		chromedp.Flag("host-resolver-rules", hostResolverRules(cfg.loopbackHosts)),
		chromedp.Flag("force-webrtc-ip-handling-policy", "disable_non_proxied_udp"),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,NetworkTimeServiceQuerying,AutofillServerCommunication"),
		// Chromium calls Google at start (account list, AI-mode eligibility) whatever the prefs
		// say; these switches point those services at the sink, which ignores them.
		chromedp.Flag("gaia-url", "http://"+sink.addr()),
		chromedp.Flag("google-base-url", "http://"+sink.addr()),
		chromedp.CombinedOutput(&dropDBus{w: output}),
		// The browser gets a home of its own and none of the test's environment (tokens,
		// database URLs): its NSS database, caches and config all land in the temp dir.
		chromedp.NoInheritEnv,
		chromedp.Env("HOME="+home, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"),
	)
	switch {
	case cfg.ignoreCertErrors:
		flags = append(flags, chromedp.IgnoreCertErrors)
	case len(cfg.trusted) > 0:
		// Honoured only together with --user-data-dir, which is always set above.
		flags = append(flags, chromedp.Flag("ignore-certificate-errors-spki-list", spkiList(cfg.trusted)))
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), flags...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx,
		chromedp.WithLogf(logger.logf), chromedp.WithErrorf(logger.logf))
	sess := &session{page: pageSink, browser: sink}

	// The first Do starts the browser and ties its life to browserCtx; the second opens the
	// tab in a browser context of its own, which chromedp can create only once the browser
	// runs. Neither context has a deadline, so a browser that never comes up fails the test
	// after a minute instead (cancelling browserCtx then ends the browser and any tab).
	type opened struct {
		ctx    context.Context
		cancel context.CancelFunc
		err    error
	}
	started := make(chan opened, 1)
	go func() {
		if err := chromedp.Do(browserCtx); err != nil {
			started <- opened{err: err}
			return
		}
		ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext(
			func(p *target.CreateBrowserContextParams) {
				p.ProxyServer, p.ProxyBypassList = "http://"+pageSink.addr(), bypass
			}))
		started <- opened{ctx, cancel, chromedp.Do(ctx)}
	}()
	var tab opened
	select {
	case tab = <-started:
		err = tab.err
	case <-time.After(time.Minute):
		err = errors.New("chromium did not start within a minute")
	}
	stop := func() {
		// A graceful close lets Chromium end its helper processes itself; if it hangs, the
		// allocator kills the process.
		closed := make(chan struct{})
		go func() {
			if tab.ctx != nil {
				chromedp.Cancel(tab.ctx)
			}
			chromedp.Cancel(browserCtx)
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
		}
		if tab.cancel != nil {
			tab.cancel()
		}
		cancelBrowser()
		cancelAlloc()
		pageSink.close()
		sink.close()
		killProcessesUsing(profile)
	}
	if err != nil {
		stop()
		logger.stop()
		t.Fatalf("start %s: %v\nchromium said:\n%s", exe, err, output.Last(30))
	}
	tabCtx := tab.ctx
	sess.contextID = chromedp.FromContext(tabCtx).BrowserContextID
	ctx, cancelTimeout := context.WithTimeout(context.WithValue(tabCtx, sessionKey{}, sess), cfg.timeout)

	t.Cleanup(func() {
		cancelTimeout()
		stop()
		if t.Failed() {
			if msgs := sess.consoleErrors(); len(msgs) > 0 {
				t.Logf("browser console errors:\n  %s", strings.Join(msgs, "\n  "))
			}
			t.Logf("chromium output (last lines):\n%s", output.Last(20))
		}
		if blocked := pageSink.requests(); len(blocked) > 0 {
			t.Logf("the page's requests beyond loopback, refused by the harness:\n  %s", strings.Join(blocked, "\n  "))
		}
		if own := sink.requests(); len(own) > 0 {
			t.Logf("Chromium's own requests beyond loopback (not the page's), refused by the harness:\n  %s", strings.Join(own, "\n  "))
		}
		logger.stop()
	})

	if err := chromedp.Listen(tabCtx, sess.record); err != nil {
		t.Fatalf("listen to the browser console: %v", err)
	}
	SetViewport(t, ctx, cfg.viewport)
	return ctx
}

// loopbackOnly is the proxy bypass list of the browser and of the tab's context: only loopback
// is reached directly. "<-loopback>" drops Chromium's implicit bypass list, which also lets
// link-local (169.254/16) through.
const loopbackOnly = "<-loopback>;localhost;127.0.0.1;[::1]"

// hostResolverRules is the value of --host-resolver-rules: the loopback hosts mapped to
// 127.0.0.1 (Chromium applies the first rule that matches), every other name but localhost and
// the loopback addresses unresolvable.
func hostResolverRules(loopbackHosts []string) string {
	rules := make([]string, 0, len(loopbackHosts)+1)
	for _, h := range loopbackHosts {
		rules = append(rules, "MAP "+h+" 127.0.0.1")
	}
	return strings.Join(append(rules, "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"), ", ")
}

// spkiList is the value of --ignore-certificate-errors-spki-list: base64 SHA-256 hashes of the
// certificates' SubjectPublicKeyInfo, comma-separated.
func spkiList(certs []*x509.Certificate) string {
	hashes := make([]string, len(certs))
	for i, c := range certs {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		hashes[i] = base64.StdEncoding.EncodeToString(sum[:])
	}
	return strings.Join(hashes, ",")
}

// SetViewport changes the emulated screen of the browser; it applies to the current page at once.
func SetViewport(t testing.TB, ctx context.Context, v Viewport) {
	t.Helper()
	scale := v.Scale
	if scale == 0 {
		scale = 1
	}
	if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: v.Width, Height: v.Height, DeviceScaleFactor: scale, Mobile: v.Mobile,
	}); err != nil {
		t.Fatalf("set viewport %dx%d: %v", v.Width, v.Height, err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetTouchEmulationEnabled,
		emulation.SetTouchEmulationEnabledParams{Enabled: v.Mobile}); err != nil {
		t.Fatalf("set touch emulation: %v", err)
	}
}

// SetJavaScriptEnabled turns the page's own scripts off or on (the viewer must work with
// JavaScript off). It takes effect from the next navigation. The helpers here keep working:
// they run through the DevTools protocol, not as page scripts.
func SetJavaScriptEnabled(t testing.TB, ctx context.Context, enabled bool) {
	t.Helper()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled,
		emulation.SetScriptExecutionDisabledParams{Value: !enabled}); err != nil {
		t.Fatalf("set JavaScript enabled=%v: %v", enabled, err)
	}
}

// CheckNoHorizontalScroll fails t if the current page is wider than the viewport, i.e. a reader
// would have to scroll sideways (WCAG 2.2 SC 1.4.10 at NarrowPhone).
func CheckNoHorizontalScroll(t testing.TB, ctx context.Context) {
	t.Helper()
	w, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Scroll int64 `json:"scroll"`
		Client int64 `json:"client"`
	}](`({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth})`))
	if err != nil {
		t.Fatalf("measure page width: %v", err)
	}
	if w.Scroll > w.Client {
		t.Errorf("page is %d px wide in a %d px viewport: it scrolls sideways", w.Scroll, w.Client)
	}
}

// TestOutputDir returns (and creates) the folder for files a test leaves for people to look at:
// <repo>/testoutput/<package path>/<test name>, e.g. testoutput/workloads/viewer/TestLogin.
// $SECURETEXT_TESTOUTPUT replaces <repo>/testoutput.
func TestOutputDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv(TestOutputEnv)
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if root == "" {
		root = filepath.Join(repo, "testoutput")
	}
	pkg := "."
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(repo, wd); err == nil && !strings.HasPrefix(rel, "..") {
			pkg = rel
		}
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = safeName(p)
	}
	dir := filepath.Join(append([]string{root, pkg}, parts...)...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string {
	s = strings.Trim(unsafeChars.ReplaceAllString(s, "_"), "._")
	if s == "" {
		return "_"
	}
	return s
}

// cleared holds the screenshot folders this process has emptied of an earlier run's PNGs.
var cleared sync.Map

// Screenshot saves a full-page PNG of the current page as <TestOutputDir>/<name>.png, logs its
// path and returns it. The first screenshot of a test in a run removes the PNGs an earlier run
// of that test left there, so the folder shows this run only.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := TestOutputDir(t)
	if _, done := cleared.LoadOrStore(dir, true); !done {
		old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
		for _, f := range old {
			os.Remove(f)
		}
	}
	path := filepath.Join(dir, safeName(strings.TrimSuffix(name, ".png"))+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot %s", path)
	return path
}

// AxeTags are the axe-core rule sets CheckAccessibility runs: WCAG 2.0, 2.1 and 2.2 levels A
// and AA, and axe's best practices.
var AxeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"}

// Violation is one axe-core rule that failed, with every element that fails it.
type Violation struct {
	ID      string          `json:"id"`     // rule id, e.g. "color-contrast"
	Impact  string          `json:"impact"` // minor, moderate, serious or critical
	Help    string          `json:"help"`
	HelpURL string          `json:"helpUrl"`
	Nodes   []ViolationNode `json:"nodes"`
}

// ViolationNode is one element that fails a rule.
type ViolationNode struct {
	Target         []string `json:"target"` // CSS selectors; shadow DOM steps joined by " >>> "
	HTML           string   `json:"html"`
	FailureSummary string   `json:"failureSummary"`
}

// AxeReport is the outcome of one axe-core run over a page.
type AxeReport struct {
	URL        string      `json:"url"`
	Version    string      `json:"version"` // axe-core's
	Passes     int         `json:"passes"`  // rules that passed
	Violations []Violation `json:"violations"`
	// Incomplete are rules axe could not decide (e.g. contrast over a background image);
	// a person has to check them.
	Incomplete []Violation `json:"incomplete"`
}

var (
	axeOnce sync.Once
	axeJS   string
	axeErr  error
)

// The run script returns plain data only, so that it crosses the protocol as JSON.
const axeRunScript = `(() => {
	const nodes = ns => ns.map(n => ({
		target: n.target.map(s => Array.isArray(s) ? s.join(' >>> ') : String(s)),
		html: n.html, failureSummary: n.failureSummary || ''}));
	const rules = rs => rs.map(r => ({id: r.id, impact: r.impact || '', help: r.help,
		helpUrl: r.helpUrl, nodes: nodes(r.nodes)}));
	return axe.run(document, {
		runOnly: {type: 'tag', values: %s},
		resultTypes: ['violations', 'incomplete'],
	}).then(r => ({url: r.url, version: axe.version, passes: r.passes.length,
		violations: rules(r.violations), incomplete: rules(r.incomplete)}));
})()`

// RunAxe runs axe-core (from bin/axe-core) over the current page with AxeTags and returns its
// report. axe is injected with the DevTools protocol's Runtime.evaluate, which the page's
// Content-Security-Policy does not govern, so it works on pages with default-src 'none' and no
// 'unsafe-eval'. It leaves window.axe defined in the page until the next navigation.
func RunAxe(ctx context.Context) (*AxeReport, error) {
	axeOnce.Do(func() {
		path, err := AxePath()
		if err != nil {
			axeErr = err
			return
		}
		data, err := os.ReadFile(path)
		axeJS, axeErr = string(data), err
	})
	if axeErr != nil {
		return nil, axeErr
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.axe === "object" && typeof window.axe.run === "function"`))
	if err != nil {
		return nil, fmt.Errorf("look for axe-core in the page: %w", err)
	}
	if !loaded {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](axeJS)); err != nil {
			return nil, fmt.Errorf("inject axe-core: %w", err)
		}
	}
	tags, _ := json.Marshal(AxeTags)
	report, err := chromedp.Run(ctx, chromedp.Evaluate[AxeReport](fmt.Sprintf(axeRunScript, tags), chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("run axe-core: %w", err)
	}
	if report.Passes == 0 && len(report.Violations) == 0 {
		// Nothing ran at all: the tags matched no rule, or the page is empty.
		return nil, fmt.Errorf("axe-core %s ran no rule on %s", report.Version, report.URL)
	}
	return &report, nil
}

// AxeViolations runs axe-core over the current page (see RunAxe) and returns the violations.
func AxeViolations(ctx context.Context) ([]Violation, error) {
	report, err := RunAxe(ctx)
	if err != nil {
		return nil, err
	}
	return report.Violations, nil
}

// CheckAccessibility runs axe-core over the current page and fails t listing every violation:
// rule, impact, help and each offending element. Rules axe could not decide are logged.
func CheckAccessibility(t testing.TB, ctx context.Context) {
	t.Helper()
	report, err := RunAxe(ctx)
	if err != nil {
		t.Fatalf("accessibility check: %v", err)
	}
	if len(report.Incomplete) > 0 {
		t.Logf("accessibility: axe-core could not decide these on %s; check by hand:\n%s", report.URL, FormatViolations(report.Incomplete))
	}
	if len(report.Violations) > 0 {
		t.Errorf("accessibility: %d axe-core violation(s) on %s (axe-core %s, %s):\n%s",
			len(report.Violations), report.URL, report.Version, strings.Join(AxeTags, ","), FormatViolations(report.Violations))
	}
}

// FormatViolations lists violations one rule a paragraph, for a test failure.
func FormatViolations(vs []Violation) string {
	var b strings.Builder
	for _, v := range vs {
		fmt.Fprintf(&b, "  %s (%s): %s\n    %s\n", v.ID, v.Impact, v.Help, v.HelpURL)
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "    - %s  %s\n", strings.Join(n.Target, ", "), n.HTML)
			for line := range strings.SplitSeq(strings.TrimSpace(n.FailureSummary), "\n") {
				fmt.Fprintf(&b, "        %s\n", strings.TrimSpace(line))
			}
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Cookies returns every cookie the tab's browser context holds, for any site
// (Storage.getCookies), with the attributes the browser stored: HTTPOnly, Secure, SameSite,
// Session (no expiry), Expires.
func Cookies(t testing.TB, ctx context.Context) []*network.Cookie {
	t.Helper()
	s := mustSession(t, ctx, "Cookies")
	res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: s.contextID})
	if err != nil {
		t.Fatalf("read the browser's cookies: %v", err)
	}
	return res.Cookies
}

// Cookie returns the browser's cookie with this name, or nil.
func Cookie(t testing.TB, ctx context.Context, name string) *network.Cookie {
	t.Helper()
	for _, c := range Cookies(t, ctx) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// AllowDownloads makes the tab's browser context save downloads into dir, under the names the
// server gives them (Browser.setDownloadBehavior).
func AllowDownloads(t testing.TB, ctx context.Context, dir string) {
	t.Helper()
	s := mustSession(t, ctx, "AllowDownloads")
	events := true
	if _, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, BrowserContextID: s.contextID, DownloadPath: dir, EventsEnabled: &events,
	}); err != nil {
		t.Fatalf("allow downloads: %v", err)
	}
}

// StorageUse counts what the current page's origin keeps on the device besides cookies.
type StorageUse struct {
	LocalStorage   int `json:"localStorage"`   // keys
	SessionStorage int `json:"sessionStorage"` // keys
	ServiceWorkers int `json:"serviceWorkers"` // registrations
	CacheStorage   int `json:"cacheStorage"`   // caches
	IndexedDB      int `json:"indexedDB"`      // databases
}

// Empty reports whether nothing is stored.
func (s StorageUse) Empty() bool { return s == StorageUse{} }

// Service workers and CacheStorage exist only in secure contexts (https, or http on loopback).
const storageScript = `(async () => {
	const r = {localStorage: localStorage.length, sessionStorage: sessionStorage.length,
		serviceWorkers: 0, cacheStorage: 0, indexedDB: 0};
	if (navigator.serviceWorker) r.serviceWorkers = (await navigator.serviceWorker.getRegistrations()).length;
	if (self.caches) r.cacheStorage = (await caches.keys()).length;
	if (indexedDB.databases) r.indexedDB = (await indexedDB.databases()).length;
	return r;
})()`

// DeviceStorage reports what the current page's origin stores in the browser: localStorage and
// sessionStorage keys, service worker registrations, CacheStorage caches and IndexedDB databases.
func DeviceStorage(t testing.TB, ctx context.Context) StorageUse {
	t.Helper()
	use, err := chromedp.Run(ctx, chromedp.Evaluate[StorageUse](storageScript, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("read the page's storage: %v", err)
	}
	return use
}

// CheckNothingStored fails t if the current page's origin stored anything besides cookies.
func CheckNothingStored(t testing.TB, ctx context.Context) {
	t.Helper()
	if use := DeviceStorage(t, ctx); !use.Empty() {
		t.Errorf("the page left data on the device: %+v", use)
	}
}

// ConsoleErrors returns what the page reported as errors so far: console.error calls, uncaught
// exceptions, and errors of the browser log (failed loads, Content-Security-Policy violations).
// It covers the tab that Browser opened.
func ConsoleErrors(ctx context.Context) []string {
	if s := sessionOf(ctx); s != nil {
		return s.consoleErrors()
	}
	return nil
}

// CheckConsole fails t if the page reported any error (see ConsoleErrors).
func CheckConsole(t testing.TB, ctx context.Context) {
	t.Helper()
	if msgs := mustSession(t, ctx, "CheckConsole").consoleErrors(); len(msgs) > 0 {
		t.Errorf("the page reported %d error(s):\n  %s", len(msgs), strings.Join(msgs, "\n  "))
	}
}

// BlockedRequests returns the requests beyond loopback that the page (the tab's browser
// context) made and the harness refused so far, as the browser sent them to the context's
// proxy ("CONNECT host:443", "GET http://host/path"). Chromium's own background requests are
// not among them (see BrowserRequests).
func BlockedRequests(ctx context.Context) []string {
	if s := sessionOf(ctx); s != nil {
		return s.page.requests()
	}
	return nil
}

// CheckNoRequestsBeyondLoopback fails t if the page made any request beyond loopback (see
// BlockedRequests): a patient's page must load nothing from anywhere but its own server.
func CheckNoRequestsBeyondLoopback(t testing.TB, ctx context.Context) {
	t.Helper()
	if blocked := mustSession(t, ctx, "CheckNoRequestsBeyondLoopback").page.requests(); len(blocked) > 0 {
		t.Errorf("the page made %d request(s) beyond loopback:\n  %s", len(blocked), strings.Join(blocked, "\n  "))
	}
}

// BrowserRequests returns the requests beyond loopback that Chromium made on its own, outside
// the tab's browser context (component updates and the like), which the harness refused too.
// They depend on the Chromium build, not on the page: tests log them and do not fail on them.
func BrowserRequests(ctx context.Context) []string {
	if s := sessionOf(ctx); s != nil {
		return s.browser.requests()
	}
	return nil
}

func (s *session) consoleErrors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.console...)
}

// record runs inside chromedp's read loop: it must be quick and must not call the browser.
func (s *session) record(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		args := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			switch {
			case a.Type == runtime.RemoteObjectTypeString:
				var str string
				if json.Unmarshal(a.Value, &str) == nil {
					args = append(args, str)
					continue
				}
				args = append(args, string(a.Value))
			case len(a.Value) > 0:
				args = append(args, string(a.Value))
			default:
				args = append(args, a.Description)
			}
		}
		msg = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		msg = fmt.Sprintf("exception: %s (%s:%d)", text, d.URL, d.LineNumber+1)
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError {
			return
		}
		msg = fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text)
		if ev.Entry.URL != "" {
			msg += " (" + ev.Entry.URL + ")"
		}
	default:
		return
	}
	s.mu.Lock()
	s.console = append(s.console, msg)
	s.mu.Unlock()
}

// guardedLog forwards chromedp's log lines to t until the test's cleanup ends; a line that
// arrives later (the browser's goroutines wind down on their own) is dropped, because t.Logf
// after a test completes panics.
type guardedLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *guardedLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("chromedp: "+format, args...)
	}
}

func (l *guardedLog) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

// dropDBus passes Chromium's output on without its complaints that there is no D-Bus (there
// never is, in a test), which would otherwise fill the tail shown on failure.
type dropDBus struct {
	w       io.Writer
	partial []byte
}

func (d *dropDBus) Write(p []byte) (int, error) {
	d.partial = append(d.partial, p...)
	for {
		i := bytes.IndexByte(d.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := d.partial[:i+1]
		if !bytes.Contains(line, []byte("dbus/")) {
			d.w.Write(line)
		}
		d.partial = d.partial[i+1:]
	}
}

// netSink is the browser's HTTP proxy: it stands for everything beyond loopback. It answers
// every request with 403 and remembers the request line, so no packet leaves the machine and a
// test can see what the page (or Chromium) tried to reach.
type netSink struct {
	ln net.Listener
	wg sync.WaitGroup

	mu      sync.Mutex
	blocked []string
}

func startNetSink() (*netSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &netSink{ln: ln}
	s.wg.Go(s.serve)
	return s, nil
}

func (s *netSink) addr() string { return s.ln.Addr().String() }

func (s *netSink) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() { s.refuse(conn) })
	}
}

func (s *netSink) refuse(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	// A proxied request names its destination ("GET http://host/…", "CONNECT host:443"); a
	// request for a bare path is one of Chromium's own Google services sent here by
	// --gaia-url/--google-base-url, not something the page did.
	if line = strings.TrimSpace(line); line != "" && !strings.Contains(line, " /") {
		line = strings.TrimSuffix(strings.TrimSuffix(line, " HTTP/1.1"), " HTTP/1.0")
		s.mu.Lock()
		s.blocked = append(s.blocked, line)
		s.mu.Unlock()
	}
	if err == nil {
		body := "testenv: the browser may reach loopback only\n"
		fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}
}

func (s *netSink) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.blocked...)
}

func (s *netSink) close() {
	s.ln.Close()
	s.wg.Wait()
}

// killProcessesUsing kills what is left of a browser that ran with this profile: Chromium's
// helpers can outlive the main process for a moment and keep writing to the profile, which
// would make removing t.TempDir() fail. Every helper has --user-data-dir on its command line.
func killProcessesUsing(profile string) {
	want := []byte("--user-data-dir=" + profile)
	deadline := time.Now().Add(2 * time.Second)
	for quiet := 0; quiet < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
				if bytes.Equal(arg, want) {
					syscall.Kill(pid, syscall.SIGKILL)
					found = true
					break
				}
			}
		}
		if found {
			quiet = 0
		} else {
			quiet++
		}
	}
}

// profilePrefs turn off the profile features that call Google on their own: sign-in (it lists
// Google accounts at start), preconnects to the search engine, search suggestions, and the
// rest of the usual suspects. Chromium reads them from <profile>/Default/Preferences.
const profilePrefs = `{
	"signin": {"allowed": false, "allowed_on_next_startup": false},
	"net": {"network_prediction_options": 2},
	"search": {"suggest_enabled": false},
	"alternate_error_pages": {"enabled": false},
	"safebrowsing": {"enabled": false},
	"autofill": {"enabled": false, "profile_enabled": false, "credit_card_enabled": false},
	"credentials_enable_service": false,
	"profile": {"password_manager_enabled": false},
	"translate": {"enabled": false}
}`

func writeProfilePrefs(profile string) error {
	dir := filepath.Join(profile, "Default")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "Preferences"), []byte(profilePrefs), 0o600)
}
