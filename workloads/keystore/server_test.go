package keystore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/tenantpki"
)

const testTenant = "acme"

// auditRecorder keeps the audit events a Server emits.
type auditRecorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *auditRecorder) record(_ context.Context, ev audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, ev)
}

func (a *auditRecorder) all() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Event(nil), a.events...)
}

// keystoreFixture is a real Server on 127.0.0.1 with its tenant PKI.
type keystoreFixture struct {
	ca     *tenantpki.CA
	srv    *Server
	url    string
	audits *auditRecorder
}

// startKeystore serves svc over mutual TLS on a loopback port until the test ends. configure,
// if not nil, adjusts the ServerConfig.
func startKeystore(t testing.TB, svc Service, configure func(*ServerConfig)) *keystoreFixture {
	t.Helper()
	now := time.Now()
	ca := mustCA(t, testTenant, now)
	serverCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &keystoreFixture{ca: ca, audits: &auditRecorder{}}
	cfg := ServerConfig{
		Tenant:      testTenant,
		Certificate: serverCert,
		ClientCAs:   ca.CertPool(),
		Audit:       f.audits.record,
		Logger:      discardLogger,
	}
	signer, ok := svc.(audit.Signer)
	if !ok {
		signer = audit.NewEd25519Signer(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)))
	}
	cfg.Checkpoints = testNotary(t, signer)
	if configure != nil {
		configure(&cfg)
	}
	if f.srv, err = NewServer(svc, cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := f.srv.HTTPServer(ln.Addr().String())
	hs.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	served := make(chan error, 1)
	go func() { served <- hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	f.url = "https://" + ln.Addr().String()
	return f
}

// testNotary signs the test tenant's checkpoints with signer, its state in memory.
func testNotary(t testing.TB, signer audit.Signer) *audit.Notary {
	t.Helper()
	n, err := audit.NewNotary(testTenant, signer, &audit.MemoryNotaryState{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// clientCert issues a client certificate from the fixture's CA.
func (f *keystoreFixture) clientCert(t testing.TB, tenant, component string) tls.Certificate {
	t.Helper()
	c, err := f.ca.IssueClient(tenant, component, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client returns a Client that presents cert and trusts the fixture's CA.
func (f *keystoreFixture) client(t testing.TB, cert tls.Certificate, timeout time.Duration) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{URL: f.url, Certificate: cert, RootCAs: f.ca.CertPool(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // also zeroes the reserve and waits for a refill under way
	return c
}

// gateway returns a Client with a valid gateway certificate of the fixture's tenant.
func (f *keystoreFixture) gateway(t testing.TB) *Client {
	return f.client(t, f.clientCert(t, testTenant, tenantpki.ComponentGateway), 0)
}

// httpClient returns a plain HTTPS client that trusts the fixture's CA and presents cert, if any.
func (f *keystoreFixture) httpClient(t testing.TB, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.ca.CertPool(), MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a rawAnswer) problem(t testing.TB) problem {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json; body %s", ct, a.body)
	}
	var p problem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("problem body %q: %v", a.body, err)
	}
	if p.Status != a.status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v is incomplete or disagrees with status %d", p, a.status)
	}
	return p
}

func (f *keystoreFixture) do(t testing.TB, hc *http.Client, method, path, body string) rawAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantAudit checks that exactly the expected refusal was audited.
func wantAudit(t testing.TB, f *keystoreFixture, actor string, detail map[string]string) {
	t.Helper()
	events := f.audits.all()
	if len(events) != 1 {
		t.Fatalf("audited %d events, want 1: %+v", len(events), events)
	}
	ev := events[0]
	if ev.Kind != audit.KindAuthFailed || ev.Actor != actor || ev.Tenant != testTenant || ev.Time.IsZero() {
		t.Errorf("audit event %+v, want kind %s, actor %s, tenant %s", ev, audit.KindAuthFailed, actor, testTenant)
	}
	for k, v := range detail {
		if ev.Detail[k] != v {
			t.Errorf("audit detail[%q] = %q, want %q (detail %v)", k, ev.Detail[k], v, ev.Detail)
		}
	}
	if n := f.srv.Refusals()[detail["reason"]]; n != 1 {
		t.Errorf("Refusals()[%q] = %d, want 1", detail["reason"], n)
	}
}

// faultyService wraps a real Service and makes chosen calls fail or hang.
type faultyService struct {
	Service
	err  error // returned by WrapNewKey, Unwrap and Health when set
	hang bool  // WrapNewKey waits for its context to end
}

func (s *faultyService) WrapNewKey(ctx context.Context) (DataKey, error) {
	if s.hang {
		<-ctx.Done()
		return DataKey{}, ctx.Err()
	}
	if s.err != nil {
		return DataKey{}, s.err
	}
	return s.Service.WrapNewKey(ctx)
}

func (s *faultyService) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	return s.Service.Unwrap(ctx, wrapped)
}

func (s *faultyService) Health(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	return s.Service.Health(ctx)
}

func TestClientWrapUnwrapRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := startKeystore(t, newTestLocal(t), nil)
	gw := f.gateway(t)
	viewer := f.client(t, f.clientCert(t, testTenant, tenantpki.ComponentViewer), 0)

	dk, err := gw.WrapNewKey(ctx)
	if err != nil {
		t.Fatalf("WrapNewKey: %v", err)
	}
	if len(dk.Plaintext) != DataKeySize || !strings.HasPrefix(dk.Wrapped, "local:v1:") {
		t.Fatalf("WrapNewKey = %d-byte key, wrapped %q", len(dk.Plaintext), dk.Wrapped)
	}
	// What the gateway wrapped, the viewer unwraps, and the key opens what it sealed.
	ad := envelope.AssociatedData{Tenant: testTenant, MessageID: "m1", Part: "body"}
	sealed, err := envelope.Seal(dk.Plaintext, ad, []byte("see you at 3"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := viewer.Unwrap(ctx, dk.Wrapped)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(key, dk.Plaintext) {
		t.Fatal("Unwrap returned another key")
	}
	if _, err := envelope.Open(key, ad, sealed); err != nil {
		t.Errorf("unwrapped key does not open the envelope: %v", err)
	}
	if err := gw.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	if events := f.audits.all(); len(events) != 0 {
		t.Errorf("authorised calls were audited as refusals: %+v", events)
	}
}

// Checkpoints through the Client: signed only for a chain that extends the last one; a
// rewritten chain gets 409, ErrNotExtension, a log record and a count; no route signs anything
// else.
func TestClientCheckpoints(t *testing.T) {
	ctx := context.Background()
	local := newTestLocal(t)
	var logged bytes.Buffer
	f := startKeystore(t, local, func(c *ServerConfig) { c.Logger = slog.New(slog.NewJSONHandler(&logged, nil)) })
	gw := f.gateway(t)

	pub, err := gw.PublicKey(ctx)
	if err != nil {
		t.Fatalf("PublicKey: %v", err)
	}
	if _, ok, err := gw.LastCheckpoint(ctx); err != nil || ok {
		t.Fatalf("LastCheckpoint before the first: ok=%v err=%v", ok, err)
	}
	chain := audit.NewChain(testTenant, 0, [32]byte{})
	var events []audit.Event
	for range 5 {
		events = append(events, chain.Append(audit.Event{Time: time.Unix(1700000000, 0), Kind: audit.KindAccepted, Actor: "system", Detail: map[string]string{"n": "1"}}))
	}
	cp, err := gw.ExtendCheckpoint(ctx, events[:3])
	if err != nil {
		t.Fatalf("ExtendCheckpoint: %v", err)
	}
	if err := audit.VerifyCheckpoint(pub, cp); err != nil || cp.Size != 3 || cp.Head != events[2].Hash || cp.KeyID != audit.KeyID(pub) {
		t.Fatalf("checkpoint size %d key %s (%v), want a valid one at 3", cp.Size, cp.KeyID, err)
	}
	if last, ok, err := gw.LastCheckpoint(ctx); err != nil || !ok || last.Size != 3 || !bytes.Equal(last.Signature, cp.Signature) {
		t.Fatalf("LastCheckpoint: size %d ok=%v err=%v", last.Size, ok, err)
	}

	// A rewritten chain: event 4 and 5 re-linked to a forged event 3.
	forged := audit.NewChain(testTenant, 2, events[1].Hash)
	forged.Append(audit.Event{Time: time.Unix(1700000000, 0), Kind: audit.KindAccepted, Actor: "system", Detail: map[string]string{"n": "2"}})
	rewritten := []audit.Event{forged.Append(events[3]), forged.Append(events[4])}
	tampered := events[3]
	tampered.Actor = "someone else"
	for name, offered := range map[string][]audit.Event{
		"a rewritten chain":           rewritten,
		"events that skip one":        events[4:],
		"events already signed":       events[:4],
		"an event that does not hash": {tampered},
	} {
		if _, err := gw.ExtendCheckpoint(ctx, offered); !errors.Is(err, audit.ErrNotExtension) {
			t.Errorf("%s: %v, want ErrNotExtension", name, err)
		}
	}
	if got := f.srv.CheckpointRefusals(); got != 4 {
		t.Errorf("CheckpointRefusals = %d, want 4", got)
	}
	if n := strings.Count(logged.String(), `"kind":"checkpoint-refused"`); n != 4 {
		t.Errorf("%d refusals in the keystore's log, want 4:\n%s", n, logged.String())
	}
	if cp2, err := gw.ExtendCheckpoint(ctx, events[3:]); err != nil || cp2.Size != 5 {
		t.Fatalf("the honest extension after the refusals: size %d err=%v", cp2.Size, err)
	}

	// Requests that are not an extension at all.
	many := make([]audit.Event, audit.MaxExtension+1)
	for i := range many {
		many[i] = events[0]
	}
	for name, offered := range map[string][]audit.Event{"no events": nil, "too many events": many} {
		if _, err := gw.ExtendCheckpoint(ctx, offered); err == nil || errors.Is(err, audit.ErrNotExtension) {
			t.Errorf("%s: %v, want a bad request", name, err)
		}
	}
	// Nothing else is signed: the raw signing route of earlier keystores is gone.
	cert := f.clientCert(t, testTenant, tenantpki.ComponentGateway)
	body := `{"message":"` + base64.StdEncoding.EncodeToString(audit.CheckpointBody(testTenant, 9, [32]byte{}, time.Now())) + `"}`
	if a := f.do(t, f.httpClient(t, &cert), http.MethodPost, "/v1/sign", body); a.status != http.StatusNotFound {
		t.Errorf("POST /v1/sign answered %d, want 404", a.status)
	}
}

func TestClientUnwrapRefusesBadWrappedKeys(t *testing.T) {
	ctx := context.Background()
	f := startKeystore(t, newTestLocal(t), nil)
	gw := f.gateway(t)
	dk, err := gw.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, wrapped := range badWrappedKeys(t, dk.Wrapped, newTestLocal(t)) {
		t.Run(name, func(t *testing.T) {
			key, err := gw.Unwrap(ctx, wrapped)
			if !errors.Is(err, ErrInvalidWrappedKey) || key != nil {
				t.Errorf("Unwrap = %x, %v; want ErrInvalidWrappedKey", key, err)
			}
			if IsTemporary(err) {
				t.Errorf("invalid wrapped key reported as temporary: %v", err)
			}
		})
	}
	a := f.do(t, f.httpClient(t, new(f.clientCert(t, testTenant, tenantpki.ComponentGateway))), "POST", "/v1/keys/unwrap", `{"wrapped":"local:v1:AAAA"}`)
	if a.status != http.StatusUnprocessableEntity {
		t.Errorf("status %d, want 422", a.status)
	}
	a.problem(t)
}

func TestServerRefusesCallerWithoutCertificate(t *testing.T) {
	f := startKeystore(t, newTestLocal(t), nil)
	gw := f.gateway(t)
	gw.transport.TLSClientConfig.Certificates = nil // as if the gateway had lost its certificate

	dk, err := gw.WrapNewKey(context.Background())
	if !errors.Is(err, ErrUnauthenticated) || dk.Plaintext != nil {
		t.Fatalf("WrapNewKey without certificate = %v; want ErrUnauthenticated", err)
	}
	wantAudit(t, f, "keystore-client:unknown", map[string]string{"reason": ReasonNoClientCertificate, "operation": "wrap-new"})

	a := f.do(t, f.httpClient(t, nil), "GET", "/v1/public-key", "")
	if a.status != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", a.status)
	}
	if p := a.problem(t); !strings.Contains(p.Detail, "client certificate") {
		t.Errorf("401 detail %q does not say a client certificate is needed", p.Detail)
	}
	if a.header.Get("Cache-Control") != "no-store" || a.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("security headers missing: %v", a.header)
	}
}

// TestHandshakeRefusesUntrustedCertificates presents certificates that do not verify against
// the tenant CA: the handshake fails and the server audits it.
func TestHandshakeRefusesUntrustedCertificates(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name  string
		cert  func(f *keystoreFixture) (tls.Certificate, error)
		cause string
	}{
		{"another tenant's CA", func(*keystoreFixture) (tls.Certificate, error) {
			other, err := tenantpki.NewCA(testTenant, now)
			if err != nil {
				return tls.Certificate{}, err
			}
			return other.IssueClient(testTenant, tenantpki.ComponentGateway, now, time.Hour)
		}, "unknown-authority"},
		{"expired", func(f *keystoreFixture) (tls.Certificate, error) {
			return f.ca.IssueClient(testTenant, tenantpki.ComponentGateway, now.Add(-3*time.Hour), time.Hour)
		}, "expired-or-not-yet-valid"},
		{"server certificate", func(f *keystoreFixture) (tls.Certificate, error) {
			return f.ca.IssueServer([]string{"gateway"}, nil, now, time.Hour)
		}, "not-for-client-auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startKeystore(t, newTestLocal(t), nil)
			cert, err := tc.cert(f)
			if err != nil {
				t.Fatal(err)
			}
			c := f.client(t, cert, 0)
			dk, err := c.WrapNewKey(context.Background())
			if err == nil || dk.Plaintext != nil {
				t.Fatalf("WrapNewKey with an untrusted certificate succeeded")
			}
			t.Logf("client error: %v", err)
			detail := map[string]string{"reason": ReasonUntrustedCertificate, "operation": "handshake", "cause": tc.cause}
			if tc.cause != "not-for-client-auth" {
				detail["claimed_tenant"] = testTenant
			}
			wantAudit(t, f, "keystore-client:unknown", detail)
		})
	}
}

