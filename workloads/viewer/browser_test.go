package viewer

// Browser tests: the patient's pages in a real browser (Debian's chromium, driven through
// hack/testenv), against the fixture's viewer (real store, keystore and messages made by the
// gateway's Intake) served over HTTPS on 127.0.0.1.
//
// Every page a test reaches is screenshotted (testoutput/workloads/viewer/<Test>/, numbered in
// the order of the flow, each also at 320 px), checked by axe-core (WCAG 2.2 AA and best
// practices), and checked for sideways scrolling at 320 px (WCAG 2.2 SC 1.4.10). At the end of
// each test the browser must have reported no error (console, CSP, failed loads) and the
// viewer's origin must have stored nothing on the device.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// stepTimeout bounds one navigation or form submission: a click that leads nowhere fails the
// test at once instead of waiting for the browser's overall timeout.
const stepTimeout = 20 * time.Second

// patient is one person's browser (a fresh profile) on the fixture's viewer.
type patient struct {
	t        *testing.T
	f        *fixture
	ctx      context.Context
	viewport testenv.Viewport
	js       bool
	shots    int
	// statusLoads are the documents the viewer answered with an error status on purpose
	// (401 wrong password, 410 gone, …). Chromium logs each as "Failed to load resource";
	// those lines, and only those, are not errors of the page.
	statusLoads []statusLoad
}

type statusLoad struct {
	status int64
	url    string
}

func newPatient(t *testing.T, f *fixture, viewport testenv.Viewport, javascript bool) *patient {
	t.Helper()
	if !strings.HasPrefix(f.Server.URL, "https://127.0.0.1:") {
		t.Fatalf("viewer at %s, want HTTPS on 127.0.0.1", f.Server.URL)
	}
	ctx := testenv.Browser(t, testenv.WithTrustedCerts(f.Server.Certificate()),
		testenv.WithViewport(viewport), testenv.WithTimeout(3*time.Minute))
	// The viewer's pages load nothing but from the viewer; Chromium's own background
	// requests are not theirs (testenv.BrowserRequests).
	t.Cleanup(func() { testenv.CheckNoRequestsBeyondLoopback(t, ctx) })
	p := &patient{t: t, f: f, ctx: ctx, viewport: viewport, js: true}
	if !javascript {
		p.setJavaScript(false)
	}
	return p
}

func (p *patient) setJavaScript(on bool) {
	p.t.Helper()
	testenv.SetJavaScriptEnabled(p.t, p.ctx, on)
	p.js = on
}

// withScripts runs check with script execution on: axe-core and the storage probe are
// promise-based and cannot run in a page whose scripts are off. The viewer's pages have no
// script of their own, so nothing of the page runs meanwhile; scripts are off again before the
// next navigation.
func (p *patient) withScripts(check func()) {
	p.t.Helper()
	if p.js {
		check()
		return
	}
	testenv.SetJavaScriptEnabled(p.t, p.ctx, true)
	defer testenv.SetJavaScriptEnabled(p.t, p.ctx, false)
	check()
}

// act runs steps that load a new document (a navigation or a form submission) and returns
// the HTTP status of that document.
func (p *patient) act(what string, steps ...chromedp.Action[chromedp.Void]) int64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
	if resp == nil {
		p.t.Fatalf("%s: no document was loaded", what)
	}
	if resp.Status >= 400 {
		p.statusLoads = append(p.statusLoads, statusLoad{resp.Status, resp.URL})
	}
	return resp.Status
}

func (p *patient) get(path string) int64 {
	p.t.Helper()
	return p.act("open "+path, chromedp.Navigate(p.f.Server.URL+path))
}

// openLink is the patient tapping the link in the text message.
func (p *patient) openLink(link string) int64 {
	p.t.Helper()
	return p.get("/m/" + link)
}

// stepButton is the submit button of the page's form for step.
func stepButton(step string) chromedp.CSS {
	return chromedp.CSS(`main form:has(> input[name="step"][value="` + step + `"]) button[type="submit"]`)
}

