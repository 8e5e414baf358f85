package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	netsmtp "net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/gctune"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

const smtpTestDomain = "text.clinic.example"

// smtpHarness is an SMTPServer on the fixture, with a STARTTLS listener and an implicit-TLS
// listener on 127.0.0.1, a client TLS config that trusts its certificate, and its logs.
type smtpHarness struct {
	f         *fixture
	srv       *SMTPServer
	metrics   *Metrics
	addr      string // port 587 semantics
	tlsAddr   string // port 465 semantics
	clientTLS *tls.Config
	logs      *smtpLogBuffer
}

// smtpLogBuffer collects JSON log lines written concurrently by the server.
type smtpLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *smtpLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *smtpLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// smtpPHI are strings that must never reach a log: the test phone numbers in every form
// written here, and the markers put in subjects, bodies, file names and wrong passwords.
var smtpPHI = []string{"202555", "2025550", "+1202", "5550143", "2114367789", "PHI"}

func newSMTPHarness(t testing.TB, b backend, configure func(*SMTPConfig)) *smtpHarness {
	t.Helper()
	f := newFixture(t, b)
	now := time.Now()
	ca, err := tenantpki.NewCA(testTenant, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := &smtpHarness{
		f:         f,
		metrics:   NewMetrics(nil),
		clientTLS: &tls.Config{RootCAs: ca.CertPool(), ServerName: "127.0.0.1"},
		logs:      &smtpLogBuffer{},
	}
	// No time in the records, so that the PHI check cannot match a timestamp's digits.
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	cfg := SMTPConfig{
		Domain: smtpTestDomain, Hostname: "smtp.clinic.example",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Logger:    logger, Metrics: h.metrics,
	}
	if configure != nil {
		configure(&cfg)
	}
	h.srv, err = NewSMTPServer(cfg, f.Intake, f.Senders)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr, h.tlsAddr = ln.Addr().String(), tlsLn.Addr().String()
	served := make(chan error, 2)
	go func() { served <- h.srv.Serve(ln) }()
	go func() { served <- h.srv.ServeTLS(tlsLn) }()
	t.Cleanup(func() {
		if err := h.srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		for range 2 {
			if err := <-served; !errors.Is(err, ErrSMTPServerClosed) {
				t.Errorf("serve returned %v, want ErrSMTPServerClosed", err)
			}
		}
		h.checkNoPHI(t)
	})
	return h
}

// checkNoPHI fails if a log record holds a phone number, content or a password.
func (h *smtpHarness) checkNoPHI(t testing.TB) {
	t.Helper()
	logs := h.logs.String()
	for _, s := range append(slices.Clone(smtpPHI), h.f.SMTPPassword) {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q:\n%s", s, logs)
		}
	}
}

// wantLog fails unless some log record has all of fragments (JSON "key":value pieces).
func (h *smtpHarness) wantLog(t testing.TB, fragments ...string) {
	t.Helper()
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if !slices.ContainsFunc(fragments, func(f string) bool { return !strings.Contains(line, f) }) {
			return
		}
	}
	t.Errorf("no log record has %q; logs:\n%s", fragments, h.logs.String())
}

