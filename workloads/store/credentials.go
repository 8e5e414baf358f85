package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// A recipient's credentials beyond sessions and login failures (recipient.go): a first
// password that only one browser can set, a reset that ends every session, and the one-time
// codes that confirm either.

// SetFirstPassword stores the PHC string of recipient id's first password and audits ev, in
// one transaction. If the recipient has a password already (another browser was quicker) it
// is ErrConflict and nothing changes: the first password can be set only once, and a change
// needs ResetPassword.
func (s *Store) SetFirstPassword(ctx context.Context, id, passwordHash string, ev audit.Event) error {
	if passwordHash == "" {
		return fmt.Errorf("set first password of recipient %s: %w: empty password hash", id, ErrInvalid)
	}
	err := s.recipientTx(ctx, id, ev, func(q querier) error {
		n, err := q.exec(ctx, `UPDATE recipients SET password_hash = $2 WHERE id = $1 AND password_hash IS NULL`, id, passwordHash)
		if err == nil && n == 0 {
			err = fmt.Errorf("%w: the recipient already has a password", ErrConflict)
		}
		return err
	})
	if err != nil {
		return failed("set first password of recipient "+id, err)
	}
	return nil
}

// ResetPassword replaces recipient id's password, clears the login failure count and lock,
// ends every session of the recipient and audits ev, in one transaction: whoever knew the old
// password or held a session is signed out.
func (s *Store) ResetPassword(ctx context.Context, id, passwordHash string, ev audit.Event) error {
	if passwordHash == "" {
		return fmt.Errorf("reset password of recipient %s: %w: empty password hash", id, ErrInvalid)
	}
	err := s.recipientTx(ctx, id, ev, func(q querier) error {
		return q.batch(ctx, []step{
			{
				sql:  `UPDATE recipients SET password_hash = $2, failed_logins = 0, locked_until = NULL WHERE id = $1`,
				args: []any{id, passwordHash},
			},
			{sql: `DELETE FROM sessions WHERE recipient_id = $1`, args: []any{id}},
		})
	})
	if err != nil {
		return failed("reset password of recipient "+id, err)
	}
	return nil
}

// DeleteRecipientSessions ends every session of recipient id and returns how many there were.
func (s *Store) DeleteRecipientSessions(ctx context.Context, id string) (int, error) {
	var n int64
	err := s.db.transact(ctx, []step{{
		sql:      `DELETE FROM sessions WHERE recipient_id = $1`,
		args:     []any{id},
		affected: func(k int64) error { n = k; return nil },
	}})
	if err != nil {
		return 0, failed("delete sessions of recipient "+id, err)
	}
	return int(n), nil
}

// CodePurpose says what a one-time code confirms.
type CodePurpose string

// One-time code purposes.
const (
	CodeSetup CodePurpose = "setup" // first use: the person with the link also holds the phone
	CodeReset CodePurpose = "reset" // forgot password
)

func (p CodePurpose) valid() bool { return p == CodeSetup || p == CodeReset }

