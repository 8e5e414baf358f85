// Command retention measures the retention sweeper on PostgreSQL on this machine and prints a
// Markdown table:
//
//   - it seeds -messages messages (one sealed body part of -size bytes each, 31 to 40 days old,
//     their links expired or read, their notifications sent) with COPY, and a legal hold that
//     keeps the messages of 1 % of the patients;
//   - it measures the store's intake (Store.AcceptMessage from -writers concurrent writers,
//     with the audit sequencer running, as in the gateway) for -intake-duration;
//   - it runs one sweep (retention.Sweeper.SweepOnce, policy 72h/720h, batches of -batch)
//     that purges every message not held, with the same intake running throughout, and
//     reports purges per second and the intake rate during the sweep against the one before.
//
// With -waits it also samples pg_stat_activity during the sweep and prints what the sweep's
// statements and the others waited for (a lock, the WAL, or nothing: a CPU). It always prints
// how busy the machine's CPUs were with intake alone and during the sweep.
//
// Afterwards it checks that every message not held is purged with its parts gone, and that
// every held one is intact. Missing a target prints MISS; a check that fails exits non-zero.
//
//	go run ./hack/bench/retention [-messages 1000000] [-batch 500] [-writers 32] [-pause 0] [-waits]
//
// It needs PostgreSQL's server binaries (Debian's postgresql package).
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// The targets of issue #21 on a 2-CPU machine.
const (
	targetPurgesPerSecond = 5000
	targetIntakeShare     = 0.80
)

type options struct {
	messages, size, batch, writers int
	intakeDuration                 time.Duration
	pause                          float64
	waits                          bool
}

func main() {
	var o options
	flag.IntVar(&o.messages, "messages", 1_000_000, "messages to seed, all due for purge")
	flag.IntVar(&o.size, "size", 1024, "bytes of each seeded message's sealed body")
	flag.IntVar(&o.batch, "batch", retention.DefaultBatchSize, "messages per sweep transaction")
	flag.IntVar(&o.writers, "writers", 32, "concurrent Store.AcceptMessage callers")
	flag.DurationVar(&o.intakeDuration, "intake-duration", 15*time.Second, "length of the intake run without a sweep")
	flag.Float64Var(&o.pause, "pause", 0, "the sweeper's Pause: wait this multiple of each batch's time after it")
	flag.BoolVar(&o.waits, "waits", false, "sample what the database's backends wait for during the sweep, and print it")
	flag.Parse()
	if o.messages <= 0 || o.size <= 0 || o.batch <= 0 || o.writers < 0 || o.intakeDuration <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -messages, -size, -batch and -intake-duration must be positive")
		os.Exit(2)
	}
	benchkit.Main(func(ctx context.Context) error { return run(ctx, o) })
}

var logf = benchkit.Logf

const tenant = "bench"

// heldPhone is the 1 % of patients a legal hold covers.
func heldPhone(i int) bool { return i%100 == 0 }

const patients = 10_000

func phone(i int) string { return fmt.Sprintf("+1202%07d", i) }