// dial connects to the STARTTLS listener and says EHLO.
func (h *smtpHarness) dial(t testing.TB) *netsmtp.Client {
	t.Helper()
	c, err := netsmtp.Dial(h.addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Hello("ehr.clinic.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// login connects, starts TLS and authenticates with auth (nil: the fixture sender, PLAIN).
func (h *smtpHarness) login(t testing.TB, auth netsmtp.Auth) *netsmtp.Client {
	t.Helper()
	c := h.dial(t)
	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if auth == nil {
		auth = h.plainAuth()
	}
	if err := c.Auth(auth); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	return c
}

func (h *smtpHarness) plainAuth() netsmtp.Auth {
	return netsmtp.PlainAuth("", h.f.Sender.SMTPUsername, h.f.SMTPPassword, "127.0.0.1")
}

// smtpLoginAuth is the client side of AUTH LOGIN, which net/smtp lacks; initial sends the
// username with the command.
type smtpLoginAuth struct {
	user, pass string
	initial    bool
}

func (a smtpLoginAuth) Start(si *netsmtp.ServerInfo) (string, []byte, error) {
	if !si.TLS {
		return "", nil, errors.New("LOGIN only over TLS")
	}
	if a.initial {
		return "LOGIN", []byte(a.user), nil
	}
	return "LOGIN", nil, nil
}

func (a smtpLoginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch string(challenge) {
	case "Username:":
		return []byte(a.user), nil
	case "Password:":
		return []byte(a.pass), nil
	}
	return nil, fmt.Errorf("unexpected LOGIN challenge %q", challenge)
}

// smtpCmd sends one raw command and reads its reply.
func smtpCmd(c *netsmtp.Client, expect int, format string, args ...any) (int, string, error) {
	id, err := c.Text.Cmd(format, args...)
	if err != nil {
		return 0, "", err
	}
	c.Text.StartResponse(id)
	defer c.Text.EndResponse(id)
	return c.Text.ReadResponse(expect)
}

// smtpData sends DATA and msg and returns the final reply's text (net/smtp drops it).
func smtpData(c *netsmtp.Client, msg string) (string, error) {
	if _, _, err := smtpCmd(c, 354, "DATA"); err != nil {
		return "", err
	}
	w := c.Text.DotWriter()
	if _, err := io.WriteString(w, msg); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	_, text, err := c.Text.ReadResponse(250)
	return text, err
}

// smtpSend runs one mail transaction and returns the DATA reply text.
func smtpSend(c *netsmtp.Client, to []string, msg string) (string, error) {
	if err := c.Mail("desk@clinic.example"); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return "", err
		}
	}
	return smtpData(c, msg)
}

// mustSend is smtpSend that must succeed; it returns the stored message ids from the reply.
func mustSend(t testing.TB, c *netsmtp.Client, to []string, msg string) []string {
	t.Helper()
	reply, err := smtpSend(c, to, msg)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	ids, ok := strings.CutPrefix(reply, "2.0.0 OK: queued as ")
	if !ok {
		t.Fatalf("reply %q does not name the stored messages", reply)
	}
	return strings.Fields(ids)
}

// wantReply fails unless err is an SMTP reply with code and enhanced code (e.g. "5.1.1") whose
// text contains each of texts.
func wantReply(t testing.TB, err error, code int, enhanced string, texts ...string) {
	t.Helper()
	var te *textproto.Error
	if !errors.As(err, &te) {
		t.Fatalf("got %v, want reply %d %s", err, code, enhanced)
	}
	if te.Code != code || !strings.HasPrefix(te.Msg, enhanced+" ") {
		t.Fatalf("reply %d %s, want %d %s", te.Code, te.Msg, code, enhanced)
	}
	for _, s := range texts {
		if !strings.Contains(te.Msg, s) {
			t.Errorf("reply %d %s does not say %q", te.Code, te.Msg, s)
		}
	}
}

func rcpt(number string) string { return number + "@" + smtpTestDomain }

// plainMail is a text/plain message; messageID "" leaves the header out.
func plainMail(messageID, subject, body string) string {
	s := "From: Front Desk <desk@clinic.example>\r\nTo: Patient <patient@" + smtpTestDomain + ">\r\nSubject: " + subject + "\r\n"
	if messageID != "" {
		s += "Message-ID: <" + messageID + ">\r\n"
	}
	return s + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
}

// smtpStored is a stored message, opened.
type smtpStored struct {
	store.Message
	Phone   string
	Content content.Message
}

// open opens stored message id as the viewer would: unwrap its data key with the keystore,
// open each part, decode.
func (h *smtpHarness) open(t testing.TB, id string) smtpStored {
	t.Helper()
	ctx := context.Background()
	m, err := h.f.Store.Message(ctx, id)
	if err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	rc, err := h.f.Store.Recipient(ctx, m.RecipientID)
	if err != nil {
		t.Fatal(err)
	}
	key, err := h.f.Keys.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	defer envelope.Zero(key)
	parts, err := h.f.Store.MessageParts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var plain []content.Part
	for _, p := range parts {
		pt, err := envelope.Open(key, envelope.AssociatedData{Tenant: testTenant, MessageID: id, Part: p.Name}, p.Ciphertext)
		if err != nil {
			t.Fatalf("open %s of %s: %v", p.Name, id, err)
		}
		plain = append(plain, content.Part{Name: p.Name, Plaintext: pt})
	}
	msg, err := content.Decode(plain)
	if err != nil {
		t.Fatal(err)
	}
	return smtpStored{Message: m, Phone: rc.Phone, Content: msg}
}

// storedAll claims the whole outbox (once per test) and opens every message, in order.
func (h *smtpHarness) storedAll(t testing.TB) []smtpStored {
	t.Helper()
	entries, err := h.f.Store.ClaimOutbox(context.Background(), time.Now().Add(time.Hour), 1000, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]smtpStored, 0, len(entries))
	for _, e := range entries {
		out = append(out, h.open(t, e.MessageID))
	}
	return out
}

func (h *smtpHarness) wantStored(t testing.TB, n int) {
	t.Helper()
	if got := h.f.messageCount(); got != n {
		t.Fatalf("%d messages stored, want %d", got, n)
	}
}

