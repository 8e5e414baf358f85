package retention

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
)

// Store is what the sweeper needs of the tenant's store (*store.Store implements it).
type Store interface {
	// AcquireLease gives lease name to holder until until if it is free, ran out, or is
	// holder's already, and reports whether holder holds it.
	AcquireLease(ctx context.Context, name, holder string, until time.Time) (bool, error)
	// ReleaseLease ends holder's lease name now.
	ReleaseLease(ctx context.Context, name, holder string) error
	// ExpiryCandidates and PurgeCandidates list up to limit messages created at or before
	// createdBy whose link still works, or whose content is still stored, in (CreatedAt, ID)
	// order after after.
	ExpiryCandidates(ctx context.Context, createdBy time.Time, after Message, limit int) ([]Message, error)
	PurgeCandidates(ctx context.Context, createdBy time.Time, after Message, limit int) ([]Message, error)
	// ExpireMessages and PurgeMessages expire, or purge, those of ids that still need it, with
	// ev audited for each, in one transaction, and return how many they changed.
	ExpireMessages(ctx context.Context, ids []string, ev audit.Event) (int, error)
	PurgeMessages(ctx context.Context, ids []string, ev audit.Event) (int, error)
	// RecordHoldEvent audits ev (hold-applied or hold-released) of the hold keyed holdKey
	// unless it was recorded before, and reports whether it did.
	RecordHoldEvent(ctx context.Context, holdKey string, ev audit.Event) (bool, error)
	// SaveSweep keeps r as the last sweep of name (RecordName) for every replica to report,
	// unless a sweep that finished later is kept already.
	SaveSweep(ctx context.Context, name string, r Result) error
	// AuditPrunable returns the chained audit events that pruning the events older than before
	// may remove, (after, through]: after the anchor, up to the newest signed checkpoint that
	// covers only such events. AuditMessages lists up to limit events of that range that name
	// a message, in sequence order, with their messages. PruneAudit cuts the trail at the
	// newest such checkpoint below keepFrom, recording ev, and deletes up to limit events at
	// or below the cut, oldest first; it is called until it reports Done.
	AuditPrunable(ctx context.Context, before time.Time) (after, through uint64, err error)
	AuditMessages(ctx context.Context, after, through uint64, limit int) ([]AuditMessage, error)
	PruneAudit(ctx context.Context, before time.Time, keepFrom uint64, ev audit.Event, limit int) (AuditPrune, error)
	// KeyStore is what the key step needs (keys.go).
	KeyStore
}

// LeaseName is the store lease that makes one sweeper of a tenant's replicas the active one.
const LeaseName = "retention-sweep"

// RecordName is the name the last sweep is kept under in the store (Store.SaveSweep).
const RecordName = "retention-sweep"

// Actor is the audit actor of the sweeper's events.
const Actor = "retention"

// Defaults of SweeperConfig.
const (
	DefaultBatchSize = 500
	DefaultLeaseTTL  = 2 * time.Minute
)

// pollInterval is how often Run looks at the settings: a new or changed policy takes effect
// within it.
const pollInterval = time.Minute

// Why a sweep did not run (Result.Skipped).
const (
	SkipNoPolicy      = "no-policy"      // the settings name no policy
	SkipInvalidPolicy = "invalid-policy" // the policy breaks the CRD's rules; nothing is disposed of
	SkipLeaseHeld     = "lease-held"     // another replica's sweeper holds the lease
)

