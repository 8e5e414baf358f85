// Package audit records what happened to messages as a tamper-evident, hash-chained sequence
// of events per tenant, with signed checkpoints, and exports and verifies that record offline.
//
// Guarantees, given an export and the tenant's checkpoint public key:
//   - each event's hash covers every field of the event, including the previous event's hash,
//     so changing, removing or reordering events inside the chain is detected (hash chain);
//   - a signed checkpoint (size, head hash) commits to the whole chain up to that size, so
//     dropping events from the tail or rewriting and re-hashing the chain is detected, as long
//     as the signing key is out of the database's reach (it lives in Vault Transit);
//   - events older than the retention policy allows are removed only up to a signed
//     checkpoint, the anchor: an export of what remains starts with the anchor, its first
//     event links to the anchor's signed head, and it holds the audit-pruned event that
//     records the cut, so removing the oldest events without that record is detected.
//
// Events never carry message content, phone numbers, passwords, one-time codes or anything else
// that identifies a patient: audit records are kept for six years (45 CFR 164.316(b)(2)) and
// outlive the messages they describe. Detail values are short codes and ids such as a provider
// status, an error code or a hold name.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says what happened.
type Kind string

// The kinds of audit event. Opening a link and revealing a message are separate on purpose:
// link previewers open links, only a person reveals.
const (
	KindAccepted      Kind = "accepted"
	KindNotified      Kind = "notified"
	KindDelivered     Kind = "delivered"
	KindFailed        Kind = "failed"
	KindLinkOpened    Kind = "link-opened"
	KindRevealed      Kind = "revealed"
	KindAuthFailed    Kind = "auth-failed"
	KindLocked        Kind = "locked"
	KindRevoked       Kind = "revoked"
	KindExpired       Kind = "expired"
	KindPurged        Kind = "purged"
	KindHoldApplied   Kind = "hold-applied"
	KindHoldReleased  Kind = "hold-released"
	KindKeyRotated    Kind = "key-rotated"
	KindAdminAction   Kind = "admin-action"
	KindOptedOut      Kind = "opted-out"      // the recipient replied STOP (or similar)
	KindOptedIn       Kind = "opted-in"       // the recipient replied START
	KindPasswordSet   Kind = "password-set"   // the patient chose a first password in the viewer
	KindPasswordReset Kind = "password-reset" // the patient replaced a password with a texted code
	KindLogin         Kind = "login"          // the patient signed in; a new viewer session began
	KindLogout        Kind = "logout"         // the patient ended a viewer session
	KindCodeSent      Kind = "code-sent"      // a one-time code was texted to the patient
	KindReplied       Kind = "replied"        // the patient answered a message (the reply is stored sealed, not here)
	// KindDiscoveryExported: a compliance account exported the messages a legal hold keeps
	// (package discovery). Its detail names the hold, the count and the manifest's SHA-256.
	KindDiscoveryExported Kind = "discovery-exported"
	// KindCheckpointRefused: the signer refused to sign a chain that does not extend the last
	// checkpoint it signed. The keystore records it in its own log, not in the chain it refused.
	KindCheckpointRefused Kind = "checkpoint-refused"
	// KindAuditPruned: the retention sweeper removed the events older than the policy's
	// auditRetention, up to a signed checkpoint that the trail now starts after (the anchor).
	// Its detail gives the anchor's size, the first and last event removed, their count and the
	// rule; an export that starts at the anchor verifies only if it holds this event.
	KindAuditPruned Kind = "audit-pruned"
)

// Kinds of the tenant's wrapping key, recorded by the retention sweeper (package retention):
// the data keys of stored messages were moved to a newer version of the wrapping key, and
// versions below detail min_version were destroyed, with every data key only they wrapped.
const (
	KindKeysRewrapped        Kind = "keys-rewrapped"
	KindKeyVersionsDestroyed Kind = "key-versions-destroyed"
)

var kinds = []Kind{
	KindAccepted, KindNotified, KindDelivered, KindFailed, KindLinkOpened, KindRevealed,
	KindAuthFailed, KindLocked, KindRevoked, KindExpired, KindPurged, KindHoldApplied,
	KindHoldReleased, KindKeyRotated, KindKeysRewrapped, KindKeyVersionsDestroyed, KindAdminAction, KindOptedOut, KindOptedIn,
	KindPasswordSet, KindPasswordReset, KindLogin, KindLogout, KindCodeSent, KindReplied,
	KindCheckpointRefused, KindDiscoveryExported, KindAuditPruned,
}

