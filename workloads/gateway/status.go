package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// SweepRecords is where the status server reads the tenant's last retention sweep
// (*store.Store).
type SweepRecords interface {
	LastSweep(ctx context.Context, name string) (retention.Result, error)
}

// StatusConfig configures a StatusServer.
type StatusConfig struct {
	// Tenant is this gateway's tenant; only a caller whose certificate names it is served.
	Tenant string
	// Certificate is the server certificate, issued by the tenant CA for the gateway
	// Service's name (the operator's Secret gateway-status-tls).
	Certificate tls.Certificate
	// ClientCAs holds the tenant CA: client certificates must chain to it.
	ClientCAs *x509.CertPool
	Sweeps    SweepRecords
	Logger    *slog.Logger
}

// StatusServer serves the tenant's last retention sweep (retention.StatusPath) to the
// operator, which writes it into the RetentionPolicy's and the LegalHolds' status: the
// workloads have no Kubernetes API credentials and get none. It listens apart from the API
// (a NetworkPolicy rule admits exactly the operator's pods to its port) and answers only a
// client certificate of the tenant CA that names this tenant and the operator
// (spiffe://securetext.io/tenant/<tenant>/operator), judged by tenantpki.Authorize like the
// keystore's callers. The answer holds counts, times and the names of the policy and of
// holds: no PHI.
type StatusServer struct {
	tenant string
	cert   tls.Certificate
	roots  *x509.CertPool
	sweeps SweepRecords
	log    *slog.Logger
	mux    *http.ServeMux
}

// NewStatusServer returns a StatusServer.
func NewStatusServer(cfg StatusConfig) (*StatusServer, error) {
	switch {
	case len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil:
		return nil, errors.New("gateway: status server: a server certificate and its key are required")
	case cfg.ClientCAs == nil:
		return nil, errors.New("gateway: status server: the tenant CA (ClientCAs) is required")
	case cfg.Sweeps == nil:
		return nil, errors.New("gateway: status server: the store (Sweeps) is required")
	}
	if err := tenantpki.CheckLabel("tenant", cfg.Tenant); err != nil {
		return nil, fmt.Errorf("gateway: status server: %w", err)
	}
	s := &StatusServer{tenant: cfg.Tenant, cert: cfg.Certificate, roots: cfg.ClientCAs, sweeps: cfg.Sweeps, log: cfg.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.mux.HandleFunc("GET "+retention.StatusPath, s.authorized(s.retentionStatus))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, newProblem(http.StatusNotFound, reasonNotFound, "the status server serves GET "+retention.StatusPath+" only"))
	})
	return s, nil
}

// TLSConfig is TLS 1.3 with the server certificate; a client certificate is verified against
// the tenant CA when presented (an untrusted one fails the handshake), and one that is
// missing is answered 401 by the handler.
func (s *StatusServer) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.roots,
	}
}

// HTTPServer returns the server of s, with timeouts for one short JSON answer. Serve it with
// ServeTLS(ln, "", "").
func (s *StatusServer) HTTPServer() *http.Server {
	return &http.Server{
		Handler: s, TLSConfig: s.TLSConfig(), ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 8 << 10,
	}
}

// ServeHTTP implements http.Handler.
func (s *StatusServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// authorized serves next only to the operator of this tenant. The chain is verified again
// here, so that the handler stays safe under another TLS configuration.
func (s *StatusServer) authorized(next http.HandlerFunc) http.HandlerFunc {
	allowed := []string{tenantpki.ComponentOperator}
	return func(w http.ResponseWriter, r *http.Request) {
		var chain []*x509.Certificate
		if r.TLS != nil {
			chain = r.TLS.PeerCertificates
		}
		verify := func(chain []*x509.Certificate) error {
			_, err := tenantpki.VerifyClientChain(s.roots, chain, time.Now())
			return err
		}
		_, refusal := tenantpki.Authorize(chain, s.tenant, allowed, verify)
		if refusal == nil {
			next(w, r)
			return
		}
		s.log.Warn("status server refused a caller", "reason", refusal.Reason, "component", refusal.Component, "detail", refusal.Detail)
		if refusal.Unauthenticated {
			writeProblem(w, newProblem(http.StatusUnauthorized, ReasonUnauthenticated,
				"connect with the operator's client certificate issued by this tenant's CA"))
			return
		}
		writeProblem(w, newProblem(http.StatusForbidden, "forbidden",
			"only this tenant's operator identity (spiffe://"+tenantpki.TrustDomain+"/tenant/"+s.tenant+"/"+tenantpki.ComponentOperator+") may read the status"))
	}
}

func (s *StatusServer) retentionStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st := retention.Status{Tenant: s.tenant}
	switch last, err := s.sweeps.LastSweep(ctx, retention.RecordName); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		s.log.Warn("status server: read the last retention sweep", "error", err)
		writeProblem(w, newProblem(http.StatusServiceUnavailable, ReasonUnavailable, "the database is unavailable; try again"))
		return
	default:
		st.LastSweep = &last
	}
	body, err := json.Marshal(st)
	if err != nil {
		writeProblem(w, newProblem(http.StatusInternalServerError, ReasonInternal, "encode the status"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}
