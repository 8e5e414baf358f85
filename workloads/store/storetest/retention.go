package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
)

// Clock is a clock that a test moves by hand, shared by a store and what runs on it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// OpenWithClock opens a store for Tenant on dsn that reads clock, closed at the end of the test.
func OpenWithClock(t testing.TB, dsn string, clock *Clock) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn, Tenant, store.WithClock(clock.Now))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewClockRequest is NewRequest for a store on a clock: the link expires a week after now.
func NewClockRequest(phone string, now time.Time) store.AcceptRequest {
	r := NewRequest(phone)
	r.ExpiresAt = now.Add(7 * 24 * time.Hour)
	return r
}

var sweepEpoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// retentionEvent is the audit event the sweeper writes.
func retentionEvent(kind audit.Kind) audit.Event {
	return audit.Event{Kind: kind, Actor: "retention", Detail: map[string]string{"rule": "hipaa-standard", "generation": "3"}}
}

// eventsByMessage counts the events of kind per message.
func eventsByMessage(events []audit.Event, kind audit.Kind) map[string]int {
	n := map[string]int{}
	for _, e := range events {
		if e.Kind == kind {
			n[e.MessageID]++
		}
	}
	return n
}

func testRetentionCandidates(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(sweepEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	var ids []string
	phones := map[string]string{}
	for range 6 {
		r := NewClockRequest(newPhone(), clock.Now())
		accept(t, s, r)
		ids, phones[r.MessageID] = append(ids, r.MessageID), r.Phone
		clock.Advance(time.Minute)
	}
	// ids[1] was read and ids[2] revoked: their links no longer count; ids[3] is purged.
	must(t, "read", s.Transition(ctx, ids[1], store.StatusRead, event(audit.KindRevealed)))
	must(t, "revoke", s.Transition(ctx, ids[2], store.StatusRevoked, event(audit.KindRevoked)))
	must(t, "purge", s.Purge(ctx, ids[3], event(audit.KindPurged)))

	// Everything created up to the fifth minute, two at a time.
	list := func(name string, candidates func(context.Context, time.Time, retention.Message, int) ([]retention.Message, error)) []string {
		t.Helper()
		var (
			got   []string
			after retention.Message
		)
		for page := 0; ; page++ {
			batch, err := candidates(ctx, sweepEpoch.Add(4*time.Minute), after, 2)
			must(t, name, err)
			for _, m := range batch {
				if m.Recipient != phones[m.ID] || m.Sender != "sender-1" || m.CreatedAt.IsZero() {
					t.Errorf("%s: candidate %+v lacks its recipient, sender or time", name, m)
				}
				got = append(got, m.ID)
			}
			if len(batch) < 2 {
				return got
			}
			if page > 10 {
				t.Fatalf("%s: pages never end", name)
			}
			after = batch[len(batch)-1]
		}
	}
	if got, want := list("expiry candidates", s.ExpiryCandidates), []string{ids[0], ids[4]}; !slices.Equal(got, want) {
		t.Errorf("expiry candidates = %v, want %v (unread, created by the fifth minute, in order)", got, want)
	}
	if got, want := list("purge candidates", s.PurgeCandidates), []string{ids[0], ids[1], ids[2], ids[4]}; !slices.Equal(got, want) {
		t.Errorf("purge candidates = %v, want %v (not purged, created by the fifth minute, in order)", got, want)
	}
	_, err := s.PurgeCandidates(ctx, clock.Now(), retention.Message{}, 0)
	wantErr(t, "candidates with limit 0", err, store.ErrInvalid)
}

func testExpireAndPurgeMessages(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(sweepEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	var ids []string
	for range 3 {
		r := NewClockRequest(newPhone(), clock.Now())
		accept(t, s, r)
		ids = append(ids, r.MessageID)
	}
	must(t, "reply", s.AddReply(ctx, store.Reply{ID: store.NewID(), MessageID: ids[0], Ciphertext: []byte("sealed")}, 5, event(audit.KindReplied)))
	must(t, "read", s.Transition(ctx, ids[2], store.StatusRead, event(audit.KindRevealed)))
	clock.Advance(time.Hour)

	// A read message keeps its status; a missing one is left out.
	n, err := s.ExpireMessages(ctx, append(slices.Clone(ids), "no-such-message"), retentionEvent(audit.KindExpired))
	must(t, "expire", err)
	if n != 2 {
		t.Errorf("expired %d messages, want 2", n)
	}
	for i, want := range []store.Status{store.StatusExpired, store.StatusExpired, store.StatusRead} {
		m, err := s.Message(ctx, ids[i])
		must(t, "read message", err)
		if m.Status != want || m.WrappedKey == "" {
			t.Errorf("message %d after expiry: status %s, key %q; want %s with its key", i, m.Status, m.WrappedKey, want)
		}
	}
	if depth, _, err := s.OutboxStats(ctx, clock.Now()); err != nil || depth != 1 {
		t.Errorf("outbox depth after expiry = %d, %v; want 1 (the read message's notification)", depth, err)
	}
	n, err = s.ExpireMessages(ctx, ids, retentionEvent(audit.KindExpired))
	if err != nil || n != 0 {
		t.Errorf("expire again = %d, %v; want 0", n, err)
	}

	n, err = s.PurgeMessages(ctx, ids, retentionEvent(audit.KindPurged))
	must(t, "purge", err)
	if n != 3 {
		t.Errorf("purged %d messages, want 3", n)
	}
	for _, id := range ids {
		m, err := s.Message(ctx, id)
		must(t, "read purged message", err)
		if m.Status != store.StatusPurged || m.WrappedKey != "" || !m.StatusChangedAt.Equal(clock.Now()) {
			t.Errorf("purged message = %+v, want status purged at %s, no wrapped key", m, clock.Now())
		}
		parts, err := s.MessageParts(ctx, id)
		must(t, "read parts", err)
		replies, err := s.Replies(ctx, id)
		must(t, "read replies", err)
		if len(parts) != 0 || len(replies) != 0 {
			t.Errorf("purged message %s keeps %d parts and %d replies", id, len(parts), len(replies))
		}
	}
	if depth, _, err := s.OutboxStats(ctx, clock.Now()); err != nil || depth != 0 {
		t.Errorf("outbox depth after purge = %d, %v; want 0", depth, err)
	}
	n, err = s.PurgeMessages(ctx, ids, retentionEvent(audit.KindPurged))
	if err != nil || n != 0 {
		t.Errorf("purge again = %d, %v; want 0", n, err)
	}
	wantErr(t, "purge one again", s.Purge(ctx, ids[0], event(audit.KindPurged)), store.ErrConflict)
	wantErr(t, "reply after purge", s.AddReply(ctx, store.Reply{ID: store.NewID(), MessageID: ids[1], Ciphertext: []byte("x")}, 5, event(audit.KindReplied)), store.ErrConflict)

	events := sequenceAll(t, s)
	expired, purged := eventsByMessage(events, audit.KindExpired), eventsByMessage(events, audit.KindPurged)
	for i, id := range ids {
		if want := map[bool]int{true: 1, false: 0}[i < 2]; expired[id] != want || purged[id] != 1 {
			t.Errorf("message %d has %d expired and %d purged events, want %d and 1", i, expired[id], purged[id], want)
		}
	}
	for _, e := range events {
		if (e.Kind == audit.KindPurged || e.Kind == audit.KindExpired) && e.Actor == "retention" &&
			(e.Detail["rule"] != "hipaa-standard" || e.Detail["generation"] != "3" || !e.Time.Equal(clock.Now())) {
			t.Errorf("sweep event %+v lacks the rule, its generation or the time", e)
		}
	}
	verifyChain(t, s, events)

	_, err = s.PurgeMessages(ctx, ids, audit.Event{Kind: audit.KindPurged, Actor: "retention", MessageID: ids[0]})
	wantErr(t, "batch event naming a message", err, store.ErrInvalid)
	_, err = s.ExpireMessages(ctx, []string{""}, retentionEvent(audit.KindExpired))
	wantErr(t, "empty id", err, store.ErrInvalid)
}

// Sweepers of two replicas purge the same messages at once: each message is purged once, with
// one event, whatever order their transactions take.
func testConcurrentPurge(t *testing.T, h harness) {
	ctx := context.Background()
	dsn := h.newDatabase(t)
	replicas := []*store.Store{Open(t, dsn), Open(t, dsn)}
	var ids []string
	for range 40 {
		r := NewRequest(newPhone())
		accept(t, replicas[0], r)
		ids = append(ids, r.MessageID)
	}
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		expired, purged int
	)
	for w := range 6 {
		wg.Go(func() {
			s := replicas[w%2]
			order := slices.Clone(ids)
			if w%3 == 1 {
				slices.Reverse(order)
			}
			for i := 0; i < len(order); i += 10 {
				ne, err := s.ExpireMessages(ctx, order[i:i+10], retentionEvent(audit.KindExpired))
				if err != nil {
					t.Errorf("expire: %v", err)
				}
				np, err := s.PurgeMessages(ctx, order[i:i+10], retentionEvent(audit.KindPurged))
				if err != nil {
					t.Errorf("purge: %v", err)
				}
				mu.Lock()
				expired, purged = expired+ne, purged+np
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if purged != len(ids) || expired > len(ids) {
		t.Errorf("replicas purged %d and expired %d of %d messages; want each purged once", purged, expired, len(ids))
	}
	events := sequenceAll(t, replicas[0])
	purges, expiries := eventsByMessage(events, audit.KindPurged), eventsByMessage(events, audit.KindExpired)
	total := 0
	for _, id := range ids {
		if purges[id] != 1 || expiries[id] > 1 {
			t.Errorf("message %s has %d purge and %d expiry events, want 1 and at most 1", id, purges[id], expiries[id])
		}
		total += expiries[id]
	}
	if total != expired {
		t.Errorf("%d expiry events for %d expiries", total, expired)
	}
}

func testLeases(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(sweepEpoch)
	dsn := h.newDatabase(t)
	s := OpenWithClock(t, dsn, clock)
	acquire := func(holder string, d time.Duration, want bool) {
		t.Helper()
		got, err := s.AcquireLease(ctx, "sweep", holder, clock.Now().Add(d))
		must(t, "acquire lease", err)
		if got != want {
			t.Fatalf("at %s, %s acquires the lease: %v, want %v", clock.Now().Sub(sweepEpoch), holder, got, want)
		}
	}
	acquire("a", time.Minute, true)
	acquire("b", time.Minute, false)
	acquire("a", 2*time.Minute, true) // renewed
	clock.Advance(time.Minute)
	acquire("b", time.Minute, false)
	clock.Advance(time.Minute) // a stopped renewing: its lease ran out
	acquire("b", time.Minute, true)
	acquire("a", time.Minute, false)
	must(t, "release by a non-holder", s.ReleaseLease(ctx, "sweep", "a"))
	acquire("a", time.Minute, false)
	must(t, "release", s.ReleaseLease(ctx, "sweep", "b"))
	acquire("a", time.Minute, true)
	acquire("a", time.Minute, true) // another lease name is another lease
	if got, err := s.AcquireLease(ctx, "other", "b", clock.Now().Add(time.Minute)); err != nil || !got {
		t.Errorf("another lease: %v, %v; want it taken", got, err)
	}
	_, err := s.AcquireLease(ctx, "sweep", "", clock.Now())
	wantErr(t, "acquire without a holder", err, store.ErrInvalid)

	// Replicas race for a free lease: exactly one gets it.
	clock.Advance(time.Hour)
	replicas := []*store.Store{s, OpenWithClock(t, dsn, clock)}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		won []string
	)
	for i := range 8 {
		wg.Go(func() {
			holder := fmt.Sprintf("r%d", i)
			got, err := replicas[i%2].AcquireLease(ctx, "race", holder, clock.Now().Add(time.Minute))
			if err != nil {
				t.Errorf("acquire: %v", err)
			}
			if got {
				mu.Lock()
				won = append(won, holder)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 1 {
		t.Errorf("%v took the free lease at once, want exactly one", won)
	}
}

func testSweepRecord(t *testing.T, h harness) {
	ctx := context.Background()
	dsn := h.newDatabase(t)
	s := Open(t, dsn)
	replica := Open(t, dsn)
	name := retention.RecordName
	if _, err := s.LastSweep(ctx, name); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("last sweep before any: %v, want ErrNotFound", err)
	}
	first := retention.Result{
		Started: sweepEpoch, Finished: sweepEpoch.Add(90 * time.Second), Policy: "hipaa-standard", Generation: 4,
		LinksExpired: 12, MessagesPurged: 7, MessagesHeld: 3, HeldByHold: map[string]int{"matter-1": 3, "matter-2": 1},
		MessagesSkipped: 1, HoldEvents: 2, Errors: 1,
	}
	must(t, "save the first sweep", s.SaveSweep(ctx, name, first))
	got, err := replica.LastSweep(ctx, name)
	must(t, "another replica reads the last sweep", err)
	if !reflect.DeepEqual(got, first) {
		t.Errorf("last sweep read back as %+v, want %+v", got, first)
	}

	// A later sweep replaces it; an earlier one (a sweeper that lost its lease and finished
	// late) does not.
	second := retention.Result{Started: sweepEpoch.Add(time.Hour), Finished: sweepEpoch.Add(time.Hour + time.Second), Policy: "hipaa-standard", Generation: 5}
	must(t, "save a later sweep", replica.SaveSweep(ctx, name, second))
	stale := first
	stale.Finished = sweepEpoch.Add(30 * time.Minute)
	must(t, "save an earlier sweep", s.SaveSweep(ctx, name, stale))
	if got, err := s.LastSweep(ctx, name); err != nil || !reflect.DeepEqual(got, second) {
		t.Errorf("last sweep after a later and a stale save: %+v, %v; want %+v", got, err, second)
	}
	if _, err := s.LastSweep(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another name: %v, want ErrNotFound", err)
	}
	wantErr(t, "save an unfinished sweep", s.SaveSweep(ctx, name, retention.Result{Started: sweepEpoch}), store.ErrInvalid)
}
