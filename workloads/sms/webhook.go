package sms

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WebhookSignatureHeader carries the signature of webhook requests in both directions.
const WebhookSignatureHeader = "X-SecureText-Signature"

// WebhookTolerance is how far a signature's timestamp may be from now; older requests are
// refused as replays.
const WebhookTolerance = 5 * time.Minute

// minWebhookSecret is the shortest secret accepted: HMAC-SHA256 with a 256-bit key.
const minWebhookSecret = 32

// WebhookConfig configures the webhook provider, for SMS gateways other than Twilio.
//
// The protocol, in both directions, is JSON over HTTPS signed like Stripe's webhooks:
//
//	X-SecureText-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// SecureText POSTs {"to": "+12025550143", "body": "…", "reference": "<message id>"} to URL,
// with the reference also as Idempotency-Key, and expects a 2xx answer {"id": "<gateway id>"}.
// 429 and 5xx mean try later; a 4xx with {"error": "opted_out"} means the recipient opted out;
// other 4xx refuse the text ({"error": "<short code>"} is kept as its error code), except 401,
// 403, 404 and 405, which mean the gateway is misconfigured and are retried.
//
// The gateway POSTs callbacks to Handler, signed the same way:
//
//	{"type": "status", "id": "<gateway id>", "status": "sent|delivered|undelivered|failed", "error_code": "…"}
//	{"type": "inbound", "from": "+12025550143", "text": "STOP", "id": "<gateway id>"}
//
// and gets 2xx once recorded ({"reply": "…"} for inbound texts that need an answer), 403 for a
// bad or stale signature, 503 when SecureText cannot record it yet (retry later).
type WebhookConfig struct {
	// URL receives the texts to send: https, or http only to a loopback address.
	URL string
	// Secret signs both directions; at least 32 bytes (e.g. openssl rand -hex 32).
	Secret []byte
	// HTTPClient's Transport is used (nil: a shared pool keeping up to 64 idle connections per host); its Timeout is not: see Timeout.
	HTTPClient *http.Client
	// Timeout bounds each request, default 10s.
	Timeout time.Duration
	// Logger receives refused callbacks (never numbers or texts); nil means slog.Default().
	Logger *slog.Logger
}

// Webhook sends texts through any gateway that speaks the protocol of [WebhookConfig].
type Webhook struct {
	url       *url.URL
	secret    []byte
	transport http.RoundTripper
	timeout   time.Duration
	log       *slog.Logger
	now       func() time.Time
}

var _ Provider = (*Webhook)(nil)

// NewWebhook checks cfg and returns the provider.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := checkEndpoint("webhook: the URL", cfg.URL)
	if err != nil {
		return nil, err
	}
	if len(cfg.Secret) < minWebhookSecret {
		return nil, fmt.Errorf("webhook: the secret must be at least %d bytes; generate one with openssl rand -hex 32", minWebhookSecret)
	}
	w := &Webhook{url: u, secret: bytes.Clone(cfg.Secret), timeout: cfg.Timeout, log: cfg.Logger, now: time.Now}
	if w.timeout <= 0 {
		w.timeout = defaultTimeout
	}
	w.transport = sharedTransport()
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		w.transport = cfg.HTTPClient.Transport
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	return w, nil
}

