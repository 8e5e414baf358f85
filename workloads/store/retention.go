package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/retention"
)

// What package retention's sweeper asks of the store: candidates in created_at order, read in
// keyset pages from partial indexes (migration 00005), expiry and purge of many messages in one
// short transaction each, and a lease that gives the sweep to one replica at a time.
//
// The sweeper decides which candidates legal holds keep; the store re-checks each message's
// status under its row lock, so that a message read, revoked, expired or purged since it was
// listed is left alone and audited once, whoever else is sweeping.

// unreadCondition and unpurgedCondition are the conditions of the partial indexes
// messages_unread_idx and messages_unpurged_idx, spelled as in migration 00005: SQLite uses a
// partial index only for a query that repeats its condition.
const (
	unreadCondition   = `status IN ('accepted', 'notified', 'delivered', 'failed', 'opened')`
	unpurgedCondition = `status <> 'purged'`
)

// ExpiryCandidates returns up to limit messages created at or before createdBy whose link still
// works (not read, not expired, revoked or purged), in (created_at, id) order after after (the
// last message of the previous page; the zero Message starts at the oldest).
func (s *Store) ExpiryCandidates(ctx context.Context, createdBy time.Time, after retention.Message, limit int) ([]retention.Message, error) {
	return s.candidates(ctx, "list messages to expire", unreadCondition, createdBy, after, limit)
}

// PurgeCandidates returns up to limit messages created at or before createdBy whose content is
// still stored (not purged), in (created_at, id) order after after, as ExpiryCandidates.
func (s *Store) PurgeCandidates(ctx context.Context, createdBy time.Time, after retention.Message, limit int) ([]retention.Message, error) {
	return s.candidates(ctx, "list messages to purge", unpurgedCondition, createdBy, after, limit)
}

func (s *Store) candidates(ctx context.Context, what, condition string, createdBy time.Time, after retention.Message, limit int) ([]retention.Message, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%s: %w: limit must be positive", what, ErrInvalid)
	}
	// The recipient's phone is read per row, by its primary key: a join would make SQLite
	// match the partial index's condition against an aliased column, which it does not.
	rows, err := s.db.query(ctx, `SELECT id, (SELECT phone FROM recipients WHERE recipients.id = messages.recipient_id),
			sender, created_at, wrapped_key
		FROM messages
		WHERE `+condition+` AND created_at <= $1 AND (created_at, id) > ($2, $3)
		ORDER BY created_at, id LIMIT $4`,
		at(createdBy), at(after.CreatedAt), after.ID, limit)
	if err != nil {
		return nil, failed(what, err)
	}
	defer rows.Close()
	var list []retention.Message
	for rows.Next() {
		var m retention.Message
		if err := rows.Scan(&m.ID, &m.Recipient, &m.Sender, timeDest{&m.CreatedAt}, stringDest{&m.WrappedKey}); err != nil {
			return nil, failed(what, err)
		}
		list = append(list, m)
	}
	if err := rows.Err(); err != nil {
		return nil, failed(what, err)
	}
	return list, nil
}

// ExpireMessages expires those of messages ids whose link still works (not read, not in a final
// status): their status becomes expired, a notification not yet sent is cancelled, and ev is
// audited for each (its MessageID filled in, a zero Time is now), in one transaction. It
// returns how many it expired; the others had moved on or do not exist.
func (s *Store) ExpireMessages(ctx context.Context, ids []string, ev audit.Event) (int, error) {
	n, err := s.changeMessages(ctx, ids, ev, unreadCondition, func(set messageSet, now time.Time) []step {
		return s.setStatus(set, StatusExpired, now)
	})
	if err != nil {
		return 0, failed(fmt.Sprintf("expire %d messages", len(ids)), err)
	}
	return n, nil
}

// PurgeMessages purges those of messages ids that are not purged yet, as Purge does each, and
// audits ev for each, in one transaction. It returns how many it purged: a message purged
// already (by another sweeper, say) is left alone and gets no second event.
func (s *Store) PurgeMessages(ctx context.Context, ids []string, ev audit.Event) (int, error) {
	n, err := s.changeMessages(ctx, ids, ev, unpurgedCondition, s.purgeSteps)
	if err != nil {
		return 0, failed(fmt.Sprintf("purge %d messages", len(ids)), err)
	}
	return n, nil
}

