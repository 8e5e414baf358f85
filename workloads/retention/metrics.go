package retention

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sweeper's series, registered on the gateway's registry. Every replica
// exports them and only the one that holds the lease moves them, so sum the counters and take
// the max of the gauges across a tenant's gateways. No label names a message, a patient or a
// hold.
type Metrics struct {
	sweeps      *prometheus.CounterVec
	messages    *prometheus.CounterVec
	errors      prometheus.Counter
	lastSuccess prometheus.Gauge
	keyFloor    prometheus.Gauge
	unreadable  prometheus.Gauge
}

// Outcomes of a sweep (label result of securetext_retention_sweeps_total).
const (
	sweepDone    = "done"    // ran to the end without errors
	sweepErrors  = "errors"  // ran to the end, but some batches failed
	sweepFailed  = "failed"  // stopped early
	sweepSkipped = "skipped" // no valid policy
)

// NewMetrics registers the sweeper's series on reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_retention_sweeps_total",
			Help: "Retention sweeps this replica ran, by result: done, errors (ran to the end with failed batches), failed (stopped early), skipped (no valid policy).",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_retention_messages_total",
			Help: "Messages the sweeps of this replica acted on, by action: expired, purged, held (due but kept by a legal hold), rewrapped (data key moved to a newer wrapping key version).",
		}, []string{"action"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "securetext_retention_sweep_errors_total",
			Help: "Failed store and keystore calls during retention sweeps; the gateway's log names each.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "securetext_retention_last_success_timestamp_seconds",
			Help: "When the last sweep of this replica that ran to the end without errors finished (Unix time); 0 before one.",
		}),
		keyFloor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "securetext_retention_key_floor_version",
			Help: "The oldest wrapping key version a stored message still needs, as the last sweep of this replica found: the operator destroys the versions below it.",
		}),
		unreadable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "securetext_retention_unreadable_keys",
			Help: "Stored messages whose data key the key holder refused to rewrap at the last sweep of this replica: they keep old wrapping key versions, and so purged content in backups, alive.",
		}),
	}
	for _, r := range []string{sweepDone, sweepErrors, sweepFailed, sweepSkipped} {
		m.sweeps.WithLabelValues(r)
	}
	for _, a := range []string{"expired", "purged", "held", "rewrapped"} {
		m.messages.WithLabelValues(a)
	}
	reg.MustRegister(m.sweeps, m.messages, m.errors, m.lastSuccess, m.keyFloor, m.unreadable)
	return m
}

// observe records one sweep; a sweep another replica's lease kept from running is not one.
func (m *Metrics) observe(res Result, err error) {
	if m == nil || res.Skipped == SkipLeaseHeld {
		return
	}
	switch {
	case res.Skipped != "":
		m.sweeps.WithLabelValues(sweepSkipped).Inc()
	case err != nil:
		m.sweeps.WithLabelValues(sweepFailed).Inc()
	case res.Errors > 0:
		m.sweeps.WithLabelValues(sweepErrors).Inc()
	default:
		m.sweeps.WithLabelValues(sweepDone).Inc()
		m.lastSuccess.Set(float64(res.Finished.UnixNano()) / 1e9)
	}
	m.messages.WithLabelValues("expired").Add(float64(res.LinksExpired))
	m.messages.WithLabelValues("purged").Add(float64(res.MessagesPurged))
	m.messages.WithLabelValues("held").Add(float64(res.MessagesHeld))
	m.errors.Add(float64(res.Errors))
	if k := res.Keys; k != nil {
		m.messages.WithLabelValues("rewrapped").Add(float64(k.Rewrapped))
		m.keyFloor.Set(float64(k.Floor))
		m.unreadable.Set(float64(k.Unreadable))
	}
}
