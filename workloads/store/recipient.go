package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// Recipient is a patient, known by phone number.
type Recipient struct {
	ID           string
	Phone        string // E.164
	PasswordHash string // PHC string (argon2id); "" until the patient sets a password
	OptedOut     bool   // replied STOP: no messages are accepted for them
	CreatedAt    time.Time
}

const recipientColumns = `id, phone, password_hash, opted_out, created_at`

func scanRecipient(r row) (Recipient, error) {
	var rc Recipient
	err := r.Scan(&rc.ID, &rc.Phone, stringDest{&rc.PasswordHash}, &rc.OptedOut, timeDest{&rc.CreatedAt})
	return rc, noRows(err)
}

// Recipient returns the recipient with id id, or ErrNotFound.
func (s *Store) Recipient(ctx context.Context, id string) (Recipient, error) {
	rc, err := scanRecipient(s.db.queryRow(ctx, `SELECT `+recipientColumns+` FROM recipients WHERE id = $1`, id))
	if err != nil {
		return Recipient{}, failed("read recipient "+id, err)
	}
	return rc, nil
}

// RecipientByPhone returns the recipient with phone number phone (E.164), or ErrNotFound.
func (s *Store) RecipientByPhone(ctx context.Context, phone string) (Recipient, error) {
	rc, err := scanRecipient(s.db.queryRow(ctx, `SELECT `+recipientColumns+` FROM recipients WHERE phone = $1`, phone))
	if err != nil {
		return Recipient{}, failed("read recipient by phone", err)
	}
	return rc, nil
}

// OptedOut reports whether the recipient with phone number phone (E.164) opted out; a number
// never seen has not. Concurrent calls share one query (the SMTP server asks at every RCPT).
func (s *Store) OptedOut(ctx context.Context, phone string) (bool, error) {
	var (
		out bool
		err error
	)
	if s.optOuts != nil {
		out, err = s.optOuts.Do(ctx, phone)
	} else {
		var outs []bool
		outs, _, err = s.optOutGroup(ctx, []string{phone})
		if err == nil {
			out = outs[0]
		}
	}
	if err != nil && !IsTemporary(err) {
		return false, failed("look up opt-out", err)
	}
	return out, err
}

// optOutGroup looks up the opt-out of every phone in one query.
func (s *Store) optOutGroup(ctx context.Context, phones []string) ([]bool, []error, error) {
	list, err := json.Marshal(phones)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.db.query(ctx, `SELECT phone FROM recipients WHERE opted_out AND phone IN (`+s.db.jsonStrings("$1")+`)`, string(list))
	if err != nil {
		return nil, nil, failed("look up opt-outs", err)
	}
	defer rows.Close()
	optedOut := map[string]bool{}
	for rows.Next() {
		var phone string
		if err := rows.Scan(&phone); err != nil {
			return nil, nil, failed("look up opt-outs", err)
		}
		optedOut[phone] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, failed("look up opt-outs", err)
	}
	out := make([]bool, len(phones))
	for i, p := range phones {
		out[i] = optedOut[p]
	}
	return out, make([]error, len(phones)), nil
}

// SetPassword stores the PHC string of the recipient's new password.
func (s *Store) SetPassword(ctx context.Context, id, passwordHash string) error {
	if passwordHash == "" {
		return fmt.Errorf("set password of recipient %s: %w: empty password hash", id, ErrInvalid)
	}
	err := s.updateRecipient(ctx, `UPDATE recipients SET password_hash = $2 WHERE id = $1`, id, passwordHash)
	if err != nil {
		return failed("set password of recipient "+id, err)
	}
	return nil
}

// SetOptOut records that the owner of phone opted out of (STOP) or back into (START)
// messages, creating the recipient if the number is new, and returns the recipient's id. The
// change is audited (opted-out / opted-in, actor "recipient", the recipient's id as detail) in
// the same transaction.
func (s *Store) SetOptOut(ctx context.Context, phone string, optedOut bool) (string, error) {
	if !e164.MatchString(phone) {
		return "", fmt.Errorf("set opt-out: %w: phone number is not in E.164 form", ErrInvalid)
	}
	kind := audit.KindOptedIn
	if optedOut {
		kind = audit.KindOptedOut
	}
	now := s.clock()
	var id string
	err := s.db.inTx(ctx, func(q querier) error {
		err := q.queryRow(ctx,
			`INSERT INTO recipients (id, phone, opted_out, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (phone) DO UPDATE SET opted_out = excluded.opted_out
			RETURNING id`, NewID(), phone, optedOut, now).Scan(&id)
		if err != nil {
			return err
		}
		ev, err := s.pending(audit.Event{Time: now, Kind: kind, Actor: "recipient", Detail: map[string]string{"recipient": id}})
		if err != nil {
			return err
		}
		_, err = q.exec(ctx, ev.sql, ev.args...)
		return err
	})
	if err != nil {
		return "", failed("set opt-out", err)
	}
	return id, nil
}

