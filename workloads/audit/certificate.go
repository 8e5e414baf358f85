package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	// KeyVersionMax is the newest version of the tenant's wrapping key that can have wrapped
	// the message's data key (the purge event's key_version_max); 0 when the purge recorded none.
	KeyVersionMax int
	// KeysDestroyed, when set, is the later event that records destroying every wrapping key
	// version up to KeyVersionMax: from then on no copy of the database, backups included,
	// can be decrypted.
	KeysDestroyed *KeyDestruction
}

// KeyDestruction is a key-versions-destroyed event: the versions of the wrapping key below
// MinVersion were destroyed, as the sweeper saw at At.
type KeyDestruction struct {
	Seq        uint64
	MinVersion int
	At         time.Time
}

// destructionCovering returns the first event of events that records destroying every version
// up to vmax, if any.
func destructionCovering(events []Event, vmax int) *KeyDestruction {
	if vmax <= 0 {
		return nil
	}
	for _, e := range events {
		if e.Kind != KindKeyVersionsDestroyed {
			continue
		}
		if n, err := strconv.Atoi(e.Detail["min_version"]); err == nil && n > vmax {
			return &KeyDestruction{Seq: e.Seq, MinVersion: n, At: e.Time}
		}
	}
	return nil
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
	if v := purged.Detail["key_version_max"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("certificate of destruction: event %d records key_version_max %q, not a version", purged.Seq, v)
		}
		c.KeyVersionMax = n
		c.KeysDestroyed = destructionCovering(events[1:], n)
	}

	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	rec := &certificateRecord{
		MessageID: c.MessageID, Seq: c.Seq, Rule: c.Rule, Generation: c.Generation, PurgedAt: c.PurgedAt.UTC().Format(timeLayout),
		KeyVersionMax: c.KeyVersionMax,
	}
	if d := c.KeysDestroyed; d != nil {
		rec.KeysDestroyed = &keyDestructionRecord{Seq: d.Seq, MinVersion: d.MinVersion, At: d.At.UTC().Format(timeLayout)}
	}
	header := exportHeader{Format: ExportFormat, Tenant: purged.Tenant, PublicKey: pub, First: purged.Seq, Certificate: rec}
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
	c := Certificate{MessageID: r.MessageID, Seq: r.Seq, Rule: r.Rule, Generation: r.Generation, PurgedAt: t, KeyVersionMax: r.KeyVersionMax}
	if d := r.KeysDestroyed; d != nil {
		at, err := time.Parse(time.RFC3339Nano, d.At)
		if err != nil {
			return Certificate{}, fmt.Errorf("keysDestroyed.at %q is not a time", d.At)
		}
		c.KeysDestroyed = &KeyDestruction{Seq: d.Seq, MinVersion: d.MinVersion, At: at}
	}
	return c, nil
}

// matchesKeys checks the certificate's key-version bound against the segment's events: the
// purge's key_version_max, and the destruction it names, which must cover that version.
func (c Certificate) matchesKeys(events []Event) error {
	purged := events[0]
	if want := purged.Detail["key_version_max"]; (c.KeyVersionMax == 0 && want != "") || (c.KeyVersionMax != 0 && want != strconv.Itoa(c.KeyVersionMax)) {
		return fmt.Errorf("names key version %d, but event %d records key_version_max %q", c.KeyVersionMax, purged.Seq, want)
	}
	d := c.KeysDestroyed
	if d == nil {
		return nil
	}
	if c.KeyVersionMax == 0 || d.MinVersion <= c.KeyVersionMax {
		return fmt.Errorf("says key versions below %d were destroyed, which does not cover key version %d", d.MinVersion, c.KeyVersionMax)
	}
	for _, e := range events {
		if e.Seq != d.Seq {
			continue
		}
		if e.Kind != KindKeyVersionsDestroyed || e.Detail["min_version"] != strconv.Itoa(d.MinVersion) || !e.Time.Equal(d.At) {
			return fmt.Errorf("names event %d as destroying key versions below %d at %s, but it records something else",
				d.Seq, d.MinVersion, d.At.Format(time.RFC3339Nano))
		}
		return nil
	}
	return fmt.Errorf("names event %d as destroying key versions, but the file holds no such event", d.Seq)
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