// SignWebhook returns the X-SecureText-Signature value for body sent at t.
func SignWebhook(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret []byte, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// Errors of VerifyWebhook.
var (
	ErrSignatureMissing = errors.New("webhook signature missing or malformed")
	ErrSignatureStale   = errors.New("webhook signature timestamp outside the tolerance")
	ErrSignatureInvalid = errors.New("webhook signature does not match")
)

// VerifyWebhook checks an X-SecureText-Signature header against body: its timestamp must be
// within WebhookTolerance of now, and one of its v1 values must be the HMAC of the body (several
// v1 values allow a secret to be rotated).
func VerifyWebhook(secret []byte, header string, body []byte, now time.Time) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureMissing
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return ErrSignatureMissing
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 || len(ts) > 12 {
		return ErrSignatureMissing
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrSignatureMissing
	}
	if d := now.Sub(time.Unix(sec, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return ErrSignatureStale
	}
	want := webhookMAC(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return ErrSignatureInvalid
}

type webhookRequest struct {
	To        string `json:"to"`
	Body      string `json:"body"`
	Reference string `json:"reference"`
}

type webhookAnswer struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// providerID is what a gateway's id may look like: printable ASCII, short enough to store.
var providerID = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)

// Send POSTs the text to the gateway.
func (w *Webhook) Send(ctx context.Context, m Message) (Sent, error) {
	if err := checkMessage("webhook", m); err != nil {
		return Sent{}, err
	}
	payload, err := json.Marshal(webhookRequest{To: m.To, Body: m.Body, Reference: m.Reference})
	if err != nil {
		return Sent{}, fmt.Errorf("webhook: encode request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url.String(), bytes.NewReader(payload))
	if err != nil {
		return Sent{}, fmt.Errorf("webhook: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(WebhookSignatureHeader, SignWebhook(w.secret, w.now(), payload))
	if providerID.MatchString(m.Reference) {
		req.Header.Set("Idempotency-Key", m.Reference)
	}
	a := &attempt{ctx: ctx, next: w.transport}
	client := &http.Client{Transport: a, CheckRedirect: noRedirects}
	resp, err := client.Do(req)
	if err != nil {
		wrote, _, _ := a.result()
		return Sent{}, transportError("webhook", ctx, err, wrote)
	}
	defer resp.Body.Close()
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var answer webhookAnswer
	decodeErr := json.Unmarshal(raw, &answer)
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())

	e := &SendError{Provider: "webhook", HTTPStatus: resp.StatusCode, RetryAfter: retryAfter,
		Code: fmt.Sprintf("webhook:http-%d", resp.StatusCode)}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		if readErr != nil || decodeErr != nil || !providerID.MatchString(answer.ID) {
			e.Code, e.Temporary, e.Ambiguous = "bad_response", true, true
			e.Detail = fmt.Sprintf("the gateway answered %d without a usable id; it may have accepted the text", s)
			return Sent{}, e
		}
		return Sent{ProviderID: answer.ID}, nil
	case s == http.StatusTooManyRequests:
		e.Temporary, e.Detail = true, "the gateway is rate limiting requests"
	case s == http.StatusRequestTimeout || s >= 500:
		e.Temporary, e.Ambiguous = true, true
		e.Detail = fmt.Sprintf("the gateway answered %d; it may have accepted the text", s)
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		e.Temporary, e.Detail = true, fmt.Sprintf("the gateway refused the request (%d): check that both sides use the same secret and clock", s)
	case s == http.StatusNotFound || s == http.StatusMethodNotAllowed || s >= 300 && s < 400:
		e.Temporary, e.Detail = true, fmt.Sprintf("the gateway answered %d: check the webhook URL", s)
	default:
		if decodeErr == nil && answer.Error == "opted_out" {
			e.OptedOut, e.Code = true, "webhook:opted_out"
			e.Detail = "the recipient opted out of texts from this sender"
		} else {
			if decodeErr == nil && answer.Error != "" {
				e.Code = sanitizeCode("webhook", answer.Error)
			}
			e.Detail = fmt.Sprintf("the gateway refused the text (%d)", s)
		}
	}
	return Sent{}, e
}

type webhookCallback struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Status    string `json:"status"`
	ErrorCode string `json:"error_code"`
	From      string `json:"from"`
	Text      string `json:"text"`
}

var webhookStatuses = map[string]DeliveryStatus{
	"sent":        StatusSent,
	"delivered":   StatusDelivered,
	"undelivered": StatusUndelivered,
	"failed":      StatusFailed,
}

// Handler serves the gateway's signed callbacks (see [WebhookConfig]) at any path it is
// mounted on. Statuses other than sent, delivered, undelivered and failed are acknowledged and
// ignored.
func (w *Webhook) Handler(ev Events) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, ok := readCallback(rw, r)
		if !ok {
			return
		}
		if err := VerifyWebhook(w.secret, r.Header.Get(WebhookSignatureHeader), body, w.now()); err != nil {
			w.log.WarnContext(r.Context(), "refused webhook callback", "reason", err.Error())
			http.Error(rw, "forbidden", http.StatusForbidden)
			return
		}
		var cb webhookCallback
		if err := json.Unmarshal(body, &cb); err != nil {
			http.Error(rw, "body must be a JSON object", http.StatusBadRequest)
			return
		}
		if cb.ID == "" || !providerID.MatchString(cb.ID) {
			http.Error(rw, "id is required (printable ASCII, at most 128 characters)", http.StatusBadRequest)
			return
		}
		switch cb.Type {
		case "status":
			status, ok := webhookStatuses[cb.Status]
			if !ok {
				rw.WriteHeader(http.StatusNoContent)
				return
			}
			u := StatusUpdate{ProviderID: cb.ID, Status: status, ErrorCode: sanitizeCode("webhook", cb.ErrorCode)}
			if err := ev.Status(r.Context(), u); err != nil {
				w.log.ErrorContext(r.Context(), "record SMS status", "provider", "webhook", "status", status, "error", err)
				eventsFailed(rw)
				return
			}
			rw.WriteHeader(http.StatusNoContent)
		case "inbound":
			if !e164.MatchString(cb.From) {
				http.Error(rw, "from must be an E.164 number", http.StatusBadRequest)
				return
			}
			reply, err := ev.Inbound(r.Context(), Inbound{From: cb.From, Keyword: ParseKeyword(cb.Text), ProviderID: cb.ID})
			if err != nil {
				w.log.ErrorContext(r.Context(), "record inbound SMS", "provider", "webhook", "error", err)
				eventsFailed(rw)
				return
			}
			rw.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(rw).Encode(struct {
				Reply string `json:"reply,omitempty"`
			}{reply})
		default:
			http.Error(rw, `type must be "status" or "inbound"`, http.StatusBadRequest)
		}
	})
}
