package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
	"github.com/securetext/securetext/hack/testenv"
)

// printTable writes the results as Markdown: the measures with the targets, then the checks
// in Vault and notes on what was measured.
func printTable(o options, s *stack, m *measurement, checks []string) {
	n := float64(len(m.tenants))
	d := m.metrics
	ctrlLabel := map[string]string{"controller": controllerName}
	results := d.by("controller_runtime_reconcile_total", "result", ctrlLabel)
	var reconciles float64
	for _, v := range results {
		reconciles += v
	}

	fmt.Printf("\n## SecureText operator: %d tenants to VaultReady=True (%s)\n\n", len(m.tenants), benchkit.Machine())
	fmt.Printf("The operator runs in this process as main.go builds it (controllers.Setup, controllers.CacheOptions, %d workers); "+
		"kube-apiserver and etcd (envtest) and Vault (dev server) run as their own processes on 127.0.0.1. "+
		"Service IP range: %s. Manager rest.Config: %s. Load average before the run: %s.\n\n",
		o.workers, testenv.ServiceCIDR, limiterText(s.qps, s.burst), m.load)

	target := "< 3 min"
	if len(m.tenants) != targetTenants {
		target = fmt.Sprintf("< 3 min (for %d tenants)", targetTenants)
	}
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	memTarget := fmt.Sprintf("< %d MiB", targetMemoryMB)

	fmt.Println("| measure | value | target | result |")
	fmt.Println("| --- | ---: | ---: | --- |")
	row := func(what, value, target, result string) {
		fmt.Printf("| %s | %s | %s | %s |\n", what, value, target, result)
	}
	row(fmt.Sprintf("creating the %d tenants (one Create after the other)", len(m.tenants)), secs(m.created), "", "")
	row("first Create → 50 % VaultReady=True", secs(m.t50), "", "")
	row("first Create → 90 % VaultReady=True", secs(m.t90), "", "")
	row("**first Create → all VaultReady=True**", "**"+secs(m.elapsed)+"**", target, passMiss(m.elapsed < targetReady))
	row(fmt.Sprintf("reconciles of controller %q", controllerName), fmt.Sprintf("%.0f (%.1f per tenant; %s)", reconciles, reconciles/n, breakdown(results)), "", "")
	row("reconciles/s", fmt.Sprintf("%.1f", reconciles/m.elapsed.Seconds()), "", "")
	row("reconcile errors (result=error)", fmt.Sprintf("%.0f", results["error"]), "", "")
	if c := d.sum("controller_runtime_reconcile_time_seconds_count", ctrlLabel); c > 0 {
		row("mean reconcile duration", fmt.Sprintf("%.1f ms", 1000*d.sum("controller_runtime_reconcile_time_seconds_sum", ctrlLabel)/c), "", "")
	}
	if steps := d.by("securetext_operator_reconcile_errors_total", "step", nil); sumOf(steps) > 0 {
		row("failed reconcile steps, by step", breakdown(steps), "", "")
	}
	vaultCalls := d.sum("securetext_operator_vault_request_duration_seconds_count", nil)
	row("Vault calls by the operator", fmt.Sprintf("%.0f (%.1f per tenant), %.0f failed", vaultCalls, vaultCalls/n,
		d.sum("securetext_operator_vault_request_errors_total", nil)), "", "")
	opReqs := operatorRequests(d, m.benchReqs)
	row("Kubernetes API requests by the operator", fmt.Sprintf("%.0f (%.1f per tenant; %s)", sumOf(opReqs), sumOf(opReqs)/n, breakdown(opReqs)), "", "")
	row("non-2xx API responses to the operator, by code and method", orNone(failedRequests(d)), "", "")
	waits := d.sum("rest_client_rate_limiter_duration_seconds_count", nil)
	row("time in the manager's client-side rate limiter", fmt.Sprintf("%.2f s in total over %.0f requests",
		d.sum("rest_client_rate_limiter_duration_seconds_sum", nil), waits), "", "")
	row("CPU s: this process (operator + bench client)", fmt.Sprintf("%.1f", m.cpu["bench"]), "", "")
	var others []string
	for _, name := range slices.Sorted(maps.Keys(m.cpu)) {
		if name != "bench" {
			others = append(others, fmt.Sprintf("%s %.1f", name, m.cpu[name]))
		}
	}
	row("CPU s: the servers", strings.Join(others, ", "), "", "")
	row("Go heap in use after GC (HeapInuse)", fmt.Sprintf("%.1f MiB", mib(m.mem.heapInuse)), "", "")
	row("Go runtime memory from the OS (Sys)", fmt.Sprintf("%.1f MiB", mib(m.mem.sys)), "", "")
	row(fmt.Sprintf("**RSS at %d tenants, after GC (VmRSS)**", len(m.tenants)), fmt.Sprintf("**%.1f MiB**", mib(m.mem.rss)), memTarget, passMiss(mib(m.mem.rss) < targetMemoryMB))
	row("peak RSS during the run (VmHWM)", fmt.Sprintf("%.1f MiB", mib(m.mem.hwm)), memTarget, passMiss(mib(m.mem.hwm) < targetMemoryMB))

	fmt.Println()
	fmt.Println("Checked in Vault with the root token after the run:")
	fmt.Println()
	for _, c := range checks {
		fmt.Printf("- %s\n", c)
	}
	fmt.Println()
	fmt.Println("Notes:")
	fmt.Println()
	fmt.Println("- VaultReady=True is read with a List past the operator's cache every 250 ms, counting only conditions of the tenant's current generation; the 50 %/90 %/all times have that resolution.")
	fmt.Println("- Reconciles, errors, Vault calls and API requests are deltas of controller-runtime's metrics registry, read in-process, from just before the first Create to the List that found all tenants ready. " +
		"API requests are the process's rest_client_requests_total minus the bench client's own (counted on its transport); the bench client has no client-side rate limiter, so the limiter time is the manager's.")
	fmt.Println("- Memory is the whole bench process: the operator (manager, cache, controller, Vault client) plus the bench's own API client and the envtest and Vault process handles. " +
		"kube-apiserver, etcd and Vault are separate processes and are not counted.")
	fmt.Println("- Rendered workloads never become available: envtest runs no controller-manager, kubelet or scheduler, so WorkloadsReady stays False; the run measures the Vault side, as asked.")
	if len(m.errorLines) > 0 {
		fmt.Printf("- The operator logged %d errors during the run; the first:\n\n", m.errorTotal)
		for _, l := range m.errorLines {
			fmt.Printf("      %s\n", l)
		}
	}
	fmt.Println()
}

