package viewer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

type backend string

const (
	postgresBackend backend = "postgres"
	sqliteBackend   backend = "sqlite"
)

// backends runs test against both databases the store supports.
func backends(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(string(b), func(t *testing.T) { test(t, b) })
	}
}

// cheapHash keeps tests fast where argon2id's cost is not what is tested.
var cheapHash = password.Params{MemoryKiB: 64, Time: 1, Threads: 1}

const (
	phoneA = "+12025550143"
	phoneB = "+12025550144"
)

// clock is an adjustable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeSMS records the texts it is asked to send.
type fakeSMS struct {
	mu    sync.Mutex
	sent  []sms.Message
	fail  bool
	codes *regexp.Regexp
}

func (f *fakeSMS) Send(_ context.Context, m sms.Message) (sms.Sent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return sms.Sent{}, &sms.SendError{Provider: "fake", Code: "timeout", Temporary: true, Detail: "fake failure"}
	}
	f.sent = append(f.sent, m)
	return sms.Sent{ProviderID: fmt.Sprint("fake-", len(f.sent))}, nil
}

// lastCode returns the code in the last text to phone.
func (f *fakeSMS) lastCode(t *testing.T, phone string) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.sent) - 1; i >= 0; i-- {
		if f.sent[i].To == phone {
			m := regexp.MustCompile(`code is ([0-9]{6})\.`).FindStringSubmatch(f.sent[i].Body)
			if m == nil {
				t.Fatalf("text %q holds no code", f.sent[i].Body)
			}
			return m[1]
		}
	}
	t.Fatalf("no text was sent to %s", phone)
	return ""
}

