package gateway

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/phone"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/store"
)

// openAPIDocument describes the REST API; tests validate every request and response against it.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// DefaultMaxRequestBytes bounds a request body: JSON with base64 attachments (which grow by a
// third), so about 10 MiB of files.
const DefaultMaxRequestBytes = 14 << 20

// APIConfig configures the REST API.
type APIConfig struct {
	// Region reads recipients written without a country code (ISO 3166, default "US").
	Region string
	// AllowedCountries are the countries (ISO 3166-1 alpha-2) whose numbers are texted;
	// empty: those sharing Region's calling code (for US, the NANP countries).
	AllowedCountries []string
	// MaxRequestBytes bounds a request body (default DefaultMaxRequestBytes); larger is 413.
	MaxRequestBytes int64
	Logger          *slog.Logger
	Metrics         *Metrics
	// RetryAfter is what a 503 asks senders to wait (default 30 s).
	RetryAfter time.Duration
	// Keys opens the replies patients write in the viewer, so that a sender reads them in
	// its message's events; nil: replied events carry no text. A discovery export opens the
	// held messages with it too.
	Keys KeyUnwrapper
	// Holds returns the tenant's retention settings, whose active legal holds a compliance
	// account can export; nil: there are none.
	Holds func() retention.Settings
	// Manifests signs discovery manifests with the tenant's audit key (the keystore); nil: no
	// export can be made.
	Manifests ManifestSigner
}

// API is the REST API for senders (EHRs, scripts): submit a message, read its status and
// audit events, revoke it. Every request is authenticated with an API key of this tenant's
// gateway, and a sender sees only its own messages. It serves plain HTTP; the caller puts it
// behind TLS.
//
// Responses never carry a recipient's phone number or a message's content, and neither do
// its logs: they hold message ids, sender ids and reason codes. The one text they carry is a
// patient's reply, in the events of the message it answers, for the sender who sent it. The
// exception is a discovery export (discovery.go), which a compliance account's key alone
// opens: it holds the messages a legal hold keeps, decrypted, and is audited.
type API struct {
	cfg     APIConfig
	intake  *Intake
	senders *Senders
	log     *slog.Logger
	mux     *http.ServeMux
	// numbers reads recipients; numbersErr is why it could not be made (a configuration
	// error, which NewSMTPServer reports at start; here every submission answers 500).
	numbers    *phone.Policy
	numbersErr error
}

// NewAPI returns the REST API over intake, authenticating with senders.
func NewAPI(cfg APIConfig, intake *Intake, senders *Senders) *API {
	if cfg.Region == "" {
		cfg.Region = phone.DefaultRegion
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	a := &API{cfg: cfg, intake: intake, senders: senders, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux()}
	a.numbers, a.numbersErr = phone.NewPolicy(cfg.Region, cfg.AllowedCountries)

	a.mux.Handle("POST /v1/messages", a.authenticated(a.submit))
	a.mux.Handle("GET /v1/messages/{id}", a.authenticated(a.status))
	a.mux.Handle("DELETE /v1/messages/{id}", a.authenticated(a.revoke))
	a.mux.Handle("GET /v1/messages/{id}/events", a.authenticated(a.events))
	a.mux.Handle("GET /v1/holds/{name}/export", a.scoped(true, a.exportHold))
	a.mux.HandleFunc("GET /v1/openapi.yaml", serveOpenAPI)
	// A pattern without a method is less specific than the same path with one, so these
	// catch only the methods above do not serve, and answer 405 as a problem document.
	a.mux.Handle("/v1/messages", methodNotAllowed("POST"))
	a.mux.Handle("/v1/messages/{id}", methodNotAllowed("GET, HEAD, DELETE"))
	a.mux.Handle("/v1/messages/{id}/events", methodNotAllowed("GET, HEAD"))
	a.mux.Handle("/v1/holds/{name}/export", methodNotAllowed("GET"))
	a.mux.Handle("/v1/openapi.yaml", methodNotAllowed("GET, HEAD"))
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, newProblem(http.StatusNotFound, reasonNotFound,
			"there is no such resource; see /v1/openapi.yaml for the API's paths"))
	})
	return a
}