func TestServerForbidsOtherCallers(t *testing.T) {
	for _, tc := range []struct {
		name, tenant, component string
		allowed                 []string
		reason                  string
	}{
		{"wrong tenant", "globex", tenantpki.ComponentGateway, nil, ReasonWrongTenant},
		{"unknown component", testTenant, "admin", nil, ReasonComponentNotAllowed},
		{"component not configured", testTenant, tenantpki.ComponentViewer, []string{tenantpki.ComponentGateway}, ReasonComponentNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startKeystore(t, newTestLocal(t), func(cfg *ServerConfig) { cfg.AllowedComponents = tc.allowed })
			c := f.client(t, f.clientCert(t, tc.tenant, tc.component), 0)
			key, err := c.Unwrap(context.Background(), "local:v1:AAAA")
			if !errors.Is(err, ErrForbidden) || key != nil {
				t.Fatalf("Unwrap = %v; want ErrForbidden", err)
			}
			wantAudit(t, f, "keystore-client:"+tc.component, map[string]string{
				"reason": tc.reason, "operation": "unwrap", "peer_tenant": tc.tenant,
			})
		})
	}
}

func TestServerForbidsCertificateWithoutIdentity(t *testing.T) {
	f := startKeystore(t, newTestLocal(t), nil)
	// Signed by the tenant CA for client authentication, but naming nobody.
	cert := issueWithoutIdentity(t, f.ca)
	_, err := f.client(t, cert, 0).PublicKey(context.Background())
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("PublicKey = %v; want ErrForbidden", err)
	}
	wantAudit(t, f, "keystore-client:unknown", map[string]string{"reason": ReasonInvalidIdentity, "operation": "public-key"})
}

