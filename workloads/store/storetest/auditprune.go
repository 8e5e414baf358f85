package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
)

var pruneEpoch = time.Date(2020, 1, 6, 9, 0, 0, 0, time.UTC)

// pruneEvent is the audit-pruned event the retention sweeper passes to PruneAudit.
func pruneEvent() audit.Event {
	return audit.Event{Kind: audit.KindAuditPruned, Actor: "retention", Detail: map[string]string{"rule": "hipaa-standard", "generation": "3"}}
}

// chainAt appends n events at the store clock's time, links them, signs a checkpoint of the
// head with notary, and returns the head.
func chainAt(t *testing.T, s *store.Store, notary *audit.Notary, n int) uint64 {
	t.Helper()
	for range n {
		must(t, "append", s.AppendAudit(context.Background(), event(audit.KindAdminAction)))
	}
	return signHead(t, s, notary)
}

// signHead links the pending events, signs a checkpoint of the head with notary, and returns
// the head.
func signHead(t *testing.T, s *store.Store, notary *audit.Notary) uint64 {
	t.Helper()
	ctx := context.Background()
	sequenceAll(t, s)
	_, _, err := s.CheckpointAudit(ctx, notary)
	must(t, "sign a checkpoint", err)
	seq, _, err := s.AuditHead(ctx)
	must(t, "read head", err)
	return seq
}

// exportTrail exports the store's trail as `securetext audit export` does and verifies it with
// the tenant's key.
func exportTrail(t *testing.T, s *store.Store) audit.Report {
	t.Helper()
	events, cps, err := s.AuditTrail(context.Background())
	must(t, "read the audit trail", err)
	pub := signingKey.Public().(ed25519.PublicKey)
	var buf bytes.Buffer
	must(t, "export", audit.Export(&buf, pub, events, cps))
	rep, err := audit.VerifyWithKey(bytes.NewReader(buf.Bytes()), pub)
	if err != nil {
		t.Fatalf("the export does not verify: %v\n%s", err, buf.Bytes())
	}
	return rep
}

// storedSeqs returns the sequence numbers of the stored events and checkpoints.
func storedSeqs(t *testing.T, s *store.Store) (events, checkpoints []uint64) {
	t.Helper()
	ctx := context.Background()
	evs, err := s.AuditEvents(ctx, 0, 1_000_000)
	must(t, "read audit events", err)
	for _, e := range evs {
		events = append(events, e.Seq)
	}
	cps, err := s.Checkpoints(ctx)
	must(t, "read checkpoints", err)
	for _, c := range cps {
		checkpoints = append(checkpoints, c.Size)
	}
	return events, checkpoints
}

// run returns the numbers from to through.
func run(from, through uint64) []uint64 {
	var r []uint64
	for i := from; i <= through; i++ {
		r = append(r, i)
	}
	return r
}

// testAuditPruneAtCheckpoint: pruning cuts the trail at the newest signed checkpoint that
// covers only events older than before and lies below keepFrom, deletes everything at or
// below it and the checkpoints older than it, records the cut, and the export of what remains
// verifies from the anchor.
func testAuditPruneAtCheckpoint(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(pruneEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	notary := newNotary(t)
	chainAt(t, s, notary, 5) // 1-5, signed at 5
	clock.Advance(time.Hour)
	chainAt(t, s, notary, 5) // 6-10, signed at 10
	clock.Advance(time.Hour)
	// 11-15, signed at 15; event 12 carries an old time of its own, the others are young.
	must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction),
		audit.Event{Time: pruneEpoch, Kind: audit.KindAdminAction, Actor: "system"},
		event(audit.KindAdminAction), event(audit.KindAdminAction), event(audit.KindAdminAction)))
	signHead(t, s, notary)
	clock.Advance(time.Hour)
	chainAt(t, s, notary, 3) // 16-18, signed at 18
	before := pruneEpoch.Add(90 * time.Minute)

	if after, through, err := s.AuditPrunable(ctx, before); err != nil || after != 0 || through != 10 {
		t.Fatalf("prunable = (%d, %d], %v; want (0, 10]: checkpoint 15 covers young events", after, through, err)
	}
	// A checkpoint at keepFrom is not below it: the cut goes to the one before.
	res, err := s.PruneAudit(ctx, before, 10, pruneEvent(), 100)
	must(t, "prune", err)
	if want := (retention.AuditPrune{Anchor: 5, Cut: true, Deleted: 5, Done: true}); res != want {
		t.Fatalf("prune below 10 = %+v, want %+v", res, want)
	}
	res, err = s.PruneAudit(ctx, before, 11, pruneEvent(), 100)
	must(t, "prune", err)
	if want := (retention.AuditPrune{Anchor: 10, Cut: true, Deleted: 5, Done: true}); res != want {
		t.Fatalf("prune below 11 = %+v, want %+v", res, want)
	}
	res, err = s.PruneAudit(ctx, before, 11, pruneEvent(), 100)
	must(t, "prune again", err)
	if want := (retention.AuditPrune{Anchor: 10, Done: true}); res != want {
		t.Fatalf("prune again = %+v, want %+v: nothing left to do", res, want)
	}
	if after, through, err := s.AuditPrunable(ctx, before); err != nil || after != 10 || through != 10 {
		t.Errorf("prunable after pruning = (%d, %d], %v; want (10, 10]", after, through, err)
	}

	recorded := sequenceAll(t, s)
	if len(recorded) != 2 {
		t.Fatalf("pruning recorded %d events, want one per cut", len(recorded))
	}
	for i, want := range []map[string]string{
		{"rule": "hipaa-standard", "generation": "3", "anchor": "5", "from": "1", "through": "5", "count": "5"},
		{"rule": "hipaa-standard", "generation": "3", "anchor": "10", "from": "6", "through": "10", "count": "5"},
	} {
		e := recorded[i]
		if e.Kind != audit.KindAuditPruned || e.Actor != "retention" || e.MessageID != "" || fmt.Sprint(e.Detail) != fmt.Sprint(want) || !e.Time.Equal(clock.Now()) {
			t.Errorf("record of cut %d = %+v, want detail %v at %v", i+1, e, want, clock.Now())
		}
	}
	_, _, err = s.CheckpointAudit(ctx, notary)
	must(t, "sign the head after pruning", err)
	events, checkpoints := storedSeqs(t, s)
	if fmt.Sprint(events) != fmt.Sprint(run(11, 20)) || fmt.Sprint(checkpoints) != "[10 15 18 20]" {
		t.Errorf("stored events %v and checkpoints %v, want 11 to 20 and the checkpoints from the anchor at 10", events, checkpoints)
	}
	rep := exportTrail(t, s)
	if rep.First != 11 || rep.Events != 10 || rep.Anchor == nil || rep.Anchor.Size != 10 || rep.Pruning == nil || rep.Pruning.Seq != 20 {
		t.Errorf("export of the pruned trail: %+v, want events 11 to 20 after the anchor at 10, the cut recorded by event 20", rep)
	}
}

// testAuditPruneNeedsOldCheckpoint: old events are kept until a signed checkpoint covers only
// old events; PruneAudit refuses a record that is not an audit-pruned event of no message.
func testAuditPruneNeedsOldCheckpoint(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(pruneEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	notary := newNotary(t)
	for range 4 {
		must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction)))
	}
	sequenceAll(t, s)
	clock.Advance(2 * time.Hour)
	before := pruneEpoch.Add(time.Hour)

	check := func(when string) {
		t.Helper()
		if after, through, err := s.AuditPrunable(ctx, before); err != nil || after != 0 || through != 0 {
			t.Errorf("%s: prunable = (%d, %d], %v; want nothing", when, after, through, err)
		}
		res, err := s.PruneAudit(ctx, before, 1000, pruneEvent(), 100)
		if want := (retention.AuditPrune{Done: true}); err != nil || res != want {
			t.Errorf("%s: prune = %+v, %v; want %+v", when, res, err, want)
		}
		if events, _ := storedSeqs(t, s); len(events) < 4 || events[0] != 1 {
			t.Errorf("%s: stored events %v, want all from 1", when, events)
		}
	}
	check("without a checkpoint")
	// A checkpoint that covers the old events and a young one.
	chainAt(t, s, notary, 1)
	check("with a checkpoint that covers a young event")
	if n, _ := s.SequenceAudit(ctx, 10); n != 0 {
		t.Errorf("pruning nothing recorded %d events", n)
	}
	if rep := exportTrail(t, s); rep.First != 1 || rep.Anchor != nil {
		t.Errorf("export of an unpruned trail: %+v, want it from event 1 without anchor", rep)
	}

	for _, tc := range []struct {
		name  string
		ev    audit.Event
		limit int
	}{
		{"another kind", audit.Event{Kind: audit.KindPurged, Actor: "retention"}, 10},
		{"a message named", audit.Event{Kind: audit.KindAuditPruned, Actor: "retention", MessageID: "m1"}, 10},
		{"no limit", pruneEvent(), 0},
	} {
		_, err := s.PruneAudit(ctx, clock.Now(), 1000, tc.ev, tc.limit)
		wantErr(t, "prune with "+tc.name, err, store.ErrInvalid)
	}
	_, err := s.AuditMessages(ctx, 0, 10, 0)
	wantErr(t, "list the messages of audit events without limit", err, store.ErrInvalid)

	// Once the checkpoint's events are all old, it is the cut.
	if after, through, err := s.AuditPrunable(ctx, clock.Now().Add(time.Second)); err != nil || after != 0 || through != 5 {
		t.Errorf("prunable once all is old = (%d, %d], %v; want (0, 5]", after, through, err)
	}
}