func smtpRefusals(t testing.TB, m *Metrics, reason string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.refused.WithLabelValues(string(store.ChannelSMTP), reason).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func TestSMTPRequiresTLSBeforeAuth(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.dial(t)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS is not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH is offered before TLS")
	}
	if ok, size := c.Extension("SIZE"); !ok || size != "10485760" {
		t.Errorf("SIZE %q, want the 10 MiB default", size)
	}
	// go-smtp refuses AUTH before TLS itself with 523 5.7.10 "TLS is required" (RFC 5248's
	// Encryption Needed); the credentials are never checked.
	_, _, err := smtpCmd(c, 235, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+h.f.Sender.SMTPUsername+"\x00PHI-wrong")))
	wantReply(t, err, 523, "5.7.10", "TLS is required")
	err = c.Mail("desk@clinic.example")
	wantReply(t, err, 530, "5.7.0", "Authentication required", "STARTTLS")

	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH %q after TLS, want PLAIN LOGIN", mechs)
	}
	err = c.Mail("desk@clinic.example")
	wantReply(t, err, 530, "5.7.0", "AUTH PLAIN or LOGIN")
	if got := smtpRefusals(t, h.metrics, ReasonUnauthenticated); got != 2 {
		t.Errorf("%v unauthenticated refusals counted, want 2", got)
	}
	h.wantStored(t, 0)
	h.wantLog(t, `"reply":"530 5.7.0"`, `"reason":"unauthenticated"`)
}

func TestSMTPAuthPlainAndLogin(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	user, pass := h.f.Sender.SMTPUsername, h.f.SMTPPassword
	for i, auth := range []netsmtp.Auth{
		h.plainAuth(),
		smtpLoginAuth{user: user, pass: pass},
		smtpLoginAuth{user: user, pass: pass, initial: true},
	} {
		c := h.login(t, auth)
		number := fmt.Sprintf("20255501%02d", 50+i)
		ids := mustSend(t, c, []string{rcpt(number)}, plainMail("", "PHI-subject Lab results", "PHI-body Your A1C is 5.4."))
		if len(ids) != 1 {
			t.Fatalf("ids %q", ids)
		}
		m := h.open(t, ids[0])
		if m.Sender != "ehr" || m.Channel != store.ChannelSMTP || m.Status != store.StatusAccepted || m.Phone != "+1"+number {
			t.Errorf("stored %+v to %s", m.Message, m.Phone)
		}
		if m.Content.Subject != "PHI-subject Lab results" || m.Content.Text != "PHI-body Your A1C is 5.4." {
			t.Errorf("content %+v", m.Content)
		}
		if err := c.Quit(); err != nil {
			t.Error(err)
		}
	}
	h.wantStored(t, 3)
	h.wantLog(t, `"msg":"smtp login"`, `"sender":"ehr"`)
	h.wantLog(t, `"msg":"smtp message stored"`, `"message_id":"`)
}

func TestSMTPBadCredentials(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	badPlain := base64.StdEncoding.EncodeToString([]byte("\x00" + h.f.Sender.SMTPUsername + "\x00PHI-wrong-password"))

	// One failure does not lock anyone out: the right password works next.
	c := h.dial(t)
	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatal(err)
	}
	_, _, err := smtpCmd(c, 235, "AUTH PLAIN %s", badPlain)
	wantReply(t, err, 535, "5.7.8", "Authentication credentials invalid")
	if err := c.Auth(h.plainAuth()); err != nil {
		t.Fatalf("AUTH after one failure: %v", err)
	}

	// Three failures on one connection close it, after the third reply.
	c = h.dial(t)
	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		code, msg, err := smtpCmd(c, 235, "AUTH PLAIN %s", badPlain)
		wantReply(t, err, 535, "5.7.8")
		if closing := strings.Contains(msg, "closing the connection"); closing != (i == 3) {
			t.Errorf("failure %d: %d %s", i, code, msg)
		}
	}
	if _, _, err := smtpCmd(c, 250, "NOOP"); err == nil {
		t.Fatal("the connection is still open after three failed logins")
	}
	// LOGIN fails the same way.
	c = h.dial(t)
	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatal(err)
	}
	wantReply(t, c.Auth(smtpLoginAuth{user: "nobody@clinic.example", pass: "PHI-wrong"}), 535, "5.7.8")
	if got := smtpRefusals(t, h.metrics, ReasonUnauthenticated); got != 5 {
		t.Errorf("%v failed logins counted, want 5", got)
	}
	h.wantLog(t, `"msg":"smtp login refused"`, `"reply":"535 5.7.8"`, `"failures":3`)
}