var signOutButton = chromedp.CSS(`form[action="/logout"] button[type="submit"]`)

// submit types fields (id, value pairs) like a person and presses the button of step's form.
func (p *patient) submit(step string, fields ...string) int64 {
	p.t.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for i := 0; i+1 < len(fields); i += 2 {
		steps = append(steps, chromedp.SendKeys(chromedp.ID(fields[i]), fields[i+1]))
	}
	steps = append(steps, chromedp.Click(stepButton(step)))
	return p.act("submit "+step, steps...)
}

func evaluate[T any](p *patient, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text is what the page shows (rendered text, not markup).
func (p *patient) text() string {
	p.t.Helper()
	return evaluate[string](p, `document.body.innerText`)
}

// html is the whole document, hidden parts included.
func (p *patient) html() string {
	p.t.Helper()
	return evaluate[string](p, `document.documentElement.outerHTML`)
}

func (p *patient) exists(selector string) bool {
	p.t.Helper()
	return evaluate[bool](p, fmt.Sprintf(`document.querySelector(%q) !== null`, selector))
}

// page asserts that the browser shows the page expected after a step (status, heading and
// visible text), then checks it: screenshots, accessibility, width at 320 px.
func (p *patient) page(name string, gotStatus, wantStatus int64, heading string, visible ...string) {
	p.t.Helper()
	if gotStatus != wantStatus {
		p.t.Errorf("%s: HTTP status %d, want %d", name, gotStatus, wantStatus)
	}
	h1, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS("main h1")))
	if err != nil {
		p.t.Fatalf("%s: read the heading: %v", name, err)
	}
	text := p.text()
	if strings.TrimSpace(h1) != heading {
		p.t.Errorf("%s: heading %q, want %q; page text:\n%s", name, h1, heading, text)
	}
	for _, want := range visible {
		if !strings.Contains(text, want) {
			p.t.Errorf("%s: the page does not show %q; it shows:\n%s", name, want, text)
		}
	}
	p.check(name)
}

// check screenshots the current page, runs axe-core over it, and makes sure it does not
// scroll sideways at 320 px (screenshotting it there too).
func (p *patient) check(name string) {
	p.t.Helper()
	p.shots++
	shot := fmt.Sprintf("%02d-%s", p.shots, name)
	testenv.Screenshot(p.t, p.ctx, shot)
	if on := p.scripting(); on != p.js {
		p.t.Errorf("%s: scripting is %v in the page, want %v", name, on, p.js)
	}
	p.withScripts(func() {
		p.t.Helper()
		testenv.CheckAccessibility(p.t, p.ctx)
	})
	if p.viewport == testenv.NarrowPhone {
		testenv.CheckNoHorizontalScroll(p.t, p.ctx)
		return
	}
	testenv.SetViewport(p.t, p.ctx, testenv.NarrowPhone)
	testenv.CheckNoHorizontalScroll(p.t, p.ctx)
	testenv.Screenshot(p.t, p.ctx, shot+"-320px")
	testenv.SetViewport(p.t, p.ctx, p.viewport)
}

// scripting reports whether the page's scripting is on, as the HTML parser sees it: with
// scripting off, the content of <noscript> is parsed as elements; with it on, as text.
func (p *patient) scripting() bool {
	p.t.Helper()
	return evaluate[bool](p, `(() => {
		const probe = document.createElement("div");
		probe.innerHTML = "<noscript><i></i></noscript>";
		return probe.querySelector("noscript i") === null;
	})()`)
}

// wantHidden fails if the page contains any of secrets, anywhere in its markup.
func (p *patient) wantHidden(where string, secrets ...string) {
	p.t.Helper()
	html := p.html()
	for _, s := range secrets {
		if strings.Contains(html, s) {
			p.t.Errorf("%s: the page contains %q", where, s)
		}
	}
}

