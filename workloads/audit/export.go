package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ExportFormat is the "format" value in the first line of an export.
const ExportFormat = "securetext-audit/v1"

// maxLine bounds one NDJSON line when verifying; real lines are well under 4 KiB.
const maxLine = 1 << 20

// The NDJSON shapes. Hashes are lowercase hex; signatures and the public key are standard
// base64 (encoding/json's []byte encoding). EventRecord and CheckpointRecord are also the wire
// form of the keystore's checkpoint API, so an event crosses the network exactly as it is
// exported.
type (
	exportHeader struct {
		Format    string `json:"format"`
		Tenant    string `json:"tenant"`
		PublicKey []byte `json:"publicKey"`
		// First is the sequence number of the first event of a segment (a certificate of
		// destruction, or the export of a pruned trail, whose first line is then the anchor);
		// absent for an export from the start of the chain.
		First uint64 `json:"first,omitempty"`
		// Certificate is what a certificate of destruction certifies: it names the segment's
		// first event.
		Certificate *certificateRecord `json:"certificate,omitempty"`
	}
	certificateRecord struct {
		MessageID  string `json:"messageId"`
		Seq        uint64 `json:"seq"`
		Rule       string `json:"rule"`
		Generation string `json:"generation,omitempty"`
		PurgedAt   string `json:"purgedAt"`
		// KeyVersionMax and KeysDestroyed are the key-version bound (Certificate).
		KeyVersionMax int                   `json:"keyVersionMax,omitempty"`
		KeysDestroyed *keyDestructionRecord `json:"keysDestroyed,omitempty"`
	}
	keyDestructionRecord struct {
		Seq        uint64 `json:"seq"`
		MinVersion int    `json:"minVersion"`
		At         string `json:"at"`
	}
	exportLine struct {
		Event      *EventRecord      `json:"event,omitempty"`
		Checkpoint *CheckpointRecord `json:"checkpoint,omitempty"`
	}
	// EventRecord is an Event as JSON.
	EventRecord struct {
		Seq       uint64            `json:"seq"`
		Time      string            `json:"time"`
		Kind      Kind              `json:"kind"`
		Actor     string            `json:"actor"`
		Tenant    string            `json:"tenant"`
		MessageID string            `json:"messageId,omitempty"`
		Detail    map[string]string `json:"detail,omitempty"`
		PrevHash  string            `json:"prevHash"`
		Hash      string            `json:"hash"`
	}
	// CheckpointRecord is a Checkpoint as JSON.
	CheckpointRecord struct {
		Tenant    string `json:"tenant"`
		Size      uint64 `json:"size"`
		Head      string `json:"head"`
		Time      string `json:"time"`
		KeyID     string `json:"keyId"`
		Signature []byte `json:"signature"`
	}
)

