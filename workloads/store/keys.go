package store

import (
	"context"
	"fmt"

	"github.com/securetext/securetext/workloads/retention"
)

// RewrapKeys stores the data keys that the retention sweeper moved to a newer version of the
// wrapping key (retention.KeyChange), in one transaction: a message's key is replaced only if
// it is still the one rewrapped, so a message purged (or rewrapped by another sweeper) since is
// left as it is. It returns how many keys it replaced. The data key inside is the same, so the
// message's content and replies open as before.
func (s *Store) RewrapKeys(ctx context.Context, changes []retention.KeyChange) (int, error) {
	if len(changes) == 0 {
		return 0, nil
	}
	n := 0
	steps := make([]step, len(changes))
	for i, c := range changes {
		if c.MessageID == "" || c.Old == "" || c.New == "" {
			return 0, fmt.Errorf("store rewrapped data keys: %w: each change needs a message id, the old and the new key", ErrInvalid)
		}
		steps[i] = step{
			sql:      `UPDATE messages SET wrapped_key = $1 WHERE id = $2 AND wrapped_key = $3`,
			args:     []any{c.New, c.MessageID, c.Old},
			affected: func(k int64) error { n += int(k); return nil },
		}
	}
	if err := s.db.transact(ctx, steps); err != nil {
		return 0, failed(fmt.Sprintf("store %d rewrapped data keys", len(changes)), err)
	}
	return n, nil
}