// usernameHidden checks the hidden username field that tells password managers whose password
// this is: it must stay invisible (an author stylesheet can override the hidden attribute).
func (p *patient) usernameHidden(where string) {
	p.t.Helper()
	display := evaluate[string](p, `(() => { const u = document.querySelector('input[name="username"]'); return u ? getComputedStyle(u).display : "absent" })()`)
	if display != "none" {
		p.t.Errorf("%s: the hidden username field is displayed (display: %s)", where, display)
	}
}

// finish checks what must hold after any flow: the browser reported no errors (CSP
// violations, exceptions, failed loads) other than the error statuses the viewer sent on
// purpose, and the viewer's origin stored nothing on the device.
func (p *patient) finish() {
	p.t.Helper()
	if len(p.statusLoads) == 0 {
		// No deliberate error status: the harness's check applies as it is.
		testenv.CheckConsole(p.t, p.ctx)
	} else {
		allowed := slices.Clone(p.statusLoads)
		var unexpected []string
		for _, msg := range testenv.ConsoleErrors(p.ctx) {
			i := slices.IndexFunc(allowed, func(l statusLoad) bool {
				return strings.HasPrefix(msg, fmt.Sprintf("network: Failed to load resource: the server responded with a status of %d ", l.status)) &&
					strings.HasSuffix(msg, "("+l.url+")")
			})
			if i < 0 {
				unexpected = append(unexpected, msg)
				continue
			}
			allowed = slices.Delete(allowed, i, i+1)
		}
		if len(unexpected) > 0 {
			p.t.Errorf("the page reported %d error(s):\n  %s", len(unexpected), strings.Join(unexpected, "\n  "))
		}
	}
	if !strings.HasPrefix(evaluate[string](p, `location.origin`), p.f.Server.URL) {
		p.get("/")
	}
	p.withScripts(func() {
		p.t.Helper()
		testenv.CheckNothingStored(p.t, p.ctx)
	})
}

// checkCookies checks the cookies after a sign-in: the session's, the anti-forgery token's
// and the device token's are __Host- cookies, HttpOnly, Secure, SameSite=Strict, without
// expiry, for this host only; there are no others, and the page's scripts see none. It
// returns the session id.
func (p *patient) checkCookies(where string) string {
	p.t.Helper()
	session := testenv.Cookie(p.t, p.ctx, "__Host-session")
	if session == nil {
		p.t.Fatalf("%s: no __Host-session cookie; cookies: %+v", where, testenv.Cookies(p.t, p.ctx))
	}
	for _, c := range testenv.Cookies(p.t, p.ctx) {
		if c.Name != "__Host-session" && c.Name != "__Host-csrf" && c.Name != "__Host-device" {
			p.t.Errorf("%s: unexpected cookie %s", where, c.Name)
			continue
		}
		if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || !c.Session ||
			c.Path != "/" || c.Domain != "127.0.0.1" {
			p.t.Errorf("%s: cookie %s is HttpOnly=%v Secure=%v SameSite=%q session=%v path=%q domain=%q; want HttpOnly, Secure, SameSite=Strict, no expiry, path /, this host only",
				where, c.Name, c.HTTPOnly, c.Secure, c.SameSite, c.Session, c.Path, c.Domain)
		}
	}
	if js := evaluate[string](p, `document.cookie`); js != "" {
		p.t.Errorf("%s: document.cookie = %q: the page can read cookies", where, js)
	}
	if _, err := p.f.Store.Session(context.Background(), token.Hash(session.Value)); err != nil {
		p.t.Errorf("%s: the browser's session is not on the server: %v", where, err)
	}
	return session.Value
}

// testMessage is a message a test sends, and what the patient must see of it.
type testMessage struct {
	subject, text string
	visible       []string // lines of the text as shown
	attachment    *content.Attachment
}

func (m testMessage) secrets() []string {
	s := append([]string{m.subject}, m.visible...)
	if m.attachment != nil {
		s = append(s, m.attachment.Name)
	}
	return s
}

func (f *fixture) send(phone string, m testMessage) (id, link string) {
	f.t.Helper()
	if m.attachment != nil {
		return f.message(phone, m.subject, m.text, *m.attachment)
	}
	return f.message(phone, m.subject, m.text)
}