// ServeHTTP serves one API request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	a.mux.ServeHTTP(w, r)
}

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	_, _ = w.Write(openAPIDocument)
}

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, newProblem(http.StatusMethodNotAllowed, reasonMethodNotAllowed,
			fmt.Sprintf("this resource supports only %s", allow)))
	})
}

// answer sends p with the headers its status needs.
func (a *API) answer(w http.ResponseWriter, p *problem) {
	switch p.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="securetext"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(a.cfg.RetryAfter.Seconds())))))
	}
	writeProblem(w, p)
}

// unavailable is the answer when a dependency is down: nothing was changed, retry later.
func (a *API) unavailable() *problem {
	return newProblem(http.StatusServiceUnavailable, ReasonUnavailable,
		"the service cannot store or read messages right now and nothing was changed; retry after the time in Retry-After")
}

func internalProblem() *problem {
	return newProblem(http.StatusInternalServerError, ReasonInternal,
		"the server failed unexpectedly; retry later, and tell the operator if it keeps failing")
}

// senderHandler serves a request of an authenticated account: a sender, or for a discovery
// export a compliance account.
type senderHandler func(w http.ResponseWriter, r *http.Request, sender string)

// authenticated runs h for requests that carry a valid sender API key (RFC 6750 bearer token).
// A compliance account's key answers 403: it exports legal holds and does nothing else.
func (a *API) authenticated(h senderHandler) http.Handler { return a.scoped(false, h) }

// scoped runs h for requests that carry a valid key of a compliance account (compliance) or of
// a sender (!compliance). No key, or an unknown one, answers 401; a valid key of the other
// scope answers 403 saying which key the request needs.
func (a *API) scoped(compliance bool, h senderHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		account, isCompliance, cause, detail := a.authenticate(r)
		if cause != "" {
			a.cfg.Metrics.Refuse(store.ChannelAPI, ReasonUnauthenticated)
			a.log.InfoContext(r.Context(), "api request refused", "reason", ReasonUnauthenticated, "cause", cause, "remote", r.RemoteAddr)
			a.answer(w, newProblem(http.StatusUnauthorized, ReasonUnauthenticated, detail))
			return
		}
		if isCompliance != compliance {
			a.cfg.Metrics.Refuse(store.ChannelAPI, reasonForbidden)
			a.log.InfoContext(r.Context(), "api request refused", "reason", reasonForbidden, "cause", "wrong-scope",
				"account", account, "compliance", isCompliance, "remote", r.RemoteAddr)
			a.answer(w, a.scopeProblem(compliance))
			return
		}
		h(w, r, account)
	})
}

// scopeProblem is the answer to a valid key of the wrong scope for a request that needs a
// compliance key (compliance) or a sender's.
func (a *API) scopeProblem(compliance bool) *problem {
	if !compliance {
		return newProblem(http.StatusForbidden, reasonForbidden,
			"this is a compliance key (stc_…): it exports legal holds (GET /v1/holds/{name}/export) and cannot send or read messages; use a sender's API key (stk_…)")
	}
	detail := "exporting a legal hold needs a compliance key (stc_…), and a sender's API key cannot do it: ask the operator for one (securetext compliance -id NAME makes it)"
	if !a.senders.HasCompliance() {
		detail += "; this gateway has no compliance accounts yet: they are listed under compliance: in its senders file"
	}
	return newProblem(http.StatusForbidden, reasonForbidden, detail)
}

// authenticate returns the account holding the request's API key and whether it is a
// compliance account, or why there is none: a short cause for logs and a detail for the caller.
func (a *API) authenticate(r *http.Request) (account string, compliance bool, cause, detail string) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", false, "missing", "send your API key in the Authorization header: Authorization: Bearer stk_…"
	}
	scheme, key, ok := strings.Cut(values[0], " ")
	key = strings.TrimSpace(key)
	if len(values) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", false, "malformed", "the Authorization header must be the word Bearer, a space and your API key (stk_…)"
	}
	const invalid = "the API key is not valid: check that you sent the whole key, or ask the operator for a new one"
	if strings.HasPrefix(key, ComplianceKeyPrefix) {
		id, err := a.senders.ComplianceKeyLogin(key)
		if err != nil {
			return "", false, "unknown-key", invalid
		}
		return id, true, "", ""
	}
	sender, err := a.senders.APIKeyLogin(key)
	if err != nil {
		return "", false, "unknown-key", invalid
	}
	return sender, false, "", ""
}

// messageRequest is the body of POST /v1/messages.
type messageRequest struct {
	To               string
	Subject          string
	Body             string
	Attachments      []attachmentRequest
	ExpiresInSeconds *int64
}

type attachmentRequest struct {
	Filename      string
	ContentType   string
	ContentBase64 string
}

// acceptedBody answers a POST; a replay answers the same.
type acceptedBody struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at"`
}

// statusBody is a message's state, without its recipient or content.
type statusBody struct {
	ID              string `json:"id"`
	Status          string `json:"status"`
	Channel         string `json:"channel"`
	CreatedAt       string `json:"created_at"`
	ExpiresAt       string `json:"expires_at"`
	StatusChangedAt string `json:"status_changed_at"`
}

func newStatusBody(m store.Message) statusBody {
	return statusBody{
		ID: m.ID, Status: string(m.Status), Channel: string(m.Channel),
		CreatedAt: timestamp(m.CreatedAt), ExpiresAt: timestamp(m.ExpiresAt), StatusChangedAt: timestamp(m.StatusChangedAt),
	}
}

type eventsBody struct {
	Events []eventBody `json:"events"`
}

