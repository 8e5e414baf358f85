package sms

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// TwilioConfig configures the Twilio provider.
type TwilioConfig struct {
	// AccountSID is the account ("AC" and 32 hex digits).
	AccountSID string
	// AuthToken is the account's auth token. Twilio signs callbacks with it, so the callback
	// handler needs it even when the REST API is called with an API key.
	AuthToken string
	// APIKey ("SK…") and APISecret, when set, authenticate REST calls instead of AuthToken.
	APIKey, APISecret string

	// From is the sending number in E.164; MessagingServiceSID ("MG…") sends from a Messaging
	// Service's pool instead. At least one is required.
	From                string
	MessagingServiceSID string

	// CallbackBaseURL is the public URL at which Handler is served, as Twilio calls it, e.g.
	// https://text.example.org/sms/twilio. Status callbacks go to CallbackBaseURL+"/status";
	// point the number's (or Messaging Service's) incoming-message webhook at
	// CallbackBaseURL+"/inbound". Signatures are checked against these URLs, so they must be
	// exactly what Twilio requests (scheme, host, port and path), whatever proxies rewrite.
	// Empty: no status callbacks are requested and Handler refuses every request.
	CallbackBaseURL string
	// StatusCallbackURL overrides CallbackBaseURL+"/status" as the StatusCallback sent to
	// Twilio; it must still reach Handler at a path ending in /status.
	StatusCallbackURL string

	// BaseURL is where the REST API is, default https://api.twilio.com. twilio-go has no
	// setting for it, so requests are redirected to it by the HTTP transport; tests point it at
	// a local server (plain http is allowed only to loopback).
	BaseURL string
	// HTTPClient's Transport is used for REST calls (nil: a shared pool keeping up to 64 idle connections per host); its Timeout
	// is not: see Timeout.
	HTTPClient *http.Client
	// Timeout bounds each REST call, default 10s.
	Timeout time.Duration
	// Logger receives refused callbacks (never numbers or texts); nil means slog.Default().
	Logger *slog.Logger
}

var (
	twilioAccountSID = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	twilioKeySID     = regexp.MustCompile(`^SK[0-9a-fA-F]{32}$`)
	twilioServiceSID = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)
	alphanumeric     = regexp.MustCompile(`^[A-Za-z0-9]+$`)
)

// Twilio sends texts with Twilio's Programmable Messaging API (github.com/twilio/twilio-go)
// and serves its callbacks. It implements [Provider] and [Finder].
type Twilio struct {
	cfg            TwilioConfig
	user, password string
	base           *url.URL // nil: twilio-go's own host
	statusURL      string
	inboundURL     string
	transport      http.RoundTripper
	timeout        time.Duration
	log            *slog.Logger
}

var (
	_ Provider = (*Twilio)(nil)
	_ Finder   = (*Twilio)(nil)
)

