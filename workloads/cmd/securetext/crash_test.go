package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/store"
)

// TestGatewayCrash kills the gateway process with SIGKILL at random points while 1,000
// submissions arrive concurrently, half over the REST API and half over SMTP, and restarts it
// each time. The senders behave like real ones: they retry with the same Idempotency-Key or
// Message-ID until they get 201 or 250. Afterwards every acknowledged submission must be
// stored exactly once, whole (every part decrypts, its accepted event is audited, its SMS was
// sent and recorded), and the audit chain must verify. Nothing is stored that no sender
// submitted, and no submission is stored twice.
//
// It runs the real binary against PostgreSQL, a keystore served over mTLS from the test
// process and an SMS webhook receiver, all on 127.0.0.1. A notification claimed by a gateway
// that is then killed comes back when its lease (crashSMSLease) runs out.
func TestGatewayCrash(t *testing.T) {
	const (
		total = 1000
		// 64 senders: the EHR's REST clients, and the relay's SMTP connections, which stay
		// below the gateway's limit of 20 connections per client address.
		restWorkers = 48
		smtpWorkers = 16
		minKills    = 6
		// How long the senders keep retrying, and how long the SMS may take after the last
		// acknowledgement (a lease included): bounds, not performance targets.
		loadBound  = 5 * time.Minute
		drainBound = 2*crashSMSLease + 2*time.Minute
	)
	began := time.Now()
	dir := t.TempDir()
	bin := crashBuildBinary(t, dir)
	dsn := testenv.PostgresDatabase(t)
	env := newCrashEnv(t)
	dsnFile := filepath.Join(dir, "database-url")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	smtpAddr, apiAddr := crashFreeAddr(t), crashFreeAddr(t)
	gw := newCrashGateway(bin, dir, env.gatewayArgs(dsnFile, smtpAddr, apiAddr))
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := gw.Stop(); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("gateway logs are in %s; the last lines:\n%s", dir, gw.tail.String())
		}
	})

	subs := newCrashSubmissions(total)
	stats := &crashStats{}
	ctx, cancel := context.WithTimeout(context.Background(), loadBound)
	defer cancel()

	loadDone := make(chan struct{})
	chaosResult := make(chan crashChaosReport, 1)
	go func() { chaosResult <- runCrashChaos(ctx, gw, stats, total, minKills, loadDone) }()

	var queues = map[string]chan *crashSubmission{"api": make(chan *crashSubmission, total), "smtp": make(chan *crashSubmission, total)}
	for _, s := range subs {
		queues[s.channel] <- s
	}
	close(queues["api"])
	close(queues["smtp"])
	roots := &tls.Config{RootCAs: env.ca.CertPool(), MinVersion: tls.VersionTLS12}
	rest := newCrashRESTSender(apiAddr, env.apiKey, roots, stats)
	var (
		wg       sync.WaitGroup
		failMu   sync.Mutex
		failures []error
	)
	fail := func(err error) {
		failMu.Lock()
		failures = append(failures, err)
		failMu.Unlock()
		cancel() // one sender refused for good: the rest of the run says nothing more
	}
	for range restWorkers {
		wg.Go(func() {
			for s := range queues["api"] {
				if err := rest.send(ctx, s); err != nil {
					fail(err)
					return
				}
				stats.acked.Add(1)
			}
		})
	}
	for range smtpWorkers {
		wg.Go(func() {
			snd := &crashSMTPClient{addr: smtpAddr, stats: stats}
			defer snd.close()
			for s := range queues["smtp"] {
				if err := snd.send(ctx, s); err != nil {
					fail(err)
					return
				}
				stats.acked.Add(1)
			}
		})
	}
	wg.Wait()
	loadTime := time.Since(began)
	close(loadDone)
	chaos := <-chaosResult
	if len(failures) > 0 {
		t.Fatalf("%d senders failed; the first: %v", len(failures), failures[0])
	}
	if chaos.err != nil {
		t.Fatal(chaos.err)
	}
	if chaos.kills < minKills {
		t.Fatalf("the gateway was killed %d times during the load, want at least %d", chaos.kills, minKills)
	}
	if n := stats.acked.Load(); n != total {
		t.Fatalf("%d of %d submissions acknowledged", n, total)
	}

	// Every acknowledged message gets its SMS and the outbox drains: rows that a killed
	// gateway had claimed come back when their lease runs out, and are sent (again) then.
	acked := make([]string, 0, total)
	for _, s := range subs {
		acked = append(acked, s.ackedID)
	}
	slices.Sort(acked)
	acked = slices.Compact(acked)
	if len(acked) != total {
		t.Errorf("%d submissions were acknowledged with %d distinct message ids", total, len(acked))
	}
	st, err := store.Open(context.Background(), dsn, crashTenant, store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deadline := time.Now().Add(drainBound)
	for {
		missing := env.sms.missing(acked)
		depth, _, err := st.OutboxStats(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 && depth == 0 {
			break
		}
		if time.Now().After(deadline) {
			example := ""
			if len(missing) > 0 {
				example = " (e.g. " + missing[0] + ")"
			}
			// The store check below tells whether they were stored at all.
			t.Errorf("%s after the last acknowledgement, %d of %d acknowledged messages have had no SMS%s and %d notifications are pending: "+
				"they were not stored, the notifier lost them, or a killed gateway's claims never came back", drainBound, len(missing), len(acked), example, depth)
			break
		}
		select {
		case <-env.sms.changed:
		case <-time.After(time.Second):
		}
	}
	drainTime := time.Since(began) - loadTime
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}

	res := verifyCrashStore(t, st, dsn, env, subs)
	t.Logf("crash test: %d submissions (%d REST, %d SMTP) acknowledged in %s with %d kills during the load and %d while draining "+
		"(%d gateway starts); sender retries %d (connection errors %d, 5xx/4yz %d), replays %d REST + %d SMTP; "+
		"all SMS out %s after the load; %d SMS (%d duplicates after crashes), %d audit events, %d checkpoints signed by the gateway",
		total, total/2, total/2, loadTime.Round(time.Millisecond), chaos.kills, chaos.drainKills, gw.starts,
		stats.retries.Load(), stats.connErrors.Load(), stats.temporary.Load(), stats.replays.Load(),
		crashGrepLogs(dir, `"msg":"smtp message stored"`, `"replayed":true`),
		drainTime.Round(time.Millisecond), res.sms, res.duplicateSMS, res.events, res.checkpoints)
}

