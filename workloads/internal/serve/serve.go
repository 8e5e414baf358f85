// Package serve runs a workload's listeners the one way SecureText's servers do: every
// listener is opened before anything serves (so a taken port fails the start with a clear
// error), all serve until the context ends or one fails, and then all shut down together,
// running requests getting up to ShutdownTimeout.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownTimeout bounds the graceful shutdown of a Group.
const ShutdownTimeout = 10 * time.Second

// Group is a set of listeners, the servers on them and background loops.
type Group struct {
	listeners []net.Listener
	servers   []server
	loops     []func(ctx context.Context)
}

type server struct {
	what     string
	serve    func() error
	shutdown func(context.Context) error
}

// Listen opens a TCP listener on addr for what ("SMTP", "metrics", …); an empty addr gives
// nil and no error. On failure every listener opened so far is closed.
func (g *Group) Listen(what, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("%s listener on %s: %w (is another process using the port?)", what, addr, err)
	}
	g.listeners = append(g.listeners, l)
	return l, nil
}

// Close closes every listener.
func (g *Group) Close() {
	for _, l := range g.listeners {
		_ = l.Close()
	}
}

// Serve adds a server: serve runs until shutdown is called (or fails).
func (g *Group) Serve(what string, serve func() error, shutdown func(context.Context) error) {
	g.servers = append(g.servers, server{what, serve, shutdown})
}

// Go adds a background loop that runs until its context ends.
func (g *Group) Go(loop func(ctx context.Context)) { g.loops = append(g.loops, loop) }

// Run starts the servers and loops, calls started, and waits until ctx ends or a server
// fails; then it shuts everything down and returns the first failure.
func (g *Group) Run(ctx context.Context, started func()) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(g.servers))
	for _, s := range g.servers {
		wg.Go(func() {
			if err := s.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && runCtx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", s.what, err)
				cancel()
			}
		})
	}
	for _, loop := range g.loops {
		wg.Go(func() { loop(runCtx) })
	}
	if started != nil {
		started()
	}

	<-runCtx.Done()
	shutdownCtx, done := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer done()
	for _, s := range g.servers {
		_ = s.shutdown(shutdownCtx)
	}
	g.Close()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Addr is l's address, or "" for no listener.
func Addr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Metrics is the plain-HTTP /metrics server of reg.
func Metrics(reg *prometheus.Registry, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errLog}),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
	}
}
