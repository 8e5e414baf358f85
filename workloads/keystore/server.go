package keystore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// Reasons for refusing a caller: the "reason" of its audit event and the key of Refusals.
// tenantpki.Authorize decides them.
const (
	ReasonNoClientCertificate  = tenantpki.ReasonNoClientCertificate
	ReasonUntrustedCertificate = tenantpki.ReasonUntrustedCertificate
	ReasonInvalidIdentity      = tenantpki.ReasonInvalidIdentity
	ReasonWrongTenant          = tenantpki.ReasonWrongTenant
	ReasonComponentNotAllowed  = tenantpki.ReasonComponentNotAllowed
)

var refusalReasons = [...]string{
	ReasonNoClientCertificate, ReasonUntrustedCertificate, ReasonInvalidIdentity,
	ReasonWrongTenant, ReasonComponentNotAllowed,
}

const (
	// maxRequestBody caps request bodies: a batch of wrapped keys is a few KiB.
	maxRequestBody = 64 << 10
	// maxCheckpointBody caps an extension: audit.MaxExtension events of well under 1 KiB each.
	maxCheckpointBody = 2 << 20
	// readyTimeout bounds /readyz: a kubelet probe gives up after a second by default.
	readyTimeout = 2 * time.Second
	// problemTypeBase prefixes the RFC 9457 "type" of every problem the keystore answers.
	problemTypeBase = "https://securetext.io/problems/keystore/"
	// verifiedChainsMax bounds the memory of verified client chains: a tenant has a handful of
	// client certificates at a time, a few more while they are renewed.
	verifiedChainsMax = 1024
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Tenant is the tenant whose keys this keystore holds. Only callers whose certificate names
	// this tenant are served.
	Tenant string
	// Certificate is the keystore's server certificate (CA.IssueServer).
	Certificate tls.Certificate
	// ClientCAs holds the tenant CA (CA.CertPool, tenantpki.CertPoolFromPEM): client certificates must
	// chain to it.
	ClientCAs *x509.CertPool
	// AllowedComponents are the components that may call. Default: gateway and viewer.
	AllowedComponents []string
	// Audit records every refused caller. Default: a JSON log line with key "audit" through
	// Logger. It is called synchronously, also from inside the TLS handshake.
	Audit func(ctx context.Context, ev audit.Event)
	// Logger gets operational messages, never key material. Default slog.Default().
	Logger *slog.Logger
	// Checkpoints signs audit checkpoints, each only for a chain that extends the last one: an
	// audit.Notary over the backend's signing key and CheckpointState (required).
	Checkpoints audit.CheckpointSigner
}

// Server serves a Service over HTTPS to the tenant's gateway and viewer.
//
// Callers authenticate with mutual TLS. Data keys cross the network, so the connection needs
// TLS anyway; a client certificate adds the caller's identity without a bearer secret that
// could be copied and replayed. Per tenant the operator creates a CA once (kept in a Kubernetes
// Secret), a server certificate for the keystore Service's DNS names and one client
// certificate per component, which names its caller with the single URI SAN
// spiffe://securetext.io/tenant/<tenant>/<component> (see tenantpki.Identity).
//
// The TLS handshake (TLSConfig) asks for a client certificate but lets a connection without
// one complete, so that kubelet probes reach /healthz and /readyz; a presented certificate
// that does not verify against the tenant CA for client authentication fails the handshake.
// Every /v1/ request then checks, again, that the certificate verifies, names this tenant and
// an allowed component: otherwise it answers 401 or 403 with an RFC 9457 problem. Every
// refusal is audited (audit.KindAuthFailed) and counted (Refusals).
type Server struct {
	svc      Service
	tenant   string
	cert     tls.Certificate
	roots    *x509.CertPool
	allowed  []string
	audit    func(context.Context, audit.Event)
	log      *slog.Logger
	mux      *http.ServeMux
	refusals [len(refusalReasons)]atomic.Uint64

	checkpoints        audit.CheckpointSigner
	checkpointRefusals atomic.Uint64

	metrics atomic.Pointer[Metrics] // set by Instrument

	verifiedMu sync.Mutex
	verified   map[[sha256.Size]byte]time.Time // chain digest → first expiry
}

