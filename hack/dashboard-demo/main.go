// Command dashboard-demo draws the project's Grafana dashboard
// (charts/securetext-operator/files/grafana-dashboard.json) filled with data from a real run,
// without Grafana: it starts the product on loopback, scrapes it with Prometheus, drives
// load, runs every panel's queries through Prometheus's HTTP API and renders the panels in
// their grid layout as HTML with inline SVG, which headless Chromium turns into a PNG.
//
// What runs, all on 127.0.0.1 and all stopped at the end:
//
//   - the local control plane of `make run`: kube-apiserver and etcd from bin/, a Vault dev
//     server with Kubernetes auth, and bin/securetext-operator with the samples' tenants:
//     demo (console SMS) becomes Ready; clinic (Twilio) waits for Secrets nobody provides;
//   - PostgreSQL, and the demo tenant's keystore (Vault Transit, logging in with the
//     Kubernetes auth role the operator made), viewer and gateway from bin/securetext;
//   - Debian's prometheus, scraping the operator and the workloads, with the tenant label
//     the chart's PodMonitor would add;
//   - a load driver: a sender submitting by SMTP and the REST API, patients reading their
//     texts in the viewer (codes and passwords), a password guesser and a foreign client
//     of the keystore.
//
// Usage (from the repository root; `make dashboard-demo` builds the binaries first):
//
//	go run ./hack/dashboard-demo -duration 4m -out docs/dashboard.png
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/hack/testenv"
)

