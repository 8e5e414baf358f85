package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"tenant": ".*", "__rate_interval": "30s"}
	for _, c := range []struct{ in, want string }{
		{`rate(x{tenant=~"$tenant"}[$__rate_interval])`, `rate(x{tenant=~".*"}[30s])`},
		{`rate(x{tenant=~"${tenant}"}[${__rate_interval}])`, `rate(x{tenant=~".*"}[30s])`},
		{`x{tenant=~"${tenant:regex}"}`, `x{tenant=~".*"}`},
		// $tenantx is another variable: it must not be cut at $tenant.
		{`x{a="$tenantx"}`, `x{a="$tenantx"}`},
		{`sum(x) - time()`, `sum(x) - time()`},
	} {
		if got := substitute(c.in, vars); got != c.want {
			t.Errorf("substitute(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLegend(t *testing.T) {
	labels := map[string]string{"tenant": "demo", "reason": "invalid-recipient"}
	if got := legend("{{tenant}} {{ reason }}", labels); got != "demo invalid-recipient" {
		t.Errorf("legend = %q", got)
	}
	if got := legend("p95 {{operation}}", labels); got != "p95" {
		t.Errorf("legend with a missing label = %q, want %q", got, "p95")
	}
	if got := legend("", map[string]string{"__name__": "up", "job": "x"}); got != `up{job="x"}` {
		t.Errorf("empty legend = %q", got)
	}
}

func TestPanelRect(t *testing.T) {
	const width = 1600
	full := panelRect(gridPos{X: 0, Y: 0, W: 24, H: 8}, width)
	if full.X != pagePad || full.W != width-2*pagePad || full.Y != headerH {
		t.Errorf("full-width panel at %+v", full)
	}
	if want := 8.0*(gridUnit+gridGap) - gridGap; full.H != want {
		t.Errorf("8 units high = %v px, want %v", full.H, want)
	}
	left := panelRect(gridPos{X: 0, Y: 1, W: 8, H: 8}, width)
	mid := panelRect(gridPos{X: 8, Y: 1, W: 8, H: 8}, width)
	right := panelRect(gridPos{X: 16, Y: 1, W: 8, H: 8}, width)
	if gap := mid.X - (left.X + left.W); math.Abs(gap-gridGap) > 1e-9 {
		t.Errorf("gap between neighbours %v px, want %d", gap, gridGap)
	}
	if end := right.X + right.W; math.Abs(end-(width-pagePad)) > 1e-9 {
		t.Errorf("the last column ends at %v, want %d", end, width-pagePad)
	}
	if left.Y != headerH+gridUnit+gridGap {
		t.Errorf("y=1 at %v px", left.Y)
	}
}

func TestLinePath(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ps := []point{{t0, 0}, {t0.Add(time.Second), 1}, {t0.Add(10 * time.Second), 2}, {t0.Add(11 * time.Second), math.NaN()}, {t0.Add(12 * time.Second), 3}}
	sx := func(t time.Time) float64 { return float64(t.Sub(t0) / time.Second) }
	sy := func(v float64) float64 { return 100 - 10*v }
	got := linePath(ps, sx, sy, 3*time.Second)
	// A gap of nine seconds and a NaN both lift the pen.
	if want := "M0,100 L1,90 M10,80 M12,70"; got != want {
		t.Errorf("linePath = %q, want %q", got, want)
	}
}

func TestNiceTicks(t *testing.T) {
	ticks := niceTicks(0, 0.37, 4)
	if ticks[0] != 0 || ticks[len(ticks)-1] < 0.37 {
		t.Errorf("ticks %v do not cover [0, 0.37]", ticks)
	}
	for i := 1; i < len(ticks); i++ {
		if d := ticks[i] - ticks[i-1]; math.Abs(d-0.1) > 1e-9 {
			t.Errorf("ticks %v: step %v, want 0.1", ticks, d)
		}
	}
	if got := niceTicks(0, 0, 4); len(got) < 2 || got[len(got)-1] <= 0 {
		t.Errorf("all-zero data: ticks %v", got)
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.0123, "s", "12.3 ms"},
		{7776000, "s", "12.9 week"},
		{0.25, "ops", "0.25 ops/s"},
		{0.5, "percentunit", "50%"},
		{1500, "short", "1.5 K"},
		{3, "short", "3"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

// TestProjectDashboard checks that every panel of the chart's dashboard is one this renderer
// draws and that its queries are left without dashboard variables.
func TestProjectDashboard(t *testing.T) {
	d, err := loadDashboard("../../charts/securetext-operator/files/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"tenant": ".*", "__rate_interval": "30s", "__all": ".*"}
	for _, p := range d.Panels {
		switch p.Type {
		case "row", "timeseries", "bargauge", "state-timeline":
		default:
			t.Errorf("panel %d %q: type %s is not drawn", p.ID, p.Title, p.Type)
		}
		for _, tg := range p.Targets {
			if q := substitute(tg.Expr, vars); strings.Contains(q, "$") {
				t.Errorf("panel %d %q: query keeps a variable: %s", p.ID, p.Title, q)
			}
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no queries", p.ID, p.Title)
		}
	}
	if h := pageHeight(d.Panels, 1600); h < 1000 || h > 5000 {
		t.Errorf("page height %d px", h)
	}
}

func TestPrometheusConfigLabelsWorkloads(t *testing.T) {
	cfg := prometheusConfig(listenAddrs{operatorMetrics: "127.0.0.1:1", keystoreMetrics: "127.0.0.1:2",
		gatewayMetrics: "127.0.0.1:3", viewerMetrics: "127.0.0.1:4"}, 3*time.Second)
	for _, want := range []string{"scrape_interval: 3s", `labels: {tenant: "demo", component: "gateway"}`, `targets: ["127.0.0.1:1"]`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}

func TestConsoleHandsTextsToPatients(t *testing.T) {
	p := &patient{number: "2025550143", links: make(chan string, 1), codes: make(chan string, 1)}
	c := &console{patients: map[string]*patient{"43": p}}
	out := "SMS to +1********43 (console provider, nothing was sent):\n  Demo Clinic: You have a secure message. http://127.0.0.1:8090/m/abcdefghijklmnopqrstuvwxyz Reply STOP to opt out\n" +
		`{"level":"INFO","msg":"unrelated"}` + "\nSMS to +1********43 (console provider, nothing was sent):\n  Demo Clinic: your code is 123456.\n"
	// Written in two pieces, as a pipe may deliver it.
	_, _ = c.Write([]byte(out[:50]))
	_, _ = c.Write([]byte(out[50:]))
	if got := <-p.links; got != "http://127.0.0.1:8090/m/abcdefghijklmnopqrstuvwxyz" {
		t.Errorf("link %q", got)
	}
	if got := <-p.codes; got != "123456" {
		t.Errorf("code %q", got)
	}
}
