package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
)

// KeyUnwrapper opens wrapped data keys: the keystore client.
type KeyUnwrapper interface {
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
}

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	Tenant     string
	TenantName string // shown in every SMS, so the patient knows who wrote
	// ViewerURL is the viewer's public base URL; a link is ViewerURL + "/m/" + token.
	ViewerURL    string
	Store        *store.Store
	Keys         KeyUnwrapper
	Provider     sms.Provider
	ProviderName string // "twilio", "webhook", "console": a metrics label
	// Rate caps SMS sends per second for this tenant (10DLC throughput is limited per
	// campaign); Burst is how many may go at once. Default 10/s, burst 10.
	Rate  rate.Limit
	Burst int
	// QuietHours, if set, holds SMS back during these hours (TCPA: 8am–9pm local time).
	QuietHours *QuietHours
	// MaxAttempts is how many times a temporary failure is retried before the message is
	// marked failed. Default 12 (about a day with the default backoff).
	MaxAttempts int
	// Backoff is the first retry delay, doubled per attempt up to MaxBackoff, with jitter.
	// Defaults 10 s and 2 h.
	Backoff, MaxBackoff time.Duration
	// Workers is how many SMS are in flight at once. Default 8.
	Workers int
	// Poll is how often an idle notifier looks for work. Default 500 ms.
	Poll time.Duration
	// Lease is how long a claimed notification is reserved for this notifier. Default 2 min.
	Lease     time.Duration
	HelpText  string // answer to HELP; a default names the tenant
	Logger    *slog.Logger
	Metrics   *Metrics
	Now       func() time.Time
	randFloat func() float64 // jitter source, for tests
}

// QuietHours is a daily window in which no SMS is sent, e.g. 21:00 to 08:00.
type QuietHours struct {
	Start, End time.Duration // since midnight; Start > End spans midnight
	Location   *time.Location
}

// Until returns how long after t the quiet hours end, or 0 if t is outside them.
func (q *QuietHours) Until(t time.Time) time.Duration {
	if q == nil || q.Start == q.End {
		return 0
	}
	t = t.In(q.Location)
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, q.Location)
	since := t.Sub(midnight)
	inside := since >= q.Start && since < q.End
	if q.Start > q.End {
		inside = since >= q.Start || since < q.End
	}
	if !inside {
		return 0
	}
	end := midnight.Add(q.End)
	if !end.After(t) {
		end = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, q.Location).Add(q.End)
	}
	return end.Sub(t)
}

// ParseQuietHours reads "21:00-08:00" in the named time zone ("" is no quiet hours).
func ParseQuietHours(window, zone string) (*QuietHours, error) {
	if window == "" {
		return nil, nil
	}
	from, to, ok := strings.Cut(window, "-")
	start, err1 := time.Parse("15:04", strings.TrimSpace(from))
	end, err2 := time.Parse("15:04", strings.TrimSpace(to))
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("quiet hours %q: want HH:MM-HH:MM, e.g. 21:00-08:00", window)
	}
	if zone == "" {
		zone = "UTC"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("quiet hours time zone %q: %w", zone, err)
	}
	midnight := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	return &QuietHours{Start: start.Sub(midnight), End: end.Sub(midnight), Location: loc}, nil
}

// Notifier drains the outbox: for each accepted message it texts the patient a link. It also
// receives the provider's delivery callbacks and inbound keywords (it is the sms.Events).
//
// Delivery is at least once: a notification is marked sent only after the provider took it,
// and the provider's id is stored in the same transaction. If that write fails the lease
// runs out and the row is claimed again; a provider that can look up earlier sends
// (sms.Finder, Twilio) is asked first, so the patient is not texted twice.
type Notifier struct {
	cfg     NotifierConfig
	limiter *rate.Limiter
	log     *slog.Logger
	wake    chan struct{}

	linksMu sync.Mutex
	links   map[string]handedLink // message id → link token, from this process's intake
}

// handedLink is a link token that the intake handed over with its message.
type handedLink struct {
	link string
	at   time.Time
}

// maxHandedLinks bounds the tokens kept for Handoff; past it, the notifier unwraps instead.
const maxHandedLinks = 8192

// minLease is the shortest NotifierConfig.Lease: a send and its record must fit in it.
const minLease = 10 * time.Second