type options struct {
	duration       time.Duration
	scrapeInterval time.Duration
	rateInterval   time.Duration
	dashboard      string
	out            string
	html           string
	width          int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 4*time.Minute, "how long to drive load")
	flag.DurationVar(&o.scrapeInterval, "scrape-interval", 3*time.Second, "Prometheus scrape interval")
	flag.DurationVar(&o.rateInterval, "rate-interval", 30*time.Second, "what $__rate_interval stands for in the panels' queries")
	flag.StringVar(&o.dashboard, "dashboard", "charts/securetext-operator/files/grafana-dashboard.json", "the Grafana dashboard model")
	flag.StringVar(&o.out, "out", "docs/dashboard.png", "the picture to write")
	flag.StringVar(&o.html, "html", "", "also keep the rendered HTML page here")
	flag.IntVar(&o.width, "width", 1600, "page width in pixels")
	flag.Parse()
	log.SetFlags(log.Ltime)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	err := run(ctx, o)
	log.Printf("finished in %s", time.Since(start).Round(time.Second))
	if err != nil {
		log.Printf("dashboard-demo: %v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	d, err := loadDashboard(o.dashboard)
	if err != nil {
		return err
	}
	bin, err := testenv.BinDir()
	if err != nil {
		return err
	}
	for _, b := range []string{"securetext", "securetext-operator"} {
		if _, err := testenv.Binary(b, "build"); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "securetext-dashboard-")
	if err != nil {
		return err
	}
	s := &stack{dir: dir, bin: bin, logf: log.Printf}
	s.cleanup = append(s.cleanup, func() { os.RemoveAll(dir) })
	defer func() {
		log.Print("stopping everything")
		s.stop()
	}()

	a, err := newListenAddrs()
	if err != nil {
		return err
	}
	// Prometheus first, so the pictures show the tenants coming up.
	log.Printf("starting prometheus on %s (scrape every %s)", a.prometheus, o.scrapeInterval)
	prom, err := s.startPrometheus(ctx, a, o.scrapeInterval)
	if err != nil {
		return err
	}
	from := time.Now()

	log.Print("starting kube-apiserver, etcd, Vault and PostgreSQL")
	cp, err := s.startControlPlane(ctx)
	if err != nil {
		return err
	}
	log.Printf("starting the operator (metrics %s)", a.operatorMetrics)
	if _, err := s.startOperator(ctx, cp, a.operatorMetrics); err != nil {
		return err
	}
	if err := applySamples(ctx, cp.k8s); err != nil {
		return err
	}
	if err := provideDatabase(ctx, cp); err != nil {
		return err
	}
	if err := waitCondition(ctx, cp.k8s, workloadTenant, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, 2*time.Minute); err != nil {
		return err
	}
	login, err := keystoreVaultLogin(ctx, cp, dir)
	if err != nil {
		return err
	}
	pk, err := writePKI(dir)
	if err != nil {
		return err
	}
	snd, err := writeSenders(ctx, dir)
	if err != nil {
		return err
	}
	drv, con, err := newDriver(a, snd, pk, log.Printf)
	if err != nil {
		return err
	}
	log.Print("starting the demo tenant's keystore, viewer and gateway")
	if err := s.startWorkloads(ctx, cp, a, pk, snd, login, con); err != nil {
		return err
	}
	if err := setDeploymentsAvailable(ctx, cp.k8s); err != nil {
		return err
	}
	if err := waitCondition(ctx, cp.k8s, workloadTenant, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, 2*time.Minute); err != nil {
		return err
	}
	for _, t := range []string{workloadTenant, "clinic"} {
		log.Printf("tenant %s: %s", t, conditionSummary(ctx, cp.k8s, t))
	}

	log.Printf("driving load for %s", o.duration)
	lctx, cancel := context.WithTimeout(ctx, o.duration)
	drv.run(lctx)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	log.Printf("load done:\n%s", drv.summary())
	for _, p := range s.procs {
		if err := p.running(); err != nil {
			return err
		}
	}
	time.Sleep(2 * o.scrapeInterval) // the last samples
	to := time.Now()

	data, table := queryPanels(ctx, prom, d, o, from, to)
	html := renderPage(page{Dashboard: d, Data: data, Start: from, End: to, Width: float64(o.width),
		Variables: "Data source: Prometheus      Tenant: All"})
	htmlFile := filepath.Join(dir, "dashboard.html")
	if err := os.WriteFile(htmlFile, []byte(html), 0o644); err != nil {
		return err
	}
	if o.html != "" {
		if err := os.WriteFile(o.html, []byte(html), 0o644); err != nil {
			return err
		}
	}
	if err := screenshot(ctx, htmlFile, o.out, o.width, pageHeight(d.Panels, float64(o.width)), dir); err != nil {
		return err
	}
	fmt.Println(table)
	st, err := os.Stat(o.out)
	if err != nil {
		return err
	}
	log.Printf("wrote %s (%d KiB)", o.out, st.Size()>>10)
	return nil
}

// queryPanels runs every panel's targets over [from, to] and returns their series by panel,
// and the report table.
func queryPanels(ctx context.Context, prom promClient, d *dashboard, o options, from, to time.Time) (map[int]panelData, string) {
	vars := map[string]string{
		"tenant": ".*", "__all": ".*",
		"__rate_interval": promDuration(o.rateInterval), "__interval": promDuration(o.scrapeInterval),
	}
	step := max(o.scrapeInterval, to.Sub(from)/400)
	data := map[int]panelData{}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PANEL\tTYPE\tTITLE\tSERIES\tDATA")
	for _, p := range d.Panels {
		if p.Type == "row" {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\n", p.ID, p.Type, p.Title)
			continue
		}
		var pd panelData
		for _, t := range p.Targets {
			ss, err := prom.queryRange(ctx, substitute(t.Expr, vars), t.LegendFormat, from, to, step)
			if err != nil {
				pd.Err = errors.Join(pd.Err, err)
				continue
			}
			pd.Series = append(pd.Series, ss...)
		}
		data[p.ID] = pd
		state := "yes"
		switch {
		case pd.Err != nil:
			state = "query error: " + pd.Err.Error()
		case !hasPoints(pd.Series):
			state = "no data"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", p.ID, p.Type, p.Title, len(pd.Series), state)
	}
	tw.Flush()
	return data, b.String()
}

// promDuration writes d as Prometheus reads durations (30s, 2m).
func promDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", max(1, d/time.Second))
}

// screenshot renders htmlFile with headless Chromium into out, width × height pixels.
func screenshot(ctx context.Context, htmlFile, out string, width, height int, dir string) error {
	chromium, err := testenv.ChromiumPath()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "chromium"), "--screenshot="+abs,
		fmt.Sprintf("--window-size=%d,%d", width, height), "file://"+htmlFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if outp, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chromium screenshot: %w\n%s", err, outp)
	}
	return nil
}

func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout}
}

func sortStrings(s []string) { sort.Strings(s) }

// hostPort splits a host:port address.
func hostPort(addr string) (string, string) {
	h, p, _ := net.SplitHostPort(addr)
	return h, p
}