// NewServer returns a Server for svc.
func NewServer(svc Service, cfg ServerConfig) (*Server, error) {
	switch {
	case svc == nil:
		return nil, errors.New("keystore: new server: no Service to serve")
	case len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil:
		return nil, errors.New("keystore: new server: ServerConfig.Certificate needs a certificate and its private key")
	case cfg.ClientCAs == nil:
		return nil, errors.New("keystore: new server: ServerConfig.ClientCAs (the tenant CA) is required")
	case cfg.Checkpoints == nil:
		return nil, errors.New("keystore: new server: ServerConfig.Checkpoints (an audit.Notary) is required")
	}
	if err := tenantpki.CheckLabel("tenant", cfg.Tenant); err != nil {
		return nil, fmt.Errorf("keystore: new server: ServerConfig.Tenant: %w", err)
	}
	allowed := slices.Clone(cfg.AllowedComponents)
	if len(allowed) == 0 {
		allowed = []string{tenantpki.ComponentGateway, tenantpki.ComponentViewer}
	}
	for _, c := range allowed {
		if err := tenantpki.CheckLabel("component", c); err != nil {
			return nil, fmt.Errorf("keystore: new server: ServerConfig.AllowedComponents: %w", err)
		}
	}
	s := &Server{
		svc:     svc,
		tenant:  cfg.Tenant,
		cert:    cfg.Certificate,
		roots:   cfg.ClientCAs,
		allowed: allowed,
		audit:   cfg.Audit,
		log:     cfg.Logger,
		mux:     http.NewServeMux(),

		checkpoints: cfg.Checkpoints,

		verified: make(map[[sha256.Size]byte]time.Time),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.audit == nil {
		s.audit = logAudit(s.log)
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("POST /v1/keys/wrap-new", s.authorized("wrap-new", s.wrapNew))
	s.mux.Handle("POST /v1/keys/unwrap", s.authorized("unwrap", s.unwrap))
	s.mux.Handle("GET /v1/checkpoint", s.authorized("last-checkpoint", s.lastCheckpoint))
	s.mux.Handle("POST /v1/checkpoint", s.authorized("extend-checkpoint", s.extendCheckpoint))
	s.mux.Handle("GET /v1/public-key", s.authorized("public-key", s.publicKey))
	s.mux.Handle("GET /v1/health", s.authorized("health", s.health))
	s.mux.Handle("POST /v1/manifest", s.authorizedOnly("sign-manifest", manifestComponents, s.signManifestRoute))
	s.mux.Handle("GET /v1/keys/versions", s.authorizedOnly("key-versions", keyRingComponents, s.keyVersions))
	s.mux.Handle("POST /v1/keys/rewrap", s.authorizedOnly("rewrap", keyRingComponents, s.rewrap))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found",
			"no route "+r.Method+" "+r.URL.Path+"; see the keystore README for the API")
	})
	return s, nil
}

// logAudit writes an audit event as one structured log line under the key "audit".
func logAudit(log *slog.Logger) func(context.Context, audit.Event) {
	return func(ctx context.Context, ev audit.Event) {
		log.LogAttrs(ctx, slog.LevelWarn, "keystore refused a caller", slog.Group("audit",
			slog.Time("time", ev.Time),
			slog.String("kind", string(ev.Kind)),
			slog.String("actor", ev.Actor),
			slog.String("tenant", ev.Tenant),
			slog.Any("detail", ev.Detail)))
	}
}

// TLSConfig returns the server's TLS configuration: TLS 1.3 only, the server certificate,
// and client certificates requested and, when presented, verified against the tenant CA.
// Each call returns a new Config.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		// RequestClientCert, not VerifyClientCertIfGiven: the standard verification would
		// fail the handshake before we could audit it. verifyConnection does the same check.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: s.verifyConnection,
	}
}

