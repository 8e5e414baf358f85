package keystore

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/securetext/securetext/workloads/tenantpki"
)

// series is what a registry holds: "name{label=value,…}" → the sample (a counter's value, or a
// histogram's count and sum).
type series map[string]sample

type sample struct {
	value, count, sum float64
}

func gather(t *testing.T, reg *prometheus.Registry) series {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := series{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				out[key] = sample{count: float64(m.GetHistogram().GetSampleCount()), sum: m.GetHistogram().GetSampleSum()}
			case dto.MetricType_COUNTER:
				out[key] = sample{value: m.GetCounter().GetValue()}
			default:
				t.Fatalf("%s: unexpected type %s", key, f.GetType())
			}
		}
	}
	return out
}

// TestMetricsRecordRequests: requests through a real server are recorded by operation and
// status code, with the keys each asked for, and refused callers by reason; no label holds a
// key or a wrapped key.
func TestMetricsRecordRequests(t *testing.T) {
	local := newTestLocal(t)
	f := startKeystore(t, local, nil)
	reg := prometheus.NewRegistry()
	f.srv.Instrument(NewMetrics(reg))

	cert := f.clientCert(t, testTenant, tenantpki.ComponentGateway)
	hc := f.httpClient(t, &cert)
	a := f.do(t, hc, "POST", "/v1/keys/wrap-new", `{"count": 3}`)
	var wrapped struct {
		Keys []struct {
			Wrapped string `json:"wrapped"`
		} `json:"keys"`
	}
	if a.status != http.StatusOK || json.Unmarshal(a.body, &wrapped) != nil || len(wrapped.Keys) != 3 {
		t.Fatalf("wrap-new count 3: %d %s", a.status, a.body)
	}
	if a := f.do(t, hc, "POST", "/v1/keys/unwrap", fmt.Sprintf(`{"wrapped_keys": [%q, %q]}`,
		wrapped.Keys[0].Wrapped, wrapped.Keys[1].Wrapped)); a.status != http.StatusOK {
		t.Fatalf("unwrap two: %d %s", a.status, a.body)
	}
	if a := f.do(t, hc, "POST", "/v1/keys/unwrap", fmt.Sprintf(`{"wrapped": %q}`, wrapped.Keys[2].Wrapped)); a.status != http.StatusOK {
		t.Fatalf("unwrap one: %d %s", a.status, a.body)
	}
	if a := f.do(t, hc, "POST", "/v1/keys/unwrap", `{"wrapped": "local:v1:AAAA"}`); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("unwrap an invalid key: %d %s", a.status, a.body)
	}
	if a := f.do(t, f.httpClient(t, nil), "POST", "/v1/keys/wrap-new", `{}`); a.status != http.StatusUnauthorized {
		t.Fatalf("wrap-new without a certificate: %d %s", a.status, a.body)
	}

	got := gather(t, reg)
	want := series{
		"securetext_keystore_request_duration_seconds{code=200,operation=wrap-new}": {count: 1},
		"securetext_keystore_request_duration_seconds{code=401,operation=wrap-new}": {count: 1},
		"securetext_keystore_request_duration_seconds{code=200,operation=unwrap}":   {count: 2},
		"securetext_keystore_request_duration_seconds{code=422,operation=unwrap}":   {count: 1},
		"securetext_keystore_request_keys{operation=wrap-new}":                      {count: 1, sum: 3},
		"securetext_keystore_request_keys{operation=unwrap}":                        {count: 3, sum: 4},
		"securetext_keystore_checkpoint_refusals_total{}":                           {},
	}
	for _, reason := range refusalReasons {
		v := 0.0
		if reason == ReasonNoClientCertificate {
			v = 1
		}
		want["securetext_keystore_refusals_total{reason="+reason+"}"] = sample{value: v}
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Errorf("no series %s", key)
			continue
		}
		if strings.HasPrefix(key, "securetext_keystore_request_duration_seconds") {
			g.sum = 0 // durations vary; their counts and the key counts are exact
		}
		if g != w {
			t.Errorf("%s = %+v, want %+v", key, got[key], w)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected series %s", key)
		}
		for _, k := range wrapped.Keys {
			if strings.Contains(key, k.Wrapped) || strings.Contains(key, testTenant) {
				t.Errorf("series %s names a wrapped key or the tenant", key)
			}
		}
	}
}

// TestMetricsRecordVaultBatches: a wrap-new and an unwrap of many keys through a server over
// the real Transit backend are recorded as Vault batches whose sizes add up to the keys.
func TestMetricsRecordVaultBatches(t *testing.T) {
	tf := newTransitFixture(t)
	counter := &callCounter{}
	ks := tf.start(t, transitOpts{batch: BatchConfig{MaxInFlight: 1, Window: 50 * time.Millisecond}, counter: counter})
	waitReady(t, ks)
	f := startKeystore(t, ks, nil)
	reg := prometheus.NewRegistry()
	f.srv.Instrument(NewMetrics(reg))

	const n = 16
	cert := f.clientCert(t, testTenant, tenantpki.ComponentViewer)
	hc := f.httpClient(t, &cert)
	a := f.do(t, hc, "POST", "/v1/keys/wrap-new", fmt.Sprintf(`{"count": %d}`, n))
	var wrapped struct {
		Keys []struct {
			Wrapped string `json:"wrapped"`
		} `json:"keys"`
	}
	if a.status != http.StatusOK || json.Unmarshal(a.body, &wrapped) != nil || len(wrapped.Keys) != n {
		t.Fatalf("wrap-new count %d: %d %s", n, a.status, a.body)
	}
	var keys []string
	for _, k := range wrapped.Keys {
		keys = append(keys, fmt.Sprintf("%q", k.Wrapped))
	}
	if a := f.do(t, hc, "POST", "/v1/keys/unwrap", `{"wrapped_keys": [`+strings.Join(keys, ",")+`]}`); a.status != http.StatusOK {
		t.Fatalf("unwrap %d: %d %s", n, a.status, a.body)
	}

	got := gather(t, reg)
	for _, op := range []string{"encrypt", "decrypt"} {
		calls, items := counter.get("/v1/transit/" + op + "/messages")
		size := got["securetext_keystore_vault_batch_keys{operation="+op+"}"]
		latency := got["securetext_keystore_vault_batch_duration_seconds{operation="+op+"}"]
		if size.sum != n || int(size.count) != calls || items != n || int(latency.count) != calls || latency.sum <= 0 {
			t.Errorf("%s: recorded %v batches of %v keys taking %vs in all; Vault saw %d calls with %d items",
				op, size.count, size.sum, latency.sum, calls, items)
		}
	}
	if k := got["securetext_keystore_request_keys{operation=unwrap}"]; k.count != 1 || k.sum != n {
		t.Errorf("keys per unwrap request: %+v, want one request of %d", k, n)
	}
}
