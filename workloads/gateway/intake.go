// Package gateway is the sender's side of SecureText: the SMTP submission server and the REST
// API take messages in, Intake stores them encrypted, and the Notifier texts each patient a
// link.
//
// Guarantees:
//   - A message is acknowledged (SMTP 250, HTTP 201) only after its ciphertext, wrapped data
//     key, audit event and outbox row have committed in one transaction.
//   - A keystore or database outage is a temporary failure (SMTP 451 4.3.0, HTTP 503 with
//     Retry-After) so that the sender retries; nothing half-stored is ever acknowledged.
//   - The SMS holds the tenant's name, a link and the opt-out text, never the subject or body.
//   - Logs, errors and metric labels carry message ids and short codes, never phone numbers
//     or content.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// KeyWrapper makes data keys: the keystore client (or, embedded, a keystore backend).
type KeyWrapper interface {
	WrapNewKey(ctx context.Context) (keystore.DataKey, error)
}

// Submission is one message to one recipient, as a front end (SMTP, REST) parsed it.
type Submission struct {
	Sender  string // the authenticated sender's account id
	Channel store.Channel
	To      string // the recipient, E.164
	Content content.Message
	// ExpiresIn is how long the link works; 0 is the intake's default.
	ExpiresIn time.Duration
	// IdempotencyKey makes a retried submission return the first result; RequestHash is the
	// SHA-256 of the request's canonical form, so a key reused for another request is refused.
	IdempotencyKey string
	RequestHash    [32]byte
}

// Accepted is a stored message.
type Accepted struct {
	MessageID string
	CreatedAt time.Time // as stored
	ExpiresAt time.Time // as stored
	// Replayed means an earlier submission with the same idempotency key stored it.
	Replayed bool
}

// Intake encrypts and stores submissions.
type Intake struct {
	Tenant        string
	Store         *store.Store
	Keys          KeyWrapper
	DefaultExpiry time.Duration // default 7 days
	MaxExpiry     time.Duration // default 30 days
	// PolicyLinkExpiry, if set, returns the unreadLinkExpiry of the tenant's retention policy
	// (0 while there is none): no link is made to work longer, whatever the sender asks.
	PolicyLinkExpiry func() time.Duration
	Now              func() time.Time
	// Accepted, if set, is called after each new message is stored, with its id and link
	// token (the notifier's Handoff, which then need not unwrap the data key to read it).
	Accepted func(messageID, link string)
}

// Refusal reasons: short codes for metrics, audit and problem types.
const (
	ReasonInvalidRecipient    = "invalid-recipient"
	ReasonOptedOut            = "opted-out"
	ReasonTooLarge            = "too-large"
	ReasonInvalid             = "invalid"
	ReasonIdempotencyConflict = "idempotency-conflict"
	ReasonWrongDomain         = "wrong-domain"
	ReasonUnauthenticated     = "unauthenticated"
	ReasonRateLimited         = "rate-limited"
	ReasonUnavailable         = "unavailable"
	ReasonInternal            = "internal"
)

// RefusedError is a submission refused for good: the sender must change something.
type RefusedError struct {
	Reason string // one of the Reason constants
	Field  string // the request field at fault, when there is one ("to", "expires_in", …)
	Detail string // what to fix, for the sender; never PHI beyond the sender's own input
}

func (e *RefusedError) Error() string { return e.Detail }

