package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// waitSampler tells where the database's time goes while the sweep runs: it samples the
// active client backends in pg_stat_activity every sampleEvery and counts, for the sweep's
// statements and for the others (intake, sequencer), what each was waiting for. A backend
// without a wait event is running, or waiting for a CPU.
type waitSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	// counts[kind][wait] is how many samples found a backend of kind ("sweep", "other")
	// in wait ("CPU" when none).
	counts  map[string]map[string]int
	samples int
	err     error
}

const sampleEvery = 20 * time.Millisecond

// sweepMarker is in the text of every statement of Store.PurgeMessages (a list of ids in one
// JSON parameter), and of no other statement this bench runs.
const sweepMarker = "jsonb_array_elements_text"

func startWaitSampler(ctx context.Context, dsn string) *waitSampler {
	w := &waitSampler{stop: make(chan struct{}), counts: map[string]map[string]int{"sweep": {}, "other": {}}}
	w.done.Go(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			w.err = err
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, err := conn.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), query
				FROM pg_stat_activity
				WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)
			if err != nil {
				w.err = err
				return
			}
			for rows.Next() {
				var wait, query string
				if err := rows.Scan(&wait, &query); err != nil {
					w.err = err
					return
				}
				kind := "other"
				if strings.Contains(query, sweepMarker) {
					kind = "sweep"
				}
				w.counts[kind][wait]++
			}
			rows.Close()
			w.samples++
		}
	})
	return w
}

// finish stops the sampler and prints its table: per kind, the average number of active
// backends in each wait (samples ÷ sampling rounds), largest first.
func (w *waitSampler) finish() {
	close(w.stop)
	w.done.Wait()
	if w.err != nil {
		logf("wait sampler: %v", w.err)
		return
	}
	if w.samples == 0 {
		return
	}
	fmt.Printf("\nActive backends by wait event during the sweep (mean over %d samples, every %s):\n\n", w.samples, sampleEvery)
	fmt.Println("| statements | wait | backends |")
	fmt.Println("| --- | --- | ---: |")
	for _, kind := range []string{"sweep", "other"} {
		waits := make([]string, 0, len(w.counts[kind]))
		for k := range w.counts[kind] {
			waits = append(waits, k)
		}
		slices.SortFunc(waits, func(a, b string) int { return w.counts[kind][b] - w.counts[kind][a] })
		for i, k := range waits {
			if i == 6 {
				break
			}
			fmt.Printf("| %s | %s | %.2f |\n", kind, k, float64(w.counts[kind][k])/float64(w.samples))
		}
	}
}

// cpuTicks reads the machine's busy and total CPU time from /proc/stat.
func cpuTicks() (busy, total int64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	for i, v := range fields[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