func run(ctx context.Context, o options) error {
	logf("starting PostgreSQL")
	pg, err := testenv.StartPostgresProcess(ctx)
	if err != nil {
		return err
	}
	defer pg.Stop()
	dsn, err := pg.CreateDatabase(ctx, "bench")
	if err != nil {
		return err
	}
	s, err := store.Open(ctx, dsn, tenant)
	if err != nil {
		return err
	}
	defer s.Close()

	now := time.Now()
	logf("seeding %d messages with COPY", o.messages)
	start := time.Now()
	held, err := seed(ctx, dsn, o, now)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	logf("seeded in %s (%d held)", time.Since(start).Round(time.Second), held)

	seqCtx, stopSequencer := context.WithCancel(ctx)
	var sequencer sync.WaitGroup
	sequencer.Go(func() { s.RunAuditSequencer(seqCtx, store.AuditSequencerInterval) })
	defer func() { stopSequencer(); sequencer.Wait() }()

	logf("intake alone: %d writers for %s", o.writers, o.intakeDuration)
	busy0, total0 := cpuTicks()
	base, err := intake(ctx, s, o.writers, func(stop <-chan struct{}) { sleepOr(ctx, o.intakeDuration, stop) })
	if err != nil {
		return err
	}
	busy1, total1 := cpuTicks()

	var holds []string
	for i := 0; i < patients; i += 100 {
		holds = append(holds, phone(i))
	}
	settings := retention.Settings{
		Policy: &retention.Policy{Name: "bench", Generation: 1,
			UnreadLinkExpiry: retention.Duration{D: 72 * time.Hour}, ContentPurgeAfter: retention.Duration{D: 720 * time.Hour},
			AuditRetention: retention.Duration{D: 52608 * time.Hour}, SweepInterval: retention.Duration{D: time.Hour},
			KeyRotationPeriod: retention.Duration{D: retention.DefaultKeyRotationPeriod}},
		Holds: []retention.Hold{{Name: "matter-bench", Reason: "bench", Matcher: retention.Matcher{Recipients: holds}}},
	}
	sw, err := retention.NewSweeper(retention.SweeperConfig{Store: s, Settings: func() retention.Settings { return settings },
		Holder: "bench", BatchSize: o.batch, Pause: o.pause})
	if err != nil {
		return err
	}
	logf("sweeping with %d writers running", o.writers)
	var res retention.Result
	var sweepErr error
	var waits *waitSampler
	if o.waits {
		waits = startWaitSampler(ctx, dsn)
	}
	during, err := intake(ctx, s, o.writers, func(<-chan struct{}) { res, sweepErr = sw.SweepOnce(ctx) })
	if err != nil {
		return err
	}
	busy2, total2 := cpuTicks()
	if sweepErr != nil {
		return fmt.Errorf("sweep: %w", sweepErr)
	}
	if err := check(ctx, dsn, o.messages-held, held, res); err != nil {
		return err
	}

	sweepTime := res.Finished.Sub(res.Started)
	purgeRate := float64(res.MessagesPurged) / sweepTime.Seconds()
	share := during.rate() / base.rate()
	fmt.Printf("\n### Retention sweep on PostgreSQL, %s\n\n", benchkit.Machine())
	fmt.Printf("%d messages seeded (%d B body each), %d held by a legal hold; batches of %d, pause %.1f× batch time; %d concurrent Store.AcceptMessage writers\n\n",
		o.messages, o.size, held, o.batch, o.pause, o.writers)
	fmt.Println("| run | work | time | rate | target |")
	fmt.Println("| --- | ---: | ---: | ---: | --- |")
	defer func() {
		if waits != nil {
			waits.finish()
		}
	}()
	cpu := func(busy, total int64) string {
		if total <= 0 {
			return "?"
		}
		return fmt.Sprintf("%.0f %%", 100*float64(busy)/float64(total))
	}
	defer fmt.Printf("\nMachine CPU busy: intake alone %s, during the sweep %s.\n", cpu(busy1-busy0, total1-total0), cpu(busy2-busy1, total2-total1))
	if o.writers == 0 {
		fmt.Printf("| sweep alone | %d purged, %d held, %d links expired | %.1f s | **%.0f purges/s** | ≥ %d/s %s |\n",
			res.MessagesPurged, res.MessagesHeld, res.LinksExpired, sweepTime.Seconds(), purgeRate, targetPurgesPerSecond, verdict(purgeRate >= targetPurgesPerSecond))
		return nil
	}
	fmt.Printf("| intake alone | %d accepts | %.1f s | %.0f accepts/s | |\n", base.n, base.elapsed.Seconds(), base.rate())
	fmt.Printf("| sweep (with intake) | %d purged, %d held, %d links expired | %.1f s | **%.0f purges/s** | ≥ %d/s %s |\n",
		res.MessagesPurged, res.MessagesHeld, res.LinksExpired, sweepTime.Seconds(), purgeRate, targetPurgesPerSecond, verdict(purgeRate >= targetPurgesPerSecond))
	fmt.Printf("| intake during the sweep | %d accepts | %.1f s | %.0f accepts/s (**%.0f %%** of alone) | ≥ %.0f %% %s |\n",
		during.n, during.elapsed.Seconds(), during.rate(), 100*share, 100*targetIntakeShare, verdict(share >= targetIntakeShare))
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

// seed copies o.messages messages into the store's tables, created 31 to 40 days before now,
// and returns how many the hold covers.
func seed(ctx context.Context, dsn string, o options, now time.Time) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"recipients"}, []string{"id", "phone", "created_at"},
		pgx.CopyFromSlice(patients, func(i int) ([]any, error) {
			return []any{fmt.Sprintf("r%07d", i), phone(i), now.Add(-60 * 24 * time.Hour)}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("recipients: %w", err)
	}
	oldest, span := now.Add(-40*24*time.Hour), 9*24*time.Hour
	created := func(i int) time.Time { return oldest.Add(span * time.Duration(i) / time.Duration(o.messages)) }
	id := func(i int) string { return fmt.Sprintf("m%09d", i) }
	held := 0
	statuses := []string{"expired", "expired", "expired", "read"}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"id", "sender", "recipient_id", "status", "wrapped_key", "link_token_hash", "channel", "created_at", "expires_at", "status_changed_at"},
		pgx.CopyFromSlice(o.messages, func(i int) ([]any, error) {
			p := i % patients
			if heldPhone(p) {
				held++
			}
			hash := make([]byte, 32)
			_, _ = rand.Read(hash)
			c := created(i)
			return []any{id(i), "sender-1", fmt.Sprintf("r%07d", p), statuses[i%len(statuses)], "vault:v1:" + id(i), hash, "api",
				c, c.Add(72 * time.Hour), c.Add(72 * time.Hour)}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("messages: %w", err)
	}
	body := make([]byte, o.size)
	_, _ = rand.Read(body)
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"message_parts"}, []string{"message_id", "name", "position", "ciphertext"},
		pgx.CopyFromSlice(o.messages, func(i int) ([]any, error) { return []any{id(i), "body", 0, body}, nil }))
	if err != nil {
		return 0, fmt.Errorf("message parts: %w", err)
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"outbox"}, []string{"message_id", "kind", "attempts", "created_at", "next_attempt_at", "sent_at"},
		pgx.CopyFromSlice(o.messages, func(i int) ([]any, error) {
			c := created(i)
			return []any{id(i), "notify", 1, c, c, c.Add(time.Second)}, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("outbox: %w", err)
	}
	_, err = conn.Exec(ctx, `VACUUM ANALYZE`)
	return held, err
}