// NewNotifier checks cfg and returns a Notifier.
func NewNotifier(cfg NotifierConfig) (*Notifier, error) {
	switch {
	case cfg.Store == nil || cfg.Keys == nil || cfg.Provider == nil:
		return nil, errors.New("notifier: store, keys and provider are required")
	case cfg.Tenant == "" || cfg.TenantName == "":
		return nil, errors.New("notifier: tenant and tenant name are required")
	case !strings.HasPrefix(cfg.ViewerURL, "https://") && !strings.HasPrefix(cfg.ViewerURL, "http://127.0.0.1") &&
		!strings.HasPrefix(cfg.ViewerURL, "http://localhost"):
		return nil, fmt.Errorf("notifier: viewer URL %q must be https:// (plain http only on loopback, for development)", cfg.ViewerURL)
	case cfg.Lease < 0 || (cfg.Lease > 0 && cfg.Lease < minLease):
		return nil, fmt.Errorf("notifier: lease %s is too short: an SMS send must fit in it with room to record it; use at least %s", cfg.Lease, minLease)
	}
	cfg.ViewerURL = strings.TrimRight(cfg.ViewerURL, "/")
	if _, err := sms.Compose(cfg.TenantName, cfg.ViewerURL+"/m/"+strings.Repeat("a", 26)); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(cfg.Rate))
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 12
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 2 * time.Minute
	}
	if cfg.ProviderName == "" {
		cfg.ProviderName = "sms"
	}
	if cfg.HelpText == "" {
		cfg.HelpText = cfg.TenantName + " sends links to secure messages from your care team. Reply STOP to opt out."
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.randFloat == nil {
		cfg.randFloat = rand.Float64
	}
	return &Notifier{
		cfg:     cfg,
		limiter: rate.NewLimiter(cfg.Rate, cfg.Burst),
		log:     cfg.Logger.With("component", "notifier"),
		wake:    make(chan struct{}, 1),
		links:   map[string]handedLink{},
	}, nil
}

// Wake makes a waiting Run look at the outbox now (the intake calls it after an accept).
func (n *Notifier) Wake() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Handoff gives the notifier the link token of a message this process just stored, and
// wakes it. The outbox row holds the token sealed under the message's data key; with the
// token at hand the notifier skips unwrapping that key, one keystore (and Vault) call per
// SMS. A token not used within a lease is dropped: whoever claims the row then unwraps.
func (n *Notifier) Handoff(messageID, link string) {
	now := n.cfg.Now()
	n.linksMu.Lock()
	if len(n.links) >= maxHandedLinks {
		for id, h := range n.links {
			if now.Sub(h.at) > n.cfg.Lease {
				delete(n.links, id)
			}
		}
	}
	if len(n.links) < maxHandedLinks {
		n.links[messageID] = handedLink{link: link, at: now}
	}
	n.linksMu.Unlock()
	n.Wake()
}

// takeLink returns and forgets the link token handed over for messageID.
func (n *Notifier) takeLink(messageID string) (string, bool) {
	n.linksMu.Lock()
	defer n.linksMu.Unlock()
	h, ok := n.links[messageID]
	delete(n.links, messageID)
	return h.link, ok && n.cfg.Now().Sub(h.at) <= n.cfg.Lease
}

// Run drains the outbox until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.wake:
		}
		for {
			got, err := n.Drain(ctx)
			if err != nil && ctx.Err() == nil {
				n.log.Warn("outbox unavailable; will retry", "error", err)
			}
			if err != nil || got == 0 {
				break
			}
		}
		t.Reset(n.cfg.Poll)
	}
}

// Drain claims one batch of due notifications and handles them, returning how many it claimed.
func (n *Notifier) Drain(ctx context.Context) (int, error) {
	entries, err := n.cfg.Store.ClaimOutbox(ctx, n.cfg.Now(), n.cfg.Workers*4, n.cfg.Lease)
	if err != nil {
		return 0, err
	}
	work := make(chan store.OutboxEntry)
	var wg sync.WaitGroup
	for range min(n.cfg.Workers, len(entries)) {
		wg.Go(func() {
			for e := range work {
				n.handle(ctx, e)
			}
		})
	}
	for _, e := range entries {
		work <- e
	}
	close(work)
	wg.Wait()
	return len(entries), nil
}