type eventBody struct {
	Seq    uint64            `json:"seq"`
	Time   string            `json:"time"`
	Kind   string            `json:"kind"`
	Actor  string            `json:"actor"`
	Detail map[string]string `json:"detail"`
	Reply  string            `json:"reply,omitempty"` // a replied event's text, for the sender only
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // cannot happen: strings, numbers and maps of strings
		writeProblem(w, internalProblem())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// submit serves POST /v1/messages.
func (a *API) submit(w http.ResponseWriter, r *http.Request, sender string) {
	start := time.Now()
	ctx := r.Context()
	sub, p := a.readSubmission(w, r, sender)
	if p != nil {
		a.cfg.Metrics.Observe(store.ChannelAPI, start, p.refusal())
		a.refused(ctx, sender, p)
		a.answer(w, p)
		return
	}
	acc, err := a.intake.Accept(ctx, sub)
	if err == nil && acc.Replayed {
		// The first request was counted; a replay stores nothing new.
		a.log.InfoContext(ctx, "api submission replayed", "sender", sender, "message", acc.MessageID)
	} else {
		a.cfg.Metrics.Observe(store.ChannelAPI, start, err)
	}
	if err != nil {
		p := a.intakeProblem(err)
		switch p.Status {
		case http.StatusServiceUnavailable:
			a.log.WarnContext(ctx, "api submission deferred", "sender", sender, "reason", p.reason, "err", err)
		case http.StatusInternalServerError:
			a.log.ErrorContext(ctx, "api submission failed", "sender", sender, "reason", p.reason, "err", err)
		default:
			a.refused(ctx, sender, p)
		}
		a.answer(w, p)
		return
	}

	// The times are the stored ones (a replay reads them back), so that a replay answers byte
	// for byte the same.
	body := acceptedBody{ID: acc.MessageID, Status: string(store.StatusAccepted),
		CreatedAt: timestamp(acc.CreatedAt), ExpiresAt: timestamp(acc.ExpiresAt)}
	if !acc.Replayed {
		a.log.InfoContext(ctx, "api message accepted", "sender", sender, "message", acc.MessageID)
	} else {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/v1/messages/"+url.PathEscape(acc.MessageID))
	writeJSON(w, http.StatusCreated, body)
}

func (a *API) refused(ctx context.Context, sender string, p *problem) {
	fields := make([]string, len(p.Errors))
	for i, f := range p.Errors {
		fields[i] = "unknown"
		if knownField.MatchString(f.Field) { // an unknown member's name is the sender's text
			fields[i] = f.Field
		}
	}
	a.log.InfoContext(ctx, "api submission refused", "sender", sender, "status", p.Status, "reason", p.reason, "fields", fields)
}

// intakeProblem is the answer to an error of Intake.Accept.
func (a *API) intakeProblem(err error) *problem {
	var r *RefusedError
	switch {
	case errors.As(err, &r):
		status := http.StatusUnprocessableEntity
		if r.Reason == ReasonTooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		var fields []fieldProblem
		if r.Field != "" {
			fields = append(fields, fieldProblem{Field: apiField(r.Field), Reason: r.Detail})
		}
		return newProblem(status, r.Reason, r.Detail, fields...)
	case Temporary(err):
		return a.unavailable()
	}
	return internalProblem()
}

// knownField matches the request fields the API names in problems, and that may be logged.
var knownField = regexp.MustCompile(`^(to|subject|body|attachments|expires_in_seconds|Idempotency-Key|attachments\[[0-9]+\]\.(filename|content_type|content_base64))$`)

// apiField names an intake field as the API request spells it.
func apiField(intakeField string) string {
	switch intakeField {
	case "expires_in":
		return "expires_in_seconds"
	case "idempotency_key":
		return "Idempotency-Key"
	}
	return intakeField
}

// maxIdempotencyKey is the longest Idempotency-Key the store keeps.
const maxIdempotencyKey = 255

// readSubmission reads, checks and normalises a POST /v1/messages request. Problems with the
// request's form (type, size, JSON, base64, idempotency key) come first, as 400, 413 or 415;
// then everything wrong with its content is reported at once, as 422.
func (a *API) readSubmission(w http.ResponseWriter, r *http.Request, sender string) (Submission, *problem) {
	sub := Submission{Sender: sender, Channel: store.ChannelAPI}
	if p := checkJSONContentType(r.Header.Get("Content-Type")); p != nil {
		return sub, p
	}
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) > 0 {
		if p := checkIdempotencyKey(keys); p != nil {
			return sub, p
		}
		sub.IdempotencyKey = keys[0]
	}
	req, p := a.decodeRequest(w, r)
	if p != nil {
		return sub, p
	}

	var invalid []fieldProblem
	reasonCode := ReasonInvalid
	if a.numbersErr != nil {
		a.log.Error("api cannot read phone numbers; check the configured region and allowed countries", "err", a.numbersErr)
		return sub, internalProblem()
	}
	to, err := a.numbers.NormalizeAPI(req.To)
	var bad *phone.InvalidError
	switch {
	case errors.As(err, &bad):
		// The reason never repeats the number (InvalidError.Message would quote it).
		invalid = append(invalid, fieldProblem{Field: "to", Reason: "the phone number " + bad.Reason})
		reasonCode = ReasonInvalidRecipient
	case err != nil:
		a.log.Error("api cannot read phone numbers; check the configured region", "err", err)
		return sub, internalProblem()
	}
	sub.To = to
	sub.Content = content.Message{Subject: req.Subject, Text: req.Body}
	for i, att := range req.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		data, err := base64.StdEncoding.DecodeString(att.ContentBase64)
		if err != nil {
			return sub, newProblem(http.StatusBadRequest, reasonMalformed, field+".content_base64 is not valid base64",
				fieldProblem{Field: field + ".content_base64", Reason: "must be standard base64 (RFC 4648 §4) with padding"})
		}
		mediaType, params, err := mime.ParseMediaType(att.ContentType)
		contentType := mime.FormatMediaType(mediaType, params)
		switch {
		case att.ContentType == "":
			invalid = append(invalid, fieldProblem{Field: field + ".content_type", Reason: "give the file's media type, e.g. application/pdf"})
		case err != nil, contentType == "":
			invalid = append(invalid, fieldProblem{Field: field + ".content_type", Reason: "is not a media type; write one such as application/pdf"})
		}
		if len(data) == 0 {
			invalid = append(invalid, fieldProblem{Field: field + ".content_base64", Reason: "the file is empty; attach a file with content"})
		}
		sub.Content.Attachments = append(sub.Content.Attachments, content.Attachment{
			Name: content.SafeName(att.Filename, contentType), ContentType: contentType, Data: data,
		})
	}
	if strings.TrimSpace(req.Body) == "" && len(req.Attachments) == 0 {
		invalid = append(invalid, fieldProblem{Field: "body", Reason: "write the message text, or attach a file: an empty message cannot be sent"})
	}
	if s := req.ExpiresInSeconds; s != nil {
		sub.ExpiresIn = time.Duration(math.MaxInt64)
		if *s < int64(math.MaxInt64/time.Second) {
			sub.ExpiresIn = time.Duration(*s) * time.Second
		}
		if *s <= 0 {
			sub.ExpiresIn = -1 // 0 is the intake's "default": an explicit 0 is refused
		}
		if _, err := a.intake.expiry(sub.ExpiresIn); err != nil {
			invalid = append(invalid, fieldProblem{Field: "expires_in_seconds",
				Reason: fmt.Sprintf("must be between 60 and %d seconds", int64(a.maxExpiry()/time.Second))})
		}
	}
	if len(invalid) > 0 {
		if len(invalid) > 1 {
			reasonCode = ReasonInvalid
		}
		detail := "the message cannot be sent as it is: fix the fields listed in errors"
		if reasonCode == ReasonInvalidRecipient {
			detail = "the recipient's phone number cannot be used: " + invalid[0].Reason
		}
		return sub, newProblem(http.StatusUnprocessableEntity, reasonCode, detail, invalid...)
	}
	if sub.IdempotencyKey != "" {
		sub.RequestHash = requestHash(sub)
	}
	return sub, nil
}

