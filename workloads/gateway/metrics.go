package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/securetext/securetext/workloads/store"
)

// Metrics are the gateway's Prometheus series. Labels are channels, reason codes, providers
// and results: never phone numbers, senders' content or message ids.
type Metrics struct {
	accepted *prometheus.CounterVec
	refused  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	smsSends *prometheus.CounterVec
}

// NewRegistry is a registry with the Go runtime's and the process's series, for Config.Registry:
// the gateway's and its retention sweeper's series go on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// NewMetrics registers the gateway's series on reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_gateway_messages_accepted_total",
			Help: "Messages stored, by channel (smtp, api). A replayed idempotent request is not counted again.",
		}, []string{"channel"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_gateway_refusals_total",
			Help: "Submissions refused or deferred, by channel and reason code (invalid-recipient, opted-out, too-large, unavailable, …).",
		}, []string{"channel", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "securetext_gateway_accept_duration_seconds",
			Help:    "Time from a complete submission to its answer, by channel and outcome (accepted, refused, unavailable).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"channel", "outcome"}),
		smsSends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "securetext_sms_sends_total",
			Help: "SMS send attempts by provider and result (sent, retry, failed, opted-out, skipped).",
		}, []string{"provider", "result"}),
	}
	reg.MustRegister(m.accepted, m.refused, m.latency, m.smsSends)
	return m
}

// Observe records the outcome of one submission that started at start.
func (m *Metrics) Observe(channel store.Channel, start time.Time, err error) {
	if m == nil {
		return
	}
	outcome := "accepted"
	switch {
	case err == nil:
		m.accepted.WithLabelValues(string(channel)).Inc()
	case Temporary(err):
		outcome = "unavailable"
		m.refused.WithLabelValues(string(channel), ReasonUnavailable).Inc()
	default:
		outcome = "refused"
		m.refused.WithLabelValues(string(channel), Reason(err)).Inc()
	}
	m.latency.WithLabelValues(string(channel), outcome).Observe(time.Since(start).Seconds())
}

// Refuse records a refusal that happened before a submission was complete (a wrong domain at
// RCPT, a bad API key).
func (m *Metrics) Refuse(channel store.Channel, reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(string(channel), reason).Inc()
}

// StartSMS creates provider's sent, retry and failed series at zero, so that a failure ratio
// reads 0, not "no data", while nothing has failed.
func (m *Metrics) StartSMS(provider string) {
	if m == nil {
		return
	}
	for _, result := range []string{"sent", "retry", "failed"} {
		m.smsSends.WithLabelValues(provider, result)
	}
}

// SMS records one send attempt's result.
func (m *Metrics) SMS(provider, result string) {
	if m == nil {
		return
	}
	m.smsSends.WithLabelValues(provider, result).Inc()
}

// outboxCollector reports the outbox's depth and the age of its oldest entry at scrape time.
type outboxCollector struct {
	store *store.Store
	depth *prometheus.Desc
	age   *prometheus.Desc
}

// RegisterOutbox adds securetext_outbox_depth and securetext_outbox_oldest_age_seconds, read
// from s at each scrape.
func RegisterOutbox(reg prometheus.Registerer, s *store.Store) error {
	return reg.Register(&outboxCollector{
		store: s,
		depth: prometheus.NewDesc("securetext_outbox_depth", "Notifications waiting to be sent.", nil, nil),
		age:   prometheus.NewDesc("securetext_outbox_oldest_age_seconds", "Age of the oldest notification waiting to be sent.", nil, nil),
	})
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.depth; ch <- c.age }

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	depth, oldest, err := c.store.OutboxStats(ctx, time.Now())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.depth, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(depth))
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, oldest.Seconds())
}
