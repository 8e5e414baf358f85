package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/gctune"
	"github.com/securetext/securetext/workloads/store"
)

// The tests talk to the API over HTTP on 127.0.0.1 through specTransport, which checks every
// request and every response against openapi.yaml: a test cannot send or receive anything
// the document does not describe without failing.

// Test recipients are 202-555-0180…0199 (reserved for fiction); leakPattern finds any of them,
// in any spelling, and the marker that every test subject, body and file name carries.
var leakPattern = regexp.MustCompile(`555[-. ]?01[89][0-9]|PHI-`)

// apiDocument is openapi.yaml, loaded and validated once.
var apiDocument = sync.OnceValues(func() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDocument)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
})

// expectation says how a request relates to openapi.yaml.
type expectation int

const (
	specValid    expectation = iota // the request matches the document
	specInvalid                     // the request violates the document (and the API must refuse it)
	specUnlisted                    // the path or method is not in the document: 404 or 405 expected
)

type expectationKey struct{}

// reporter is the part of testing.TB that specTransport reports to.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// specTransport validates each request and response against the document. A request must
// match the document unless the test says otherwise; every response must, including its
// status, headers and body, and every response must carry the security headers.
type specTransport struct {
	t      reporter
	doc    *openapi3.T
	router routers.Router
	base   http.RoundTripper
	seen   func(body []byte) // every response body, for leak checks
}

func newSpecTransport(t testing.TB, base http.RoundTripper, seen func([]byte)) *specTransport {
	t.Helper()
	doc, err := apiDocument()
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &specTransport{t: t, doc: doc, router: router, base: base, seen: seen}
}

// bearerAuthentication is what the document's security scheme asks: a bearer token.
func bearerAuthentication(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, token, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

func (st *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st.t.Helper()
	ctx := req.Context()
	want, _ := ctx.Value(expectationKey{}).(expectation)
	var reqBody []byte
	if req.Body != nil {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
	}
	out := req.Clone(ctx)
	if req.Body != nil {
		out.Body, out.GetBody = io.NopCloser(bytes.NewReader(reqBody)), nil
	}
	check := req.Clone(ctx)
	check.Body = io.NopCloser(bytes.NewReader(reqBody))
	name := req.Method + " " + req.URL.Path

	route, params, routeErr := st.router.FindRoute(check)
	if routeErr == nil && !routeMatches(route.Path, params, req.URL.Path) {
		// The legacy router also matches "/v1/messages" and "/v1/messages/x/" to
		// "/v1/messages/{id}"; the API does not.
		routeErr = routers.ErrPathNotFound
	}
	var input *openapi3filter.RequestValidationInput
	switch {
	case routeErr != nil && want != specUnlisted:
		st.t.Errorf("%s: not in openapi.yaml: %v", name, routeErr)
	case routeErr == nil && want == specUnlisted:
		st.t.Errorf("%s: the test expects an unlisted route, but openapi.yaml lists it", name)
	case routeErr != nil:
		// Unlisted routes answer the components' NotFound or MethodNotAllowed response.
		op := openapi3.NewOperation()
		op.Responses = openapi3.NewResponses(
			openapi3.WithStatus(http.StatusNotFound, st.doc.Components.Responses["NotFound"]),
			openapi3.WithStatus(http.StatusMethodNotAllowed, st.doc.Components.Responses["MethodNotAllowed"]),
		)
		route = &routers.Route{Spec: st.doc, Path: req.URL.Path, Method: req.Method, Operation: op}
		input = &openapi3filter.RequestValidationInput{Request: check, Route: route}
	default:
		input = &openapi3filter.RequestValidationInput{
			Request: check, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: bearerAuthentication},
		}
		err := openapi3filter.ValidateRequest(ctx, input)
		switch {
		case want == specValid && err != nil:
			st.t.Errorf("%s: request does not match openapi.yaml: %v", name, err)
		case want == specInvalid && err == nil:
			st.t.Errorf("%s: the test sends a request that violates the document, but openapi.yaml accepts it", name)
		}
		input.Request = req.Clone(ctx) // validation consumed check's body
	}

	resp, err := st.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if st.seen != nil {
		st.seen(body)
	}
	for h, v := range map[string]string{
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := resp.Header.Get(h); got != v {
			st.t.Errorf("%s: answer %d has %s %q, want %q", name, resp.StatusCode, h, got, v)
		}
	}
	if input != nil {
		err = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
			RequestValidationInput: input, Status: resp.StatusCode, Header: resp.Header,
			Body:    io.NopCloser(bytes.NewReader(body)),
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		})
		if err != nil {
			st.t.Errorf("%s: answer %d does not match openapi.yaml: %v\n%s", name, resp.StatusCode, err, body)
		}
	}
	return resp, nil
}

// routeMatches reports whether path is template with params filled in, each non-empty.
func routeMatches(template string, params map[string]string, path string) bool {
	for name, value := range params {
		if value == "" {
			return false
		}
		template = strings.ReplaceAll(template, "{"+name+"}", value)
	}
	return template == path
}

// lockedBuffer collects log lines and response bodies from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// otherCredentials are a second sender's, hashed once per test binary.
var otherCredentials = sync.OnceValues(func() (credentials, error) {
	snd, pass, key, err := NewCredentials(context.Background(), "portal", "portal@clinic.example")
	return credentials{snd, pass, key}, err
})

// apiEnv is a fixture with the API served on 127.0.0.1, a second sender ("portal"), and a
// client whose traffic specTransport checks. At the end of each test it checks that no log
// line and no response holds a test phone number or any message content.
type apiEnv struct {
	*fixture
	URL      string
	OtherKey string // the API key of sender "portal"
	API      *API
	Registry *prometheus.Registry
	client   *http.Client
	logs     *lockedBuffer
	bodies   *lockedBuffer
}

func newAPIEnv(t *testing.T, b backend, cfg APIConfig) *apiEnv {
	t.Helper()
	f := newFixture(t, b)
	other, err := otherCredentials()
	if err != nil {
		t.Fatal(err)
	}
	senders, err := NewSenders([]Sender{f.Sender, other.sender})
	if err != nil {
		t.Fatal(err)
	}
	e := &apiEnv{fixture: f, OtherKey: other.key, Registry: prometheus.NewRegistry(), logs: &lockedBuffer{}, bodies: &lockedBuffer{}}
	cfg.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Metrics = NewMetrics(e.Registry)
	e.API = NewAPI(cfg, f.Intake, senders)
	srv := httptest.NewServer(e.API)
	t.Cleanup(srv.Close)
	e.URL = srv.URL
	e.client = &http.Client{
		Transport: newSpecTransport(t, srv.Client().Transport, func(b []byte) { _, _ = e.bodies.Write(append(b, '\n')) }),
		Timeout:   time.Minute,
	}
	t.Cleanup(func() {
		if m := leakPattern.FindString(e.bodies.String()); m != "" {
			t.Errorf("a response holds a phone number or message content: %q", m)
		}
		if m := leakPattern.FindString(e.logs.String()); m != "" {
			t.Errorf("a log line holds a phone number or message content: %q\n%s", m, e.logs.String())
		}
	})
	return e
}