var (
	labResults = testMessage{
		subject: "Lab results from March",
		// A long unbroken address and file name: the page must still fit 320 px.
		text: "Dear patient,\nYour results are normal.\n<b>No action is needed.</b>\n" +
			"Details: https://portal.riverside-clinic.example/results/2026-03-14/complete-blood-count-and-metabolic-panel",
		visible: []string{"Dear patient,", "Your results are normal.", "<b>No action is needed.</b>",
			"https://portal.riverside-clinic.example/results/2026-03-14/complete-blood-count-and-metabolic-panel"},
		attachment: &content.Attachment{Name: "Complete-blood-count-and-comprehensive-metabolic-panel-2026-03-14.pdf",
			ContentType: "application/pdf", Data: []byte("%PDF-1.4 lab report")},
	}
	appointment = testMessage{
		subject: "Your appointment",
		text:    "See you on Tuesday at 9:30 in room 12.",
		visible: []string{"See you on Tuesday at 9:30 in room 12."},
	}
	otherPatients = testMessage{
		subject: "Someone else's letter",
		text:    "This is for another patient.",
		visible: []string{"This is for another patient."},
	}
)

// showsMessage asserts that the page is m, revealed: heading, every line of the text (shown as
// text: markup in it is not interpreted), the sign-out button and the attachment's button.
func (p *patient) showsMessage(name string, status int64, m testMessage) {
	p.t.Helper()
	p.page(name, status, http.StatusOK, m.subject, append(slices.Clone(m.visible), "Sign out")...)
	if p.exists(".body b, .body script") {
		p.t.Errorf("%s: markup in the message text became elements", name)
	}
	if m.attachment != nil {
		label, err := chromedp.Run(p.ctx, chromedp.Text(stepButton("download")))
		if err != nil {
			p.t.Fatalf("%s: no download button: %v", name, err)
		}
		if !strings.Contains(label, "Download "+m.attachment.Name) {
			p.t.Errorf("%s: download button %q, want one for %s", name, label, m.attachment.Name)
		}
	}
}

// firstUse walks the first-use flow on a new recipient's link: the landing page (which
// reveals nothing), the explicit open, the set-password page, a too-short password refused by
// the browser as typed and by the server when filled in by a password manager, a good
// password, and the message.
func firstUse(p *patient, id, link string, m testMessage) {
	t, f := p.t, p.f
	t.Helper()
	p.page("landing", p.openLink(link), http.StatusOK, "You have a secure message",
		"Riverside Clinic sent you a secure message", "Continue")
	p.wantHidden("landing", m.secrets()...)
	if got := f.status(id); got != store.StatusAccepted {
		t.Errorf("status after opening the link = %s, want accepted: GET must change nothing", got)
	}

	p.page("set-password", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusOK,
		"Choose a password", "Use at least 15 characters", "New password", "Type the password again")
	p.usernameHidden("set-password")
	p.wantHidden("set-password", m.secrets()...)
	if got := f.status(id); got != store.StatusOpened {
		t.Errorf("status after the explicit open = %s, want opened", got)
	}

	// Typed, a too-short password never leaves the browser: the form's own rules refuse it
	// and say why.
	if err := chromedp.Do(p.ctx, chromedp.Evaluate[chromedp.Void](`document.documentElement.dataset.before = "submit"`),
		chromedp.SendKeys(chromedp.ID("password"), "too short"),
		chromedp.SendKeys(chromedp.ID("confirm"), "too short"),
		chromedp.Click(stepButton("set-password")),
		chromedp.Sleep(500*time.Millisecond), // the browser shows its message
	); err != nil {
		t.Fatalf("type a too-short password: %v", err)
	}
	native := evaluate[struct {
		Same     bool   `json:"same"`
		TooShort bool   `json:"tooShort"`
		Message  string `json:"message"`
	}](p, `(() => { const pw = document.getElementById("password");
		return {same: document.documentElement.dataset.before === "submit", tooShort: pw.validity.tooShort, message: pw.validationMessage} })()`)
	if !native.Same || !native.TooShort || !strings.Contains(native.Message, "15") {
		t.Errorf("typed too-short password: submitted=%v tooShort=%v message=%q; want it held back with a reason naming 15 characters",
			!native.Same, native.TooShort, native.Message)
	}
	p.check("set-password-too-short-typed")

	// Filled in by a password manager (not typed, so the browser's length rule does not
	// apply), it reaches the server, which refuses it and says why.
	p.page("set-password-too-short", p.act("a too-short password from a password manager",
		chromedp.SetValue(chromedp.ID("password"), "too short"),
		chromedp.SetValue(chromedp.ID("confirm"), "too short"),
		chromedp.Click(stepButton("set-password"))),
		http.StatusUnprocessableEntity, "Choose a password",
		"This password is too short: use at least 15 characters (this one has 9).")
	alert, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(`[role="alert"]#form-error`)))
	if err != nil || !strings.Contains(alert, "too short") {
		t.Errorf("the refusal is not announced as an alert: %q, %v", alert, err)
	}
	if !p.exists(`#password[aria-invalid="true"][aria-describedby="form-error"]`) {
		t.Error("the password field is not marked invalid and tied to the refusal")
	}
	if rc := f.recipientByPhone(phoneA); rc.PasswordHash != "" {
		t.Fatal("a refused password was stored")
	}

	p.showsMessage("message", p.submit("set-password", "password", goodPassword, "confirm", goodPassword), m)
	if got := f.status(id); got != store.StatusRead {
		t.Errorf("status after the reveal = %s, want read", got)
	}
	want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindPasswordSet, audit.KindRevealed}
	if got := f.events(id); !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
}