// SweeperConfig configures NewSweeper.
type SweeperConfig struct {
	Store Store
	// Settings returns the current settings (Source.Settings); it is read once per sweep.
	Settings func() Settings
	// Holder names this sweeper in the lease, e.g. the pod name; a random suffix makes two
	// sweepers of one process distinct.
	Holder string
	// Clock is the time the sweeper compares against (default time.Now); pass the store's.
	Clock func() time.Time
	// BatchSize is how many messages one transaction expires or purges (default 500): short
	// transactions, so that intake never waits long behind a sweep.
	BatchSize int
	// LeaseTTL is how long the lease outlives a sweeper that stops renewing it (a crash):
	// renewed after every batch (default 2 minutes).
	LeaseTTL time.Duration
	// Keys, when set, lets the sweep move stored data keys to newer versions of the wrapping
	// key and report which versions may be destroyed (keys.go): the keystore's Client in a
	// cluster. Without it purge events name no key version bound.
	Keys keystore.KeyRing
	// Metrics, when set, records each sweep (NewMetrics).
	Metrics *Metrics
	// Pause is how long the sweeper waits after each batch, as a multiple of the time the
	// batch took (default 0: none). The sweep then leaves the database to intake for that
	// share of the time: a batch slowed down by a busy database is followed by a longer pause.
	Pause  float64
	Logger *slog.Logger
}

// Result says what one sweep did. Counts are of messages; a message that several holds keep
// counts once in MessagesHeld and once for each hold in HeldByHold. The sweeper that ran a
// sweep keeps its Result in the store (Store.SaveSweep) as JSON, and the gateway's status
// endpoint serves it so: it names no message and no patient.
type Result struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Skipped says why no sweep ran (SkipNoPolicy, …); "" when it ran, also if it stopped
	// early (then SweepOnce returned an error).
	Skipped string `json:"skipped,omitempty"`
	// Policy and Generation name the rule applied.
	Policy     string `json:"policy,omitempty"`
	Generation int64  `json:"generation,omitempty"`

	LinksExpired   int            `json:"linksExpired"`
	MessagesPurged int            `json:"messagesPurged"`
	MessagesHeld   int            `json:"messagesHeld"`         // due for expiry or purge, but kept by a hold
	HeldByHold     map[string]int `json:"heldByHold,omitempty"` // by hold name
	// MessagesSkipped were listed but had moved on when locked: read, revoked, or expired or
	// purged already by another sweeper.
	MessagesSkipped int `json:"messagesSkipped"`
	// HoldEvents counts the hold-applied and hold-released events this sweep recorded.
	HoldEvents int `json:"holdEvents"`
	// AuditEventsPruned counts the audit events deleted as older than auditRetention;
	// AuditPrunedThrough is the size of the signed checkpoint the audit trail now starts
	// after (0 while it was never pruned).
	AuditEventsPruned  int    `json:"auditEventsPruned"`
	AuditPrunedThrough uint64 `json:"auditPrunedThrough,omitempty"`
	// Keys is what the key step found and did; nil without SweeperConfig.Keys, or when the
	// sweep stopped before the key holder answered.
	Keys   *KeyStatus `json:"keys,omitempty"`
	Errors int        `json:"errors"` // failed store and keystore calls; each is logged
}

// Sweeper expires unread links and purges content as the tenant's policy says, never touching
// a message that a legal hold matches. Run sweeps on the policy's interval, whatever the
// traffic; several replicas can run one each, and a lease in the store lets one sweep at a
// time. Every step is safe to repeat: a sweep stopped half-way (a crash, a lost lease) leaves
// each message either done, with its audit event, or untouched.
type Sweeper struct {
	cfg    SweeperConfig
	holder string
	log    *slog.Logger
	now    func() time.Time
	after  func(time.Duration) <-chan time.Time

	mu   sync.Mutex
	last Result
}

// NewSweeper returns a sweeper; Run or SweepOnce start it.
func NewSweeper(cfg SweeperConfig) (*Sweeper, error) {
	if cfg.Store == nil || cfg.Settings == nil || cfg.Holder == "" {
		return nil, errors.New("retention sweeper: need a store, settings and a holder name")
	}
	if cfg.BatchSize < 0 || cfg.LeaseTTL < 0 || cfg.Pause < 0 {
		return nil, errors.New("retention sweeper: batch size, lease TTL and pause must not be negative")
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	s := &Sweeper{cfg: cfg, log: cfg.Logger, now: cfg.Clock, after: time.After}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	s.holder = cfg.Holder + "/" + hex.EncodeToString(suffix[:])
	return s, nil
}

// Holder is the name this sweeper holds the lease under.
func (s *Sweeper) Holder() string { return s.holder }

// Last returns the result of the last sweep that ran or was skipped, for status and metrics.
func (s *Sweeper) Last() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.last
	r.HeldByHold = maps.Clone(r.HeldByHold)
	return r
}