// option changes a request before it is sent.
type option func(*http.Request) *http.Request

func expect(x expectation) option {
	return func(r *http.Request) *http.Request {
		return r.WithContext(context.WithValue(r.Context(), expectationKey{}, x))
	}
}

func header(name, value string) option {
	return func(r *http.Request) *http.Request { r.Header.Add(name, value); return r }
}

func withoutHeader(name string) option {
	return func(r *http.Request) *http.Request { r.Header.Del(name); return r }
}

func authorization(value string) option {
	return func(r *http.Request) *http.Request { r.Header.Set("Authorization", value); return r }
}

func asKey(key string) option { return authorization("Bearer " + key) }

// chunked hides the body's length, so that it travels chunked.
func chunked() option {
	return func(r *http.Request) *http.Request { r.ContentLength = -1; return r }
}

// do sends a request as sender "ehr" (JSON if body is not nil) and returns the answer and
// its body.
func (e *apiEnv) do(t testing.TB, method, path string, body []byte, opts ...option) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		req = o(req)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post submits msg and returns the answer.
func (e *apiEnv) post(t testing.TB, msg map[string]any, opts ...option) (*http.Response, []byte) {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/messages", jsonBody(t, msg), opts...)
}

// send submits msg, which must be accepted, and returns the answer's body.
func (e *apiEnv) send(t testing.TB, msg map[string]any, opts ...option) acceptedBody {
	t.Helper()
	resp, body := e.post(t, msg, opts...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s, want 201", resp.StatusCode, body)
	}
	return decodeAs[acceptedBody](t, body)
}

func decodeAs[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, b, err)
	}
	return v
}

// wantProblem checks that the answer is the problem with this status and reason, naming
// exactly these fields.
func wantProblem(t testing.TB, resp *http.Response, body []byte, status int, reason string, fields ...string) problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d %s, want %d", resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	p := decodeAs[problem](t, body)
	if p.Type != problemTypeBase+reason || p.Status != status || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want type %s and status %d", p, problemTypeBase+reason, status)
	}
	var got []string
	for _, f := range p.Errors {
		got = append(got, f.Field)
		if f.Reason == "" {
			t.Errorf("field %s has no reason", f.Field)
		}
	}
	if !slices.Equal(got, fields) {
		t.Errorf("problem names fields %q, want %q", got, fields)
	}
	return p
}

