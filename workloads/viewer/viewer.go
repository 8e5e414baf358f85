// Package viewer is the patient's side of SecureText: the pages behind the link in the text
// message, where a patient signs in and reads a secure message.
//
// Guarantees:
//   - Opening a link (GET /m/{token}) changes nothing and reveals nothing: link previewers, mail
//     scanners and chat unfurlers fetch links. It shows the tenant's branding and one button.
//     Every step that records, signs in or reveals is an explicit POST from the viewer's own
//     form (Sec-Fetch-Site and Origin checks plus a double-submit token), and the content is
//     decrypted only for a signed-in patient whose session belongs to the message's recipient.
//   - "link opened" (first explicit open) and "revealed" (each time content is shown) are
//     separate audit events, and a message moves to opened and then read through
//     store.Transition. Content is shown only after its audit event is stored.
//   - A link that does not exist behaves like a link whose recipient has a password: the same
//     pages, byte for byte apart from the anti-forgery token, the same argon2id verification
//     on every sign-in attempt, and the same throttle after the same number of failures.
//   - Password guessing is bounded per recipient (Policy.MaxFailures, at most 100, per
//     failure window, from browsers that never signed in) with growing delays, and no one
//     holding a link can keep the patient out: the throttle is keyed by recipient and client,
//     a browser the patient signed in from keeps its own count, a remembered session needs
//     no password, and a texted code works only in the browser that asked for it.
//   - Sessions are server-side (only a hash of the id is stored), in a __Host- cookie that is
//     Secure, HttpOnly and SameSite=Strict; the idle timeout and absolute lifetime are checked
//     on the server; every sign-in gets a new id; sign-out deletes the session.
//   - Every response carries the security headers of headers.go (no-store, no-referrer, a
//     script-free CSP, HSTS, nosniff, COOP); there is no JavaScript, and nothing is kept on the
//     device: every cookie (session, anti-forgery token, device token) ends with the browser
//     session.
//   - Logs, errors and metric labels carry message and recipient ids and short codes, never
//     phone numbers, link tokens, passwords, codes or content.
package viewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"html/template"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
	"github.com/securetext/securetext/workloads/viewer/passwordpolicy"
)

// Viewer serves the patient's pages. It is an http.Handler; Run serves it.
type Viewer struct {
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	pages    map[string]*template.Template
	brand    brandView
	theme    []byte
	rules    passwordpolicy.Policy
	addrs    *addressLimiter
	phantoms *phantoms
	handler  http.Handler

	// dummyHash is verified against on sign-in attempts for links that do not exist, so that
	// they cost what a real attempt costs.
	dummyHash string
	// verify checks a password against a PHC string (password.Verify; tests count calls).
	verify func(ctx context.Context, password, hash string) error
}

// maxForm bounds a form post: a password of 256 characters and a few fields.
const maxForm = 16 << 10

// verifyWait bounds how long a sign-in waits for a free argon2id slot before the patient is
// asked to try again: the slots bound memory, this bounds queueing.
const verifyWait = 10 * time.Second