// HTTPServer returns an http.Server for addr that serves s with TLSConfig and timeouts that
// suit short JSON calls. Start it with ListenAndServeTLS("", "").
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Longer than a backend call may take (Transit's default timeout is 5 s).
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Refusals returns how many callers were refused since the server started, by reason
// (the Reason… constants), for metrics.
func (s *Server) Refusals() map[string]uint64 {
	m := make(map[string]uint64, len(refusalReasons))
	for i, r := range refusalReasons {
		m[r] = s.refusals[i].Load()
	}
	return m
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// verifyConnection fails the handshake of a client whose certificate does not verify, after
// auditing it. A client without a certificate passes; /v1/ answers it with 401.
func (s *Server) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if err := s.verifyChain(cs.PeerCertificates, time.Now()); err != nil {
		s.refuseUntrusted(context.Background(), "handshake", cs.PeerCertificates[0], err)
		return fmt.Errorf("keystore: refuse client certificate: %w", err)
	}
	return nil
}

// verifyChain is tenantpki.VerifyClientChain with a memory: a chain that verified stays verified until
// the first of its certificates expires, so requests on a kept-alive connection cost a hash,
// not an ECDSA verification (which would be most of the CPU time of a small wrap-new). Only
// chains that verified are remembered, so strangers cannot fill the cache.
func (s *Server) verifyChain(chain []*x509.Certificate, now time.Time) error {
	h := sha256.New()
	for _, c := range chain {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(c.Raw))))
		h.Write(c.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])

	s.verifiedMu.Lock()
	until, ok := s.verified[key]
	s.verifiedMu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	verified, err := tenantpki.VerifyClientChain(s.roots, chain, now)
	if err != nil {
		return err
	}
	until = verified[0].NotAfter
	for _, c := range verified[1:] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	s.verifiedMu.Lock()
	if len(s.verified) >= verifiedChainsMax {
		clear(s.verified)
	}
	s.verified[key] = until
	s.verifiedMu.Unlock()
	return nil
}

// refuseUntrusted audits a certificate that does not verify. What it names is only a claim,
// so it is recorded as claimed_tenant / claimed_component and the actor stays unknown.
func (s *Server) refuseUntrusted(ctx context.Context, op string, leaf *x509.Certificate, err error) {
	detail := map[string]string{"cause": tenantpki.UntrustedCause(err)}
	if tenant, component, err := tenantpki.Identity(leaf); err == nil {
		detail["claimed_tenant"], detail["claimed_component"] = tenant, component
	}
	s.refuse(ctx, op, ReasonUntrustedCertificate, "", detail)
}

// refuse counts and audits a refused caller. component is "" when unknown.
func (s *Server) refuse(ctx context.Context, op, reason, component string, detail map[string]string) {
	if detail == nil {
		detail = map[string]string{}
	}
	detail["reason"], detail["operation"] = reason, op
	actor := "keystore-client:unknown"
	if component != "" {
		actor = "keystore-client:" + component
	}
	s.refusals[slices.Index(refusalReasons[:], reason)].Add(1)
	s.audit(ctx, audit.Event{
		Time:   time.Now().UTC(),
		Kind:   audit.KindAuthFailed,
		Actor:  actor,
		Tenant: s.tenant,
		Detail: detail,
	})
}

// authorized serves next only to a caller with a verified certificate of this tenant and an
// allowed component (tenantpki.Authorize). The chain is verified again here so that the
// handler stays safe even if it is served with a TLS configuration other than TLSConfig.
// Every request, refused or not, is recorded as operation op (instrument).
func (s *Server) authorized(op string, next http.HandlerFunc) http.Handler {
	return s.authorizedOnly(op, s.allowed, next)
}

