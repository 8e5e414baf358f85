package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
)

// How the audit trail is pruned (package audit, prune.go). The trail is cut only at a stored
// signed checkpoint, the anchor (audit_anchor, migration 00007), never inside the stretch a
// checkpoint covers, so that what remains verifies from the anchor's signed head.
//
// One short transaction moves the anchor forward and records the cut as an audit-pruned
// event: both or neither. Further short transactions then delete the events at or below the
// anchor, oldest first, and last the checkpoints older than it. An export starts at the
// anchor (AuditTrail), so it never reads the half-deleted part, and the events still stored
// are always one unbroken run up to the head: a pruning stopped half-way (a crash, a lost
// lease) leaves a trail that verifies, and the next call goes on where it stopped. Deleting
// newest first would instead leave a gap below the anchor, and a certificate of destruction
// or a message's history read from the stranded part would not add up.
//
// Every read that decides where to cut runs outside a transaction, so that SQLite's single
// write lock is held only for the cut itself: chained events never change, so what those reads
// find about them stays true.

// anchorSize is the anchor's size as a subquery: NULL before the first pruning.
const anchorSize = `(SELECT c.size FROM audit_anchor a JOIN audit_checkpoints c ON c.id = a.checkpoint_id)`

// trailPage is how many events AuditTrail reads per query.
const trailPage = 10_000

// scanCheckpoint reads a row of tenant, size, head, signed_at, key_id, signature.
func scanCheckpoint(scan func(dest ...any) error) (audit.Checkpoint, error) {
	var (
		c        audit.Checkpoint
		size     int64
		signedAt string
	)
	if err := scan(&c.Tenant, &size, hashDest{&c.Head}, &signedAt, &c.KeyID, &c.Signature); err != nil {
		return audit.Checkpoint{}, err
	}
	c.Size = uint64(size)
	var err error
	if c.Time, err = time.Parse(checkpointTime, signedAt); err != nil {
		return audit.Checkpoint{}, fmt.Errorf("audit checkpoint at size %d: %w", size, err)
	}
	return c, nil
}

// auditAnchor returns the anchor and its row id in audit_checkpoints; ok is false before the
// first pruning.
func (s *Store) auditAnchor(ctx context.Context) (cp audit.Checkpoint, id int64, ok bool, err error) {
	row := s.db.queryRow(ctx, `SELECT c.id, c.tenant, c.size, c.head, c.signed_at, c.key_id, c.signature
		FROM audit_anchor a JOIN audit_checkpoints c ON c.id = a.checkpoint_id`)
	cp, err = scanCheckpoint(func(dest ...any) error { return row.Scan(append([]any{&id}, dest...)...) })
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Checkpoint{}, 0, false, nil
	}
	if err != nil {
		return audit.Checkpoint{}, 0, false, failed("read the audit trail's anchor", err)
	}
	return cp, id, true, nil
}

// AuditTrail returns what an export of the trail holds (audit.Export): the chained events from
// the start of the trail up to the newest stored checkpoint, and the checkpoints among them,
// oldest first. Once the trail was pruned it starts after the anchor, which is then the first
// checkpoint returned. The reads take no lock: a pruning that moves the anchor meanwhile (and
// may delete events being read) is noticed, as the anchor differs when the reads are done, and
// the reads start over.
func (s *Store) AuditTrail(ctx context.Context) ([]audit.Event, []audit.Checkpoint, error) {
	for range 3 {
		anchor, id, pruned, err := s.auditAnchor(ctx)
		if err != nil {
			return nil, nil, err
		}
		all, err := s.Checkpoints(ctx)
		if err != nil {
			return nil, nil, err
		}
		var cps []audit.Checkpoint
		if pruned {
			cps = append(cps, anchor)
		}
		upTo := anchor.Size
		for _, c := range all {
			if !pruned || c.Size > anchor.Size {
				cps = append(cps, c)
				upTo = max(upTo, c.Size)
			}
		}
		var events []audit.Event
		for after := anchor.Size; after < upTo; {
			page, err := s.AuditEvents(ctx, after, int(min(trailPage, upTo-after)))
			if err != nil {
				return nil, nil, err
			}
			for len(page) > 0 && page[len(page)-1].Seq > upTo {
				page = page[:len(page)-1] // beyond a gap: not covered by a checkpoint
			}
			if len(page) == 0 {
				break
			}
			events = append(events, page...)
			after = page[len(page)-1].Seq
		}
		_, again, _, err := s.auditAnchor(ctx)
		if err != nil {
			return nil, nil, err
		}
		if again != id {
			continue
		}
		end := anchor.Size
		if len(events) > 0 {
			end = events[len(events)-1].Seq
		}
		if end != upTo {
			return nil, nil, failed("read the audit trail",
				fmt.Errorf("%w: the chain ends at event %d but a checkpoint covers %d", ErrConflict, end, upTo))
		}
		return events, cps, nil
	}
	return nil, nil, failed("read the audit trail", fmt.Errorf("%w: it was pruned further while being read, three times; try again", ErrConflict))
}

