package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Errors callers act on. Every error the store returns wraps one of these when it applies, with
// errors.Is; a temporary database failure also wraps the driver's original error.
var (
	// ErrNotFound means no row has that id (or phone, hash, …).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means the write contradicts what is stored: an id or link token hash that is
	// already taken, or a change to a message whose status is final.
	ErrConflict = errors.New("store: conflict with stored data")
	// ErrIdempotencyConflict means the idempotency key was first used for a different request
	// (HTTP 422 / 409: the sender must use a new key for a new request).
	ErrIdempotencyConflict = errors.New("store: idempotency key was used for a different request")
	// ErrOptedOut means the recipient replied STOP; nothing was stored.
	ErrOptedOut = errors.New("store: recipient has opted out of messages")
	// ErrInvalid means the caller passed a value the store refuses (a bug in the caller).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrUnavailable means the database could not do the work right now: it is unreachable,
	// the connection was lost, an operation timed out, the server is overloaded or shutting
	// down, or a transaction lost a serialization or deadlock race. Nothing was stored (but see
	// Store.AcceptMessage on a lost commit); the caller answers SMTP 451 / HTTP 503 and the
	// sender retries.
	ErrUnavailable = errors.New("store: database temporarily unavailable")
	// ErrRateLimited means the caller asked for something too often (another one-time code
	// within the window, a reply past a message's cap); nothing was stored.
	ErrRateLimited = errors.New("store: too many requests; try again later")
)

// IsTemporary reports whether err is a temporary database failure (it wraps ErrUnavailable).
func IsTemporary(err error) bool { return errors.Is(err, ErrUnavailable) }

// failed wraps err with what was being done; a temporary database failure also gets
// ErrUnavailable, so IsTemporary and errors.Is on the driver's error both work.
func failed(what string, err error) error {
	if !errors.Is(err, ErrUnavailable) && temporary(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// temporary classifies a driver error. A server-reported error decides by its SQLSTATE alone;
// anything that kept the statement from reaching the server or its answer from coming back is
// temporary.
func temporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	// A failed connect is temporary whatever the server said (it wraps the server's error, e.g.
	// 55000 "not currently accepting connections"): only an operator can fix it, and the
	// sender must retry rather than lose the message.
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return temporarySQLState(pgErr.Code)
	}
	if sqliteErr, ok := errors.AsType[*sqlite.Error](err); ok {
		switch sqliteErr.Code() & 0xff { // primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// refusedByDatabase reports whether err is the database's answer to a statement, so that the
// transaction certainly rolled back (rather than a lost connection, after which a commit may
// or may not have happened).
func refusedByDatabase(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return false
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		return true
	}
	_, ok := errors.AsType[*sqlite.Error](err)
	return ok
}

// temporarySQLState: connection exceptions (08), insufficient resources (53, e.g. too many
// connections or disk full), operator intervention (57P01–57P05: admin or crash shutdown,
// cannot connect now, idle session timeout), a statement timeout or cancel (57014), and
// serialization failure or deadlock (40001, 40P01): retrying the whole request can succeed.
func temporarySQLState(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"), strings.HasPrefix(code, "57P0"):
		return true
	}
	switch code {
	case "57014", "40001", "40P01":
		return true
	}
	return false
}

// uniqueViolation reports whether err is a unique or primary key violation in table.
func uniqueViolation(err error, table string) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == "23505" && pgErr.TableName == table
	}
	if sqliteErr, ok := errors.AsType[*sqlite.Error](err); ok {
		code := sqliteErr.Code()
		return (code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) &&
			strings.Contains(sqliteErr.Error(), "constraint failed: "+table+".")
	}
	return false
}

// violates reports whether err is the refusal of the named check constraint or trigger.
func violates(err error, constraint string) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.ConstraintName == constraint
	}
	if sqliteErr, ok := errors.AsType[*sqlite.Error](err); ok {
		return sqliteErr.Code()&0xff == sqlite3.SQLITE_CONSTRAINT && strings.Contains(sqliteErr.Error(), constraint)
	}
	return false
}
