package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The store's SQL is written once, in the dialect PostgreSQL and SQLite share: $1 parameters,
// RETURNING, ON CONFLICT, and times passed in from Go rather than read from the database
// clock. What differs lives here and in postgres.go and sqlite.go: the drivers (pgx and
// database/sql), row locking, how a transaction is begun and sent, the bulk insert of chained
// audit events, and the column types in the migrations.

// reader runs queries that change nothing.
type reader interface {
	query(ctx context.Context, sql string, args ...any) (rows, error)
	queryRow(ctx context.Context, sql string, args ...any) row
}

// querier runs statements in a write transaction.
type querier interface {
	reader
	exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
	// batch runs steps in order, stopping at the first statement that fails, and returns that
	// error or else the first error of a step's check. PostgreSQL sends them in one round trip.
	batch(ctx context.Context, steps []step) error
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface {
	Scan(dest ...any) error
}

// database is one of the two backends.
type database interface {
	// reader outside a transaction. SQLite serves it from read-only connections.
	reader
	// transact runs steps as one transaction, which commits unless a statement fails. Checks
	// only report: a check's error is returned, but the transaction commits all the same (on
	// PostgreSQL the commit travels with the statements, in a single round trip). What must
	// not commit has to fail in the database, by a constraint.
	transact(ctx context.Context, steps []step) error
	// inTx runs fn in a write transaction, for work that decides between statements.
	inTx(ctx context.Context, fn func(q querier) error) error
	// lockSkipLocked is appended to a SELECT whose rows a writer takes for itself, and
	// lockRow to one that reads a row the transaction will change. On SQLite both are empty:
	// a write transaction holds the database's only write lock from its BEGIN.
	lockSkipLocked() string
	lockRow() string
	// idIn is the condition "column is one of the values subquery selects", written so that
	// the database looks the values up in column's index: PostgreSQL plans `id IN (subquery)`
	// as a join that may read the whole table, and `id = ANY(ARRAY(subquery))` as index
	// lookups.
	idIn(column, subquery string) string
	// jsonStrings is a subquery yielding the strings of the JSON array in parameter param,
	// for `x IN (…)` with a list of any length in one parameter.
	jsonStrings(param string) string
	// insertChained returns the statements that insert linked events into audit_events.
	insertChained(events []chainedEvent) []step
	close()
}

// step is one statement of a batch, with at most one check of its result.
type step struct {
	sql  string
	args []any
	// affected sees how many rows the statement changed.
	affected func(n int64) error
	// row sees the statement's single result row; scan returns sql.ErrNoRows if there is none
	// (pgx.ErrNoRows is sql.ErrNoRows to errors.Is).
	row func(scan func(dest ...any) error) error
	// each sees the statement's result rows one by one.
	each func(scan func(dest ...any) error) error
}

// micro is the precision of every stored time: PostgreSQL keeps microseconds, and audit
// hashes must cover exactly what is stored.
const micro = time.Microsecond

// at returns t as stored: UTC, whole microseconds, no monotonic reading.
func at(t time.Time) time.Time { return t.UTC().Truncate(micro) }

// nullString is a parameter for a nullable text column: NULL for "".
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// timeDest scans a timestamp column into *t: pgx yields time.Time, SQLite the stored integer
// microseconds (also from aggregates, which lose the column's type), NULL the zero time.
type timeDest struct{ t *time.Time }

func (d timeDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.t = time.Time{}
	case time.Time:
		*d.t = v.UTC()
	case int64:
		*d.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("scan timestamp: unexpected %T", src)
	}
	return nil
}

// hashDest scans a 32-byte bytea/BLOB column into *h, NULL (an unchained event) as zeros.
type hashDest struct{ h *[32]byte }

func (d hashDest) Scan(src any) error {
	if src == nil {
		*d.h = [32]byte{}
		return nil
	}
	b, ok := src.([]byte)
	if !ok || len(b) != len(d.h) {
		return fmt.Errorf("scan hash: want 32 bytes, got %T of length %d", src, len(b))
	}
	copy(d.h[:], b)
	return nil
}

// stringDest scans a nullable text column into *s, NULL as "".
type stringDest struct{ s *string }

func (d stringDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.s = ""
	case string:
		*d.s = v
	case []byte:
		*d.s = string(v)
	default:
		return fmt.Errorf("scan text: unexpected %T", src)
	}
	return nil
}

// noRows turns "no rows in result set" into ErrNotFound.
func noRows(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// chainedEvent is a linked audit event as stored: its detail encoded as JSON.
type chainedEvent struct {
	seq                                    int64
	time                                   time.Time
	kind, actor, tenant, messageID, detail string
	prevHash, hash                         []byte
}