// handle sends one notification and records the outcome. Every path ends in MarkSent,
// MarkFailed or RetryLater, or else the lease runs out and the row comes back.
func (n *Notifier) handle(ctx context.Context, e store.OutboxEntry) {
	log := n.log.With("message", e.MessageID, "outbox", e.ID, "attempt", e.Attempts)
	switch {
	case e.OptedOut:
		n.fail(ctx, log, e, "opted_out", "opted-out")
		return
	case e.WrappedKey == "" || e.MessageStatus == store.StatusRevoked || e.MessageStatus == store.StatusPurged ||
		e.MessageStatus == store.StatusExpired:
		n.fail(ctx, log, e, "message_"+string(e.MessageStatus), "skipped")
		return
	}
	if wait := n.cfg.QuietHours.Until(n.cfg.Now()); wait > 0 {
		n.retry(ctx, log, e, wait, "quiet_hours", false)
		return
	}
	link, ok := n.takeLink(e.MessageID)
	if !ok {
		key, err := n.cfg.Keys.Unwrap(ctx, e.WrappedKey)
		if err != nil {
			n.retry(ctx, log, e, n.backoff(e.Attempts), "keystore_unavailable", true)
			return
		}
		link, err = sealed.Message{Tenant: n.cfg.Tenant, ID: e.MessageID, Key: key}.OpenLink(e.Payload)
		envelope.Zero(key)
		if err != nil {
			n.fail(ctx, log, e, "bad_payload", "failed")
			return
		}
	}
	body, err := sms.Compose(n.cfg.TenantName, n.cfg.ViewerURL+"/m/"+link)
	if err != nil {
		n.fail(ctx, log, e, "compose", "failed")
		return
	}
	msg := sms.Message{To: e.Phone, Body: body, Reference: e.MessageID}

	// A row claimed again may already have been sent by a notifier that died before recording
	// it: ask the provider first when it can tell.
	if f, ok := n.cfg.Provider.(sms.Finder); ok && e.Attempts > 1 {
		sent, found, err := f.Find(ctx, msg, n.cfg.Now().Add(-n.cfg.Lease*time.Duration(e.Attempts)-time.Hour))
		if err != nil {
			n.retry(ctx, log, e, n.backoff(e.Attempts), "lookup_failed", true)
			return
		}
		if found {
			n.sent(ctx, log, e, sent.ProviderID)
			return
		}
	}
	if err := n.limiter.Wait(ctx); err != nil {
		return // shutting down: the lease brings the row back
	}
	sent, err := n.cfg.Provider.Send(ctx, msg)
	if err == nil {
		n.sent(ctx, log, e, sent.ProviderID)
		return
	}
	code := "send_error"
	var se *sms.SendError
	if errors.As(err, &se) {
		code = se.Code
	}
	switch {
	case errors.Is(err, sms.ErrOptedOut):
		if _, err := n.cfg.Store.SetOptOut(ctx, e.Phone, true); err != nil {
			log.Warn("record opt-out reported by the provider", "error", err)
		}
		n.fail(ctx, log, e, code, "opted-out")
	case errors.Is(err, sms.ErrTemporary):
		wait := n.backoff(e.Attempts)
		if se != nil && se.RetryAfter > wait {
			wait = se.RetryAfter
		}
		n.retry(ctx, log, e, wait, code, true)
	default:
		n.fail(ctx, log, e, code, "failed")
	}
}

