package retention

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// AuditMessage is a chained audit event of a message, as the sweeper checks it against the
// legal holds before pruning (Store.AuditMessages).
type AuditMessage struct {
	Seq     uint64
	Message Message
	// Unknown means that the store holds no message of that id: Message carries the id only.
	Unknown bool
}

// AuditPrune says what one Store.PruneAudit call did.
type AuditPrune struct {
	// Anchor is the size of the signed checkpoint the trail starts after; 0 while it was never
	// pruned.
	Anchor uint64
	// Cut reports that the call moved the anchor and recorded the cut (an audit-pruned event).
	Cut bool
	// Deleted is how many events the call deleted.
	Deleted int
	// Done reports that nothing at or below the anchor is left but the anchor itself.
	Done bool
}

// auditPruneBatch is how many audit events one transaction deletes. Audit rows are small and
// carry no content, so a batch of them takes about as long as a batch of message purges.
const auditPruneBatch = 2000

// pruneAudit removes the audit events older than the policy's auditRetention, up to the newest
// signed checkpoint that covers only such events, and records the cut in the trail
// (Store.PruneAudit). A hold wins: the cut stays below the first event of any message that an
// active hold matches. Deleting is done in short transactions, renewing the lease after each,
// as the other phases do; a sweep stopped half-way leaves a trail that verifies from its anchor,
// and the next sweep finishes the deleting.
func (s *Sweeper) pruneAudit(ctx context.Context, res *Result, set Settings, p *Policy, rule map[string]string) error {
	fail := func(err error) error {
		res.Errors++
		return fmt.Errorf("retention sweep: prune audit events: %w", err)
	}
	before := res.Started.Add(-p.AuditRetention.D)
	after, through, err := s.cfg.Store.AuditPrunable(ctx, before)
	if err != nil {
		return fail(err)
	}
	keepFrom := through + 1
	if through > after {
		if keepFrom, err = s.firstHeldEvent(ctx, set, after, through); err != nil {
			return fail(err)
		}
	}
	ev := audit.Event{Kind: audit.KindAuditPruned, Actor: Actor, Detail: rule}
	for {
		began := time.Now()
		r, err := s.cfg.Store.PruneAudit(ctx, before, keepFrom, ev, auditPruneBatch)
		res.AuditEventsPruned += r.Deleted
		res.AuditPrunedThrough = max(res.AuditPrunedThrough, r.Anchor)
		if err != nil {
			return fail(err)
		}
		if r.Cut {
			s.log.Info("retention sweep: audit trail cut at a signed checkpoint", "anchor", r.Anchor, "rule", p.Name)
		}
		if r.Done {
			return nil
		}
		if err := s.pause(ctx, time.Since(began)); err != nil {
			return err
		}
		if err := s.renewLease(ctx, res); err != nil {
			return err
		}
	}
}

// firstHeldEvent returns the sequence number of the first event in (after, through] of a
// message that an active hold matches, or through+1 when there is none. The store lists the
// message of every event in that range, whether the message is a candidate of this sweep or
// not: a message purged before a hold was placed on it is no candidate, and the hold still
// keeps its audit events.
func (s *Sweeper) firstHeldEvent(ctx context.Context, set Settings, after, through uint64) (uint64, error) {
	if len(set.Holds) == 0 {
		return through + 1, nil
	}
	for {
		page, err := s.cfg.Store.AuditMessages(ctx, after, through, auditPruneBatch)
		if err != nil {
			return 0, err
		}
		for _, am := range page {
			if held(set, am) {
				return am.Seq, nil
			}
		}
		if len(page) < auditPruneBatch {
			return through + 1, nil
		}
		after = page[len(page)-1].Seq
	}
}

// held reports whether an active hold matches, or may match, the message of am. Of a message
// known by its id only, a hold that lists message ids matches only if it lists that one; any
// other hold may match on what is not known, so it keeps the event.
func held(set Settings, am AuditMessage) bool {
	if !am.Unknown {
		return len(set.HeldBy(am.Message)) > 0
	}
	return slices.ContainsFunc(set.Holds, func(h Hold) bool {
		return len(h.Matcher.MessageIDs) == 0 || slices.Contains(h.Matcher.MessageIDs, am.Message.ID)
	})
}