func TestProbesNeedNoCertificate(t *testing.T) {
	backend := &faultyService{Service: newTestLocal(t)}
	f := startKeystore(t, backend, nil)
	hc := f.httpClient(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		if a := f.do(t, hc, "GET", path, ""); a.status != http.StatusOK {
			t.Errorf("GET %s = %d %s, want 200", path, a.status, a.body)
		}
	}
	backend.err = fmt.Errorf("vault at 10.0.0.7 is sealed: %w", ErrUnavailable)
	a := f.do(t, hc, "GET", "/readyz", "")
	if a.status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with a sealed backend = %d, want 503", a.status)
	}
	a.problem(t)
	if bytes.Contains(a.body, []byte("10.0.0.7")) || bytes.Contains(a.body, []byte("sealed")) {
		t.Errorf("/readyz reveals the cause to an unauthenticated caller: %s", a.body)
	}
	if a := f.do(t, hc, "GET", "/healthz", ""); a.status != http.StatusOK {
		t.Errorf("GET /healthz with a sealed backend = %d, want 200 (the process is alive)", a.status)
	}
	if err := f.gateway(t).Health(context.Background()); !IsTemporary(err) {
		t.Errorf("Client.Health with a sealed backend = %v, want a temporary error", err)
	}
	if events := f.audits.all(); len(events) != 0 {
		t.Errorf("probes were audited: %+v", events)
	}
}