// Refused returns a RefusedError.
func Refused(reason, field, format string, args ...any) error {
	return &RefusedError{Reason: reason, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// ErrUnavailable means a dependency (keystore, database) cannot serve now: answer SMTP 451 or
// HTTP 503 so that the sender retries.
var ErrUnavailable = errors.New("temporarily unable to store messages; retry later")

// Temporary reports whether err is a failure the sender should retry.
func Temporary(err error) bool { return errors.Is(err, ErrUnavailable) }

// Reason returns the refusal reason code of err, for metrics.
func Reason(err error) string {
	var r *RefusedError
	switch {
	case errors.As(err, &r):
		return r.Reason
	case Temporary(err):
		return ReasonUnavailable
	default:
		return ReasonInternal
	}
}

const (
	defaultExpiry = 7 * 24 * time.Hour
	maxExpiry     = 30 * 24 * time.Hour
)

// Accept encrypts s under a fresh data key and stores it with its audit event and outbox row.
// It returns a *RefusedError when the sender must change something, an error matching
// ErrUnavailable when a dependency is down, and otherwise only after a durable commit.
func (in *Intake) Accept(ctx context.Context, s Submission) (Accepted, error) {
	now := time.Now
	if in.Now != nil {
		now = in.Now
	}
	expiresIn, err := in.expiry(s.ExpiresIn)
	if err != nil {
		return Accepted{}, err
	}
	parts, err := s.Content.Parts()
	if err != nil {
		return Accepted{}, Refused(ReasonInvalid, "", "message cannot be encoded: %v", err)
	}
	dk, err := in.Keys.WrapNewKey(ctx)
	if err != nil {
		return Accepted{}, unavailable("wrap a data key", err)
	}
	defer envelope.Zero(dk.Plaintext)

	id := store.NewID()
	link := token.New()
	req := store.AcceptRequest{
		MessageID:      id,
		Sender:         s.Sender,
		Phone:          s.To,
		Channel:        s.Channel,
		WrappedKey:     dk.Wrapped,
		LinkTokenHash:  token.Hash(link),
		ExpiresAt:      now().Add(expiresIn),
		IdempotencyKey: s.IdempotencyKey,
		RequestHash:    s.RequestHash,
	}
	sm := sealed.Message{Tenant: in.Tenant, ID: id, Key: dk.Plaintext}
	if req.Parts, err = sm.SealParts(parts); err != nil {
		return Accepted{}, err
	}
	// The notifier needs the link token, which the store keeps only as a hash: it travels in
	// the outbox row sealed under the message's own data key, and is deleted once sent.
	if req.NotifyPayload, err = sm.SealLink(link); err != nil {
		return Accepted{}, err
	}

	res, err := in.Store.AcceptMessage(ctx, req)
	switch {
	case err == nil:
		if !res.Replayed && in.Accepted != nil {
			in.Accepted(res.MessageID, link)
		}
		return Accepted{MessageID: res.MessageID, CreatedAt: res.CreatedAt, ExpiresAt: res.ExpiresAt, Replayed: res.Replayed}, nil
	case errors.Is(err, store.ErrOptedOut):
		return Accepted{}, Refused(ReasonOptedOut, "to",
			"the recipient has opted out of text messages (replied STOP); they must reply START to receive messages again")
	case errors.Is(err, store.ErrIdempotencyConflict):
		return Accepted{}, Refused(ReasonIdempotencyConflict, "idempotency_key",
			"this idempotency key was already used for a different request; use a new key for a new message")
	case store.IsTemporary(err), errors.Is(err, context.DeadlineExceeded):
		return Accepted{}, unavailable("store the message", err)
	default:
		return Accepted{}, fmt.Errorf("store message %s: %w", id, err)
	}
}

func (in *Intake) expiry(d time.Duration) (time.Duration, error) {
	def, limit := in.DefaultExpiry, in.MaxExpiry
	if def <= 0 {
		def = defaultExpiry
	}
	if limit <= 0 {
		limit = maxExpiry
	}
	why := ""
	if in.PolicyLinkExpiry != nil {
		if p := in.PolicyLinkExpiry(); p > 0 && p < limit {
			limit, why = p, " (the tenant's retention policy: unreadLinkExpiry)"
		}
	}
	switch {
	case d == 0:
		return min(def, limit), nil
	case d < time.Minute:
		return 0, Refused(ReasonInvalid, "expires_in", "expiry must be at least one minute")
	case d > limit:
		return 0, Refused(ReasonInvalid, "expires_in", "expiry must be at most %s%s", limit, why)
	}
	return d, nil
}

// unavailable wraps a dependency failure as ErrUnavailable; a permanent keystore refusal
// (this gateway is not allowed to use the keys) is still temporary for the sender, since
// only an operator can fix it and the message must not be lost meanwhile.
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w (%w)", what, ErrUnavailable, err)
}