func (n *Notifier) sent(ctx context.Context, log *slog.Logger, e store.OutboxEntry, providerID string) {
	ev := audit.Event{Kind: audit.KindNotified, Actor: "system", MessageID: e.MessageID,
		Detail: map[string]string{"provider": n.cfg.ProviderName, "provider_id": providerID}}
	// The SMS is out: recording it matters more than anything else here, so try until the
	// lease is nearly over. The lease is on the notifier's clock; the waits are real, so what
	// is left of the lease becomes a deadline on the monotonic clock.
	deadline := time.Now().Add(e.ClaimedUntil.Sub(n.cfg.Now()) - 5*time.Second)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := n.cfg.Store.MarkSent(ctx, e.ID, providerID, ev)
		if err == nil || errors.Is(err, store.ErrConflict) {
			n.cfg.Metrics.SMS(n.cfg.ProviderName, "sent")
			log.Info("SMS sent", "provider", n.cfg.ProviderName)
			return
		}
		if !store.IsTemporary(err) || time.Now().Add(wait).After(deadline) {
			log.Error("SMS sent but not recorded; the provider lookup or a resend follows when the lease ends", "error", err)
			n.cfg.Metrics.SMS(n.cfg.ProviderName, "unrecorded")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (n *Notifier) fail(ctx context.Context, log *slog.Logger, e store.OutboxEntry, code, result string) {
	ev := audit.Event{Kind: audit.KindFailed, Actor: "system", MessageID: e.MessageID,
		Detail: map[string]string{"code": code, "provider": n.cfg.ProviderName}}
	if err := n.cfg.Store.MarkFailed(ctx, e.ID, code, ev); err != nil && !errors.Is(err, store.ErrConflict) {
		log.Warn("record failed notification; it will be retried", "code", code, "error", err)
		return
	}
	n.cfg.Metrics.SMS(n.cfg.ProviderName, result)
	log.Info("SMS not sent", "code", code)
}

// retry schedules another attempt after wait; counted attempts give up at MaxAttempts.
func (n *Notifier) retry(ctx context.Context, log *slog.Logger, e store.OutboxEntry, wait time.Duration, code string, counts bool) {
	if counts && e.Attempts >= n.cfg.MaxAttempts {
		n.fail(ctx, log, e, "gave_up:"+code, "failed")
		return
	}
	if err := n.cfg.Store.RetryLater(ctx, e.ID, n.cfg.Now().Add(wait), code); err != nil {
		log.Warn("schedule SMS retry; the lease brings it back", "error", err)
		return
	}
	n.cfg.Metrics.SMS(n.cfg.ProviderName, "retry")
	log.Info("SMS deferred", "code", code, "retry_in", wait.Round(time.Second))
}

// backoff is Backoff·2^(attempt-1), capped, with "equal jitter": half fixed, half random, so
// that retries of a provider outage do not arrive in one wave.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.MaxBackoff
	if attempt < 30 {
		d = min(n.cfg.Backoff<<max(0, attempt-1), n.cfg.MaxBackoff)
	}
	return d/2 + time.Duration(n.cfg.randFloat()*float64(d/2))
}

// Status records a delivery report (sms.Events).
func (n *Notifier) Status(ctx context.Context, u sms.StatusUpdate) error {
	var to store.Status
	var kind audit.Kind
	switch u.Status {
	case sms.StatusDelivered:
		to, kind = store.StatusDelivered, audit.KindDelivered
	case sms.StatusUndelivered, sms.StatusFailed:
		to, kind = store.StatusFailed, audit.KindFailed
	default:
		return nil // sent: the message is already notified
	}
	m, err := n.cfg.Store.MessageByProviderID(ctx, u.ProviderID)
	if errors.Is(err, store.ErrNotFound) {
		n.log.Info("delivery report for an unknown SMS ignored")
		return nil
	}
	if err != nil {
		return err
	}
	detail := map[string]string{"provider": n.cfg.ProviderName, "status": string(u.Status)}
	if u.ErrorCode != "" {
		detail["code"] = u.ErrorCode
	}
	err = n.cfg.Store.Transition(ctx, m.ID, to, audit.Event{Kind: kind, Actor: n.cfg.ProviderName, MessageID: m.ID, Detail: detail})
	if errors.Is(err, store.ErrConflict) {
		return nil // the message moved on (read, revoked, purged): the report changes nothing
	}
	return err
}

// Inbound handles STOP, START and HELP (sms.Events).
func (n *Notifier) Inbound(ctx context.Context, in sms.Inbound) (string, error) {
	switch in.Keyword {
	case sms.KeywordStop:
		if _, err := n.cfg.Store.SetOptOut(ctx, in.From, true); err != nil {
			return "", err
		}
		n.cfg.Metrics.SMS(n.cfg.ProviderName, "inbound-stop")
		return "You will get no more texts from " + n.cfg.TenantName + ". Reply START to receive them again.", nil
	case sms.KeywordStart:
		if _, err := n.cfg.Store.SetOptOut(ctx, in.From, false); err != nil {
			return "", err
		}
		n.cfg.Metrics.SMS(n.cfg.ProviderName, "inbound-start")
		return "You will receive texts from " + n.cfg.TenantName + " again. Reply STOP to opt out.", nil
	case sms.KeywordHelp:
		return n.cfg.HelpText, nil
	}
	return "", nil
}
