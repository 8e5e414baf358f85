package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/securetext/securetext/workloads/retention"
)

// The last retention sweep, kept in the database (migration 00006) rather than in the memory
// of the replica that ran it: only the lease holder sweeps, but the operator's status request
// reaches any replica.

// SaveSweep keeps r as the last sweep of name (retention.RecordName). A result that finished
// before the one kept is dropped, so that a sweeper that lost its lease half-way never hides
// the newer sweep of the replica that took it over. r holds counts, times and the names of
// the policy and of holds: nothing about a message or a patient.
func (s *Store) SaveSweep(ctx context.Context, name string, r retention.Result) error {
	if name == "" || r.Finished.IsZero() {
		return fmt.Errorf("save retention sweep: %w: need a name and a finished sweep", ErrInvalid)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("save retention sweep %s: encode result: %w", name, err)
	}
	err = s.db.transact(ctx, []step{{
		sql: `INSERT INTO retention_sweeps (name, result, finished_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET result = excluded.result, finished_at = excluded.finished_at
			WHERE retention_sweeps.finished_at <= excluded.finished_at`,
		args: []any{name, string(b), at(r.Finished)},
	}})
	if err != nil {
		return failed("save retention sweep "+name, err)
	}
	return nil
}

// LastSweep returns the last sweep saved under name, or ErrNotFound (and
// retention.ErrNoSweep) before the first.
func (s *Store) LastSweep(ctx context.Context, name string) (retention.Result, error) {
	var raw string
	if err := s.db.queryRow(ctx, `SELECT result FROM retention_sweeps WHERE name = $1`, name).Scan(&raw); err != nil {
		err = failed("read retention sweep "+name, noRows(err))
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w (%w)", err, retention.ErrNoSweep)
		}
		return retention.Result{}, err
	}
	var r retention.Result
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return retention.Result{}, fmt.Errorf("read retention sweep %s: decode result: %w", name, err)
	}
	return r, nil
}
