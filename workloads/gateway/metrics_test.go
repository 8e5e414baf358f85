package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStartSMSSeriesAtZero checks that the send results exist at zero before the first send,
// so that the dashboard's failure ratio and the SMS alert read 0 rather than nothing.
func TestStartSMSSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if n := testutil.CollectAndCount(m.smsSends); n != 0 {
		t.Fatalf("%d SMS series before StartSMS", n)
	}
	m.StartSMS("twilio")
	for _, result := range []string{"sent", "retry", "failed"} {
		if v := testutil.ToFloat64(m.smsSends.WithLabelValues("twilio", result)); v != 0 {
			t.Errorf("%s = %v, want 0", result, v)
		}
	}
	if n := testutil.CollectAndCount(m.smsSends); n != 3 {
		t.Errorf("%d SMS series after StartSMS, want sent, retry and failed", n)
	}
	m.SMS("twilio", "sent")
	if v := testutil.ToFloat64(m.smsSends.WithLabelValues("twilio", "sent")); v != 1 {
		t.Errorf("sent = %v after one send", v)
	}
}
