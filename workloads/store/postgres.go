package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// DefaultMaxConnections sizes the pool for the gateway's intake: 32 concurrent writers plus
// the relays. WithMaxConnections or a pool_max_conns parameter in the URL overrides it.
const DefaultMaxConnections = 48

type postgres struct {
	pool *pgxpool.Pool
}

func openPostgres(ctx context.Context, dsn string, maxConns int) (*postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error can quote the URL, password included.
		return nil, fmt.Errorf("%w: PostgreSQL URL does not parse", ErrInvalid)
	}
	if u, err := url.Parse(dsn); err == nil && !u.Query().Has("pool_max_conns") {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, failed("connect to PostgreSQL", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, failed("connect to PostgreSQL", err)
	}
	p := &postgres{pool: pool}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return p, nil
}

// migrate applies the embedded migrations under a session advisory lock, so that replicas
// starting together apply each migration once.
func (p *postgres) migrate(ctx context.Context) error {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("migrate PostgreSQL schema: %w", err)
	}
	migrations, err := fs.Sub(postgresMigrations, "migrations/postgres")
	if err != nil {
		return fmt.Errorf("migrate PostgreSQL schema: %w", err)
	}
	db := stdlib.OpenDBFromPool(p.pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate PostgreSQL schema: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return failed("migrate PostgreSQL schema", err)
	}
	return nil
}

func (p *postgres) close()                 { p.pool.Close() }
func (p *postgres) lockSkipLocked() string { return " FOR UPDATE SKIP LOCKED" }
func (p *postgres) jsonStrings(param string) string {
	return "SELECT jsonb_array_elements_text(" + param + "::jsonb)"
}
func (p *postgres) lockRow() string { return " FOR UPDATE" }
func (p *postgres) idIn(column, subquery string) string {
	return column + " = ANY(ARRAY(" + subquery + "))"
}

func (p *postgres) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return p.pool.Query(ctx, sql, args...)
}

func (p *postgres) queryRow(ctx context.Context, sql string, args ...any) row {
	return p.pool.QueryRow(ctx, sql, args...)
}

// transact sends the steps as one pipeline ending in a single Sync, which PostgreSQL runs as
// one implicit transaction: a failing statement rolls back all of them, and the answer to the
// Sync comes only after the commit is flushed. One round trip in all.
func (p *postgres) transact(ctx context.Context, steps []step) error {
	return p.pool.SendBatch(ctx, pgBatch(steps)).Close()
}

// insertChained inserts all events with one statement, from arrays: a sequencer run costs
// the server one statement, not one per event.
func (p *postgres) insertChained(events []chainedEvent) []step {
	n := len(events)
	seqs, times := make([]int64, n), make([]time.Time, n)
	kinds, actors, tenants, messageIDs, details := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	prevHashes, hashes := make([][]byte, n), make([][]byte, n)
	for i, e := range events {
		seqs[i], times[i] = e.seq, e.time
		kinds[i], actors[i], tenants[i], messageIDs[i], details[i] = e.kind, e.actor, e.tenant, e.messageID, e.detail
		prevHashes[i], hashes[i] = e.prevHash, e.hash
	}
	return []step{{
		sql: `INSERT INTO audit_events (seq, occurred_at, kind, actor, tenant, message_id, detail, prev_hash, hash)
		SELECT seq, occurred_at, kind, actor, tenant, NULLIF(message_id, ''), detail::jsonb, prev_hash, hash
		FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::bytea[])
			AS e (seq, occurred_at, kind, actor, tenant, message_id, detail, prev_hash, hash)`,
		args: []any{seqs, times, kinds, actors, tenants, messageIDs, details, prevHashes, hashes},
	}}
}

func (p *postgres) inTx(ctx context.Context, fn func(q querier) error) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(pgTx{tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	return tx.Commit(ctx)
}

// pgBatch queues steps with their checks.
func pgBatch(steps []step) *pgx.Batch {
	b := &pgx.Batch{}
	for _, s := range steps {
		qq := b.Queue(s.sql, s.args...)
		switch {
		case s.row != nil:
			check := s.row
			qq.QueryRow(func(r pgx.Row) error { return check(r.Scan) })
		case s.affected != nil:
			check := s.affected
			qq.Exec(func(tag pgconn.CommandTag) error { return check(tag.RowsAffected()) })
		case s.each != nil:
			each := s.each
			qq.Query(func(rows pgx.Rows) error {
				for rows.Next() {
					if err := each(rows.Scan); err != nil {
						return err
					}
				}
				return rows.Err()
			})
		}
	}
	return b
}

// pgTx is a querier on a pgx transaction.
type pgTx struct{ tx pgx.Tx }

func (t pgTx) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t pgTx) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return t.tx.Query(ctx, sql, args...)
}

func (t pgTx) queryRow(ctx context.Context, sql string, args ...any) row {
	return t.tx.QueryRow(ctx, sql, args...)
}

func (t pgTx) batch(ctx context.Context, steps []step) error {
	return t.tx.SendBatch(ctx, pgBatch(steps)).Close()
}
