package keystore

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/internal/serve"
)

// Metrics are the keystore's Prometheus series. Labels are operations, status codes and
// refusal reasons from fixed sets: never a key, a wrapped key, a caller's identity or anything
// about a message.
type Metrics struct {
	requests           *prometheus.HistogramVec
	requestKeys        *prometheus.HistogramVec
	vaultBatchKeys     *prometheus.HistogramVec
	vaultBatchDuration *prometheus.HistogramVec
	server             atomic.Pointer[Server] // whose refusal counts are exported
}

// keyCountBuckets fit the data keys of one request or one Vault batch: a client sends at most
// maxWrapCount per request, and a Transit batch holds at most BatchConfig.MaxItems (256 by
// default).
var keyCountBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}

// NewMetrics registers the keystore's series on reg (nil: a private registry, for tests).
// Server.Instrument makes a server and its backend record on them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_keystore_request_duration_seconds",
			Help:    "Time to answer an API request, by operation (wrap-new, unwrap, rewrap, key-versions, last-checkpoint, extend-checkpoint, public-key, health) and status code; refused callers included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"operation", "code"}),
		requestKeys: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_keystore_request_keys",
			Help:    "Data keys asked for in one request, by operation (wrap-new, unwrap, rewrap): how well the clients coalesce their calls.",
			Buckets: keyCountBuckets,
		}, []string{"operation"}),
		vaultBatchKeys: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_keystore_vault_batch_keys",
			Help:    "Data keys in one Vault Transit call, by operation (encrypt, decrypt, rewrap): how well the keystore coalesces concurrent requests into batch_input.",
			Buckets: keyCountBuckets,
		}, []string{"operation"}),
		vaultBatchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_keystore_vault_batch_duration_seconds",
			Help:    "Time of one Vault Transit call, by operation (encrypt, decrypt, rewrap), whatever its outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation"}),
	}
	reg.MustRegister(m.requests, m.requestKeys, m.vaultBatchKeys, m.vaultBatchDuration, &serverCounters{
		metrics: m,
		refusals: prometheus.NewDesc("securetext_keystore_refusals_total",
			"Callers the keystore refused (no, untrusted or wrong certificate), by reason.", []string{"reason"}, nil),
		checkpointRefusals: prometheus.NewDesc("securetext_keystore_checkpoint_refusals_total",
			"Audit checkpoint requests refused because the events do not extend the last checkpoint the keystore signed: the audit trail in the database was rewritten.", nil, nil),
	})
	return m
}

// Instrument makes s record its requests on m and export its refusal counts, and, when s's
// Service batches Vault calls (Transit), makes the Service record its batches too. Call it
// before serving; a Server that is not instrumented records nothing.
func (s *Server) Instrument(m *Metrics) {
	s.metrics.Store(m)
	m.server.Store(s)
	if svc, ok := s.svc.(interface{ Instrument(*Metrics) }); ok {
		svc.Instrument(m)
	}
}

// Instrument makes t record its Vault Transit calls on m.
func (t *Transit) Instrument(m *Metrics) { t.metrics.Store(m) }

// instrument records the duration and status code of each request to next as operation op.
func (s *Server) instrument(op string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := s.metrics.Load()
		if m == nil {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &serve.StatusRecorder{ResponseWriter: w, Code: http.StatusOK}
		next.ServeHTTP(rec, r)
		m.requests.WithLabelValues(op, strconv.Itoa(rec.Code)).Observe(time.Since(start).Seconds())
	})
}

// observeKeys records how many data keys one request of operation op asked for.
func (m *Metrics) observeKeys(op string, n int) {
	if m == nil {
		return
	}
	m.requestKeys.WithLabelValues(op).Observe(float64(n))
}

// observeVaultBatch records one Transit call of operation op with n items that started at start.
func (m *Metrics) observeVaultBatch(op string, n int, start time.Time) {
	if m == nil {
		return
	}
	m.vaultBatchKeys.WithLabelValues(op).Observe(float64(n))
	m.vaultBatchDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// serverCounters exports the refusals the instrumented Server counts (Refusals,
// CheckpointRefusals), read at each scrape.
type serverCounters struct {
	metrics                      *Metrics
	refusals, checkpointRefusals *prometheus.Desc
}

func (c *serverCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.refusals
	ch <- c.checkpointRefusals
}

func (c *serverCounters) Collect(ch chan<- prometheus.Metric) {
	s := c.metrics.server.Load()
	if s == nil {
		return
	}
	for reason, n := range s.Refusals() {
		ch <- prometheus.MustNewConstMetric(c.refusals, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(c.checkpointRefusals, prometheus.CounterValue, float64(s.CheckpointRefusals()))
}
