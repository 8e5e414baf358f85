package keystore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// BatchConfig controls how concurrent requests are coalesced into one Vault call
// (Transit's batch_input), so that Vault round trips grow with the number of batches, not with
// the message rate.
//
// Batching is natural: a request is sent at once when a Vault call slot is free, and requests
// that arrive while all MaxInFlight calls are busy wait and leave together in the next call.
// One caller therefore pays no added latency, and many callers share round trips. Window adds
// an optional wait after the first request of a batch, to gather more per call at the cost of
// that much latency.
type BatchConfig struct {
	// Disabled sends every request as its own Vault call without batch_input.
	Disabled bool
	// MaxItems caps the items in one Vault call. Default 256.
	MaxItems int
	// MaxInFlight caps the Vault calls in progress at once. Default 4.
	MaxInFlight int
	// Window is how long a batch waits for more requests after its first one, unless it is
	// full sooner. Default 0: take what is queued and go.
	Window time.Duration
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.MaxItems <= 0 {
		c.MaxItems = 256
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 4
	}
	if c.Window < 0 {
		c.Window = 0
	}
	return c
}

// errBatcherClosed is returned to requests submitted after Close.
var errBatcherClosed = errors.New("keystore is shutting down")

// batcher coalesces concurrent calls of one operation. flush gets the inputs of one batch and
// must return exactly one result or error per input, or one error for the whole batch.
type batcher[In, Out any] struct {
	cfg     BatchConfig
	flush   func(ctx context.Context, in []In) ([]Out, []error, error)
	discard func(Out) // clears an output nobody waits for any more (a data key)
	timeout time.Duration

	queue    chan *batchCall[In, Out]
	slots    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
}

type batchCall[In, Out any] struct {
	in     In
	result chan batchResult[Out] // buffered: flush never blocks on a caller that gave up
}

type batchResult[Out any] struct {
	out Out
	err error
}

func newBatcher[In, Out any](cfg BatchConfig, timeout time.Duration,
	flush func(context.Context, []In) ([]Out, []error, error), discard func(Out)) *batcher[In, Out] {
	cfg = cfg.withDefaults()
	b := &batcher[In, Out]{
		cfg:     cfg,
		flush:   flush,
		discard: discard,
		timeout: timeout,
		queue:   make(chan *batchCall[In, Out], cfg.MaxItems*cfg.MaxInFlight),
		slots:   make(chan struct{}, cfg.MaxInFlight),
		stop:    make(chan struct{}),
	}
	b.done.Add(1)
	go b.run()
	return b
}

// do submits in and waits for its result, ctx's end, or Close.
func (b *batcher[In, Out]) do(ctx context.Context, in In) (Out, error) {
	var zero Out
	call := &batchCall[In, Out]{in: in, result: make(chan batchResult[Out], 1)}
	select {
	case b.queue <- call:
	case <-ctx.Done():
		return zero, unavailable("wait for a call slot", context.Cause(ctx))
	case <-b.stop:
		return zero, unavailable("submit", errBatcherClosed)
	}
	select {
	case r := <-call.result:
		return r.out, r.err
	case <-ctx.Done():
		// The batch may still succeed; whatever it returns for us must not linger.
		go func() {
			if r := <-call.result; r.err == nil && b.discard != nil {
				b.discard(r.out)
			}
		}()
		return zero, unavailable("wait for the key holder", context.Cause(ctx))
	case <-b.stop:
		// Queued behind the stop, or in flight while shutting down: either way, not ours.
		go func() {
			if r := <-call.result; r.err == nil && b.discard != nil {
				b.discard(r.out)
			}
		}()
		return zero, unavailable("wait for the key holder", errBatcherClosed)
	}
}

func (b *batcher[In, Out]) run() {
	defer b.done.Done()
	for {
		var first *batchCall[In, Out]
		select {
		case first = <-b.queue:
		case <-b.stop:
			b.failQueued()
			return
		}
		// Waiting for a slot is what lets requests accumulate while Vault is busy.
		select {
		case b.slots <- struct{}{}:
		case <-b.stop:
			first.result <- batchResult[Out]{err: unavailable("submit", errBatcherClosed)}
			b.failQueued()
			return
		}
		batch := b.gather(first)
		b.done.Add(1)
		go func() {
			defer b.done.Done()
			defer func() { <-b.slots }()
			b.send(batch)
		}()
	}
}

// gather takes what is queued behind first, up to MaxItems, waiting up to Window for more.
func (b *batcher[In, Out]) gather(first *batchCall[In, Out]) []*batchCall[In, Out] {
	batch := []*batchCall[In, Out]{first}
	if b.cfg.Disabled {
		return batch
	}
	var window <-chan time.Time
	if b.cfg.Window > 0 {
		t := time.NewTimer(b.cfg.Window)
		defer t.Stop()
		window = t.C
	}
	for len(batch) < b.cfg.MaxItems {
		select {
		case c := <-b.queue:
			batch = append(batch, c)
			continue
		default:
		}
		if window == nil {
			return batch
		}
		select {
		case c := <-b.queue:
			batch = append(batch, c)
		case <-window:
			return batch
		case <-b.stop:
			return batch
		}
	}
	return batch
}

func (b *batcher[In, Out]) send(batch []*batchCall[In, Out]) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	in := make([]In, len(batch))
	for i, c := range batch {
		in[i] = c.in
	}
	outs, errs, err := b.flush(ctx, in)
	if err == nil && (len(outs) != len(batch) || len(errs) != len(batch)) {
		err = unavailable("read batch results", errors.New("result count does not match the request"))
	}
	for i, c := range batch {
		if err != nil {
			c.result <- batchResult[Out]{err: err}
			continue
		}
		c.result <- batchResult[Out]{out: outs[i], err: errs[i]}
	}
}

// failQueued answers every request still queued at Close.
func (b *batcher[In, Out]) failQueued() {
	for {
		select {
		case c := <-b.queue:
			c.result <- batchResult[Out]{err: unavailable("submit", errBatcherClosed)}
		default:
			return
		}
	}
}

// queued reports how many requests wait for a batch (tests).
func (b *batcher[In, Out]) queued() int { return len(b.queue) }

// close stops taking requests, answers the queued ones with a temporary error and waits for
// the Vault calls in flight.
func (b *batcher[In, Out]) close() {
	b.stopOnce.Do(func() { close(b.stop) })
	b.done.Wait()
}
