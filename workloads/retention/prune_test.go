package retention_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// The sweeper prunes audit events against both stores, on a clock the test moves.
func TestSweeperPrunesAudit(t *testing.T) {
	databases := map[string]func(t *testing.T) string{
		"SQLite":     func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "tenant.db") },
		"PostgreSQL": func(t *testing.T) string { return testenv.PostgresDatabase(t) },
	}
	for name, newDatabase := range databases {
		t.Run(name, func(t *testing.T) {
			t.Run("HoldKeepsThenPrunes", func(t *testing.T) { testPruneHoldKeepsThenPrunes(t, newDatabase) })
			t.Run("CrashMidPrune", func(t *testing.T) { testCrashMidPrune(t, newDatabase) })
			t.Run("PruneFailureCounted", func(t *testing.T) { testPruneFailureCounted(t, newDatabase) })
		})
	}
}

var auditKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))

// auditPolicy is policy() with short times: links expire after an hour, content is purged
// after two, audit events are kept for ten.
func auditPolicy() *retention.Policy {
	p := policy()
	p.UnreadLinkExpiry.D, p.ContentPurgeAfter.D, p.AuditRetention.D = time.Hour, 2*time.Hour, 10*time.Hour
	return p
}

// signHead links the pending events and signs the chain head with notary, as the gateway does.
func signHead(t *testing.T, st *store.Store, notary *audit.Notary) {
	t.Helper()
	storetest.LinkAll(t, st)
	if _, _, err := st.CheckpointAudit(context.Background(), notary); err != nil {
		t.Fatal(err)
	}
}