// authorizedOnly is authorized for the components in only that the server allows.
func (s *Server) authorizedOnly(op string, only []string, next http.HandlerFunc) http.Handler {
	allowed := slices.DeleteFunc(slices.Clone(s.allowed), func(c string) bool { return !slices.Contains(only, c) })
	return s.instrument(op, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var chain []*x509.Certificate
		if r.TLS != nil {
			chain = r.TLS.PeerCertificates
		}
		verify := func(chain []*x509.Certificate) error { return s.verifyChain(chain, time.Now()) }
		_, refusal := tenantpki.Authorize(chain, s.tenant, allowed, verify)
		if refusal == nil {
			next(w, r)
			return
		}
		s.refuse(r.Context(), op, refusal.Reason, refusal.Component, refusal.Detail)
		switch refusal.Reason {
		case ReasonNoClientCertificate:
			writeProblem(w, http.StatusUnauthorized, "unauthenticated", "Client certificate required",
				"connect with a client certificate issued by this tenant's keystore CA")
		case ReasonUntrustedCertificate:
			writeProblem(w, http.StatusUnauthorized, "unauthenticated", "Untrusted client certificate",
				"the client certificate does not verify against this tenant's keystore CA for client authentication; renew it")
		case ReasonInvalidIdentity:
			writeProblem(w, http.StatusForbidden, "forbidden", "Caller not allowed",
				"the client certificate must carry exactly one URI SAN spiffe://"+tenantpki.TrustDomain+"/tenant/<tenant>/<component>")
		case ReasonWrongTenant:
			writeProblem(w, http.StatusForbidden, "forbidden", "Caller not allowed",
				"the client certificate names another tenant than this keystore serves")
		default:
			writeProblem(w, http.StatusForbidden, "forbidden", "Caller not allowed",
				"component "+refusal.Component+" may not call this keystore operation; allowed: "+strings.Join(allowed, ", "))
		}
	}))
}

// maxWrapCount bounds the data keys one wrap-new call may ask for.
const maxWrapCount = 256

func (s *Server) wrapNew(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Count *int `json:"count"`
	}
	if !decodeRequest(w, r, &req, true, `{} or {"count": 16}`) {
		return
	}
	if req.Count != nil && (*req.Count < 1 || *req.Count > maxWrapCount) {
		badRequest(w, fmt.Sprintf("count must be 1 to %d", maxWrapCount))
		return
	}
	n := 1
	if req.Count != nil {
		n = *req.Count
	}
	s.metrics.Load().observeKeys("wrap-new", n)
	// Concurrent calls, so that a batching backend (Transit) wraps them in one Vault call.
	keys := make([]DataKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = s.svc.WrapNewKey(r.Context()) })
	}
	wg.Wait()
	defer func() {
		for _, k := range keys {
			envelope.Zero(k.Plaintext)
		}
	}()
	for i, k := range keys {
		err := errs[i]
		if err == nil && len(k.Plaintext) != DataKeySize {
			err = fmt.Errorf("backend returned a %d-byte data key", len(k.Plaintext))
		}
		if err != nil {
			s.fail(w, r, "wrap-new", err)
			return
		}
	}
	// Built by hand, not with json.Marshal, so that every copy of the keys can be zeroed.
	// Without count the answer is one key object; with count it is {"keys": [...]}.
	body := make([]byte, 0, 16+n*(40+base64.StdEncoding.EncodedLen(DataKeySize)+len(keys[0].Wrapped)+8))
	if req.Count != nil {
		body = append(body, `{"keys":[`...)
	}
	for i, k := range keys {
		wrapped, err := json.Marshal(k.Wrapped)
		if err != nil {
			envelope.Zero(body)
			s.fail(w, r, "wrap-new", fmt.Errorf("encode wrapped key: %w", err))
			return
		}
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"plaintext":"`...)
		body = base64.StdEncoding.AppendEncode(body, k.Plaintext)
		body = append(body, `","wrapped":`...)
		body = append(body, wrapped...)
		body = append(body, '}')
	}
	if req.Count != nil {
		body = append(body, "]}"...)
	}
	writeJSON(w, http.StatusOK, body)
	envelope.Zero(body)
}