// Run sweeps when the policy's sweepInterval has passed since the last sweep began (the
// first at once), until ctx ends; then it releases the lease. A sweep that fails is tried
// again a minute later. Failures are logged.
func (s *Sweeper) Run(ctx context.Context) {
	defer s.release(ctx)
	var due time.Time // zero: sweep as soon as there is a policy
	for {
		wait := pollInterval
		if p := s.cfg.Settings().Policy; p != nil {
			if !s.now().Before(due) {
				res, err := s.SweepOnce(ctx)
				due = res.Started.Add(p.SweepInterval.D)
				if err != nil {
					due = s.now().Add(pollInterval)
				}
			}
			wait = min(max(due.Sub(s.now()), 0), pollInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.after(wait):
		}
	}
}

// save keeps res in the store as the tenant's last sweep, also when ctx ended mid-sweep; a
// failure is logged, and the status keeps showing the sweep before.
func (s *Sweeper) save(ctx context.Context, res Result) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.cfg.Store.SaveSweep(ctx, RecordName, res); err != nil {
		s.log.Warn("retention sweeper: keep the sweep's result for status", "error", err)
	}
}

// release gives the lease up as the sweeper stops, so that another replica's sweeper need not
// wait for it to run out.
func (s *Sweeper) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.cfg.Store.ReleaseLease(ctx, LeaseName, s.holder); err != nil {
		s.log.Warn("retention sweeper: release lease", "error", err)
	}
}

// SweepOnce sweeps now, if the settings name a valid policy and no other sweeper holds the
// lease: it expires the links of unread messages created unreadLinkExpiry or longer ago, then
// purges the content of messages created contentPurgeAfter or longer ago, batch by batch,
// skipping every message a hold matches. After a full sweep it keeps the lease until the next
// sweep is due, so that other replicas' sweepers wait their turn. It returns an error if a
// store call failed or ctx ended; Result counts what was done until then.
func (s *Sweeper) SweepOnce(ctx context.Context) (res Result, err error) {
	set := s.cfg.Settings()
	res = Result{Started: s.now(), HeldByHold: map[string]int{}}
	ran := false // this sweeper held the lease: its result is the tenant's last sweep
	defer func() {
		res.Finished = s.now()
		if ran {
			s.save(ctx, res)
		}
		s.mu.Lock()
		s.last = res
		s.last.HeldByHold = maps.Clone(res.HeldByHold)
		s.mu.Unlock()
		s.report(res, err)
		s.cfg.Metrics.observe(res, err)
	}()
	p := set.Policy
	if p == nil {
		res.Skipped = SkipNoPolicy
		return res, nil
	}
	res.Policy, res.Generation = p.Name, p.Generation
	if err := p.Validate(); err != nil {
		// Parse validates too: this catches settings built in code.
		res.Skipped = SkipInvalidPolicy
		return res, err
	}
	held, err := s.cfg.Store.AcquireLease(ctx, LeaseName, s.holder, res.Started.Add(s.cfg.LeaseTTL))
	if err != nil {
		res.Errors++
		return res, fmt.Errorf("take the retention sweep lease: %w", err)
	}
	if !held {
		res.Skipped = SkipLeaseHeld
		return res, nil
	}
	ran = true

	var versions keystore.KeyVersions
	if s.cfg.Keys != nil {
		if versions, err = s.startKeys(ctx, &res); err != nil {
			return res, err
		}
	}
	if err := s.recordHolds(ctx, &res, set); err != nil {
		return res, err
	}

	detail := map[string]string{"rule": p.Name}
	if p.Generation != 0 {
		detail["generation"] = strconv.FormatInt(p.Generation, 10)
	}
	purgeDetail := maps.Clone(detail)
	if res.Keys != nil {
		// The message's data key was wrapped by this version or an older one: once the versions
		// up to it are destroyed (a key-versions-destroyed event with a higher min_version), no
		// copy of the database can be decrypted.
		purgeDetail["key_version_max"] = strconv.Itoa(res.Keys.Latest)
	}
	expireBy := res.Started.Add(-p.UnreadLinkExpiry.D)
	purgeBy := res.Started.Add(-p.ContentPurgeAfter.D)

	// Links first, so that an unread message purged in the same sweep (a sweeper that was down
	// for a while) is audited as expired, then purged, as it would have been on time. A held
	// message that is also due for purge is counted by the purge phase only.
	err = s.phase(ctx, &res, set, phase{
		what: "expire links", list: s.cfg.Store.ExpiryCandidates, createdBy: expireBy, done: &res.LinksExpired,
		act: func(ctx context.Context, ids []string) (int, error) {
			return s.cfg.Store.ExpireMessages(ctx, ids, audit.Event{Kind: audit.KindExpired, Actor: Actor, Detail: detail})
		},
		countHeld: func(m Message) bool { return m.CreatedAt.After(purgeBy) },
	})
	if err == nil {
		err = s.phase(ctx, &res, set, phase{
			what: "purge content", list: s.cfg.Store.PurgeCandidates, createdBy: purgeBy, done: &res.MessagesPurged,
			act: func(ctx context.Context, ids []string) (int, error) {
				return s.cfg.Store.PurgeMessages(ctx, ids, audit.Event{Kind: audit.KindPurged, Actor: Actor, Detail: purgeDetail})
			},
			countHeld: func(Message) bool { return true },
		})
	}
	if err == nil && s.cfg.Keys != nil {
		err = s.rewrapKeys(ctx, &res, versions)
	}
	// Audit events older than auditRetention go up to a signed checkpoint (prune.go).
	if err == nil {
		err = s.pruneAudit(ctx, &res, set, p, detail)
	}
	if err != nil {
		return res, err
	}
	// Keep the turn until the next sweep is due; losing the lease meanwhile is no error.
	if _, lerr := s.cfg.Store.AcquireLease(ctx, LeaseName, s.holder, s.now().Add(p.SweepInterval.D)); lerr != nil {
		res.Errors++
		s.log.Warn("retention sweeper: keep lease until the next sweep", "error", lerr)
	}
	return res, nil
}

