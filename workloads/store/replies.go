package store

import (
	"context"
	"fmt"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// Reply is a patient's answer to a message, as stored: sealed under the message's data key.
type Reply struct {
	ID         string
	MessageID  string
	CreatedAt  time.Time
	Ciphertext []byte // an envelope (package envelope) that package sealed binds to the reply's id
}

// AddReply stores reply r to its message and audits ev, in one transaction. A message that
// can no longer be read (revoked, expired, purged) is ErrConflict; one that has maxReplies
// replies already is ErrRateLimited. Nothing is stored then.
func (s *Store) AddReply(ctx context.Context, r Reply, maxReplies int, ev audit.Event) error {
	if r.ID == "" || r.MessageID == "" || len(r.Ciphertext) == 0 || maxReplies < 1 {
		return fmt.Errorf("add reply: %w: need an id, a message, a ciphertext and maxReplies ≥ 1", ErrInvalid)
	}
	err := s.changeMessage(ctx, r.MessageID, ev, func(q querier, now time.Time, from Status) error {
		if from.Final() {
			return fmt.Errorf("%w: the message is %s", ErrConflict, from)
		}
		var n int
		if err := q.queryRow(ctx, `SELECT count(*) FROM replies WHERE message_id = $1`, r.MessageID).Scan(&n); err != nil {
			return err
		}
		if n >= maxReplies {
			return ErrRateLimited
		}
		created := now
		if !r.CreatedAt.IsZero() {
			created = at(r.CreatedAt)
		}
		_, err := q.exec(ctx, `INSERT INTO replies (id, message_id, created_at, ciphertext) VALUES ($1, $2, $3, $4)`,
			r.ID, r.MessageID, created, r.Ciphertext)
		return err
	})
	if err != nil {
		return failed("add reply to message "+r.MessageID, err)
	}
	return nil
}

// Replies returns the replies to message id, oldest first: none once it is purged.
func (s *Store) Replies(ctx context.Context, id string) ([]Reply, error) {
	rows, err := s.db.query(ctx,
		`SELECT id, created_at, ciphertext FROM replies WHERE message_id = $1 ORDER BY created_at, id`, id)
	if err != nil {
		return nil, failed("read replies to message "+id, err)
	}
	defer rows.Close()
	var replies []Reply
	for rows.Next() {
		r := Reply{MessageID: id}
		if err := rows.Scan(&r.ID, timeDest{&r.CreatedAt}, &r.Ciphertext); err != nil {
			return nil, failed("read replies to message "+id, err)
		}
		replies = append(replies, r)
	}
	if err := rows.Err(); err != nil {
		return nil, failed("read replies to message "+id, err)
	}
	return replies, nil
}