// counter returns the value of a counter (or a histogram's count) with these labels.
func (e *apiEnv) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				for i := 0; i+1 < len(labels); i += 2 {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						matched++
					}
				}
			}
			if matched != len(labels)/2 {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// message is a valid submission to number (e.g. "(202) 555-0187").
func message(number string) map[string]any {
	return map[string]any{"to": number, "subject": "PHI-subject Lab results", "body": "PHI-body Your A1C is 5.4."}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func parseTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return tm
}

// openMessage decrypts a stored message as the viewer would.
func (e *apiEnv) openMessage(t testing.TB, id string) content.Message {
	t.Helper()
	ctx := context.Background()
	m, err := e.Store.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := e.Store.MessageParts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := e.Keys.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	var plain []content.Part
	for _, p := range parts {
		if bytes.Contains(p.Ciphertext, []byte("PHI-")) {
			t.Errorf("part %s is stored in the clear", p.Name)
		}
		pt, err := envelope.Open(key, envelope.AssociatedData{Tenant: testTenant, MessageID: id, Part: p.Name}, p.Ciphertext)
		if err != nil {
			t.Fatalf("open %s: %v", p.Name, err)
		}
		plain = append(plain, content.Part{Name: p.Name, Plaintext: pt})
	}
	got, err := content.Decode(plain)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAPISubmitStoresEncrypted(t *testing.T) {
	for _, b := range []backend{postgresBackend, sqliteBackend} {
		t.Run(string(b), func(t *testing.T) {
			e := newAPIEnv(t, b, APIConfig{})
			ctx := context.Background()
			msg := message("(202) 555-0187")
			msg["attachments"] = []map[string]any{
				{"filename": "PHI-file a1c.pdf", "content_type": "application/pdf", "content_base64": b64("%PDF-1.7 PHI-data")},
				{"content_type": "Text/Plain; Charset=UTF-8", "content_base64": b64("PHI-note")},
				// The name is cut to its last element and keeps the extension of its type.
				{"filename": "../../etc/passwd", "content_type": "application/pdf", "content_base64": b64("%PDF-1.7 PHI-2")},
			}
			resp, body := e.post(t, msg)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("POST: %d %s", resp.StatusCode, body)
			}
			acc := decodeAs[acceptedBody](t, body)
			if loc := resp.Header.Get("Location"); loc != "/v1/messages/"+acc.ID || acc.Status != "accepted" {
				t.Errorf("Location %q, body %+v", loc, acc)
			}
			if resp.Header.Get("Idempotent-Replayed") != "" {
				t.Error("a first request is marked replayed")
			}
			created, expires := parseTime(t, acc.CreatedAt), parseTime(t, acc.ExpiresAt)
			// The intake computes the expiry just before the store stamps the creation time.
			if d := expires.Sub(created); d > 7*24*time.Hour || d < 7*24*time.Hour-time.Hour {
				t.Errorf("default expiry %v, want 7 days", d)
			}

			m, err := e.Store.Message(ctx, acc.ID)
			if err != nil {
				t.Fatal(err)
			}
			if m.Sender != "ehr" || m.Channel != store.ChannelAPI || m.Status != store.StatusAccepted ||
				!m.CreatedAt.Equal(created) || !m.ExpiresAt.Equal(expires) {
				t.Errorf("stored %+v, answered %+v", m, acc)
			}
			rc, err := e.Store.Recipient(ctx, m.RecipientID)
			if err != nil || rc.Phone != "+12025550187" {
				t.Errorf("recipient stored as %q (%v), want the E.164 number", rc.Phone, err)
			}
			got := e.openMessage(t, acc.ID)
			if got.Subject != "PHI-subject Lab results" || got.Text != "PHI-body Your A1C is 5.4." || len(got.Attachments) != 3 {
				t.Fatalf("decrypted %+v", got)
			}
			if a := got.Attachments[0]; a.Name != "PHI-file a1c.pdf" || a.ContentType != "application/pdf" || string(a.Data) != "%PDF-1.7 PHI-data" {
				t.Errorf("attachment 0 %q %q %q", a.Name, a.ContentType, a.Data)
			}
			if a := got.Attachments[1]; a.Name != "" || a.ContentType != "text/plain; charset=UTF-8" || string(a.Data) != "PHI-note" {
				t.Errorf("attachment 1 %q %q %q", a.Name, a.ContentType, a.Data)
			}
			if a := got.Attachments[2]; a.Name != "passwd.pdf" || a.ContentType != "application/pdf" {
				t.Errorf("attachment 2 %q %q, want passwd.pdf served as application/pdf", a.Name, a.ContentType)
			}
			events, err := e.Store.MessageEvents(ctx, acc.ID)
			if err != nil || len(events) != 1 || events[0].Kind != audit.KindAccepted || events[0].Actor != "ehr" ||
				events[0].Detail["channel"] != "api" || events[0].Detail["parts"] != "4" {
				t.Errorf("events %+v, %v", events, err)
			}

			// Attachments without a body, with an expiry.
			only := map[string]any{"to": "+1 202 555 0188", "expires_in_seconds": 259200,
				"attachments": []map[string]any{{"filename": "PHI-scan.png", "content_type": "image/png", "content_base64": b64("PHI-png")}}}
			acc2 := e.send(t, only)
			if d := parseTime(t, acc2.ExpiresAt).Sub(parseTime(t, acc2.CreatedAt)); d > 72*time.Hour || d < 71*time.Hour {
				t.Errorf("expiry %v, want 72h", d)
			}
			if got := e.openMessage(t, acc2.ID); got.Text != "" || len(got.Attachments) != 1 || string(got.Attachments[0].Data) != "PHI-png" {
				t.Errorf("decrypted %+v", got)
			}
			if n := e.counter(t, "securetext_gateway_messages_accepted_total", "channel", "api"); n != 2 {
				t.Errorf("accepted counter %v, want 2", n)
			}
			if n := e.counter(t, "securetext_gateway_accept_duration_seconds", "channel", "api", "outcome", "accepted"); n != 2 {
				t.Errorf("latency observations %v, want 2", n)
			}
		})
	}
}

func TestAPIStatus(t *testing.T) {
	e := newAPIEnv(t, postgresBackend, APIConfig{})
	acc := e.send(t, message("202-555-0189"))
	resp, body := e.do(t, http.MethodGet, "/v1/messages/"+acc.ID, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	st := decodeAs[statusBody](t, body)
	if st.ID != acc.ID || st.Status != "accepted" || st.Channel != "api" || st.CreatedAt != acc.CreatedAt ||
		st.ExpiresAt != acc.ExpiresAt || st.StatusChangedAt != acc.CreatedAt {
		t.Errorf("status %+v after accepting %+v", st, acc)
	}
	err := e.Store.Transition(context.Background(), acc.ID, store.StatusNotified,
		audit.Event{Kind: audit.KindNotified, Actor: "system", Detail: map[string]string{"provider": "console"}})
	if err != nil {
		t.Fatal(err)
	}
	_, body = e.do(t, http.MethodGet, "/v1/messages/"+acc.ID, nil)
	if st2 := decodeAs[statusBody](t, body); st2.Status != "notified" || !parseTime(t, st2.StatusChangedAt).After(parseTime(t, st.StatusChangedAt)) {
		t.Errorf("status %+v after the notifier's news, before %+v", st2, st)
	}
}

func TestAPIRevoke(t *testing.T) {
	e := newAPIEnv(t, postgresBackend, APIConfig{})
	ctx := context.Background()
	acc := e.send(t, message("(202) 555-0190"))
	path := "/v1/messages/" + acc.ID

	resp, body := e.do(t, http.MethodDelete, path, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	revoked := decodeAs[statusBody](t, body)
	if revoked.Status != "revoked" || revoked.ID != acc.ID || parseTime(t, revoked.StatusChangedAt).Before(parseTime(t, acc.CreatedAt)) {
		t.Errorf("DELETE answered %+v", revoked)
	}
	_, body = e.do(t, http.MethodGet, path, nil)
	if got := decodeAs[statusBody](t, body); got != revoked {
		t.Errorf("GET after revoke %+v, want %+v", got, revoked)
	}
	// The notification, not yet sent, is cancelled.
	if entries, err := e.Store.ClaimOutbox(ctx, time.Now(), 10, time.Minute); err != nil || len(entries) != 0 {
		t.Errorf("outbox after revoke: %v, %v", entries, err)
	}

	// Revoking again is the same answer, and audits nothing more.
	resp, body = e.do(t, http.MethodDelete, path, nil)
	if resp.StatusCode != http.StatusOK || decodeAs[statusBody](t, body) != revoked {
		t.Errorf("second DELETE: %d %s", resp.StatusCode, body)
	}
	if _, err := e.Store.SequenceAudit(ctx, 100); err != nil {
		t.Fatal(err)
	}
	_, body = e.do(t, http.MethodGet, path+"/events", nil)
	events := decodeAs[eventsBody](t, body).Events
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
		if ev.Seq == 0 {
			t.Errorf("event %+v not chained after SequenceAudit", ev)
		}
	}
	if !slices.Equal(kinds, []string{"accepted", "revoked"}) {
		t.Fatalf("events %+v, want accepted then revoked", events)
	}
	if r := events[1]; r.Actor != "ehr" || r.Detail["channel"] != "api" || len(r.Detail) != 1 || r.Seq != events[0].Seq+1 {
		t.Errorf("revoked event %+v", r)
	}

	// Expired and purged are final: 409, and nothing changes.
	expired := e.send(t, message("(202) 555-0190"))
	if err := e.Store.Transition(ctx, expired.ID, store.StatusExpired, audit.Event{Kind: audit.KindExpired, Actor: "system"}); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(t, http.MethodDelete, "/v1/messages/"+expired.ID, nil)
	p := wantProblem(t, resp, body, http.StatusConflict, reasonFinal)
	if !strings.Contains(p.Detail, "expired") {
		t.Errorf("409 detail %q does not say why", p.Detail)
	}
	_, body = e.do(t, http.MethodGet, "/v1/messages/"+expired.ID, nil)
	if st := decodeAs[statusBody](t, body); st.Status != "expired" {
		t.Errorf("expired message is now %s", st.Status)
	}
	purged := e.send(t, message("(202) 555-0190"))
	if err := e.Store.Purge(ctx, purged.ID, audit.Event{Kind: audit.KindPurged, Actor: "system"}); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(t, http.MethodDelete, "/v1/messages/"+purged.ID, nil)
	wantProblem(t, resp, body, http.StatusConflict, reasonFinal)

	// Events before chaining have seq 0.
	fresh := e.send(t, message("(202) 555-0190"))
	_, body = e.do(t, http.MethodGet, "/v1/messages/"+fresh.ID+"/events", nil)
	if evs := decodeAs[eventsBody](t, body).Events; len(evs) != 1 || evs[0].Seq != 0 || evs[0].Kind != "accepted" || evs[0].Actor != "ehr" {
		t.Errorf("unchained events %+v", evs)
	}
}

// A patient's reply (written in the viewer) reaches the sender in the message's events: the
// text rides on the replied event while the message lives, and needs the keystore.
func TestAPIEventsCarryReplies(t *testing.T) {
	ctx := context.Background()
	e := newAPIEnv(t, sqliteBackend, APIConfig{Keys: nil})
	acc := e.send(t, message("(202) 555-0192"))
	m, err := e.Store.Message(ctx, acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	const text = "Tuesday works for me."
	replyID := store.NewID()
	key, err := e.Local.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := envelope.Seal(key, envelope.AssociatedData{Tenant: e.Intake.Tenant, MessageID: acc.ID, Part: "reply/" + replyID}, []byte(text))
	envelope.Zero(key)
	if err != nil {
		t.Fatal(err)
	}
	err = e.Store.AddReply(ctx, store.Reply{ID: replyID, MessageID: acc.ID, Ciphertext: sealed}, 5,
		audit.Event{Kind: audit.KindReplied, Actor: "patient", Detail: map[string]string{"reply": replyID}})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/messages/" + acc.ID + "/events"
	replied := func(body []byte) eventBody {
		t.Helper()
		for _, ev := range decodeAs[eventsBody](t, body).Events {
			if ev.Kind == "replied" {
				return ev
			}
		}
		t.Fatalf("no replied event in %s", body)
		return eventBody{}
	}

	// Without Keys the API cannot open replies: the event comes without text.
	_, body := e.do(t, http.MethodGet, path, nil)
	if ev := replied(body); ev.Reply != "" || ev.Detail["reply"] != replyID {
		t.Errorf("without keys: %+v", ev)
	}
	e.API.cfg.Keys = e.Keys
	_, body = e.do(t, http.MethodGet, path, nil)
	if ev := replied(body); ev.Reply != text || ev.Actor != "patient" {
		t.Errorf("replied event %+v, want the patient's text", ev)
	}
	// The other sender does not see the message at all.
	resp, _ := e.do(t, http.MethodGet, path, nil, asKey(e.OtherKey))
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("other sender: %d, want 404", resp.StatusCode)
	}

	e.KeystoreDown()
	resp, body = e.do(t, http.MethodGet, path, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || bytes.Contains(body, []byte(text)) {
		t.Errorf("keystore down: %d %s, want 503 with Retry-After", resp.StatusCode, body)
	}
	e.KeystoreUp()

	if err := e.Store.Purge(ctx, acc.ID, audit.Event{Kind: audit.KindPurged, Actor: "retention"}); err != nil {
		t.Fatal(err)
	}
	_, body = e.do(t, http.MethodGet, path, nil)
	if ev := replied(body); ev.Reply != "" {
		t.Errorf("after purge the reply is still readable: %+v", ev)
	}
}

func TestAPIIdempotency(t *testing.T) {
	e := newAPIEnv(t, postgresBackend, APIConfig{})
	msg := message("(202) 555-0191")
	key := header("Idempotency-Key", "9f1c2a6e-0b7d-4e8a-a1c3-5d2f7e9b4c10")

	resp, first := e.post(t, msg, key)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first POST: %d %v %s", resp.StatusCode, resp.Header, first)
	}
	location := resp.Header.Get("Location")
	resp, again := e.post(t, msg, key)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "true" ||
		resp.Header.Get("Location") != location || !bytes.Equal(again, first) {
		t.Fatalf("replay: %d %v %s, first answer %s", resp.StatusCode, resp.Header, again, first)
	}
	// The same request written differently (member order, white space, number format) is
	// the same request.
	raw := `{ "body" : "PHI-body Your A1C is 5.4.",
		"subject":"PHI-subject Lab results",   "to": "+1 202 555 0191" }`
	resp, again = e.do(t, http.MethodPost, "/v1/messages", []byte(raw), key)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again, first) {
		t.Fatalf("replay written differently: %d %s", resp.StatusCode, again)
	}
	if n := e.messageCount(); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	if n := e.counter(t, "securetext_gateway_messages_accepted_total", "channel", "api"); n != 1 {
		t.Errorf("accepted counter %v, want 1: a replay is not counted", n)
	}

	// The key used for another request: 422, whatever differs.
	for name, change := range map[string]func(map[string]any){
		"body":      func(m map[string]any) { m["body"] = "PHI-body Your A1C is 5.5." },
		"recipient": func(m map[string]any) { m["to"] = "(202) 555-0192" },
		"expiry":    func(m map[string]any) { m["expires_in_seconds"] = 3600 },
		"attachment": func(m map[string]any) {
			m["attachments"] = []map[string]any{{"content_type": "text/plain", "content_base64": b64("PHI-x")}}
		},
	} {
		other := message("(202) 555-0191")
		change(other)
		resp, body := e.post(t, other, key)
		p := wantProblem(t, resp, body, http.StatusUnprocessableEntity, ReasonIdempotencyConflict, "Idempotency-Key")
		if !strings.Contains(p.Detail, "new key") {
			t.Errorf("%s: detail %q does not say to use a new key", name, p.Detail)
		}
	}

	// Keys are scoped to the sender: another sender's same key stores its own message.
	resp, body := e.post(t, msg, key, asKey(e.OtherKey))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "" ||
		decodeAs[acceptedBody](t, body).ID == decodeAs[acceptedBody](t, first).ID {
		t.Errorf("other sender, same key: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	// The first result is replayed even after the message changed.
	if resp, body := e.do(t, http.MethodDelete, location, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	resp, again = e.post(t, msg, key)
	if resp.StatusCode != http.StatusCreated || !bytes.Equal(again, first) {
		t.Errorf("replay after revoke: %d %s", resp.StatusCode, again)
	}
	if n := e.messageCount(); n != 1 {
		t.Errorf("%d messages waiting to be sent, want 1 (the other sender's)", n)
	}
}

func TestAPIIdempotencyConcurrent(t *testing.T) {
	e := newAPIEnv(t, postgresBackend, APIConfig{})
	const n = 16
	msg := jsonBody(t, message("(202) 555-0193"))
	var (
		start    = make(chan struct{})
		wg       sync.WaitGroup
		replayed atomic.Int32
		ids      = make([]string, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			resp, body := e.do(t, http.MethodPost, "/v1/messages", msg, header("Idempotency-Key", "concurrent-1"))
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("POST %d: %d %s", i, resp.StatusCode, body)
				return
			}
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				replayed.Add(1)
			}
			ids[i] = decodeAs[acceptedBody](t, body).ID
		})
	}
	close(start)
	wg.Wait()
	for i := range ids {
		if ids[i] != ids[0] {
			t.Fatalf("concurrent requests with one key stored different messages: %q", ids)
		}
	}
	if r := replayed.Load(); r != n-1 {
		t.Errorf("%d answers marked replayed, want %d", r, n-1)
	}
	if c := e.messageCount(); c != 1 {
		t.Errorf("%d messages stored, want 1", c)
	}
}

// TestAPIInvalidJSONPosition: a body that is not valid JSON is answered with the byte (from 0)
// where reading stopped, in the detail and as errors[0].offset, as the OpenAPI document says.
func TestAPIInvalidJSONPosition(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	valid := `{"to": "(202) 555-0194", "body": "PHI-body hello"}`
	cases := []struct {
		name, body string
		expect     expectation
		offset     int64
		detail     string
	}{
		{"bad character", `{"to": "(202) 555-0194", "body": }`, specInvalid, 33,
			"the request body is not valid JSON at byte 33 (invalid character '}' looking for beginning of value): send one JSON object"},
		{"control character in a string", "{\"to\": \"(202) 555-0194\x01\"}", specInvalid, 22, "not valid JSON at byte 22"},
		{"cut short", `{"to": "(202) 555-0194", "body": `, specInvalid, 33,
			"the request body ends at byte 33 inside the JSON object: close every string, array and object"},
		{"data after the object", valid + ` x`, specValid, int64(len(valid)),
			fmt.Sprintf("the request body has data after the JSON object, which ends at byte %d: send exactly one object", len(valid))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, http.MethodPost, "/v1/messages", []byte(c.body), expect(c.expect))
			p := wantProblem(t, resp, body, http.StatusBadRequest, reasonMalformed, requestBodyField)
			if len(p.Errors) != 1 || p.Errors[0].Offset == nil || *p.Errors[0].Offset != c.offset {
				t.Fatalf("errors %s, want one with offset %d", body, c.offset)
			}
			if !strings.Contains(p.Detail, c.detail) {
				t.Errorf("detail %q, want %q", p.Detail, c.detail)
			}
		})
	}
}

