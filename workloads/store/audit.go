package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// How the audit trail is written without a queue on its head. Every transaction that has
// something to audit inserts an unchained row into audit_pending, which takes no lock that
// another writer waits for. The sequencer (SequenceAudit) then, in one transaction, locks the
// single audit_head row, takes pending rows in id order, links them onto the chain with
// audit.Chain, inserts them into audit_events, deletes them from audit_pending and moves the
// head. The head lock makes sequencers of several replicas take turns, so the chain never
// forks; pending rows are deleted by the statement that reads them, under that lock and with
// the snapshot of a statement that started after the previous sequencer committed, so no row is
// chained twice or lost.
//
// An event's hash covers its time formatted to the nanosecond, and PostgreSQL stores
// microseconds: event times are truncated to microseconds before they are stored, and the
// sequencer hashes the values as read back, so a stored event always re-hashes to its hash.

// sequenceBatch is how many pending events RunAuditSequencer links per transaction.
const sequenceBatch = 1000

// AuditSequencerInterval is the longest the gateway's and the viewer's sequencers wait after
// draining the pending events. It is short so that the work comes in small, steady batches: a
// run that links thousands of events at once holds a CPU long enough for the requests of the
// next few hundred milliseconds to pay for it in latency. An idle sequencer only looks
// whether anything is pending.
const AuditSequencerInterval = 100 * time.Millisecond

// sequenceTarget is about how many events a sequencer's run should link: under load, the
// sequencer waits less than its interval, down to a quarter of it, so that no more than about
// this many arrive meanwhile (sequencerWait). A long run holds a CPU while pages wait for it;
// very short runs cost more in their fixed per-run work than they save.
const sequenceTarget = 200

// pending returns the step that inserts ev, unchained, for the sequencer.
func (s *Store) pending(ev audit.Event) (step, error) {
	if !ev.Kind.IsValid() {
		return step{}, errInvalid("unknown audit event kind %q", ev.Kind)
	}
	if ev.Actor == "" {
		return step{}, errInvalid("audit event %s has no actor", ev.Kind)
	}
	if ev.Time.IsZero() {
		ev.Time = s.now()
	}
	detail, err := encodeDetail(ev.Detail)
	if err != nil {
		return step{}, err
	}
	return step{
		sql:  `INSERT INTO audit_pending (occurred_at, kind, actor, message_id, detail) VALUES ($1, $2, $3, $4, $5)`,
		args: []any{at(ev.Time), string(ev.Kind), ev.Actor, nullString(ev.MessageID), detail},
	}, nil
}

func encodeDetail(d map[string]string) (string, error) {
	if len(d) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encode audit detail: %w", err)
	}
	return string(b), nil
}

func decodeDetail(s string) (map[string]string, error) {
	var d map[string]string
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		return nil, fmt.Errorf("decode audit detail: %w", err)
	}
	if len(d) == 0 {
		return nil, nil
	}
	return d, nil
}

// AppendAudit records events that belong to no other write (a failed login, an operator's
// action), in one transaction. They join the chain when the sequencer next runs. Seq, Tenant,
// PrevHash and Hash are ignored; a zero Time is now. An event of unknown kind is refused.
func (s *Store) AppendAudit(ctx context.Context, events ...audit.Event) error {
	steps := make([]step, 0, len(events))
	for _, ev := range events {
		st, err := s.pending(ev)
		if err != nil {
			return fmt.Errorf("append audit events: %w", err)
		}
		steps = append(steps, st)
	}
	if len(steps) == 0 {
		return nil
	}
	var err error
	if s.appends != nil {
		_, err = s.appends.Do(ctx, steps)
	} else {
		err = s.db.transact(ctx, steps)
	}
	if err != nil && !IsTemporary(err) {
		return failed("append audit events", err)
	}
	return err
}

