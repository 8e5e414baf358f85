package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/internal/serve"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
)

// Keys is what the gateway needs from the keystore: data keys for intake, unwrapping for the
// notifier, signatures for audit checkpoints and discovery manifests, and a health check.
type Keys interface {
	KeyWrapper
	KeyUnwrapper
	audit.CheckpointSigner
	ManifestSigner
	Health(ctx context.Context) error
}

// Config is one tenant's gateway.
type Config struct {
	Tenant     string
	TenantName string // in every SMS
	TextDomain string // recipients are <number>@TextDomain
	Region     string // default phone region, "US"
	// AllowedCountries are the countries (ISO 3166-1 alpha-2) whose numbers are texted;
	// empty: those sharing Region's calling code (for US, the NANP countries).
	AllowedCountries []string

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
	StatusAddr  string // mutual TLS retention status for the operator; needs Status

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

	// PolicyLinkExpiry, if set, returns the unreadLinkExpiry of the tenant's retention policy
	// (0 while there is none), which caps every link's expiry (Intake.PolicyLinkExpiry).
	PolicyLinkExpiry func() time.Duration
	// RetentionSettings, if set, returns the tenant's retention settings as they stand: their
	// active legal holds are what compliance accounts export (GET /v1/holds/{name}/export).
	RetentionSettings func() retention.Settings

	// Background are more loops that run beside the servers until the gateway stops: the
	// retention sweeper and the watcher of its settings file.
	Background []func(ctx context.Context)

	// Status, if set, serves the last retention sweep to the operator on StatusAddr.
	Status *StatusServer

	Logger   *slog.Logger
	Registry *prometheus.Registry // nil: a new one
	// Started, if set, is called with the bound addresses once every listener is open.
	Started func(Addrs)
}

// Addrs are the addresses the gateway listens on.
type Addrs struct {
	SMTP, SMTPS, API, Metrics, Status string
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
		reg = NewRegistry()
	}
	metrics := NewMetrics(reg)
	metrics.StartSMS(cfg.ProviderName)
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
	intake := &Intake{Tenant: cfg.Tenant, Store: cfg.Store, Keys: cfg.Keys, Accepted: notifier.Handoff, PolicyLinkExpiry: cfg.PolicyLinkExpiry}

	smtpServer, err := NewSMTPServer(SMTPConfig{
		Domain: cfg.TextDomain, Hostname: cfg.TextDomain, TLSConfig: cfg.TLS,
		Region: cfg.Region, AllowedCountries: cfg.AllowedCountries,
		MaxMessageBytes: cfg.MaxMessageBytes, TrustedNetworks: cfg.TrustedNetworks,
		MaxConnections: cfg.SMTPMaxConnections, MaxConnectionsPerIP: cfg.SMTPMaxConnectionsPerIP,
		Logger: log, Metrics: metrics,
	}, intake, cfg.Senders)
	if err != nil {
		return err
	}

	// Open every listener first, so that a taken port fails the start with a clear error.
	var g serve.Group
	smtpLn, err := g.Listen("SMTP", cfg.SMTPAddr)
	if err != nil {
		return err
	}
	smtpsLn, err := g.Listen("SMTPS", cfg.SMTPSAddr)
	if err != nil {
		return err
	}
	apiLn, err := g.Listen("API", cfg.APIAddr)
	if err != nil {
		return err
	}
	metricsLn, err := g.Listen("metrics", cfg.MetricsAddr)
	if err != nil {
		return err
	}
	var statusLn net.Listener
	if cfg.Status != nil {
		if statusLn, err = g.Listen("status", cfg.StatusAddr); err != nil {
			return err
		}
	}
	if (smtpsLn != nil || apiLn != nil) && cfg.TLS == nil {
		g.Close()
		return errors.New("gateway: implicit-TLS SMTP and the API need a TLS certificate")
	}

	mux := http.NewServeMux()
	mux.Handle("/", NewAPI(APIConfig{Region: cfg.Region, AllowedCountries: cfg.AllowedCountries, Logger: log, Metrics: metrics,
		Keys: cfg.Keys, Holds: cfg.RetentionSettings, Manifests: cfg.Keys}, intake, cfg.Senders))
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
	metricsServer := serve.Metrics(reg, errLog)
	addrs := Addrs{SMTP: serve.Addr(smtpLn), SMTPS: serve.Addr(smtpsLn), API: serve.Addr(apiLn), Metrics: serve.Addr(metricsLn), Status: serve.Addr(statusLn)}

	g.Serve("SMTP", func() error { return smtpServer.Serve(smtpLn) }, smtpServer.Shutdown)
	if smtpsLn != nil {
		// The same server: its Shutdown above ends both listeners.
		g.Serve("SMTPS", func() error { return smtpServer.ServeTLS(smtpsLn) }, func(context.Context) error { return nil })
	}
	if apiLn != nil {
		g.Serve("API", func() error { return apiServer.ServeTLS(apiLn, "", "") }, apiServer.Shutdown)
	}
	if metricsLn != nil {
		g.Serve("metrics", func() error { return metricsServer.Serve(metricsLn) }, metricsServer.Shutdown)
	}
	if statusLn != nil {
		statusServer := cfg.Status.HTTPServer()
		g.Serve("status", func() error { return statusServer.ServeTLS(statusLn, "", "") }, statusServer.Shutdown)
	}
	g.Go(notifier.Run)
	g.Go(func(ctx context.Context) { cfg.Store.RunAuditSequencer(ctx, store.AuditSequencerInterval) })
	interval := cfg.AuditCheckpointInterval
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	g.Go(func(ctx context.Context) { cfg.Store.RunAuditCheckpoints(ctx, cfg.Keys, interval) })
	for _, loop := range cfg.Background {
		g.Go(loop)
	}
	return g.Run(ctx, func() {
		log.Info("gateway started", "tenant", cfg.Tenant, "smtp", addrs.SMTP, "smtps", addrs.SMTPS, "api", addrs.API, "metrics", addrs.Metrics, "status", addrs.Status)
		if cfg.Started != nil {
			cfg.Started(addrs)
		}
	})
}