func (a *API) maxExpiry() time.Duration {
	if a.intake.MaxExpiry > 0 {
		return a.intake.MaxExpiry
	}
	return maxExpiry
}

// checkJSONContentType accepts application/json, in UTF-8 (RFC 8259 §8.1).
func checkJSONContentType(header string) *problem {
	mediaType, params, err := mime.ParseMediaType(header)
	if err == nil && mediaType == "application/json" {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return newProblem(http.StatusUnsupportedMediaType, reasonUnsupportedType,
		"send the message as JSON, with the header Content-Type: application/json")
}

// checkIdempotencyKey accepts one key of 1 to 255 printable ASCII characters.
func checkIdempotencyKey(keys []string) *problem {
	const why = "must be one header of 1 to 255 printable ASCII characters, e.g. a UUID"
	ok := len(keys) == 1 && len(keys[0]) > 0 && len(keys[0]) <= maxIdempotencyKey
	for i := 0; ok && i < len(keys[0]); i++ {
		ok = keys[0][i] >= 0x20 && keys[0][i] <= 0x7e
	}
	if ok {
		return nil
	}
	return newProblem(http.StatusBadRequest, reasonMalformed, "the Idempotency-Key header "+why,
		fieldProblem{Field: "Idempotency-Key", Reason: why})
}

// decodeRequest reads the JSON body strictly: one object, members spelled exactly as
// documented (encoding/json alone would also take "TO" for "to"), no unknown members, and
// nothing after the object.
func (a *API) decodeRequest(w http.ResponseWriter, r *http.Request) (messageRequest, *problem) {
	var req messageRequest
	tooLarge := newProblem(http.StatusRequestEntityTooLarge, ReasonTooLarge,
		fmt.Sprintf("the request is larger than %d bytes; send smaller or fewer attachments", a.cfg.MaxRequestBytes))
	if r.ContentLength > a.cfg.MaxRequestBytes {
		return req, tooLarge
	}
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, a.cfg.MaxRequestBytes)}
	dec := json.NewDecoder(body)
	var raw json.RawMessage
	err := dec.Decode(&raw)
	end := dec.InputOffset() // where the first value ends
	trailing := false
	if err == nil {
		// Anything but white space after the object is refused, a second value included.
		if _, err = dec.Token(); err == io.EOF {
			err = nil
		} else if err == nil {
			trailing = true
		}
	}
	// notJSON is the answer to a body that does not read as one JSON value, with the byte
	// offset (from 0) where reading stopped, in the detail and in errors[0].offset.
	notJSON := func(offset int64, detail, reason string) *problem {
		return newProblem(http.StatusBadRequest, reasonMalformed, fmt.Sprintf(detail, offset),
			fieldProblem{Field: requestBodyField, Reason: fmt.Sprintf(reason, offset), Offset: &offset})
	}
	var maxErr *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &maxErr):
		return req, tooLarge
	case errors.Is(err, io.EOF):
		return req, newProblem(http.StatusBadRequest, reasonMalformed, "the request body is empty; send the message as a JSON object",
			fieldProblem{Field: requestBodyField, Reason: "is empty"})
	case raw != nil && (trailing || errors.As(err, &syntaxErr)):
		return req, notJSON(end, "the request body has data after the JSON object, which ends at byte %d: send exactly one object",
			"has data after the JSON object, which ends at byte %d")
	case errors.As(err, &syntaxErr):
		// Offset counts the bytes read up to and including the one at fault.
		return req, notJSON(max(0, syntaxErr.Offset-1), "the request body is not valid JSON at byte %d ("+jsonSyntaxReason(syntaxErr)+"): send one JSON object",
			"is not valid JSON at byte %d")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return req, notJSON(body.n, "the request body ends at byte %d inside the JSON object: close every string, array and object",
			"ends at byte %d inside the JSON object")
	case err != nil:
		return req, newProblem(http.StatusBadRequest, reasonMalformed, "the request body could not be read: send one JSON object",
			fieldProblem{Field: requestBodyField, Reason: "could not be read"})
	}

	var attachments []json.RawMessage
	p := decodeObject(raw, "", map[string]any{
		"to": &req.To, "subject": &req.Subject, "body": &req.Body,
		"attachments": &attachments, "expires_in_seconds": &req.ExpiresInSeconds,
	})
	if p != nil {
		return req, p
	}
	for i, rawAtt := range attachments {
		var att attachmentRequest
		p := decodeObject(rawAtt, fmt.Sprintf("attachments[%d].", i), map[string]any{
			"filename": &att.Filename, "content_type": &att.ContentType, "content_base64": &att.ContentBase64,
		})
		if p != nil {
			return req, p
		}
		req.Attachments = append(req.Attachments, att)
	}
	return req, nil
}