// testAuditPruneKeepsHeld: AuditMessages shows the sweeper every message of the events it may
// prune, purged ones included, and a cut stays below keepFrom, the first event of a held
// message.
func testAuditPruneKeepsHeld(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(pruneEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	notary := newNotary(t)
	// Events 1 to 5: r1 accepted, an event of a message the store does not hold, r2 and r3
	// accepted an hour later, r2 purged an hour after that.
	r1 := NewClockRequest(newPhone(), clock.Now())
	accept(t, s, r1)
	must(t, "append", s.AppendAudit(ctx, audit.Event{Kind: audit.KindAuthFailed, Actor: "patient", MessageID: "no-such-message"}))
	signHead(t, s, notary)
	clock.Advance(time.Hour)
	r2, r3 := NewClockRequest(newPhone(), clock.Now()), NewClockRequest(newPhone(), clock.Now())
	r3.Sender = "sender-2"
	accept(t, s, r2)
	signHead(t, s, notary)
	accept(t, s, r3)
	signHead(t, s, notary)
	clock.Advance(time.Hour)
	must(t, "purge", s.Purge(ctx, r2.MessageID, event(audit.KindPurged)))
	signHead(t, s, notary)
	clock.Advance(time.Hour)

	after, through, err := s.AuditPrunable(ctx, clock.Now())
	if err != nil || after != 0 || through != 5 {
		t.Fatalf("prunable = (%d, %d], %v; want (0, 5]", after, through, err)
	}
	list, err := s.AuditMessages(ctx, after, through, 10)
	must(t, "list the messages of audit events", err)
	want := []retention.AuditMessage{
		{Seq: 1, Message: retention.Message{ID: r1.MessageID, Recipient: r1.Phone, Sender: "sender-1", CreatedAt: pruneEpoch}},
		{Seq: 2, Message: retention.Message{ID: "no-such-message"}, Unknown: true},
		{Seq: 3, Message: retention.Message{ID: r2.MessageID, Recipient: r2.Phone, Sender: "sender-1", CreatedAt: pruneEpoch.Add(time.Hour)}},
		{Seq: 4, Message: retention.Message{ID: r3.MessageID, Recipient: r3.Phone, Sender: "sender-2", CreatedAt: pruneEpoch.Add(time.Hour)}},
		{Seq: 5, Message: retention.Message{ID: r2.MessageID, Recipient: r2.Phone, Sender: "sender-1", CreatedAt: pruneEpoch.Add(time.Hour)}},
	}
	if len(list) != len(want) {
		t.Fatalf("messages of events 1 to 5 = %+v, want %+v", list, want)
	}
	for i := range want {
		got := list[i]
		if got.Seq != want[i].Seq || got.Unknown != want[i].Unknown || got.Message.ID != want[i].Message.ID ||
			got.Message.Recipient != want[i].Message.Recipient || got.Message.Sender != want[i].Message.Sender ||
			!got.Message.CreatedAt.Equal(want[i].Message.CreatedAt) {
			t.Errorf("message of event %d = %+v, want %+v", want[i].Seq, got, want[i])
		}
	}
	if page, err := s.AuditMessages(ctx, 2, 4, 10); err != nil || len(page) != 2 || page[0].Seq != 3 || page[1].Seq != 4 {
		t.Errorf("messages of events 3 to 4 = %+v, %v", page, err)
	}
	if page, err := s.AuditMessages(ctx, 0, 5, 2); err != nil || len(page) != 2 || page[1].Seq != 2 {
		t.Errorf("a page of 2 = %+v, %v", page, err)
	}

	// A hold on r2, purged already (so no candidate of a sweep), keeps its events from 3 on.
	for range 2 {
		res, err := s.PruneAudit(ctx, clock.Now(), 3, pruneEvent(), 100)
		must(t, "prune below the held message", err)
		if res.Anchor != 2 || res.Done != true {
			t.Fatalf("prune below event 3 = %+v, want the cut at checkpoint 2", res)
		}
	}
	held, err := s.MessageEvents(ctx, r2.MessageID)
	must(t, "read the held message's events", err)
	if len(held) != 2 || held[0].Kind != audit.KindAccepted || held[1].Kind != audit.KindPurged {
		t.Errorf("the held message's events = %+v, want its accept and its purge", held)
	}
	signHead(t, s, notary)
	if rep := exportTrail(t, s); rep.First != 3 || rep.Anchor == nil || rep.Anchor.Size != 2 {
		t.Errorf("export = %+v, want it from event 3 after the anchor at 2", rep)
	}
}

// testAuditPruneStoppedMidway: a pruning stopped after any batch (a crash, a lost lease) leaves
// a trail whose export verifies from the anchor; calling again goes on without a second cut or
// record, also when a later cut comes before the first is finished.
func testAuditPruneStoppedMidway(t *testing.T, h harness) {
	ctx := context.Background()
	clock := NewClock(pruneEpoch)
	s := OpenWithClock(t, h.newDatabase(t), clock)
	notary := newNotary(t)
	chainAt(t, s, notary, 10)
	chainAt(t, s, notary, 10)
	clock.Advance(time.Hour)
	chainAt(t, s, notary, 5) // 21-25
	before := pruneEpoch.Add(30 * time.Minute)
	if rep := exportTrail(t, s); rep.First != 1 || rep.Events != 25 {
		t.Fatalf("export before pruning: %+v", rep)
	}

	res, err := s.PruneAudit(ctx, before, 21, pruneEvent(), 3)
	must(t, "prune one batch", err)
	if want := (retention.AuditPrune{Anchor: 20, Cut: true, Deleted: 3}); res != want {
		t.Fatalf("first batch = %+v, want %+v", res, want)
	}
	// Stopped here. The record of the cut is linked and signed as the gateway would.
	signHead(t, s, notary) // 26
	events, _ := storedSeqs(t, s)
	if fmt.Sprint(events) != fmt.Sprint(run(4, 26)) {
		t.Errorf("stored events %v, want an unbroken run from 4: deleted oldest first", events)
	}
	rep := exportTrail(t, s)
	if rep.First != 21 || rep.Anchor == nil || rep.Anchor.Size != 20 || rep.Pruning == nil || rep.Pruning.Seq != 26 {
		t.Fatalf("export mid-pruning: %+v, want it from the anchor at 20", rep)
	}

	deleted := 3
	for i := 0; ; i++ {
		res, err := s.PruneAudit(ctx, before, 21, pruneEvent(), 3)
		must(t, "prune on", err)
		if res.Cut || res.Anchor != 20 {
			t.Fatalf("pruning on cut again: %+v", res)
		}
		deleted += res.Deleted
		exportTrail(t, s)
		if res.Done {
			break
		}
		if i > 20 {
			t.Fatal("pruning never ends")
		}
	}
	events, checkpoints := storedSeqs(t, s)
	if deleted != 20 || fmt.Sprint(events) != fmt.Sprint(run(21, 26)) || fmt.Sprint(checkpoints) != "[20 25 26]" {
		t.Errorf("deleted %d, stored events %v and checkpoints %v; want 20 deleted, 21 to 26 and checkpoints from 20", deleted, events, checkpoints)
	}
	if n, err := s.SequenceAudit(ctx, 10); err != nil || n != 0 {
		t.Errorf("pruning on recorded %d more events (%v), want none", n, err)
	}

	// A later cut while an earlier one is unfinished: the record counts from the first event
	// still stored.
	clock.Advance(time.Hour)
	chainAt(t, s, notary, 2) // 27-28
	res, err = s.PruneAudit(ctx, pruneEpoch, 100, pruneEvent(), 100)
	must(t, "prune with nothing old enough", err)
	if res.Cut || res.Deleted != 0 {
		t.Errorf("prune before the epoch = %+v, want nothing", res)
	}
	clock.Advance(time.Hour)
	res, err = s.PruneAudit(ctx, clock.Now(), 27, pruneEvent(), 2)
	must(t, "cut at 26", err)
	if want := (retention.AuditPrune{Anchor: 26, Cut: true, Deleted: 2}); res != want {
		t.Fatalf("cut at 26 = %+v, want %+v", res, want)
	}
	recorded := sequenceAll(t, s)
	if len(recorded) != 1 || recorded[0].Detail["from"] != "21" || recorded[0].Detail["count"] != "6" {
		t.Errorf("records of the cut at 26 = %+v, want one, from 21, of 6 events", recorded)
	}
	signHead(t, s, notary)
	if rep := exportTrail(t, s); rep.First != 27 || rep.Anchor.Size != 26 || rep.Pruning.Seq != 29 {
		t.Errorf("export after the second cut: %+v, want it from 27, with the cut recorded by event 29", rep)
	}
}
