package keystore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runCallers calls op b.N times in total from callers goroutines and reports the rate.
func runCallers(b *testing.B, callers int, op func(context.Context) error) {
	b.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(ctx); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
}

// BenchmarkWrapNewKey measures WrapNewKey against the real Vault dev server at 1, 16 and 256
// concurrent callers: through Transit with batching, through Transit without it, and, as the
// baseline, an application calling Transit encrypt directly with the same Vault client.
//
//	go test ./workloads/keystore -run '^$' -bench WrapNewKey -benchtime 3s
func BenchmarkWrapNewKey(b *testing.B) {
	f := newTransitFixture(b)
	for _, callers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("direct-vault/callers=%d", callers), func(b *testing.B) {
			client, err := f.root.Clone()
			if err != nil {
				b.Fatal(err)
			}
			client.SetToken(f.token) // the keystore's token, so policy checks cost the same
			client.SetMaxRetries(0)
			key := make([]byte, DataKeySize)
			runCallers(b, callers, func(ctx context.Context) error {
				rand.Read(key)
				_, err := client.Logical().WriteWithContext(ctx, "transit/encrypt/messages",
					map[string]any{"plaintext": base64.StdEncoding.EncodeToString(key)})
				return err
			})
		})
		for _, mode := range []struct {
			name  string
			batch BatchConfig
		}{
			{"unbatched", BatchConfig{Disabled: true}},
			{"batched", BatchConfig{}},
			{"batched-window=1ms", BatchConfig{Window: time.Millisecond}},
		} {
			b.Run(fmt.Sprintf("%s/callers=%d", mode.name, callers), func(b *testing.B) {
				counter := &callCounter{callsOnly: true}
				ks := f.start(b, transitOpts{batch: mode.batch, counter: counter})
				waitReady(b, ks)
				runCallers(b, callers, func(ctx context.Context) error {
					_, err := ks.WrapNewKey(ctx)
					return err
				})
				if calls, _ := counter.get("/v1/transit/encrypt/messages"); calls > 0 {
					b.ReportMetric(float64(b.N)/float64(calls), "items/vault-call")
				}
			})
		}
	}
}