func TestSMTPRecipients(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	if _, err := h.f.Store.SetOptOut(context.Background(), "+12025550144", true); err != nil {
		t.Fatal(err)
	}
	c := h.login(t, nil)
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, to string
		code     int
		enhanced string
		says     []string
	}{
		{"wrong domain", "2025550143@clinic.example", 550, "5.1.1", []string{"accepts only", "@" + smtpTestDomain}},
		{"no domain (go-smtp's syntax check)", "2025550143", 501, "5.5.2", nil},
		{"service code", rcpt("2114367789"), 553, "5.1.3", []string{"2114367789 is not a valid NANP (+1) number: 211 is a service code, not an area code"}},
		{"extension", rcpt("2025550143x12"), 553, "5.1.3", []string{"2025550143x12 ends with an extension, and an extension cannot receive texts"}},
		{"country not allowed", rcpt("011442079460958"), 550, "5.7.1", []string{"011442079460958 is a number in GB, and this service texts only numbers in the countries of the North American Numbering Plan (+1)"}},
		{"plus", rcpt("+12025550143"), 553, "5.1.3", []string{`contains "+"`, "sub-address"}},
		{"digit count", rcpt("20255501"), 553, "5.1.3", []string{"has 8 digits"}},
		{"letters", rcpt("dr.smith"), 553, "5.1.3", []string{"contains letters"}},
		{"opted out", rcpt("202-555-0144"), 550, "5.7.1", []string{"recipient has opted out of text messages (replied STOP)"}},
		{"accepted, domain in another case, with separators", "202.555.0145@TEXT.Clinic.Example", 250, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Rcpt(tt.to)
			if tt.code == 250 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantReply(t, err, tt.code, tt.enhanced, tt.says...)
		})
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	for reason, want := range map[string]float64{ReasonWrongDomain: 1, ReasonInvalidRecipient: 6, ReasonOptedOut: 1} {
		if got := smtpRefusals(t, h.metrics, reason); got != want {
			t.Errorf("%s refusals: %v, want %v", reason, got, want)
		}
	}
	h.wantStored(t, 0)
	h.wantLog(t, `"reply":"553 5.1.3"`, `"reason":"invalid-recipient"`, `"phone_code":"area_code_service"`)
	h.wantLog(t, `"reply":"550 5.7.1"`, `"reason":"opted-out"`)
	h.wantLog(t, `"reply":"553 5.1.3"`, `"phone_code":"extension"`)
	h.wantLog(t, `"reply":"550 5.7.1"`, `"reason":"invalid-recipient"`, `"phone_code":"country"`)
}

// TestSMTPAllowedCountries: a tenant that texts only US numbers refuses a Canadian one, naming
// the countries it texts; Canada added, the same number is accepted.
func TestSMTPAllowedCountries(t *testing.T) {
	for _, tt := range []struct {
		allowed []string
		wantErr bool
	}{{[]string{"US"}, true}, {[]string{"US", "CA"}, false}} {
		h := newSMTPHarness(t, sqliteBackend, func(c *SMTPConfig) { c.AllowedCountries = tt.allowed })
		c := h.login(t, nil)
		if err := c.Mail("desk@clinic.example"); err != nil {
			t.Fatal(err)
		}
		err := c.Rcpt(rcpt("514-555-0143"))
		if !tt.wantErr {
			if err != nil {
				t.Errorf("allowed %q: %v", tt.allowed, err)
			}
			continue
		}
		wantReply(t, err, 550, "5.7.1", "514-555-0143 is a number in CA, and this service texts only numbers in US: write a number there, or ask your administrator to allow that country")
	}
}

func TestSMTPMultipleRecipients(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	to := []string{rcpt("2025550143"), rcpt("202-555-0146"), rcpt("12025550143"), rcpt("2025550147")}
	ids := mustSend(t, c, to, plainMail("multi@clinic.example", "PHI-subject Reminder", "PHI-body Your visit is at 9."))
	if len(ids) != 3 {
		t.Fatalf("reply names %d messages, want 3 (one per distinct recipient)", len(ids))
	}
	stored := h.storedAll(t)
	if len(stored) != 3 {
		t.Fatalf("%d messages stored, want 3", len(stored))
	}
	var phones []string
	for i, m := range stored {
		phones = append(phones, m.Phone)
		if m.ID != ids[i] || m.Content.Text != "PHI-body Your visit is at 9." {
			t.Errorf("message %d: %s %+v", i, m.ID, m.Content)
		}
		if i > 0 && m.LinkTokenHash == stored[0].LinkTokenHash {
			t.Error("two recipients share a link")
		}
	}
	if want := []string{"+12025550143", "+12025550146", "+12025550147"}; !slices.Equal(phones, want) {
		t.Errorf("recipients %v, want %v", phones, want)
	}
}

func TestSMTPTooManyRecipients(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, func(c *SMTPConfig) { c.MaxRecipients = 2 })
	c := h.login(t, nil)
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"2025550143", "2025550146", "2025550143"} {
		if err := c.Rcpt(rcpt(to)); err != nil {
			t.Fatalf("RCPT %s: %v", to, err)
		}
	}
	wantReply(t, c.Rcpt(rcpt("2025550147")), 452, "4.5.3", "at most 2")
	if _, err := smtpData(c, plainMail("", "PHI-subject", "PHI-body")); err != nil {
		t.Fatal(err)
	}
	h.wantStored(t, 2)
}