// signIn walks a sign-in on link for a recipient who has a password, in a browser without a
// session: landing, login page, a wrong password, the right one, the message.
func signIn(p *patient, link string, m testMessage) {
	t := p.t
	t.Helper()
	status := p.openLink(link)
	p.page("landing", status, http.StatusOK, "You have a secure message", "Continue")
	if strings.Contains(p.text(), "You are signed in") {
		t.Error("landing: a browser without a session is told it is signed in")
	}
	p.page("login", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusOK,
		"Enter your password", "Password", "Forgot your password?")
	p.usernameHidden("login")
	p.wantHidden("login", m.secrets()...)

	p.page("login-wrong-password", p.submit("login", "password", "not my password at all"),
		http.StatusUnauthorized, "Enter your password", "That password is not right. Check it and try again.")
	if !p.exists(`#password[aria-invalid="true"][aria-describedby="form-error"]`) {
		t.Error("login error: the password field is not marked invalid and tied to the error")
	}
	p.wantHidden("login error", m.secrets()...)

	p.showsMessage("message", p.submit("login", "password", goodPassword), m)
}

// signInTo opens link, continues and signs in with the right password, and checks that the
// page (called name) is m.
func (p *patient) signInTo(name, link string, m testMessage) {
	p.t.Helper()
	p.openLink(link)
	p.act("continue", chromedp.Click(stepButton("open")))
	p.showsMessage(name, p.submit("login", "password", goodPassword), m)
}

// signOut presses "Sign out" on a message page.
func (p *patient) signOut() {
	p.t.Helper()
	p.page("signed-out", p.act("sign out", chromedp.Click(signOutButton)), http.StatusOK,
		"You are signed out", "open the link in your text message")
	if c := testenv.Cookie(p.t, p.ctx, "__Host-session"); c != nil {
		p.t.Errorf("after signing out the browser still has a session cookie")
	}
}