// requestBodyField is the field of a problem with the request body as a whole. Member names
// have no spaces, so it cannot be mistaken for one.
const requestBodyField = "request body"

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// jsonSyntaxReason is what encoding/json found wrong, without any of the sender's text: its
// messages quote at most one character ("invalid character 'x' looking for …").
func jsonSyntaxReason(err *json.SyntaxError) string {
	return strings.ToValidUTF8(err.Error(), "\uFFFD")
}

// decodeObject decodes the JSON object raw member by member into fields, by exact name; prefix
// starts the field names in problems.
func decodeObject(raw json.RawMessage, prefix string, fields map[string]any) *problem {
	what, field := "the request body", requestBodyField
	if prefix != "" {
		what = strings.TrimSuffix(prefix, ".")
		field = what
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return newProblem(http.StatusBadRequest, reasonMalformed, what+" must be a JSON object",
			fieldProblem{Field: field, Reason: "must be a JSON object"})
	}
	for name, value := range members {
		dst, ok := fields[name]
		if !ok {
			field := prefix + name
			return newProblem(http.StatusBadRequest, reasonMalformed,
				fmt.Sprintf("unknown field %q in %s: remove it (names are case-sensitive; see /v1/openapi.yaml)", field, what),
				fieldProblem{Field: field, Reason: "unknown field"})
		}
		if err := json.Unmarshal(value, dst); err != nil {
			field := prefix + name
			want := "a string"
			switch dst.(type) {
			case **int64:
				want = "a whole number"
			case *[]json.RawMessage:
				want = "an array of objects"
			}
			return newProblem(http.StatusBadRequest, reasonMalformed, fmt.Sprintf("%s must be %s", field, want),
				fieldProblem{Field: field, Reason: "must be " + want})
		}
	}
	return nil
}

