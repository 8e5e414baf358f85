package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// scriptedProvider stands in for an SMS provider's API, which cannot run here: it records
// what it was asked to send and answers with scripted errors.
type scriptedProvider struct {
	mu     sync.Mutex
	sent   []sms.Message
	errs   []error // answers to the next sends, in order; nil entries succeed
	found  map[string]string
	finds  int
	nextID int
}

func (p *scriptedProvider) Send(_ context.Context, m sms.Message) (sms.Sent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) > 0 {
		err := p.errs[0]
		p.errs = p.errs[1:]
		if err != nil {
			return sms.Sent{}, err
		}
	}
	p.sent = append(p.sent, m)
	p.nextID++
	return sms.Sent{ProviderID: fmt.Sprintf("SM%032d", p.nextID)}, nil
}

func (p *scriptedProvider) messages() []sms.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sms.Message(nil), p.sent...)
}

// findingProvider also implements sms.Finder.
type findingProvider struct{ *scriptedProvider }

func (p findingProvider) Find(_ context.Context, m sms.Message, _ time.Time) (sms.Sent, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finds++
	id, ok := p.found[m.Body]
	return sms.Sent{ProviderID: id}, ok, nil
}

type notifierFixture struct {
	*fixture
	provider *scriptedProvider
	notifier *Notifier
	now      time.Time
}