func TestServerBackendUnavailable(t *testing.T) {
	ctx := context.Background()
	backend := &faultyService{Service: newTestLocal(t), err: fmt.Errorf("vault sealed: %w", ErrUnavailable)}
	f := startKeystore(t, backend, nil)
	gw := f.gateway(t)
	if _, err := gw.WrapNewKey(ctx); !IsTemporary(err) {
		t.Errorf("WrapNewKey = %v, want a temporary error", err)
	}
	if _, err := gw.Unwrap(ctx, "local:v1:AAAA"); !IsTemporary(err) {
		t.Errorf("Unwrap = %v, want a temporary error", err)
	}
	a := f.do(t, f.httpClient(t, new(f.clientCert(t, testTenant, tenantpki.ComponentGateway))), "POST", "/v1/keys/wrap-new", "{}")
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "1" {
		t.Errorf("status %d, Retry-After %q; want 503 and 1", a.status, a.header.Get("Retry-After"))
	}
	a.problem(t)
}

func TestClientTimesOutOnHangingBackend(t *testing.T) {
	backend := &faultyService{Service: newTestLocal(t), hang: true}
	f := startKeystore(t, backend, nil)
	gw := f.client(t, f.clientCert(t, testTenant, tenantpki.ComponentGateway), 200*time.Millisecond)
	dk, err := gw.WrapNewKey(context.Background())
	if !IsTemporary(err) || !errors.Is(err, context.DeadlineExceeded) || dk.Plaintext != nil {
		t.Errorf("WrapNewKey on a hanging keystore = %v; want a temporary error wrapping context.DeadlineExceeded", err)
	}
}