// Export writes one tenant's events and checkpoints as NDJSON: a header line, then the events
// in sequence order, each checkpoint directly after the event its Size names.
//
// Events start at event 1, or, once the trail was pruned, right after the anchor: the signed
// checkpoint the oldest events were removed up to, which is then checkpoints[0], at size
// events[0].Seq-1. Such an export is a segment (header "first") whose first line is the
// anchor; Verify links its first event to the anchor's signed head and requires the
// audit-pruned event that records the cut.
//
// Export writes what it is given without judging it: a tampered store must produce an export
// that Verify rejects, not an error that hides the evidence. It only refuses input that is not
// an export at all, and it requires a final checkpoint covering the last event: the caller signs
// one at export time. Without it, dropping events from the end would go unnoticed.
func Export(w io.Writer, pub ed25519.PublicKey, events []Event, checkpoints []Checkpoint) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("audit export: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if len(events) == 0 {
		return errors.New("audit export: no events to export")
	}
	tenant, last := events[0].Tenant, events[len(events)-1].Seq
	for i, e := range events {
		if e.Tenant != tenant {
			return fmt.Errorf("audit export: event %d belongs to another tenant than event %d", e.Seq, events[0].Seq)
		}
		if i > 0 && e.Seq <= events[i-1].Seq {
			return fmt.Errorf("audit export: events must be in increasing sequence order (event %d after %d)", e.Seq, events[i-1].Seq)
		}
	}
	if len(checkpoints) == 0 || checkpoints[len(checkpoints)-1].Size != last {
		return fmt.Errorf("audit export: the last checkpoint must cover event %d; sign one at export time", last)
	}

	header := exportHeader{Format: ExportFormat, Tenant: tenant, PublicKey: pub}
	c := 0 // checkpoints written
	if first := events[0].Seq; first > 1 && checkpoints[0].Size == first-1 {
		header.First, c = first, 1
	}

	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(header); err != nil {
		return fmt.Errorf("audit export: write header: %w", err)
	}
	if c == 1 {
		if checkpoints[0].Tenant != tenant {
			return fmt.Errorf("audit export: the anchor at size %d belongs to another tenant", checkpoints[0].Size)
		}
		if err := enc.Encode(exportLine{Checkpoint: NewCheckpointRecord(checkpoints[0])}); err != nil {
			return fmt.Errorf("audit export: write the anchor at size %d: %w", checkpoints[0].Size, err)
		}
	}
	for _, e := range events {
		if err := enc.Encode(exportLine{Event: NewEventRecord(e)}); err != nil {
			return fmt.Errorf("audit export: write event %d: %w", e.Seq, err)
		}
		for ; c < len(checkpoints) && checkpoints[c].Size <= e.Seq; c++ {
			cp := checkpoints[c]
			if cp.Size != e.Seq || cp.Tenant != tenant {
				return fmt.Errorf("audit export: checkpoint at size %d matches no event of this tenant, or checkpoints are out of order", cp.Size)
			}
			if err := enc.Encode(exportLine{Checkpoint: NewCheckpointRecord(cp)}); err != nil {
				return fmt.Errorf("audit export: write checkpoint %d: %w", cp.Size, err)
			}
		}
	}
	if c != len(checkpoints) {
		return fmt.Errorf("audit export: checkpoint at size %d is out of order", checkpoints[c].Size)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	return nil
}

// NewEventRecord returns e as JSON.
func NewEventRecord(e Event) *EventRecord {
	return &EventRecord{
		Seq: e.Seq, Time: e.Time.UTC().Format(timeLayout), Kind: e.Kind, Actor: e.Actor,
		Tenant: e.Tenant, MessageID: e.MessageID, Detail: e.Detail,
		PrevHash: hex.EncodeToString(e.PrevHash[:]), Hash: hex.EncodeToString(e.Hash[:]),
	}
}

// NewCheckpointRecord returns c as JSON.
func NewCheckpointRecord(c Checkpoint) *CheckpointRecord {
	return &CheckpointRecord{
		Tenant: c.Tenant, Size: c.Size, Head: hex.EncodeToString(c.Head[:]),
		Time: c.Time.UTC().Format(timeLayout), KeyID: c.KeyID, Signature: c.Signature,
	}
}

// Event parses the record; it checks the form of the time and hashes, not the hashes' values.
func (j *EventRecord) Event() (Event, error) {
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return Event{}, errors.New("bad time")
	}
	e := Event{Seq: j.Seq, Time: t, Kind: j.Kind, Actor: j.Actor, Tenant: j.Tenant, MessageID: j.MessageID, Detail: j.Detail}
	if err := decodeHash(&e.PrevHash, j.PrevHash); err != nil {
		return Event{}, err
	}
	if err := decodeHash(&e.Hash, j.Hash); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Checkpoint parses the record; it checks the form of the time and head, not the signature.
func (j *CheckpointRecord) Checkpoint() (Checkpoint, error) {
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return Checkpoint{}, errors.New("bad time")
	}
	c := Checkpoint{Tenant: j.Tenant, Size: j.Size, Time: t, KeyID: j.KeyID, Signature: j.Signature}
	return c, decodeHash(&c.Head, j.Head)
}