// OneTimeCode is a code texted to a recipient, as stored: a salted hash, never the code.
type OneTimeCode struct {
	RecipientID string
	Purpose     CodePurpose
	Salt        [16]byte
	Hash        [32]byte // SHA-256(Salt ‖ code), computed by the caller
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// CreateOneTimeCode stores c as the recipient's only live code for its purpose (earlier live
// codes of that purpose stop working) and audits ev, in one transaction. If maxPerWindow codes
// of that purpose were created for the recipient in the window before c.CreatedAt, it refuses
// with ErrRateLimited and stores nothing. Concurrent calls for one recipient take turns, so the
// limit holds under a burst.
func (s *Store) CreateOneTimeCode(ctx context.Context, c OneTimeCode, maxPerWindow int, window time.Duration, ev audit.Event) error {
	switch {
	case c.RecipientID == "" || !c.Purpose.valid():
		return fmt.Errorf("create one-time code: %w: need a recipient and the purpose setup or reset", ErrInvalid)
	case c.CreatedAt.IsZero() || !c.ExpiresAt.After(c.CreatedAt):
		return fmt.Errorf("create one-time code: %w: need a creation time before the expiry", ErrInvalid)
	case c.Hash == [32]byte{} || maxPerWindow < 1 || window <= 0:
		return fmt.Errorf("create one-time code: %w: need a code hash, maxPerWindow ≥ 1 and a positive window", ErrInvalid)
	}
	created := at(c.CreatedAt)
	err := s.recipientTx(ctx, c.RecipientID, ev, func(q querier) error {
		var recent int
		err := q.queryRow(ctx,
			`SELECT count(*) FROM one_time_codes WHERE recipient_id = $1 AND purpose = $2 AND created_at > $3`,
			c.RecipientID, c.Purpose, at(c.CreatedAt.Add(-window))).Scan(&recent)
		if err != nil {
			return err
		}
		if recent >= maxPerWindow {
			return ErrRateLimited
		}
		return q.batch(ctx, []step{
			{
				sql: `UPDATE one_time_codes SET used_at = $3
					WHERE recipient_id = $1 AND purpose = $2 AND used_at IS NULL`,
				args: []any{c.RecipientID, c.Purpose, created},
			},
			{
				sql: `INSERT INTO one_time_codes (id, recipient_id, purpose, salt, code_hash, created_at, expires_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				args: []any{NewID(), c.RecipientID, c.Purpose, c.Salt[:], c.Hash[:], created, at(c.ExpiresAt)},
			},
		})
	})
	if err != nil {
		return failed("create one-time code for recipient "+c.RecipientID, err)
	}
	return nil
}

// CodeResult is the outcome of UseOneTimeCode.
type CodeResult int

// Outcomes of UseOneTimeCode.
const (
	// CodeAccepted: the code matched the live code, which is now used up.
	CodeAccepted CodeResult = iota + 1
	// CodeWrong: the code did not match; the attempt was counted.
	CodeWrong
	// CodeMissing: there is no live code: none was sent, it expired, was used, was
	// superseded, or had too many wrong attempts.
	CodeMissing
)

// UseOneTimeCode checks a typed code against recipient id's live code for purpose at now.
// match is given the live code's salt and hash and reports, in constant time, whether the typed
// code hashes to it. A match uses the code up; a miss counts an attempt, and the code dies at
// maxAttempts. Concurrent calls take turns, so a code is accepted at most once.
func (s *Store) UseOneTimeCode(ctx context.Context, id string, purpose CodePurpose, now time.Time, maxAttempts int,
	match func(salt [16]byte, hash [32]byte) bool) (CodeResult, error) {
	if !purpose.valid() || maxAttempts < 1 || match == nil {
		return 0, fmt.Errorf("use one-time code: %w: need the purpose setup or reset, maxAttempts ≥ 1 and a matcher", ErrInvalid)
	}
	var result CodeResult
	err := s.db.inTx(ctx, func(q querier) error {
		if err := lockRecipient(ctx, q, s.db.lockRow(), id); err != nil {
			return err
		}
		var (
			codeID   string
			salt     []byte
			hash     [32]byte
			attempts int
		)
		err := q.queryRow(ctx,
			`SELECT id, salt, code_hash, attempts FROM one_time_codes
			WHERE recipient_id = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
			ORDER BY created_at DESC LIMIT 1`,
			id, purpose, at(now)).Scan(&codeID, &salt, hashDest{&hash}, &attempts)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && attempts >= maxAttempts) {
			result = CodeMissing
			return nil
		}
		if err != nil {
			return err
		}
		var s16 [16]byte
		if len(salt) != len(s16) {
			return fmt.Errorf("one-time code %s has a %d-byte salt", codeID, len(salt))
		}
		copy(s16[:], salt)
		if match(s16, hash) {
			result = CodeAccepted
			_, err = q.exec(ctx, `UPDATE one_time_codes SET used_at = $2 WHERE id = $1`, codeID, at(now))
			return err
		}
		result = CodeWrong
		_, err = q.exec(ctx, `UPDATE one_time_codes SET attempts = attempts + 1,
				used_at = CASE WHEN attempts + 1 >= $3 THEN $2 ELSE used_at END
			WHERE id = $1`, codeID, at(now), maxAttempts)
		return err
	})
	if err != nil {
		return 0, failed("use one-time code of recipient "+id, err)
	}
	return result, nil
}

// DeleteExpiredCodes deletes one-time codes that expired before before and returns how many.
// Keep them at least as long as the rate-limit window of CreateOneTimeCode.
func (s *Store) DeleteExpiredCodes(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.db.transact(ctx, []step{{
		sql:      `DELETE FROM one_time_codes WHERE expires_at < $1`,
		args:     []any{at(before)},
		affected: func(k int64) error { n = k; return nil },
	}})
	if err != nil {
		return 0, failed("delete expired one-time codes", err)
	}
	return int(n), nil
}

// recipientTx runs change in a transaction that holds recipient id's row lock and also audits
// ev. A missing recipient is ErrNotFound.
func (s *Store) recipientTx(ctx context.Context, id string, ev audit.Event, change func(q querier) error) error {
	insertEvent, err := s.pending(ev)
	if err != nil {
		return err
	}
	return s.db.inTx(ctx, func(q querier) error {
		if err := lockRecipient(ctx, q, s.db.lockRow(), id); err != nil {
			return err
		}
		if err := change(q); err != nil {
			return err
		}
		_, err := q.exec(ctx, insertEvent.sql, insertEvent.args...)
		return err
	})
}

func lockRecipient(ctx context.Context, q querier, lock, id string) error {
	var got string
	err := q.queryRow(ctx, `SELECT id FROM recipients WHERE id = $1`+lock, id).Scan(&got)
	return noRows(err)
}