func TestServerInternalErrorIsGeneric(t *testing.T) {
	backend := &faultyService{Service: newTestLocal(t), err: errors.New("transit backend bug 0xdeadbeef")}
	f := startKeystore(t, backend, nil)
	_, err := f.gateway(t).WrapNewKey(context.Background())
	if err == nil || IsTemporary(err) || errors.Is(err, ErrInvalidWrappedKey) {
		t.Errorf("WrapNewKey = %v, want a plain permanent error", err)
	}
	if strings.Contains(fmt.Sprint(err), "0xdeadbeef") {
		t.Errorf("internal error text reached the caller: %v", err)
	}
	a := f.do(t, f.httpClient(t, new(f.clientCert(t, testTenant, tenantpki.ComponentGateway))), "POST", "/v1/keys/wrap-new", "")
	if a.status != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", a.status)
	}
	a.problem(t)
}

func TestServerRejectsBadRequests(t *testing.T) {
	f := startKeystore(t, newTestLocal(t), nil)
	hc := f.httpClient(t, new(f.clientCert(t, testTenant, tenantpki.ComponentGateway)))
	huge := `{"wrapped":"` + strings.Repeat("A", maxRequestBody) + `"}`
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"not JSON", "/v1/keys/unwrap", "wrapped=local:v1:AAAA", "not valid JSON"},
		{"empty body", "/v1/keys/unwrap", "", "empty"},
		{"array", "/v1/keys/unwrap", `["local:v1:AAAA"]`, "JSON object"},
		{"missing field", "/v1/keys/unwrap", `{}`, "field wrapped is required"},
		{"wrong type", "/v1/keys/unwrap", `{"wrapped":42}`, "field wrapped must be a JSON string"},
		{"unknown field", "/v1/keys/unwrap", `{"wrapped":"x","tenant":"acme"}`, `unknown field "tenant"`},
		{"two objects", "/v1/keys/unwrap", `{"wrapped":"x"}{"wrapped":"y"}`, "more than one JSON value"},
		{"truncated", "/v1/keys/unwrap", `{"wrapped":"x"`, "ends inside"},
		{"too large", "/v1/keys/unwrap", huge, "larger than 65536 bytes"},
		{"too large wrap-new", "/v1/keys/wrap-new", huge, "larger than 65536 bytes"},
		{"wrap-new garbage", "/v1/keys/wrap-new", "please", "not valid JSON"},
		{"checkpoint without events", "/v1/checkpoint", `{"events":[]}`, "must hold 1 to 1000 events"},
		{"checkpoint with a null event", "/v1/checkpoint", `{"events":[null]}`, "events[0] is not an audit event"},
		{"checkpoint with a bad hash", "/v1/checkpoint", `{"events":[{"seq":1,"time":"2030-01-01T00:00:00Z","kind":"accepted","actor":"a","tenant":"acme","prevHash":"00","hash":"00"}]}`, "events[0] is not an audit event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.do(t, hc, "POST", tc.path, tc.body)
			if a.status != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", a.status, a.body)
			}
			if p := a.problem(t); !strings.Contains(p.Detail, tc.want) {
				t.Errorf("detail %q does not say %q", p.Detail, tc.want)
			}
		})
	}
	if a := f.do(t, hc, "GET", "/v1/keys/wrap-new", ""); a.status != http.StatusNotFound {
		t.Errorf("GET /v1/keys/wrap-new = %d, want 404", a.status)
	} else {
		a.problem(t)
	}
	if events := f.audits.all(); len(events) != 0 {
		t.Errorf("bad requests from an authorised caller were audited as refusals: %+v", events)
	}
}

