package store

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// The outbox holds notifications to send, written in the transaction that accepts the
// message. Relays claim due rows for a lease, send, and mark them sent, failed or due again.
// Delivery is at least once: a relay that dies after sending but before MarkSent leaves a row
// that is claimed again when its lease ends.

// OutboxEntry is a claimed notification.
type OutboxEntry struct {
	ID          int64
	MessageID   string
	Kind        string // "notify"
	Attempts    int    // claims so far, this one included
	Payload     []byte // AcceptRequest.NotifyPayload
	RecipientID string
	Phone       string // where to send the SMS
	OptedOut    bool   // the recipient opted out after the message was accepted: do not send
	// MessageStatus and WrappedKey are the message's, as claimed: a message revoked or purged
	// before its SMS went out has no wrapped key and must not be announced.
	MessageStatus Status
	WrappedKey    string
	ClaimedUntil  time.Time
}

// errorCode is what last_error may hold: a short code, never a provider's free text, which
// could quote a phone number or content.
var errorCode = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// ClaimOutbox claims up to limit notifications due at now for lease, and returns them. Rows
// another relay holds are skipped, so concurrent relays, also in other replicas, never get the
// same row while its lease holds; a row whose lease ran out is claimed again.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]OutboxEntry, error) {
	if limit <= 0 || lease <= 0 {
		return nil, fmt.Errorf("claim outbox: %w: need a positive limit and lease", ErrInvalid)
	}
	now = at(now)
	until := at(now.Add(lease))
	var entries []OutboxEntry
	err := s.db.inTx(ctx, func(q querier) error {
		entries = entries[:0]
		rows, err := q.query(ctx,
			`UPDATE outbox SET claimed_until = $2, attempts = attempts + 1
			WHERE id IN (
				SELECT id FROM outbox
				WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
					AND (claimed_until IS NULL OR claimed_until <= $1)
				ORDER BY next_attempt_at, id LIMIT $3`+s.db.lockSkipLocked()+`)
			RETURNING id, message_id, kind, attempts, payload,
				(SELECT r.id FROM messages m JOIN recipients r ON r.id = m.recipient_id WHERE m.id = outbox.message_id),
				(SELECT r.phone FROM messages m JOIN recipients r ON r.id = m.recipient_id WHERE m.id = outbox.message_id),
				(SELECT r.opted_out FROM messages m JOIN recipients r ON r.id = m.recipient_id WHERE m.id = outbox.message_id),
				(SELECT m.status FROM messages m WHERE m.id = outbox.message_id),
				(SELECT m.wrapped_key FROM messages m WHERE m.id = outbox.message_id)`,
			now, until, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e := OutboxEntry{ClaimedUntil: until}
			if err := rows.Scan(&e.ID, &e.MessageID, &e.Kind, &e.Attempts, &e.Payload, &e.RecipientID, &e.Phone, &e.OptedOut,
				&e.MessageStatus, stringDest{&e.WrappedKey}); err != nil {
				return err
			}
			entries = append(entries, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, failed("claim outbox", err)
	}
	return entries, nil
}

// MarkSent records that notification id was handed to the SMS provider, which calls it
// providerMessageID: the message's status becomes notified (unless it has moved on), and ev
// is audited, in one transaction. A notification no longer pending is ErrConflict.
func (s *Store) MarkSent(ctx context.Context, id int64, providerMessageID string, ev audit.Event) error {
	c := sentCall{id: id, providerMessageID: providerMessageID, ev: ev}
	var err error
	if s.sents != nil {
		_, err = s.sents.Do(ctx, c)
	} else {
		_, errs, gerr := s.sentGroup(ctx, []sentCall{c})
		if err = gerr; err == nil {
			err = errs[0]
		}
	}
	if err != nil && !IsTemporary(err) {
		return failed(fmt.Sprintf("mark notification %d sent", id), err)
	}
	return err
}

// sentCall is one MarkSent call waiting for its group.
type sentCall struct {
	id                int64
	providerMessageID string
	ev                audit.Event
}

// sentSteps are the statements of one MarkSent call, which need no answer before the next is
// sent: the first locks the outbox row and tells why the call changes nothing, if it does
// not (no such notification, no longer pending, another message's event); the others change
// rows only while the notification is still pending and its message is the event's, and the
// outbox row, which that condition reads, changes last. They write the message's status and
// provider id, the audit event and the outbox row. errp receives the call's refusal.
func (s *Store) sentSteps(c sentCall, now time.Time, errp *error) ([]step, error) {
	ev := c.ev
	if ev.Time.IsZero() {
		ev.Time = now
	}
	insertEvent, err := s.pending(ev) // args: occurred_at, kind, actor, message_id (NULL: the notification's), detail
	if err != nil {
		return nil, err
	}
	const pending = `outbox.id = $1 AND outbox.sent_at IS NULL AND outbox.failed_at IS NULL AND outbox.message_id = COALESCE($2, outbox.message_id)`
	messageID := nullString(ev.MessageID)
	return []step{
		{
			sql:  `SELECT message_id, sent_at, failed_at FROM outbox WHERE id = $1` + s.db.lockRow(),
			args: []any{c.id},
			row: func(scan func(dest ...any) error) error {
				var (
					message          string
					sentAt, failedAt time.Time
				)
				err := scan(&message, timeDest{&sentAt}, timeDest{&failedAt})
				*errp = outboxRefusal(err, message, sentAt, failedAt, ev.MessageID)
				return nil
			},
		},
		{
			sql: `UPDATE messages SET provider_message_id = $3,
				status = CASE WHEN status = 'accepted' THEN 'notified' ELSE status END,
				status_changed_at = CASE WHEN status = 'accepted' THEN $4 ELSE status_changed_at END
			WHERE id = (SELECT message_id FROM outbox WHERE ` + pending + `)`,
			args: []any{c.id, messageID, nullString(c.providerMessageID), now},
		},
		{
			sql: `INSERT INTO audit_pending (occurred_at, kind, actor, message_id, detail)
				SELECT $3, $4, $5, outbox.message_id, $6 FROM outbox WHERE ` + pending,
			args: append([]any{c.id, messageID}, insertEvent.args[0], insertEvent.args[1], insertEvent.args[2], insertEvent.args[4]),
		},
		{
			sql:  `UPDATE outbox SET sent_at = $3, claimed_until = NULL, payload = NULL WHERE ` + pending,
			args: []any{c.id, messageID, now},
		},
	}, nil
}

// sentGroup records concurrent MarkSent calls in one transaction and one round trip, as
// acceptGroup does for accepts: a call whose notification is no longer pending gets
// ErrConflict and changes nothing; if the database refuses a statement, each call runs on
// its own.
func (s *Store) sentGroup(ctx context.Context, calls []sentCall) ([]struct{}, []error, error) {
	now := s.clock()
	errs := make([]error, len(calls))
	run := func(calls []sentCall, errs []error) error {
		// Rows are locked in id order, so that groups of two replicas cannot deadlock.
		order := make([]int, len(calls))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(calls[a].id, calls[b].id) })
		var all []step
		for _, i := range order {
			steps, err := s.sentSteps(calls[i], now, &errs[i])
			if err != nil {
				errs[i] = err
				continue
			}
			all = append(all, steps...)
		}
		if len(all) == 0 {
			return nil
		}
		return s.db.transact(ctx, all)
	}
	err := run(calls, errs)
	if err != nil && refusedByDatabase(err) && len(calls) > 1 {
		for i := range calls {
			errs[i] = nil
			if err := run(calls[i:i+1], errs[i:i+1]); err != nil {
				errs[i] = err
			}
		}
		err = nil
	}
	if err != nil {
		return nil, nil, failed("mark notifications sent", err)
	}
	return make([]struct{}, len(calls)), errs, nil
}

