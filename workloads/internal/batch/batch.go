// Package batch coalesces concurrent calls of one operation into batches: Transit's
// batch_input in the keystore, one keystore request per group of data keys in its client, one
// database transaction per group of accepted messages in the store.
//
// Batching is natural: a call goes out at once when a slot is free, and calls that arrive
// while all MaxInFlight batches are busy wait and leave together in the next one. One caller
// therefore pays no added latency, and many callers share round trips.
package batch

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Config controls how concurrent calls are coalesced. Window adds an optional wait after the
// first call of a batch, to gather more per batch at the cost of that much latency.
type Config struct {
	// Disabled sends every call on its own (a batch of one).
	Disabled bool
	// MaxItems caps the calls in one batch. Default 256.
	MaxItems int
	// MaxInFlight caps the batches in progress at once. Default 4.
	MaxInFlight int
	// Window is how long a batch waits for more requests after its first one, unless it is
	// full sooner. Default 0: take what is queued and go.
	Window time.Duration
}

func (c Config) withDefaults() Config {
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

// ErrClosed is the cause given to calls submitted after Close, or still waiting then.
var ErrClosed = errors.New("shutting down")

// Batcher coalesces concurrent calls of one operation. flush gets the inputs of one batch and
// must return exactly one result or error per input, or one error for the whole batch.
type Batcher[In, Out any] struct {
	cfg     Config
	flush   func(ctx context.Context, in []In) ([]Out, []error, error)
	discard func(Out) // clears an output nobody waits for any more (a data key)
	timeout time.Duration
	fail    func(what string, cause error) error // the error a caller gets when it could not be served

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

// New starts a Batcher. flush gets the inputs of one batch with a context bounded by timeout,
// and must return exactly one result or error per input, or one error for the whole batch.
// discard, if set, clears an output whose caller gave up. fail builds the error of a call that
// was not served (ctx ended, Close, a malformed flush), from what failed and why: the caller's
// package makes it temporary in its own terms.
func New[In, Out any](cfg Config, timeout time.Duration, flush func(context.Context, []In) ([]Out, []error, error),
	discard func(Out), fail func(what string, cause error) error) *Batcher[In, Out] {
	cfg = cfg.withDefaults()
	b := &Batcher[In, Out]{
		cfg:     cfg,
		flush:   flush,
		discard: discard,
		timeout: timeout,
		fail:    fail,
		queue:   make(chan *batchCall[In, Out], cfg.MaxItems*cfg.MaxInFlight),
		slots:   make(chan struct{}, cfg.MaxInFlight),
		stop:    make(chan struct{}),
	}
	b.done.Add(1)
	go b.run()
	return b
}

// Do submits in and waits for its result, ctx's end, or Close.
func (b *Batcher[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	var zero Out
	call := &batchCall[In, Out]{in: in, result: make(chan batchResult[Out], 1)}
	select {
	case b.queue <- call:
	case <-ctx.Done():
		return zero, b.fail("wait for a call slot", context.Cause(ctx))
	case <-b.stop:
		return zero, b.fail("submit", ErrClosed)
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
		return zero, b.fail("wait for the batch", context.Cause(ctx))
	case <-b.stop:
		// Queued behind the stop, or in flight while shutting down: either way, not ours.
		go func() {
			if r := <-call.result; r.err == nil && b.discard != nil {
				b.discard(r.out)
			}
		}()
		return zero, b.fail("wait for the batch", ErrClosed)
	}
}

func (b *Batcher[In, Out]) run() {
	defer b.done.Done()
	for {
		var first *batchCall[In, Out]
		select {
		case first = <-b.queue:
		case <-b.stop:
			b.failQueued()
			return
		}
		// Waiting for a slot is what lets calls accumulate while the batches in flight run.
		select {
		case b.slots <- struct{}{}:
		case <-b.stop:
			first.result <- batchResult[Out]{err: b.fail("submit", ErrClosed)}
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
func (b *Batcher[In, Out]) gather(first *batchCall[In, Out]) []*batchCall[In, Out] {
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

func (b *Batcher[In, Out]) send(batch []*batchCall[In, Out]) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	in := make([]In, len(batch))
	for i, c := range batch {
		in[i] = c.in
	}
	outs, errs, err := b.flush(ctx, in)
	if err == nil && (len(outs) != len(batch) || len(errs) != len(batch)) {
		err = b.fail("read batch results", errors.New("result count does not match the request"))
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
func (b *Batcher[In, Out]) failQueued() {
	for {
		select {
		case c := <-b.queue:
			c.result <- batchResult[Out]{err: b.fail("submit", ErrClosed)}
		default:
			return
		}
	}
}

// Queued reports how many calls wait in the queue (the one the batcher holds while it waits
// for a slot is not counted).
func (b *Batcher[In, Out]) Queued() int { return len(b.queue) }

// Close stops taking requests, answers the queued ones with a temporary error and waits for
// the batches in flight.
func (b *Batcher[In, Out]) Close() {
	b.stopOnce.Do(func() { close(b.stop) })
	b.done.Wait()
}
