package audit

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// prunedLog returns a chain of 40 events with checkpoints signed at 10, 20, 30 and 40, whose
// event 31 records pruning the trail at the checkpoint at 20 (withRecord), or is an ordinary
// event (without it), and the checkpoints.
func prunedLog(t *testing.T, withRecord bool) ([]Event, []Checkpoint) {
	t.Helper()
	signer := NewEd25519Signer(testKey)
	c := NewChain(tenant, 0, [32]byte{})
	var (
		events []Event
		cps    []Checkpoint
	)
	for i := range 40 {
		e := Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: KindNotified, Actor: "system", MessageID: "msg-1"}
		if i == 30 && withRecord {
			e = Event{Time: e.Time, Kind: KindAuditPruned, Actor: "retention",
				Detail: PruneDetail(map[string]string{"rule": "hipaa-standard"}, 1, 20)}
		}
		e = c.Append(e)
		events = append(events, e)
		if e.Seq%10 == 0 {
			cp, err := SignCheckpoint(context.Background(), signer, tenant, e.Seq, e.Hash, e.Time)
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, cp)
		}
	}
	return events, cps
}

// prunedExport exports events 21 to 40 with the checkpoint at 20 as their anchor.
func prunedExport(t *testing.T, events []Event, cps []Checkpoint) []string {
	t.Helper()
	return exportLines(t, events[20:], cps[1:])
}

func TestExportVerifiesAfterPruning(t *testing.T) {
	events, cps := prunedLog(t, true)
	lines := prunedExport(t, events, cps)
	if !strings.Contains(lines[0], `"first":21`) || !strings.Contains(lines[1], `"checkpoint"`) || !strings.Contains(lines[1], `"size":20,`) {
		t.Fatalf("a pruned export starts with\n%s%s want the header with first 21, then the anchor at 20", lines[0], lines[1])
	}
	rep, err := VerifyWithKey(strings.NewReader(strings.Join(lines, "")), testPub)
	if err != nil {
		t.Fatalf("the export of a pruned trail does not verify: %v", err)
	}
	if rep.First != 21 || rep.Events != 20 || rep.Checkpoints != 3 || rep.Head != events[39].Hash ||
		rep.Anchor == nil || rep.Anchor.Size != 20 || rep.Anchor.Head != events[19].Hash || rep.Pruning == nil || rep.Pruning.Seq != 31 {
		t.Fatalf("report %+v, want events 21 to 40 after the anchor at 20, with the pruning recorded by event 31", rep)
	}
	if d := rep.Pruning.Detail; d[PruneFrom] != "1" || d[PruneThrough] != "20" || d[PruneCount] != "20" || d["rule"] != "hipaa-standard" {
		t.Errorf("pruning detail %v", d)
	}

	// It extends a trusted checkpoint at the anchor or after it.
	for _, trusted := range []Checkpoint{cps[1], cps[2]} {
		if _, err := VerifyExtends(strings.NewReader(strings.Join(lines, "")), testPub, trusted); err != nil {
			t.Errorf("extends the trusted checkpoint at %d: %v", trusted.Size, err)
		}
	}
	// Without its anchor it is a plain segment: it verifies, but says it shows no pruning.
	plain := strings.Join(append(copyLines(lines[:1]), lines[2:]...), "")
	if rep, err := VerifyWithKey(strings.NewReader(plain), testPub); err != nil || rep.Anchor != nil || rep.Pruning != nil || rep.First != 21 {
		t.Errorf("without its anchor: %+v, %v; want a segment from 21 without anchor", rep, err)
	}
}

