package retention_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// A sweep moves the sweeper's series: one done sweep, its purges and holds, the time of the last
// clean sweep; a replica kept out by the lease counts nothing.
func TestSweeperMetrics(t *testing.T) {
	clock := storetest.NewClock(epoch)
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "tenant.db")
	s := storetest.OpenWithClock(t, dsn, clock)
	acceptAt(t, s, clock, nil)
	acceptAt(t, s, clock, nil)
	clock.Advance(721 * time.Hour)
	set := func() retention.Settings { return retention.Settings{Policy: policy()} }
	reg := prometheus.NewRegistry()
	sw, err := retention.NewSweeper(retention.SweeperConfig{Store: s, Settings: set, Holder: "gateway-0", Clock: clock.Now,
		Metrics: retention.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := retention.NewSweeper(retention.SweeperConfig{Store: storetest.OpenWithClock(t, dsn, clock), Settings: set,
		Holder: "gateway-1", Clock: clock.Now, Metrics: retention.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	res := sweep(t, sw)
	if res := sweep(t, other); res.Skipped != retention.SkipLeaseHeld {
		t.Fatalf("the other replica swept: %+v", res)
	}
	if got, want := gathered(t, reg, "securetext_retention_last_success_timestamp_seconds"), float64(res.Finished.UnixNano())/1e9; got != want {
		t.Errorf("last success %v, want %v", got, want)
	}
	for series, n := range map[string]float64{`securetext_retention_sweeps_total{result="done"}`: 1,
		`securetext_retention_messages_total{action="purged"}`: 2, `securetext_retention_messages_total{action="expired"}`: 2,
		`securetext_retention_sweep_errors_total`: 0} {
		if got := gathered(t, reg, series); got != n {
			t.Errorf("%s = %v, want %v", series, got, n)
		}
	}
}

// gathered is the value of one series of reg, written as in the exposition format without
// spaces: name{label="value",…}.
func gathered(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			if name != series {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