// appendGroup stores the events of concurrent AppendAudit calls in one transaction, as
// acceptGroup does for accepts; if the database refuses a statement, each call runs alone.
func (s *Store) appendGroup(ctx context.Context, calls [][]step) ([]struct{}, []error, error) {
	var all []step
	for _, c := range calls {
		all = append(all, c...)
	}
	errs := make([]error, len(calls))
	err := s.db.transact(ctx, all)
	if err != nil && refusedByDatabase(err) && len(calls) > 1 {
		for i, c := range calls {
			errs[i] = s.db.transact(ctx, c)
		}
		err = nil
	}
	if err != nil {
		return nil, nil, failed("append audit events", err)
	}
	return make([]struct{}, len(calls)), errs, nil
}

// SequenceAudit links up to max pending events onto the chain, in one transaction, and
// returns how many it linked. Concurrent calls, also from other replicas, take turns.
func (s *Store) SequenceAudit(ctx context.Context, max int) (int, error) {
	return s.sequenceAudit(ctx, max, true)
}

// sequenceAudit is SequenceAudit. With look, it first looks whether anything is pending,
// without a transaction or the lock on the chain head, and stops there if not: the sequencer
// of an idle replica costs one index lookup. A sequencer that has just linked events does not
// look, since more are likely pending.
//
// In PostgreSQL, a run takes four round trips: begin; lock the head and take the pending
// events; insert them chained and move the head; commit.
func (s *Store) sequenceAudit(ctx context.Context, max int, look bool) (int, error) {
	if max <= 0 {
		return 0, fmt.Errorf("sequence audit events: %w: max must be positive", ErrInvalid)
	}
	var n int
	if look {
		if err := s.db.queryRow(ctx, `SELECT count(*) FROM (SELECT id FROM audit_pending ORDER BY id LIMIT 1) AS p`).Scan(&n); err != nil {
			return 0, failed("sequence audit events", err)
		}
		if n == 0 {
			return 0, nil
		}
	}
	err := s.db.inTx(ctx, func(q querier) error {
		n = 0
		var (
			seq  int64
			head [32]byte
		)
		lock := step{
			sql: `SELECT seq, hash FROM audit_head` + s.db.lockRow(),
			row: func(scan func(...any) error) error { return scan(&seq, hashDest{&head}) },
		}
		take, taken := s.takePending(max)
		if err := q.batch(ctx, []step{lock, take}); err != nil {
			return fmt.Errorf("lock chain head and take pending events: %w", err)
		}
		events := taken()
		if len(events) == 0 {
			return nil
		}
		chain := audit.NewChain(s.tenant, uint64(seq), head)
		chained := make([]chainedEvent, len(events))
		for i, ev := range events {
			e := chain.Append(ev)
			detail, err := encodeDetail(e.Detail)
			if err != nil {
				return err
			}
			chained[i] = chainedEvent{
				seq: int64(e.Seq), time: e.Time, kind: string(e.Kind), actor: e.Actor, tenant: e.Tenant,
				messageID: e.MessageID, detail: detail, prevHash: e.PrevHash[:], hash: e.Hash[:],
			}
		}
		last, hash := chain.Head()
		steps := append(s.db.insertChained(chained), step{
			sql: `UPDATE audit_head SET seq = $1, hash = $2`, args: []any{int64(last), hash[:]},
		})
		if err := q.batch(ctx, steps); err != nil {
			return fmt.Errorf("insert chained events and move chain head: %w", err)
		}
		n = len(events)
		return nil
	})
	if err != nil {
		return 0, failed("sequence audit events", err)
	}
	return n, nil
}

// takePending returns the statement that deletes up to max pending events, and a function
// that returns the events it deleted, in id order. The caller holds the lock on the chain
// head, and only a sequencer deletes pending events, so the rows need no lock of their own.
func (s *Store) takePending(max int) (step, func() []audit.Event) {
	type pendingEvent struct {
		id int64
		ev audit.Event
	}
	var taken []pendingEvent
	st := step{
		sql: `DELETE FROM audit_pending WHERE ` + s.db.idIn("id", `SELECT id FROM audit_pending ORDER BY id LIMIT $1`) + `
		RETURNING id, occurred_at, kind, actor, message_id, detail`,
		args: []any{max},
		each: func(scan func(...any) error) error {
			var (
				p      pendingEvent
				detail string
			)
			if err := scan(&p.id, timeDest{&p.ev.Time}, &p.ev.Kind, &p.ev.Actor, stringDest{&p.ev.MessageID}, &detail); err != nil {
				return err
			}
			var err error
			if p.ev.Detail, err = decodeDetail(detail); err != nil {
				return err
			}
			taken = append(taken, p)
			return nil
		},
	}
	return st, func() []audit.Event {
		// RETURNING has no order.
		slices.SortFunc(taken, func(a, b pendingEvent) int { return cmp.Compare(a.id, b.id) })
		events := make([]audit.Event, len(taken))
		for i, p := range taken {
			events[i] = p.ev
		}
		return events
	}
}

// RunAuditSequencer links pending events until ctx is done: it drains them, then waits
// interval, or less under load (sequencerWait). Failures are logged and retried after
// interval. Each replica may run one.
func (s *Store) RunAuditSequencer(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	linked := 0 // by the last run
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		woke, drained := time.Now(), 0
		for {
			n, err := s.sequenceAudit(ctx, sequenceBatch, linked == 0)
			linked = n
			drained += n
			if err != nil {
				if ctx.Err() == nil {
					s.log.ErrorContext(ctx, "audit sequencer failed; retrying", "tenant", s.tenant, "err", err, "temporary", IsTemporary(err))
				}
				drained = 0
				break
			}
			if n < sequenceBatch {
				break
			}
		}
		t.Reset(sequencerWait(interval, drained, woke.Sub(last)))
		last = woke
	}
}

// sequencerWait is how long a sequencer that has just linked n events, which arrived over
// the time since its last run began, waits for its next run: as long as sequenceTarget events
// take to arrive at that rate, between a quarter of interval and interval.
func sequencerWait(interval time.Duration, n int, since time.Duration) time.Duration {
	if n <= sequenceTarget {
		return interval
	}
	return min(interval, max(interval/4, time.Duration(float64(since)*sequenceTarget/float64(n))))
}

// AuditHead returns the sequence number and hash of the last chained event (0 and all zeros
// for an empty chain).
func (s *Store) AuditHead(ctx context.Context) (seq uint64, hash [32]byte, err error) {
	var n int64
	if err := s.db.queryRow(ctx, `SELECT seq, hash FROM audit_head`).Scan(&n, hashDest{&hash}); err != nil {
		return 0, [32]byte{}, failed("read audit chain head", err)
	}
	return uint64(n), hash, nil
}

// AuditEvents returns up to limit chained events with sequence numbers above afterSeq, in
// order: page through the chain with the last Seq returned.
func (s *Store) AuditEvents(ctx context.Context, afterSeq uint64, limit int) ([]audit.Event, error) {
	rows, err := s.db.query(ctx,
		`SELECT seq, occurred_at, kind, actor, tenant, message_id, detail, prev_hash, hash
		FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, int64(afterSeq), limit)
	if err != nil {
		return nil, failed("read audit events", err)
	}
	events, err := scanEvents(rows)
	if err != nil {
		return nil, failed("read audit events", err)
	}
	return events, nil
}

// scanEvents reads and closes rows of seq, occurred_at, kind, actor, tenant, message_id,
// detail, prev_hash, hash.
func scanEvents(rows rows) ([]audit.Event, error) {
	defer rows.Close()
	var events []audit.Event
	for rows.Next() {
		var (
			e      audit.Event
			seq    int64
			detail string
		)
		if err := rows.Scan(&seq, timeDest{&e.Time}, &e.Kind, &e.Actor, &e.Tenant, stringDest{&e.MessageID}, &detail,
			hashDest{&e.PrevHash}, hashDest{&e.Hash}); err != nil {
			return nil, err
		}
		e.Seq = uint64(seq)
		var err error
		if e.Detail, err = decodeDetail(detail); err != nil {
			return nil, fmt.Errorf("audit event %d: %w", seq, err)
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

// MessageEvents returns the audit events of one message in the order they happened: the
// chained ones, then those the sequencer has not linked yet (Seq 0, no hashes).
func (s *Store) MessageEvents(ctx context.Context, messageID string) ([]audit.Event, error) {
	var events []audit.Event
	err := s.db.inTx(ctx, func(q querier) error {
		events = events[:0]
		for _, sql := range []string{
			`SELECT seq, occurred_at, kind, actor, tenant, message_id, detail, prev_hash, hash
			FROM audit_events WHERE message_id = $1 ORDER BY seq`,
			`SELECT 0, occurred_at, kind, actor, '', message_id, detail, NULL, NULL
			FROM audit_pending WHERE message_id = $1 ORDER BY id`,
		} {
			rows, err := q.query(ctx, sql, messageID)
			if err != nil {
				return err
			}
			more, err := scanEvents(rows)
			if err != nil {
				return err
			}
			for i := range more {
				more[i].Tenant = s.tenant
			}
			events = append(events, more...)
		}
		return nil
	})
	if err != nil {
		return nil, failed("read audit events of message "+messageID, err)
	}
	return events, nil
}

// checkpointTime is the layout of a stored checkpoint time: nanoseconds, as signed, and
// fixed width, so that the text sorts in time order.
const checkpointTime = "2006-01-02T15:04:05.000000000Z"

// SaveCheckpoint stores a signed checkpoint of this tenant's chain. Its head must be the hash
// of the chained event at its size: a checkpoint that matches no stored chain is refused with
// ErrConflict. The signature is not checked here; audit.Verify does that.
func (s *Store) SaveCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	if c.Tenant != s.tenant {
		return fmt.Errorf("save audit checkpoint: %w: checkpoint is for tenant %s", ErrInvalid, c.Tenant)
	}
	err := s.db.inTx(ctx, func(q querier) error {
		if c.Size > 0 {
			var hash [32]byte
			err := q.queryRow(ctx, `SELECT hash FROM audit_events WHERE seq = $1`, int64(c.Size)).Scan(hashDest{&hash})
			if err != nil {
				return fmt.Errorf("read event %d: %w", c.Size, noRows(err))
			}
			if hash != c.Head {
				return fmt.Errorf("%w: head differs from the hash of event %d", ErrConflict, c.Size)
			}
		} else if c.Head != ([32]byte{}) {
			return fmt.Errorf("%w: an empty chain has an all-zero head", ErrConflict)
		}
		_, err := q.exec(ctx,
			`INSERT INTO audit_checkpoints (tenant, size, head, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)`,
			c.Tenant, int64(c.Size), c.Head[:], c.Time.UTC().Format(checkpointTime), c.KeyID, c.Signature)
		return err
	})
	if err != nil {
		return failed(fmt.Sprintf("save audit checkpoint at size %d", c.Size), err)
	}
	return nil
}

// Checkpoints returns the stored checkpoints by size, oldest first among equal sizes.
func (s *Store) Checkpoints(ctx context.Context) ([]audit.Checkpoint, error) {
	rows, err := s.db.query(ctx, `SELECT tenant, size, head, signed_at, key_id, signature FROM audit_checkpoints ORDER BY size, id`)
	if err != nil {
		return nil, failed("read audit checkpoints", err)
	}
	defer rows.Close()
	var cps []audit.Checkpoint
	for rows.Next() {
		c, err := scanCheckpoint(rows.Scan)
		if err != nil {
			return nil, failed("read audit checkpoints", err)
		}
		cps = append(cps, c)
	}
	if err := rows.Err(); err != nil {
		return nil, failed("read audit checkpoints", err)
	}
	return cps, nil
}

// CheckpointAudit brings the signer's checkpoint up to the chain's head and stores each
// checkpoint it gets. It sends the events after the last signed checkpoint, at most
// audit.MaxExtension per request; the signer re-hashes them and signs only a chain that
// extends what it signed before. A chain that ends at or before the last signed checkpoint
// but differs from it (events removed or rewritten) is offered too, so that the signer's
// refusal reaches its log and its metric; the error wraps audit.ErrNotExtension. It returns
// the newest checkpoint and true when it signed one.
func (s *Store) CheckpointAudit(ctx context.Context, signer audit.CheckpointSigner) (audit.Checkpoint, bool, error) {
	seq, head, err := s.AuditHead(ctx)
	if err != nil {
		return audit.Checkpoint{}, false, err
	}
	s.signedMu.Lock()
	idle := seq == s.signedSize && head == s.signedHead
	s.signedMu.Unlock()
	if idle {
		return audit.Checkpoint{}, false, nil
	}
	last, ok, err := signer.LastCheckpoint(ctx)
	if err != nil {
		return audit.Checkpoint{}, false, err
	}
	if ok && (seq < last.Size || seq == last.Size && head != last.Head) {
		// Offer the chain's head event: it cannot extend the signed checkpoint.
		events, err := s.AuditEvents(ctx, max(seq, 1)-1, 1)
		if err != nil {
			return audit.Checkpoint{}, false, err
		}
		if len(events) > 0 {
			_, err = signer.ExtendCheckpoint(ctx, events)
		}
		if err == nil {
			err = audit.ErrNotExtension
		}
		return audit.Checkpoint{}, false, fmt.Errorf("sign audit checkpoint: the chain ends at event %d, and the last signed checkpoint is at size %d with another head: %w",
			seq, last.Size, err)
	}
	if ok {
		// A checkpoint signed before its record here failed is stored now. One that does not
		// match the stored chain is not: the extension below is refused for the same reason,
		// by the signer, which records it.
		if err := s.keepCheckpoint(ctx, last); err != nil && !errors.Is(err, ErrConflict) {
			return audit.Checkpoint{}, false, err
		}
	}
	var (
		newest audit.Checkpoint
		signed bool
	)
	for last.Size < seq {
		events, err := s.AuditEvents(ctx, last.Size, audit.MaxExtension)
		if err != nil {
			return newest, signed, err
		}
		if len(events) == 0 {
			return newest, signed, failed("sign audit checkpoint", fmt.Errorf("%w: no events after %d although the head is at %d", ErrConflict, last.Size, seq))
		}
		cp, err := signer.ExtendCheckpoint(ctx, events)
		if err != nil {
			return newest, signed, fmt.Errorf("sign audit checkpoint from event %d to %d: %w", events[0].Seq, events[len(events)-1].Seq, err)
		}
		if err := s.SaveCheckpoint(ctx, cp); err != nil {
			return newest, signed, err
		}
		last, newest, signed = cp, cp, true
	}
	if last.Size == seq && last.Head == head {
		s.signedMu.Lock()
		s.signedSize, s.signedHead = seq, head
		s.signedMu.Unlock()
	}
	return newest, signed, nil
}

// keepCheckpoint stores c unless a checkpoint of the same size and head is stored already.
func (s *Store) keepCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	var n int64
	if err := s.db.queryRow(ctx, `SELECT COUNT(*) FROM audit_checkpoints WHERE size = $1 AND head = $2`,
		int64(c.Size), c.Head[:]).Scan(&n); err != nil {
		return failed("read audit checkpoints", err)
	}
	if n > 0 || c.Size == 0 {
		return nil
	}
	return s.SaveCheckpoint(ctx, c)
}

// RunAuditCheckpoints signs a checkpoint of the chain every interval while it grows, until
// ctx is done. Failures (the keystore is down, or refuses a rewritten chain) are logged and
// retried at the next tick.
func (s *Store) RunAuditCheckpoints(ctx context.Context, signer audit.CheckpointSigner, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, err := s.CheckpointAudit(ctx, signer); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "audit checkpoint failed; retrying", "tenant", s.tenant, "err", err,
				"temporary", IsTemporary(err), "chain_rewritten", errors.Is(err, audit.ErrNotExtension))
		}
	}
}
