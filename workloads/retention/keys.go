package retention

// The key step of a sweep: disposal that reaches backups. A backup of the database taken before a
// purge still holds the purged message's wrapped data key, which the tenant's wrapping key can
// still unwrap. So the operator rotates the wrapping key (spec.vault.keyRotationPeriod, or the
// policy's keyRotationPeriod when shorter), each sweep moves the data keys of every message whose
// content is still stored (held ones, unread ones inside their window) to the newest version
// that is settled (keystore.RotationSettle), and reports the floor: the oldest version any stored
// message still needs. The operator reads the floor from the gateway's status endpoint and
// destroys every version below it (Vault Transit min_decryption_version and trim), which makes
// every message purged before that unreadable from every copy of the database.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
)

// KeyStatus is what the key step of a sweep found and did.
type KeyStatus struct {
	// Latest is the wrapping key's latest version when the sweep began: every message purged
	// by the sweep had its data key wrapped by this version or an older one (the purge event's
	// detail key_version_max).
	Latest int `json:"latest"`
	// Floor is the oldest version that a message whose content is still stored needs: the
	// operator may destroy every version below it. 0 when unknown.
	Floor int `json:"floor"`
	// MinAvailable is the oldest version that still exists; the versions below were destroyed.
	MinAvailable int `json:"minAvailable"`
	// Trims is false for a key holder whose versions are never destroyed (a local key file).
	Trims bool `json:"trims"`
	// Rewrapped counts the data keys this sweep moved to a newer version.
	Rewrapped int `json:"rewrapped"`
	// Unreadable counts stored messages whose data key the key holder refused to rewrap
	// (altered, or wrapped by a destroyed version): they hold the floor down, and the
	// gateway's log names them.
	Unreadable int `json:"unreadable"`
}

// KeyStore is what the sweeper needs of the tenant's store for the key step.
type KeyStore interface {
	// RewrapKeys replaces each message's wrapped data key Old by New where it is still Old,
	// in one transaction, and returns how many it replaced.
	RewrapKeys(ctx context.Context, changes []KeyChange) (int, error)
	// LastSweep returns the last sweep saved under name (RecordName).
	LastSweep(ctx context.Context, name string) (Result, error)
	// AppendAudit records events that concern no single message.
	AppendAudit(ctx context.Context, events ...audit.Event) error
}

// KeyChange is one data key moved to a newer version of the wrapping key.
type KeyChange struct {
	MessageID string
	Old, New  string
}

// ErrNoSweep is what KeyStore.LastSweep wraps before the first sweep was saved.
var ErrNoSweep = errors.New("no retention sweep was recorded yet")

// startKeys carries the key status of the last sweep over, so that a sweep that stops early
// still reports it, then reads the wrapping key's versions and records, once each, a rotation
// and a destruction of versions that happened since. A key holder that cannot answer stops the
// sweep: purge events must name the version bound.
func (s *Sweeper) startKeys(ctx context.Context, res *Result) (keystore.KeyVersions, error) {
	var prev KeyStatus
	last, err := s.cfg.Store.LastSweep(ctx, RecordName)
	switch {
	case err == nil && last.Keys != nil:
		prev = *last.Keys
		res.Keys = &KeyStatus{Latest: prev.Latest, Floor: prev.Floor, MinAvailable: prev.MinAvailable, Trims: prev.Trims}
	case err != nil && !errors.Is(err, ErrNoSweep):
		res.Errors++
		return keystore.KeyVersions{}, fmt.Errorf("read the last sweep's key status: %w", err)
	}
	v, err := s.cfg.Keys.KeyVersions(ctx)
	if err != nil {
		res.Errors++
		return v, fmt.Errorf("read the wrapping key's versions: %w", err)
	}
	var events []audit.Event
	if prev.Latest > 0 && v.Latest > prev.Latest {
		events = append(events, audit.Event{Kind: audit.KindKeyRotated, Actor: Actor, Detail: map[string]string{
			"version": strconv.Itoa(v.Latest), "created": v.Created[v.Latest].UTC().Format(time.RFC3339),
		}})
	}
	if prev.MinAvailable > 0 && v.MinAvailable > prev.MinAvailable {
		// Every data key wrapped only by a version below min_version is gone, in every copy.
		events = append(events, audit.Event{Kind: audit.KindKeyVersionsDestroyed, Actor: Actor, Detail: map[string]string{
			"min_version": strconv.Itoa(v.MinAvailable), "previous_min_version": strconv.Itoa(prev.MinAvailable),
		}})
	}
	if len(events) > 0 {
		if err := s.cfg.Store.AppendAudit(ctx, events...); err != nil {
			res.Errors++
			return v, fmt.Errorf("audit the wrapping key's new versions: %w", err)
		}
	}
	res.Keys = &KeyStatus{Latest: v.Latest, MinAvailable: v.MinAvailable, Trims: v.Trims, Floor: prev.Floor}
	return v, nil
}

