package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// writers is the gateway's intake concurrency the store is sized for.
const writers = 32

func BenchmarkAcceptPostgres(b *testing.B) { benchmarkAccept(b, testenv.PostgresDatabase(b)) }

func BenchmarkAcceptSQLite(b *testing.B) {
	benchmarkAccept(b, "sqlite:"+filepath.Join(b.TempDir(), "tenant.db"))
}

// benchmarkAccept accepts realistic messages from 32 concurrent writers: a 1 KiB body, one of
// 1,000 patients, a link token hash and an idempotency key each, with the audit sequencer
// running as it does in production.
func benchmarkAccept(b *testing.B, dsn string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := storetest.Open(b, dsn)
	phones := make([]string, 1000)
	for i := range phones {
		phones[i] = fmt.Sprintf("+1202555%04d", i)
	}
	var sequencer sync.WaitGroup
	sequencer.Go(func() { s.RunAuditSequencer(ctx, 100*time.Millisecond) })

	newRequest := func() store.AcceptRequest {
		r := storetest.NewRequest(phones[rand.IntN(len(phones))])
		r.Parts = r.Parts[:1] // the body only
		return r
	}
	// Warm up: dial the pool's connections and prepare the statements on each, so that short
	// runs measure accepts, not connection setup.
	var warm sync.WaitGroup
	for range writers {
		warm.Go(func() {
			for range 4 {
				if _, err := s.AcceptMessage(ctx, newRequest()); err != nil {
					b.Error(err)
				}
			}
		})
	}
	warm.Wait()

	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((writers + procs - 1) / procs) // RunParallel starts parallelism × GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.AcceptMessage(ctx, newRequest()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
	b.StopTimer()
	cancel()
	sequencer.Wait()
}

func BenchmarkAuditAppendPostgres(b *testing.B) {
	benchmarkAuditAppend(b, testenv.PostgresDatabase(b))
}

func BenchmarkAuditAppendSQLite(b *testing.B) {
	benchmarkAuditAppend(b, "sqlite:"+filepath.Join(b.TempDir(), "tenant.db"))
}

// benchmarkAuditAppend measures events per second from AppendAudit to the chain: 8 writers
// append batches of 100 events while one sequencer links them; the clock stops when the last
// event is chained.
func benchmarkAuditAppend(b *testing.B, dsn string) {
	const appenders, batch = 8, 100
	ctx := context.Background()
	s := storetest.Open(b, dsn)
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		chained  int
		seqErr   error
		seqDone  = make(chan struct{})
		appended = make(chan struct{})
	)
	b.ResetTimer()
	go func() {
		defer close(seqDone)
		for chained < b.N {
			n, err := s.SequenceAudit(ctx, 1000)
			if err != nil {
				seqErr = err
				return
			}
			chained += n
			if n > 0 {
				continue
			}
			select {
			case <-appended:
				if n, err = s.SequenceAudit(ctx, 1000); err != nil || n == 0 {
					seqErr = err
					return // everything appended is chained (short only if an append failed)
				}
				chained += n
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for w := range appenders {
		wg.Go(func() {
			for n := range work {
				events := make([]audit.Event, n)
				for i := range events {
					events[i] = audit.Event{Kind: audit.KindNotified, Actor: "notifier", MessageID: store.NewID(),
						Detail: map[string]string{"provider": "twilio", "writer": fmt.Sprint(w)}}
				}
				if err := s.AppendAudit(ctx, events...); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for left := b.N; left > 0; left -= batch {
		work <- min(left, batch)
	}
	close(work)
	wg.Wait()
	close(appended)
	<-seqDone
	b.StopTimer()
	if seqErr != nil {
		b.Fatal(seqErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