// MarkFailed records that notification id will not be sent (the provider refused it for
// good, or it ran out of attempts), with a short error code: the message's status becomes
// failed unless it has moved on, and ev is audited, in one transaction.
func (s *Store) MarkFailed(ctx context.Context, id int64, errCode string, ev audit.Event) error {
	if !errorCode.MatchString(errCode) {
		return fmt.Errorf("mark notification %d failed: %w: error code must be a short code", id, ErrInvalid)
	}
	err := s.finishOutbox(ctx, id, ev, func(q querier, messageID string, now time.Time) error {
		_, err := q.exec(ctx,
			`UPDATE outbox SET failed_at = $2, last_error = $3, claimed_until = NULL, payload = NULL WHERE id = $1`,
			id, now, errCode)
		if err != nil {
			return err
		}
		var from Status
		if err := q.queryRow(ctx, `SELECT status FROM messages WHERE id = $1`+s.db.lockRow(), messageID).Scan(&from); err != nil {
			return err
		}
		next, err := nextStatus(from, StatusFailed)
		if err != nil || next == from {
			return nil // the message went on without its SMS; the failure is still audited
		}
		return q.batch(ctx, s.setStatus(oneMessage(messageID), next, now))
	})
	if err != nil {
		return failed(fmt.Sprintf("mark notification %d failed", id), err)
	}
	return nil
}