func TestAPIBadRequest(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	valid := `{"to": "(202) 555-0194", "body": "PHI-body hello"}`
	cases := []struct {
		name   string
		body   string
		opts   []option
		expect expectation
		fields []string
	}{
		{"not JSON", `{"to": "(202) 555-0194", "body": `, nil, specInvalid, []string{requestBodyField}},
		{"two objects", valid + ` {}`, nil, specValid, []string{requestBodyField}}, // kin-openapi reads only the first value
		{"trailing garbage", valid + ` x`, nil, specValid, []string{requestBodyField}},
		{"array", `[` + valid + `]`, nil, specInvalid, []string{requestBodyField}},
		{"null", `null`, nil, specInvalid, []string{requestBodyField}},
		{"empty", ``, nil, specInvalid, []string{requestBodyField}},
		{"attachment not an object", `{"to": "(202) 555-0194", "attachments": [7]}`, nil, specInvalid, []string{"attachments[0]"}},
		{"unknown field", `{"to": "(202) 555-0194", "body": "PHI-body hello", "recipient": "x"}`, nil, specInvalid, []string{"recipient"}},
		{"unknown field with a name that could be PHI", `{"to": "(202) 555-0194", "body": "PHI-body hello", "mrn_8675309": "x"}`, nil, specInvalid, []string{"mrn_8675309"}},
		{"field name case", `{"TO": "(202) 555-0194", "body": "PHI-body hello"}`, nil, specInvalid, []string{"TO"}},
		{"unknown attachment field", `{"to": "(202) 555-0194", "attachments": [{"name": "a.txt", "content_type": "text/plain", "content_base64": "eA=="}]}`,
			nil, specInvalid, []string{"attachments[0].name"}},
		{"string expiry", `{"to": "(202) 555-0194", "body": "PHI-body hello", "expires_in_seconds": "3600"}`, nil, specInvalid, []string{"expires_in_seconds"}},
		{"fractional expiry", `{"to": "(202) 555-0194", "body": "PHI-body hello", "expires_in_seconds": 3600.5}`, nil, specInvalid, []string{"expires_in_seconds"}},
		{"number recipient", `{"to": 2025550194, "body": "PHI-body hello"}`, nil, specInvalid, []string{"to"}},
		{"attachments not an array", `{"to": "(202) 555-0194", "attachments": {}}`, nil, specInvalid, []string{"attachments"}},
		{"bad base64", `{"to": "(202) 555-0194", "attachments": [{"content_type": "text/plain", "content_base64": "PHI not base64!"}]}`,
			nil, specInvalid, []string{"attachments[0].content_base64"}},
		{"idempotency key too long", valid, []option{header("Idempotency-Key", strings.Repeat("k", 256))}, specInvalid, []string{"Idempotency-Key"}},
		{"idempotency key not ASCII", valid, []option{header("Idempotency-Key", "clé-1")}, specInvalid, []string{"Idempotency-Key"}},
		{"idempotency key with a tab", valid, []option{header("Idempotency-Key", "a\tb")}, specInvalid, []string{"Idempotency-Key"}},
		{"two idempotency keys", valid, []option{header("Idempotency-Key", "a"), header("Idempotency-Key", "b")}, specValid, []string{"Idempotency-Key"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, http.MethodPost, "/v1/messages", []byte(c.body), append([]option{expect(c.expect)}, c.opts...)...)
			wantProblem(t, resp, body, http.StatusBadRequest, reasonMalformed, c.fields...)
		})
	}
	if n := e.messageCount(); n != 0 {
		t.Errorf("%d messages stored, want 0", n)
	}
	// The sender learns which member is unknown; the logs do not repeat the sender's text.
	if strings.Contains(e.logs.String(), "8675309") {
		t.Errorf("an unknown member's name is logged:\n%s", e.logs.String())
	}
	if n := e.counter(t, "securetext_gateway_refusals_total", "channel", "api", "reason", reasonMalformed); n != float64(len(cases)) {
		t.Errorf("refusals counted %v, want %d", n, len(cases))
	}
	// A key at the limit is fine.
	resp, body := e.do(t, http.MethodPost, "/v1/messages", []byte(valid), header("Idempotency-Key", strings.Repeat("~", 255)))
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("255-character key: %d %s", resp.StatusCode, body)
	}
}