// Flow 1: a first-time recipient sets a password and reads the message; the attachment
// downloads; signing out ends the session.
func TestBrowserFirstUse(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	id, link := f.send(phoneA, labResults)
	p := newPatient(t, f, testenv.Phone, true)
	firstUse(p, id, link, labResults)
	session := p.checkCookies("after setting the password")

	// The attachment is a real download, saved as the sender named it.
	dir := t.TempDir()
	testenv.AllowDownloads(t, p.ctx, dir)
	if err := chromedp.Do(p.ctx, chromedp.Click(stepButton("download"))); err != nil {
		t.Fatalf("press the download button: %v", err)
	}
	file := filepath.Join(dir, labResults.attachment.Name)
	testenv.Eventually(t, "the download", func() error {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if string(data) != string(labResults.attachment.Data) {
			return fmt.Errorf("%s holds %q", file, data)
		}
		return nil
	})
	if h1, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS("main h1"))); err != nil || h1 != labResults.subject {
		t.Errorf("after the download the page shows %q (%v), want the message still", h1, err)
	}

	p.signOut()
	if _, err := f.Store.Session(context.Background(), token.Hash(session)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the session survives signing out: %v", err)
	}
	p.page("landing-after-sign-out", p.openLink(link), http.StatusOK, "You have a secure message", "Continue")
	p.wantHidden("landing after sign-out", labResults.secrets()...)
	p.finish()
}

// Flow 2 and the cookies: a recipient with a password opens a second message in a new
// browser, mistypes the password, then signs in.
func TestBrowserLogin(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	_, first := f.send(phoneA, labResults)
	id, link := f.send(phoneA, appointment)
	wantStatus(t, "set the first password", f.browser().setFirstPassword(first, goodPassword), http.StatusOK)

	p := newPatient(t, f, testenv.Phone, true)
	signIn(p, link, appointment)
	p.checkCookies("after signing in")
	want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindAuthFailed, audit.KindRevealed}
	if got := f.events(id); !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	p.finish()
}

// The optional reply (tenant policy): the patient answers from the message page; a reply
// that is too long is refused with the field marked, a good one is shown under the message.
func TestBrowserReply(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{Replies: true, ReplyMaxLength: 60}})
	_, first := f.send(phoneA, labResults)
	id, link := f.send(phoneA, appointment)
	wantStatus(t, "set the first password", f.browser().setFirstPassword(first, goodPassword), http.StatusOK)

	p := newPatient(t, f, testenv.Phone, true)
	p.signInTo("message-with-reply-form", link, appointment)
	if !strings.Contains(p.text(), "Reply to "+f.Viewer.brand.DisplayName) {
		t.Errorf("message page: no reply form; it shows:\n%s", p.text())
	}
	// A browser stops typing at maxlength; set the field as a script (or an older browser) could.
	p.act("type a long reply", chromedp.SetValue(chromedp.ID("reply"), strings.Repeat("a", 61)),
		chromedp.Click(stepButton("reply")))
	p.page("reply-too-long", http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, appointment.subject,
		"Your reply has 61 characters; it can have at most 60. Please shorten it.")
	if !p.exists(`#reply[aria-invalid="true"][aria-describedby~="form-error"]`) {
		t.Error("reply error: the reply field is not marked invalid and tied to the error")
	}
	const reply = "Tuesday works. Can I bring my daughter?"
	if got := evaluate[string](p, `document.getElementById("reply").value`); got != strings.Repeat("a", 61) {
		t.Errorf("reply error: the field holds %q, want what the patient wrote", got)
	}
	sent := p.act("send a reply", chromedp.SetValue(chromedp.ID("reply"), reply), chromedp.Click(stepButton("reply")))
	p.page("reply-sent", sent, http.StatusOK, appointment.subject,
		"Your reply was sent to", reply, "You replied")
	// Each page that shows the message is a reveal, the one refusing the long reply too.
	want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindRevealed, audit.KindRevealed,
		audit.KindReplied, audit.KindRevealed}
	if got := f.events(id); !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	p.finish()
}

