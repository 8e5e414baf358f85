// Command gateway measures SecureText's intake against Postfix on this machine, in one run,
// and prints a Markdown table:
//
//   - Postfix: a private throwaway instance that queues each message durably and discards it,
//     loaded with Postfix's own smtp-source;
//   - SecureText SMTP: the same smtp-source command line against gateway.Run, on PostgreSQL
//     with durable commits and the keystore over mTLS in front of a real Vault Transit;
//   - SecureText REST: concurrent HTTPS clients, then an open-loop run at half the rate they
//     reached, for accept latency.
//
// The notifier runs throughout with a webhook SMS provider whose receiver discards the texts,
// so the outbox drains during the runs as in production.
//
//	go run ./hack/bench/gateway [-messages 5000] [-sessions 32] [-size 1024]
//
// It needs root (Postfix's master runs as root), bin/vault-dev (make test-binaries) and
// PostgreSQL's server binaries; it installs Debian's postfix package when Postfix or
// smtp-source is missing. Everything listens on 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"time"

	"github.com/securetext/securetext/hack/testenv"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
	"github.com/securetext/securetext/workloads/gctune"
)

type options struct {
	messages, sessions, size int
	restDuration             time.Duration
	pprofDir                 string
	rounds                   int
}

func main() {
	var o options
	flag.IntVar(&o.messages, "messages", 5000, "messages per closed-loop run")
	flag.IntVar(&o.sessions, "sessions", 32, "concurrent SMTP sessions (smtp-source -s) and REST clients")
	flag.IntVar(&o.size, "size", 1024, "message body bytes (smtp-source -l)")
	flag.DurationVar(&o.restDuration, "rest-duration", 10*time.Second, "length of the open-loop REST run")
	flag.StringVar(&o.pprofDir, "pprof", "", "write a CPU profile of each SecureText run into this folder")
	flag.IntVar(&o.rounds, "rounds", 1, "repeat Postfix, SecureText SMTP and REST closed loop this many times, alternating, and report the medians (a shared 2-core machine varies by ±20 % between runs)")
	flag.Parse()
	if o.messages <= 0 || o.sessions <= 0 || o.size <= 0 || o.restDuration <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -messages, -sessions, -size and -rest-duration must be positive")
		os.Exit(2)
	}
	gctune.Tune() // the gateway and keystore run in this process: collect as their commands do
	benchkit.Main(func(ctx context.Context) error { return run(ctx, o) })
}

var logf = benchkit.Logf

// result is one row of the table.
type result struct {
	system, workload string
	messages         int
	elapsed          time.Duration
	p50, p99         time.Duration
	cpu              cpuUse
	note             string
	conns            string // how the gateway's connections to the SMS gateway and Vault were reused
	db               string // PostgreSQL's work per message
}

func (r result) rate() float64 { return float64(r.messages) / r.elapsed.Seconds() }

const recipient = "2025550143@" + benchDomain

func run(ctx context.Context, o options) error {
	if err := ensurePostfix(ctx, logf); err != nil {
		return err
	}
	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
	}

	postfixRes, err := benchPostfix(ctx, o, o.sessions)
	if err != nil {
		return err
	}
	results := []result{postfixRes}
	baseline := postfixRes

	dir, err := os.MkdirTemp("", "securetext-bench-")
	if err != nil {
		return err
	}
	logf("starting PostgreSQL, Vault, the keystore and the gateway (logs in %s)", dir)
	s, err := startStack(ctx, dir, o.sessions)
	if err != nil {
		return err
	}
	defer s.Stop()
	st, err := benchSecureText(ctx, o, s)
	results = append(results, st...)
	if err != nil {
		return fmt.Errorf("%w (gateway log: %s)", err, filepath.Join(dir, "securetext.log"))
	}
	printTables(o, results, baseline)
	if o.rounds > 1 {
		if err := moreRounds(ctx, o, s, results); err != nil {
			return fmt.Errorf("%w (gateway log: %s)", err, filepath.Join(dir, "securetext.log"))
		}
	}
	_ = os.RemoveAll(dir)
	return nil
}