func decodeHash(dst *[32]byte, s string) error {
	if hex.DecodedLen(len(s)) != len(dst) {
		return errors.New("bad hash length")
	}
	_, err := hex.Decode(dst[:], []byte(s))
	return err
}

// Problem classifies why an export failed verification.
type Problem string

// Problems Verify distinguishes.
const (
	ProblemModified     Problem = "modified"
	ProblemDeleted      Problem = "deleted"
	ProblemReordered    Problem = "reordered"
	ProblemTruncated    Problem = "truncated"
	ProblemBadSignature Problem = "bad signature"
	ProblemFormat       Problem = "unknown format"
)

// VerifyError reports the first problem found in an export: the sequence number of the first
// event that cannot be trusted (0 for problems with the header), the 1-based line it was found
// on, and why.
type VerifyError struct {
	Seq     uint64
	Line    int
	Problem Problem
	Reason  string
}

func (e *VerifyError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("audit verify: line %d: %s — %s", e.Line, e.Reason, e.Problem)
	}
	return fmt.Sprintf("audit verify: event %d (line %d): %s — %s", e.Seq, e.Line, e.Reason, e.Problem)
}

// Report summarises an export that verified.
type Report struct {
	Tenant      string
	PublicKey   ed25519.PublicKey // the key the checkpoints verified under; compare it with the tenant's published key
	Events      int
	Checkpoints int
	Head        [32]byte // hash of the last event, signed by the final checkpoint
	// First is the first event's sequence number: 1 for an export of the whole chain, more for
	// a segment (a certificate of destruction, a pruned trail), whose events before First it
	// does not cover.
	First uint64
	// Certificate is set when the file is a certificate of destruction that verified.
	Certificate *Certificate
	// Anchor is set when the export is of a pruned trail: the signed checkpoint at size
	// First-1 that the events before First were removed up to. Pruning is the event that
	// records that cut (an audit-pruned event naming the anchor), which such an export must
	// hold.
	Anchor  *Checkpoint
	Pruning *Event
}

// Verify checks an export offline against the public key in its own header. That proves the
// export is internally consistent and signed by that key, but anyone can write a header: the
// caller must compare Report.PublicKey with the tenant's published key, or use VerifyWithKey.
func Verify(r io.Reader) (Report, error) { return verify(r, nil, nil) }

// VerifyWithKey is Verify, and also requires the header key to equal trusted.
func VerifyWithKey(r io.Reader, trusted ed25519.PublicKey) (Report, error) {
	if len(trusted) != ed25519.PublicKeySize {
		return Report{}, fmt.Errorf("audit verify: trusted public key is %d bytes, want %d", len(trusted), ed25519.PublicKeySize)
	}
	return verify(r, trusted, nil)
}

// VerifyExtends is VerifyWithKey (or Verify when key is nil), and also requires the export to
// extend trusted, a checkpoint kept from earlier (say, last month's export): trusted must be
// signed by the export's key and its head must be the hash of the export's event at its size.
// An export whose chain was rewritten below trusted, or that ends before it, is refused.
func VerifyExtends(r io.Reader, key ed25519.PublicKey, trusted Checkpoint) (Report, error) {
	if key != nil && len(key) != ed25519.PublicKeySize {
		return Report{}, fmt.Errorf("audit verify: trusted public key is %d bytes, want %d", len(key), ed25519.PublicKeySize)
	}
	return verify(r, key, &trusted)
}

