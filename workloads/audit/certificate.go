package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Certificate is a certificate of destruction: message MessageID was purged at PurgedAt under
// retention rule Rule (generation Generation), and the event recording it, number Seq, is in
// the tenant's signed audit chain.
//
// Its file is a segment of an export: a header naming the certificate and the segment's first
// event, the purged event and every event after it up to a signed checkpoint, and that
// checkpoint. Verify (and `securetext audit verify`) checks it offline with the tenant's
// public key: each event's hash covers the one before, so the checkpoint's signed head commits
// to the purged event exactly as it stands. The events after it are audit metadata (kinds,
// message ids, actors), never content.
type Certificate struct {
	MessageID  string
	Seq        uint64
	Rule       string
	Generation string
	PurgedAt   time.Time
}

// WriteCertificate writes the certificate of destruction of events[0], a purged event: events
// are it and every later event up to cp.Size, and cp is a checkpoint signed by pub's key at
// that size.
func WriteCertificate(w io.Writer, pub ed25519.PublicKey, events []Event, cp Checkpoint) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("certificate of destruction: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if len(events) == 0 {
		return errors.New("certificate of destruction: no purged event")
	}
	purged := events[0]
	if purged.Kind != KindPurged || purged.MessageID == "" {
		return fmt.Errorf("certificate of destruction: event %d is a %s event, not a message's purge", purged.Seq, purged.Kind)
	}
	for i, e := range events {
		if e.Tenant != purged.Tenant || e.Seq != purged.Seq+uint64(i) {
			return fmt.Errorf("certificate of destruction: the events must run on from event %d without a gap (event %d)", purged.Seq, e.Seq)
		}
	}
	last := events[len(events)-1].Seq
	if cp.Size != last || cp.Tenant != purged.Tenant {
		return fmt.Errorf("certificate of destruction: the checkpoint must cover event %d of tenant %s; sign one", last, purged.Tenant)
	}
	c := Certificate{MessageID: purged.MessageID, Seq: purged.Seq, Rule: purged.Detail["rule"],
		Generation: purged.Detail["generation"], PurgedAt: purged.Time}

	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	header := exportHeader{Format: ExportFormat, Tenant: purged.Tenant, PublicKey: pub, First: purged.Seq, Certificate: &certificateRecord{
		MessageID: c.MessageID, Seq: c.Seq, Rule: c.Rule, Generation: c.Generation, PurgedAt: c.PurgedAt.UTC().Format(timeLayout),
	}}
	if err := enc.Encode(header); err != nil {
		return fmt.Errorf("certificate of destruction: %w", err)
	}
	for _, e := range events {
		if err := enc.Encode(exportLine{Event: NewEventRecord(e)}); err != nil {
			return fmt.Errorf("certificate of destruction: write event %d: %w", e.Seq, err)
		}
	}
	if err := enc.Encode(exportLine{Checkpoint: NewCheckpointRecord(cp)}); err != nil {
		return fmt.Errorf("certificate of destruction: write checkpoint: %w", err)
	}
	return bw.Flush()
}

func (r *certificateRecord) certificate() (Certificate, error) {
	t, err := time.Parse(time.RFC3339Nano, r.PurgedAt)
	if err != nil {
		return Certificate{}, fmt.Errorf("purgedAt %q is not a time", r.PurgedAt)
	}
	return Certificate{MessageID: r.MessageID, Seq: r.Seq, Rule: r.Rule, Generation: r.Generation, PurgedAt: t}, nil
}

// matches checks that the certificate says what its segment's first event, number first,
// records.
func (c Certificate) matches(e Event, first uint64) error {
	switch {
	case c.Seq != first || e.Seq != first:
		return fmt.Errorf("names event %d, but the segment starts at event %d", c.Seq, first)
	case e.Kind != KindPurged:
		return fmt.Errorf("event %d is a %s event, not a purge", e.Seq, e.Kind)
	case e.MessageID != c.MessageID:
		return fmt.Errorf("names message %s, but event %d purged message %s", c.MessageID, e.Seq, e.MessageID)
	case e.Detail["rule"] != c.Rule || e.Detail["generation"] != c.Generation:
		return fmt.Errorf("names rule %s (generation %s), but event %d records rule %s (generation %s)",
			c.Rule, c.Generation, e.Seq, e.Detail["rule"], e.Detail["generation"])
	case !e.Time.Equal(c.PurgedAt):
		return fmt.Errorf("says purged at %s, but event %d is at %s", c.PurgedAt.Format(time.RFC3339Nano), e.Seq, e.Time.Format(time.RFC3339Nano))
	}
	return nil
}