func (f *fakeSMS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

type fixtureOptions struct {
	tenant string
	policy Policy
	hash   password.Params // zero: cheapHash
	noSMS  bool
	// trustedProxies are Config.TrustedProxies; location is Branding.Location.
	trustedProxies []netip.Prefix
	location       *time.Location
	// start is the clock's first reading; zero: the wall clock's.
	start time.Time
}

// fixture is a viewer on real dependencies: a store on PostgreSQL or SQLite, a keystore
// (local backend) over mTLS on 127.0.0.1 with separate gateway and viewer client certificates,
// the gateway's Intake to create messages, and the viewer behind an HTTPS test server.
type fixture struct {
	t       testing.TB
	tenant  string
	Store   *store.Store
	Local   *keystore.Local
	Intake  *gateway.Intake
	SMS     *fakeSMS
	Viewer  *Viewer
	Server  *httptest.Server
	Clock   *clock
	keys    *keystore.Client
	ksHTTP  *http.Server
	verifys atomic.Int64
	sleepMu sync.Mutex
	sleeps  []time.Duration
}

func newFixture(t testing.TB, b backend, o fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	if o.tenant == "" {
		o.tenant = "clinic-a"
	}
	if o.hash == (password.Params{}) {
		o.hash = cheapHash
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.start.IsZero() {
		o.start = time.Now()
	}
	f := &fixture{t: t, tenant: o.tenant, Clock: &clock{t: o.start}, SMS: &fakeSMS{}}
	var dsn string
	switch b {
	case postgresBackend:
		dsn = testenv.PostgresDatabase(t)
	case sqliteBackend:
		dsn = "sqlite:" + filepath.Join(t.TempDir(), "tenant.db")
	}
	s, err := store.Open(ctx, dsn, o.tenant, store.WithClock(f.Clock.Now), store.WithLogger(quiet),
		store.WithMaxConnections(DatabaseConnections()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f.Store = s

	keyFile := filepath.Join(t.TempDir(), "local-key.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	if f.Local, err = keystore.NewLocal(keyFile, quiet); err != nil {
		t.Fatal(err)
	}
	now := time.Now() // certificates are checked against the wall clock by crypto/tls
	ca, err := tenantpki.NewCA(o.tenant, now)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	notary, err := audit.NewNotary(o.tenant, f.Local, &audit.MemoryNotaryState{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.NewServer(f.Local, keystore.ServerConfig{
		Tenant: o.tenant, Certificate: serverCert, ClientCAs: ca.CertPool(), Logger: quiet, Checkpoints: notary,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ksHTTP = ks.HTTPServer(ln.Addr().String())
	go func() {
		if err := f.ksHTTP.Serve(tls.NewListener(ln, f.ksHTTP.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("keystore: %v", err)
		}
	}()
	t.Cleanup(func() { _ = f.ksHTTP.Close() })
	client := func(component string) *keystore.Client {
		cert, err := ca.IssueClient(o.tenant, component, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := keystore.NewClient(keystore.ClientConfig{
			URL: "https://" + ln.Addr().String(), Certificate: cert, RootCAs: ca.CertPool(), Timeout: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	f.Intake = &gateway.Intake{Tenant: o.tenant, Store: s, Keys: client("gateway"), Now: f.Clock.Now}
	f.keys = client("viewer")

	cfg := Config{
		Tenant: o.tenant, Store: s, Keys: f.keys,
		Branding: Branding{
			DisplayName: "Riverside Clinic", SupportPhone: "202-555-0100", SupportEmail: "help@clinic.example",
			Logo: []byte("\x89PNG\r\n\x1a\nlogo"), LogoType: "image/png", PrimaryColor: "#1F4E79",
			Location: o.location,
		},
		TrustedProxies: o.trustedProxies,
		Policy:         o.policy, Logger: quiet, Now: f.Clock.Now, HashParams: o.hash,
		Sleep: func(_ context.Context, d time.Duration) {
			f.sleepMu.Lock()
			defer f.sleepMu.Unlock()
			f.sleeps = append(f.sleeps, d)
		},
	}
	if !o.noSMS {
		cfg.SMS = f.SMS
	}
	f.Viewer, err = New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Viewer.verify = func(ctx context.Context, pw, hash string) error {
		f.verifys.Add(1)
		return password.Verify(ctx, pw, hash)
	}
	f.Server = httptest.NewTLSServer(f.Viewer) // listens on 127.0.0.1
	t.Cleanup(f.Server.Close)
	return f
}

// message stores a message for phone through the gateway's intake and returns its id and
// link token (recovered from the outbox, as the notifier would).
func (f *fixture) message(phone, subject, text string, attachments ...content.Attachment) (id, link string) {
	return f.messageExpiring(phone, 0, subject, text, attachments...)
}

func (f *fixture) messageExpiring(phone string, expiresIn time.Duration, subject, text string, attachments ...content.Attachment) (id, link string) {
	f.t.Helper()
	ctx := context.Background()
	acc, err := f.Intake.Accept(ctx, gateway.Submission{
		Sender: "ehr", Channel: store.ChannelAPI, To: phone, ExpiresIn: expiresIn,
		Content: content.Message{Subject: subject, Text: text, Attachments: attachments},
	})
	if err != nil {
		f.t.Fatalf("accept message: %v", err)
	}
	entries, err := f.Store.ClaimOutbox(ctx, time.Now().Add(time.Minute), 100, time.Hour)
	if err != nil {
		f.t.Fatalf("claim outbox: %v", err)
	}
	for _, e := range entries {
		if e.MessageID != acc.MessageID {
			continue
		}
		key, err := f.Local.Unwrap(ctx, e.WrappedKey)
		if err != nil {
			f.t.Fatal(err)
		}
		link, err := sealed.Message{Tenant: f.tenant, ID: e.MessageID, Key: key}.OpenLink(e.Payload)
		if err != nil {
			f.t.Fatal(err)
		}
		return acc.MessageID, link
	}
	f.t.Fatalf("message %s has no outbox entry", acc.MessageID)
	return "", ""
}

func (f *fixture) status(id string) store.Status {
	f.t.Helper()
	m, err := f.Store.Message(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return m.Status
}

func (f *fixture) events(id string) []audit.Kind {
	f.t.Helper()
	evs, err := f.Store.MessageEvents(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	kinds := make([]audit.Kind, len(evs))
	for i, e := range evs {
		kinds[i] = e.Kind
	}
	return kinds
}

// allEvents returns the kinds of every audit event of the tenant.
func (f *fixture) allEvents() []audit.Event {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.Store.SequenceAudit(ctx, 100000); err != nil {
		f.t.Fatal(err)
	}
	evs, err := f.Store.AuditEvents(ctx, 0, 100000)
	if err != nil {
		f.t.Fatal(err)
	}
	return evs
}

func (f *fixture) recipientByPhone(phone string) store.Recipient {
	f.t.Helper()
	rc, err := f.Store.RecipientByPhone(context.Background(), phone)
	if err != nil {
		f.t.Fatal(err)
	}
	return rc
}

func (f *fixture) takeSleeps() []time.Duration {
	f.sleepMu.Lock()
	defer f.sleepMu.Unlock()
	s := f.sleeps
	f.sleeps = nil
	return s
}

// browser is one patient's browser: its own cookie jar, no redirects followed.
type browser struct {
	t      testing.TB
	f      *fixture
	client *http.Client
	jar    http.CookieJar
	header http.Header // added to every request
}

func (f *fixture) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	// A copy: Server.Client returns one shared client, whose jar each browser would replace.
	c := *f.Server.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: f.t, f: f, client: &c, jar: jar, header: http.Header{}}
}

// on returns a browser that shares b's cookies but talks to another fixture's server (same
// host 127.0.0.1, another port: cookies do not isolate by port).
func (b *browser) on(f *fixture) *browser {
	c := *f.Server.Client()
	c.Jar = b.jar
	c.CheckRedirect = b.client.CheckRedirect
	return &browser{t: b.t, f: f, client: &c, jar: b.jar, header: b.header}
}

type response struct {
	*http.Response
	body string
}

func (b *browser) do(req *http.Request) response {
	b.t.Helper()
	for k, v := range b.header {
		req.Header[k] = v
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{resp, string(body)}
}

func (b *browser) get(path string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.f.Server.URL+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// cookie returns the value of the browser's cookie name for the viewer.
func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.f.Server.URL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// post submits a form as the viewer's own page would: with the CSRF cookie's token (fetched
// from the home page if the browser has none) and Sec-Fetch-Site same-origin.
func (b *browser) post(path string, form url.Values) response {
	b.t.Helper()
	if b.cookie(csrfCookie) == "" {
		b.get("/")
	}
	form.Set("csrf", b.cookie(csrfCookie))
	req, err := http.NewRequest(http.MethodPost, b.f.Server.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", "null")
	return b.do(req)
}

func (b *browser) step(link, step string, kv ...string) response {
	b.t.Helper()
	form := url.Values{"step": {step}}
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	return b.post("/m/"+link, form)
}

// signIn sets the first password of link's recipient (if unset) or signs in, and returns
// the message page.
func (b *browser) login(link, pw string) response {
	b.t.Helper()
	return b.step(link, "login", "password", pw)
}

func wantStatus(t testing.TB, what string, r response, code int) {
	t.Helper()
	if r.StatusCode != code {
		t.Fatalf("%s: status %d, want %d; body:\n%s", what, r.StatusCode, code, r.body)
	}
}

func wantBody(t testing.TB, what string, r response, substrings ...string) {
	t.Helper()
	for _, s := range substrings {
		if !strings.Contains(r.body, s) {
			t.Fatalf("%s: body lacks %q:\n%s", what, s, r.body)
		}
	}
}

func wantNoBody(t testing.TB, what string, r response, substrings ...string) {
	t.Helper()
	for _, s := range substrings {
		if strings.Contains(r.body, s) {
			t.Fatalf("%s: body has %q:\n%s", what, s, r.body)
		}
	}
}

const goodPassword = "purple giraffe dances at noon"

// setFirstPassword opens link and sets pw as the recipient's first password (no code policy).
func (b *browser) setFirstPassword(link, pw string) response {
	b.t.Helper()
	r := b.step(link, "open")
	wantStatus(b.t, "open", r, http.StatusOK)
	wantBody(b.t, "open", r, "Choose a password")
	return b.step(link, "set-password", "password", pw, "confirm", pw)
}
