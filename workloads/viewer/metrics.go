package viewer

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/internal/serve"
)

// Metrics are the viewer's Prometheus series. Labels are page names, results, steps and
// route patterns ("/m/{token}", never a token): no phone numbers, message ids, link tokens or
// addresses.
type Metrics struct {
	views    *prometheus.CounterVec
	reveals  *prometheus.CounterVec
	logins   *prometheus.CounterVec
	lockouts prometheus.Counter
	replies  prometheus.Counter
	codes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the viewer's series on reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		views: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_viewer_page_views_total",
			Help: "Pages shown, by page (landing, login, set-password, code, message, expired, revoked, purged, not-found, …).",
		}, []string{"page"}),
		reveals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_viewer_reveals_total",
			Help: "Messages (what=message) and attachments (what=attachment) shown to an authenticated patient.",
		}, []string{"what"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_viewer_logins_total",
			Help: "Sign-in attempts by result: success, wrong-password, paused (held back by the per-recipient throttle), throttled (the per-address limit), busy, error. Sign-ins after setting or resetting a password count as success.",
		}, []string{"result"}),
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "securetext_viewer_lockouts_total",
			Help: "Failed sign-ins that reached a throttle limit: one client's failures, or the failures of all untrusted clients of a recipient (password sign-in from them pauses until failures age out).",
		}),
		replies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "securetext_viewer_replies_total",
			Help: "Replies patients sent (when the tenant takes replies).",
		}),
		codes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_viewer_codes_total",
			Help: "One-time codes by purpose (setup, reset) and result: sent, rate-limited, send-failed, accepted, wrong, missing.",
		}, []string{"purpose", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_viewer_request_duration_seconds",
			Help:    "Time to answer a request, by route pattern, method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
	}
	reg.MustRegister(m.views, m.reveals, m.logins, m.lockouts, m.replies, m.codes, m.latency)
	return m
}

// instrument records each request's latency by the pattern the mux matched.
func (m *Metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &serve.StatusRecorder{ResponseWriter: w, Code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern // set by ServeMux on this request
		if route == "" {
			route = "unmatched"
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost:
		default:
			method = "other"
		}
		m.latency.WithLabelValues(route, method, strconv.Itoa(rec.Code)).Observe(time.Since(start).Seconds())
	})
}