// updateRecipient runs an UPDATE of one recipient; no such recipient is ErrNotFound.
func (s *Store) updateRecipient(ctx context.Context, sql, id string, args ...any) error {
	return s.db.transact(ctx, []step{{
		sql:      sql,
		args:     append([]any{id}, args...),
		affected: requireRow,
	}})
}

// requireRow is a step check for a statement that must change exactly one row.
func requireRow(n int64) error {
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Session is a patient's remembered login in the viewer. Only a hash of the session id is
// stored, so a copy of the database does not log anyone in.
type Session struct {
	IDHash      [32]byte // SHA-256 of the session id in the patient's cookie
	RecipientID string
	CreatedAt   time.Time
	LastSeenAt  time.Time
	ExpiresAt   time.Time // absolute timeout
}

// Valid reports whether the session may be used at now: before its absolute timeout, and
// seen within idle.
func (s Session) Valid(now time.Time, idle time.Duration) bool {
	return now.Before(s.ExpiresAt) && now.Before(s.LastSeenAt.Add(idle))
}

// CreateSession stores a new session. A session id hash that is already stored is
// ErrConflict.
func (s *Store) CreateSession(ctx context.Context, sess Session) error {
	if sess.IDHash == ([32]byte{}) || sess.RecipientID == "" || sess.ExpiresAt.IsZero() {
		return fmt.Errorf("create session: %w: need an id hash, a recipient and an expiry", ErrInvalid)
	}
	now := s.clock()
	if sess.CreatedAt.IsZero() {
		sess.CreatedAt = now
	}
	if sess.LastSeenAt.IsZero() {
		sess.LastSeenAt = sess.CreatedAt
	}
	err := s.db.transact(ctx, []step{{
		sql: `INSERT INTO sessions (id_hash, recipient_id, created_at, last_seen_at, expires_at)
			VALUES ($1, $2, $3, $4, $5)`,
		args: []any{sess.IDHash[:], sess.RecipientID, at(sess.CreatedAt), at(sess.LastSeenAt), at(sess.ExpiresAt)},
	}})
	if uniqueViolation(err, "sessions") {
		return fmt.Errorf("create session for recipient %s: %w: session id already stored", sess.RecipientID, ErrConflict)
	}
	if err != nil {
		return failed("create session for recipient "+sess.RecipientID, err)
	}
	return nil
}

// Session returns the session whose id hashes to idHash, or ErrNotFound. It does not judge
// expiry: see Session.Valid.
func (s *Store) Session(ctx context.Context, idHash [32]byte) (Session, error) {
	sess := Session{IDHash: idHash}
	err := s.db.queryRow(ctx,
		`SELECT recipient_id, created_at, last_seen_at, expires_at FROM sessions WHERE id_hash = $1`, idHash[:],
	).Scan(&sess.RecipientID, timeDest{&sess.CreatedAt}, timeDest{&sess.LastSeenAt}, timeDest{&sess.ExpiresAt})
	if err != nil {
		return Session{}, failed("read session", noRows(err))
	}
	return sess, nil
}

// TouchSession records that the session was used at now (for the idle timeout).
func (s *Store) TouchSession(ctx context.Context, idHash [32]byte, now time.Time) error {
	err := s.db.transact(ctx, []step{{
		sql:      `UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1`,
		args:     []any{idHash[:], at(now)},
		affected: requireRow,
	}})
	if err != nil {
		return failed("touch session", err)
	}
	return nil
}

// DeleteSession deletes a session (logout). Deleting a session that is gone is not an error.
func (s *Store) DeleteSession(ctx context.Context, idHash [32]byte) error {
	err := s.db.transact(ctx, []step{{sql: `DELETE FROM sessions WHERE id_hash = $1`, args: []any{idHash[:]}}})
	if err != nil {
		return failed("delete session", err)
	}
	return nil
}

// DeleteExpiredSessions deletes the sessions that are past their absolute timeout at now or
// were last seen idle or longer before now, and returns how many.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	var n int64
	err := s.db.transact(ctx, []step{{
		sql:      `DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2`,
		args:     []any{at(now), at(now.Add(-idle))},
		affected: func(k int64) error { n = k; return nil },
	}})
	if err != nil {
		return 0, failed("delete expired sessions", err)
	}
	return int(n), nil
}
