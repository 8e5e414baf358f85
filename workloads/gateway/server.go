package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
)

// Keys is what the gateway needs from the keystore: data keys for intake, unwrapping for the
// notifier, signatures for audit checkpoints, and a health check.
type Keys interface {
	KeyWrapper
	KeyUnwrapper
	audit.Signer
	Health(ctx context.Context) error
}

// Config is one tenant's gateway.
type Config struct {
	Tenant     string
	TenantName string // in every SMS
	TextDomain string // recipients are <number>@TextDomain
	Region     string // default phone region, "US"

	Store   *store.Store
	Keys    Keys
	Senders *Senders
	// TLS serves STARTTLS, implicit-TLS SMTP and the HTTPS API.
	TLS *tls.Config

	// Listen addresses; empty disables that listener (SMTP is required).
	SMTPAddr    string // submission with STARTTLS (587 semantics)
	SMTPSAddr   string // implicit TLS (465)
	APIAddr     string // HTTPS: REST API, SMS provider callbacks, health
	MetricsAddr string // plain HTTP /metrics, for an in-cluster Prometheus

	TrustedNetworks []TrustedNetwork
	MaxMessageBytes int64
	// SMTPMaxConnections and SMTPMaxConnectionsPerIP bound SMTP connections (SMTPConfig).
	SMTPMaxConnections, SMTPMaxConnectionsPerIP int

	SMS          sms.Gateway
	ProviderName string
	ViewerURL    string
	SMSRate      rate.Limit
	SMSBurst     int
	QuietHours   *QuietHours
	// SMSLease is how long this gateway reserves an SMS it is sending; a killed gateway's
	// SMS go out when their lease ends. Default 2 min.
	SMSLease time.Duration

	// AuditCheckpointInterval is how often the chain head is signed. Default 5 min.
	AuditCheckpointInterval time.Duration

	Logger   *slog.Logger
	Registry *prometheus.Registry // nil: a new one
	// Started, if set, is called with the bound addresses once every listener is open.
	Started func(Addrs)
}

// Addrs are the addresses the gateway listens on.
type Addrs struct {
	SMTP, SMTPS, API, Metrics string
}

// Run serves the gateway until ctx ends, then shuts down gracefully: listeners close, running
// SMTP transactions and HTTP requests finish (up to 10 s), the notifier stops after its
// current SMS.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.SMTPAddr == "" || cfg.Store == nil || cfg.Keys == nil || cfg.Senders == nil || cfg.SMS == nil {
		return errors.New("gateway: SMTP address, store, keys, senders and SMS provider are required")
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics := NewMetrics(reg)
	if err := RegisterOutbox(reg, cfg.Store); err != nil {
		return err
	}

	notifier, err := NewNotifier(NotifierConfig{
		Tenant: cfg.Tenant, TenantName: cfg.TenantName, ViewerURL: cfg.ViewerURL,
		Store: cfg.Store, Keys: cfg.Keys, Provider: cfg.SMS, ProviderName: cfg.ProviderName,
		Rate: cfg.SMSRate, Burst: cfg.SMSBurst, QuietHours: cfg.QuietHours, Lease: cfg.SMSLease,
		Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	intake := &Intake{Tenant: cfg.Tenant, Store: cfg.Store, Keys: cfg.Keys, Accepted: notifier.Handoff}

	smtpServer, err := NewSMTPServer(SMTPConfig{
		Domain: cfg.TextDomain, Hostname: cfg.TextDomain, TLSConfig: cfg.TLS, Region: cfg.Region,
		MaxMessageBytes: cfg.MaxMessageBytes, TrustedNetworks: cfg.TrustedNetworks,
		MaxConnections: cfg.SMTPMaxConnections, MaxConnectionsPerIP: cfg.SMTPMaxConnectionsPerIP,
		Logger: log, Metrics: metrics,
	}, intake, cfg.Senders)
	if err != nil {
		return err
	}

	// Open every listener first, so that a taken port fails the start with a clear error.
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	listen := func(what, addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%s listener on %s: %w (is another process using the port?)", what, addr, err)
		}
		listeners = append(listeners, l)
		return l, nil
	}
	smtpLn, err := listen("SMTP", cfg.SMTPAddr)
	if err != nil {
		return err
	}
	smtpsLn, err := listen("SMTPS", cfg.SMTPSAddr)
	if err != nil {
		return err
	}
	apiLn, err := listen("API", cfg.APIAddr)
	if err != nil {
		return err
	}
	metricsLn, err := listen("metrics", cfg.MetricsAddr)
	if err != nil {
		return err
	}
	if (smtpsLn != nil || apiLn != nil) && cfg.TLS == nil {
		closeAll()
		return errors.New("gateway: implicit-TLS SMTP and the API need a TLS certificate")
	}

	mux := http.NewServeMux()
	mux.Handle("/", NewAPI(APIConfig{Region: cfg.Region, Logger: log, Metrics: metrics}, intake, cfg.Senders))
	mux.Handle("/sms/"+cfg.ProviderName+"/", cfg.SMS.Handler(notifier))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, _, err := cfg.Store.AuditHead(ctx); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		if err := cfg.Keys.Health(ctx); err != nil {
			http.Error(w, "keystore unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	apiServer := &http.Server{
		Handler: mux, TLSConfig: cfg.TLS, ErrorLog: errLog,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10,
	}
	metricsServer := &http.Server{
		Handler:           promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errLog}),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
	}

	addrs := Addrs{}
	for _, a := range []struct {
		l   net.Listener
		dst *string
	}{{smtpLn, &addrs.SMTP}, {smtpsLn, &addrs.SMTPS}, {apiLn, &addrs.API}, {metricsLn, &addrs.Metrics}} {
		if a.l != nil {
			*a.dst = a.l.Addr().String()
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	serve := func(what string, fn func() error) {
		wg.Go(func() {
			if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && runCtx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", what, err)
				cancel()
			}
		})
	}
	serve("SMTP", func() error { return smtpServer.Serve(smtpLn) })
	if smtpsLn != nil {
		serve("SMTPS", func() error { return smtpServer.ServeTLS(smtpsLn) })
	}
	if apiLn != nil {
		serve("API", func() error { return apiServer.ServeTLS(apiLn, "", "") })
	}
	if metricsLn != nil {
		serve("metrics", func() error { return metricsServer.Serve(metricsLn) })
	}
	wg.Go(func() { notifier.Run(runCtx) })
	wg.Go(func() { cfg.Store.RunAuditSequencer(runCtx, time.Second) })
	interval := cfg.AuditCheckpointInterval
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	wg.Go(func() { cfg.Store.RunAuditCheckpoints(runCtx, cfg.Keys, interval) })
	log.Info("gateway started", "tenant", cfg.Tenant, "smtp", addrs.SMTP, "smtps", addrs.SMTPS, "api", addrs.API, "metrics", addrs.Metrics)
	if cfg.Started != nil {
		cfg.Started(addrs)
	}

	<-runCtx.Done()
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	_ = smtpServer.Shutdown(shutdownCtx)
	_ = apiServer.Shutdown(shutdownCtx)
	_ = metricsServer.Shutdown(shutdownCtx)
	closeAll()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