func TestAPIUnauthenticated(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	acc := e.send(t, message("(202) 555-0195"))
	msg := jsonBody(t, message("(202) 555-0195"))
	routes := []struct {
		method, path string
		body         []byte
	}{
		{http.MethodPost, "/v1/messages", msg},
		{http.MethodGet, "/v1/messages/" + acc.ID, nil},
		{http.MethodDelete, "/v1/messages/" + acc.ID, nil},
		{http.MethodGet, "/v1/messages/" + acc.ID + "/events", nil},
	}
	credentials := []struct {
		name   string
		opt    option
		expect expectation
	}{
		{"missing", withoutHeader("Authorization"), specInvalid},
		{"unknown key", asKey("stk_" + strings.Repeat("A", 43)), specValid},
		{"key without prefix", asKey(e.APIKey[len(APIKeyPrefix):]), specValid},
		{"truncated key", asKey(e.APIKey[:len(e.APIKey)-1]), specValid},
		{"basic", authorization("Basic " + b64("ehr:"+e.APIKey)), specInvalid},
		{"bearer without key", authorization("Bearer "), specInvalid},
		{"key without scheme", authorization(e.APIKey), specInvalid},
	}
	for _, r := range routes {
		for _, c := range credentials {
			t.Run(r.method+" "+r.path+" "+c.name, func(t *testing.T) {
				resp, body := e.do(t, r.method, r.path, r.body, c.opt, expect(c.expect))
				wantProblem(t, resp, body, http.StatusUnauthorized, ReasonUnauthenticated)
				if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="securetext"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
			})
		}
	}
	if n := e.counter(t, "securetext_gateway_refusals_total", "channel", "api", "reason", ReasonUnauthenticated); n != float64(len(routes)*len(credentials)) {
		t.Errorf("unauthenticated refusals counted %v, want %d", n, len(routes)*len(credentials))
	}
	if n := e.messageCount(); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	if m, err := e.Store.Message(context.Background(), acc.ID); err != nil || m.Status != store.StatusAccepted {
		t.Errorf("message after unauthenticated DELETEs: %+v, %v", m, err)
	}
	if strings.Contains(e.logs.String(), e.APIKey[len(APIKeyPrefix):]) {
		t.Error("an API key is logged")
	}
	// The auth scheme is case-insensitive (RFC 9110 §11.1).
	resp, body := e.do(t, http.MethodGet, "/v1/messages/"+acc.ID, nil, authorization("bearer "+e.APIKey))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lowercase scheme: %d %s", resp.StatusCode, body)
	}
}