// NewTwilio checks cfg and returns the provider.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	t := &Twilio{cfg: cfg, timeout: cfg.Timeout, log: cfg.Logger}
	if !twilioAccountSID.MatchString(cfg.AccountSID) {
		return nil, errors.New("twilio: the account SID must be AC followed by 32 hex digits (see the Twilio console)")
	}
	t.user, t.password = cfg.AccountSID, cfg.AuthToken
	switch {
	case cfg.APIKey != "" || cfg.APISecret != "":
		if !twilioKeySID.MatchString(cfg.APIKey) || !alphanumeric.MatchString(cfg.APISecret) {
			return nil, errors.New("twilio: an API key must be SK followed by 32 hex digits, with its secret (letters and digits)")
		}
		t.user, t.password = cfg.APIKey, cfg.APISecret
	case cfg.AuthToken == "":
		return nil, errors.New("twilio: set the auth token (or an API key and secret)")
	}
	if cfg.AuthToken != "" && !alphanumeric.MatchString(cfg.AuthToken) {
		return nil, errors.New("twilio: the auth token must be letters and digits; check it was copied whole")
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		return nil, errors.New("twilio: set the sending number (From) or a Messaging Service SID")
	}
	if cfg.From != "" && !e164.MatchString(cfg.From) {
		return nil, errors.New("twilio: the From number must be E.164, e.g. +12025550100")
	}
	if cfg.MessagingServiceSID != "" && !twilioServiceSID.MatchString(cfg.MessagingServiceSID) {
		return nil, errors.New("twilio: the Messaging Service SID must be MG followed by 32 hex digits")
	}
	if cfg.BaseURL != "" {
		u, err := checkEndpoint("twilio: the base URL", cfg.BaseURL)
		if err != nil {
			return nil, err
		}
		t.base = u
	}
	if cfg.CallbackBaseURL != "" {
		if cfg.AuthToken == "" {
			return nil, errors.New("twilio: callbacks need the auth token, which Twilio signs them with, even when an API key sends")
		}
		u, err := checkEndpoint("twilio: the callback base URL", cfg.CallbackBaseURL)
		if err != nil {
			return nil, err
		}
		if u.RawQuery != "" {
			return nil, errors.New("twilio: the callback base URL must not have a query")
		}
		base := strings.TrimSuffix(u.String(), "/")
		t.statusURL, t.inboundURL = base+"/status", base+"/inbound"
	}
	if cfg.StatusCallbackURL != "" {
		u, err := checkEndpoint("twilio: the status callback URL", cfg.StatusCallbackURL)
		if err != nil {
			return nil, err
		}
		if cfg.AuthToken == "" {
			return nil, errors.New("twilio: callbacks need the auth token, which Twilio signs them with, even when an API key sends")
		}
		if !strings.HasSuffix(u.Path, "/status") {
			return nil, errors.New("twilio: the status callback URL must end in /status, where Handler serves status callbacks")
		}
		t.statusURL = u.String()
	}
	if t.timeout <= 0 {
		t.timeout = defaultTimeout
	}
	t.transport = sharedTransport()
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		t.transport = cfg.HTTPClient.Transport
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	return t, nil
}

// api returns a twilio-go client for one call, bound to ctx through the transport.
func (t *Twilio) api(ctx context.Context) (*twapi.ApiService, *attempt) {
	a := &attempt{ctx: ctx, base: t.base, next: t.transport}
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(t.user, t.password),
		// Timeout is on ctx: http.Client's own would be lost when attempt rebinds the context.
		HTTPClient: &http.Client{Transport: a, CheckRedirect: noRedirects},
	}
	c.SetAccountSid(t.cfg.AccountSID)
	api := twapi.NewApiServiceWithClient(c)
	// NewRequestHandler reads TWILIO_EDGE and TWILIO_REGION from the environment; the endpoint
	// is chosen by BaseURL only.
	api.RequestHandler().Edge, api.RequestHandler().Region = "", ""
	return api, a
}

