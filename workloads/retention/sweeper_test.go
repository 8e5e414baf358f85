package retention_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// The sweeper runs against both stores, on a clock the test moves.
func TestSweeper(t *testing.T) {
	databases := map[string]func(t *testing.T) string{
		"SQLite":     func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "tenant.db") },
		"PostgreSQL": func(t *testing.T) string { return testenv.PostgresDatabase(t) },
	}
	for name, newDatabase := range databases {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				test func(*testing.T, func(*testing.T) string)
			}{
				{"ExpireThenPurgeOnSchedule", testExpireThenPurgeOnSchedule},
				{"HoldsKeepUntilReleased", testHoldsKeepUntilReleased},
				{"CrashMidSweep", testCrashMidSweep},
				{"ConcurrentSweepers", testConcurrentSweepers},
				{"NoPolicy", testNoPolicy},
				{"RunReleasesLease", testRunReleasesLease},
				{"HoldEventsRecordedOnce", testHoldEventsRecordedOnce},
				{"KeyTrimReachesBackups", testKeyTrimReachesBackups},
				{"KeyFloorWaitsForSettle", testKeyFloorWaitsForSettle},
			} {
				t.Run(tc.name, func(t *testing.T) { tc.test(t, newDatabase) })
			}
		})
	}
}

var epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func policy() *retention.Policy {
	return &retention.Policy{Name: "hipaa-standard", Generation: 3,
		UnreadLinkExpiry: retention.Duration{D: 72 * time.Hour}, ContentPurgeAfter: retention.Duration{D: 720 * time.Hour},
		AuditRetention: retention.Duration{D: 52608 * time.Hour}, SweepInterval: retention.Duration{D: time.Hour},
		KeyRotationPeriod: retention.Duration{D: 720 * time.Hour}}
}

// settings are settings a test changes between sweeps.
type settings struct {
	mu sync.Mutex
	s  retention.Settings
}

func (s *settings) get() retention.Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}

func (s *settings) set(v retention.Settings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s = v
}