func TestAPINotFound(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	theirs := e.send(t, message("(202) 555-0196"), asKey(e.OtherKey))
	mine := e.send(t, message("(202) 555-0196"))

	var unknownBody []byte
	for _, suffix := range []string{"", "/events"} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			if suffix != "" && method == http.MethodDelete {
				continue
			}
			for _, c := range []struct {
				name, id string
				expect   expectation
			}{
				{"unknown", store.NewID(), specValid},
				{"another sender's", theirs.ID, specValid},
				{"not an id", "a.b", specInvalid},
			} {
				resp, body := e.do(t, method, "/v1/messages/"+c.id+suffix, nil, expect(c.expect))
				wantProblem(t, resp, body, http.StatusNotFound, reasonNotFound)
				// Another sender's message is indistinguishable from none at all.
				if c.name == "unknown" {
					unknownBody = body
				} else if !bytes.Equal(body, unknownBody) {
					t.Errorf("%s %s message: %s, unknown: %s", method, c.name, body, unknownBody)
				}
			}
		}
	}
	ctx := context.Background()
	if m, err := e.Store.Message(ctx, theirs.ID); err != nil || m.Status != store.StatusAccepted {
		t.Errorf("another sender's message after DELETE: %+v, %v", m, err)
	}
	if resp, body := e.do(t, http.MethodGet, "/v1/messages/"+theirs.ID, nil, asKey(e.OtherKey)); resp.StatusCode != http.StatusOK {
		t.Errorf("owner's GET: %d %s", resp.StatusCode, body)
	}
	if resp, body := e.do(t, http.MethodGet, "/v1/messages/"+mine.ID, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("own GET: %d %s", resp.StatusCode, body)
	}

	for _, path := range []string{"/", "/v1", "/v1/messages/" + mine.ID + "/parts", "/v2/messages", "/v1/messages/"} {
		resp, body := e.do(t, http.MethodGet, path, nil, expect(specUnlisted))
		wantProblem(t, resp, body, http.StatusNotFound, reasonNotFound)
	}
}

func TestAPIMethodNotAllowed(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	id := store.NewID()
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/messages", "POST"},
		{http.MethodPut, "/v1/messages", "POST"},
		{http.MethodPatch, "/v1/messages/" + id, "GET, HEAD, DELETE"},
		{http.MethodPost, "/v1/messages/" + id, "GET, HEAD, DELETE"},
		{http.MethodPost, "/v1/messages/" + id + "/events", "GET, HEAD"},
		{http.MethodDelete, "/v1/openapi.yaml", "GET, HEAD"},
	} {
		resp, body := e.do(t, c.method, c.path, nil, expect(specUnlisted))
		wantProblem(t, resp, body, http.StatusMethodNotAllowed, reasonMethodNotAllowed)
		if got := resp.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}

func TestAPITooLarge(t *testing.T) {
	const limit = 4096
	e := newAPIEnv(t, sqliteBackend, APIConfig{MaxRequestBytes: limit})
	big := message("(202) 555-0197")
	big["attachments"] = []map[string]any{{"content_type": "application/pdf", "content_base64": b64(strings.Repeat("PHI-", limit))}}
	for name, opts := range map[string][]option{"with length": nil, "chunked": {chunked()}} {
		resp, body := e.post(t, big, opts...)
		p := wantProblem(t, resp, body, http.StatusRequestEntityTooLarge, ReasonTooLarge)
		if !strings.Contains(p.Detail, "4096") {
			t.Errorf("%s: detail %q does not name the limit", name, p.Detail)
		}
	}
	if n := e.messageCount(); n != 0 {
		t.Errorf("%d messages stored, want 0", n)
	}
	// Just under the limit is fine, also chunked.
	e.send(t, message("(202) 555-0197"), chunked())
}

func TestAPIUnsupportedMediaType(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	msg := jsonBody(t, message("(202) 555-0197"))
	for _, c := range []struct {
		contentType string
		expect      expectation
	}{
		{"text/plain", specInvalid},
		{"", specInvalid},
		{"application/x-www-form-urlencoded", specInvalid},
		{"application/json; charset=iso-8859-1", specValid}, // the document cannot say which charset
		{"application/jsonx", specInvalid},
	} {
		opt := header("Content-Type", c.contentType)
		if c.contentType == "" {
			opt = withoutHeader("Content-Type")
		}
		resp, body := e.do(t, http.MethodPost, "/v1/messages", msg, withoutHeader("Content-Type"), opt, expect(c.expect))
		wantProblem(t, resp, body, http.StatusUnsupportedMediaType, reasonUnsupportedType)
	}
	if n := e.messageCount(); n != 0 {
		t.Errorf("%d messages stored, want 0", n)
	}
	// Parameters and case do not matter otherwise.
	e.send(t, message("(202) 555-0197"), withoutHeader("Content-Type"), header("Content-Type", "Application/JSON; charset=UTF-8"))
}

