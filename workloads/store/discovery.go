package store

import (
	"context"
	"fmt"

	"github.com/securetext/securetext/workloads/retention"
)

// ListMessages returns up to limit messages, purged or not, in id order after the message with
// id after ("" starts at the first): what a discovery export matches a legal hold against. A
// hold keeps the record of a message purged before the hold was placed, so purged messages are
// listed too. Ids sort in the order they were made (NewID), and the primary key serves the
// pages, so a listing of the whole table reads each row once.
func (s *Store) ListMessages(ctx context.Context, after string, limit int) ([]retention.Message, error) {
	const what = "list messages"
	if limit <= 0 {
		return nil, fmt.Errorf("%s: %w: limit must be positive", what, ErrInvalid)
	}
	// The phone is read per row by the recipient's primary key, as the retention candidates are.
	rows, err := s.db.query(ctx, `SELECT id, (SELECT phone FROM recipients WHERE recipients.id = messages.recipient_id),
			sender, created_at
		FROM messages WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, failed(what, err)
	}
	defer rows.Close()
	var list []retention.Message
	for rows.Next() {
		var m retention.Message
		if err := rows.Scan(&m.ID, &m.Recipient, &m.Sender, timeDest{&m.CreatedAt}); err != nil {
			return nil, failed(what, err)
		}
		list = append(list, m)
	}
	if err := rows.Err(); err != nil {
		return nil, failed(what, err)
	}
	return list, nil
}
