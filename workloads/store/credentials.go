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

// ResetPassword replaces recipient id's password, ends every session of the recipient,
// forgets every sign-in attempt and every browser it signed in from, and audits ev, in one
// transaction: whoever knew the old password or held a session is signed out, and failures
// against the old password no longer count against the new one.
func (s *Store) ResetPassword(ctx context.Context, id, passwordHash string, ev audit.Event) error {
	if passwordHash == "" {
		return fmt.Errorf("reset password of recipient %s: %w: empty password hash", id, ErrInvalid)
	}
	err := s.recipientTx(ctx, id, ev, func(q querier) error {
		return q.batch(ctx, []step{
			{sql: `UPDATE recipients SET password_hash = $2 WHERE id = $1`, args: []any{id, passwordHash}},
			{sql: `DELETE FROM sessions WHERE recipient_id = $1`, args: []any{id}},
			{sql: `DELETE FROM login_attempts WHERE recipient_id = $1`, args: []any{id}},
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
	// Client is who asked for the code. The code works only in the browser that asked for it
	// (Client.Browser, required), so that another browser can neither use it nor use it up.
	Client    LoginClient
	CreatedAt time.Time
	ExpiresAt time.Time
}

// CodeLimits bound how many codes are texted within Window: PerClient for one client (a
// browser the recipient signed in from, else an address), and PerRecipient for all clients
// that are not trusted together (against SMS pumping). PerRecipient must exceed PerClient,
// so that no single client can use it up; a trusted browser is not held by it at all.
type CodeLimits struct {
	Window                  time.Duration
	PerClient, PerRecipient int
	// TrustWindow is how long after a sign-in a browser stays trusted (the sign-in failure
	// window).
	TrustWindow time.Duration
}

// CreateOneTimeCode stores c as the live code of its browser for its purpose (that browser's
// earlier live codes of the purpose stop working; other browsers' codes are untouched) and
// audits ev, in one transaction. Over a limit of lim it refuses with ErrRateLimited and
// stores nothing. Concurrent calls for one recipient take turns, so the limits hold under a
// burst.
func (s *Store) CreateOneTimeCode(ctx context.Context, c OneTimeCode, lim CodeLimits, ev audit.Event) error {
	switch {
	case c.RecipientID == "" || !c.Purpose.valid():
		return fmt.Errorf("create one-time code: %w: need a recipient and the purpose setup or reset", ErrInvalid)
	case c.CreatedAt.IsZero() || !c.ExpiresAt.After(c.CreatedAt):
		return fmt.Errorf("create one-time code: %w: need a creation time before the expiry", ErrInvalid)
	case c.Hash == [32]byte{} || c.Client.Browser == [32]byte{} || c.Client.Address == [32]byte{}:
		return fmt.Errorf("create one-time code: %w: need a code hash and the client's browser and address", ErrInvalid)
	case lim.PerClient < 1 || lim.PerRecipient <= lim.PerClient || lim.Window <= 0 || lim.TrustWindow <= 0:
		return fmt.Errorf("create one-time code: %w: need PerClient ≥ 1, PerRecipient > PerClient and positive windows", ErrInvalid)
	}
	created := at(c.CreatedAt)
	since := at(c.CreatedAt.Add(-lim.Window))
	err := s.recipientTx(ctx, c.RecipientID, ev, func(q querier) error {
		counts, key, err := loginCounts(ctx, q, c.RecipientID, c.Client, c.CreatedAt, lim.TrustWindow)
		if err != nil {
			return err
		}
		var byClient, byUntrusted int
		err = q.queryRow(ctx, `SELECT count(*) FROM one_time_codes WHERE recipient_id = $1 AND requester = $2 AND created_at > $3`,
			c.RecipientID, key[:], since).Scan(&byClient)
		if err != nil {
			return err
		}
		err = q.queryRow(ctx, `SELECT count(*) FROM one_time_codes WHERE recipient_id = $1 AND NOT trusted AND created_at > $2`,
			c.RecipientID, since).Scan(&byUntrusted)
		if err != nil {
			return err
		}
		if byClient >= lim.PerClient || (!counts.Trusted && byUntrusted >= lim.PerRecipient) {
			return ErrRateLimited
		}
		return q.batch(ctx, []step{
			{
				sql: `UPDATE one_time_codes SET used_at = $4
					WHERE recipient_id = $1 AND purpose = $2 AND client = $3 AND used_at IS NULL`,
				args: []any{c.RecipientID, c.Purpose, c.Client.Browser[:], created},
			},
			{
				sql: `INSERT INTO one_time_codes (id, recipient_id, purpose, salt, code_hash, created_at, expires_at, client, requester, trusted)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				args: []any{NewID(), c.RecipientID, c.Purpose, c.Salt[:], c.Hash[:], created, at(c.ExpiresAt),
					c.Client.Browser[:], key[:], counts.Trusted},
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
	// CodeMissing: there is no live code for the browser: none was sent to it, it
	// expired, was used, was superseded, or had too many wrong attempts.
	CodeMissing
)

// UseOneTimeCode checks a typed code against the live code for purpose that browser (a device
// token's hash) asked for on recipient id, at now. Codes other browsers asked for are neither
// tried nor used up. match is given the live code's salt and hash and reports, in constant time, whether the typed
// code hashes to it. A match uses the code up; a miss counts an attempt, and the code dies at
// maxAttempts. Concurrent calls take turns, so a code is accepted at most once.
func (s *Store) UseOneTimeCode(ctx context.Context, id string, purpose CodePurpose, browser [32]byte, now time.Time, maxAttempts int,
	match func(salt [16]byte, hash [32]byte) bool) (CodeResult, error) {
	if !purpose.valid() || maxAttempts < 1 || match == nil || browser == ([32]byte{}) {
		return 0, fmt.Errorf("use one-time code: %w: need the purpose setup or reset, the browser, maxAttempts ≥ 1 and a matcher", ErrInvalid)
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
			WHERE recipient_id = $1 AND purpose = $2 AND client = $4 AND used_at IS NULL AND expires_at > $3
			ORDER BY created_at DESC LIMIT 1`,
			id, purpose, at(now), browser[:]).Scan(&codeID, &salt, hashDest{&hash}, &attempts)
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

// Sign-in throttling (NIST SP 800-63B §5.2.2): every password attempt on a recipient is a
// row of login_attempts, keyed by recipient and client. The caller (the viewer) decides from
// LoginCounts whether an attempt may go ahead; the store makes that decision and the pending
// row one step under the recipient's row lock, so that concurrent attempts cannot overrun a
// limit, and records the outcome with its audit events in one transaction.

// LoginClient names who makes a sign-in attempt, as SHA-256 hashes of the keys (so a copy of
// the database holds no address and no usable token).
type LoginClient struct {
	// Browser is the hash of the browser's device token; zero if it has none.
	Browser [32]byte
	// Address is the hash of the client's address.
	Address [32]byte
}

// LoginCounts is what the throttle knows when an attempt begins: the attempts that failed,
// or are still under way, within the window.
type LoginCounts struct {
	// Trusted: the client is a browser the recipient signed in from within the window. A
	// trusted client is counted by its device token; any other by its address.
	Trusted bool
	// Client counts the failures of this client since its last successful sign-in;
	// ClientOldest is the oldest of them.
	Client       int
	ClientOldest time.Time
	// Shared counts the failures of every client that was not trusted, together;
	// SharedOldest and SharedLast are the oldest and the latest of them.
	Shared                   int
	SharedOldest, SharedLast time.Time
}

// LoginAttempt is an attempt that BeginLogin let go ahead, until LoginFailed or
// LoginSucceeded settles it. Until then it counts as a failure.
type LoginAttempt struct {
	ID          string
	RecipientID string
	Counts      LoginCounts // as they were before this attempt
}

// BeginLogin reads recipient id's LoginCounts for client over the window before now and asks
// allow whether an attempt may go ahead. If so, it stores the attempt as pending and returns
// it; if not, the LoginAttempt has no ID and nothing is stored. Concurrent calls for one
// recipient take turns. A missing recipient is ErrNotFound.
func (s *Store) BeginLogin(ctx context.Context, id string, client LoginClient, now time.Time, window time.Duration,
	allow func(LoginCounts) bool) (LoginAttempt, error) {
	if client.Address == ([32]byte{}) || window <= 0 || allow == nil {
		return LoginAttempt{}, fmt.Errorf("begin sign-in of recipient %s: %w: need a client address, a positive window and a decision", id, ErrInvalid)
	}
	att := LoginAttempt{RecipientID: id}
	err := s.db.inTx(ctx, func(q querier) error {
		if err := lockRecipient(ctx, q, s.db.lockRow(), id); err != nil {
			return err
		}
		c, key, err := loginCounts(ctx, q, id, client, now, window)
		if err != nil {
			return err
		}
		att.Counts = c
		if !allow(c) {
			return nil
		}
		att.ID = NewID()
		_, err = q.exec(ctx, `INSERT INTO login_attempts (id, recipient_id, client, trusted, outcome, at)
			VALUES ($1, $2, $3, $4, 'pending', $5)`, att.ID, id, key[:], c.Trusted, at(now))
		return err
	})
	if err != nil {
		return LoginAttempt{}, failed("begin sign-in of recipient "+id, err)
	}
	return att, nil
}

// loginCounts reads the counts of client on recipient id and returns them with the key the
// client is counted by.
func loginCounts(ctx context.Context, q reader, id string, client LoginClient, now time.Time, window time.Duration) (LoginCounts, [32]byte, error) {
	var c LoginCounts
	since := now.Add(-window)
	key := client.Address
	if client.Browser != ([32]byte{}) {
		var lastSuccess time.Time
		err := q.queryRow(ctx, `SELECT max(at) FROM login_attempts
			WHERE recipient_id = $1 AND client = $2 AND outcome = 'succeeded' AND at > $3`,
			id, client.Browser[:], at(since)).Scan(timeDest{&lastSuccess})
		if err != nil {
			return c, key, err
		}
		if !lastSuccess.IsZero() {
			c.Trusted, key, since = true, client.Browser, lastSuccess
		}
	}
	err := q.queryRow(ctx, `SELECT count(*), min(at) FROM login_attempts
		WHERE recipient_id = $1 AND client = $2 AND outcome <> 'succeeded' AND at > $3`,
		id, key[:], at(since)).Scan(&c.Client, timeDest{&c.ClientOldest})
	if err != nil {
		return c, key, err
	}
	err = q.queryRow(ctx, `SELECT count(*), min(at), max(at) FROM login_attempts
		WHERE recipient_id = $1 AND NOT trusted AND outcome <> 'succeeded' AND at > $2`,
		id, at(now.Add(-window))).Scan(&c.Shared, timeDest{&c.SharedOldest}, timeDest{&c.SharedLast})
	return c, key, err
}

// LoginFailed records that attempt a failed and audits events, in one transaction: a failed
// sign-in, and a limit it reaches, are never stored without their audit events.
func (s *Store) LoginFailed(ctx context.Context, a LoginAttempt, events ...audit.Event) error {
	steps := make([]step, 0, 1+len(events))
	steps = append(steps, step{
		sql:      `UPDATE login_attempts SET outcome = 'failed' WHERE id = $1 AND outcome = 'pending'`,
		args:     []any{a.ID},
		affected: requireRow,
	})
	for _, ev := range events {
		insert, err := s.pending(ev)
		if err != nil {
			return failed("record failed sign-in of recipient "+a.RecipientID, err)
		}
		steps = append(steps, insert)
	}
	err := s.db.inTx(ctx, func(q querier) error { return q.batch(ctx, steps) })
	if err != nil {
		return failed("record failed sign-in of recipient "+a.RecipientID, err)
	}
	return nil
}

// LoginSucceeded settles attempt a as a success: the attempt no longer counts, and browser
// (a device token's hash) becomes a browser the recipient signed in from at now.
func (s *Store) LoginSucceeded(ctx context.Context, a LoginAttempt, browser [32]byte, now time.Time) error {
	err := s.db.inTx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `DELETE FROM login_attempts WHERE id = $1 AND outcome = 'pending'`, a.ID); err != nil {
			return err
		}
		return trustBrowser(ctx, q, a.RecipientID, browser, now)
	})
	if err != nil {
		return failed("record sign-in of recipient "+a.RecipientID, err)
	}
	return nil
}

// LoginAbandoned forgets attempt a, which ended before the password was checked (the
// password hashing slots were busy): it counts neither way.
func (s *Store) LoginAbandoned(ctx context.Context, a LoginAttempt) error {
	err := s.db.transact(ctx, []step{{sql: `DELETE FROM login_attempts WHERE id = $1 AND outcome = 'pending'`, args: []any{a.ID}}})
	if err != nil {
		return failed("forget sign-in attempt of recipient "+a.RecipientID, err)
	}
	return nil
}

// TrustBrowser records that recipient id signed in from browser at now without a password
// attempt (a first password, a reset): the browser is then trusted like after a password.
func (s *Store) TrustBrowser(ctx context.Context, id string, browser [32]byte, now time.Time) error {
	err := s.db.inTx(ctx, func(q querier) error {
		if err := lockRecipient(ctx, q, s.db.lockRow(), id); err != nil {
			return err
		}
		return trustBrowser(ctx, q, id, browser, now)
	})
	if err != nil {
		return failed("trust browser of recipient "+id, err)
	}
	return nil
}

func trustBrowser(ctx context.Context, q querier, id string, browser [32]byte, now time.Time) error {
	if browser == ([32]byte{}) {
		return fmt.Errorf("%w: need the browser's device token", ErrInvalid)
	}
	return q.batch(ctx, []step{
		{
			sql:  `DELETE FROM login_attempts WHERE recipient_id = $1 AND client = $2 AND outcome = 'succeeded'`,
			args: []any{id, browser[:]},
		},
		{
			sql: `INSERT INTO login_attempts (id, recipient_id, client, trusted, outcome, at)
				VALUES ($1, $2, $3, true, 'succeeded', $4)`,
			args: []any{NewID(), id, browser[:], at(now)},
		},
	})
}

// DeleteLoginAttempts deletes the sign-in attempts older than before, which no longer count,
// and returns how many.
func (s *Store) DeleteLoginAttempts(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.db.transact(ctx, []step{{
		sql:      `DELETE FROM login_attempts WHERE at < $1`,
		args:     []any{at(before)},
		affected: func(k int64) error { n = k; return nil },
	}})
	if err != nil {
		return 0, failed("delete old sign-in attempts", err)
	}
	return int(n), nil
}