func TestSMTPOversize(t *testing.T) {
	const limit = 32 << 10
	h := newSMTPHarness(t, postgresBackend, func(c *SMTPConfig) { c.MaxMessageBytes = limit })
	c := h.login(t, nil)
	if ok, size := c.Extension("SIZE"); !ok || size != "32768" {
		t.Errorf("SIZE %q, want 32768", size)
	}
	_, _, err := smtpCmd(c, 250, "MAIL FROM:<desk@clinic.example> SIZE=%d", limit+1)
	wantReply(t, err, 552, "5.3.4")

	body := strings.Repeat(strings.Repeat("PHI-x", 15)+"\r\n", limit/75+10)
	_, err = smtpSend(c, []string{rcpt("2025550143")}, plainMail("big@clinic.example", "PHI-subject", body))
	wantReply(t, err, 552, "5.3.4", "Message too large: the limit is 32 KiB")
	h.wantStored(t, 0)
	if got := smtpRefusals(t, h.metrics, ReasonTooLarge); got != 1 {
		t.Errorf("%v too-large refusals, want 1", got)
	}
	// The rest of the message was read and dropped: the session goes on.
	mustSend(t, c, []string{rcpt("2025550143")}, plainMail("small@clinic.example", "PHI-subject", "PHI-body"))
	h.wantStored(t, 1)
	h.wantLog(t, `"reply":"552 5.3.4"`, `"reason":"too-large"`)
}

func TestSMTPHTMLOnlyStoredAsText(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	msg := "Subject: =?UTF-8?Q?PHI_R=C3=A9sultats?=\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"<html><head><style>p{color:red}</style><script>steal()</script></head><body>\r\n" +
		"<p>Dear patient,</p><p>Your <b>results</b> are <a href=3D\"https://portal.clinic.example/r\">ready</a>=\r\n" +
		".<br>Fasting &amp; fed:</p><ul><li>Glucose 95</li><li>A1C 5.4</li></ul>\r\n" +
		"<img src=3D\"https://tracker.example/p.gif\" onerror=3D\"alert(1)\"></body></html>\r\n"
	ids := mustSend(t, c, []string{rcpt("2025550143")}, msg)
	got := h.open(t, ids[0]).Content
	want := "Dear patient,\n\nYour results are ready (https://portal.clinic.example/r).\nFasting & fed:\n\n- Glucose 95\n- A1C 5.4"
	if got.Subject != "PHI Résultats" || got.Text != want {
		t.Errorf("stored subject %q text %q, want %q", got.Subject, got.Text, want)
	}
	if strings.ContainsAny(got.Text, "<>") || len(got.Attachments) != 0 {
		t.Errorf("markup or attachments kept: %+v", got)
	}
}

func TestSMTPAttachmentsStored(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	pdf := bytes.Repeat([]byte("%PDF-1.4 \x00\xff binary "), 300)
	b64 := base64.StdEncoding.EncodeToString(pdf)
	var wrapped strings.Builder
	for len(b64) > 76 {
		wrapped.WriteString(b64[:76] + "\r\n")
		b64 = b64[76:]
	}
	wrapped.WriteString(b64 + "\r\n")
	msg := "Subject: PHI files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n" +
		"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPHI-body See the attached report.\r\n" +
		"--=_b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"PHI-report.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + wrapped.String() +
		"--=_b\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n" +
		"--=_b--\r\n"
	ids := mustSend(t, c, []string{rcpt("2025550143")}, msg)
	got := h.open(t, ids[0]).Content
	if got.Text != "PHI-body See the attached report." || len(got.Attachments) != 2 {
		t.Fatalf("stored %q with %d attachments", got.Text, len(got.Attachments))
	}
	if a := got.Attachments[0]; a.Name != "PHI-report.pdf" || a.ContentType != "application/pdf" || !bytes.Equal(a.Data, pdf) {
		t.Errorf("attachment 0: %q %q, %d bytes (want %d)", a.Name, a.ContentType, len(a.Data), len(pdf))
	}
	if a := got.Attachments[1]; a.Name != "" || a.ContentType != "image/png" || string(a.Data) != "\x89PNG\r\n" {
		t.Errorf("attachment 1: %q %q %q", a.Name, a.ContentType, a.Data)
	}
}

func TestSMTPMalformedMessage(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	broken := "Subject: PHI\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nPHI-body cut off\r\n"
	_, err := smtpSend(c, []string{rcpt("2025550143")}, broken)
	wantReply(t, err, 554, "5.6.0", "malformed message", "closing boundary")
	_, err = smtpSend(c, []string{rcpt("2025550143")}, "Subject: PHI-subject only\r\n\r\n")
	wantReply(t, err, 554, "5.6.0", "no text and no attachments")
	h.wantStored(t, 0)
	if got := smtpRefusals(t, h.metrics, ReasonInvalid); got != 2 {
		t.Errorf("%v invalid refusals, want 2", got)
	}
}