// operatorRequests is the process's API requests by method, less the bench client's.
func operatorRequests(d metricsDelta, bench map[string]int) map[string]float64 {
	reqs := d.by("rest_client_requests_total", "method", nil)
	for method, c := range bench {
		reqs[method] -= float64(c)
	}
	for method, c := range reqs {
		if c <= 0 {
			delete(reqs, method)
		}
	}
	return reqs
}

// failedRequests is the process's API responses that were not 2xx, as "409 PATCH 200, …". The
// bench client's requests all succeed (the run stops otherwise), so these are the operator's.
func failedRequests(d metricsDelta) map[string]float64 {
	out := map[string]float64{}
	for _, s := range d {
		if s.name == "rest_client_requests_total" && !strings.HasPrefix(s.labels["code"], "2") && s.value > 0 {
			out[s.labels["code"]+" "+s.labels["method"]] += s.value
		}
	}
	return out
}

func orNone(m map[string]float64) string {
	if b := breakdown(m); b != "" {
		return b
	}
	return "none"
}

// limiterText describes the manager's client-side rate limits.
func limiterText(qps float32, burst int) string {
	switch {
	case qps < 0:
		return "client-side rate limiter off (QPS < 0), as ctrl.GetConfig leaves it in a cluster"
	case qps == 1000 && burst == 2000:
		return "QPS 1000, Burst 2000 (envtest's, unchanged; in a cluster ctrl.GetConfig turns the limiter off)"
	default:
		return fmt.Sprintf("QPS %g, Burst %d (set with -qps/-burst)", qps, burst)
	}
}

func sumOf(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// breakdown is "a 3, b 2", largest first, leaving out zeros.
func breakdown(m map[string]float64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**MISS**"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// firstErrorLines returns the first n error entries of the operator's JSON log, without their
// stack traces, and how many there are in all.
func firstErrorLines(path string, n int) ([]string, int) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	var lines []string
	total := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) != nil || entry["level"] != "error" {
			continue
		}
		total++
		if len(lines) < n {
			delete(entry, "stacktrace")
			b, _ := json.Marshal(entry)
			lines = append(lines, string(b))
		}
	}
	return lines, total
}

// loadAvg is the 1, 5 and 15 minute load averages, to tell a busy machine from a slow operator.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