// AuditPrunable returns the chained events that pruning the events older than before may
// remove: those after the anchor (after; 0 before the first pruning) up to through, the size
// of the newest stored checkpoint after the anchor that covers only events older than before.
// through equals after when no checkpoint qualifies.
func (s *Store) AuditPrunable(ctx context.Context, before time.Time) (after, through uint64, err error) {
	anchor, _, _, err := s.auditAnchor(ctx)
	if err != nil {
		return 0, 0, err
	}
	through, err = s.prunableThrough(ctx, anchor.Size, math.MaxInt64, before)
	if err != nil {
		return 0, 0, failed("find the audit events to prune", err)
	}
	return anchor.Size, through, nil
}

// prunableThrough returns the size of the newest stored checkpoint above after and below
// below such that every chained event after after up to it is older than before, or after
// when there is none.
func (s *Store) prunableThrough(ctx context.Context, after uint64, below int64, before time.Time) (uint64, error) {
	newest, err := s.newestCheckpoint(ctx, after, below)
	if err != nil || newest == 0 {
		return after, err
	}
	// The first event that is not old enough bounds the cut. Events are chained roughly in
	// time order, so the scan reads about as many events as the cut will remove.
	var young int64
	err = s.db.queryRow(ctx, `SELECT seq FROM audit_events WHERE seq > $1 AND seq <= $2 AND occurred_at >= $3 ORDER BY seq LIMIT 1`,
		int64(after), int64(newest), at(before)).Scan(&young)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return newest, nil
	case err != nil:
		return after, err
	}
	cp, err := s.newestCheckpoint(ctx, after, young)
	if err != nil || cp == 0 {
		return after, err
	}
	return cp, nil
}