func TestSMTPDuplicateSubmission(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	msg := plainMail("retry.1@clinic.example", "PHI-subject", "PHI-body first")
	to := []string{rcpt("2025550143"), rcpt("2025550146")}
	first := mustSend(t, h.login(t, nil), to, msg)
	// The sender's MTA did not see the 250 and retries on a new connection.
	again := mustSend(t, h.login(t, nil), to, msg)
	if !slices.Equal(first, again) {
		t.Errorf("retry stored %v, first %v", again, first)
	}
	h.wantStored(t, 2)
	h.wantLog(t, `"msg":"smtp message stored"`, `"replayed":true`)

	// The same Message-ID for other bytes is refused, not replayed.
	c := h.login(t, nil)
	_, err := smtpSend(c, to[:1], plainMail("retry.1@clinic.example", "PHI-subject", "PHI-body changed"))
	wantReply(t, err, 554, "5.7.1", "Message-ID was already used")
	h.wantStored(t, 2)

	// Without a Message-ID there is no idempotency key: the same bytes are a new message.
	noID := plainMail("", "PHI-subject", "PHI-body no id")
	mustSend(t, c, to[:1], noID)
	mustSend(t, c, to[:1], noID)
	h.wantStored(t, 4)
}

func TestSMTPOptOutBetweenRcptAndData(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	ctx := context.Background()
	c := h.login(t, nil)

	// One of two recipients opts out after RCPT: the other is stored and the reply is 250.
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"2025550143", "2025550148"} {
		if err := c.Rcpt(rcpt(to)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.f.Store.SetOptOut(ctx, "+12025550148", true); err != nil {
		t.Fatal(err)
	}
	reply, err := smtpData(c, plainMail("", "PHI-subject", "PHI-body"))
	if err != nil || !strings.Contains(reply, "1 recipient(s) refused (opted-out)") {
		t.Fatalf("reply %q, %v", reply, err)
	}
	stored := h.storedAll(t)
	if len(stored) != 1 || stored[0].Phone != "+12025550143" {
		t.Fatalf("stored %v", stored)
	}

	// The only recipient opts out after RCPT: 550 5.7.1.
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt("2025550149")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.f.Store.SetOptOut(ctx, "+12025550149", true); err != nil {
		t.Fatal(err)
	}
	_, err = smtpData(c, plainMail("", "PHI-subject", "PHI-body"))
	wantReply(t, err, 550, "5.7.1", "opted out")
	h.wantStored(t, 1)
}

func TestSMTPKeystoreOutage(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	msg := plainMail("ks@clinic.example", "PHI-subject", "PHI-body")

	h.f.KeystoreDown()
	_, err := smtpSend(c, []string{rcpt("2025550143")}, msg)
	wantReply(t, err, 451, "4.3.0", "try again later")
	h.wantStored(t, 0)
	h.wantLog(t, `"reply":"451 4.3.0"`, `"reason":"unavailable"`)

	h.f.KeystoreUp()
	mustSend(t, c, []string{rcpt("2025550143")}, msg)
	h.wantStored(t, 1)
}

func TestSMTPDatabaseOutage(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	c := h.login(t, nil)
	msg := plainMail("db@clinic.example", "PHI-subject", "PHI-body")

	// Down at RCPT: the opt-out check cannot run.
	restore := h.f.DatabaseDown()
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	wantReply(t, c.Rcpt(rcpt("2025550143")), 451, "4.3.0", "try again later")
	restore()
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}

	// Down between RCPT and DATA: nothing can be stored.
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt("2025550143")); err != nil {
		t.Fatal(err)
	}
	restore = h.f.DatabaseDown()
	_, err := smtpData(c, msg)
	wantReply(t, err, 451, "4.3.0", "try again later")
	restore()
	h.wantStored(t, 0)

	mustSend(t, c, []string{rcpt("2025550143")}, msg)
	h.wantStored(t, 1)
}

func TestSMTPTrustedNetwork(t *testing.T) {
	trusted := newSMTPHarness(t, postgresBackend, func(c *SMTPConfig) {
		c.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Sender: "relay"}}
	})
	c := trusted.dial(t) // no STARTTLS, no AUTH: as Postfix's smtp-source would
	ids := mustSend(t, c, []string{rcpt("2025550143")}, plainMail("", "PHI-subject", "PHI-body"))
	if m := trusted.open(t, ids[0]); m.Sender != "relay" || m.Content.Text != "PHI-body" {
		t.Errorf("stored %+v %+v", m.Message, m.Content)
	}
	// Authenticating from a trusted network submits as the authenticated sender.
	ids = mustSend(t, trusted.login(t, nil), []string{rcpt("2025550143")}, plainMail("", "PHI-subject", "PHI-body"))
	if m := trusted.open(t, ids[0]); m.Sender != "ehr" {
		t.Errorf("authenticated submission stored as %q", m.Sender)
	}

	other := newSMTPHarness(t, postgresBackend, func(c *SMTPConfig) {
		c.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sender: "relay"}}
	})
	err := other.dial(t).Mail("desk@clinic.example")
	wantReply(t, err, 530, "5.7.0")
	other.wantStored(t, 0)
}