// phase is one pass of a sweep over the candidates of one kind.
type phase struct {
	what      string
	list      func(ctx context.Context, createdBy time.Time, after Message, limit int) ([]Message, error)
	createdBy time.Time
	act       func(ctx context.Context, ids []string) (int, error)
	done      *int
	// countHeld says whether a held candidate counts as held in this phase.
	countHeld func(Message) bool
}

// errLeaseLost stops a sweep whose lease another sweeper took over.
var errLeaseLost = errors.New("the retention sweep lease was taken over by another sweeper")

// phase lists the candidates of ph page by page, leaves out those a hold matches, and acts on
// the rest, renewing the lease after every batch. A batch that fails is counted and logged,
// and the sweep goes on with the next one; a list that fails ends the phase.
func (s *Sweeper) phase(ctx context.Context, res *Result, set Settings, ph phase) error {
	var after Message
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := ph.list(ctx, ph.createdBy, after, s.cfg.BatchSize)
		if err != nil {
			res.Errors++
			return fmt.Errorf("retention sweep: %s: %w", ph.what, err)
		}
		ids := make([]string, 0, len(batch))
		for _, m := range batch {
			holds := set.HeldBy(m)
			if len(holds) == 0 {
				ids = append(ids, m.ID)
				continue
			}
			if ph.countHeld(m) {
				res.MessagesHeld++
				for _, h := range holds {
					res.HeldByHold[h]++
				}
			}
		}
		if len(ids) > 0 {
			began := time.Now()
			n, err := ph.act(ctx, ids)
			took := time.Since(began)
			if err != nil {
				res.Errors++
				if ctx.Err() != nil {
					return err
				}
				// Ids only: they name no patient.
				s.log.Warn("retention sweep: batch failed; the next sweep tries again", "step", ph.what,
					"messages", len(ids), "first_message_id", ids[0], "error", err)
			}
			*ph.done += n
			if err == nil {
				res.MessagesSkipped += len(ids) - n
			}
			if err := s.pause(ctx, took); err != nil {
				return err
			}
		}
		if len(batch) < s.cfg.BatchSize {
			return nil
		}
		after = batch[len(batch)-1]
		if err := s.renewLease(ctx, res); err != nil {
			return err
		}
	}
}