func TestDefaultAuditIsALogLine(t *testing.T) {
	var logs bytes.Buffer
	f := startKeystore(t, newTestLocal(t), func(cfg *ServerConfig) {
		cfg.Audit = nil
		cfg.Logger = slogJSON(&logs)
	})
	if _, err := f.client(t, f.clientCert(t, "globex", tenantpki.ComponentViewer), 0).PublicKey(context.Background()); !errors.Is(err, ErrForbidden) {
		t.Fatalf("PublicKey = %v, want ErrForbidden", err)
	}
	var line struct {
		Audit struct {
			Kind, Actor, Tenant string
			Detail              map[string]string
		} `json:"audit"`
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v\n%s", err, logs.String())
	}
	if line.Audit.Kind != string(audit.KindAuthFailed) || line.Audit.Actor != "keystore-client:viewer" ||
		line.Audit.Tenant != testTenant || line.Audit.Detail["reason"] != ReasonWrongTenant || line.Audit.Detail["peer_tenant"] != "globex" {
		t.Errorf("audit log line %s", logs.String())
	}
}

func TestNewServerAndClientValidateConfig(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, testTenant, now)
	sc, _ := ca.IssueServer([]string{"localhost"}, nil, now, time.Hour)
	cc, _ := ca.IssueClient(testTenant, tenantpki.ComponentGateway, now, time.Hour)
	local := newTestLocal(t)
	good := ServerConfig{Tenant: testTenant, Certificate: sc, ClientCAs: ca.CertPool(), Checkpoints: testNotary(t, local)}
	if _, err := NewServer(local, good); err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	for name, mutate := range map[string]func(*ServerConfig){
		"no tenant":         func(c *ServerConfig) { c.Tenant = "" },
		"bad tenant":        func(c *ServerConfig) { c.Tenant = "Acme Corp" },
		"no certificate":    func(c *ServerConfig) { c.Certificate = tls.Certificate{} },
		"no CA":             func(c *ServerConfig) { c.ClientCAs = nil },
		"no notary":         func(c *ServerConfig) { c.Checkpoints = nil },
		"bad component":     func(c *ServerConfig) { c.AllowedComponents = []string{"gate way"} },
		"nil service given": nil,
	} {
		cfg := good
		var svc Service = local
		if mutate == nil {
			svc = nil
		} else {
			mutate(&cfg)
		}
		if _, err := NewServer(svc, cfg); err == nil {
			t.Errorf("NewServer with %s succeeded", name)
		}
	}
	goodClient := ClientConfig{URL: "https://keystore.acme.svc:8443", Certificate: cc, RootCAs: ca.CertPool()}
	if _, err := NewClient(goodClient); err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	for name, mutate := range map[string]func(*ClientConfig){
		"http URL":         func(c *ClientConfig) { c.URL = "http://keystore.acme.svc:8443" },
		"no host":          func(c *ClientConfig) { c.URL = "https:///v1" },
		"query":            func(c *ClientConfig) { c.URL = "https://keystore?x=1" },
		"no certificate":   func(c *ClientConfig) { c.Certificate = tls.Certificate{} },
		"no roots":         func(c *ClientConfig) { c.RootCAs = nil },
		"negative timeout": func(c *ClientConfig) { c.Timeout = -time.Second },
	} {
		cfg := goodClient
		mutate(&cfg)
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("NewClient with %s succeeded", name)
		}
	}
}