// unwrap answers {"wrapped": k} with {"plaintext": …}, and {"wrapped_keys": [k, …]} (the
// client's batches) with {"results": [{"plaintext": …} or {"error": "invalid-wrapped-key"},
// …]} in the same order: one refused key does not fail the others, but a key holder that is
// unavailable fails the whole request, so the caller retries it.
func (s *Server) unwrap(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Wrapped     *string  `json:"wrapped"`
		WrappedKeys []string `json:"wrapped_keys"`
	}
	const example = `{"wrapped": "<wrapped key>"} or {"wrapped_keys": ["<wrapped key>", …]}`
	if !decodeRequest(w, r, &req, false, example) {
		return
	}
	switch {
	case req.Wrapped == nil && req.WrappedKeys == nil:
		badRequest(w, "field wrapped is required (or wrapped_keys, for several keys): send "+example)
		return
	case req.Wrapped != nil && req.WrappedKeys != nil:
		badRequest(w, "give only one of the fields wrapped and wrapped_keys: send "+example)
		return
	case req.WrappedKeys != nil && (len(req.WrappedKeys) < 1 || len(req.WrappedKeys) > maxWrapCount):
		badRequest(w, fmt.Sprintf("wrapped_keys must hold 1 to %d keys", maxWrapCount))
		return
	case req.WrappedKeys != nil:
		s.metrics.Load().observeKeys("unwrap", len(req.WrappedKeys))
		s.unwrapMany(w, r, req.WrappedKeys)
		return
	}
	s.metrics.Load().observeKeys("unwrap", 1)
	key, err := s.svc.Unwrap(r.Context(), *req.Wrapped)
	if err != nil {
		s.fail(w, r, "unwrap", err)
		return
	}
	defer envelope.Zero(key)
	body := make([]byte, 0, 20+base64.StdEncoding.EncodedLen(len(key)))
	body = append(body, `{"plaintext":"`...)
	body = base64.StdEncoding.AppendEncode(body, key)
	body = append(body, `"}`...)
	writeJSON(w, http.StatusOK, body)
	envelope.Zero(body)
}

func (s *Server) unwrapMany(w http.ResponseWriter, r *http.Request, wrapped []string) {
	// Concurrent calls, so that a batching backend (Transit) unwraps them in one Vault call.
	keys := make([][]byte, len(wrapped))
	errs := make([]error, len(wrapped))
	var wg sync.WaitGroup
	for i, k := range wrapped {
		wg.Go(func() { keys[i], errs[i] = s.svc.Unwrap(r.Context(), k) })
	}
	wg.Wait()
	defer func() {
		for _, k := range keys {
			envelope.Zero(k)
		}
	}()
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrInvalidWrappedKey) {
			s.fail(w, r, "unwrap", err)
			return
		}
	}
	body := make([]byte, 0, 16+len(keys)*(20+base64.StdEncoding.EncodedLen(DataKeySize)))
	body = append(body, `{"results":[`...)
	for i, k := range keys {
		if i > 0 {
			body = append(body, ',')
		}
		if errs[i] != nil {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "keystore refused a wrapped key",
				slog.String("operation", "unwrap"), slog.String("error", errs[i].Error()))
			body = append(body, `{"error":"invalid-wrapped-key"}`...)
			continue
		}
		body = append(body, `{"plaintext":"`...)
		body = base64.StdEncoding.AppendEncode(body, k)
		body = append(body, `"}`...)
	}
	body = append(body, "]}"...)
	writeJSON(w, http.StatusOK, body)
	envelope.Zero(body)
}