func newSweeper(t *testing.T, st retention.Store, set func() retention.Settings, clock *storetest.Clock, batch int) *retention.Sweeper {
	t.Helper()
	sw, err := retention.NewSweeper(retention.SweeperConfig{Store: st, Settings: set, Holder: "gateway-0", Clock: clock.Now, BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

func sweep(t *testing.T, sw *retention.Sweeper) retention.Result {
	t.Helper()
	res, err := sw.SweepOnce(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	return res
}

func acceptAt(t *testing.T, s *store.Store, clock *storetest.Clock, change func(*store.AcceptRequest)) string {
	t.Helper()
	r := storetest.NewClockRequest(fmt.Sprintf("+1202555%04d", time.Now().UnixNano()%10000), clock.Now())
	if change != nil {
		change(&r)
	}
	if _, err := s.AcceptMessage(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r.MessageID
}

// events links the pending audit events and counts each message's events of each kind.
func events(t *testing.T, s *store.Store) map[string]map[audit.Kind]int {
	t.Helper()
	all := storetest.ChainedEvents(t, s)
	byMessage := map[string]map[audit.Kind]int{}
	for _, e := range all {
		if byMessage[e.MessageID] == nil {
			byMessage[e.MessageID] = map[audit.Kind]int{}
		}
		byMessage[e.MessageID][e.Kind]++
		if (e.Kind == audit.KindExpired || e.Kind == audit.KindPurged) &&
			(e.Actor != retention.Actor || e.Detail["rule"] != "hipaa-standard" || e.Detail["generation"] != "3") {
			t.Errorf("sweep event %+v does not name the rule and its generation", e)
		}
	}
	return byMessage
}

// purged reports whether message id is purged, failing the test if it is half purged.
func purged(t *testing.T, s *store.Store, id string) bool {
	t.Helper()
	ctx := context.Background()
	m, err := s.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := s.MessageParts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	gone := m.Status == store.StatusPurged
	if gone != (m.WrappedKey == "") || gone != (len(parts) == 0) {
		t.Fatalf("message %s is half purged: status %s, wrapped key set %v, %d parts", id, m.Status, m.WrappedKey != "", len(parts))
	}
	return gone
}

func status(t *testing.T, s *store.Store, id string) store.Status {
	t.Helper()
	m, err := s.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m.Status
}

func testExpireThenPurgeOnSchedule(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	id := acceptAt(t, s, clock, nil)
	read := acceptAt(t, s, clock, nil)
	if err := s.Transition(context.Background(), read, store.StatusRead, audit.Event{Kind: audit.KindRevealed, Actor: "patient"}); err != nil {
		t.Fatal(err)
	}
	set := retention.Settings{Policy: policy()}
	sw := newSweeper(t, s, func() retention.Settings { return set }, clock, 0)

	clock.Advance(72*time.Hour - time.Second)
	if res := sweep(t, sw); res.LinksExpired != 0 || res.MessagesPurged != 0 || status(t, s, id) != store.StatusAccepted {
		t.Fatalf("a second before the link expires: %+v, status %s", res, status(t, s, id))
	}
	clock.Advance(time.Second)
	res := sweep(t, sw)
	if res.LinksExpired != 1 || res.MessagesPurged != 0 || status(t, s, id) != store.StatusExpired || status(t, s, read) != store.StatusRead {
		t.Fatalf("when the link expires: %+v; statuses %s and %s, want expired, and read kept", res, status(t, s, id), status(t, s, read))
	}
	if res.Policy != "hipaa-standard" || res.Generation != 3 || !res.Started.Equal(clock.Now()) || res.Skipped != "" {
		t.Errorf("result %+v does not name the rule or the time", res)
	}

	clock.Advance(720*time.Hour - 72*time.Hour - time.Second)
	if res := sweep(t, sw); res.MessagesPurged != 0 || purged(t, s, id) {
		t.Fatalf("a second before the purge: %+v", res)
	}
	clock.Advance(time.Second)
	if res := sweep(t, sw); res.MessagesPurged != 2 || res.LinksExpired != 0 || !purged(t, s, id) || !purged(t, s, read) {
		t.Fatalf("when content is due for purge: %+v", res)
	}
	if res := sweep(t, sw); res.MessagesPurged != 0 || res.LinksExpired != 0 {
		t.Errorf("a sweep after everything is done: %+v", res)
	}
	// Store reads refuse what is gone; the metadata row stays.
	if err := s.AddReply(context.Background(), store.Reply{ID: store.NewID(), MessageID: id, Ciphertext: []byte("x")}, 5,
		audit.Event{Kind: audit.KindReplied, Actor: "patient"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("reply to a purged message: %v, want ErrConflict", err)
	}
	ev := events(t, s)
	if ev[id][audit.KindExpired] != 1 || ev[id][audit.KindPurged] != 1 || ev[read][audit.KindExpired] != 0 || ev[read][audit.KindPurged] != 1 {
		t.Errorf("events %v and %v; want expired and purged once, and the read message purged once", ev[id], ev[read])
	}
}

func testHoldsKeepUntilReleased(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	both := acceptAt(t, s, clock, func(r *store.AcceptRequest) { r.Phone, r.Sender = "+12025550143", "lab-system" })
	byLab := acceptAt(t, s, clock, func(r *store.AcceptRequest) { r.Sender = "lab-system" })
	free := acceptAt(t, s, clock, nil)
	clock.Advance(72 * time.Hour)
	young := acceptAt(t, s, clock, func(r *store.AcceptRequest) { r.Phone = "+12025550143" })

	patientHold := retention.Hold{Name: "matter-patient", Reason: "case 1", Matcher: retention.Matcher{Recipients: []string{"+12025550143"}}}
	labHold := retention.Hold{Name: "matter-lab", Reason: "case 2", Matcher: retention.Matcher{Senders: []string{"LAB-SYSTEM"}}}
	var set settings
	set.set(retention.Settings{Policy: policy(), Holds: []retention.Hold{patientHold, labHold}})
	sw := newSweeper(t, s, set.get, clock, 0)

	// The first three links are due; young was accepted just now.
	res := sweep(t, sw)
	if res.LinksExpired != 1 || res.MessagesHeld != 2 || !maps.Equal(res.HeldByHold, map[string]int{"matter-patient": 1, "matter-lab": 2}) {
		t.Errorf("links sweep with holds: %+v; want free expired, two held", res)
	}
	// The first three are due for purge, young's link is due.
	clock.Advance(720*time.Hour - 72*time.Hour)
	res = sweep(t, sw)
	if res.MessagesPurged != 1 || res.LinksExpired != 0 || res.MessagesHeld != 3 ||
		!maps.Equal(res.HeldByHold, map[string]int{"matter-patient": 2, "matter-lab": 2}) {
		t.Errorf("purge sweep with holds: %+v; want free purged, three held, the holds adding up", res)
	}
	for _, id := range []string{both, byLab, young} {
		if purged(t, s, id) || status(t, s, id) != store.StatusAccepted {
			t.Errorf("held message %s was touched: %s", id, status(t, s, id))
		}
	}
	if !purged(t, s, free) {
		t.Error("the message no hold matches was not purged")
	}

	// The lab hold is released: its message goes at the next sweep, not before; the message
	// both holds matched is still held by the other.
	set.set(retention.Settings{Policy: policy(), Holds: []retention.Hold{patientHold}})
	if purged(t, s, byLab) {
		t.Fatal("released hold: purged before a sweep")
	}
	clock.Advance(time.Hour)
	res = sweep(t, sw)
	if res.MessagesPurged != 1 || res.LinksExpired != 1 || res.MessagesHeld != 2 || !maps.Equal(res.HeldByHold, map[string]int{"matter-patient": 2}) {
		t.Errorf("sweep after the lab hold's release: %+v", res)
	}
	if !purged(t, s, byLab) || purged(t, s, both) || purged(t, s, young) {
		t.Error("after the lab hold's release, its message alone should be purged")
	}

	// Every hold is released; young's content is due three days later.
	set.set(retention.Settings{Policy: policy()})
	clock.Advance(72 * time.Hour)
	if res := sweep(t, sw); res.MessagesPurged != 2 || res.MessagesHeld != 0 || len(res.HeldByHold) != 0 {
		t.Errorf("sweep after every hold is released: %+v", res)
	}
	ev := events(t, s)
	for _, id := range []string{both, byLab, free, young} {
		if ev[id][audit.KindExpired] != 1 || ev[id][audit.KindPurged] != 1 {
			t.Errorf("message %s: events %v, want expired and purged once", id, ev[id])
		}
	}
}

// crashingStore cancels the sweep after its first purge batch commits, as a pod killed
// between two batches would stop.
type crashingStore struct {
	*store.Store
	cancel  context.CancelFunc
	batches int
}

func (c *crashingStore) PurgeMessages(ctx context.Context, ids []string, ev audit.Event) (int, error) {
	n, err := c.Store.PurgeMessages(ctx, ids, ev)
	if c.batches++; c.batches == 1 {
		c.cancel()
	}
	return n, err
}

func testCrashMidSweep(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	var ids []string
	for range 7 {
		ids = append(ids, acceptAt(t, s, clock, nil))
	}
	set := func() retention.Settings { return retention.Settings{Policy: policy()} }
	clock.Advance(720 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	crashed := newSweeper(t, &crashingStore{Store: s, cancel: cancel}, set, clock, 2)
	res, err := crashed.SweepOnce(ctx)
	if !errors.Is(err, context.Canceled) || res.MessagesPurged != 2 || res.LinksExpired != 7 {
		t.Fatalf("crashed sweep: %+v, %v; want 7 expired and one batch of 2 purged, then cancelled", res, err)
	}
	n := 0
	for _, id := range ids {
		if purged(t, s, id) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d messages purged by the crashed sweep, want 2", n)
	}

	// The crashed sweeper still holds the lease: its successor waits until it runs out.
	successor := newSweeper(t, s, set, clock, 2)
	if res := sweep(t, successor); res.Skipped != retention.SkipLeaseHeld || res.MessagesPurged != 0 {
		t.Fatalf("sweep while the crashed sweeper's lease runs: %+v", res)
	}
	clock.Advance(retention.DefaultLeaseTTL)
	if res := sweep(t, successor); res.Skipped != "" || res.MessagesPurged != 5 || res.LinksExpired != 0 {
		t.Fatalf("sweep after the lease ran out: %+v; want the other 5 purged", res)
	}
	ev := events(t, s)
	for _, id := range ids {
		if !purged(t, s, id) || ev[id][audit.KindPurged] != 1 || ev[id][audit.KindExpired] != 1 {
			t.Errorf("message %s: events %v, want expired and purged once", id, ev[id])
		}
	}
}

func testConcurrentSweepers(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	dsn := newDatabase(t)
	replicas := []*store.Store{storetest.OpenWithClock(t, dsn, clock), storetest.OpenWithClock(t, dsn, clock)}
	var ids []string
	for range 30 {
		ids = append(ids, acceptAt(t, replicas[0], clock, nil))
	}
	set := func() retention.Settings { return retention.Settings{Policy: policy()} }
	clock.Advance(720 * time.Hour)

	results := make([]retention.Result, 4)
	var wg sync.WaitGroup
	for i := range results {
		sw := newSweeper(t, replicas[i%2], set, clock, 4)
		wg.Go(func() {
			var err error
			if results[i], err = sw.SweepOnce(context.Background()); err != nil {
				t.Errorf("sweeper %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	ran, expired, purgedN := 0, 0, 0
	for _, r := range results {
		if r.Skipped == "" {
			ran++
		} else if r.Skipped != retention.SkipLeaseHeld {
			t.Errorf("a sweeper skipped for %q", r.Skipped)
		}
		expired, purgedN = expired+r.LinksExpired, purgedN+r.MessagesPurged
	}
	if ran != 1 || expired != 30 || purgedN != 30 {
		t.Errorf("%d sweepers ran, expiring %d and purging %d; want one, expiring and purging 30", ran, expired, purgedN)
	}
	// The sweep that ran is the tenant's last sweep, whichever replica reads it; the skipped
	// sweepers left it alone.
	for i, r := range replicas {
		last, err := r.LastSweep(context.Background(), retention.RecordName)
		if err != nil {
			t.Fatalf("replica %d reads the last sweep: %v", i, err)
		}
		if last.Skipped != "" || last.LinksExpired != 30 || last.MessagesPurged != 30 || last.Policy != "hipaa-standard" ||
			last.Generation != 3 || !last.Finished.Equal(clock.Now()) {
			t.Errorf("replica %d reads the last sweep as %+v, want the one that expired and purged 30", i, last)
		}
	}
	ev := events(t, replicas[1])
	for _, id := range ids {
		if !purged(t, replicas[1], id) || ev[id][audit.KindPurged] != 1 || ev[id][audit.KindExpired] != 1 {
			t.Errorf("message %s: events %v, want expired and purged once", id, ev[id])
		}
	}
}

func testNoPolicy(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	id := acceptAt(t, s, clock, nil)
	clock.Advance(10000 * time.Hour)
	sw := newSweeper(t, s, func() retention.Settings { return retention.Settings{} }, clock, 0)
	if res := sweep(t, sw); res.Skipped != retention.SkipNoPolicy || res.LinksExpired != 0 || res.MessagesPurged != 0 {
		t.Errorf("sweep without a policy: %+v", res)
	}
	bad := policy()
	bad.ContentPurgeAfter.D = 0 // would purge everything at once
	sw = newSweeper(t, s, func() retention.Settings { return retention.Settings{Policy: bad} }, clock, 0)
	if res, err := sw.SweepOnce(context.Background()); err == nil || res.Skipped != retention.SkipInvalidPolicy {
		t.Errorf("sweep with an invalid policy: %+v, %v", res, err)
	}
	if status(t, s, id) != store.StatusAccepted {
		t.Errorf("message swept without a valid policy: %s", status(t, s, id))
	}
}

// Run sweeps at once, keeps the lease until the next sweep is due, and gives it up when it stops.
func testRunReleasesLease(t *testing.T, newDatabase func(*testing.T) string) {
	clock := storetest.NewClock(epoch)
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	acceptAt(t, s, clock, nil)
	clock.Advance(72 * time.Hour)
	sw := newSweeper(t, s, func() retention.Settings { return retention.Settings{Policy: policy()} }, clock, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sw.Run(ctx); close(done) }()
	testenv.Eventually(t, "the first sweep", func() error {
		if sw.Last().LinksExpired != 1 {
			return errors.New("no sweep yet")
		}
		return nil
	})
	// A minute before the next sweep is due, the turn is still the running sweeper's.
	clock.Advance(59 * time.Minute)
	if held, err := s.AcquireLease(context.Background(), retention.LeaseName, "other", clock.Now().Add(time.Minute)); err != nil || held {
		t.Errorf("another sweeper took the lease between sweeps: %v, %v", held, err)
	}
	cancel()
	<-done
	if held, err := s.AcquireLease(context.Background(), retention.LeaseName, "other", clock.Now().Add(time.Minute)); err != nil || !held {
		t.Errorf("after Run stopped, another sweeper could not take the lease: %v, %v", held, err)
	}
}

// testHoldEventsRecordedOnce: each hold's placement and release enters the audit trail once,
// with who did it, however many sweeps and sweepers see it; a hold placed and released between
// two sweeps gets both events.
func testHoldEventsRecordedOnce(t *testing.T, newDatabase func(*testing.T) string) {
	dsn := newDatabase(t)
	clock := storetest.NewClock(epoch)
	st := storetest.OpenWithClock(t, dsn, clock)
	other := storetest.OpenWithClock(t, dsn, clock) // another replica's connection
	placed := epoch.Add(-time.Hour)
	matter := retention.Hold{Name: "matter-117", UID: "uid-117", Reason: "matter 2026-117",
		Matcher: retention.Matcher{MessageIDs: []string{"m1"}}, PlacedBy: "alice@clinic.example", PlacedAt: &placed}
	brief := retention.Hold{Name: "matter-118", Reason: "matter 2026-118", Matcher: retention.Matcher{MessageIDs: []string{"m2"}},
		ReleasedBy: "bob@clinic.example"}
	set := &settings{s: retention.Settings{Policy: policy(), Holds: []retention.Hold{matter}, Released: []retention.Hold{brief}}}

	if res := sweep(t, newSweeper(t, st, set.get, clock, 10)); res.HoldEvents != 3 {
		t.Errorf("first sweep recorded %d hold events, want 3 (matter-117 applied, matter-118 applied and released)", res.HoldEvents)
	}
	clock.Advance(2 * time.Hour)
	if res := sweep(t, newSweeper(t, other, set.get, clock, 10)); res.HoldEvents != 0 {
		t.Errorf("another replica's sweep recorded %d hold events again", res.HoldEvents)
	}
	released := matter
	released.ReleasedBy = "carol@clinic.example"
	set.set(retention.Settings{Policy: policy(), Released: []retention.Hold{released, brief}})
	clock.Advance(2 * time.Hour)
	if res := sweep(t, newSweeper(t, st, set.get, clock, 10)); res.HoldEvents != 1 {
		t.Errorf("the release of matter-117 recorded %d events, want 1", res.HoldEvents)
	}

	all := storetest.ChainedEvents(t, st)
	type got struct{ kind, hold, actor string }
	var holds []got
	for _, e := range all {
		if e.Kind == audit.KindHoldApplied || e.Kind == audit.KindHoldReleased {
			holds = append(holds, got{string(e.Kind), e.Detail["hold"], e.Actor})
			if e.Kind == audit.KindHoldApplied && e.Detail["hold"] == "matter-117" &&
				(e.Detail["uid"] != "uid-117" || e.Detail["reason"] != "matter 2026-117" || e.Detail["placed_at"] != "2026-03-01T08:00:00Z") {
				t.Errorf("hold-applied of matter-117 lacks its uid, reason or time: %v", e.Detail)
			}
		}
	}
	want := []got{
		{"hold-applied", "matter-117", "alice@clinic.example"},
		{"hold-applied", "matter-118", "unrecorded"},
		{"hold-released", "matter-118", "bob@clinic.example"},
		{"hold-released", "matter-117", "carol@clinic.example"},
	}
	if fmt.Sprint(holds) != fmt.Sprint(want) {
		t.Errorf("hold events\n got %v\nwant %v", holds, want)
	}
}