// BenchmarkClientWrapNewKeyLocal measures WrapNewKey through Client and Server over mutual
// TLS on loopback, with the local backend: the cost of the HTTP hop when every call asks the
// keystore (each-call), and what is left of it with the reserve, which asks for keys ahead in
// requests of 64 to 128 (reserve). Run with
//
//	go test ./workloads/keystore/ -run '^$' -bench BenchmarkClientWrapNewKeyLocal
func BenchmarkClientWrapNewKeyLocal(b *testing.B) {
	f := startKeystore(b, newTestLocal(b), nil)
	ctx := context.Background()
	for _, mode := range []struct {
		name    string
		reserve ReserveConfig
	}{{"each-call", ReserveConfig{Disabled: true}}, {"reserve", ReserveConfig{}}} {
		gw, err := NewClient(ClientConfig{URL: f.url, Certificate: f.clientCert(b, testTenant, tenantpki.ComponentGateway),
			RootCAs: f.ca.CertPool(), Reserve: mode.reserve})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(gw.Close)
		for _, callers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/callers=%d", mode.name, callers), func(b *testing.B) {
				// Open the connections first: the handshakes are not the steady state.
				run := func(n int64) {
					var next atomic.Int64
					var wg sync.WaitGroup
					for range callers {
						wg.Go(func() {
							for next.Add(1) <= n {
								dk, err := gw.WrapNewKey(ctx)
								if err != nil {
									b.Error(err)
									return
								}
								envelope.Zero(dk.Plaintext)
							}
						})
					}
					wg.Wait()
				}
				run(int64(callers))
				b.ResetTimer()
				run(int64(b.N))
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "wraps/s")
			})
		}
	}
}

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// TestVerifiedChainMemoryExpires checks that remembering verified chains never extends a
// certificate's life and never remembers a chain that failed.
func TestVerifiedChainMemoryExpires(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, testTenant, now)
	sc, _ := ca.IssueServer([]string{"localhost"}, nil, now, time.Hour)
	local := newTestLocal(t)
	s, err := NewServer(local, ServerConfig{Tenant: testTenant, Certificate: sc, ClientCAs: ca.CertPool(), Logger: discardLogger, Checkpoints: testNotary(t, local)})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := ca.IssueClient(testTenant, tenantpki.ComponentGateway, now, time.Hour)
	chain := []*x509.Certificate{cc.Leaf}
	for range 2 {
		if err := s.verifyChain(chain, now); err != nil {
			t.Fatalf("verifyChain: %v", err)
		}
	}
	if len(s.verified) != 1 {
		t.Errorf("remembered %d chains, want 1", len(s.verified))
	}
	if err := s.verifyChain(chain, now.Add(2*time.Hour)); err == nil {
		t.Error("a remembered chain verified after its certificate expired")
	}
	foreign, _ := mustCA(t, testTenant, now).IssueClient(testTenant, tenantpki.ComponentGateway, now, time.Hour)
	for range 2 {
		if err := s.verifyChain([]*x509.Certificate{foreign.Leaf}, now); err == nil {
			t.Error("a chain from another CA verified")
		}
	}
	if len(s.verified) != 1 {
		t.Errorf("remembered %d chains after refusals, want 1", len(s.verified))
	}
}

func mustCA(t testing.TB, tenant string, now time.Time) *tenantpki.CA {
	t.Helper()
	ca, err := tenantpki.NewCA(tenant, now)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", tenant, err)
	}
	return ca
}

// issueWithoutIdentity signs, with the tenant CA's key, a client certificate without a SPIFFE
// ID, which tenantpki never issues.
func issueWithoutIdentity(t *testing.T, ca *tenantpki.CA) tls.Certificate {
	t.Helper()
	caKeyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(ca.CertPEM(), caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate(), key.Public(), pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
