// Package store keeps one tenant's data: messages and their encrypted parts, recipients,
// viewer sessions, the notification outbox, idempotency keys and the hash-chained audit trail.
// PostgreSQL serves production (one database per tenant); SQLite serves the embedded
// single-process mode. Both are one type, Store, and pass one conformance suite (storetest).
//
// Guarantees:
//   - A method that writes returns only after a durable commit, and does all it says in one
//     transaction: AcceptMessage stores the message, its parts, its recipient, its idempotency
//     key, its audit event and its outbox row together or not at all.
//   - A temporary database failure (unreachable, connection lost, timeout, overload, lock or
//     serialization conflict) is an error for which IsTemporary reports true, so the gateway
//     answers SMTP 451 / HTTP 503 and nothing accepted is ever lost.
//   - The store keeps only hashes of link tokens and session ids, and no plaintext content.
//     Errors name ids, never phone numbers or content; audit events carry short codes only.
//   - Audit events are linked into a single chain by the sequencer (SequenceAudit) under a
//     lock on the chain head, so concurrent writers and sequencers never fork it, and writers
//     never wait for each other on the head.
package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"github.com/securetext/securetext/workloads/internal/batch"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
)

// Store is one tenant's database. It is safe for concurrent use.
type Store struct {
	db     database
	tenant string
	log    *slog.Logger
	now    func() time.Time

	groups   batch.Config
	maxConns int                                      // PostgreSQL pool size; 0: DefaultMaxConnections
	accepts  *batch.Batcher[acceptCall, AcceptResult] // nil: every accept commits on its own
	sents    *batch.Batcher[sentCall, struct{}]       // MarkSent's groups, as accepts
	optOuts  *batch.Batcher[string, bool]             // OptedOut's lookups, one query per group
	appends  *batch.Batcher[[]step, struct{}]         // AppendAudit's groups, one transaction each
	visits   *batch.Batcher[visitCall, LinkVisit]     // VisitLink's reads, one round trip per group; PostgreSQL only

	signedMu   sync.Mutex // the newest checkpoint this store saw signed, so that an idle chain
	signedSize uint64     // costs the checkpointer one head read, not a call to the signer
	signedHead [32]byte
}

// Option configures Open.
type Option func(*Store)

// WithLogger sets where the audit sequencer reports failures (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithClock sets the clock the store reads (default time.Now) for the times it records and
// compares: accepts and their outbox due times, claims and leases, opt-outs, sessions, audit
// events and checkpoints. A process passes one clock to the store and to every component
// that hands it times, so that tests can run the whole path on a clock of their own.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithMaxConnections caps the PostgreSQL connections the store opens (default 48, sized for
// the gateway's intake). A pool_max_conns parameter in the URL wins over it.
func WithMaxConnections(n int) Option { return func(s *Store) { s.maxConns = n } }

// WithAcceptGroups sets how concurrent AcceptMessage (and MarkSent, OptedOut) calls share
// transactions: up to maxItems messages per commit, and up to maxInFlight such commits at once
// (defaults 64 and 2; the PostgreSQL pool must have connections to spare for them). The
// viewer's AppendAudit and VisitLink calls group up to maxItems too, one group at a time.
// maxItems 1 sends every call on its own.
func WithAcceptGroups(maxItems, maxInFlight int) Option {
	return func(s *Store) { s.groups = batch.Config{MaxItems: maxItems, MaxInFlight: maxInFlight} }
}

// acceptGroupTimeout bounds one group's transaction. Callers still leave when their own
// context ends; the group's outcome is then theirs only if they retry with the same
// idempotency key.
const acceptGroupTimeout = 30 * time.Second

