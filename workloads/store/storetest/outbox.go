package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

func testOutboxClaimAndLease(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)
	now := time.Now()
	const lease = time.Minute

	first, err := s.ClaimOutbox(ctx, now, 10, lease)
	must(t, "claim", err)
	if len(first) != 1 || first[0].Attempts != 1 || !first[0].ClaimedUntil.Equal(now.Add(lease).UTC().Truncate(time.Microsecond)) {
		t.Fatalf("claimed %+v, want one entry on its first attempt, leased for %v", first, lease)
	}
	if e := first[0]; e.MessageID != r.MessageID || e.WrappedKey != r.WrappedKey || e.MessageStatus != store.StatusAccepted ||
		string(e.Payload) != string(r.NotifyPayload) {
		t.Fatalf("claimed %+v, want message %s with its wrapped key, status and payload", e, r.MessageID)
	}
	none, err := s.ClaimOutbox(ctx, now.Add(lease/2), 10, lease)
	must(t, "claim during the lease", err)
	if len(none) != 0 {
		t.Fatalf("claimed %d entries while the lease holds, want 0", len(none))
	}
	// The relay died: once the lease ends, another claims the row.
	again, err := s.ClaimOutbox(ctx, now.Add(lease), 10, lease)
	must(t, "claim after the lease", err)
	if len(again) != 1 || again[0].ID != first[0].ID || again[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v, want entry %d on its second attempt", again, first[0].ID)
	}

	// Due rows only, and no more than the limit.
	for range 3 {
		accept(t, s, NewRequest(newPhone()))
	}
	early, err := s.ClaimOutbox(ctx, now.Add(-time.Hour), 10, lease)
	must(t, "claim before anything is due", err)
	if len(early) != 0 {
		t.Errorf("claimed %d entries that are not due yet", len(early))
	}
	limited, err := s.ClaimOutbox(ctx, time.Now(), 2, lease)
	must(t, "claim two", err)
	if len(limited) != 2 {
		t.Errorf("claimed %d entries with limit 2", len(limited))
	}
	_, err = s.ClaimOutbox(ctx, now, 0, lease)
	wantErr(t, "claim zero", err, store.ErrInvalid)
}