// changeMessages is changeMessage for many messages, in one transaction sent as one batch (on
// PostgreSQL one round trip, the commit included): it locks messages ids that meet condition,
// in id order so that two sweepers cannot deadlock, audits ev for each of them, runs change on
// them and returns how many it changed.
//
// The statements choose the messages by condition again, each under the locks the first one
// took. That holds the set still because condition (unreadCondition, unpurgedCondition) is
// one a message can stop meeting but never meet again. They are separate statements, not one
// with data-modifying CTEs, because in READ COMMITTED each statement reads a snapshot taken
// when it starts: a statement that waited for a message's lock has an older snapshot and would
// miss, say, a reply that the lock's holder (AddReply) inserted before it committed.
func (s *Store) changeMessages(ctx context.Context, ids []string, ev audit.Event, condition string, change func(set messageSet, now time.Time) []step) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	for _, id := range ids {
		if !validID(id) {
			return 0, errInvalid("message id must be 1 to 128 printable ASCII characters")
		}
	}
	if ev.MessageID != "" {
		return 0, errInvalid("the audit event of many messages names message %s", ev.MessageID)
	}
	now := s.clock()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	insertEvent, err := s.pending(ev)
	if err != nil {
		return 0, err
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, err
	}
	set := s.chosenMessages(string(list), condition)
	var n int64
	steps := append([]step{
		{sql: `SELECT id FROM messages WHERE ` + set.byID + ` ORDER BY id` + s.db.lockRow(), args: []any{set.arg}},
		{
			// One event per chosen message, from the pending event's values.
			sql: `INSERT INTO audit_pending (occurred_at, kind, actor, message_id, detail)
				SELECT $2, $3, $4, id, $5 FROM messages WHERE ` + set.byID + ` ORDER BY id`,
			args:     []any{set.arg, insertEvent.args[0], insertEvent.args[1], insertEvent.args[2], insertEvent.args[4]},
			affected: func(k int64) error { n = k; return nil },
		},
	}, change(set, now)...)
	if err := s.db.transact(ctx, steps); err != nil {
		return 0, err
	}
	return int(n), nil
}

// AcquireLease gives lease name to holder until until, if nobody holds it, its holder's time
// ran out (by the store's clock), or holder holds it already (then until replaces its end,
// later or earlier). It reports whether holder holds the lease now. One conditional upsert,
// so that of several replicas asking at once exactly one gets a free lease.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, until time.Time) (bool, error) {
	if name == "" || holder == "" {
		return false, fmt.Errorf("acquire lease: %w: need a lease name and a holder", ErrInvalid)
	}
	var held bool
	err := s.db.transact(ctx, []step{{
		sql: `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
			RETURNING holder`,
		args: []any{name, holder, at(until), s.clock()},
		row: func(scan func(...any) error) error {
			var got string
			err := scan(&got)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			held = err == nil && got == holder
			return err
		},
	}})
	if err != nil {
		return false, failed("acquire lease "+name, err)
	}
	return held, nil
}

// ReleaseLease ends holder's lease name now, so that another holder can take it at once. A
// lease that holder does not hold is left alone.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	err := s.db.transact(ctx, []step{{
		sql:  `UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2`,
		args: []any{name, holder, s.clock()},
	}})
	if err != nil {
		return failed("release lease "+name, err)
	}
	return nil
}

// The sweeper of package retention runs on a Store.
var _ retention.Store = (*Store)(nil)

// RecordHoldEvent audits ev, a hold-applied or hold-released event of the LegalHold keyed
// holdKey, unless that hold's event of that kind was recorded before: each placement and
// release enters the audit trail once, whichever replica sees it first. It reports whether it
// recorded ev.
func (s *Store) RecordHoldEvent(ctx context.Context, holdKey string, ev audit.Event) (bool, error) {
	if holdKey == "" || (ev.Kind != audit.KindHoldApplied && ev.Kind != audit.KindHoldReleased) {
		return false, fmt.Errorf("record hold event: %w: need a hold key and a hold-applied or hold-released event", ErrInvalid)
	}
	insertEvent, err := s.pending(ev)
	if err != nil {
		return false, fmt.Errorf("record hold event: %w", err)
	}
	var recorded bool
	err = s.db.inTx(ctx, func(q querier) error {
		n, err := q.exec(ctx, `INSERT INTO hold_events (hold_key, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			holdKey, string(ev.Kind))
		if err != nil || n == 0 {
			return err
		}
		recorded = true
		return q.batch(ctx, []step{insertEvent})
	})
	if err != nil {
		return false, failed("record "+string(ev.Kind)+" of a legal hold", err)
	}
	return recorded, nil
}
