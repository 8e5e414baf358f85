package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func notaryChain(tenant string, n int) []Event {
	c := NewChain(tenant, 0, [32]byte{})
	events := make([]Event, n)
	for i := range events {
		events[i] = c.Append(Event{Time: time.Unix(1700000000+int64(i), 0), Kind: KindAccepted, Actor: "system"})
	}
	return events
}

func TestNotaryExtendsOnlyItsChain(t *testing.T) {
	ctx := context.Background()
	state := &MemoryNotaryState{}
	signer := NewEd25519Signer(testKey)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	n, err := NewNotary("clinic-a", signer, state, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	events := notaryChain("clinic-a", 6)
	if _, ok, err := n.LastCheckpoint(ctx); ok || err != nil {
		t.Fatalf("LastCheckpoint before the first: ok=%v err=%v", ok, err)
	}
	cp, err := n.ExtendCheckpoint(ctx, events[:3])
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 3 || cp.Head != events[2].Hash || !cp.Time.Equal(at) || VerifyCheckpoint(testPub, cp) != nil {
		t.Fatalf("checkpoint %+v, want a valid one at size 3 signed at the notary's clock", cp)
	}

	forged := NewChain("clinic-a", 2, events[1].Hash)
	forgedThird := forged.Append(Event{Time: events[2].Time, Kind: KindRevealed, Actor: "system"})
	relinked := forged.Append(events[3])
	tampered := events[3]
	tampered.Actor = "someone else"
	other := notaryChain("clinic-b", 4)
	for _, c := range []struct {
		name   string
		events []Event
	}{
		{"the forged event at the signed size", []Event{forgedThird}},
		{"an event re-linked to a forged one", []Event{relinked}},
		{"a chain rewritten from genesis", notaryChain("clinic-a", 2)},
		{"events that skip one", events[4:]},
		{"events already signed", events[2:4]},
		{"an event whose hash does not match", []Event{tampered}},
		{"a gap inside the extension", []Event{events[3], events[5]}},
		{"another tenant's events", other[3:]},
	} {
		if _, err := n.ExtendCheckpoint(ctx, c.events); !errors.Is(err, ErrNotExtension) {
			t.Errorf("%s: %v, want ErrNotExtension", c.name, err)
		}
	}
	if last, _, _ := n.LastCheckpoint(ctx); last.Size != 3 || last.Head != cp.Head {
		t.Fatalf("after the refusals the last checkpoint is at %d, want 3", last.Size)
	}
	for name, offered := range map[string][]Event{"no events": nil, "too many": make([]Event, MaxExtension+1)} {
		if _, err := n.ExtendCheckpoint(ctx, offered); !errors.Is(err, ErrExtensionSize) {
			t.Errorf("%s: %v, want ErrExtensionSize", name, err)
		}
	}
	if cp, err := n.ExtendCheckpoint(ctx, events[3:]); err != nil || cp.Size != 6 {
		t.Fatalf("honest extension: size %d err=%v", cp.Size, err)
	}
}

// Two notaries on one state (two keystore replicas): a write on a version that is no longer
// current is refused and nothing is handed out.
func TestNotaryStateCheckAndSet(t *testing.T) {
	ctx := context.Background()
	state := &MemoryNotaryState{}
	racing := &raceState{NotaryState: state}
	n, err := NewNotary("clinic-a", NewEd25519Signer(testKey), racing, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewNotary("clinic-a", NewEd25519Signer(testKey), state, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := notaryChain("clinic-a", 2)
	racing.before = func() {
		if _, err := other.ExtendCheckpoint(ctx, events[:1]); err != nil {
			t.Fatalf("the other notary: %v", err)
		}
	}
	if cp, err := n.ExtendCheckpoint(ctx, events[:1]); !errors.Is(err, ErrStateChanged) || cp.Signature != nil {
		t.Fatalf("extension that lost the race: %v (signature %x), want ErrStateChanged and no checkpoint", err, cp.Signature)
	}
	racing.before = nil
	if cp, err := n.ExtendCheckpoint(ctx, events[1:]); err != nil || cp.Size != 2 {
		t.Fatalf("retry after the race: size %d err=%v", cp.Size, err)
	}
}

// raceState runs before just before the first Save, as if another replica wrote meanwhile.
type raceState struct {
	NotaryState
	before func()
}

func (r *raceState) Save(ctx context.Context, cp Checkpoint, version uint64) error {
	if f := r.before; f != nil {
		r.before = nil
		f()
	}
	return r.NotaryState.Save(ctx, cp, version)
}

// Invalid UTF-8 in an event is hashed as an export writes it, so an honest trail that holds
// such bytes still verifies.
func TestChainHashesWhatAnExportCarries(t *testing.T) {
	c := NewChain("clinic-a", 0, [32]byte{})
	e := c.Append(Event{Time: time.Unix(0, 0), Kind: KindAdminAction, Actor: "op\xf7\xf7", MessageID: "m\xff", Detail: map[string]string{"k\xfe": "v\xf7"}})
	if e.Actor != "op\ufffd\ufffd" || e.MessageID != "m\ufffd" || e.Detail["k\ufffd"] != "v\ufffd" {
		t.Fatalf("appended event %+v still holds invalid UTF-8", e)
	}
	b, err := json.Marshal(NewEventRecord(e))
	if err != nil {
		t.Fatal(err)
	}
	var r EventRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	rec, err := r.Event()
	if err != nil || rec.LeafHash() != e.Hash {
		t.Fatalf("the event as exported does not hash to its hash (%v)", err)
	}
}

// An export must extend a trusted earlier checkpoint: a chain rewritten below it, or cut
// before it, is refused even when the export's own checkpoints are valid under the same key.
func TestVerifyExtendsTrustedCheckpoint(t *testing.T) {
	ctx := context.Background()
	signer := NewEd25519Signer(testKey)
	exportOf := func(events []Event) []byte {
		t.Helper()
		last := events[len(events)-1]
		cp, err := SignCheckpoint(ctx, signer, "clinic-a", last.Seq, last.Hash, time.Unix(1800000000, 0))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := Export(&buf, testPub, events, []Checkpoint{cp}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	honest := notaryChain("clinic-a", 8)
	trusted, err := SignCheckpoint(ctx, signer, "clinic-a", 5, honest[4].Hash, time.Unix(1790000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyExtends(bytes.NewReader(exportOf(honest)), testPub, trusted); err != nil {
		t.Fatalf("honest export: %v", err)
	}
	rewritten := NewChain("clinic-a", 0, [32]byte{})
	var other []Event
	for i := range 8 {
		other = append(other, rewritten.Append(Event{Time: time.Unix(1700000000+int64(i), 0), Kind: KindRevealed, Actor: "system"}))
	}
	var ve *VerifyError
	if _, err := VerifyExtends(bytes.NewReader(exportOf(other)), testPub, trusted); !errors.As(err, &ve) || ve.Seq != 5 || ve.Problem != ProblemModified {
		t.Errorf("rewritten export: %v, want modified at event 5", err)
	}
	if _, err := VerifyExtends(bytes.NewReader(exportOf(honest[:3])), testPub, trusted); !errors.As(err, &ve) || ve.Problem != ProblemTruncated {
		t.Errorf("export cut before the trusted checkpoint: %v, want truncated", err)
	}
	forgedTrust := trusted
	forgedTrust.Size = 4
	if _, err := VerifyExtends(bytes.NewReader(exportOf(honest)), testPub, forgedTrust); !errors.As(err, &ve) || ve.Problem != ProblemBadSignature {
		t.Errorf("a trusted checkpoint whose signature does not verify: %v, want bad signature", err)
	}
	if _, err := Verify(bytes.NewReader(exportOf(other))); err != nil {
		t.Errorf("without the trusted checkpoint the rewritten export is consistent (%v): only -trusted tells", err)
	}
}