func TestSMTPConnectionLimits(t *testing.T) {
	tests := []struct {
		name           string
		perIP, total   int
		viaImplicitTLS bool
	}{
		{name: "per address", perIP: 2, total: 200},
		{name: "in total", perIP: 20, total: 2},
		{name: "implicit TLS listener", perIP: 2, total: 200, viaImplicitTLS: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newSMTPHarness(t, postgresBackend, func(c *SMTPConfig) {
				c.MaxConnectionsPerIP, c.MaxConnections = tt.perIP, tt.total
			})
			// dial returns the client and its TCP connection (under TLS, for implicit TLS).
			dial := func() (*netsmtp.Client, net.Conn, error) {
				addr := h.addr
				if tt.viaImplicitTLS {
					addr = h.tlsAddr
				}
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					return nil, nil, err
				}
				conn := raw
				if tt.viaImplicitTLS {
					conn = tls.Client(raw, h.clientTLS)
				}
				c, err := netsmtp.NewClient(conn, "127.0.0.1")
				if err != nil {
					_ = raw.Close()
					return nil, nil, err
				}
				t.Cleanup(func() { _ = c.Close() })
				return c, raw, nil
			}
			var open []*netsmtp.Client
			var openRaw []net.Conn
			for range 2 {
				c, raw, err := dial()
				if err != nil {
					t.Fatalf("connection within the limit: %v", err)
				}
				open, openRaw = append(open, c), append(openRaw, raw)
			}
			_, _, err := dial()
			wantReply(t, err, 421, "4.7.0", "Too many connections, try again later")
			if got := smtpRefusals(t, h.metrics, ReasonRateLimited); got != 1 {
				t.Errorf("%v refused connections counted, want 1", got)
			}

			// A connection that ends frees its slot: the server releases it before it closes the
			// TCP connection, so once the client reads the end of that, a new one is admitted.
			if _, _, err := smtpCmd(open[0], 221, "QUIT"); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, openRaw[0]); err != nil {
				t.Fatalf("after QUIT: %v", err)
			}
			if _, _, err := dial(); err != nil {
				t.Fatalf("after a connection ended: %v", err)
			}
			h.wantLog(t, `"msg":"smtp connection refused"`, `"reply":"421 4.7.0"`)
		})
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	conn, err := tls.Dial("tcp", h.tlsAddr, h.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	c, err := netsmtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("ehr.clinic.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered inside TLS")
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH %q, want PLAIN LOGIN at once", mechs)
	}
	if err := c.Auth(h.plainAuth()); err != nil {
		t.Fatal(err)
	}
	ids := mustSend(t, c, []string{rcpt("2025550143")}, plainMail("", "PHI-subject", "PHI-body over 465"))
	if got := h.open(t, ids[0]).Content.Text; got != "PHI-body over 465" {
		t.Errorf("stored %q", got)
	}
}

func TestSMTPSQLite(t *testing.T) {
	h := newSMTPHarness(t, sqliteBackend, nil)
	c := h.login(t, smtpLoginAuth{user: h.f.Sender.SMTPUsername, pass: h.f.SMTPPassword})
	msg := "Subject: PHI lite\r\nMessage-ID: <lite@clinic.example>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nPHI-body on SQLite\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=PHI.pdf\r\n\r\n%PDF\r\n--b--\r\n"
	to := []string{rcpt("2025550143"), rcpt("2025550146")}
	first := mustSend(t, c, to, msg)
	if again := mustSend(t, c, to, msg); !slices.Equal(first, again) {
		t.Errorf("retry stored %v, first %v", again, first)
	}
	stored := h.storedAll(t)
	if len(stored) != 2 {
		t.Fatalf("%d stored, want 2", len(stored))
	}
	for _, m := range stored {
		if m.Content.Text != "PHI-body on SQLite" || len(m.Content.Attachments) != 1 || string(m.Content.Attachments[0].Data) != "%PDF" {
			t.Errorf("stored %+v", m.Content)
		}
	}
}

func TestSMTPShutdown(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	idle := h.login(t, nil)
	busy := h.login(t, nil)
	if err := busy.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	if err := busy.Rcpt(rcpt("2025550143")); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(context.Background()) }()
	// The idle connection is closed at once.
	if _, err := idle.Text.ReadLine(); err == nil {
		t.Fatal("idle connection still open during shutdown")
	}
	// The transaction in progress finishes, then its connection closes.
	if _, err := smtpData(busy, plainMail("", "PHI-subject", "PHI-body")); err != nil {
		t.Fatalf("DATA during shutdown: %v", err)
	}
	if _, err := busy.Text.ReadLine(); err == nil {
		t.Fatal("connection still open after its transaction during shutdown")
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	h.wantStored(t, 1)
	if c, err := netsmtp.Dial(h.addr); err == nil {
		_ = c.Close()
		t.Fatal("new connection accepted after shutdown")
	}
}