// newestCheckpoint returns the size of the newest stored checkpoint above after and below
// below, or 0 when there is none.
func (s *Store) newestCheckpoint(ctx context.Context, after uint64, below int64) (uint64, error) {
	var size sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT MAX(size) FROM audit_checkpoints WHERE size > $1 AND size < $2`, int64(after), below).Scan(&size)
	if err != nil || !size.Valid {
		return 0, err
	}
	return uint64(size.Int64), nil
}

// AuditMessages returns up to limit chained events with sequence numbers in (after, through]
// that name a message, in sequence order, each with the message as a legal hold's matcher
// sees it: its id, recipient, sender and creation time. An event whose message the store does
// not hold carries the id only, and Unknown.
func (s *Store) AuditMessages(ctx context.Context, after, through uint64, limit int) ([]retention.AuditMessage, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list the messages of audit events: %w: limit must be positive", ErrInvalid)
	}
	rows, err := s.db.query(ctx, `SELECT e.seq, e.message_id, m.id, r.phone, m.sender, m.created_at
		FROM audit_events e
		LEFT JOIN messages m ON m.id = e.message_id
		LEFT JOIN recipients r ON r.id = m.recipient_id
		WHERE e.seq > $1 AND e.seq <= $2 AND e.message_id IS NOT NULL
		ORDER BY e.seq LIMIT $3`, int64(after), int64(min(through, math.MaxInt64)), limit)
	if err != nil {
		return nil, failed("list the messages of audit events", err)
	}
	defer rows.Close()
	var list []retention.AuditMessage
	for rows.Next() {
		var (
			am     retention.AuditMessage
			seq    int64
			stored string
		)
		if err := rows.Scan(&seq, &am.Message.ID, stringDest{&stored}, stringDest{&am.Message.Recipient}, stringDest{&am.Message.Sender},
			timeDest{&am.Message.CreatedAt}); err != nil {
			return nil, failed("list the messages of audit events", err)
		}
		am.Seq, am.Unknown = uint64(seq), stored == ""
		list = append(list, am)
	}
	if err := rows.Err(); err != nil {
		return nil, failed("list the messages of audit events", err)
	}
	return list, nil
}

// PruneAudit removes audit events older than before, up to a signed checkpoint, in steps that
// each commit on their own; call it until it reports Done. It first moves the anchor to the
// newest stored checkpoint that covers only events older than before and lies below keepFrom,
// the first event that must be kept (the first event of a held message, say), if that is
// beyond the anchor; that cut is recorded, in the same transaction, as ev (an audit-pruned
// event naming no message, its detail completed by audit.PruneDetail). Then it deletes up to
// limit of the events at or below the anchor, oldest first, and, once none is left, up to
// limit of the checkpoints older than the anchor. The anchor itself is never deleted: an
// export starts with it.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, keepFrom uint64, ev audit.Event, limit int) (retention.AuditPrune, error) {
	if limit <= 0 {
		return retention.AuditPrune{}, fmt.Errorf("prune audit events: %w: limit must be positive", ErrInvalid)
	}
	if ev.Kind != audit.KindAuditPruned || ev.MessageID != "" {
		return retention.AuditPrune{}, fmt.Errorf("prune audit events: %w: the cut is recorded by an %s event naming no message", ErrInvalid, audit.KindAuditPruned)
	}
	anchor, _, pruned, err := s.auditAnchor(ctx)
	if err != nil {
		return retention.AuditPrune{}, err
	}
	res := retention.AuditPrune{Anchor: anchor.Size}
	target, err := s.prunableThrough(ctx, anchor.Size, int64(min(keepFrom, math.MaxInt64)), before)
	if err != nil {
		return res, failed("find the audit events to prune", err)
	}
	if target > anchor.Size {
		if res.Cut, err = s.cutAudit(ctx, target, ev); err != nil {
			return res, err
		}
		if res.Cut {
			res.Anchor, pruned = target, true
		}
	}
	if !pruned {
		res.Done = true
		return res, nil
	}
	res.Deleted, res.Done, err = s.deletePruned(ctx, limit)
	return res, err
}

// cutAudit moves the anchor to the checkpoint at size, unless it is there or beyond already,
// and records ev with the cut's detail, in one transaction. It reports whether it moved it.
func (s *Store) cutAudit(ctx context.Context, size uint64, ev audit.Event) (bool, error) {
	var cut bool
	err := s.db.inTx(ctx, func(q querier) error {
		cut = false
		var (
			id         int64
			head, hash [32]byte
		)
		if err := q.queryRow(ctx, `SELECT id, head FROM audit_checkpoints WHERE size = $1 ORDER BY id LIMIT 1`, int64(size)).
			Scan(&id, hashDest{&head}); err != nil {
			return fmt.Errorf("read checkpoint %d: %w", size, noRows(err))
		}
		// The remaining trail verifies from the anchor only if its first event links to the
		// anchor's head.
		if err := q.queryRow(ctx, `SELECT hash FROM audit_events WHERE seq = $1`, int64(size)).Scan(hashDest{&hash}); err != nil {
			return fmt.Errorf("read event %d: %w", size, noRows(err))
		}
		if hash != head {
			return fmt.Errorf("%w: checkpoint %d does not match the chain", ErrConflict, size)
		}
		n, err := q.exec(ctx, `INSERT INTO audit_anchor (singleton, checkpoint_id) VALUES (true, $1)
			ON CONFLICT (singleton) DO UPDATE SET checkpoint_id = excluded.checkpoint_id
			WHERE (SELECT size FROM audit_checkpoints WHERE id = audit_anchor.checkpoint_id) < $2`, id, int64(size))
		if err != nil || n == 0 {
			return err // n == 0: another pruning moved the anchor as far or farther
		}
		var from int64
		if err := q.queryRow(ctx, `SELECT MIN(seq) FROM audit_events`).Scan(&from); err != nil {
			return fmt.Errorf("read the first stored event: %w", err)
		}
		ev.Detail = audit.PruneDetail(ev.Detail, uint64(from), size)
		record, err := s.pending(ev)
		if err != nil {
			return err
		}
		if err := q.batch(ctx, []step{record}); err != nil {
			return err
		}
		cut = true
		return nil
	})
	if err != nil {
		return false, failed(fmt.Sprintf("cut the audit trail at checkpoint %d", size), err)
	}
	return cut, nil
}

// deletePruned deletes, in one transaction, up to limit events at or below the anchor, oldest
// first, and once none is left, up to limit checkpoints older than the anchor. done reports
// that nothing at or below the anchor is left but the anchor.
func (s *Store) deletePruned(ctx context.Context, limit int) (deleted int, done bool, err error) {
	err = s.db.inTx(ctx, func(q querier) error {
		deleted, done = 0, false
		n, err := q.exec(ctx, `DELETE FROM audit_events WHERE `+
			s.db.idIn("seq", `SELECT seq FROM audit_events WHERE seq <= `+anchorSize+` ORDER BY seq LIMIT $1`), limit)
		if err != nil || n == int64(limit) {
			deleted = int(n)
			return err
		}
		m, err := q.exec(ctx, `DELETE FROM audit_checkpoints WHERE `+
			s.db.idIn("id", `SELECT id FROM audit_checkpoints WHERE size < `+anchorSize+` ORDER BY size, id LIMIT $1`), limit)
		deleted, done = int(n), m < int64(limit)
		return err
	})
	if err != nil {
		return 0, false, failed("delete pruned audit events", err)
	}
	return deleted, done, nil
}