// requestHash is the SHA-256 of the canonical form of a submission, which an idempotency key
// is bound to. It covers what the message will be, after normalisation: the recipient in
// E.164, subject, body, each attachment's file name, media type and decoded bytes, and the
// expiry as requested (0 for the default). So the same message written with other white
// space, member order, phone number punctuation or base64 line breaks hashes the same. Each
// value is length-prefixed, so no two different submissions share an encoding.
func requestHash(s Submission) [32]byte {
	h := sha256.New()
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte("securetext-api/message/v1"))
	put([]byte(s.To))
	put([]byte(s.Content.Subject))
	put([]byte(s.Content.Text))
	binary.BigEndian.PutUint64(n[:], uint64(len(s.Content.Attachments)))
	h.Write(n[:])
	for _, att := range s.Content.Attachments {
		put([]byte(att.Name))
		put([]byte(att.ContentType))
		put(att.Data)
	}
	binary.BigEndian.PutUint64(n[:], uint64(s.ExpiresIn))
	h.Write(n[:])
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// validMessageID accepts what a message id can be in a URL: ids are lowercase base32 (see
// store.NewID); anything else cannot name a message, and is not looked up or logged.
func validMessageID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func messageNotFound() *problem {
	return newProblem(http.StatusNotFound, reasonNotFound,
		"no message with this id was sent with your API key; check the id from the Location of your POST")
}

// ownMessage returns the message named in the request's path if sender sent it. Another
// sender's message is "not found" too: its existence is not revealed.
func (a *API) ownMessage(ctx context.Context, r *http.Request, sender string) (store.Message, *problem) {
	id := r.PathValue("id")
	if !validMessageID(id) {
		return store.Message{}, messageNotFound()
	}
	m, err := a.intake.Store.Message(ctx, id)
	switch {
	case err == nil && m.Sender == sender:
		return m, nil
	case err == nil, errors.Is(err, store.ErrNotFound):
		return store.Message{}, messageNotFound()
	}
	return store.Message{}, a.storeProblem(ctx, "read message", id, err)
}

// storeProblem is the answer to a store error other than not found.
func (a *API) storeProblem(ctx context.Context, what, id string, err error) *problem {
	if store.IsTemporary(err) || errors.Is(err, context.DeadlineExceeded) {
		a.log.WarnContext(ctx, "api "+what+" deferred", "message", id, "reason", ReasonUnavailable, "err", err)
		return a.unavailable()
	}
	a.log.ErrorContext(ctx, "api "+what+" failed", "message", id, "reason", ReasonInternal, "err", err)
	return internalProblem()
}

// status serves GET /v1/messages/{id}.
func (a *API) status(w http.ResponseWriter, r *http.Request, sender string) {
	m, p := a.ownMessage(r.Context(), r, sender)
	if p != nil {
		a.answer(w, p)
		return
	}
	writeJSON(w, http.StatusOK, newStatusBody(m))
}