// Send creates a Message (POST /2010-04-01/Accounts/{AccountSid}/Messages.json). Twilio takes
// no idempotency key: after an error matching ErrAmbiguous, call Find before sending again.
func (t *Twilio) Send(ctx context.Context, m Message) (Sent, error) {
	if err := checkMessage("twilio", m); err != nil {
		return Sent{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	api, a := t.api(ctx)
	params := &twapi.CreateMessageParams{}
	params.SetTo(m.To)
	params.SetBody(m.Body)
	if t.cfg.From != "" {
		params.SetFrom(t.cfg.From)
	}
	if t.cfg.MessagingServiceSID != "" {
		params.SetMessagingServiceSid(t.cfg.MessagingServiceSID)
	}
	if t.statusURL != "" {
		params.SetStatusCallback(t.statusURL)
	}
	msg, err := api.CreateMessage(params)
	if err != nil {
		return Sent{}, t.callError(ctx, a, err, true)
	}
	if msg.Sid == nil || *msg.Sid == "" {
		_, status, _ := a.result()
		return Sent{}, &SendError{Provider: "twilio", Code: "bad_response", HTTPStatus: status, Temporary: true, Ambiguous: true,
			Detail: "Twilio answered without a message SID; it may have accepted the text"}
	}
	return Sent{ProviderID: *msg.Sid}, nil
}

// findLimit bounds how many messages sent to one number since a day Find reads.
const findLimit = 200

// Find looks for a text sent since since to m.To with exactly m.Body (a notification's body holds
// a unique link, so it identifies the text). It reads the most recent messages to the number,
// which include ones still queued, and then the ones with DateSent on or after since's day
// (Twilio filters by UTC day), up to 200. It misses texts whose body Twilio no longer keeps
// (content retention) and texts still queued behind more than a page of newer ones.
func (t *Twilio) Find(ctx context.Context, m Message, since time.Time) (Sent, bool, error) {
	if err := checkMessage("twilio", m); err != nil {
		return Sent{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	day := since.UTC()
	day = time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, time.UTC)
	recent := (&twapi.ListMessageParams{}).SetTo(m.To).SetPageSize(50).SetLimit(50)
	sentSince := (&twapi.ListMessageParams{}).SetTo(m.To).SetDateSentAfter(day).SetPageSize(100).SetLimit(findLimit)
	for _, params := range []*twapi.ListMessageParams{recent, sentSince} {
		api, a := t.api(ctx)
		msgs, err := api.ListMessage(params)
		if err != nil {
			return Sent{}, false, t.callError(ctx, a, err, false)
		}
		for _, msg := range msgs {
			if msg.Sid != nil && msg.Body != nil && *msg.Body == m.Body && msg.To != nil && *msg.To == m.To {
				return Sent{ProviderID: *msg.Sid}, true, nil
			}
		}
	}
	return Sent{}, false, nil
}

// callError classifies what twilio-go returned. send says whether the call created something,
// which makes a lost answer ambiguous.
func (t *Twilio) callError(ctx context.Context, a *attempt, err error, send bool) *SendError {
	wrote, status, retryAfter := a.result()
	var rest *twclient.TwilioRestError
	var restV1 *twclient.RestErrorV1
	var e *SendError
	switch {
	case errors.As(err, &rest):
		e = classifyTwilio(rest.Code, rest.Status)
	case errors.As(err, &restV1):
		e = classifyTwilio(restV1.Code, restV1.HttpStatusCode)
	case status == 0:
		e = transportError("twilio", ctx, err, wrote && send)
	case status < 300:
		// The request went through and the answer was lost or unreadable.
		e = &SendError{Provider: "twilio", Code: "bad_response", Temporary: true, Ambiguous: send,
			Detail: fmt.Sprintf("Twilio answered %d with a body that could not be read", status)}
	default:
		// An error answer that is not Twilio's JSON, e.g. from a proxy in front of it.
		e = classifyTwilio(0, status)
	}
	if e.HTTPStatus == 0 {
		e.HTTPStatus = status
	}
	if e.RetryAfter == 0 {
		e.RetryAfter = retryAfter
	}
	if !send {
		e.Ambiguous = false
	}
	return e
}

// twilioKind is how a Twilio error code is handled.
type twilioKind int

const (
	twPermanent twilioKind = iota
	twTemporary
	twConfig // temporary: an operator must fix a setting
	twOptedOut
)

// twilioErrors are the REST error codes of creating a Message that this package words itself
// (https://www.twilio.com/docs/api/errors). Others follow their HTTP status.
var twilioErrors = map[int]struct {
	kind   twilioKind
	detail string
}{
	20003: {twConfig, "Twilio refused the credentials: check the account SID and auth token (or API key and secret)"},
	20005: {twConfig, "the Twilio account is not active: check the account in the Twilio console"},
	20404: {twConfig, "Twilio did not find the account: check the account SID"},
	20429: {twTemporary, "too many concurrent requests to Twilio"},
	21212: {twConfig, "Twilio refused the From number: check it is a number of this account"},
	21222: {twConfig, "Twilio refused the account SID or API key: check the credentials"},
	21224: {twConfig, "Twilio refused the auth token or API secret: check the credentials"},
	21211: {twPermanent, "the To number is not a valid phone number"},
	21408: {twConfig, "the account may not text this country: check Messaging Geographic Permissions in the Twilio console"},
	21602: {twPermanent, "Twilio refused an empty text"},
	21603: {twConfig, "Twilio needs a From number or Messaging Service: check the configuration"},
	21606: {twConfig, "the From number cannot send texts to this recipient: check it is an SMS-capable number of this account"},
	21608: {twConfig, "a trial account can text only verified numbers: upgrade the Twilio account"},
	21610: {twOptedOut, "the recipient replied STOP to this sender and gets no texts until they reply START"},
	21611: {twTemporary, "the From number has too many queued texts"},
	21612: {twPermanent, "Twilio cannot route a text from this sender to the To number"},
	21614: {twPermanent, "the To number cannot receive texts"},
	21617: {twPermanent, "the text is too long"},
	21659: {twConfig, "the From number is not a Twilio number of this account: check the configuration"},
	21701: {twConfig, "Twilio did not find the Messaging Service: check its SID"},
	21703: {twConfig, "the Messaging Service has no sending numbers: add one in the Twilio console"},
	21704: {twConfig, "the Messaging Service has no sending numbers: add one in the Twilio console"},
	21705: {twConfig, "the Messaging Service is not valid: check it in the Twilio console"},
}

// classifyTwilio turns a Twilio error code (0 if unknown) and HTTP status into a SendError.
func classifyTwilio(code, status int) *SendError {
	e := &SendError{Provider: "twilio", HTTPStatus: status}
	if code != 0 {
		e.Code = fmt.Sprintf("twilio:%d", code)
	} else {
		e.Code = fmt.Sprintf("twilio:http-%d", status)
	}
	kind := twPermanent
	if known, ok := twilioErrors[code]; ok {
		kind, e.Detail = known.kind, known.detail
	} else {
		switch {
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			kind, e.Detail = twConfig, "Twilio refused the request: check the account SID and credentials"
		case status == http.StatusNotFound:
			kind, e.Detail = twConfig, "Twilio did not find the resource: check the account SID and the base URL"
		case status == http.StatusTooManyRequests:
			kind, e.Detail = twTemporary, "Twilio is rate limiting requests"
		case status >= 500:
			kind, e.Detail = twTemporary, fmt.Sprintf("Twilio answered %d", status)
			e.Ambiguous = true
		case status >= 300 && status < 400:
			kind, e.Detail = twConfig, fmt.Sprintf("Twilio answered with a redirect (%d): check the base URL", status)
		default:
			e.Detail = fmt.Sprintf("Twilio refused the text (error %d)", code)
		}
	}
	switch kind {
	case twTemporary, twConfig:
		e.Temporary = true
	case twOptedOut:
		e.OptedOut = true
	}
	return e
}

// Handler serves Twilio's callbacks: POST …/status (the StatusCallback of sent texts) and
// POST …/inbound (the number's incoming-message webhook), both form-encoded and signed with
// X-Twilio-Signature. Mount it so that those paths reach it, e.g.
// mux.Handle("/sms/twilio/", t.Handler(ev)) with CallbackBaseURL ending in /sms/twilio.
//
// Inbound texts are answered with TwiML: <Response><Message>reply</Message></Response> when
// Events returns a reply, else an empty <Response/>. Twilio's Advanced Opt-Out may answer STOP
// and HELP itself as well.
func (t *Twilio) Handler(ev Events) http.Handler {
	validator := twclient.NewRequestValidator(t.cfg.AuthToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var signedURL string
		inbound := false
		switch {
		case strings.HasSuffix(r.URL.Path, "/status"):
			signedURL = t.statusURL
		case strings.HasSuffix(r.URL.Path, "/inbound"):
			signedURL, inbound = t.inboundURL, true
		default:
			http.NotFound(w, r)
			return
		}
		body, ok := readCallback(w, r)
		if !ok {
			return
		}
		signature := r.Header.Get("X-Twilio-Signature")
		if signedURL == "" || signature == "" {
			t.log.WarnContext(r.Context(), "refused Twilio callback", "reason", "unsigned, or callbacks are not configured", "path", r.URL.Path)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		// Twilio signs the URL it requested, query included.
		if r.URL.RawQuery != "" {
			signedURL = strings.SplitN(signedURL, "?", 2)[0] + "?" + r.URL.RawQuery
		}
		form, err := url.ParseQuery(string(body))
		if err != nil || !validator.ValidateBody(signedURL, body, signature) {
			t.log.WarnContext(r.Context(), "refused Twilio callback", "reason", "signature does not match; check CallbackBaseURL and the auth token", "path", r.URL.Path)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		// The signature covers the first value of each name only.
		for _, v := range form {
			if len(v) != 1 {
				http.Error(w, "repeated parameter", http.StatusBadRequest)
				return
			}
		}
		if inbound {
			t.inbound(w, r, ev, form)
		} else {
			t.status(w, r, ev, form)
		}
	})
}

// twilioStatuses maps Twilio's MessageStatus; the rest (queued, accepting, accepted,
// scheduled, sending, and receiving/received of inbound texts) are steps before an outcome.
var twilioStatuses = map[string]DeliveryStatus{
	"sent":        StatusSent,
	"delivered":   StatusDelivered,
	"read":        StatusDelivered, // only channels with read receipts
	"undelivered": StatusUndelivered,
	"failed":      StatusFailed,
	"canceled":    StatusFailed, // a scheduled text that will never go
}

func (t *Twilio) status(w http.ResponseWriter, r *http.Request, ev Events, form url.Values) {
	sid := form.Get("MessageSid")
	// The SID goes to the store as the text's provider id: printable ASCII, as Twilio's are.
	if !providerID.MatchString(sid) || len(sid) > 64 {
		http.Error(w, "MessageSid is required (printable ASCII, at most 64 characters)", http.StatusBadRequest)
		return
	}
	status, ok := twilioStatuses[form.Get("MessageStatus")]
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	u := StatusUpdate{ProviderID: sid, Status: status, ErrorCode: sanitizeCode("twilio", form.Get("ErrorCode"))}
	if form.Get("MessageStatus") == "canceled" && u.ErrorCode == "" {
		u.ErrorCode = "twilio:canceled"
	}
	if err := ev.Status(r.Context(), u); err != nil {
		t.log.ErrorContext(r.Context(), "record SMS status", "provider", "twilio", "status", status, "error", err)
		eventsFailed(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (t *Twilio) inbound(w http.ResponseWriter, r *http.Request, ev Events, form url.Values) {
	in := Inbound{From: form.Get("From"), Keyword: ParseKeyword(form.Get("Body")), ProviderID: form.Get("MessageSid")}
	if !e164.MatchString(in.From) || !providerID.MatchString(in.ProviderID) || len(in.ProviderID) > 64 {
		http.Error(w, "From (E.164) and MessageSid are required", http.StatusBadRequest)
		return
	}
	reply, err := ev.Inbound(r.Context(), in)
	if err != nil {
		t.log.ErrorContext(r.Context(), "record inbound SMS", "provider", "twilio", "keyword", in.Keyword, "error", err)
		eventsFailed(w)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	if reply == "" {
		fmt.Fprint(w, xml.Header+"<Response/>")
		return
	}
	var b strings.Builder
	b.WriteString(xml.Header + "<Response><Message>")
	_ = xml.EscapeText(&b, []byte(reply))
	b.WriteString("</Message></Response>")
	fmt.Fprint(w, b.String())
}