func newNotifierFixture(t *testing.T, b backend, configure func(*NotifierConfig)) *notifierFixture {
	// The fixture's clock drives the whole path: the intake's accept, the outbox row's due
	// time, the claim and its lease, and quiet hours. Tests move it by hand.
	f := &notifierFixture{provider: &scriptedProvider{}, now: time.Now()}
	f.fixture = newFixtureWithClock(t, b, func() time.Time { return f.now })
	cfg := NotifierConfig{
		Tenant: testTenant, TenantName: "Riverside Clinic", ViewerURL: "https://view.clinic.example",
		Store: f.Store, Keys: f.Keys, Provider: f.provider, ProviderName: "test",
		Rate: 1000, MaxAttempts: 3, Now: func() time.Time { return f.now },
		randFloat: func() float64 { return 0.5 },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if configure != nil {
		configure(&cfg)
	}
	var err error
	if f.notifier, err = NewNotifier(cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *notifierFixture) accept(t *testing.T, to string) string {
	t.Helper()
	acc, err := f.Intake.Accept(context.Background(), submission(to))
	if err != nil {
		t.Fatal(err)
	}
	return acc.MessageID
}

func (f *notifierFixture) drain(t *testing.T) int {
	t.Helper()
	n, err := f.notifier.Drain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *notifierFixture) status(t *testing.T, id string) store.Message {
	t.Helper()
	m, err := f.Store.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func kinds(t *testing.T, s *store.Store, id string) []audit.Kind {
	t.Helper()
	events, err := s.MessageEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Kind
	for _, e := range events {
		out = append(out, e.Kind)
	}
	return out
}

func TestNotifierSendsLink(t *testing.T) {
	for _, b := range []backend{postgresBackend, sqliteBackend} {
		t.Run(string(b), func(t *testing.T) {
			f := newNotifierFixture(t, b, nil)
			id := f.accept(t, "+12025550143")
			if n := f.drain(t); n != 1 {
				t.Fatalf("drained %d, want 1", n)
			}
			sent := f.provider.messages()
			if len(sent) != 1 || sent[0].To != "+12025550143" || sent[0].Reference != id {
				t.Fatalf("sent %+v", sent)
			}
			body := sent[0].Body
			if strings.Contains(body, "Lab results") || strings.Contains(body, "A1C") {
				t.Fatalf("SMS %q holds the message's subject or body", body)
			}
			if !strings.HasPrefix(body, "Riverside Clinic") || !strings.Contains(body, "Reply STOP to opt out") {
				t.Fatalf("SMS %q lacks the tenant name or the opt-out", body)
			}
			if n, ok := sms.GSM7Septets(body); !ok || n > 160 {
				t.Fatalf("SMS %q is %d septets (GSM-7 %v), want one segment", body, n, ok)
			}
			_, after, _ := strings.Cut(body, "https://view.clinic.example/m/")
			link, _, _ := strings.Cut(after, " ")
			m := f.status(t, id)
			if token.Hash(link) != m.LinkTokenHash {
				t.Fatalf("link token %q in the SMS does not match the stored hash", link)
			}
			if m.Status != store.StatusNotified || m.ProviderMessageID != "SM"+strings.Repeat("0", 31)+"1" {
				t.Fatalf("message after send: %+v", m)
			}
			if k := kinds(t, f.Store, id); len(k) != 2 || k[1] != audit.KindNotified {
				t.Fatalf("audit %v, want accepted, notified", k)
			}
			if n := f.drain(t); n != 0 || len(f.provider.messages()) != 1 {
				t.Fatalf("second drain claimed %d and sent again", n)
			}
		})
	}
}

func TestNotifierRetriesThenFails(t *testing.T) {
	f := newNotifierFixture(t, sqliteBackend, nil)
	temp := &sms.SendError{Provider: "test", Code: "test:http-503", Temporary: true, Detail: "down"}
	f.provider.errs = []error{temp, temp, temp}
	id := f.accept(t, "+12025550143")
	for attempt := 1; attempt <= 3; attempt++ {
		if n := f.drain(t); n != 1 {
			t.Fatalf("attempt %d: drained %d", attempt, n)
		}
		if n := f.drain(t); n != 0 {
			t.Fatalf("attempt %d: a retry was due at once", attempt)
		}
		// Backoff 10 s · 2^(attempt-1), jitter fixed at half: 7.5 s, 15 s, 30 s.
		f.now = f.now.Add(10 * time.Second << (attempt - 1))
	}
	if len(f.provider.messages()) != 0 {
		t.Fatal("sent despite errors")
	}
	if m := f.status(t, id); m.Status != store.StatusFailed {
		t.Fatalf("after %d temporary failures: %s, want failed", 3, m.Status)
	}
	if k := kinds(t, f.Store, id); k[len(k)-1] != audit.KindFailed {
		t.Fatalf("audit %v, want failed last", k)
	}
}

func TestNotifierPermanentAndOptedOut(t *testing.T) {
	f := newNotifierFixture(t, postgresBackend, nil)
	f.provider.errs = []error{
		&sms.SendError{Provider: "test", Code: "test:21211", Detail: "invalid To"},
		&sms.SendError{Provider: "test", Code: "test:21610", OptedOut: true, Detail: "opted out"},
	}
	bad := f.accept(t, "+12025550143")
	f.drain(t)
	stopped := f.accept(t, "+12025550144")
	f.drain(t)
	if m := f.status(t, bad); m.Status != store.StatusFailed {
		t.Errorf("permanent error: %s", m.Status)
	}
	if m := f.status(t, stopped); m.Status != store.StatusFailed {
		t.Errorf("opted out at the provider: %s", m.Status)
	}
	rc, err := f.Store.RecipientByPhone(context.Background(), "+12025550144")
	if err != nil || !rc.OptedOut {
		t.Fatalf("provider's opt-out not recorded: %+v, %v", rc, err)
	}
	if _, err := f.Intake.Accept(context.Background(), submission("+12025550144")); Reason(err) != ReasonOptedOut {
		t.Fatalf("accept after provider opt-out: %v", err)
	}
}

func TestNotifierSkipsOptedOutAndRevoked(t *testing.T) {
	f := newNotifierFixture(t, sqliteBackend, nil)
	ctx := context.Background()
	optedOut := f.accept(t, "+12025550143")
	if _, err := f.Store.SetOptOut(ctx, "+12025550143", true); err != nil {
		t.Fatal(err)
	}
	revoked := f.accept(t, "+12025550145")
	if err := f.Store.Transition(ctx, revoked, store.StatusRevoked, audit.Event{Kind: audit.KindRevoked, Actor: "ehr", MessageID: revoked}); err != nil {
		t.Fatal(err)
	}
	// Revoking cancels the pending notification in the store; the notifier's own check covers
	// a revoke that lands after the claim.
	f.drain(t)
	if len(f.provider.messages()) != 0 {
		t.Fatal("texted an opted-out or revoked message")
	}
	if m := f.status(t, optedOut); m.Status != store.StatusFailed {
		t.Errorf("opted out after accept: %s, want failed", m.Status)
	}
	if m := f.status(t, revoked); m.Status != store.StatusRevoked {
		t.Errorf("revoked: %s", m.Status)
	}
	if n, _, _ := f.Store.OutboxStats(ctx, f.now.Add(24*time.Hour)); n != 0 {
		t.Errorf("outbox still holds %d", n)
	}
}

func TestNotifierSkipsMessageRevokedAfterClaim(t *testing.T) {
	f := newNotifierFixture(t, sqliteBackend, nil)
	ctx := context.Background()
	id := f.accept(t, "+12025550143")
	entries, err := f.Store.ClaimOutbox(ctx, f.now, 10, time.Minute)
	if err != nil || len(entries) != 1 {
		t.Fatal(entries, err)
	}
	e := entries[0]
	e.MessageStatus, e.WrappedKey = store.StatusRevoked, ""
	f.notifier.handle(ctx, e)
	if len(f.provider.messages()) != 0 {
		t.Fatal("texted a revoked message")
	}
	if m := f.status(t, id); m.Status != store.StatusFailed {
		t.Fatalf("status %s, want failed (no SMS went out)", m.Status)
	}
}

func TestNotifierKeystoreDownRetries(t *testing.T) {
	f := newNotifierFixture(t, postgresBackend, nil)
	id := f.accept(t, "+12025550143")
	f.KeystoreDown()
	f.drain(t)
	if len(f.provider.messages()) != 0 || f.status(t, id).Status != store.StatusAccepted {
		t.Fatal("sent or failed while the keystore was down")
	}
	f.KeystoreUp()
	f.now = f.now.Add(time.Minute)
	f.drain(t)
	if len(f.provider.messages()) != 1 || f.status(t, id).Status != store.StatusNotified {
		t.Fatal("not sent after the keystore came back")
	}
}

// TestNotifierUsesHandedLink: a message whose link the intake handed over is texted without
// unwrapping its data key, so even with the keystore down; one stored by another process
// (no handoff) waits for the keystore.
func TestNotifierUsesHandedLink(t *testing.T) {
	f := newNotifierFixture(t, sqliteBackend, nil)
	other := f.accept(t, "+12025550142") // stored before the handoff is wired: another gateway
	f.Intake.Accepted = f.notifier.Handoff
	handed := f.accept(t, "+12025550143")
	f.KeystoreDown()
	f.drain(t)
	sent := f.provider.messages()
	if len(sent) != 1 || sent[0].Reference != handed {
		t.Fatalf("sent %+v, want only the handed-over message %s", sent, handed)
	}
	_, after, _ := strings.Cut(sent[0].Body, "/m/")
	link, _, _ := strings.Cut(after, " ")
	if token.Hash(link) != f.status(t, handed).LinkTokenHash {
		t.Fatalf("handed-over link %q does not match the stored hash", link)
	}
	if st := f.status(t, other).Status; st != store.StatusAccepted {
		t.Fatalf("message without a handoff is %s with the keystore down, want accepted (retry)", st)
	}
	if _, ok := f.notifier.takeLink(handed); ok {
		t.Fatal("the handed-over link is kept after use")
	}
}

func TestNotifierQuietHours(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseQuietHours("21:00-08:00", "America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		want time.Duration
	}{
		{time.Date(2026, 11, 23, 22, 0, 0, 0, ny), 10 * time.Hour},
		{time.Date(2026, 11, 23, 7, 30, 0, 0, ny), 30 * time.Minute},
		{time.Date(2026, 11, 23, 12, 0, 0, 0, ny), 0},
		{time.Date(2026, 11, 23, 21, 0, 0, 0, ny), 11 * time.Hour},
		{time.Date(2026, 11, 23, 8, 0, 0, 0, ny), 0},
	} {
		if got := q.Until(c.at); got != c.want {
			t.Errorf("Until(%s) = %v, want %v", c.at.Format("15:04"), got, c.want)
		}
	}
	if _, err := ParseQuietHours("9pm-8am", "UTC"); err == nil {
		t.Error("ParseQuietHours accepted 9pm-8am")
	}

	f := newNotifierFixture(t, sqliteBackend, func(c *NotifierConfig) { c.QuietHours = q })
	f.now = time.Date(2026, 11, 23, 23, 0, 0, 0, ny)
	f.accept(t, "+12025550143")
	f.drain(t)
	if len(f.provider.messages()) != 0 {
		t.Fatal("sent during quiet hours")
	}
	f.now = time.Date(2026, 11, 24, 8, 0, 1, 0, ny)
	f.drain(t)
	if len(f.provider.messages()) != 1 {
		t.Fatal("not sent after quiet hours")
	}
}

func TestNotifierFinderPreventsDoubleSend(t *testing.T) {
	p := &scriptedProvider{found: map[string]string{}}
	f := newNotifierFixture(t, sqliteBackend, func(c *NotifierConfig) { c.Provider = findingProvider{p} })
	f.provider = p
	id := f.accept(t, "+12025550143")
	ctx := context.Background()
	// A notifier claims the row, sends, and dies before recording it.
	entries, err := f.Store.ClaimOutbox(ctx, f.now, 10, time.Minute)
	if err != nil || len(entries) != 1 {
		t.Fatal(entries, err)
	}
	key, _ := f.Keys.Unwrap(ctx, entries[0].WrappedKey)
	link, _ := sealed.Message{Tenant: testTenant, ID: id, Key: key}.OpenLink(entries[0].Payload)
	body, _ := sms.Compose("Riverside Clinic", "https://view.clinic.example/m/"+link)
	p.found[body] = "SMalreadysent"

	f.now = f.now.Add(2 * time.Minute) // the lease ran out
	f.drain(t)
	if p.finds != 1 || len(p.messages()) != 0 {
		t.Fatalf("finds %d, sends %d; want a lookup and no resend", p.finds, len(p.messages()))
	}
	if m := f.status(t, id); m.Status != store.StatusNotified || m.ProviderMessageID != "SMalreadysent" {
		t.Fatalf("message %+v, want notified with the found id", m)
	}
}

func TestNotifierRateLimit(t *testing.T) {
	f := newNotifierFixture(t, sqliteBackend, func(c *NotifierConfig) { c.Rate, c.Burst = 0.001, 1 })
	for _, to := range []string{"+12025550143", "+12025550144", "+12025550145"} {
		f.accept(t, to)
	}
	// The limiter refuses at once a wait longer than the context allows.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.notifier.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(f.provider.messages()); n != 1 {
		t.Fatalf("sent %d with a burst of 1 and a rate of one per 1000 s", n)
	}
}

func TestNotifierCallbacks(t *testing.T) {
	f := newNotifierFixture(t, postgresBackend, nil)
	ctx := context.Background()
	delivered := f.accept(t, "+12025550143")
	failed := f.accept(t, "+12025550144")
	f.drain(t)
	ids := map[string]string{}
	for _, m := range []string{delivered, failed} {
		ids[m] = f.status(t, m).ProviderMessageID
	}
	if err := f.notifier.Status(ctx, sms.StatusUpdate{ProviderID: ids[delivered], Status: sms.StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	if err := f.notifier.Status(ctx, sms.StatusUpdate{ProviderID: ids[failed], Status: sms.StatusUndelivered, ErrorCode: "test:30003"}); err != nil {
		t.Fatal(err)
	}
	if err := f.notifier.Status(ctx, sms.StatusUpdate{ProviderID: "SMunknown", Status: sms.StatusDelivered}); err != nil {
		t.Fatalf("unknown provider id: %v", err)
	}
	if s := f.status(t, delivered).Status; s != store.StatusDelivered {
		t.Errorf("delivered report: %s", s)
	}
	if s := f.status(t, failed).Status; s != store.StatusFailed {
		t.Errorf("undelivered report: %s", s)
	}
	// Callbacks come at least once: a repeat changes nothing and is no error.
	if err := f.notifier.Status(ctx, sms.StatusUpdate{ProviderID: ids[delivered], Status: sms.StatusDelivered}); err != nil {
		t.Fatalf("repeated report: %v", err)
	}

	reply, err := f.notifier.Inbound(ctx, sms.Inbound{From: "+12025550143", Keyword: sms.KeywordStop})
	if err != nil || !strings.Contains(reply, "START") {
		t.Fatalf("STOP: %q, %v", reply, err)
	}
	if _, err := f.Intake.Accept(ctx, submission("+12025550143")); Reason(err) != ReasonOptedOut {
		t.Fatalf("accept after STOP: %v", err)
	}
	if _, err := f.notifier.Inbound(ctx, sms.Inbound{From: "+12025550143", Keyword: sms.KeywordStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Intake.Accept(ctx, submission("+12025550143")); err != nil {
		t.Fatalf("accept after START: %v", err)
	}
	if reply, _ := f.notifier.Inbound(ctx, sms.Inbound{From: "+12025550143", Keyword: sms.KeywordHelp}); !strings.Contains(reply, "Riverside Clinic") {
		t.Fatalf("HELP reply %q", reply)
	}
	restore := f.DatabaseDown()
	if _, err := f.notifier.Inbound(ctx, sms.Inbound{From: "+12025550143", Keyword: sms.KeywordStop}); err == nil {
		t.Fatal("STOP during a database outage reported success; the provider would not retry")
	}
	restore()
}

func TestNewNotifierRefusesBadConfig(t *testing.T) {
	f := newFixture(t, sqliteBackend)
	base := NotifierConfig{Tenant: testTenant, TenantName: "Clinic", ViewerURL: "https://v.example", Store: f.Store, Keys: f.Keys, Provider: &scriptedProvider{}}
	for name, mod := range map[string]func(*NotifierConfig){
		"plain http":  func(c *NotifierConfig) { c.ViewerURL = "http://v.example" },
		"no provider": func(c *NotifierConfig) { c.Provider = nil },
		"no name":     func(c *NotifierConfig) { c.TenantName = "" },
		"huge viewer": func(c *NotifierConfig) { c.ViewerURL = "https://" + strings.Repeat("v", 150) + ".example" },
		"short lease": func(c *NotifierConfig) { c.Lease = time.Second },
	} {
		c := base
		mod(&c)
		if _, err := NewNotifier(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewNotifier(base); err != nil {
		t.Fatal(err)
	}
	_ = errors.New
}