func (s *Server) publicKey(w http.ResponseWriter, r *http.Request) {
	pub, err := s.svc.PublicKey(r.Context())
	if err != nil {
		s.fail(w, r, "public-key", err)
		return
	}
	writeJSONValue(w, struct {
		PublicKey []byte `json:"public_key"`
		KeyID     string `json:"key_id"`
	}{pub, audit.KeyID(pub)})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Health(r.Context()); err != nil {
		// Whatever the cause, an unhealthy key holder means "retry later" to a caller.
		s.fail(w, r, "health", fmt.Errorf("%w: %w", ErrUnavailable, err))
		return
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

// healthz says the process serves HTTP. It needs no certificate and touches no key.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// readyz says whether the key holder can serve. It needs no certificate (kubelet probes have
// none), so it answers "ready" or "not ready" and nothing more; the reason goes to the log.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.svc.Health(ctx); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "keystore not ready", slog.String("error", err.Error()))
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "not-ready", "Not ready", "the keystore cannot serve yet")
		return
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

// fail answers a failed Service call. Service errors never hold key material, so they are
// logged; the caller gets a problem that says what to do, never the internal error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	ctx := r.Context()
	attrs := []slog.Attr{slog.String("operation", op), slog.String("error", err.Error())}
	switch {
	case IsTemporary(err), ctx.Err() != nil:
		// A canceled request context means the caller gave up; nobody reads this answer.
		s.log.LogAttrs(ctx, slog.LevelWarn, "keystore operation failed temporarily", attrs...)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Key holder temporarily unavailable",
			"the keystore cannot reach its key holder right now; retry later")
	case errors.Is(err, ErrInvalidWrappedKey):
		s.log.LogAttrs(ctx, slog.LevelWarn, "keystore refused a wrapped key", attrs...)
		writeProblem(w, http.StatusUnprocessableEntity, "invalid-wrapped-key", "Invalid wrapped key",
			"the wrapped key is malformed, was altered, or was not wrapped by this tenant's key; retrying does not help")
	default:
		s.log.LogAttrs(ctx, slog.LevelError, "keystore operation failed", attrs...)
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error",
			"the keystore failed to "+op+"; its log says why")
	}
}

// decodeRequest reads r's body, at most maxRequestBody bytes, as exactly one JSON object with
// no unknown fields into dst. An empty body is accepted when allowEmpty. On failure it has
// answered 400 with a detail that says what to send (example) and returns false.
func decodeRequest(w http.ResponseWriter, r *http.Request, dst any, allowEmpty bool, example string) bool {
	return decodeRequestMax(w, r, dst, allowEmpty, example, maxRequestBody)
}

// decodeRequestMax is decodeRequest with a body of at most limit bytes.
func decodeRequestMax(w http.ResponseWriter, r *http.Request, dst any, allowEmpty bool, example string, limit int64) bool {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if errors.Is(err, io.EOF) && allowEmpty {
		return true
	}
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = terr
			if err == nil {
				err = errors.New("more than one JSON value")
			}
		}
	}
	if err == nil {
		return true
	}
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		detail   string
	)
	switch {
	case errors.As(err, &tooLarge):
		detail = "request body is larger than " + strconv.FormatInt(limit, 10) + " bytes"
	case errors.Is(err, io.EOF):
		detail = "request body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		detail = "request body ends inside the JSON object"
	case errors.As(err, &syntax):
		detail = "request body is not valid JSON (error at byte " + strconv.FormatInt(syntax.Offset, 10) + ")"
	case errors.As(err, &typ) && typ.Field == "":
		detail = "request body must be a JSON object"
	case errors.As(err, &typ):
		detail = "field " + typ.Field + " must be a JSON " + typ.Type.String()
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		detail = "request body has an " + strings.TrimPrefix(err.Error(), "json: ")
	default:
		detail = "request body is not one JSON object: " + err.Error()
	}
	badRequest(w, detail+"; send "+example)
	return false
}

func badRequest(w http.ResponseWriter, detail string) {
	writeProblem(w, http.StatusBadRequest, "bad-request", "Bad request", detail)
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, code, title, detail string) {
	b, err := json.Marshal(problem{Type: problemTypeBase + code, Title: title, Status: status, Detail: detail})
	if err != nil { // cannot happen: only strings and an int
		b = []byte(`{"title":"Internal error","status":500}`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func writeJSONValue(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "the keystore could not encode its answer")
		return
	}
	writeJSON(w, http.StatusOK, b)
}