// Flow 3: after signing in, another message's link for the same recipient shows the message
// after one explicit click; opening the link (GET) shows none of it and changes nothing. The
// session does not extend to another recipient's message.
func TestBrowserRememberedSession(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	_, first := f.send(phoneA, labResults)
	id, second := f.send(phoneA, appointment)
	_, other := f.send(phoneB, otherPatients)
	wantStatus(t, "set the first password", f.browser().setFirstPassword(first, goodPassword), http.StatusOK)

	p := newPatient(t, f, testenv.Phone, true)
	p.signInTo("first-message", first, labResults)

	for range 2 { // a link previewer and the patient: every GET alike
		p.page("landing-remembered", p.openLink(second), http.StatusOK, "You have a secure message",
			"You are signed in. Select the button to show the message.", "Show message")
		p.wantHidden("landing of a remembered session", appointment.secrets()...)
	}
	if got := f.events(id); !slices.Equal(got, []audit.Kind{audit.KindAccepted}) {
		t.Errorf("events after opening the link = %v: GET must record nothing", got)
	}
	p.showsMessage("second-message", p.act("show message", chromedp.Click(stepButton("open"))), appointment)
	want := []audit.Kind{audit.KindAccepted, audit.KindLinkOpened, audit.KindRevealed}
	if got := f.events(id); !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}

	// Another recipient's link: the session does not count there.
	p.page("landing-other-recipient", p.openLink(other), http.StatusOK, "You have a secure message", "Continue")
	if strings.Contains(p.text(), "You are signed in") {
		t.Error("another recipient's link says the patient is signed in")
	}
	p.page("set-password-other-recipient", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusOK,
		"Choose a password")
	p.wantHidden("another recipient's message", otherPatients.secrets()...)
	p.finish()
}

// Flow 4: a session unused for longer than the idle timeout (on the viewer's clock) ends; the
// link asks for the password again.
func TestBrowserIdleTimeout(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{IdleTimeout: 15 * time.Minute}})
	_, first := f.send(phoneA, labResults)
	_, second := f.send(phoneA, appointment)
	wantStatus(t, "set the first password", f.browser().setFirstPassword(first, goodPassword), http.StatusOK)

	p := newPatient(t, f, testenv.Phone, true)
	p.openLink(first)
	p.act("continue", chromedp.Click(stepButton("open")))
	p.showsMessage("message", p.submit("login", "password", goodPassword), labResults)
	session := p.checkCookies("after signing in")

	f.Clock.Advance(14 * time.Minute)
	p.page("landing-14-minutes-later", p.openLink(second), http.StatusOK, "You have a secure message", "You are signed in")

	f.Clock.Advance(15*time.Minute + time.Second) // idle for longer than 15 minutes
	p.page("landing-after-idle-timeout", p.openLink(second), http.StatusOK, "You have a secure message", "Continue")
	if strings.Contains(p.text(), "You are signed in") {
		t.Error("after the idle timeout the landing page still says the patient is signed in")
	}
	if _, err := f.Store.Session(context.Background(), token.Hash(session)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the idle session is still on the server: %v", err)
	}
	p.page("login-after-idle-timeout", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusOK,
		"Enter your password", "Password")
	p.wantHidden("login after the idle timeout", appointment.secrets()...)
	p.showsMessage("message-after-signing-in-again", p.submit("login", "password", goodPassword), appointment)
	if again := p.checkCookies("after signing in again"); again == session {
		t.Error("signing in again kept the old session id")
	}
	p.finish()
}

// Flow 5: wrong passwords from one browser (MaxFailuresPerClient 3) pause its password
// sign-in; even the right password is refused until the failures age out.
func TestBrowserLockout(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{policy: Policy{MaxFailuresPerClient: 3, FailureWindow: 15 * time.Minute}})
	id, link := f.send(phoneA, appointment)
	wantStatus(t, "set the first password", f.browser().setFirstPassword(link, goodPassword), http.StatusOK)

	p := newPatient(t, f, testenv.Phone, true)
	p.openLink(link)
	p.page("login", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusOK, "Enter your password")
	for i := 1; i <= 2; i++ {
		p.page(fmt.Sprintf("wrong-password-%d", i), p.submit("login", "password", fmt.Sprintf("wrong guess number %d", i)),
			http.StatusUnauthorized, "Enter your password", "That password is not right.")
	}
	p.page("locked", p.submit("login", "password", "wrong guess number 3"), http.StatusTooManyRequests,
		"Enter your password", "Sign-in is paused because of too many wrong passwords. Try again after",
		"Text me a code")
	p.page("locked-right-password", p.submit("login", "password", goodPassword), http.StatusTooManyRequests,
		"Enter your password", "Sign-in is paused")
	p.wantHidden("locked", appointment.secrets()...)
	var locked int
	for _, k := range f.events(id) {
		if k == audit.KindLocked {
			locked++
		}
	}
	if locked != 1 {
		t.Errorf("%d locked events, want 1", locked)
	}

	f.Clock.Advance(15 * time.Minute)
	p.showsMessage("message-after-the-lock", p.submit("login", "password", goodPassword), appointment)
	p.finish()
}