func TestAPIUnprocessable(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	ctx := context.Background()
	if _, err := e.Store.SetOptOut(ctx, "+12025550198", true); err != nil {
		t.Fatal(err)
	}
	with := func(changes map[string]any) map[string]any {
		m := message("(202) 555-0199")
		for k, v := range changes {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name    string
		msg     map[string]any
		expect  expectation
		reason  string
		fields  []string
		explain string // in the field's reason
	}{
		{"nine digits", with(map[string]any{"to": "202-555-019"}), specValid, ReasonInvalidRecipient, []string{"to"}, "has 9 digits"},
		{"service area code", with(map[string]any{"to": "(911) 555-0199"}), specValid, ReasonInvalidRecipient, []string{"to"}, "911 is a service code"},
		{"letters", with(map[string]any{"to": "call 202-555-0199"}), specValid, ReasonInvalidRecipient, []string{"to"}, "contains letters"},
		{"extension", with(map[string]any{"to": "(202) 555-0199 ext. 12"}), specValid, ReasonInvalidRecipient, []string{"to"}, "ends with an extension"},
		{"country not allowed", with(map[string]any{"to": "+44 20 7946 0958"}), specValid, ReasonInvalidRecipient, []string{"to"},
			"is a number in GB, and this service texts only numbers in the countries of the North American Numbering Plan (+1)"},
		{"no recipient", with(map[string]any{"to": nil}), specInvalid, ReasonInvalidRecipient, []string{"to"}, "is empty"},
		{"opted out", with(map[string]any{"to": "202.555.0198"}), specValid, ReasonOptedOut, []string{"to"}, "START"},
		{"empty body", with(map[string]any{"body": ""}), specValid, ReasonInvalid, []string{"body"}, "attach a file"},
		{"blank body", with(map[string]any{"body": " \n\t "}), specValid, ReasonInvalid, []string{"body"}, "attach a file"},
		{"no body", with(map[string]any{"body": nil}), specValid, ReasonInvalid, []string{"body"}, "attach a file"},
		{"expiry too short", with(map[string]any{"expires_in_seconds": 59}), specInvalid, ReasonInvalid, []string{"expires_in_seconds"}, "between 60 and 2592000"},
		{"expiry zero", with(map[string]any{"expires_in_seconds": 0}), specInvalid, ReasonInvalid, []string{"expires_in_seconds"}, "between 60"},
		{"expiry negative", with(map[string]any{"expires_in_seconds": -3600}), specInvalid, ReasonInvalid, []string{"expires_in_seconds"}, "between 60"},
		{"expiry too long", with(map[string]any{"expires_in_seconds": 40 * 24 * 3600}), specValid, ReasonInvalid, []string{"expires_in_seconds"}, "2592000 seconds"},
		{"expiry overflows", with(map[string]any{"expires_in_seconds": int64(1) << 62}), specValid, ReasonInvalid, []string{"expires_in_seconds"}, "2592000 seconds"},
		{"attachment without type", with(map[string]any{"attachments": []map[string]any{{"content_base64": b64("PHI-x")}}}),
			specInvalid, ReasonInvalid, []string{"attachments[0].content_type"}, "media type"},
		{"attachment with a bad type", with(map[string]any{"attachments": []map[string]any{{"content_type": "pdf file", "content_base64": b64("PHI-x")}}}),
			specValid, ReasonInvalid, []string{"attachments[0].content_type"}, "media type"},
		{"empty attachment", with(map[string]any{"attachments": []map[string]any{{"content_type": "text/plain", "content_base64": ""}}}),
			specValid, ReasonInvalid, []string{"attachments[0].content_base64"}, "empty"},
		{"everything", map[string]any{"to": "202555", "body": "", "expires_in_seconds": 10}, specInvalid, ReasonInvalid,
			[]string{"to", "body", "expires_in_seconds"}, "has 6 digits"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.post(t, c.msg, expect(c.expect))
			p := wantProblem(t, resp, body, http.StatusUnprocessableEntity, c.reason, c.fields...)
			if len(p.Errors) > 0 && !strings.Contains(p.Errors[0].Reason, c.explain) {
				t.Errorf("reason %q does not say %q", p.Errors[0].Reason, c.explain)
			}
		})
	}
	if n := e.messageCount(); n != 0 {
		t.Errorf("%d messages stored, want 0", n)
	}
	if n := e.counter(t, "securetext_gateway_refusals_total", "channel", "api", "reason", ReasonOptedOut); n != 1 {
		t.Errorf("opted-out refusals counted %v, want 1", n)
	}
}

