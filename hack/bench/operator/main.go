// Command operator measures how long the SecureText operator takes to bring many
// SecureTextTenants to VaultReady=True, and what it costs in reconciles, CPU and memory, on
// this machine, in one run, and prints a Markdown table:
//
//   - a real kube-apiserver and etcd (testenv.StartKube: envtest with the CRDs and a /16
//     Service range) and a real Vault dev server, each its own process on 127.0.0.1;
//   - the operator in this process, exactly as main.go builds it (controllers.Setup,
//     controllers.CacheOptions), with a Vault token that holds only the operator's own policy
//     (config/rbac/vault-operator-policy.hcl), as in production;
//   - N tenants created one after the other, the clock running from the first Create until a
//     List (past the operator's cache) shows every tenant VaultReady=True.
//
// Afterwards it checks in Vault, as root, that every tenant got its Transit mount and its
// keystore role, and that sampled tenants have both keys and their policy; any miss, a
// timeout or an operator that stops exits non-zero. Missing a target only prints MISS.
//
//	go run ./hack/bench/operator [-tenants 200] [-workers 4]
//
// It needs bin/kube-apiserver, bin/etcd and bin/vault-dev (make test-binaries).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
)

// The targets from the operator's requirements, for 200 tenants.
const (
	targetTenants  = 200
	targetReady    = 3 * time.Minute
	targetMemoryMB = 300
)

type options struct {
	tenants, workers int
	timeout          time.Duration
	// qps and burst of the manager's rest.Config; 0 keeps envtest's (1000 and 2000), a
	// negative qps turns the client-side rate limiter off, as ctrl.GetConfig does in a cluster.
	qps   float64
	burst int
	keep  bool
}

func main() {
	var o options
	flag.IntVar(&o.tenants, "tenants", targetTenants, "SecureTextTenants to create (bench-000, bench-001, …)")
	flag.IntVar(&o.workers, "workers", 4, "the operator's MaxConcurrentReconciles (-max-concurrent-reconciles)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up when not every tenant is VaultReady this long after the first Create")
	flag.Float64Var(&o.qps, "qps", 0, "QPS of the manager's rest.Config; 0 keeps envtest's, negative turns the client-side rate limiter off")
	flag.IntVar(&o.burst, "burst", 0, "Burst of the manager's rest.Config; 0 keeps envtest's")
	flag.BoolVar(&o.keep, "keep-log", false, "keep the operator's log even when the run succeeds")
	flag.Parse()
	if o.tenants <= 0 || o.tenants > 1000 || o.workers <= 0 || o.timeout <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -tenants must be 1…1000, -workers and -timeout positive")
		os.Exit(2)
	}
	benchkit.Main(func(ctx context.Context) error { return run(ctx, o) })
}

var logf = benchkit.Logf

// run starts the stack, runs the measurement, checks Vault and prints the table. Every part it
// started is stopped on return, whatever happened (deferred in the reverse order of start).
func run(ctx context.Context, o options) (err error) {
	dir, err := os.MkdirTemp("", "securetext-operator-bench-")
	if err != nil {
		return err
	}
	logPath := dir + "/operator.log"
	defer func() {
		if err != nil || o.keep {
			if lines, total := firstErrorLines(logPath, 5); err != nil && total > 0 {
				logf("the operator logged %d errors; the first:\n  %s", total, strings.Join(lines, "\n  "))
			}
			logf("the operator's log: %s", logPath)
			return
		}
		_ = os.RemoveAll(dir)
	}()

	s, err := startStack(ctx, o, logPath)
	if err != nil {
		return err
	}
	defer s.Stop()

	m, err := measure(ctx, o, s)
	if err != nil {
		return err
	}
	checks, err := verifyVault(ctx, s, m)
	if err != nil {
		return err
	}
	m.errorLines, m.errorTotal = firstErrorLines(logPath, 5)
	printTable(o, s, m, checks)
	return nil
}