// verifyTrail exports the trail as `securetext audit export` does and verifies it.
func verifyTrail(t *testing.T, st *store.Store) audit.Report {
	t.Helper()
	events, cps, err := st.AuditTrail(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pub := auditKey.Public().(ed25519.PublicKey)
	var buf bytes.Buffer
	if err := audit.Export(&buf, pub, events, cps); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyWithKey(&buf, pub)
	if err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	return rep
}

// pruneRecords returns the audit-pruned events of the trail.
func pruneRecords(t *testing.T, st *store.Store) []audit.Event {
	t.Helper()
	all, err := st.AuditEvents(context.Background(), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(e audit.Event) bool { return e.Kind != audit.KindAuditPruned })
}

// prunableTrail makes a trail whose events 1 to 4 happened at epoch and are signed at 2 and
// at 4: the messages m1, m2 (to phone) and m3, and an operator's action. It returns the store,
// its signer and the message ids.
func prunableTrail(t *testing.T, newDatabase func(*testing.T) string, clock *storetest.Clock, phone string) (*store.Store, *audit.Notary, []string) {
	t.Helper()
	st := storetest.OpenWithClock(t, newDatabase(t), clock)
	notary, err := audit.NewNotary(storetest.Tenant, audit.NewEd25519Signer(auditKey), &audit.MemoryNotaryState{}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{acceptAt(t, st, clock, nil), acceptAt(t, st, clock, func(r *store.AcceptRequest) { r.Phone = phone })}
	signHead(t, st, notary)
	ids = append(ids, acceptAt(t, st, clock, nil))
	if err := st.AppendAudit(context.Background(), audit.Event{Kind: audit.KindAdminAction, Actor: "operator"}); err != nil {
		t.Fatal(err)
	}
	signHead(t, st, notary)
	return st, notary, ids
}

// testPruneHoldKeepsThenPrunes: a hold on a message purged before the hold was placed (no
// candidate of any sweep) keeps its audit events from pruning; once released, a sweep prunes
// up to the newest signed checkpoint older than auditRetention, counts it, and records the cut;
// the export of what remains verifies.
func testPruneHoldKeepsThenPrunes(t *testing.T, newDatabase func(*testing.T) string) {
	ctx := context.Background()
	clock := storetest.NewClock(epoch)
	const phone = "+12025550177"
	st, notary, ids := prunableTrail(t, newDatabase, clock, phone)
	set := &settings{s: retention.Settings{Policy: auditPolicy()}}

	// Three hours on, the messages are purged; nothing is old enough to prune.
	clock.Advance(3 * time.Hour)
	res := sweep(t, newSweeper(t, st, set.get, clock, 10))
	if res.MessagesPurged != 3 || res.AuditEventsPruned != 0 || res.AuditPrunedThrough != 0 {
		t.Fatalf("first sweep: %+v, want 3 purged and no audit event pruned", res)
	}
	signHead(t, st, notary)

	// A hold on m2, which is purged: its events 2 on are kept, and no checkpoint lies below.
	hold := retention.Hold{Name: "matter-9", Reason: "matter 2026-9", Matcher: retention.Matcher{Recipients: []string{phone}}}
	set.set(retention.Settings{Policy: auditPolicy(), Holds: []retention.Hold{hold}})
	clock.Advance(8 * time.Hour)
	res = sweep(t, newSweeper(t, st, set.get, clock, 10))
	if res.AuditEventsPruned != 0 || res.Errors != 0 || len(pruneRecords(t, st)) != 0 {
		t.Fatalf("sweep under the hold: %+v; want no audit event of the held message pruned", res)
	}
	if evs, err := st.MessageEvents(ctx, ids[1]); err != nil || len(evs) == 0 || evs[0].Kind != audit.KindAccepted {
		t.Fatalf("the held message's events: %+v, %v", evs, err)
	}

	// Released: the events up to the checkpoint at 4 go.
	released := hold
	released.ReleasedBy = "compliance@clinic.example"
	set.set(retention.Settings{Policy: auditPolicy(), Released: []retention.Hold{released}})
	clock.Advance(time.Hour)
	res = sweep(t, newSweeper(t, st, set.get, clock, 10))
	if res.AuditEventsPruned != 4 || res.AuditPrunedThrough != 4 || res.Errors != 0 {
		t.Fatalf("sweep after the release: %+v, want 4 audit events pruned through 4", res)
	}
	last, err := st.LastSweep(ctx, retention.RecordName)
	if err != nil || last.AuditEventsPruned != 4 || last.AuditPrunedThrough != 4 {
		t.Errorf("the kept sweep result: %+v, %v; want the pruning counted", last, err)
	}
	signHead(t, st, notary)
	records := pruneRecords(t, st)
	want := map[string]string{"rule": "hipaa-standard", "generation": "3", "anchor": "4", "from": "1", "through": "4", "count": "4"}
	if len(records) != 1 || records[0].Actor != retention.Actor || records[0].MessageID != "" || !equalDetail(records[0].Detail, want) {
		t.Fatalf("records of the pruning: %+v, want one of no message with detail %v", records, want)
	}
	rep := verifyTrail(t, st)
	if rep.First != 5 || rep.Anchor == nil || rep.Anchor.Size != 4 || rep.Pruning == nil || rep.Pruning.Seq != records[0].Seq {
		t.Errorf("export after pruning: %+v, want it from event 5 after the anchor at 4", rep)
	}

	// The next sweep has nothing more to prune.
	clock.Advance(time.Hour)
	if res := sweep(t, newSweeper(t, st, set.get, clock, 10)); res.AuditEventsPruned != 0 || res.AuditPrunedThrough != 4 {
		t.Errorf("the sweep after: %+v, want nothing pruned, the trail still from the anchor at 4", res)
	}
}

func equalDetail(got, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// oneAtATime deletes one audit event per PruneAudit call, so that a sweep prunes in many
// batches; after the first it calls stop, if set, as a pod killed mid-sweep; with fail set,
// every call fails.
type oneAtATime struct {
	*store.Store
	stop func()
	fail error
}

func (o *oneAtATime) PruneAudit(ctx context.Context, before time.Time, keepFrom uint64, ev audit.Event, _ int) (retention.AuditPrune, error) {
	if o.fail != nil {
		return retention.AuditPrune{}, o.fail
	}
	r, err := o.Store.PruneAudit(ctx, before, keepFrom, ev, 1)
	if o.stop != nil {
		o.stop()
	}
	return r, err
}

// testCrashMidPrune: a sweep stopped after its first batch of audit deletions leaves a trail
// that verifies; the next sweep finishes the deleting without a second cut or record.
func testCrashMidPrune(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	st, notary, _ := prunableTrail(t, newDatabase, clock, "+12025550178")
	set := &settings{s: retention.Settings{Policy: auditPolicy()}}
	clock.Advance(11 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crashed := newSweeper(t, &oneAtATime{Store: st, stop: cancel}, set.get, clock, 10)
	res, err := crashed.SweepOnce(ctx)
	if err == nil || res.AuditEventsPruned != 1 || res.AuditPrunedThrough != 4 {
		t.Fatalf("crashed sweep: %+v, %v; want one audit event pruned, then stopped", res, err)
	}
	signHead(t, st, notary)
	if rep := verifyTrail(t, st); rep.First != 5 || rep.Anchor == nil || rep.Anchor.Size != 4 {
		t.Fatalf("export after the crash: %+v, want it from the anchor at 4", rep)
	}

	clock.Advance(retention.DefaultLeaseTTL)
	res = sweep(t, newSweeper(t, &oneAtATime{Store: st}, set.get, clock, 10))
	if res.AuditEventsPruned != 3 || res.Errors != 0 {
		t.Fatalf("the next sweep: %+v, want the other 3 audit events pruned", res)
	}
	signHead(t, st, notary)
	if n := len(pruneRecords(t, st)); n != 1 {
		t.Errorf("%d records of the pruning, want 1", n)
	}
	verifyTrail(t, st)
}

// testPruneFailureCounted: a store call of the pruning that fails counts as an error of the
// sweep, which reports it.
func testPruneFailureCounted(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	st, _, _ := prunableTrail(t, newDatabase, clock, "+12025550179")
	set := &settings{s: retention.Settings{Policy: auditPolicy()}}
	clock.Advance(11 * time.Hour)
	broken := errors.New("database is gone")
	res, err := newSweeper(t, &oneAtATime{Store: st, fail: broken}, set.get, clock, 10).SweepOnce(context.Background())
	if !errors.Is(err, broken) || res.Errors != 1 || res.AuditEventsPruned != 0 {
		t.Errorf("sweep with a failing prune: %+v, %v; want one error", res, err)
	}
}