// load is what an intake run did.
type load struct {
	n       int
	elapsed time.Duration
}

func (l load) rate() float64 { return float64(l.n) / l.elapsed.Seconds() }

// intake runs writers concurrent accepts while during runs, and counts them.
func intake(ctx context.Context, s *store.Store, writers int, during func(stop <-chan struct{})) (load, error) {
	var (
		n     atomic.Int64
		wg    sync.WaitGroup
		first atomic.Value
	)
	stop := make(chan struct{})
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := storetest.NewRequest(fmt.Sprintf("+1303%07d", (w*7919+int(n.Load()))%patients))
				r.Parts = r.Parts[:1]
				if _, err := s.AcceptMessage(ctx, r); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	during(stop)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return load{}, fmt.Errorf("accept: %w", err)
	}
	return load{n: int(n.Load()), elapsed: elapsed}, nil
}

func sleepOr(ctx context.Context, d time.Duration, stop <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-stop:
	case <-time.After(d):
	}
}

// check verifies the sweep in the database: every seeded message not held purged with its
// parts and key gone and one purge event, every held one intact.
func check(ctx context.Context, dsn string, wantPurged, wantHeld int, res retention.Result) error {
	if res.MessagesPurged != wantPurged || res.MessagesHeld != wantHeld || res.Errors != 0 {
		return fmt.Errorf("sweep purged %d and held %d with %d errors; want %d and %d", res.MessagesPurged, res.MessagesHeld, res.Errors, wantPurged, wantHeld)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var purged, keyless, parts, heldIntact, events int
	err = conn.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE status = 'purged'),
		count(*) FILTER (WHERE status = 'purged' AND wrapped_key IS NULL),
		(SELECT count(*) FROM message_parts p JOIN messages m ON m.id = p.message_id WHERE m.status = 'purged'),
		count(*) FILTER (WHERE status <> 'purged' AND id LIKE 'm%' AND wrapped_key IS NOT NULL),
		(SELECT count(*) FROM (SELECT message_id FROM audit_pending WHERE kind = $1
			UNION ALL SELECT message_id FROM audit_events WHERE kind = $1) e)
		FROM messages WHERE id LIKE 'm%'`, string(audit.KindPurged)).Scan(&purged, &keyless, &parts, &heldIntact, &events)
	if err != nil {
		return err
	}
	if purged != wantPurged || keyless != wantPurged || parts != 0 || heldIntact != wantHeld || events != wantPurged {
		return fmt.Errorf("after the sweep: %d purged (%d without key, %d parts left, %d purge events), %d held intact; want %d purged, %d held",
			purged, keyless, parts, events, heldIntact, wantPurged, wantHeld)
	}
	return nil
}