// Flow 6: expired, withdrawn and deleted messages, and an address that is no link, each get a
// clear page that says so and whom to contact.
func TestBrowserGonePages(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	ctx := context.Background()
	_, expiring := f.messageExpiring(phoneA, time.Minute, "Expiring", "expiring text")
	revokedID, revoked := f.message(phoneA, "Withdrawn", "withdrawn text")
	purgedID, purged := f.message(phoneA, "Deleted", "deleted text")
	if err := f.Store.Purge(ctx, purgedID, audit.Event{Kind: audit.KindPurged, Actor: "system"}); err != nil {
		t.Fatal(err)
	}
	p := newPatient(t, f, testenv.Phone, true)
	contact := func(name string) {
		t.Helper()
		for _, sel := range []string{`footer a[href="tel:202-555-0100"]`, `footer a[href="mailto:help@clinic.example"]`} {
			if !p.exists(sel) {
				t.Errorf("%s: no contact link %s", name, sel)
			}
		}
	}

	// Withdrawn while the patient looks at the landing page.
	p.page("landing", p.openLink(revoked), http.StatusOK, "You have a secure message")
	if err := f.Store.Transition(ctx, revokedID, store.StatusRevoked, audit.Event{Kind: audit.KindRevoked, Actor: "ehr"}); err != nil {
		t.Fatal(err)
	}
	p.page("revoked", p.act("continue", chromedp.Click(stepButton("open"))), http.StatusGone,
		"This message was withdrawn", "The sender withdrew this secure message",
		"contact Riverside Clinic", "202-555-0100", "help@clinic.example")
	contact("revoked")
	p.page("revoked-link", p.openLink(revoked), http.StatusGone, "This message was withdrawn", "contact Riverside Clinic")

	f.Clock.Advance(2 * time.Minute)
	p.page("expired", p.openLink(expiring), http.StatusGone, "This message has expired",
		"could be read until", "It can no longer be opened.", "contact Riverside Clinic", "202-555-0100", "help@clinic.example")
	contact("expired")

	p.page("purged", p.openLink(purged), http.StatusGone, "This message was deleted",
		"rules for how long messages are kept", "contact Riverside Clinic", "202-555-0100", "help@clinic.example")
	contact("purged")

	p.page("not-found", p.get("/m/not-a-link"), http.StatusNotFound, "Page not found",
		"This address does not lead to a message", "Riverside Clinic")
	contact("not-found")
	p.wantHidden("gone pages", "expiring text", "withdrawn text", "deleted text")
	p.finish()
}

// Flow 7: at 320 px with JavaScript off, the first-use flow, signing out, the home page and a
// sign-in all work, and no page scrolls sideways.
func TestBrowserNarrowPhoneWithoutJavaScript(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	id, link := f.send(phoneA, labResults)
	_, second := f.send(phoneA, appointment)
	p := newPatient(t, f, testenv.NarrowPhone, false)
	p.page("home", p.get("/"), http.StatusOK, "Secure messages", "Open the link in that text")
	firstUse(p, id, link, labResults)
	p.checkCookies("after setting the password")
	p.signOut()
	signIn(p, second, appointment)
	width := evaluate[int64](p, `document.documentElement.clientWidth`)
	if width != testenv.NarrowPhone.Width {
		t.Errorf("the page is laid out %d px wide, want %d", width, testenv.NarrowPhone.Width)
	}
	p.finish()
}
