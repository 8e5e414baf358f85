package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// CheckpointSigner is what keeps a tenant's audit chain honest: it signs a checkpoint only for
// a chain that extends the last checkpoint it signed. The keystore implements it (Notary in
// process, keystore.Client over mutual TLS); the store's checkpointer calls it.
type CheckpointSigner interface {
	// LastCheckpoint returns the last checkpoint signed for the tenant; ok is false before the
	// first.
	LastCheckpoint(ctx context.Context) (cp Checkpoint, ok bool, err error)
	// ExtendCheckpoint signs a checkpoint at the last of events, which must be the events
	// directly after the last signed checkpoint, at most MaxExtension of them. A chain that does
	// not extend it is refused with an error wrapping ErrNotExtension.
	ExtendCheckpoint(ctx context.Context, events []Event) (Checkpoint, error)
}

// MaxExtension is the most events one ExtendCheckpoint may carry. A longer gap (a backlog, or
// a tenant whose signer has never seen its chain) is signed in steps of this size.
const MaxExtension = 1000

var (
	// ErrNotExtension means the events offered do not extend the last signed checkpoint: they
	// start elsewhere, link to another head, or do not hash to what they claim. On a
	// production store that is evidence of a rewritten audit trail.
	ErrNotExtension = errors.New("audit: the events do not extend the last signed checkpoint")
	// ErrExtensionSize means a request carried no events or more than MaxExtension.
	ErrExtensionSize = fmt.Errorf("audit: an extension carries 1 to %d events", MaxExtension)
	// ErrStateChanged means another signer recorded a checkpoint between this one's read and
	// write; nothing was signed. Retry with the new last checkpoint.
	ErrStateChanged = errors.New("audit: the last signed checkpoint changed meanwhile; retry")
)

// NotaryState keeps the last checkpoint a Notary signed. It must survive restarts and must not
// be writable with the database's credentials: in production it is a Vault KV v2 secret under
// the tenant's keystore policy, written with check-and-set.
type NotaryState interface {
	// Load returns the last signed checkpoint and the version to pass to Save; ok is false
	// (and version 0) when nothing was signed yet.
	Load(ctx context.Context) (cp Checkpoint, version uint64, ok bool, err error)
	// Save records cp if the stored version is still version, and otherwise returns an error
	// wrapping ErrStateChanged.
	Save(ctx context.Context, cp Checkpoint, version uint64) error
}

// Notary signs checkpoints of one tenant's chain with Signer, each only after re-hashing the
// events between the last checkpoint it signed and the new one. Whoever can write the
// database can rewrite events and re-link the chain (event hashes use no key), but cannot get
// the rewrite signed: its events do not link to the head the notary recorded.
type Notary struct {
	tenant string
	signer Signer
	state  NotaryState
	now    func() time.Time

	mu sync.Mutex // one extension at a time in this process; Save's check-and-set covers others
}

// NewNotary returns a Notary for tenant. now is the signing clock (time.Now when nil).
func NewNotary(tenant string, signer Signer, state NotaryState, now func() time.Time) (*Notary, error) {
	if signer == nil || state == nil {
		return nil, errors.New("audit: new notary: a Signer and a NotaryState are required")
	}
	if now == nil {
		now = time.Now
	}
	return &Notary{tenant: tenant, signer: signer, state: state, now: now}, nil
}

// Tenant returns the tenant whose checkpoints n signs.
func (n *Notary) Tenant() string { return n.tenant }

// LastCheckpoint implements CheckpointSigner.
func (n *Notary) LastCheckpoint(ctx context.Context) (Checkpoint, bool, error) {
	cp, _, ok, err := n.state.Load(ctx)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read the last signed audit checkpoint: %w", err)
	}
	return cp, ok, nil
}

// ExtendCheckpoint implements CheckpointSigner. The checkpoint is recorded as the last signed
// before it is returned, so a signature whose record failed is never handed out.
func (n *Notary) ExtendCheckpoint(ctx context.Context, events []Event) (Checkpoint, error) {
	if len(events) == 0 || len(events) > MaxExtension {
		return Checkpoint{}, fmt.Errorf("%w, not %d", ErrExtensionSize, len(events))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	last, version, ok, err := n.state.Load(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read the last signed audit checkpoint: %w", err)
	}
	if !ok {
		last = Checkpoint{Tenant: n.tenant} // genesis: size 0, all-zero head
	}
	head, err := n.rehash(last.Size, last.Head, events)
	if err != nil {
		return Checkpoint{}, err
	}
	cp, err := SignCheckpoint(ctx, n.signer, n.tenant, events[len(events)-1].Seq, head, n.now())
	if err != nil {
		return Checkpoint{}, err
	}
	if err := n.state.Save(ctx, cp, version); err != nil {
		return Checkpoint{}, fmt.Errorf("record audit checkpoint at size %d: %w", cp.Size, err)
	}
	return cp, nil
}

// rehash checks that events are the tenant's events size+1, size+2, … linked to head, each
// hashing to what it claims, and returns the hash of the last. Every refusal wraps
// ErrNotExtension and says where the chain departs; it names sequence numbers only.
func (n *Notary) rehash(size uint64, head [32]byte, events []Event) ([32]byte, error) {
	refuse := func(format string, args ...any) ([32]byte, error) {
		return [32]byte{}, fmt.Errorf("%w: %s", ErrNotExtension, fmt.Sprintf(format, args...))
	}
	for i, e := range events {
		want := size + 1 + uint64(i)
		switch {
		case e.Seq != want && i == 0:
			return refuse("the events start at %d, but the last signed checkpoint is at size %d", e.Seq, size)
		case e.Seq != want:
			return refuse("event %d follows event %d", e.Seq, want-1)
		case e.Tenant != n.tenant:
			return refuse("event %d belongs to another tenant", e.Seq)
		case e.PrevHash != head && i == 0:
			return refuse("event %d does not link to the head signed at size %d", e.Seq, size)
		case e.PrevHash != head:
			return refuse("event %d does not link to event %d", e.Seq, e.Seq-1)
		case e.LeafHash() != e.Hash:
			return refuse("event %d does not hash to the hash it carries", e.Seq)
		}
		head = e.Hash
	}
	return head, nil
}

// MemoryNotaryState keeps the last signed checkpoint in memory: for tests and for tools that
// sign once and exit. It is safe for concurrent use.
type MemoryNotaryState struct {
	mu      sync.Mutex
	cp      Checkpoint
	version uint64
}

// Load implements NotaryState.
func (m *MemoryNotaryState) Load(context.Context) (Checkpoint, uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cp, m.version, m.version > 0, nil
}

// Save implements NotaryState.
func (m *MemoryNotaryState) Save(_ context.Context, cp Checkpoint, version uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if version != m.version {
		return fmt.Errorf("%w: version %d, not %d", ErrStateChanged, m.version, version)
	}
	m.cp, m.version = cp, m.version+1
	return nil
}
