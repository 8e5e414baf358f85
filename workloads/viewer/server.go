package viewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/securetext/securetext/workloads/internal/serve"
	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/store"
)

// cleanupInterval is how often expired sessions and one-time codes are deleted.
const cleanupInterval = time.Minute

// DatabaseConnections is the viewer's PostgreSQL pool size: two per CPU it may use, at least
// four. A page costs the database a few short queries, so more connections than the CPUs can
// keep busy only make them take turns in the kernel's scheduler instead of in the pool's
// queue, which is first come, first served, and the tail latency grows with the pool
// (BenchmarkRevealRemembered measures it).
func DatabaseConnections() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// Run serves the viewer until ctx ends, then shuts down gracefully (running requests get up
// to 10 s). It serves HTTPS on cfg.Addr, plain HTTP on cfg.HTTPAddr only if that is a
// loopback address (development), and /metrics on cfg.MetricsAddr; it also links the audit
// events it writes into the tenant's chain and deletes expired sessions and codes.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
		cfg.Logger = log
	}
	if cfg.Addr == "" && cfg.HTTPAddr == "" {
		return errors.New("viewer: give an HTTPS address (or, for development, a loopback HTTP address)")
	}
	if cfg.Addr != "" && cfg.TLS == nil {
		return errors.New("viewer: HTTPS needs a TLS certificate")
	}
	if cfg.HTTPAddr != "" && !loopbackAddr(cfg.HTTPAddr) {
		return fmt.Errorf("viewer: plain HTTP address %s is not loopback: patients' browsers get HTTPS only (plain HTTP is for development on 127.0.0.1 or [::1])", cfg.HTTPAddr)
	}
	if cfg.HashParams != (password.Params{}) &&
		(cfg.HashParams.MemoryKiB < password.Default.MemoryKiB || cfg.HashParams.Time < password.Default.Time) {
		return errors.New("viewer: password hash parameters below OWASP's minimum (m=19 MiB, t=2, p=1)")
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	v, err := New(cfg, NewMetrics(reg))
	if err != nil {
		return err
	}
	cfg = v.cfg

	var g serve.Group
	httpsLn, err := g.Listen("HTTPS", cfg.Addr)
	if err != nil {
		return err
	}
	httpLn, err := g.Listen("HTTP", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	metricsLn, err := g.Listen("metrics", cfg.MetricsAddr)
	if err != nil {
		return err
	}

	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler: h, TLSConfig: cfg.TLS, ErrorLog: errLog,
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		}
	}
	httpsServer := newServer(v)
	httpServer := newServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), plainLoopbackKey{}, true)))
	}))
	metricsServer := serve.Metrics(reg, errLog)
	addrs := Addrs{HTTPS: serve.Addr(httpsLn), HTTP: serve.Addr(httpLn), Metrics: serve.Addr(metricsLn)}

	if httpsLn != nil {
		g.Serve("HTTPS", func() error { return httpsServer.ServeTLS(httpsLn, "", "") }, httpsServer.Shutdown)
	}
	if httpLn != nil {
		log.Warn("viewer serves plain HTTP on loopback: development only", "addr", addrs.HTTP)
		g.Serve("HTTP", func() error { return httpServer.Serve(httpLn) }, httpServer.Shutdown)
	}
	if metricsLn != nil {
		g.Serve("metrics", func() error { return metricsServer.Serve(metricsLn) }, metricsServer.Shutdown)
	}
	g.Go(func(ctx context.Context) { cfg.Store.RunAuditSequencer(ctx, store.AuditSequencerInterval) })
	g.Go(v.cleanup)
	return g.Run(ctx, func() {
		log.Info("viewer started", "tenant", cfg.Tenant, "https", addrs.HTTPS, "http", addrs.HTTP, "metrics", addrs.Metrics)
		if cfg.Started != nil {
			cfg.Started(addrs)
		}
	})
}

// cleanup deletes expired sessions, one-time codes and sign-in attempts every
// cleanupInterval until ctx ends. Codes are kept for the rate-limit window after they
// expire, and attempts for the failure window, since the limits count them.
func (v *Viewer) cleanup(ctx context.Context) {
	t := time.NewTicker(cleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := v.now()
		if _, err := v.cfg.Store.DeleteExpiredSessions(ctx, now, v.cfg.Policy.IdleTimeout); err != nil && ctx.Err() == nil {
			v.log.WarnContext(ctx, "delete expired sessions failed", "err", err)
		}
		if _, err := v.cfg.Store.DeleteExpiredCodes(ctx, now.Add(-v.cfg.Policy.CodeWindow)); err != nil && ctx.Err() == nil {
			v.log.WarnContext(ctx, "delete expired one-time codes failed", "err", err)
		}
		if _, err := v.cfg.Store.DeleteLoginAttempts(ctx, now.Add(-v.cfg.Policy.FailureWindow)); err != nil && ctx.Err() == nil {
			v.log.WarnContext(ctx, "delete old sign-in attempts failed", "err", err)
		}
	}
}

// loopbackAddr reports whether host:port names a loopback address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
