package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

var signingKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// sequenceAll links every pending event and returns the events it linked.
func sequenceAll(t *testing.T, s *store.Store) []audit.Event {
	t.Helper()
	ctx := context.Background()
	from, _, err := s.AuditHead(ctx)
	must(t, "read audit head", err)
	for {
		n, err := s.SequenceAudit(ctx, 50)
		must(t, "sequence audit events", err)
		if n == 0 {
			break
		}
	}
	events, err := s.AuditEvents(ctx, from, 1_000_000)
	must(t, "read audit events", err)
	return events
}

// verifyChain checks that events are the whole chain, linked and hashed, with head at the end,
// and that an export with a checkpoint signed now verifies.
func verifyChain(t *testing.T, s *store.Store, events []audit.Event) {
	t.Helper()
	ctx := context.Background()
	var prev [32]byte
	for i, e := range events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: the chain is not contiguous", i+1, e.Seq)
		}
		if e.PrevHash != prev {
			t.Fatalf("event %d does not link to event %d: the chain forked", e.Seq, e.Seq-1)
		}
		if e.LeafHash() != e.Hash {
			t.Fatalf("event %d does not re-hash to its stored hash", e.Seq)
		}
		if e.Tenant != Tenant {
			t.Fatalf("event %d has tenant %q", e.Seq, e.Tenant)
		}
		prev = e.Hash
	}
	seq, head, err := s.AuditHead(ctx)
	must(t, "read audit head", err)
	if seq != uint64(len(events)) || head != prev {
		t.Fatalf("head = %d %x, want %d %x", seq, head[:4], len(events), prev[:4])
	}

	cp, err := audit.SignCheckpoint(ctx, audit.NewEd25519Signer(signingKey), Tenant, seq, head, time.Now())
	must(t, "sign checkpoint", err)
	must(t, "save checkpoint", s.SaveCheckpoint(ctx, cp))
	cps, err := s.Checkpoints(ctx)
	must(t, "read checkpoints", err)
	var buf bytes.Buffer
	must(t, "export", audit.Export(&buf, signingKey.Public().(ed25519.PublicKey), events, cps))
	rep, err := audit.VerifyWithKey(&buf, signingKey.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatalf("verify export: %v", err)
	}
	if rep.Events != len(events) || rep.Head != head {
		t.Fatalf("verified %d events up to %x, want %d up to %x", rep.Events, rep.Head[:4], len(events), head[:4])
	}
}

func testAuditChainVerifies(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	// Nanoseconds and a local zone: the store must store what it hashes.
	zone := time.FixedZone("UTC-5", -5*3600)
	at := time.Date(2025, 3, 1, 7, 0, 0, 123456789, zone)
	must(t, "append", s.AppendAudit(ctx,
		audit.Event{Time: at, Kind: audit.KindAuthFailed, Actor: "patient", MessageID: "m1", Detail: map[string]string{"reason": "bad-password"}},
		audit.Event{Time: at.Add(time.Nanosecond), Kind: audit.KindKeyRotated, Actor: "operator", Detail: map[string]string{"version": "2"}},
		audit.Event{Kind: audit.KindAdminAction, Actor: "admin@example.com"}, // no time, no message, no detail
	))
	for range 5 {
		accept(t, s, NewRequest(newPhone()))
	}
	must(t, "append", s.AppendAudit(ctx, audit.Event{Time: at, Kind: audit.KindHoldApplied, Actor: "compliance", Detail: map[string]string{"hold": "case-17", "empty": ""}}))

	events := sequenceAll(t, s)
	if len(events) != 9 {
		t.Fatalf("chained %d events, want 9", len(events))
	}
	first := events[0]
	if !first.Time.Equal(at.Truncate(time.Microsecond)) || first.Kind != audit.KindAuthFailed || first.Actor != "patient" ||
		first.MessageID != "m1" || first.Detail["reason"] != "bad-password" {
		t.Errorf("first event = %+v", first)
	}
	if third := events[2]; third.Time.IsZero() || third.MessageID != "" || len(third.Detail) != 0 {
		t.Errorf("third event = %+v, want a time, no message, no detail", third)
	}
	verifyChain(t, s, events)

	// Pages of the chain.
	page, err := s.AuditEvents(ctx, 3, 4)
	must(t, "read a page", err)
	if len(page) != 4 || page[0].Seq != 4 || page[3].Seq != 7 || page[0].Hash != events[3].Hash {
		t.Errorf("page after 3 = %d events starting at %d", len(page), page[0].Seq)
	}

	// The chain continues across sequencer runs.
	must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction)))
	more := sequenceAll(t, s)
	if len(more) != 1 || more[0].Seq != 10 || more[0].PrevHash != events[8].Hash {
		t.Fatalf("next run chained %+v, want event 10 after event 9", more)
	}
	verifyChain(t, s, append(events, more...))
}

func testAuditRefusesInvalid(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	err := s.AppendAudit(ctx, event(audit.KindAdminAction), audit.Event{Kind: "hacked", Actor: "x"})
	wantErr(t, "append an unknown kind", err, store.ErrInvalid)
	err = s.AppendAudit(ctx, audit.Event{Kind: audit.KindAdminAction})
	wantErr(t, "append without actor", err, store.ErrInvalid)
	if n, err := s.SequenceAudit(ctx, 100); err != nil || n != 0 {
		t.Errorf("refused appends left %d events (%v), want none: the valid one must not be stored alone", n, err)
	}
	_, err = s.SequenceAudit(ctx, 0)
	wantErr(t, "sequence zero", err, store.ErrInvalid)
}

func testAuditConcurrentSequencers(t *testing.T, h harness) {
	ctx := context.Background()
	s, dsn := h.open(t)
	replica := Open(t, dsn)
	const writers, batches, perBatch, sequencers = 4, 15, 5, 4

	var (
		wg, seqWG sync.WaitGroup
		done      atomic.Bool
		mu        sync.Mutex
		errs      []error
	)
	report := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for i := range sequencers {
		st := []*store.Store{s, replica}[i%2]
		seqWG.Go(func() {
			for !done.Load() {
				if _, err := st.SequenceAudit(ctx, 7); err != nil {
					report(err)
					return
				}
			}
		})
	}
	for w := range writers {
		st := []*store.Store{s, replica}[w%2]
		wg.Go(func() {
			for b := range batches {
				events := make([]audit.Event, perBatch)
				for i := range events {
					events[i] = audit.Event{Kind: audit.KindAdminAction, Actor: fmt.Sprintf("writer-%d", w),
						Detail: map[string]string{"batch": fmt.Sprint(b), "i": fmt.Sprint(i)}}
				}
				if err := st.AppendAudit(ctx, events...); err != nil {
					report(err)
					return
				}
				if b%5 == 0 {
					if _, err := st.AcceptMessage(ctx, NewRequest(newPhone())); err != nil {
						report(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	seqWG.Wait()
	for _, err := range errs {
		t.Errorf("concurrent work: %v", err)
	}

	sequenceAll(t, replica)
	events, err := s.AuditEvents(ctx, 0, 1_000_000)
	must(t, "read audit events", err)
	want := writers*batches*perBatch + writers*(batches/5)
	if len(events) != want {
		t.Fatalf("chained %d events, want %d", len(events), want)
	}
	verifyChain(t, s, events)
}

func testAuditCheckpoints(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	signer := audit.NewEd25519Signer(signingKey)
	pub := signingKey.Public().(ed25519.PublicKey)
	must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction), event(audit.KindAdminAction), event(audit.KindAdminAction)))
	events := sequenceAll(t, s)

	// Stored exactly as signed, nanoseconds included.
	signedAt := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	cp2, err := audit.SignCheckpoint(ctx, signer, Tenant, 2, events[1].Hash, signedAt)
	must(t, "sign", err)
	cp3, err := audit.SignCheckpoint(ctx, signer, Tenant, 3, events[2].Hash, signedAt.Add(time.Second))
	must(t, "sign", err)
	must(t, "save checkpoint 3", s.SaveCheckpoint(ctx, cp3))
	must(t, "save checkpoint 2", s.SaveCheckpoint(ctx, cp2))
	cps, err := s.Checkpoints(ctx)
	must(t, "read checkpoints", err)
	if len(cps) != 2 || cps[0].Size != 2 || cps[1].Size != 3 {
		t.Fatalf("checkpoints = %+v, want sizes 2, 3", cps)
	}
	for _, c := range cps {
		if err := audit.VerifyCheckpoint(pub, c); err != nil {
			t.Errorf("stored checkpoint %d: %v", c.Size, err)
		}
	}
	if !cps[0].Time.Equal(signedAt) || cps[0].KeyID != cp2.KeyID {
		t.Errorf("checkpoint 2 = %+v, want time %v", cps[0], signedAt)
	}

	wrong, err := audit.SignCheckpoint(ctx, signer, Tenant, 2, events[2].Hash, signedAt)
	must(t, "sign", err)
	wantErr(t, "save a checkpoint that matches no chain", s.SaveCheckpoint(ctx, wrong), store.ErrConflict)
	beyond, err := audit.SignCheckpoint(ctx, signer, Tenant, 4, events[2].Hash, signedAt)
	must(t, "sign", err)
	wantErr(t, "save a checkpoint beyond the head", s.SaveCheckpoint(ctx, beyond), store.ErrNotFound)
	other, err := audit.SignCheckpoint(ctx, signer, "clinic-b", 3, events[2].Hash, signedAt)
	must(t, "sign", err)
	wantErr(t, "save another tenant's checkpoint", s.SaveCheckpoint(ctx, other), store.ErrInvalid)
}

func testReopenIsNoOp(t *testing.T, h harness) {
	ctx := context.Background()
	s, dsn := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)
	sequenceAll(t, s)
	s.Close()

	again := Open(t, dsn)
	m, err := again.Message(ctx, r.MessageID)
	must(t, "read message after reopening", err)
	if m.ID != r.MessageID {
		t.Errorf("message = %+v", m)
	}
	seq, _, err := again.AuditHead(ctx)
	must(t, "read head", err)
	if seq != 1 {
		t.Errorf("head after reopening = %d, want 1", seq)
	}
	accept(t, again, NewRequest(newPhone()))
}

func testOtherTenantRefused(t *testing.T, h harness) {
	_, dsn := h.open(t)
	s, err := store.Open(context.Background(), dsn, "clinic-b")
	if err == nil {
		s.Close()
	}
	wantErr(t, "open another tenant's database", err, store.ErrConflict)
}

func newNotary(t *testing.T) *audit.Notary {
	n, err := audit.NewNotary(Tenant, audit.NewEd25519Signer(signingKey), &audit.MemoryNotaryState{}, nil)
	must(t, "new notary", err)
	return n
}

// testAuditRewriteRefused: a signer that signed one chain refuses every other chain of the
// tenant, shorter, as long, or longer, and keeps its last checkpoint. The second database
// stands for the first one rewritten by someone with write access to it: events deleted and
// the chain re-linked from genesis (event hashes use no key).
func testAuditRewriteRefused(t *testing.T, h harness) {
	ctx := context.Background()
	notary := newNotary(t)
	honest, _ := h.open(t)
	for range 5 {
		must(t, "append", honest.AppendAudit(ctx, event(audit.KindAdminAction)))
	}
	sequenceAll(t, honest)
	signed, ok, err := honest.CheckpointAudit(ctx, notary)
	if err != nil || !ok || signed.Size != 5 {
		t.Fatalf("checkpoint of the honest chain: size %d signed=%v err=%v", signed.Size, ok, err)
	}

	for _, n := range []int{3, 5, 7} {
		forged, _ := h.open(t)
		for i := range n {
			ev := event(audit.KindAdminAction)
			ev.Detail = map[string]string{"forged": fmt.Sprint(i)}
			must(t, "append", forged.AppendAudit(ctx, ev))
		}
		sequenceAll(t, forged)
		if cp, ok, err := forged.CheckpointAudit(ctx, notary); !errors.Is(err, audit.ErrNotExtension) || ok {
			t.Errorf("rewritten chain of %d events: signed=%v (size %d) err=%v; want a refusal wrapping ErrNotExtension", n, ok, cp.Size, err)
		}
		if cps, err := forged.Checkpoints(ctx); err != nil || len(cps) != 0 {
			t.Errorf("rewritten chain of %d events holds checkpoints %v (%v); want none", n, cps, err)
		}
	}
	last, _, err := notary.LastCheckpoint(ctx)
	if err != nil || last.Size != signed.Size || last.Head != signed.Head {
		t.Fatalf("the signer's last checkpoint is size %d (%v), want the honest one at %d", last.Size, err, signed.Size)
	}
	// The honest chain still extends.
	must(t, "append", honest.AppendAudit(ctx, event(audit.KindAdminAction)))
	sequenceAll(t, honest)
	if cp, ok, err := honest.CheckpointAudit(ctx, notary); err != nil || !ok || cp.Size != 6 {
		t.Fatalf("checkpoint after the honest chain grew: size %d signed=%v err=%v", cp.Size, ok, err)
	}
}

// testAuditCheckpointBacklog: a chain longer than one extension is signed in steps, each
// stored, the last at the head.
func testAuditCheckpointBacklog(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	batch := make([]audit.Event, audit.MaxExtension/2+1)
	for i := range batch {
		batch[i] = event(audit.KindAdminAction)
	}
	for range 3 {
		must(t, "append", s.AppendAudit(ctx, batch...))
	}
	events := sequenceAll(t, s)
	cp, ok, err := s.CheckpointAudit(ctx, newNotary(t))
	if err != nil || !ok || cp.Size != uint64(len(events)) {
		t.Fatalf("checkpoint of %d events: size %d signed=%v err=%v", len(events), cp.Size, ok, err)
	}
	cps, err := s.Checkpoints(ctx)
	must(t, "read checkpoints", err)
	if want := (len(events) + audit.MaxExtension - 1) / audit.MaxExtension; len(cps) != want {
		t.Fatalf("%d checkpoints stored, want %d (one per extension of at most %d events)", len(cps), want, audit.MaxExtension)
	}
}

// testAuditCheckpointHead: CheckpointAudit signs the head once, and again only after the
// chain grows; the signature verifies.
func testAuditCheckpointHead(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	signer := newNotary(t)
	pub := signingKey.Public().(ed25519.PublicKey)
	if _, signed, err := s.CheckpointAudit(ctx, signer); err != nil || signed {
		t.Fatalf("checkpoint of an empty chain: signed=%v err=%v; want nothing to sign", signed, err)
	}
	must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction), event(audit.KindAdminAction)))
	events := sequenceAll(t, s)
	cp, signed, err := s.CheckpointAudit(ctx, signer)
	must(t, "checkpoint", err)
	if !signed || cp.Size != 2 || cp.Head != events[1].Hash {
		t.Fatalf("checkpoint = size %d signed=%v, want size 2 at the head", cp.Size, signed)
	}
	must(t, "verify checkpoint", audit.VerifyCheckpoint(pub, cp))
	if _, signed, err := s.CheckpointAudit(ctx, signer); err != nil || signed {
		t.Fatalf("second checkpoint of an unchanged head: signed=%v err=%v", signed, err)
	}
	must(t, "append", s.AppendAudit(ctx, event(audit.KindAdminAction)))
	sequenceAll(t, s)
	if cp, signed, err := s.CheckpointAudit(ctx, signer); err != nil || !signed || cp.Size != 3 {
		t.Fatalf("checkpoint after growth: size %d signed=%v err=%v; want size 3", cp.Size, signed, err)
	}
}

// LinkAll chains every pending audit event of s, as the gateway's sequencer does.
func LinkAll(t testing.TB, s *store.Store) {
	t.Helper()
	for {
		n, err := s.SequenceAudit(context.Background(), 1000)
		if err != nil {
			t.Fatalf("link pending audit events: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

// ChainedEvents chains every pending audit event of s and returns the whole chain.
func ChainedEvents(t testing.TB, s *store.Store) []audit.Event {
	t.Helper()
	LinkAll(t, s)
	events, err := s.AuditEvents(context.Background(), 0, 1_000_000)
	if err != nil {
		t.Fatalf("read audit events: %v", err)
	}
	return events
}
