package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// testAcceptGroups sends many accepts at once, so that they share transactions, with a few
// the database refuses among them: each still gets its own answer, and the others are stored.
func testAcceptGroups(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	optedOut := newPhone()
	_, err := s.SetOptOut(ctx, optedOut, true)
	must(t, "opt out", err)
	earlier := NewRequest(newPhone())
	accept(t, s, earlier)

	const plain = 48
	var reqs []store.AcceptRequest
	for range plain {
		reqs = append(reqs, NewRequest(newPhone()))
	}
	blocked := NewRequest(optedOut)
	sameID := NewRequest(newPhone())
	sameID.MessageID = earlier.MessageID
	retried := NewRequest(newPhone()) // one submission sent four times at once
	reqs = append(reqs, blocked, sameID, retried, retried, retried, retried)

	results := make([]store.AcceptResult, len(reqs))
	errs := make([]error, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.AcceptMessage(ctx, r)
		})
	}
	close(start)
	wg.Wait()

	for i := range plain {
		if errs[i] != nil || results[i].MessageID != reqs[i].MessageID || results[i].Replayed {
			t.Errorf("accept %d: %+v, %v; want stored", i, results[i], errs[i])
			continue
		}
		parts, err := s.MessageParts(ctx, reqs[i].MessageID)
		if err != nil || len(parts) != len(reqs[i].Parts) {
			t.Errorf("message %d: %d parts, %v", i, len(parts), err)
		}
	}
	wantErr(t, "accept for an opted-out recipient among others", errs[plain], store.ErrOptedOut)
	wantErr(t, "accept with a taken message id among others", errs[plain+1], store.ErrConflict)
	if errors.Is(errs[plain+1], store.ErrConflict) {
		if m, err := s.Message(ctx, earlier.MessageID); err != nil || m.WrappedKey != earlier.WrappedKey {
			t.Errorf("the earlier message was changed: %+v, %v", m, err)
		}
	}
	firsts := 0
	for i := plain + 2; i < len(reqs); i++ {
		if errs[i] != nil || results[i].MessageID != retried.MessageID {
			t.Errorf("retried submission %d: %+v, %v", i, results[i], errs[i])
		}
		if !results[i].Replayed {
			firsts++
		}
	}
	if firsts != 1 {
		t.Errorf("%d of 4 concurrent copies of one submission were stored as new, want 1", firsts)
	}
	if depth, _, err := s.OutboxStats(ctx, earlier.ExpiresAt); err != nil || depth != plain+2 {
		t.Errorf("outbox holds %d notifications (%v), want %d: one per stored message", depth, err, plain+2)
	}
}

// testMarkSentGroups marks many notifications sent at once, so that they share transactions,
// with a few that are no longer pending or do not exist among them: those get their own
// refusal and change nothing, the others are recorded with their events.
func testMarkSentGroups(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	const n = 40
	entries := claimNew(t, s, n)
	done := entries[0]
	must(t, "mark sent", s.MarkSent(ctx, done.ID, "SM-done", audit.Event{Kind: audit.KindNotified, Actor: "notifier"}))

	type call struct {
		id         int64
		providerID string
		want       error
	}
	calls := []call{{done.ID, "SM-again", store.ErrConflict}, {999999, "SM-missing", store.ErrNotFound}}
	for i, e := range entries[1:] {
		calls = append(calls, call{e.ID, fmt.Sprintf("SM-%d", i), nil})
	}
	errs := make([]error, len(calls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			<-start
			errs[i] = s.MarkSent(ctx, c.id, c.providerID, audit.Event{Kind: audit.KindNotified, Actor: "notifier"})
		})
	}
	close(start)
	wg.Wait()
	for i, c := range calls {
		if c.want == nil {
			must(t, fmt.Sprintf("mark notification %d sent", c.id), errs[i])
			continue
		}
		wantErr(t, fmt.Sprintf("mark notification %d sent", c.id), errs[i], c.want)
	}
	for i, e := range entries {
		m, err := s.Message(ctx, e.MessageID)
		must(t, "read", err)
		want := fmt.Sprintf("SM-%d", i-1)
		if i == 0 {
			want = "SM-done"
		}
		if m.Status != store.StatusNotified || m.ProviderMessageID != want {
			t.Errorf("message %d: %s, provider id %q; want notified, %s", i, m.Status, m.ProviderMessageID, want)
		}
	}
	if events := sequenceAll(t, s); len(events) != n {
		t.Errorf("audited %d notified events, want %d: one per notification marked sent", len(events), n)
	}
	if depth, _, err := s.OutboxStats(ctx, time.Now()); err != nil || depth != 0 {
		t.Errorf("outbox depth %d (%v), want 0", depth, err)
	}
}