// rewrapKeys moves the data key of every message whose content is still stored, created at or
// before createdBy, from a version older than the settled one to the latest, and sets the floor.
func (s *Sweeper) rewrapKeys(ctx context.Context, res *Result, v keystore.KeyVersions) error {
	settled := v.LatestAt(res.Started.Add(-keystore.RotationSettle))
	if settled == 0 || res.Keys.Floor >= settled {
		// No version is settled yet, or every stored key was moved past it already: a message
		// stored since carries a version at least as new (RotationSettle).
		res.Keys.Floor = max(res.Keys.Floor, v.MinAvailable)
		return nil
	}
	floor := settled
	var after Message
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := s.cfg.Store.PurgeCandidates(ctx, res.Started, after, s.cfg.BatchSize)
		if err != nil {
			res.Errors++
			return fmt.Errorf("retention sweep: list data keys to rewrap: %w", err)
		}
		var old []Message
		for _, m := range batch {
			n, err := keystore.WrappedVersion(m.WrappedKey)
			switch {
			case err != nil:
				res.Keys.Unreadable++
				floor = 0
				s.log.Warn("retention sweep: a stored message has no readable data key version", "message_id", m.ID)
			case n < settled:
				old = append(old, m)
			}
		}
		if len(old) > 0 {
			if err := s.rewrapBatch(ctx, res, old, &floor); err != nil {
				return err
			}
		}
		if len(batch) < s.cfg.BatchSize {
			break
		}
		after = batch[len(batch)-1]
		if err := s.renewLease(ctx, res); err != nil {
			return err
		}
	}
	res.Keys.Floor = max(floor, 0)
	if res.Keys.Rewrapped > 0 {
		ev := audit.Event{Kind: audit.KindKeysRewrapped, Actor: Actor, Detail: map[string]string{
			"count": strconv.Itoa(res.Keys.Rewrapped), "to_version": strconv.Itoa(v.Latest), "below_version": strconv.Itoa(settled),
		}}
		if err := s.cfg.Store.AppendAudit(ctx, ev); err != nil {
			res.Errors++
			return fmt.Errorf("audit rewrapped data keys: %w", err)
		}
	}
	return nil
}

// rewrapBatch rewraps the data keys of msgs and stores them where they did not change meanwhile.
// A key the key holder refuses lowers the floor to its version, so no version it needs is
// destroyed on a guess.
func (s *Sweeper) rewrapBatch(ctx context.Context, res *Result, msgs []Message, floor *int) error {
	wrapped := make([]string, len(msgs))
	for i, m := range msgs {
		wrapped[i] = m.WrappedKey
	}
	began := time.Now()
	out, errs, err := s.cfg.Keys.Rewrap(ctx, wrapped)
	if err != nil {
		res.Errors++
		return fmt.Errorf("retention sweep: rewrap data keys: %w", err)
	}
	changes := make([]KeyChange, 0, len(msgs))
	for i, m := range msgs {
		if errs[i] != nil {
			res.Keys.Unreadable++
			n, _ := keystore.WrappedVersion(m.WrappedKey)
			*floor = min(*floor, n)
			s.log.Warn("retention sweep: the keystore refused a stored data key", "message_id", m.ID, "error", errs[i])
			continue
		}
		changes = append(changes, KeyChange{MessageID: m.ID, Old: m.WrappedKey, New: out[i]})
	}
	if len(changes) > 0 {
		n, err := s.cfg.Store.RewrapKeys(ctx, changes)
		if err != nil {
			res.Errors++
			return fmt.Errorf("retention sweep: store rewrapped data keys: %w", err)
		}
		// A key that changed meanwhile was purged (or rewrapped by a sweeper that lost its
		// lease): either way it no longer needs the old version.
		res.Keys.Rewrapped += n
	}
	return s.pause(ctx, time.Since(began))
}