func TestPrunedExportAlteredFails(t *testing.T) {
	events, cps := prunedLog(t, true)
	lines := prunedExport(t, events, cps)
	edited := func(i int, edit func(*exportLine)) string {
		l := copyLines(lines)
		editLine(t, l, i, edit)
		return strings.Join(l, "")
	}
	without := func(i int) string { return strings.Join(append(copyLines(lines[:i]), lines[i+1:]...), "") }
	otherHead := events[18].Hash

	unrecorded, unrecordedCps := prunedLog(t, false)
	recordedElsewhere := func() string {
		// The record names the checkpoint at 10: it does not record this cut.
		c := NewChain(tenant, 0, [32]byte{})
		var evs []Event
		for _, e := range events {
			e = Event{Time: e.Time, Kind: e.Kind, Actor: e.Actor, MessageID: e.MessageID, Detail: e.Detail}
			if e.Kind == KindAuditPruned {
				e.Detail = PruneDetail(map[string]string{"rule": "hipaa-standard"}, 1, 10)
			}
			evs = append(evs, c.Append(e))
		}
		var ckps []Checkpoint
		for _, size := range []int{20, 40} {
			cp, err := SignCheckpoint(context.Background(), NewEd25519Signer(testKey), tenant, uint64(size), evs[size-1].Hash, t0)
			if err != nil {
				t.Fatal(err)
			}
			ckps = append(ckps, cp)
		}
		return strings.Join(exportLines(t, evs[20:], ckps), "")
	}

	for _, tc := range []struct {
		name, file string
		trusted    *Checkpoint
		seq        uint64
		problem    Problem
		says       string
	}{
		{name: "an event after the anchor changed", file: edited(eventLine(t, lines, 25), func(x *exportLine) { x.Event.Actor = "someone-else" }),
			seq: 25, problem: ProblemModified, says: "hash does not match"},
		{name: "an event after the anchor removed", file: without(eventLine(t, lines, 25)),
			seq: 25, problem: ProblemDeleted, says: "event 25 is missing"},
		{name: "the first event after the anchor removed", file: without(eventLine(t, lines, 21)),
			seq: 21, problem: ProblemModified, says: "first line is not that event"},
		{name: "the record of the pruning removed", file: without(eventLine(t, lines, 31)),
			seq: 31, problem: ProblemDeleted, says: "event 31 is missing"},
		{name: "the anchor's head changed", file: edited(1, func(x *exportLine) { x.Checkpoint.Head = hexHash(otherHead) }),
			seq: 20, problem: ProblemBadSignature, says: "does not verify"},
		{name: "the anchor signed by another key", file: strings.Join(append(append(copyLines(lines[:1]), checkpointBy(t, otherKeySigner(), cps[1])), lines[2:]...), ""),
			seq: 20, problem: ProblemBadSignature, says: "does not verify"},
		{name: "the anchor's size changed", file: edited(1, func(x *exportLine) { x.Checkpoint.Size = 19 }),
			seq: 21, problem: ProblemModified, says: "first line is not that event"},
		{name: "the first event re-linked to another anchor head", file: edited(eventLine(t, lines, 21), func(x *exportLine) { x.Event.PrevHash = hexHash(otherHead) }),
			seq: 21, problem: ProblemModified, says: "hash does not match"},
		{name: "cut at a checkpoint without a record", file: strings.Join(prunedExport(t, unrecorded, unrecordedCps), ""),
			seq: 1, problem: ProblemDeleted, says: "without a record"},
		{name: "the record names another anchor", file: recordedElsewhere(),
			seq: 1, problem: ProblemDeleted, says: "without a record"},
		{name: "a trusted checkpoint before the anchor", file: strings.Join(lines, ""), trusted: &cps[0],
			problem: ProblemTruncated, says: "after the trusted checkpoint at size 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.trusted != nil {
				_, err = VerifyExtends(strings.NewReader(tc.file), testPub, *tc.trusted)
			} else {
				_, err = VerifyWithKey(strings.NewReader(tc.file), testPub)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Problem != tc.problem || ve.Seq != tc.seq || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want a %s problem at event %d saying %q", err, tc.problem, tc.seq, tc.says)
			}
		})
	}

	// A trusted checkpoint of the anchor's size with another head: the trail was rewritten.
	forged, err := SignCheckpoint(context.Background(), NewEd25519Signer(testKey), tenant, 20, otherHead, t0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyExtends(strings.NewReader(strings.Join(lines, "")), testPub, forged)
	if ve := (*VerifyError)(nil); !errors.As(err, &ve) || ve.Problem != ProblemModified || !strings.Contains(err.Error(), "differs from the trusted checkpoint") {
		t.Errorf("against another trusted head at the anchor's size: %v", err)
	}
}

// Events removed from the start of a trail at no checkpoint make no anchored export: the
// export starts at event 1 and verify finds the events missing.
func TestExportWithoutAnchorIsNoSegment(t *testing.T) {
	events, cps := prunedLog(t, true)
	var buf bytes.Buffer
	if err := Export(&buf, testPub, events[22:], cps[2:]); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), `"first"`) {
		t.Fatalf("an export without an anchor claims a segment:\n%s", buf.String())
	}
	_, err := VerifyWithKey(&buf, testPub)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Problem != ProblemDeleted || ve.Seq != 1 {
		t.Errorf("err = %v, want events from 1 missing", err)
	}
}

func TestPruneDetail(t *testing.T) {
	rule := map[string]string{"rule": "hipaa-standard", "generation": "3"}
	d := PruneDetail(rule, 101, 2000)
	want := map[string]string{"rule": "hipaa-standard", "generation": "3", "anchor": "2000", "from": "101", "through": "2000", "count": "1900"}
	if len(d) != len(want) {
		t.Fatalf("detail %v, want %v", d, want)
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("detail %s = %q, want %q", k, d[k], v)
		}
	}
	if len(rule) != 2 {
		t.Error("PruneDetail changed the rule's map")
	}
	if !recordsPruneAt(Event{Kind: KindAuditPruned, Detail: d}, 2000) || recordsPruneAt(Event{Kind: KindPurged, Detail: d}, 2000) {
		t.Error("recordsPruneAt")
	}
}

func hexHash(h [32]byte) string { return NewEventRecord(Event{PrevHash: h}).PrevHash }