// finishOutbox locks pending notification id and runs finish on it and its message, with ev
// audited for that message, in one transaction. Its refusals (ErrConflict, ErrNotFound,
// ErrInvalid) come before it writes anything.
func (s *Store) finishOutbox(ctx context.Context, id int64, ev audit.Event, finish func(q querier, messageID string, now time.Time) error) error {
	return s.db.inTx(ctx, func(q querier) error {
		now := s.clock()
		var messageID string
		var sentAt, failedAt time.Time
		err := q.queryRow(ctx, `SELECT message_id, sent_at, failed_at FROM outbox WHERE id = $1`+s.db.lockRow(), id).
			Scan(&messageID, timeDest{&sentAt}, timeDest{&failedAt})
		if err := outboxRefusal(err, messageID, sentAt, failedAt, ev.MessageID); err != nil {
			return err
		}
		ev.MessageID = messageID
		if ev.Time.IsZero() {
			ev.Time = now
		}
		insertEvent, err := s.pending(ev)
		if err != nil {
			return err
		}
		if err := finish(q, messageID, now); err != nil {
			return err
		}
		return q.batch(ctx, []step{insertEvent})
	})
}

// outboxRefusal says why a notification read as messageID, sentAt and failedAt (or not read:
// scanErr) cannot be finished with an audit event naming eventMessage ("" for the
// notification's own), or returns nil if it can.
func outboxRefusal(scanErr error, messageID string, sentAt, failedAt time.Time, eventMessage string) error {
	switch {
	case scanErr != nil:
		return noRows(scanErr)
	case !sentAt.IsZero() || !failedAt.IsZero():
		return fmt.Errorf("%w: notification is no longer pending", ErrConflict)
	case eventMessage != "" && eventMessage != messageID:
		return errInvalid("audit event names message %s, not the notification's message %s", eventMessage, messageID)
	}
	return nil
}

// RetryLater releases claimed notification id to be tried again at next, recording a short
// error code for the failed attempt.
func (s *Store) RetryLater(ctx context.Context, id int64, next time.Time, errCode string) error {
	if !errorCode.MatchString(errCode) {
		return fmt.Errorf("retry notification %d: %w: error code must be a short code", id, ErrInvalid)
	}
	err := s.db.transact(ctx, []step{{
		sql: `UPDATE outbox SET next_attempt_at = $2, last_error = $3, claimed_until = NULL
			WHERE id = $1 AND sent_at IS NULL AND failed_at IS NULL`,
		args:     []any{id, at(next), errCode},
		affected: requireRow,
	}})
	if err != nil {
		return failed(fmt.Sprintf("retry notification %d", id), err)
	}
	return nil
}

// OutboxStats returns how many notifications are pending (claimed or not) and how long the
// oldest has waited at now, for metrics and readiness.
func (s *Store) OutboxStats(ctx context.Context, now time.Time) (depth int, oldest time.Duration, err error) {
	var first time.Time
	err = s.db.queryRow(ctx,
		`SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL`,
	).Scan(&depth, timeDest{&first})
	if err != nil {
		return 0, 0, failed("read outbox stats", err)
	}
	if depth > 0 && now.After(first) {
		oldest = now.Sub(first)
	}
	return depth, oldest, nil
}