func TestAPIUnavailable(t *testing.T) {
	e := newAPIEnv(t, postgresBackend, APIConfig{RetryAfter: 7 * time.Second})
	e.WithoutKeyReserve()
	acc := e.send(t, message("(202) 555-0180"))
	path := "/v1/messages/" + acc.ID
	want503 := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		wantProblem(t, resp, body, http.StatusServiceUnavailable, ReasonUnavailable)
		if got := resp.Header.Get("Retry-After"); got != "7" {
			t.Errorf("Retry-After %q, want 7", got)
		}
	}

	t.Run("keystore down", func(t *testing.T) {
		e.KeystoreDown()
		defer e.KeystoreUp()
		resp, body := e.post(t, message("(202) 555-0181"), header("Idempotency-Key", "outage-1"))
		want503(t, resp, body)
		// Reading needs no keys.
		if resp, body := e.do(t, http.MethodGet, path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET with the keystore down: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("database down", func(t *testing.T) {
		restore := e.DatabaseDown()
		defer restore()
		// Every request during the outage, not only the first (which finds the pool's
		// connections terminated, while later ones cannot connect at all).
		for range 2 {
			resp, body := e.post(t, message("(202) 555-0181"), header("Idempotency-Key", "outage-1"))
			want503(t, resp, body)
		}
		for _, r := range []struct{ method, path string }{
			{http.MethodGet, path}, {http.MethodDelete, path}, {http.MethodGet, path + "/events"},
		} {
			resp, body := e.do(t, r.method, r.path, nil)
			want503(t, resp, body)
		}
	})
	if n := e.messageCount(); n != 1 {
		t.Errorf("%d messages stored, want only the one before the outages", n)
	}
	if m, err := e.Store.Message(context.Background(), acc.ID); err != nil || m.Status != store.StatusAccepted {
		t.Errorf("message after a DELETE during the outage: %+v, %v", m, err)
	}
	if n := e.counter(t, "securetext_gateway_refusals_total", "channel", "api", "reason", ReasonUnavailable); n != 3 {
		t.Errorf("unavailable refusals counted %v, want 3", n)
	}
	// The sender's retry with the same key now stores the message, once.
	resp, body := e.post(t, message("(202) 555-0181"), header("Idempotency-Key", "outage-1"))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("retry after the outages: %d %s", resp.StatusCode, body)
	}
}

func TestAPIOpenAPIDocument(t *testing.T) {
	e := newAPIEnv(t, sqliteBackend, APIConfig{})
	resp, body := e.do(t, http.MethodGet, "/v1/openapi.yaml", nil, withoutHeader("Authorization"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(body, openAPIDocument) {
		t.Fatalf("GET /v1/openapi.yaml: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	doc, err := apiDocument()
	if err != nil {
		t.Fatal(err)
	}
	// Every operation documents the answers every operation can give.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			want := []int{http.StatusInternalServerError}
			if op.Security == nil || len(*op.Security) > 0 {
				want = append(want, http.StatusUnauthorized, http.StatusServiceUnavailable)
			}
			for _, status := range want {
				if op.Responses.Status(status) == nil {
					if path == "/v1/openapi.yaml" && status == http.StatusInternalServerError {
						continue // served from memory
					}
					t.Errorf("%s %s does not document %d", method, path, status)
				}
			}
		}
	}
}

// TestSpecTransportFails shows that specTransport reports what the document does not describe,
// so that the other tests' silence means something.
func TestSpecTransportFails(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/messages/nosec" {
			setSecurityHeaders(w.Header())
		}
		switch r.URL.Path {
		case "/v1/openapi.yaml":
			serveOpenAPI(w, r)
		case "/v1/messages/leaky": // a member the document does not allow
			writeJSON(w, http.StatusOK, map[string]string{"id": "leaky", "status": "accepted", "channel": "api",
				"created_at": "2025-03-01T14:02:03Z", "expires_at": "2025-03-01T14:02:03Z", "status_changed_at": "2025-03-01T14:02:03Z",
				"to": "+12025550143"})
		case "/v1/messages/badstatus": // a status value the document does not list
			writeJSON(w, http.StatusOK, map[string]string{"id": "badstatus", "status": "sent", "channel": "api",
				"created_at": "2025-03-01T14:02:03Z", "expires_at": "2025-03-01T14:02:03Z", "status_changed_at": "2025-03-01T14:02:03Z"})
		case "/v1/messages/teapot": // an HTTP status the document does not list
			w.WriteHeader(http.StatusTeapot)
		case "/v1/messages/busy": // 503 without Retry-After
			writeProblem(w, newProblem(http.StatusServiceUnavailable, ReasonUnavailable, "down"))
		case "/v1/messages/text": // not a problem document
			http.Error(w, "not found", http.StatusNotFound)
		default:
			writeProblem(w, newProblem(http.StatusNotFound, reasonNotFound, "no such message"))
		}
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()

	for _, c := range []struct {
		name, path, auth string
		expect           expectation
		reports          bool
	}{
		{"as documented", "/v1/messages/x", "Bearer stk_x", specValid, false},
		{"undocumented member", "/v1/messages/leaky", "Bearer stk_x", specValid, true},
		{"undocumented enum value", "/v1/messages/badstatus", "Bearer stk_x", specValid, true},
		{"undocumented status", "/v1/messages/teapot", "Bearer stk_x", specValid, true},
		{"missing Retry-After", "/v1/messages/busy", "Bearer stk_x", specValid, true},
		{"plain text error", "/v1/messages/text", "Bearer stk_x", specValid, true},
		{"missing security headers", "/v1/messages/nosec", "Bearer stk_x", specValid, true},
		{"request not as documented", "/v1/messages/x", "", specValid, true},
		{"request documented, test says not", "/v1/openapi.yaml", "", specInvalid, true},
		{"unlisted route", "/v2", "", specValid, true},
		{"listed route, test says unlisted", "/v1/messages/x", "Bearer stk_x", specUnlisted, true},
	} {
		rec := &recordingReporter{}
		st := newSpecTransport(t, srv.Client().Transport, nil)
		st.t = rec
		req, err := http.NewRequestWithContext(context.WithValue(context.Background(), expectationKey{}, c.expect), http.MethodGet, srv.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := (&http.Client{Transport: st}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if got := rec.count() > 0; got != c.reports {
			t.Errorf("%s: specTransport reported %q, want reports: %v", c.name, rec.errs, c.reports)
		}
	}
}

type recordingReporter struct {
	mu   sync.Mutex
	errs []string
}

func (r *recordingReporter) Helper() {}

func (r *recordingReporter) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingReporter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

func TestRequestHash(t *testing.T) {
	base := func() Submission {
		return Submission{To: "+12025550182", Content: content.Message{Subject: "ab", Text: "c",
			Attachments: []content.Attachment{{Name: "n", ContentType: "text/plain", Data: []byte("d")}}}}
	}
	h0 := requestHash(base())
	if requestHash(base()) != h0 {
		t.Fatal("the same submission hashes differently")
	}
	for name, change := range map[string]func(*Submission){
		"recipient":       func(s *Submission) { s.To = "+12025550183" },
		"subject":         func(s *Submission) { s.Content.Subject = "ab " },
		"moved boundary":  func(s *Submission) { s.Content.Subject, s.Content.Text = "a", "bc" },
		"text":            func(s *Submission) { s.Content.Text = "C" },
		"file name":       func(s *Submission) { s.Content.Attachments[0].Name = "m" },
		"media type":      func(s *Submission) { s.Content.Attachments[0].ContentType = "text/html" },
		"file":            func(s *Submission) { s.Content.Attachments[0].Data = []byte("e") },
		"no attachment":   func(s *Submission) { s.Content.Attachments = nil },
		"two attachments": func(s *Submission) { s.Content.Attachments = append(s.Content.Attachments, content.Attachment{}) },
		"explicit expiry": func(s *Submission) { s.ExpiresIn = 7 * 24 * time.Hour },
		"name into type": func(s *Submission) {
			s.Content.Attachments[0].Name, s.Content.Attachments[0].ContentType = "ntext/plain", ""
		},
		"sender (ignored)": func(s *Submission) { s.Sender = "other" },
	} {
		s := base()
		change(&s)
		if same := requestHash(s) == h0; same != (name == "sender (ignored)") {
			t.Errorf("%s: same hash %v", name, same)
		}
	}
	if h0 == sha256.Sum256(nil) {
		t.Error("hash of nothing")
	}
}

// BenchmarkAPIAccept measures POST /v1/messages end to end over HTTP keep-alive: 32 clients,
// PostgreSQL, 1 KiB bodies. It reports throughput and the 99th percentile latency.
func BenchmarkAPIAccept(b *testing.B) {
	gctune.Tune() // as the gateway's command does
	f := newFixture(b, postgresBackend)
	api := NewAPI(APIConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, f.Intake, f.Senders)
	srv := httptest.NewServer(api)
	defer srv.Close()
	const clients = 32
	transport := srv.Client().Transport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = clients
	client := &http.Client{Transport: transport, Timeout: time.Minute}

	body := func(i int) []byte {
		msg := map[string]any{"to": fmt.Sprintf("+1202555%04d", 100+i%100), "subject": "Benchmark",
			"body": strings.Repeat("x", 1024)}
		b, _ := json.Marshal(msg)
		return b
	}
	post := func(c *http.Client, i int) error {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", bytes.NewReader(body(i)))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+f.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	// One request through the document check, so the benchmark measures what the tests check.
	checked := &http.Client{Transport: newSpecTransport(b, transport, nil)}
	if err := post(checked, 0); err != nil {
		b.Fatal(err)
	}

	var (
		next      atomic.Int64
		wg        sync.WaitGroup
		durations = make([][]time.Duration, clients)
	)
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := post(client, int(i)); err != nil {
					b.Error(err)
					return
				}
				durations[c] = append(durations[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	all := slices.Concat(durations...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
		p99 := all[min(len(all)-1, int(math.Ceil(0.99*float64(len(all))))-1)]
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	}
}