func testOutboxConcurrentClaimers(t *testing.T, h harness) {
	ctx := context.Background()
	s, dsn := h.open(t)
	replica := Open(t, dsn) // a second replica's relay
	const messages, claimers = 60, 8
	want := make(map[string]bool)
	for range messages {
		r := NewRequest(newPhone())
		accept(t, s, r)
		want[r.MessageID] = true
	}

	now := time.Now()
	var (
		mu      sync.Mutex
		claimed = make(map[int64]string)
		dup     []int64
		errs    []error
		wg      sync.WaitGroup
	)
	for i := range claimers {
		st := s
		if i%2 == 1 {
			st = replica
		}
		wg.Go(func() {
			for {
				entries, err := st.ClaimOutbox(ctx, now, 3, time.Hour)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if len(entries) == 0 {
					return
				}
				mu.Lock()
				for _, e := range entries {
					if _, ok := claimed[e.ID]; ok {
						dup = append(dup, e.ID)
					}
					claimed[e.ID] = e.MessageID
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("claim: %v", err)
	}
	if len(dup) > 0 {
		t.Errorf("entries claimed twice while their lease held: %v", dup)
	}
	got := make(map[string]bool)
	for _, m := range claimed {
		got[m] = true
	}
	if len(got) != messages {
		t.Errorf("claimed entries for %d messages, want all %d", len(got), messages)
	}
	for m := range want {
		if !got[m] {
			t.Errorf("message %s was never claimed", m)
		}
	}
}

func testOutboxRetryFailSent(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	sent, failing := NewRequest(newPhone()), NewRequest(newPhone())
	accept(t, s, sent)
	accept(t, s, failing)
	sequenceAll(t, s)
	now := time.Now()

	entries, err := s.ClaimOutbox(ctx, now, 10, time.Minute)
	must(t, "claim", err)
	byMessage := make(map[string]store.OutboxEntry)
	for _, e := range entries {
		byMessage[e.MessageID] = e
	}
	if len(byMessage) != 2 {
		t.Fatalf("claimed %+v, want both messages", entries)
	}

	// Retry: not due before next, due at next.
	next := now.Add(30 * time.Second)
	must(t, "retry later", s.RetryLater(ctx, byMessage[failing.MessageID].ID, next, "provider-429"))
	if got, err := s.ClaimOutbox(ctx, next.Add(-time.Second), 10, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("claimed %+v (%v) before the retry is due", got, err)
	}
	got, err := s.ClaimOutbox(ctx, next, 10, time.Minute)
	must(t, "claim the retry", err)
	if len(got) != 1 || got[0].MessageID != failing.MessageID || got[0].Attempts != 2 {
		t.Fatalf("claimed %+v, want the retried entry on its second attempt", got)
	}
	wantErr(t, "retry with free text", s.RetryLater(ctx, got[0].ID, next, "number +12025550143 is invalid"), store.ErrInvalid)

	must(t, "mark failed", s.MarkFailed(ctx, got[0].ID, "provider-21211", audit.Event{Kind: audit.KindFailed, Actor: "notifier", Detail: map[string]string{"code": "21211"}}))
	m, err := s.Message(ctx, failing.MessageID)
	must(t, "read", err)
	if m.Status != store.StatusFailed {
		t.Errorf("status after failure = %s, want failed", m.Status)
	}
	wantErr(t, "fail twice", s.MarkFailed(ctx, got[0].ID, "again", event(audit.KindFailed)), store.ErrConflict)
	wantErr(t, "retry a failed entry", s.RetryLater(ctx, got[0].ID, next, "again"), store.ErrNotFound)

	sentEntry := byMessage[sent.MessageID]
	must(t, "mark sent", s.MarkSent(ctx, sentEntry.ID, "SM123", audit.Event{Kind: audit.KindNotified, Actor: "notifier"}))
	m, err = s.Message(ctx, sent.MessageID)
	must(t, "read", err)
	if m.Status != store.StatusNotified || m.ProviderMessageID != "SM123" {
		t.Errorf("after sent: status %s, provider id %q; want notified, SM123", m.Status, m.ProviderMessageID)
	}
	byProvider, err := s.MessageByProviderID(ctx, "SM123")
	must(t, "read by provider id", err)
	if byProvider.ID != sent.MessageID {
		t.Errorf("by provider id = %s, want %s", byProvider.ID, sent.MessageID)
	}
	wantErr(t, "mark sent twice", s.MarkSent(ctx, sentEntry.ID, "SM123", event(audit.KindNotified)), store.ErrConflict)
	wantErr(t, "mark a missing entry sent", s.MarkSent(ctx, 999999, "SM1", event(audit.KindNotified)), store.ErrNotFound)

	if after, err := s.ClaimOutbox(ctx, now.Add(time.Hour), 10, time.Minute); err != nil || len(after) != 0 {
		t.Errorf("claimed %+v (%v) after all entries finished", after, err)
	}

	events := sequenceAll(t, s)
	if len(events) != 2 {
		t.Fatalf("audited %d events, want 2 (failed, notified)", len(events))
	}
	if events[0].Kind != audit.KindFailed || events[0].MessageID != failing.MessageID || events[0].Detail["code"] != "21211" {
		t.Errorf("first event = %+v, want the failure", events[0])
	}
	if events[1].Kind != audit.KindNotified || events[1].MessageID != sent.MessageID {
		t.Errorf("second event = %+v, want the notification", events[1])
	}

	// A message that moved on keeps its status when its SMS is marked sent late.
	late := NewRequest(newPhone())
	accept(t, s, late)
	must(t, "open", s.Transition(ctx, late.MessageID, store.StatusOpened, event(audit.KindLinkOpened)))
	entries, err = s.ClaimOutbox(ctx, time.Now(), 10, time.Minute)
	must(t, "claim", err)
	if len(entries) != 1 {
		t.Fatalf("claimed %d entries, want 1", len(entries))
	}
	must(t, "mark sent", s.MarkSent(ctx, entries[0].ID, "SM456", event(audit.KindNotified)))
	m, err = s.Message(ctx, late.MessageID)
	must(t, "read", err)
	if m.Status != store.StatusOpened || m.ProviderMessageID != "SM456" {
		t.Errorf("late sent: status %s, provider id %q; want opened, SM456", m.Status, m.ProviderMessageID)
	}
}

func testOutboxStats(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	depth, oldest, err := s.OutboxStats(ctx, time.Now())
	if err != nil || depth != 0 || oldest != 0 {
		t.Fatalf("empty outbox: %d, %v, %v", depth, oldest, err)
	}
	before := time.Now()
	for range 3 {
		accept(t, s, NewRequest(newPhone()))
	}
	after := time.Now()
	at := after.Add(time.Hour)
	depth, oldest, err = s.OutboxStats(ctx, at)
	must(t, "stats", err)
	if depth != 3 || oldest < at.Sub(after) || oldest > at.Sub(before)+time.Microsecond {
		t.Errorf("stats = %d, %v; want 3 and between %v and %v", depth, oldest, at.Sub(after), at.Sub(before))
	}
	// Claimed entries are still pending; sent ones are not.
	entries, err := s.ClaimOutbox(ctx, time.Now(), 1, time.Minute)
	must(t, "claim", err)
	depth, _, err = s.OutboxStats(ctx, at)
	if err != nil || depth != 3 {
		t.Errorf("depth with one claimed = %d, %v; want 3", depth, err)
	}
	must(t, "mark sent", s.MarkSent(ctx, entries[0].ID, "SM1", event(audit.KindNotified)))
	depth, _, err = s.OutboxStats(ctx, at)
	if err != nil || depth != 2 {
		t.Errorf("depth with one sent = %d, %v; want 2", depth, err)
	}
}