func TestSMTPLogsHoldNoPHI(t *testing.T) {
	h := newSMTPHarness(t, postgresBackend, nil)
	if _, err := h.f.Store.SetOptOut(context.Background(), "+12025550144", true); err != nil {
		t.Fatal(err)
	}
	c := h.dial(t)
	if err := c.StartTLS(h.clientTLS); err != nil {
		t.Fatal(err)
	}
	_, _, err := smtpCmd(c, 235, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00PHI-user\x00PHI-password")))
	wantReply(t, err, 535, "5.7.8")
	if err := c.Auth(h.plainAuth()); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("desk@clinic.example"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{rcpt("2114367789"), rcpt("2025550144"), "2025550143@PHI.example"} {
		if err := c.Rcpt(bad); err == nil {
			t.Fatalf("RCPT %s accepted", bad)
		}
	}
	if err := c.Rcpt(rcpt("2025550143")); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: PHI-subject diabetes\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nPHI-body\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=PHI-file.pdf\r\n\r\n%PDF\r\n--b--\r\n"
	if _, err := smtpData(c, msg); err != nil {
		t.Fatal(err)
	}
	// The records are there, with ids and codes; the cleanup checks they hold no PHI.
	h.wantLog(t, `"msg":"smtp login refused"`)
	h.wantLog(t, `"msg":"smtp rcpt refused"`, `"reason":"wrong-domain"`)
	h.wantLog(t, `"msg":"smtp message stored"`, `"message_id"`, `"sender":"ehr"`)
	h.checkNoPHI(t)
	if !strings.Contains(h.logs.String(), `"smtp_conn"`) {
		t.Error("records do not name their connection")
	}
}

func TestNewSMTPServerRefusesBadConfig(t *testing.T) {
	f := newFixture(t, sqliteBackend)
	tlsConfig := &tls.Config{}
	ok := func() SMTPConfig { return SMTPConfig{Domain: smtpTestDomain, TLSConfig: tlsConfig} }
	tests := []struct {
		name   string
		change func(*SMTPConfig)
		want   string
	}{
		{"no domain", func(c *SMTPConfig) { c.Domain = "" }, "Domain"},
		{"address as domain", func(c *SMTPConfig) { c.Domain = "x@" + smtpTestDomain }, "Domain"},
		{"unknown region", func(c *SMTPConfig) { c.Region = "XX" }, "Region"},
		{"unknown allowed country", func(c *SMTPConfig) { c.AllowedCountries = []string{"US", "USA"} }, `AllowedCountries: allowed country "USA"`},
		{"negative AUTH budget", func(c *SMTPConfig) { c.AuthFailuresPerAddress = -1 }, "negative"},
		{"no TLS", func(c *SMTPConfig) { c.TLSConfig = nil }, "TLSConfig"},
		{"negative limit", func(c *SMTPConfig) { c.MaxRecipients = -1 }, "negative"},
		{"trust everyone", func(c *SMTPConfig) {
			c.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Sender: "relay"}}
		}, "every address"},
		{"trusted without sender", func(c *SMTPConfig) {
			c.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}}
		}, "Sender"},
		{"trusted without prefix", func(c *SMTPConfig) { c.TrustedNetworks = []TrustedNetwork{{Sender: "relay"}} }, "prefix"},
		{"trusted unknown sender", func(c *SMTPConfig) {
			c.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sender: "nobody"}}
		}, "not in the senders file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok()
			tt.change(&cfg)
			if _, err := NewSMTPServer(cfg, f.Intake, f.Senders); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one about %s", err, tt.want)
			}
		})
	}
	if _, err := NewSMTPServer(ok(), nil, f.Senders); err == nil {
		t.Error("no intake accepted")
	}
	// Without TLS, a trusted network alone is a working configuration.
	cfg := ok()
	cfg.TLSConfig = nil
	cfg.TrustedNetworks = []TrustedNetwork{{Prefix: netip.MustParsePrefix("10.1.2.3/32"), Sender: "relay"}}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := NewSMTPServer(cfg, f.Intake, f.Senders); err != nil {
		t.Errorf("trusted network without TLS: %v", err)
	}
}

// BenchmarkSMTPSubmit measures end-to-end submissions: 32 clients, each on one STARTTLS +
// AUTH session that it reuses, each message to one recipient with its own Message-ID, on
// PostgreSQL with the keystore over mTLS.
func BenchmarkSMTPSubmit(b *testing.B) {
	gctune.Tune() // as the gateway's command does
	const clients = 32
	h := newSMTPHarness(b, postgresBackend, func(c *SMTPConfig) {
		c.MaxConnectionsPerIP = clients
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	sessions := make([]*netsmtp.Client, clients)
	for i := range sessions {
		sessions[i] = h.login(b, nil)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	b.ResetTimer()
	start := time.Now()
	for i, c := range sessions {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				to := rcpt(fmt.Sprintf("20255501%02d", n%100))
				msg := plainMail(fmt.Sprintf("bench.%d.%d@clinic.example", i, n), "PHI-subject Reminder", "PHI-body Your visit is tomorrow at 9.")
				if _, err := smtpSend(c, []string{to}, msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
