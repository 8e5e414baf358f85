package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// sqliteBusyTimeoutMS is how long a connection waits for another process's lock (a second
// process on the same file, a backup) before SQLITE_BUSY, a temporary error.
const sqliteBusyTimeoutMS = "10000"

// sqliteReaders is the number of read connections; WAL lets them read while the writer writes.
const sqliteReaders = 4

// sqliteDB keeps one write connection and a few read-only ones. Writers queue for the single
// write connection in database/sql, in order, instead of spinning in SQLite's busy handler;
// every write transaction begins IMMEDIATE, so it holds the write lock from its first
// statement and can never fail to upgrade a read lock half-way.
type sqliteDB struct {
	write *sql.DB
	read  *sql.DB
}

func openSQLite(ctx context.Context, path string) (*sqliteDB, error) {
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("%w: SQLite DSN must be sqlite:PATH, a plain file path without ? or #", ErrInvalid)
	}
	// Times are written as integer microseconds (see the migration). WAL with synchronous=FULL
	// syncs the log at every commit: a commit survives power loss, as it must before the
	// gateway answers 250.
	common := "_busy_timeout=" + sqliteBusyTimeoutMS + "&_time_integer_format=unix_micro&_foreign_keys=1"
	write, err := sql.Open("sqlite", path+"?"+common+"&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open SQLite database: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, failed("open SQLite database", err)
	}
	if err := sqliteMigrate(ctx, write); err != nil {
		write.Close()
		return nil, err
	}
	read, err := sql.Open("sqlite", path+"?"+common+"&_query_only=1")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open SQLite database: %w", err)
	}
	read.SetMaxOpenConns(sqliteReaders)
	read.SetMaxIdleConns(sqliteReaders)
	return &sqliteDB{write: write, read: read}, nil
}

func sqliteMigrate(ctx context.Context, db *sql.DB) error {
	migrations, err := fs.Sub(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return fmt.Errorf("migrate SQLite schema: %w", err)
	}
	// No locker: SQLite serves one process, and each migration runs in an IMMEDIATE
	// transaction.
	provider, err := goose.NewProvider(goose.DialectSQLite3, db, migrations, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate SQLite schema: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return failed("migrate SQLite schema", err)
	}
	return nil
}

func (d *sqliteDB) close() {
	d.read.Close()
	d.write.Close()
}

func (d *sqliteDB) lockSkipLocked() string { return "" }
func (d *sqliteDB) jsonStrings(param string) string {
	return "SELECT value FROM json_each(" + param + ")"
}
func (d *sqliteDB) lockRow() string { return "" }
func (d *sqliteDB) idIn(column, subquery string) string {
	return column + " IN (" + subquery + ")"
}

func (d *sqliteDB) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := d.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (d *sqliteDB) queryRow(ctx context.Context, query string, args ...any) row {
	return d.read.QueryRowContext(ctx, query, args...)
}

func (d *sqliteDB) transact(ctx context.Context, steps []step) error {
	var checkErr error
	err := d.inTx(ctx, func(q querier) error {
		var err error
		checkErr, err = runSteps(ctx, q.(sqlTx).tx, steps)
		return err
	})
	if err != nil {
		return err
	}
	return checkErr
}

func (d *sqliteDB) insertChained(events []chainedEvent) []step {
	steps := make([]step, len(events))
	for i, e := range events {
		steps[i] = step{
			sql: `INSERT INTO audit_events (seq, occurred_at, kind, actor, tenant, message_id, detail, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			args: []any{e.seq, e.time, e.kind, e.actor, e.tenant, nullString(e.messageID), e.detail, e.prevHash, e.hash},
		}
	}
	return steps
}

func (d *sqliteDB) inTx(ctx context.Context, fn func(q querier) error) error {
	tx, err := d.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(sqlTx{tx}); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// sqlTx is a querier on a database/sql transaction.
type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlTx) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (t sqlTx) queryRow(ctx context.Context, query string, args ...any) row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

// batch runs the steps one after another: SQLite is in process, there are no round trips to
// save.
func (t sqlTx) batch(ctx context.Context, steps []step) error {
	checkErr, err := runSteps(ctx, t.tx, steps)
	if err != nil {
		return err
	}
	return checkErr
}

// runSteps runs steps until a statement fails (err). Like pgx's batches, it stops calling
// checks after the first check error (checkErr) but runs the remaining statements.
func runSteps(ctx context.Context, tx *sql.Tx, steps []step) (checkErr, err error) {
	for _, s := range steps {
		if s.row != nil || s.each != nil {
			if checkErr, err = queryStep(ctx, tx, s, checkErr); err != nil {
				return checkErr, err
			}
			continue
		}
		res, err := tx.ExecContext(ctx, s.sql, s.args...)
		if err != nil {
			return checkErr, err
		}
		if s.affected != nil && checkErr == nil {
			n, err := res.RowsAffected()
			if err != nil {
				return checkErr, err
			}
			checkErr = s.affected(n)
		}
	}
	return checkErr, nil
}

// queryStep runs step s, which reads rows, and passes them to its check unless an earlier
// check failed (checkErr). err is the statement's failure.
func queryStep(ctx context.Context, tx *sql.Tx, s step, checkErr error) (_, err error) {
	// Query, not QueryRow: a failing statement must be told from an empty result.
	rows, err := tx.QueryContext(ctx, s.sql, s.args...)
	if err != nil {
		return checkErr, err
	}
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	if s.row != nil {
		found := rows.Next()
		if err := rows.Err(); err != nil {
			return checkErr, err
		}
		if checkErr == nil {
			checkErr = s.row(func(dest ...any) error {
				if !found {
					return sql.ErrNoRows
				}
				return rows.Scan(dest...)
			})
		}
		return checkErr, nil
	}
	for rows.Next() {
		if checkErr == nil {
			checkErr = s.each(rows.Scan)
		}
	}
	return checkErr, rows.Err()
}

// sqlRows adapts *sql.Rows to rows. Read errors surface in Err; Close only releases the
// statement.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }
