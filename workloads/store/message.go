package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// Status is where a message is in its life.
type Status string

// Message statuses. Revoked, expired and purged are final.
const (
	StatusAccepted  Status = "accepted"  // stored; the SMS is queued
	StatusNotified  Status = "notified"  // the SMS provider took the SMS
	StatusDelivered Status = "delivered" // the provider reports the SMS delivered
	StatusFailed    Status = "failed"    // the SMS could not be delivered
	StatusOpened    Status = "opened"    // the link was opened (possibly by a link previewer)
	StatusRead      Status = "read"      // the patient authenticated and revealed the message
	StatusExpired   Status = "expired"   // the link's time ran out
	StatusRevoked   Status = "revoked"   // the sender withdrew the message
	StatusPurged    Status = "purged"    // content deleted and its data key destroyed
)

// Final reports whether s is final: no later status can replace it.
func (s Status) Final() bool {
	return s == StatusExpired || s == StatusRevoked || s == StatusPurged
}

// progress orders the statuses a message moves through. News can arrive out of order (a
// provider's delivery report after the patient opened the link); it is audited, but never
// moves the status back.
var progress = map[Status]int{
	StatusAccepted: 0, StatusNotified: 1, StatusDelivered: 2, StatusFailed: 2,
	StatusOpened: 3, StatusRead: 4, StatusExpired: 5, StatusRevoked: 5, StatusPurged: 6,
}

// nextStatus decides the status of a message in status from that learns of to: to if it is
// progress, from if it is late news, ErrConflict if from is final.
func nextStatus(from, to Status) (Status, error) {
	if from.Final() {
		return from, fmt.Errorf("%w: status %s is final", ErrConflict, from)
	}
	if progress[to] < progress[from] {
		return from, nil
	}
	return to, nil
}

// Channel is how a message reached the gateway.
type Channel string

// Channels.
const (
	ChannelSMTP Channel = "smtp"
	ChannelAPI  Channel = "api"
)

// Message is a stored message without its content.
type Message struct {
	ID                string
	Sender            string // the sender's account id
	RecipientID       string
	Status            Status
	WrappedKey        string // the data key wrapped by the tenant key; "" once purged
	LinkTokenHash     [32]byte
	Channel           Channel
	CreatedAt         time.Time
	ExpiresAt         time.Time
	StatusChangedAt   time.Time
	ProviderMessageID string // the SMS provider's id for the notification, once sent
}

// Part is one encrypted part of a message.
type Part struct {
	Name       string // "body", "attachment/0", …
	Ciphertext []byte // an envelope (package envelope) that package sealed binds to the part's name
}

// AcceptRequest is a message the gateway accepts.
type AcceptRequest struct {
	MessageID     string // from NewID
	Sender        string
	Phone         string // the recipient, E.164
	Channel       Channel
	WrappedKey    string
	LinkTokenHash [32]byte // SHA-256 of the link token; the token itself is never stored
	Parts         []Part
	ExpiresAt     time.Time
	// NotifyPayload is stored with the outbox row for the notifier, which needs what the store
	// keeps no other way (the link token is stored only as a hash): e.g. the token sealed for
	// the notifier. It is deleted once the notification is sent or has failed.
	NotifyPayload []byte
	// IdempotencyKey, if set, makes a retry of the same request (same RequestHash) return the
	// first result instead of storing the message again. Keys are scoped to the sender.
	IdempotencyKey string
	RequestHash    [32]byte // SHA-256 of the request's canonical form; required with a key
}

// AcceptResult says what AcceptMessage stored.
type AcceptResult struct {
	MessageID   string
	RecipientID string
	// CreatedAt and ExpiresAt are the stored message's, as stored (whole microseconds, UTC).
	CreatedAt, ExpiresAt time.Time
	// Replayed is true when the idempotency key had already accepted this request: nothing
	// new was stored, and MessageID is the first request's message.
	Replayed bool
}

// e164 is an E.164 number: +, a country code not starting with 0, at most 15 digits.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// maxIdempotencyKey bounds a key; the IETF draft's examples are UUIDs.
const maxIdempotencyKey = 255

// check returns why r cannot be stored, never quoting the phone number.
func (r AcceptRequest) check(now time.Time) error {
	switch {
	case !validID(r.MessageID):
		return errInvalid("message id must be 1 to 128 printable ASCII characters")
	case r.Sender == "":
		return errInvalid("message %s has no sender", r.MessageID)
	case !e164.MatchString(r.Phone):
		return errInvalid("message %s: recipient phone number is not in E.164 form", r.MessageID)
	case r.Channel != ChannelSMTP && r.Channel != ChannelAPI:
		return errInvalid("message %s: channel must be smtp or api", r.MessageID)
	case r.WrappedKey == "":
		return errInvalid("message %s has no wrapped data key", r.MessageID)
	case r.LinkTokenHash == [32]byte{}:
		return errInvalid("message %s has no link token hash", r.MessageID)
	case len(r.Parts) == 0:
		return errInvalid("message %s has no parts", r.MessageID)
	case !r.ExpiresAt.After(now):
		return errInvalid("message %s expires before it is accepted", r.MessageID)
	case len(r.IdempotencyKey) > maxIdempotencyKey:
		return errInvalid("message %s: idempotency key is longer than %d bytes", r.MessageID, maxIdempotencyKey)
	case r.IdempotencyKey != "" && r.RequestHash == [32]byte{}:
		return errInvalid("message %s: an idempotency key needs the request hash", r.MessageID)
	}
	names := make(map[string]bool, len(r.Parts))
	for _, p := range r.Parts {
		if p.Name == "" || names[p.Name] {
			return errInvalid("message %s: part names must be non-empty and distinct", r.MessageID)
		}
		names[p.Name] = true
	}
	return nil
}

// errKeyUsed means an accept found its idempotency key already stored.
var errKeyUsed = errors.New("idempotency key already used")

// AcceptMessage stores a new message with everything that goes with it, in one transaction:
// the recipient (created on first use), the message and its parts, the idempotency key, the
// "accepted" audit event and the outbox row that will send the SMS. It returns after the
// commit is durable.
//
// It refuses with ErrOptedOut, storing nothing, if the recipient opted out; with ErrConflict
// if the message id or link token hash is taken; with ErrIdempotencyConflict if the key was
// used for a different request. A repeated request with the same key and request hash returns
// the first result with Replayed set, also if the recipient opted out since.
//
// If the connection is lost during the commit, the error is temporary but the message may have
// been stored: the sender's retry then stores it twice unless it carries an idempotency key.
func (s *Store) AcceptMessage(ctx context.Context, r AcceptRequest) (AcceptResult, error) {
	now := s.clock()
	if err := r.check(now); err != nil {
		return AcceptResult{}, fmt.Errorf("accept message: %w", err)
	}
	// A key can disappear between the failed insert and the lookup only if it was purged in
	// between; then the second attempt stores the message.
	for attempt := range 2 {
		var (
			res AcceptResult
			err error
		)
		if attempt == 0 && s.accepts != nil {
			res, err = s.accepts.Do(ctx, acceptCall{r: r, now: now})
		} else {
			res, err = s.accept(ctx, r, now)
		}
		if !errors.Is(err, errKeyUsed) {
			return res, err
		}
		res, err = s.replay(ctx, r)
		if !errors.Is(err, ErrNotFound) {
			return res, err
		}
	}
	return AcceptResult{}, fmt.Errorf("accept message %s: %w: idempotency key keeps changing", r.MessageID, ErrUnavailable)
}

// accept stores r in a transaction of its own: one round trip to PostgreSQL, every statement
// in one pipeline that commits as a whole or not at all. So nothing waits for an answer before
// the next statement, and every refusal is the database's: the idempotency key's primary key,
// the opted-out trigger on messages, the unique message id and link token hash.
func (s *Store) accept(ctx context.Context, r AcceptRequest, now time.Time) (AcceptResult, error) {
	steps, res, err := s.acceptSteps(r, now)
	if err != nil {
		return AcceptResult{}, err
	}
	return *res, acceptError(r, s.db.transact(ctx, steps))
}

// acceptGroup stores the requests of concurrent AcceptMessage calls in one transaction: one
// commit, and one WAL flush, for the group. If the database refuses any statement the group
// rolls back and each request is stored on its own, so that each gets its own answer (a
// replay, an opted-out recipient, a conflict). A lost connection fails the whole group with
// a temporary error, as it would fail a single accept.
func (s *Store) acceptGroup(ctx context.Context, calls []acceptCall) ([]AcceptResult, []error, error) {
	results := make([]AcceptResult, len(calls))
	errs := make([]error, len(calls))
	if len(calls) == 1 {
		results[0], errs[0] = s.accept(ctx, calls[0].r, calls[0].now)
		return results, errs, nil
	}
	var steps []step
	res := make([]*AcceptResult, len(calls))
	for i, c := range calls {
		st, r, err := s.acceptSteps(c.r, c.now)
		if err != nil {
			errs[i] = err
			continue
		}
		steps, res[i] = append(steps, st...), r
	}
	err := s.db.transact(ctx, steps)
	if err != nil && !refusedByDatabase(err) {
		return nil, nil, failed("accept messages", err)
	}
	for i, c := range calls {
		switch {
		case errs[i] != nil:
		case err != nil:
			results[i], errs[i] = s.accept(ctx, c.r, c.now)
		default:
			results[i] = *res[i]
		}
	}
	return results, errs, nil
}

// acceptCall is one AcceptMessage call waiting for its group.
type acceptCall struct {
	r   AcceptRequest
	now time.Time
}

// acceptSteps returns the statements that store r, and the result they fill in.
func (s *Store) acceptSteps(r AcceptRequest, now time.Time) ([]step, *AcceptResult, error) {
	res := &AcceptResult{MessageID: r.MessageID, CreatedAt: now, ExpiresAt: at(r.ExpiresAt)}
	ev, err := s.pending(audit.Event{
		Time: now, Kind: audit.KindAccepted, Actor: r.Sender, MessageID: r.MessageID,
		Detail: map[string]string{"channel": string(r.Channel), "parts": strconv.Itoa(len(r.Parts))},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("accept message %s: %w", r.MessageID, err)
	}

	steps := make([]step, 0, 5+len(r.Parts))
	if r.IdempotencyKey != "" {
		// First, so that a replay fails before anything else is done, even for a recipient
		// who opted out since. Its foreign key to the message is checked at commit.
		steps = append(steps, step{
			sql: `INSERT INTO idempotency_keys (scope, key, request_hash, message_id, created_at)
				VALUES ($1, $2, $3, $4, $5)`,
			args: []any{r.Sender, r.IdempotencyKey, r.RequestHash[:], r.MessageID, now},
		})
	}
	steps = append(steps,
		// Get or create the recipient without locking it: many messages for one patient are
		// accepted at once. The insert waits only for a concurrent insert of the same phone,
		// and the next statement sees whichever row won.
		step{
			sql:  `INSERT INTO recipients (id, phone, created_at) VALUES ($1, $2, $3) ON CONFLICT (phone) DO NOTHING`,
			args: []any{NewID(), r.Phone, now},
		},
		step{
			sql: `INSERT INTO messages (id, sender, recipient_id, status, wrapped_key, link_token_hash,
					channel, created_at, expires_at, status_changed_at)
				VALUES ($1, $2, (SELECT id FROM recipients WHERE phone = $3), $4, $5, $6, $7, $8, $9, $8)
				RETURNING recipient_id`,
			args: []any{r.MessageID, r.Sender, r.Phone, StatusAccepted, r.WrappedKey, r.LinkTokenHash[:],
				r.Channel, now, at(r.ExpiresAt)},
			row: func(scan func(...any) error) error { return scan(&res.RecipientID) },
		},
	)
	for i, p := range r.Parts {
		steps = append(steps, step{
			sql:  `INSERT INTO message_parts (message_id, name, position, ciphertext) VALUES ($1, $2, $3, $4)`,
			args: []any{r.MessageID, p.Name, i, p.Ciphertext},
		})
	}
	steps = append(steps, ev,
		step{
			sql: `INSERT INTO outbox (message_id, kind, payload, created_at, next_attempt_at)
				VALUES ($1, 'notify', $2, $3, $3)`,
			args: []any{r.MessageID, r.NotifyPayload, now},
		},
	)
	return steps, res, nil
}

// acceptError turns the error of r's transaction into AcceptMessage's.
func acceptError(r AcceptRequest, err error) error {
	switch {
	case err == nil:
		return nil
	case uniqueViolation(err, "idempotency_keys"):
		return errKeyUsed
	case violates(err, "messages_recipient_opted_in"):
		return fmt.Errorf("accept message %s: %w", r.MessageID, ErrOptedOut)
	case uniqueViolation(err, "messages"), uniqueViolation(err, "message_parts"):
		// The driver's error can quote the conflicting key; it is not passed on.
		return fmt.Errorf("accept message %s: %w: message id or link token hash already stored", r.MessageID, ErrConflict)
	}
	return failed("accept message "+r.MessageID, err)
}

// replay returns the first result of the request that stored r's idempotency key.
func (s *Store) replay(ctx context.Context, r AcceptRequest) (AcceptResult, error) {
	var (
		hash [32]byte
		res  = AcceptResult{Replayed: true}
	)
	err := s.db.queryRow(ctx,
		`SELECT k.request_hash, k.message_id, m.recipient_id, m.created_at, m.expires_at
		FROM idempotency_keys k JOIN messages m ON m.id = k.message_id
		WHERE k.scope = $1 AND k.key = $2`,
		r.Sender, r.IdempotencyKey,
	).Scan(hashDest{&hash}, &res.MessageID, &res.RecipientID, timeDest{&res.CreatedAt}, timeDest{&res.ExpiresAt})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return AcceptResult{}, ErrNotFound
	case err != nil:
		return AcceptResult{}, failed("accept message "+r.MessageID+": look up idempotency key", err)
	case !bytes.Equal(hash[:], r.RequestHash[:]):
		return AcceptResult{}, fmt.Errorf("accept message %s: %w (first used for message %s)", r.MessageID, ErrIdempotencyConflict, res.MessageID)
	}
	return res, nil
}

// PurgeIdempotencyKeys deletes keys stored before before and returns how many. Keys must
// live at least as long as senders retry (24 hours or more).
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.db.transact(ctx, []step{{
		sql:      `DELETE FROM idempotency_keys WHERE created_at < $1`,
		args:     []any{at(before)},
		affected: func(k int64) error { n = k; return nil },
	}})
	if err != nil {
		return 0, failed("purge idempotency keys", err)
	}
	return int(n), nil
}

const messageColumns = `id, sender, recipient_id, status, wrapped_key, link_token_hash, channel,
	created_at, expires_at, status_changed_at, provider_message_id`

func scanMessage(r row) (Message, error) {
	var m Message
	err := r.Scan(&m.ID, &m.Sender, &m.RecipientID, &m.Status, stringDest{&m.WrappedKey}, hashDest{&m.LinkTokenHash},
		&m.Channel, timeDest{&m.CreatedAt}, timeDest{&m.ExpiresAt}, timeDest{&m.StatusChangedAt},
		stringDest{&m.ProviderMessageID})
	if errors.Is(err, sql.ErrNoRows) {
		return Message{}, ErrNotFound
	}
	return m, err
}

// Message returns the message with id id, or ErrNotFound.
func (s *Store) Message(ctx context.Context, id string) (Message, error) {
	m, err := scanMessage(s.db.queryRow(ctx, `SELECT `+messageColumns+` FROM messages WHERE id = $1`, id))
	if err != nil {
		return Message{}, failed("read message "+id, err)
	}
	return m, nil
}

// MessageByProviderID returns the message whose notification the SMS provider knows as
// providerMessageID (for delivery reports), or ErrNotFound.
func (s *Store) MessageByProviderID(ctx context.Context, providerMessageID string) (Message, error) {
	m, err := scanMessage(s.db.queryRow(ctx, `SELECT `+messageColumns+` FROM messages WHERE provider_message_id = $1`, providerMessageID))
	if err != nil {
		return Message{}, failed("read message by provider message id", err)
	}
	return m, nil
}

// MessageParts returns the parts of message id in the order they were accepted: none once
// the message is purged, ErrNotFound if there is no such message.
func (s *Store) MessageParts(ctx context.Context, id string) ([]Part, error) {
	rows, err := s.db.query(ctx,
		`SELECT p.name, p.ciphertext FROM messages m LEFT JOIN message_parts p ON p.message_id = m.id
		WHERE m.id = $1 ORDER BY p.position`, id)
	if err != nil {
		return nil, failed("read parts of message "+id, err)
	}
	defer rows.Close()
	var (
		parts []Part
		found bool
	)
	for rows.Next() {
		found = true
		var (
			name       sql.NullString
			ciphertext []byte
		)
		if err := rows.Scan(&name, &ciphertext); err != nil {
			return nil, failed("read parts of message "+id, err)
		}
		if name.Valid {
			parts = append(parts, Part{Name: name.String, Ciphertext: ciphertext})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, failed("read parts of message "+id, err)
	}
	if !found {
		return nil, failed("read parts of message "+id, ErrNotFound)
	}
	return parts, nil
}

// Transition records news about message id: ev is audited, and the status moves to to unless
// that would move it back (late news). Moving out of a final status is refused with
// ErrConflict and nothing is recorded. Moving to a final status cancels a notification that
// was not sent yet. Use Purge to purge.
func (s *Store) Transition(ctx context.Context, id string, to Status, ev audit.Event) error {
	if _, ok := progress[to]; !ok || to == StatusAccepted || to == StatusPurged {
		return fmt.Errorf("change status of message %s: %w: cannot move to %q", id, ErrInvalid, to)
	}
	err := s.changeMessage(ctx, id, ev, func(q querier, now time.Time, from Status) error {
		next, err := nextStatus(from, to)
		if err != nil || next == from {
			return err
		}
		return q.batch(ctx, s.setStatus(oneMessage(id), next, now))
	})
	if err != nil {
		return failed(fmt.Sprintf("change status of message %s to %s", id, to), err)
	}
	return nil
}

// Purge deletes the content of message id for good: its parts, replies and wrapped data key (so
// that copies of the ciphertext in backups cannot be opened either), cancels a notification
// not yet sent, sets the status to purged and audits ev, in one transaction. Purging from any
// status is allowed (retention purges expired messages); a purged message is ErrConflict.
func (s *Store) Purge(ctx context.Context, id string, ev audit.Event) error {
	err := s.changeMessage(ctx, id, ev, func(q querier, now time.Time, from Status) error {
		if from == StatusPurged {
			return fmt.Errorf("%w: already purged", ErrConflict)
		}
		return q.batch(ctx, s.purgeSteps(oneMessage(id), now))
	})
	if err != nil {
		return failed("purge message "+id, err)
	}
	return nil
}

// changeMessage runs change on message id, locked, in a transaction that also audits ev.
func (s *Store) changeMessage(ctx context.Context, id string, ev audit.Event, change func(q querier, now time.Time, from Status) error) error {
	if ev.MessageID == "" {
		ev.MessageID = id
	}
	if ev.MessageID != id {
		return errInvalid("audit event names message %s", ev.MessageID)
	}
	now := s.clock()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	insertEvent, err := s.pending(ev)
	if err != nil {
		return err
	}
	return s.db.inTx(ctx, func(q querier) error {
		var from Status
		err := q.queryRow(ctx, `SELECT status FROM messages WHERE id = $1`+s.db.lockRow(), id).Scan(&from)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := change(q, now, from); err != nil {
			return err
		}
		return q.batch(ctx, []step{insertEvent})
	})
}

// messageSet names the messages that statements change: one id, or many in a JSON array, as
// conditions on messages.id (byID) and on another table's message_id (byMessageID), both on
// parameter $1.
type messageSet struct {
	byID, byMessageID string
	arg               any
}

// oneMessage is the set of message id alone.
func oneMessage(id string) messageSet {
	return messageSet{byID: `id = $1`, byMessageID: `message_id = $1`, arg: id}
}

// chosenMessages is the set of the messages whose ids are list, a JSON array of strings, and
// whose status meets condition (SQL on messages' columns). Statements that come after the
// transaction locked those messages see the same set, provided that no status can come to
// meet condition again once it stopped (changeMessages); the statement that changes the
// status must be the last to use the set.
func (s *Store) chosenMessages(list, condition string) messageSet {
	byID := s.db.idIn("id", s.db.jsonStrings("$1")) + ` AND ` + condition
	return messageSet{byID: byID, byMessageID: s.db.idIn("message_id", `SELECT id FROM messages WHERE `+byID), arg: list}
}

// setStatus returns the statements that set the messages of set to status to. A final status
// also shreds the key if it is purged, and cancels the notification if it was not sent yet.
// The messages are changed last, for a set chosen by status (chosenMessages).
func (s *Store) setStatus(set messageSet, to Status, now time.Time) []step {
	var steps []step
	if to.Final() {
		steps = append(steps, step{
			sql: `UPDATE outbox SET failed_at = $2, last_error = $3, claimed_until = NULL, payload = NULL
				WHERE ` + set.byMessageID + ` AND sent_at IS NULL AND failed_at IS NULL`,
			args: []any{set.arg, now, "message-" + string(to)},
		})
	}
	return append(steps, step{
		sql: `UPDATE messages SET status = $2, status_changed_at = $3,
				wrapped_key = CASE WHEN $2 = 'purged' THEN NULL ELSE wrapped_key END
			WHERE ` + set.byID,
		args: []any{set.arg, to, now},
	})
}

// purgeSteps returns the statements that purge the messages of set: their parts and replies
// are deleted, their wrapped data keys destroyed (so that copies of the ciphertext in backups
// cannot be opened either), and their status set to purged, last (see setStatus).
func (s *Store) purgeSteps(set messageSet, now time.Time) []step {
	steps := []step{
		{sql: `DELETE FROM message_parts WHERE ` + set.byMessageID, args: []any{set.arg}},
		{sql: `DELETE FROM replies WHERE ` + set.byMessageID, args: []any{set.arg}},
	}
	return append(steps, s.setStatus(set, StatusPurged, now)...)
}