// ReadTrustedCheckpoint reads the checkpoint a verifier kept: a file of export lines (a whole
// export, or only its checkpoint lines) of which the checkpoint with the largest size is taken.
// Its signature is checked when the export is verified against it, not here.
func ReadTrustedCheckpoint(r io.Reader) (Checkpoint, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var (
		best  Checkpoint
		found bool
	)
	for n := 1; sc.Scan(); n++ {
		var l struct {
			Format     string            `json:"format"`
			Checkpoint *CheckpointRecord `json:"checkpoint"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return Checkpoint{}, fmt.Errorf("audit: trusted checkpoint file, line %d: not an export line: %w", n, err)
		}
		if l.Checkpoint == nil {
			continue
		}
		c, err := l.Checkpoint.Checkpoint()
		if err != nil {
			return Checkpoint{}, fmt.Errorf("audit: trusted checkpoint file, line %d: %w", n, err)
		}
		if !found || c.Size > best.Size {
			best, found = c, true
		}
	}
	if err := sc.Err(); err != nil {
		return Checkpoint{}, fmt.Errorf("audit: read trusted checkpoint file: %w", err)
	}
	if !found {
		return Checkpoint{}, errors.New(`audit: the trusted checkpoint file holds no {"checkpoint": …} line; give an earlier export or its checkpoint lines`)
	}
	return best, nil
}

// record is one parsed body line; bad is set when the line is not a valid event or checkpoint,
// and is reported only when the sequential pass reaches it, so earlier problems come first.
type record struct {
	line int
	ev   *Event
	cp   *Checkpoint
	bad  bool
}

func verify(r io.Reader, trusted ed25519.PublicKey, earlier *Checkpoint) (Report, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)

	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return Report{}, fmt.Errorf("audit verify: read line 1: %w", err)
		}
		return Report{}, &VerifyError{Line: 1, Problem: ProblemFormat, Reason: "empty file"}
	}
	var h exportHeader
	if err := strictUnmarshal(sc.Bytes(), &h); err != nil || h.Format != ExportFormat {
		return Report{}, &VerifyError{Line: 1, Problem: ProblemFormat, Reason: "header is not " + ExportFormat}
	}
	if h.Tenant == "" || len(h.PublicKey) != ed25519.PublicKeySize {
		return Report{}, &VerifyError{Line: 1, Problem: ProblemFormat, Reason: "header lacks a tenant or an ed25519 public key"}
	}
	pub := ed25519.PublicKey(h.PublicKey)
	if trusted != nil && !pub.Equal(trusted) {
		return Report{}, &VerifyError{Line: 1, Problem: ProblemBadSignature,
			Reason: fmt.Sprintf("export is signed by key %s, not the trusted key %s", KeyID(pub), KeyID(trusted))}
	}

	// Read every line first: telling a deleted event from a moved one needs to know whether
	// the missing sequence number appears later in the file.
	var recs []record
	lastIndex := make(map[uint64]int) // event seq → index in recs of its last occurrence
	for n := 2; sc.Scan(); n++ {
		rec := record{line: n}
		var l exportLine
		if err := strictUnmarshal(sc.Bytes(), &l); err != nil || (l.Event == nil) == (l.Checkpoint == nil) {
			rec.bad = true
		} else if l.Event != nil {
			e, err := l.Event.Event()
			rec.ev, rec.bad = &e, err != nil
			lastIndex[e.Seq] = len(recs)
		} else {
			c, err := l.Checkpoint.Checkpoint()
			rec.cp, rec.bad = &c, err != nil
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return Report{}, fmt.Errorf("audit verify: read line %d: %w", len(recs)+2, err)
	}

	if earlier != nil {
		switch {
		case earlier.Tenant != h.Tenant:
			return Report{}, &VerifyError{Line: 1, Problem: ProblemModified,
				Reason: fmt.Sprintf("the trusted checkpoint is of tenant %s, the export of %s", earlier.Tenant, h.Tenant)}
		case VerifyCheckpoint(pub, *earlier) != nil:
			return Report{}, &VerifyError{Line: 1, Problem: ProblemBadSignature,
				Reason: fmt.Sprintf("the trusted checkpoint at size %d is not signed by the export's key %s", earlier.Size, KeyID(pub))}
		}
	}

	rep := Report{Tenant: h.Tenant, PublicKey: pub, First: max(h.First, 1)}
	var (
		head    [32]byte // hash of event next-1; all zeros before the first event (genesis)
		next    = rep.First
		covered = rep.First - 1 // size of the last valid checkpoint
		lines   = make(map[uint64]int)
	)
	if rep.First > 1 {
		// A segment: its first event's link to the events before it is taken as given. The
		// checkpoint at its end signs the head hash, which covers that link, so the segment is
		// exactly as it stands in the signed chain. A pruned trail's segment starts with its
		// anchor, a checkpoint at the event before the first: the loop below checks its
		// signature like any checkpoint's, and the first event must link to its head.
		start := 0
		if len(recs) > 0 && !recs[0].bad && recs[0].cp != nil && recs[0].cp.Size == rep.First-1 {
			anchor := *recs[0].cp
			rep.Anchor, start = &anchor, 1
		}
		if len(recs) <= start || recs[start].ev == nil || recs[start].ev.Seq != rep.First {
			return Report{}, &VerifyError{Seq: rep.First, Line: 2 + start, Problem: ProblemModified,
				Reason: fmt.Sprintf("the header says the segment starts at event %d, but its first line is not that event", rep.First)}
		}
		switch {
		case earlier != nil && rep.Anchor != nil && earlier.Size == rep.Anchor.Size && earlier.Head != rep.Anchor.Head:
			return Report{}, &VerifyError{Seq: rep.Anchor.Size, Line: 2, Problem: ProblemModified,
				Reason: fmt.Sprintf("the anchor at size %d differs from the trusted checkpoint of that size: the trail was rewritten since that checkpoint", earlier.Size)}
		case earlier != nil && earlier.Size < rep.First && (rep.Anchor == nil || earlier.Size != rep.Anchor.Size):
			return Report{}, &VerifyError{Line: 1, Problem: ProblemTruncated,
				Reason: fmt.Sprintf("the segment starts at event %d, after the trusted checkpoint at size %d", rep.First, earlier.Size)}
		}
		if rep.Anchor != nil {
			head = rep.Anchor.Head
		} else {
			head = recs[0].ev.PrevHash
		}
	}
	fail := func(seq uint64, line int, p Problem, format string, args ...any) (Report, error) {
		return Report{}, &VerifyError{Seq: seq, Line: line, Problem: p, Reason: fmt.Sprintf(format, args...)}
	}
	for i, rec := range recs {
		switch {
		case rec.bad:
			return fail(next, rec.line, ProblemModified, "line is not a valid event or checkpoint")

		case rec.ev != nil:
			e := rec.ev
			switch {
			case e.Seq < next:
				return fail(e.Seq, rec.line, ProblemReordered, "event %d appears after event %d", e.Seq, next-1)
			case e.Seq > next && appearsAfter(lastIndex, next, i):
				return fail(next, rec.line, ProblemReordered, "event %d appears where event %d belongs", e.Seq, next)
			case e.Seq == next+1:
				return fail(next, rec.line, ProblemDeleted, "event %d is missing", next)
			case e.Seq > next:
				return fail(next, rec.line, ProblemDeleted, "events %d to %d are missing", next, e.Seq-1)
			case e.LeafHash() != e.Hash:
				return fail(e.Seq, rec.line, ProblemModified, "hash does not match its content")
			case e.PrevHash != head && e.Seq == 1:
				return fail(e.Seq, rec.line, ProblemModified, "first event does not link to the all-zero genesis hash")
			case e.PrevHash != head && rep.Anchor != nil && e.Seq == rep.First:
				return fail(e.Seq, rec.line, ProblemModified, "first event does not link to the head of the signed anchor at size %d", rep.Anchor.Size)
			case e.PrevHash != head:
				return fail(e.Seq, rec.line, ProblemModified, "previous hash does not match event %d (it or this link was rewritten)", e.Seq-1)
			case e.Tenant != h.Tenant:
				return fail(e.Seq, rec.line, ProblemModified, "tenant differs from the export header")
			}
			if earlier != nil && e.Seq == earlier.Size && e.Hash != earlier.Head {
				return fail(e.Seq, rec.line, ProblemModified,
					"the export's event %d differs from the trusted checkpoint's head: the trail was rewritten since that checkpoint", e.Seq)
			}
			if rep.Anchor != nil && rep.Pruning == nil && recordsPruneAt(*e, rep.Anchor.Size) {
				pruning := *e
				rep.Pruning = &pruning
			}
			head, lines[e.Seq] = e.Hash, rec.line
			next++
			rep.Events++

		default:
			c := rec.cp
			switch {
			case c.Size > next-1 && appearsAfter(lastIndex, c.Size, i):
				return fail(c.Size, rec.line, ProblemReordered, "checkpoint for size %d appears before event %d", c.Size, c.Size)
			case c.Size > next-1:
				return fail(next, rec.line, ProblemTruncated, "checkpoint covers %d events but only %d precede it", c.Size, next-1)
			case c.Size < next-1:
				return fail(c.Size, rec.line, ProblemReordered, "checkpoint for size %d appears after event %d", c.Size, next-1)
			case c.Tenant != h.Tenant:
				return fail(c.Size, rec.line, ProblemModified, "checkpoint tenant differs from the export header")
			case VerifyCheckpoint(pub, *c) != nil:
				return fail(c.Size, rec.line, ProblemBadSignature, "checkpoint signature does not verify under key %s", KeyID(pub))
			case c.Head != head:
				return fail(c.Size, rec.line, ProblemModified, "signed checkpoint head does not match the chain (events up to %d were rewritten)", c.Size)
			}
			covered = c.Size
			rep.Checkpoints++
		}
	}

	if rep.Events == 0 {
		return fail(1, len(recs)+2, ProblemTruncated, "export holds no events")
	}
	if covered != next-1 {
		return fail(covered+1, lines[covered+1], ProblemTruncated,
			"events %d to %d are not covered by a signed checkpoint; an export ends with one", covered+1, next-1)
	}
	if earlier != nil && earlier.Size > next-1 {
		return fail(next, len(recs)+2, ProblemTruncated,
			"the export ends at event %d, before the trusted checkpoint at size %d: events were removed since that checkpoint", next-1, earlier.Size)
	}
	if rep.Anchor != nil && rep.Pruning == nil {
		// The anchor is a checkpoint that was really signed, but only the audit-pruned event
		// (signed by the checkpoints after it) says the events before it were removed by the
		// retention policy and not by someone with write access to the database.
		return fail(1, 2, ProblemDeleted,
			"the export starts after the anchor at size %d, but none of its events records pruning the trail there: events 1 to %d were removed without a record",
			rep.Anchor.Size, rep.Anchor.Size)
	}
	rep.Head = head
	if h.Certificate != nil {
		c, err := h.Certificate.certificate()
		if err != nil {
			return Report{}, &VerifyError{Line: 1, Problem: ProblemFormat, Reason: "certificate: " + err.Error()}
		}
		if err := c.matches(*recs[0].ev, rep.First); err != nil {
			return Report{}, &VerifyError{Seq: c.Seq, Line: 1, Problem: ProblemModified, Reason: "certificate: " + err.Error()}
		}
		var events []Event
		for _, r := range recs {
			if r.ev != nil {
				events = append(events, *r.ev)
			}
		}
		if err := c.matchesKeys(events); err != nil {
			return Report{}, &VerifyError{Seq: c.Seq, Line: 1, Problem: ProblemModified, Reason: "certificate: " + err.Error()}
		}
		rep.Certificate = &c
	}
	return rep, nil
}

// appearsAfter reports whether event seq occurs in a record after index i.
func appearsAfter(lastIndex map[uint64]int, seq uint64, i int) bool {
	j, ok := lastIndex[seq]
	return ok && j > i
}

// strictUnmarshal refuses unknown fields and trailing data, so a line means exactly one thing.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}