// claimNew accepts n messages to new recipients, chains their events and claims their n
// notifications.
func claimNew(t *testing.T, s *store.Store, n int) []store.OutboxEntry {
	t.Helper()
	for range n {
		accept(t, s, NewRequest(newPhone()))
	}
	sequenceAll(t, s)
	entries, err := s.ClaimOutbox(context.Background(), time.Now(), n, time.Minute)
	must(t, "claim", err)
	if len(entries) != n {
		t.Fatalf("claimed %d, want %d", len(entries), n)
	}
	return entries
}

// testMarkSentRace marks each notification sent from two replicas at once, as two notifiers
// whose leases overlapped would: one call wins, the other gets ErrConflict, and the message
// has the winner's provider id and one notified event. An event that names another message is
// refused and changes nothing.
func testMarkSentRace(t *testing.T, h harness) {
	ctx := context.Background()
	s, dsn := h.open(t)
	replica := Open(t, dsn)
	const n = 40
	entries := claimNew(t, s, n)

	other := entries[1].MessageID
	err := s.MarkSent(ctx, entries[0].ID, "SM-wrong", audit.Event{Kind: audit.KindNotified, Actor: "notifier", MessageID: other})
	wantErr(t, "mark sent with another message's event", err, store.ErrInvalid)
	if m, err := s.Message(ctx, entries[0].MessageID); err != nil || m.Status != store.StatusAccepted || m.ProviderMessageID != "" {
		t.Errorf("after a refused mark: %s, provider id %q (%v); want accepted and none", m.Status, m.ProviderMessageID, err)
	}
	if events := sequenceAll(t, s); len(events) != 0 {
		t.Errorf("a refused mark audited %d events", len(events))
	}

	errs := make([][2]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, e := range entries {
		for j, st := range []*store.Store{s, replica} {
			wg.Go(func() {
				<-start
				errs[i][j] = st.MarkSent(ctx, e.ID, fmt.Sprintf("SM-%d-%d", i, j), audit.Event{Kind: audit.KindNotified, Actor: "notifier"})
			})
		}
	}
	close(start)
	wg.Wait()
	for i, e := range entries {
		winner := -1
		for j, err := range errs[i] {
			switch {
			case err == nil && winner < 0:
				winner = j
			case err == nil:
				t.Errorf("notification %d: both replicas marked it sent", i)
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("notification %d, replica %d: %v; want success or ErrConflict", i, j, err)
			}
		}
		if winner < 0 {
			t.Errorf("notification %d: neither replica marked it sent: %v", i, errs[i])
			continue
		}
		m, err := s.Message(ctx, e.MessageID)
		must(t, "read", err)
		if want := fmt.Sprintf("SM-%d-%d", i, winner); m.Status != store.StatusNotified || m.ProviderMessageID != want {
			t.Errorf("message %d: %s, provider id %q; want notified, %s", i, m.Status, m.ProviderMessageID, want)
		}
	}
	if events := sequenceAll(t, s); len(events) != n {
		t.Errorf("audited %d notified events, want %d: one per notification", len(events), n)
	}
}

// testAppendAuditGroups appends events from many callers at once, so that they share
// transactions: every event is chained once, and each caller's events keep their order.
func testAppendAuditGroups(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	const callers = 50
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			first := audit.Event{Kind: audit.KindLinkOpened, Actor: "recipient", Detail: map[string]string{"caller": fmt.Sprint(i), "n": "1"}}
			second := audit.Event{Kind: audit.KindRevealed, Actor: "recipient", Detail: map[string]string{"caller": fmt.Sprint(i), "n": "2"}}
			if err := s.AppendAudit(ctx, first, second); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	events := sequenceAll(t, s)
	if len(events) != 2*callers {
		t.Fatalf("chained %d events, want %d", len(events), 2*callers)
	}
	seen := map[string]string{}
	for _, e := range events {
		c := e.Detail["caller"]
		if e.Detail["n"] == "2" && seen[c] != "1" {
			t.Fatalf("caller %s: its second event was chained before its first", c)
		}
		if seen[c] == e.Detail["n"] {
			t.Fatalf("caller %s: event %s chained twice", c, e.Detail["n"])
		}
		seen[c] = e.Detail["n"]
	}
}

// testOptedOutLookups asks about many numbers at once, so that the lookups share queries:
// each gets its own number's answer.
func testOptedOutLookups(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	var phones []string
	want := map[string]bool{}
	for i := range 40 {
		p := newPhone()
		phones = append(phones, p)
		switch i % 3 {
		case 0: // opted out
			_, err := s.SetOptOut(ctx, p, true)
			must(t, "opt out", err)
			want[p] = true
		case 1: // known, opted in
			accept(t, s, NewRequest(p))
		} // else never seen
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range phones {
		wg.Go(func() {
			<-start
			got, err := s.OptedOut(ctx, p)
			if err != nil || got != want[p] {
				t.Errorf("OptedOut(%s) = %v, %v; want %v", p, got, err, want[p])
			}
		})
	}
	close(start)
	wg.Wait()
}