// IsValid reports whether k is one of the kinds above.
func (k Kind) IsValid() bool { return slices.Contains(kinds, k) }

// Event is one audit record. Seq, PrevHash and Hash are filled in by Chain.Append.
type Event struct {
	Seq       uint64
	Time      time.Time
	Kind      Kind
	Actor     string // who acted: a sender account, "patient", "system", an operator user
	Tenant    string
	MessageID string            // empty for events about no single message
	Detail    map[string]string // short codes and ids only, never content
	PrevHash  [32]byte
	Hash      [32]byte
}

// timeLayout is RFC 3339 in UTC with exactly nine fractional digits: one spelling per instant,
// and still readable in an export.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// eventDomain starts every canonical encoding, so an event hash can never equal a hash of some
// other structure built from the same fields.
const eventDomain = "securetext-audit/event/v1"

// Canonical returns the bytes that an event's hash covers: every field except Hash, in struct
// order. Strings are a big-endian uint32 length followed by the bytes; Seq is a big-endian
// uint64; Time is formatted with timeLayout in UTC; Detail is its entry count followed by its
// entries sorted by key. Nothing is ambiguous, so different events never share an encoding.
func (e Event) Canonical() []byte {
	b := make([]byte, 0, 256)
	b = appendString(b, eventDomain)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = appendString(b, e.Time.UTC().Format(timeLayout))
	b = appendString(b, string(e.Kind))
	b = appendString(b, e.Actor)
	b = appendString(b, e.Tenant)
	b = appendString(b, e.MessageID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Detail)))
	for _, k := range slices.Sorted(maps.Keys(e.Detail)) {
		b = appendString(b, k)
		b = appendString(b, e.Detail[k])
	}
	return append(b, e.PrevHash[:]...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// LeafHash is the event's hash: SHA-256(0x00 ‖ canonical), the leaf hash of RFC 6962 §2.1, so
// the same values can later become leaves of a Merkle tree without re-hashing.
func (e Event) LeafHash() [32]byte {
	h := sha256.New()
	h.Write([]byte{0x00})
	h.Write(e.Canonical())
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Chain appends events to one tenant's chain. It holds only the head, so it is cheap to rebuild
// from the last stored event. A Chain is not safe for concurrent use: the store must serialise
// appends per tenant (e.g. in the transaction that locks the head row), because two events
// linked to the same head fork the chain.
type Chain struct {
	tenant string
	seq    uint64
	head   [32]byte
}

// NewChain continues tenant's chain after the event with sequence headSeq and hash headHash.
// A new chain starts with NewChain(tenant, 0, [32]byte{}): its first event has Seq 1 and an
// all-zero PrevHash.
func NewChain(tenant string, headSeq uint64, headHash [32]byte) *Chain {
	return &Chain{tenant: tenant, seq: headSeq, head: headHash}
}

// Append links e to the head and returns it with Seq, PrevHash and Hash filled in. It also sets
// Tenant to the chain's tenant, normalises Time to UTC without a monotonic reading, copies
// Detail so that later changes to the caller's map cannot silently diverge from the hash, and
// replaces each byte of invalid UTF-8 in its strings with U+FFFD, as encoding/json does, so
// that the hash covers exactly what an export can carry. Callers check e.Kind.IsValid before
// appending.
func (c *Chain) Append(e Event) Event {
	c.seq++
	e.Seq = c.seq
	e.Tenant = c.tenant
	e.Time = e.Time.UTC()
	e.Kind = Kind(validUTF8(string(e.Kind)))
	e.Actor, e.MessageID = validUTF8(e.Actor), validUTF8(e.MessageID)
	if e.Detail != nil {
		d := make(map[string]string, len(e.Detail))
		for k, v := range e.Detail {
			d[validUTF8(k)] = validUTF8(v)
		}
		e.Detail = d
	}
	e.PrevHash = c.head
	e.Hash = e.LeafHash()
	c.head = e.Hash
	return e
}

// validUTF8 returns s with each byte that is not part of valid UTF-8 replaced by U+FFFD: one
// replacement per byte, which is what encoding/json writes for it.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Head returns the sequence number and hash of the last event appended.
func (c *Chain) Head() (uint64, [32]byte) { return c.seq, c.head }