// New returns a viewer for cfg, or what is wrong with cfg.
func New(cfg Config, metrics *Metrics) (*Viewer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	dummy, err := password.HashWith(context.Background(), token.New(), cfg.HashParams)
	if err != nil {
		return nil, err
	}
	b := cfg.Branding
	brand, err := brandView{
		DisplayName: b.DisplayName, Language: b.Language,
		SupportPhone: b.SupportPhone, SupportEmail: b.SupportEmail, SupportURL: b.SupportURL,
		HasLogo: len(b.Logo) > 0,
	}.withChrome(pages["home"])
	if err != nil {
		return nil, err
	}
	v := &Viewer{
		cfg: cfg, log: cfg.Logger, metrics: metrics, pages: pages, brand: brand,
		theme:     themeCSS(b.PrimaryColor),
		rules:     passwordpolicy.Policy{MinLength: cfg.Policy.MinPasswordLength, Context: []string{b.DisplayName, cfg.Tenant, "securetext"}},
		addrs:     newAddressLimiter(cfg.Policy.MaxFailuresPerAddress, cfg.Policy.AddressWindow),
		phantoms:  newPhantoms(),
		dummyHash: dummy,
		verify:    password.Verify,
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", v.home)
	mux.HandleFunc("GET /m/{token}", v.landing)
	mux.HandleFunc("POST /m/{token}", v.step)
	mux.HandleFunc("POST /logout", v.logout)
	mux.HandleFunc("GET /static/style.css", v.asset("text/css; charset=utf-8", styleCSS))
	mux.HandleFunc("GET /static/theme.css", v.asset("text/css; charset=utf-8", v.theme))
	if len(b.Logo) > 0 {
		mux.HandleFunc("GET /static/logo", v.asset(b.LogoType, b.Logo))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", v.ready)
	mux.HandleFunc("/", v.notFound)
	v.handler = securityHeaders(metrics.instrument(mux))
	return v, nil
}

// ServeHTTP implements http.Handler.
func (v *Viewer) ServeHTTP(w http.ResponseWriter, r *http.Request) { v.handler.ServeHTTP(w, r) }

func (v *Viewer) now() time.Time { return v.cfg.Now() }

func (v *Viewer) asset(contentType string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

func (v *Viewer) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, _, err := v.cfg.Store.AuditHead(ctx); err != nil {
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	if err := v.cfg.Keys.Health(ctx); err != nil {
		http.Error(w, "keystore unavailable", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (v *Viewer) home(w http.ResponseWriter, r *http.Request) {
	v.render(w, r, http.StatusOK, "home", "home", page{Title: "Secure messages"})
}

// linkState is what a link token leads to.
type linkState int

const (
	linkUnknown linkState = iota // no such link (or not in this tenant)
	linkLive
	linkExpired
	linkRevoked
	linkPurged
)

type link struct {
	token string
	hash  [32]byte
	state linkState
	msg   store.Message
	// stored is the browser's session if it belongs to the message's recipient, not yet
	// checked for its timeouts (see session); parts are the message's parts when lookup was
	// asked for them and there is such a session.
	stored    *store.Session
	parts     []store.Part
	partsRead bool
}

func (l link) gone() bool {
	return l.state == linkExpired || l.state == linkRevoked || l.state == linkPurged
}

// lookup finds the message of link token tok and, in the same query, the request's session
// if it is the recipient's and, withParts, the parts that session would be shown.
func (v *Viewer) lookup(ctx context.Context, r *http.Request, tok string, withParts bool) (link, error) {
	l := link{token: tok, hash: token.Hash(tok)}
	var sessionHash [32]byte
	name, _ := cookieNames(r)
	if id := cookieToken(r, name); id != "" {
		sessionHash = token.Hash(id)
	}
	visit, err := v.cfg.Store.VisitLink(ctx, l.hash, sessionHash, withParts)
	if errors.Is(err, store.ErrNotFound) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	m := visit.Message
	l.msg, l.stored = m, visit.Session
	l.parts, l.partsRead = visit.Parts, withParts && visit.Session != nil
	switch {
	case m.Status == store.StatusPurged:
		l.state = linkPurged
	case m.Status == store.StatusRevoked:
		l.state = linkRevoked
	case m.Status == store.StatusExpired || !v.now().Before(m.ExpiresAt):
		l.state = linkExpired
	default:
		l.state = linkLive
	}
	return l, nil
}

// gonePage says that a message can no longer be read, why, and whom to contact.
func (v *Viewer) gonePage(w http.ResponseWriter, r *http.Request, l link) {
	switch l.state {
	case linkExpired:
		v.status(w, r, http.StatusGone, "expired", "This message has expired",
			fmt.Sprintf("This secure message could be read until %s. It can no longer be opened.", v.formatTime(l.msg.ExpiresAt)),
			v.contactLine())
	case linkRevoked:
		v.status(w, r, http.StatusGone, "revoked", "This message was withdrawn",
			"The sender withdrew this secure message, so it can no longer be opened.", v.contactLine())
	default:
		v.status(w, r, http.StatusGone, "purged", "This message was deleted",
			"This secure message was deleted under "+v.brand.DisplayName+"'s rules for how long messages are kept. It can no longer be opened.",
			v.contactLine())
	}
}

// landing is GET /m/{token}: branding and the next step, nothing else. It writes nothing
// about the message (a remembered session's last-use time may be refreshed).
func (v *Viewer) landing(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	if !tokenShape.MatchString(tok) {
		v.notFound(w, r)
		return
	}
	l, err := v.lookup(r.Context(), r, tok, false)
	if err != nil {
		v.log.ErrorContext(r.Context(), "look up link failed", "err", err)
		v.unavailable(w, r)
		return
	}
	if l.gone() {
		v.gonePage(w, r, l)
		return
	}
	_, remembered := v.session(r.Context(), l)
	v.render(w, r, http.StatusOK, "landing", "landing", page{Title: "Secure message", Remembered: remembered})
}

// step is POST /m/{token}: every action on a link, chosen by the form field "step".
func (v *Viewer) step(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	if !tokenShape.MatchString(tok) {
		v.notFound(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		v.status(w, r, http.StatusBadRequest, "bad-request", "Please start again",
			"The form could not be read. Open the link from your text message again.")
		return
	}
	if err := checkForgery(r); err != nil {
		v.forged(w, r)
		return
	}
	step := r.PostFormValue("step")
	l, err := v.lookup(r.Context(), r, tok, step == "open" || step == "download" || step == "reply")
	if err != nil {
		v.log.ErrorContext(r.Context(), "look up link failed", "err", err)
		v.unavailable(w, r)
		return
	}
	if l.gone() {
		v.gonePage(w, r, l)
		return
	}
	switch step {
	case "open":
		v.open(w, r, l)
	case "login":
		v.login(w, r, l)
	case "set-password":
		v.setPassword(w, r, l)
	case "send-code":
		v.sendCode(w, r, l)
	case "reset":
		v.reset(w, r, l)
	case "download":
		v.download(w, r, l)
	case "reply":
		v.reply(w, r, l)
	default:
		v.status(w, r, http.StatusBadRequest, "bad-request", "Please start again",
			"This form is not one this page knows. Open the link from your text message again.")
	}
}

// beforeOpened reports whether status s comes before "opened".
func beforeOpened(s store.Status) bool {
	switch s {
	case store.StatusAccepted, store.StatusNotified, store.StatusDelivered, store.StatusFailed:
		return true
	}
	return false
}

// open is the explicit first step on a link: a remembered session of the recipient sees the
// message at once; anyone else is asked for a password (or to choose one, on first use). The
// first explicit open is audited as link-opened and moves the message to opened.
func (v *Viewer) open(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	if l.state == linkUnknown {
		v.loginPage(w, r, http.StatusOK, "", "")
		return
	}
	if s, ok := v.session(ctx, l); ok {
		v.reveal(w, r, l, s.recipientID, revealed{})
		return
	}
	if err := v.markOpened(ctx, &l); err != nil {
		v.failed(w, r, l, "record link opened", err)
		return
	}
	rc, err := v.cfg.Store.Recipient(ctx, l.msg.RecipientID)
	if err != nil {
		v.failed(w, r, l, "read recipient", err)
		return
	}
	if rc.PasswordHash == "" {
		v.firstUsePage(w, r, http.StatusOK, "")
		return
	}
	v.loginPage(w, r, http.StatusOK, "", "")
}

// markOpened records the first explicit open of l's message.
func (v *Viewer) markOpened(ctx context.Context, l *link) error {
	if !beforeOpened(l.msg.Status) {
		return nil
	}
	err := v.cfg.Store.Transition(ctx, l.msg.ID, store.StatusOpened, audit.Event{
		Time: v.now(), Kind: audit.KindLinkOpened, Actor: "patient", MessageID: l.msg.ID,
		Detail: map[string]string{"recipient": l.msg.RecipientID},
	})
	if err == nil {
		l.msg.Status = store.StatusOpened
	}
	return err
}

// failed answers a store or keystore failure: a message that became final meanwhile gets its
// page, anything else "try again".
func (v *Viewer) failed(w http.ResponseWriter, r *http.Request, l link, what string, err error) {
	if errors.Is(err, store.ErrConflict) {
		if again, lerr := v.lookup(r.Context(), r, l.token, false); lerr == nil && again.gone() {
			v.gonePage(w, r, again)
			return
		}
	}
	v.log.ErrorContext(r.Context(), what+" failed", "message", l.msg.ID, "err", err)
	v.unavailable(w, r)
}

func (v *Viewer) loginPage(w http.ResponseWriter, r *http.Request, code int, errMsg, notice string) {
	view := "login"
	if code == http.StatusTooManyRequests {
		view = "locked"
	}
	v.render(w, r, code, "login", view, page{Title: "Enter your password", Error: errMsg, Notice: notice, CanReset: v.cfg.SMS != nil})
}

// firstUsePage asks a recipient without a password to choose one, after confirming the phone
// with a code if the policy wants that.
func (v *Viewer) firstUsePage(w http.ResponseWriter, r *http.Request, code int, errMsg string) {
	if v.cfg.Policy.OneTimeCode {
		v.render(w, r, code, "confirmphone", "confirm-phone", page{Title: "Confirm it is you", Error: errMsg})
		return
	}
	v.render(w, r, code, "setpassword", "set-password", page{Title: "Choose a password", Error: errMsg, MinLength: v.cfg.Policy.MinPasswordLength})
}

// pausedPage answers a sign-in the throttle holds back until next.
func (v *Viewer) pausedPage(w http.ResponseWriter, r *http.Request, next, now time.Time) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(next.Sub(now).Seconds()))))
	v.loginPage(w, r, http.StatusTooManyRequests, fmt.Sprintf(
		"Sign-in is paused because of too many wrong passwords. Try again after %s, or choose a new password with a code texted to your phone.",
		v.formatTime(next)), "")
}

// verifyPassword runs the argon2id check in the bounded pool, waiting at most verifyWait.
func (v *Viewer) verifyPassword(ctx context.Context, pw, hash string) error {
	ctx, cancel := context.WithTimeout(ctx, verifyWait)
	defer cancel()
	return v.verify(ctx, pw, hash)
}

// login checks a password, within the throttle of Policy.nextAttempt: an attempt the
// throttle holds back is answered without checking the password. Links that do not exist get
// the same work and answers, from a phantom recipient with a password.
func (v *Viewer) login(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	now := v.now()
	addr := clientAddr(r, v.cfg.TrustedProxies)
	if v.addrs.blocked(addr, now) {
		v.metrics.logins.WithLabelValues("throttled").Inc()
		v.throttled(w, r)
		return
	}
	pw := r.PostFormValue("password")
	policy := v.cfg.Policy
	client := v.loginClient(r)
	allow := func(c store.LoginCounts) bool { return !policy.nextAttempt(c).After(now) }

	if l.state == linkUnknown {
		var counts store.LoginCounts
		v.phantoms.with(l.hash, now, func(p *phantom) { counts = p.counts(client, now, policy.FailureWindow) })
		if !allow(counts) {
			v.metrics.logins.WithLabelValues("paused").Inc()
			v.appendAudit(ctx, audit.Event{Time: now, Kind: audit.KindAuthFailed, Actor: "patient", Detail: map[string]string{"reason": "unknown-link"}})
			v.pausedPage(w, r, policy.nextAttempt(counts), now)
			return
		}
		err := v.verifyPassword(ctx, pw, v.dummyHash)
		if err != nil && !errors.Is(err, password.ErrMismatch) {
			v.metrics.logins.WithLabelValues("busy").Inc()
			v.unavailable(w, r)
			return
		}
		v.phantoms.with(l.hash, now, func(p *phantom) {
			counts = p.counts(client, now, policy.FailureWindow)
			p.failures = append(p.failures, phantomFailure{client: client.Address, at: now})
		})
		v.addrs.add(addr, now)
		v.appendAudit(ctx, audit.Event{Time: now, Kind: audit.KindAuthFailed, Actor: "patient", Detail: map[string]string{"reason": "unknown-link"}})
		v.loginFailed(w, r, afterFailure(counts, now), now)
		return
	}

	rc, err := v.cfg.Store.Recipient(ctx, l.msg.RecipientID)
	if err != nil {
		v.failed(w, r, l, "read recipient", err)
		return
	}
	if rc.PasswordHash == "" {
		v.firstUsePage(w, r, http.StatusOK, "")
		return
	}
	att, err := v.cfg.Store.BeginLogin(ctx, rc.ID, client, now, policy.FailureWindow, allow)
	if err != nil {
		v.failed(w, r, l, "begin sign-in", err)
		return
	}
	if att.ID == "" {
		v.metrics.logins.WithLabelValues("paused").Inc()
		v.appendAudit(ctx, audit.Event{Time: now, Kind: audit.KindAuthFailed, Actor: "patient", MessageID: l.msg.ID,
			Detail: map[string]string{"recipient": rc.ID, "reason": "paused"}})
		v.pausedPage(w, r, policy.nextAttempt(att.Counts), now)
		return
	}
	switch err := v.verifyPassword(ctx, pw, rc.PasswordHash); {
	case err == nil:
	case errors.Is(err, password.ErrMismatch):
		after := afterFailure(att.Counts, now)
		if err := v.cfg.Store.LoginFailed(ctx, att, v.failureEvents(l, rc.ID, att.Counts, after, now)...); err != nil {
			v.failed(w, r, l, "record failed sign-in", err)
			return
		}
		v.addrs.add(addr, now)
		v.loginFailed(w, r, after, now)
		return
	default:
		if err := v.cfg.Store.LoginAbandoned(ctx, att); err != nil {
			v.log.WarnContext(ctx, "forget sign-in attempt failed", "message", l.msg.ID, "err", err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			v.metrics.logins.WithLabelValues("busy").Inc()
			v.unavailable(w, r)
			return
		}
		v.metrics.logins.WithLabelValues("error").Inc()
		v.failed(w, r, l, "verify password", err)
		return
	}
	if err := v.cfg.Store.LoginSucceeded(ctx, att, v.browser(w, r), now); err != nil {
		v.failed(w, r, l, "record sign-in", err)
		return
	}
	v.signInAndReveal(w, r, l, rc.ID, "password")
}

// failureEvents are the audit events of a failed sign-in whose counts went from before to
// after: the failure, and a limit it reaches (locked: password sign-in of this client, or
// of every untrusted client, is paused until failures age out). The store writes them with
// the failure, in one transaction.
func (v *Viewer) failureEvents(l link, recipientID string, before, after store.LoginCounts, now time.Time) []audit.Event {
	p := v.cfg.Policy
	events := []audit.Event{{Time: now, Kind: audit.KindAuthFailed, Actor: "patient", MessageID: l.msg.ID,
		Detail: map[string]string{"recipient": recipientID, "reason": "wrong-password", "failures": strconv.Itoa(after.Client),
			"trusted-browser": strconv.FormatBool(after.Trusted)}}}
	locked := func(scope string, failures int, until time.Time) {
		v.metrics.lockouts.Inc()
		events = append(events, audit.Event{Time: now, Kind: audit.KindLocked, Actor: "viewer", MessageID: l.msg.ID,
			Detail: map[string]string{"recipient": recipientID, "scope": scope, "failures": strconv.Itoa(failures),
				"minutes": strconv.Itoa(int(math.Ceil(until.Sub(now).Minutes())))}})
	}
	if before.Client < p.MaxFailuresPerClient && after.Client >= p.MaxFailuresPerClient {
		locked("client", after.Client, after.ClientOldest.Add(p.FailureWindow))
	}
	if !after.Trusted && before.Shared < p.MaxFailures && after.Shared >= p.MaxFailures {
		locked("untrusted-clients", after.Shared, after.SharedOldest.Add(p.FailureWindow))
	}
	return events
}

// loginFailed answers a failed sign-in whose client now has counts c, after the client's
// progressive delay.
func (v *Viewer) loginFailed(w http.ResponseWriter, r *http.Request, c store.LoginCounts, now time.Time) {
	v.metrics.logins.WithLabelValues("wrong-password").Inc()
	v.cfg.Sleep(r.Context(), failureDelay(c.Client, v.cfg.Policy.FailureDelay, v.cfg.Policy.MaxFailureDelay))
	if next := v.cfg.Policy.nextAttempt(c); next.After(now) {
		v.pausedPage(w, r, next, now)
		return
	}
	v.loginPage(w, r, http.StatusUnauthorized, "That password is not right. Check it and try again.", "")
}

// appendAudit stores events that go with no other write; a failure is logged (the answer
// does not depend on it).
func (v *Viewer) appendAudit(ctx context.Context, events ...audit.Event) {
	if err := v.cfg.Store.AppendAudit(ctx, events...); err != nil {
		v.log.ErrorContext(ctx, "append audit events failed", "err", err)
	}
}

var alreadySet = "A password has already been set for your messages. Enter it to continue."

// setPassword stores a first password (with the texted code, if the policy wants one), signs
// the patient in and shows the message.
func (v *Viewer) setPassword(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	now := v.now()
	if l.state == linkUnknown {
		v.loginPage(w, r, http.StatusOK, "", alreadySet)
		return
	}
	rc, err := v.cfg.Store.Recipient(ctx, l.msg.RecipientID)
	if err != nil {
		v.failed(w, r, l, "read recipient", err)
		return
	}
	if rc.PasswordHash != "" {
		v.loginPage(w, r, http.StatusOK, "", alreadySet)
		return
	}
	addr := clientAddr(r, v.cfg.TrustedProxies)
	if v.addrs.blocked(addr, now) {
		v.throttled(w, r)
		return
	}
	policy := v.cfg.Policy
	again := func(code int, msg string) {
		if policy.OneTimeCode {
			v.render(w, r, code, "setpassword", "set-password", page{Title: "Choose a password", Error: msg,
				MinLength: policy.MinPasswordLength, NeedCode: true, Purpose: string(store.CodeSetup)})
			return
		}
		v.firstUsePage(w, r, code, msg)
	}
	pw := r.PostFormValue("password")
	if refusal := v.rules.Check(pw, r.PostFormValue("confirm")); refusal != nil {
		again(http.StatusUnprocessableEntity, refusal.Message)
		return
	}
	hash, ok := v.newPasswordHash(w, r, l, rc.ID, store.CodeSetup, policy.OneTimeCode, addr, pw, again)
	if !ok {
		return
	}
	err = v.cfg.Store.SetFirstPassword(ctx, rc.ID, hash, audit.Event{Time: now, Kind: audit.KindPasswordSet, Actor: "patient",
		MessageID: l.msg.ID, Detail: map[string]string{"recipient": rc.ID}})
	if errors.Is(err, store.ErrConflict) {
		v.loginPage(w, r, http.StatusOK, "", alreadySet)
		return
	}
	if err != nil {
		v.failed(w, r, l, "set first password", err)
		return
	}
	if err := v.cfg.Store.TrustBrowser(ctx, rc.ID, v.browser(w, r), now); err != nil {
		v.failed(w, r, l, "trust browser", err)
		return
	}
	v.signInAndReveal(w, r, l, rc.ID, "first-password")
}

// newPasswordHash checks the one-time code the form carries for purpose (when needCode) and
// hashes the new password pw. When it has answered the request itself (a wrong code, which
// also counts against addr, or a failure) ok is false.
func (v *Viewer) newPasswordHash(w http.ResponseWriter, r *http.Request, l link, recipientID string, purpose store.CodePurpose,
	needCode bool, addr netip.Addr, pw string, again func(code int, msg string)) (hash string, ok bool) {
	ctx := r.Context()
	if needCode {
		ok, msg, err := v.useCode(ctx, r, recipientID, purpose, r.PostFormValue("code"))
		if err != nil {
			v.failed(w, r, l, "check one-time code", err)
			return "", false
		}
		if !ok {
			v.addrs.add(addr, v.now())
			again(http.StatusUnauthorized, msg)
			return "", false
		}
	}
	hash, err := password.HashWith(ctx, pw, v.cfg.HashParams)
	if err != nil {
		v.failed(w, r, l, "hash password", err)
		return "", false
	}
	return hash, true
}

// signInAndReveal starts a session for recipientID, signed in by how, and shows l's message.
func (v *Viewer) signInAndReveal(w http.ResponseWriter, r *http.Request, l link, recipientID, how string) {
	if err := v.startSession(r.Context(), w, r, recipientID, how); err != nil {
		v.failed(w, r, l, "start session", err)
		return
	}
	v.metrics.logins.WithLabelValues("success").Inc()
	v.reveal(w, r, l, recipientID, revealed{})
}

// logout is POST /logout.
func (v *Viewer) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil || checkForgery(r) != nil {
		v.forged(w, r)
		return
	}
	if err := v.endSession(r.Context(), w, r); err != nil {
		v.log.ErrorContext(r.Context(), "end session failed", "err", err)
		v.unavailable(w, r)
		return
	}
	v.status(w, r, http.StatusOK, "signed-out", "You are signed out",
		"To read a message again, open the link in your text message and enter your password.")
}