// pause waits the configured multiple of took, the time a batch took (SweeperConfig.Pause).
func (s *Sweeper) pause(ctx context.Context, took time.Duration) error {
	pause := time.Duration(s.cfg.Pause * float64(took))
	if pause <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.after(pause):
		return nil
	}
}

// renewLease extends the sweep lease after a batch; it fails when another sweeper took it over.
func (s *Sweeper) renewLease(ctx context.Context, res *Result) error {
	held, err := s.cfg.Store.AcquireLease(ctx, LeaseName, s.holder, s.now().Add(s.cfg.LeaseTTL))
	if err != nil {
		res.Errors++
		return fmt.Errorf("retention sweep: renew lease: %w", err)
	}
	if !held {
		return errLeaseLost
	}
	return nil
}

// report logs a sweep's result: counts, hold names and the rule, no message or patient data.
// maxReasonLength bounds a hold's reason in its audit event: a matter or case number, not a
// document.
const maxReasonLength = 200

// recordHolds audits, once each, the placement of every hold in set and the release of every
// released one, with who did it as the API server authenticated them ("unrecorded" where the
// cluster did not record it). A hold created and released between two sweeps gets both events.
func (s *Sweeper) recordHolds(ctx context.Context, res *Result, set Settings) error {
	record := func(h Hold, kind audit.Kind, by string, detail map[string]string) error {
		key := h.UID
		if key == "" {
			key = "name:" + h.Name
		}
		detail["hold"] = h.Name
		if h.UID != "" {
			detail["uid"] = h.UID
		}
		ev := audit.Event{Kind: kind, Actor: cmp.Or(by, "unrecorded"), Detail: detail}
		done, err := s.cfg.Store.RecordHoldEvent(ctx, key, ev)
		if err != nil {
			res.Errors++
			return fmt.Errorf("record %s of legal hold %s: %w", kind, h.Name, err)
		}
		if done {
			res.HoldEvents++
		}
		return nil
	}
	applied := func(h Hold) error {
		detail := map[string]string{"reason": truncate(h.Reason, maxReasonLength)}
		if h.PlacedAt != nil {
			detail["placed_at"] = h.PlacedAt.UTC().Format(time.RFC3339)
		}
		return record(h, audit.KindHoldApplied, h.PlacedBy, detail)
	}
	for _, h := range set.Holds {
		if err := applied(h); err != nil {
			return err
		}
	}
	for _, h := range set.Released {
		if err := applied(h); err != nil {
			return err
		}
		if err := record(h, audit.KindHoldReleased, h.ReleasedBy, map[string]string{}); err != nil {
			return err
		}
	}
	return nil
}

// truncate cuts s to at most n runes.
func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

func (s *Sweeper) report(res Result, err error) {
	attrs := []any{
		"policy", res.Policy, "generation", res.Generation,
		"links_expired", res.LinksExpired, "messages_purged", res.MessagesPurged,
		"messages_held", res.MessagesHeld, "held_by_hold", res.HeldByHold,
		"messages_skipped", res.MessagesSkipped, "hold_events", res.HoldEvents, "errors", res.Errors,
		"duration", res.Finished.Sub(res.Started),
	}
	switch {
	case err != nil:
		s.log.Error("retention sweep failed", append(attrs, "skipped", res.Skipped, "error", err)...)
	case res.Skipped == SkipLeaseHeld:
		s.log.Debug("retention sweep skipped: another replica sweeps", "holder", s.holder)
	case res.Skipped != "":
		s.log.Info("retention sweep skipped", "reason", res.Skipped)
	default:
		s.log.Info("retention sweep done", attrs...)
	}
}