// moreRounds repeats the closed-loop runs o.rounds-1 more times, alternating Postfix and
// SecureText so that both meet the same machine, checks the store after each, and prints every
// round and the medians. first holds the results of the first round (Postfix, SMTP, REST, …).
func moreRounds(ctx context.Context, o options, s *stack, first []result) error {
	type round struct{ postfix, smtp, rest float64 }
	rounds := []round{{first[0].rate(), first[1].rate(), first[2].rate()}}
	for i := 2; i <= o.rounds; i++ {
		logf("round %d of %d", i, o.rounds)
		pf, err := benchPostfix(ctx, o, o.sessions)
		if err != nil {
			return err
		}
		before, _, err := s.counts(ctx)
		if err != nil {
			return err
		}
		elapsed, _, err := runSMTPSource(ctx, o, o.sessions, recipient, s.addrs.SMTP)
		if err != nil {
			return err
		}
		rest := restClosedLoop(ctx, s, o)
		if rest.failed > 0 {
			return fmt.Errorf("round %d REST: %d submissions failed; the first: %v", i, rest.failed, rest.firstErr)
		}
		if _, err := s.drain(ctx, 5*time.Minute); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		after, _, err := s.counts(ctx)
		if err != nil {
			return err
		}
		if after["smtp"]-before["smtp"] != o.messages || after["api"]-before["api"] != rest.sent {
			return fmt.Errorf("round %d: the store gained %d SMTP and %d REST messages, want %d and %d",
				i, after["smtp"]-before["smtp"], after["api"]-before["api"], o.messages, rest.sent)
		}
		rounds = append(rounds, round{pf.rate(), float64(o.messages) / elapsed.Seconds(), rest.rate()})
	}
	fmt.Printf("\n### %d rounds, alternating (every message checked in the store)\n\n", len(rounds))
	fmt.Println("| round | Postfix msgs/s | SecureText SMTP msgs/s | SMTP vs Postfix | SecureText REST msgs/s |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: |")
	var ratios, smtps, pfs, rests []float64
	for i, r := range rounds {
		fmt.Printf("| %d | %.0f | %.0f | %.2f× | %.0f |\n", i+1, r.postfix, r.smtp, r.smtp/r.postfix, r.rest)
		ratios, smtps, pfs, rests = append(ratios, r.smtp/r.postfix), append(smtps, r.smtp), append(pfs, r.postfix), append(rests, r.rest)
	}
	fmt.Printf("| **median** | **%.0f** | **%.0f** | **%.2f×** | **%.0f** |\n", median(pfs), median(smtps), median(ratios), median(rests))
	return nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// benchPostfix runs smtp-source against a fresh private Postfix.
func benchPostfix(ctx context.Context, o options, sessions int) (result, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return result{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf("Postfix: smtp-source -s %d -m %d -l %d to a private instance on %s", sessions, o.messages, o.size, addr)
	pf, err := startPostfix(ctx, addr)
	if err != nil {
		return result{}, err
	}
	defer pf.Stop(context.Background())
	before := takeCPU()
	elapsed, srcCPU, err := runSMTPSource(ctx, o, sessions, recipient, addr)
	cpu := cpuSince(before)
	cpu["smtp-source"] += srcCPU
	if err != nil {
		return result{}, err
	}
	// Every message must have gone through the queue (and been discarded).
	deadline := time.Now().Add(time.Minute)
	for pf.delivered() < o.messages && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := pf.delivered(); n != o.messages {
		return result{}, fmt.Errorf("postfix discarded %d of %d messages; its log:\n%s", n, o.messages, pf.logTail(20))
	}
	return result{
		system: "Postfix " + postfixVersion(ctx), messages: o.messages, elapsed: elapsed, cpu: cpu,
		workload: fmt.Sprintf("SMTP: `smtp-source -s %d -m %d -l %d`, queued (fsync) then discarded", sessions, o.messages, o.size),
	}, nil
}

// benchSecureText runs the SMTP and REST loads against the stack and checks the store after
// each.
func benchSecureText(ctx context.Context, o options, s *stack) ([]result, error) {
	var results []result
	stored := map[string]int{}
	check := func(what string) error {
		drain, err := s.drain(ctx, 5*time.Minute)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		got, _, err := s.counts(ctx)
		if err != nil {
			return err
		}
		for ch, want := range stored {
			if got[ch] != want {
				return fmt.Errorf("%s: the store holds %d %s messages, want %d (one per acknowledged submission)", what, got[ch], ch, want)
			}
		}
		logf("%s: the store holds exactly the %d SMTP and %d REST messages acknowledged; SMS outbox drained %s after the run",
			what, got["smtp"], got["api"], drain.Round(time.Millisecond))
		return nil
	}
	vaultPort := 0
	if u, err := url.Parse(s.vault.Addr); err == nil {
		vaultPort, _ = strconv.Atoi(u.Port())
	}
	smsBefore, connBefore := s.sms.Load(), s.smsConn.Load()
	dbBefore, err := s.dbStats(ctx)
	if err != nil {
		return nil, err
	}
	dbWork := func(messages int) string {
		after, err := s.dbStats(ctx)
		if err != nil {
			return err.Error()
		}
		defer func() { dbBefore = after }()
		return after.perMessage(dbBefore, messages)
	}
	conns := func() string {
		texts, opened := s.sms.Load()-smsBefore, s.smsConn.Load()-connBefore
		smsBefore, connBefore = s.sms.Load(), s.smsConn.Load()
		return fmt.Sprintf("the notifier sent %d SMS over %d new TCP connections; %d connections to Vault closed in the last minute (TIME-WAIT)",
			texts, opened, timeWaits(vaultPort))
	}
	profile := func(name string) func() {
		if o.pprofDir == "" {
			return func() {}
		}
		f, err := os.Create(filepath.Join(o.pprofDir, name+".pprof"))
		if err != nil {
			logf("pprof: %v", err)
			return func() {}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			logf("pprof: %v", err)
			_ = f.Close()
			return func() {}
		}
		return func() { pprof.StopCPUProfile(); _ = f.Close() }
	}

	// SMTP with Postfix's load generator.
	logf("SecureText SMTP: smtp-source -s %d -m %d -l %d to %s", o.sessions, o.messages, o.size, s.addrs.SMTP)
	stop := profile("smtp")
	before := takeCPU()
	elapsed, srcCPU, err := runSMTPSource(ctx, o, o.sessions, recipient, s.addrs.SMTP)
	cpu := cpuSince(before)
	stop()
	cpu["smtp-source"] += srcCPU
	if err != nil {
		return results, err
	}
	stored["smtp"] = o.messages
	results = append(results, result{
		system: "SecureText", messages: o.messages, elapsed: elapsed, cpu: cpu,
		workload: fmt.Sprintf("SMTP: same command line (`-s %d`), trusted network 127.0.0.0/8: smtp-source can neither STARTTLS nor AUTH", o.sessions),
	})
	if err := check("SMTP run"); err != nil {
		return results, err
	}
	results[len(results)-1].conns = conns()
	results[len(results)-1].db = dbWork(results[len(results)-1].messages)

	// REST, closed loop.
	logf("SecureText REST: %d HTTPS clients (HTTP/1.1 keep-alive), %d messages", o.sessions, o.messages)
	stop = profile("rest")
	before = takeCPU()
	closed := restClosedLoop(ctx, s, o)
	cpu = cpuSince(before)
	stop()
	stored["api"] += closed.sent
	if closed.failed > 0 {
		return results, fmt.Errorf("REST: %d of %d submissions failed; the first: %v", closed.failed, o.messages, closed.firstErr)
	}
	results = append(results, result{
		system: "SecureText", messages: closed.sent, elapsed: closed.elapsed, cpu: cpu,
		workload: fmt.Sprintf("REST: %d HTTPS clients (HTTP/1.1 keep-alive), POST /v1/messages with Idempotency-Key, closed loop", o.sessions),
	})
	if err := check("REST run"); err != nil {
		return results, err
	}
	results[len(results)-1].conns = conns()
	results[len(results)-1].db = dbWork(results[len(results)-1].messages)

	// REST, open loop at half the rate reached.
	half := closed.rate() / 2
	logf("SecureText REST: open loop at %.0f msg/s for %s", half, o.restDuration)
	stop = profile("rest-half")
	before = takeCPU()
	open := restOpenLoop(ctx, s, o, half, o.restDuration)
	cpu = cpuSince(before)
	stop()
	stored["api"] += open.sent
	res := result{
		system: "SecureText", messages: open.sent, elapsed: open.elapsed, cpu: cpu,
		p50: open.percentile(0.50), p99: open.percentile(0.99),
		workload: fmt.Sprintf("REST: open loop at %.0f msg/s (half the closed-loop rate) for %s; latency from the scheduled send", half, o.restDuration),
	}
	res.note = fmt.Sprintf("latency p90 %s, p99.9 %s, max %s over %d connections", ms(open.percentile(0.90)), ms(open.percentile(0.999)), ms(open.percentile(1)), o.sessions)
	if open.failed > 0 {
		res.note += fmt.Sprintf("; %d failed (first: %v)", open.failed, open.firstErr)
	}
	results = append(results, res)
	if err := check("REST open-loop run"); err != nil {
		return results, err
	}
	results[len(results)-1].conns = conns()
	results[len(results)-1].db = dbWork(results[len(results)-1].messages)
	if open.failed > 0 {
		return results, fmt.Errorf("REST open loop: %d submissions failed; the first: %v", open.failed, open.firstErr)
	}
	return results, nil
}

// printTables writes the results, the targets and where the CPU went.
func printTables(o options, results []result, baseline result) {
	fmt.Printf("\n## SecureText intake vs Postfix (%s)\n\n", benchkit.Machine())
	fmt.Println("| system | workload | messages | seconds | msgs/s | vs Postfix | p50 | p99 |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	var smtp, rest, half *result
	for i := range results {
		r := &results[i]
		lat := func(d time.Duration) string {
			if d == 0 {
				return ""
			}
			return ms(d)
		}
		fmt.Printf("| %s | %s | %d | %.2f | %.0f | %.2f× | %s | %s |\n", r.system, r.workload, r.messages, r.elapsed.Seconds(),
			r.rate(), r.rate()/baseline.rate(), lat(r.p50), lat(r.p99))
		if r.system == "SecureText" {
			switch {
			case smtp == nil:
				smtp = r
			case rest == nil:
				rest = r
			default:
				half = r
			}
		}
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	fmt.Println()
	fmt.Println("| target | measured | result |")
	fmt.Println("| --- | ---: | --- |")
	if smtp != nil {
		ratio := smtp.rate() / baseline.rate()
		fmt.Printf("| SMTP ≥ 2× Postfix (%.0f msg/s) | %.0f msg/s = %.2f× | %s |\n", baseline.rate(), smtp.rate(), ratio, met(ratio >= 2))
	}
	if rest != nil {
		fmt.Printf("| REST ≥ 1,500 msg/s | %.0f msg/s | %s |\n", rest.rate(), met(rest.rate() >= 1500))
	}
	if half != nil {
		fmt.Printf("| REST p99 < 100 ms at half rate | %.1f ms | %s |\n", float64(half.p99.Microseconds())/1000, met(half.p99 < 100*time.Millisecond))
	}

	fmt.Println()
	fmt.Printf("CPU seconds used during each run (this machine has %d cores, so a run of t seconds has %d·t to give):\n\n", numCPU(), numCPU())
	groups := []string{"securetext", "postgres", "vault", "postfix", "smtp-source", "kernel", "other"}
	fmt.Print("| run | wall s |")
	for _, g := range groups {
		fmt.Printf(" %s |", g)
	}
	fmt.Println(" idle |")
	fmt.Print("| --- | ---: |")
	for range groups {
		fmt.Print(" ---: |")
	}
	fmt.Println(" ---: |")
	for _, r := range results {
		name := r.system + " " + shortWorkload(r.workload)
		fmt.Printf("| %s | %.2f |", name, r.elapsed.Seconds())
		var used float64
		for _, g := range groups {
			used += r.cpu[g]
			fmt.Printf(" %.2f |", r.cpu[g])
		}
		fmt.Printf(" %.2f |\n", max(0, float64(numCPU())*r.elapsed.Seconds()-used))
	}
	fmt.Println()
	fmt.Println("securetext = this process: gateway, keystore server and client, SMS receiver, and for REST the HTTPS load generator too;")
	fmt.Println("kernel = its worker threads (writeback, journal, network softirqs); other = anything else running on the machine.")
	for _, r := range results {
		if other := r.cpu["other"] / (float64(numCPU()) * r.elapsed.Seconds()); other > 0.05 {
			fmt.Printf("\n**Warning:** other processes used %.0f%% of the CPU during the %s %s run: its numbers are too low; run again on a quiet machine.\n",
				100*other, r.system, shortWorkload(r.workload))
		}
	}
	fmt.Println()
	for _, r := range results {
		if r.note != "" {
			fmt.Printf("- %s %s: %s\n", r.system, shortWorkload(r.workload), r.note)
		}
		if r.conns != "" {
			fmt.Printf("- %s %s, including the outbox drain after it: %s; %s.\n", r.system, shortWorkload(r.workload), r.conns, r.db)
		}
	}
}

func shortWorkload(w string) string {
	switch {
	case len(w) >= 4 && w[:4] == "SMTP":
		return "SMTP"
	case len(w) >= 14 && w[:14] == "REST: open loo":
		return "REST half rate"
	default:
		return "REST"
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