// Open connects to the tenant's database and applies any pending schema migrations.
//
// dsn is a PostgreSQL URL (postgres://… or postgresql://…; pool_max_conns and the other pgx
// parameters apply) or sqlite:PATH for a SQLite file. tenant names the tenant whose data the
// database holds; the first Open records it, and opening the database for another tenant is
// refused, so one tenant's audit chain can never continue another's.
func Open(ctx context.Context, dsn, tenant string, opts ...Option) (*Store, error) {
	if tenant == "" || strings.ContainsAny(tenant, "\r\n") {
		return nil, fmt.Errorf("open store: %w: tenant name must be non-empty and a single line", ErrInvalid)
	}
	s := &Store{tenant: tenant, log: slog.Default(), now: time.Now, groups: batch.Config{MaxItems: 64, MaxInFlight: 2}}
	for _, opt := range opts {
		opt(s)
	}
	if s.groups.MaxItems < 0 || s.groups.MaxInFlight < 0 || s.maxConns < 0 || s.maxConns > math.MaxInt32 {
		return nil, fmt.Errorf("open store: %w: accept groups and connections need positive sizes", ErrInvalid)
	}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.db, err = openPostgres(ctx, dsn, cmp.Or(s.maxConns, DefaultMaxConnections))
	case strings.HasPrefix(dsn, "sqlite:"):
		s.db, err = openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	default:
		err = fmt.Errorf("%w: DSN must start with postgres://, postgresql:// or sqlite:", ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("open store for tenant %s: %w", tenant, err)
	}
	if err := s.claimTenant(ctx); err != nil {
		s.db.close()
		return nil, err
	}
	if s.groups.MaxItems != 1 {
		s.accepts = batch.New(s.groups, acceptGroupTimeout, s.acceptGroup, nil, func(what string, cause error) error {
			return fmt.Errorf("accept message: %s: %w: %w", what, ErrUnavailable, cause)
		})
		s.sents = batch.New(s.groups, acceptGroupTimeout, s.sentGroup, nil, func(what string, cause error) error {
			return fmt.Errorf("mark notification sent: %s: %w: %w", what, ErrUnavailable, cause)
		})
		s.optOuts = batch.New(s.groups, acceptGroupTimeout, s.optOutGroup, nil, func(what string, cause error) error {
			return fmt.Errorf("look up opt-out: %s: %w: %w", what, ErrUnavailable, cause)
		})
		// The viewer's statements, one of each per page, keep a single group in flight: the
		// pages that arrive meanwhile leave together in the next one, so groups stay large
		// and the database runs few, full statements (BenchmarkRevealRemembered).
		pages := batch.Config{MaxItems: s.groups.MaxItems, MaxInFlight: 1}
		s.appends = batch.New(pages, acceptGroupTimeout, s.appendGroup, nil, func(what string, cause error) error {
			return fmt.Errorf("append audit events: %s: %w: %w", what, ErrUnavailable, cause)
		})
		// SQLite reads in the process, so its queries have no round trip to share.
		if _, remote := s.db.(*postgres); remote {
			s.visits = batch.New(pages, acceptGroupTimeout, s.visitGroup, nil, func(what string, cause error) error {
				return fmt.Errorf("read link: %s: %w: %w", what, ErrUnavailable, cause)
			})
		}
	}
	return s, nil
}

// claimTenant records the tenant in a new database (the genesis chain head) and checks it in
// an existing one.
func (s *Store) claimTenant(ctx context.Context) error {
	var stored string
	err := s.db.transact(ctx, []step{
		{
			sql:  `INSERT INTO audit_head (singleton, tenant, seq, hash) VALUES (true, $1, 0, $2) ON CONFLICT DO NOTHING`,
			args: []any{s.tenant, make([]byte, 32)},
		},
		{
			sql: `SELECT tenant FROM audit_head`,
			row: func(scan func(...any) error) error { return scan(&stored) },
		},
	})
	if err != nil {
		return failed("record tenant of the database", err)
	}
	if stored != s.tenant {
		return fmt.Errorf("open store for tenant %s: %w: the database belongs to tenant %s", s.tenant, ErrConflict, stored)
	}
	return nil
}

// Close releases the database connections. AcceptMessage calls still waiting for their group
// fail with a temporary error.
func (s *Store) Close() {
	if s.accepts != nil {
		s.accepts.Close()
		s.sents.Close()
		s.appends.Close()
		s.optOuts.Close()
	}
	if s.visits != nil {
		s.visits.Close()
	}
	s.db.close()
}

// Tenant returns the tenant whose data the store holds.
func (s *Store) Tenant() string { return s.tenant }

// clock returns the current time as stored.
func (s *Store) clock() time.Time { return at(s.now()) }

// idEncoding is base32 with its alphabet in ASCII order, so that ids sort as their bytes do.
var idEncoding = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)

// NewID returns a new id: 26 characters of lowercase base32 without padding, safe in URLs,
// file names and email addresses, holding the current Unix time in milliseconds (48 bits)
// and 80 bits from crypto/rand. Ids made later sort later, so new rows go to the right-hand
// end of the indexes keyed by them. With random ids every insert touched a random page of
// each such index, and the first change of a page after a checkpoint writes the whole page
// to the WAL, so an insert cost more the larger the tables grew. The random bits keep ids
// unguessable; an id tells when it was made, as its row does.
func NewID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	return idEncoding.EncodeToString(b[:])
}

// validID reports whether a caller-supplied id is usable: 1 to 128 printable ASCII
// characters.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// errInvalid returns an ErrInvalid error saying what is wrong.
func errInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