// crashSMSLease is the gateway's -sms-lease in the crash test.
const crashSMSLease = 15 * time.Second

// crashChaosReport is what runCrashChaos did.
type crashChaosReport struct {
	kills, drainKills int
	err               error
}

// runCrashChaos SIGKILLs the gateway at random points of the load and starts it again: kills
// fall at between minKills and minKills+2 random acknowledgement counts between 3 % and 95 %
// of total, each after a random delay, so they land anywhere in a submission (reading the
// request, sealing, committing, answering) or in the notifier. Once the load is done it kills
// the gateway once more while the notifier drains the outbox.
func runCrashChaos(ctx context.Context, gw *crashGateway, stats *crashStats, total, minKills int, loadDone <-chan struct{}) crashChaosReport {
	var rep crashChaosReport
	n := minKills + rand.IntN(3)
	points := make([]int64, 0, n)
	for range n {
		points = append(points, int64(float64(total)*(0.03+0.92*rand.Float64())))
	}
	slices.Sort(points)
	killAndRestart := func() error {
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		if err := gw.Kill(); err != nil {
			return err
		}
		// Down for a moment: senders meet refused connections, as during a pod restart.
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		return gw.Start()
	}
	for _, p := range points {
		for stats.acked.Load() < p {
			select {
			case <-ctx.Done():
				rep.err = fmt.Errorf("chaos: the load stopped at %d acknowledgements, before kill %d at %d", stats.acked.Load(), rep.kills+1, p)
				return rep
			case <-loadDone:
				rep.err = fmt.Errorf("chaos: the load finished before kill %d at %d acknowledgements", rep.kills+1, p)
				return rep
			case <-time.After(time.Millisecond):
			}
		}
		if rep.err = killAndRestart(); rep.err != nil {
			return rep
		}
		rep.kills++
	}
	select {
	case <-loadDone:
	case <-ctx.Done():
		return rep
	}
	if rep.err = killAndRestart(); rep.err == nil {
		rep.drainKills++
	}
	return rep
}

// crashFreeAddr returns a free 127.0.0.1 address that the gateway keeps across restarts. It
// lies below the kernel's ephemeral port range when it can, so that no outgoing connection
// (a sender's retry, the gateway's own database connections) takes the port while the
// gateway is down and makes its restart fail.
func crashFreeAddr(t *testing.T) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low > 11000 {
		for range 100 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(low-10000)))
			if l, err := net.Listen("tcp", addr); err == nil {
				_ = l.Close()
				return addr
			}
		}
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