// revoke serves DELETE /v1/messages/{id}: the sender withdraws the message. The viewer checks
// the status on every request, so the link stops working when this answers. Revoking a
// revoked message answers the same; a message that expired or was purged cannot be revoked.
func (a *API) revoke(w http.ResponseWriter, r *http.Request, sender string) {
	ctx := r.Context()
	m, p := a.ownMessage(ctx, r, sender)
	if p != nil {
		a.answer(w, p)
		return
	}
	if m.Status != store.StatusRevoked {
		err := a.intake.Store.Transition(ctx, m.ID, store.StatusRevoked, audit.Event{
			Kind: audit.KindRevoked, Actor: sender, MessageID: m.ID, Detail: map[string]string{"channel": string(store.ChannelAPI)},
		})
		switch {
		case err == nil:
			a.log.InfoContext(ctx, "api message revoked", "sender", sender, "message", m.ID)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			// The status is final: maybe revoked meanwhile by a concurrent request, which
			// the re-read below shows.
		default:
			a.answer(w, a.storeProblem(ctx, "revoke message", m.ID, err))
			return
		}
		id := m.ID
		switch m, err = a.intake.Store.Message(ctx, id); {
		case errors.Is(err, store.ErrNotFound):
			a.answer(w, messageNotFound())
			return
		case err != nil:
			a.answer(w, a.storeProblem(ctx, "read revoked message", id, err))
			return
		}
	}
	if m.Status != store.StatusRevoked {
		a.log.InfoContext(ctx, "api revoke refused", "sender", sender, "message", m.ID, "reason", reasonFinal, "status", m.Status)
		a.answer(w, newProblem(http.StatusConflict, reasonFinal,
			fmt.Sprintf("the message is %s, which is final: its link no longer works and it cannot be revoked", m.Status)))
		return
	}
	writeJSON(w, http.StatusOK, newStatusBody(m))
}

// events serves GET /v1/messages/{id}/events: the message's audit trail.
func (a *API) events(w http.ResponseWriter, r *http.Request, sender string) {
	ctx := r.Context()
	m, p := a.ownMessage(ctx, r, sender)
	if p != nil {
		a.answer(w, p)
		return
	}
	events, err := a.intake.Store.MessageEvents(ctx, m.ID)
	if err != nil {
		a.answer(w, a.storeProblem(ctx, "read message events", m.ID, err))
		return
	}
	var replies map[string]string
	if slices.ContainsFunc(events, func(e audit.Event) bool { return e.Kind == audit.KindReplied }) {
		if replies, err = a.openReplies(ctx, m); err != nil {
			a.answer(w, a.storeProblem(ctx, "open replies", m.ID, err))
			return
		}
	}
	body := eventsBody{Events: make([]eventBody, 0, len(events))}
	for _, e := range events {
		detail := e.Detail
		if detail == nil {
			detail = map[string]string{}
		}
		ev := eventBody{Seq: e.Seq, Time: timestamp(e.Time), Kind: string(e.Kind), Actor: e.Actor, Detail: detail}
		if e.Kind == audit.KindReplied {
			ev.Reply = replies[detail["reply"]]
		}
		body.Events = append(body.Events, ev)
	}
	writeJSON(w, http.StatusOK, body)
}

// openReplies returns the text of each reply to message m by reply id: none without Keys or
// once the message is purged (its key and replies are gone).
func (a *API) openReplies(ctx context.Context, m store.Message) (map[string]string, error) {
	if a.cfg.Keys == nil || m.WrappedKey == "" {
		return nil, nil
	}
	replies, err := a.intake.Store.Replies(ctx, m.ID)
	if err != nil || len(replies) == 0 {
		return nil, err
	}
	key, err := a.cfg.Keys.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		if keystore.IsTemporary(err) {
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		return nil, err
	}
	defer envelope.Zero(key)
	texts, err := sealed.Message{Tenant: a.intake.Tenant, ID: m.ID, Key: key}.OpenReplies(replies)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]string, len(replies))
	for i, rp := range replies {
		byID[rp.ID] = texts[i]
	}
	return byID, nil
}
