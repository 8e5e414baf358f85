package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// purgeLog returns a chain of 12 events whose event 5 purges message msg-purged under rule
// hipaa-standard, and a checkpoint signed at 12.
func purgeLog(t *testing.T) ([]Event, Checkpoint) {
	t.Helper()
	c := NewChain(tenant, 0, [32]byte{})
	var events []Event
	for i := range 12 {
		e := Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: KindNotified, Actor: "system", MessageID: "msg-other"}
		if i == 4 {
			e = Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: KindPurged, Actor: "retention", MessageID: "msg-purged",
				Detail: map[string]string{"rule": "hipaa-standard", "generation": "3"}}
		}
		events = append(events, c.Append(e))
	}
	last := events[len(events)-1]
	cp, err := SignCheckpoint(context.Background(), NewEd25519Signer(testKey), tenant, last.Seq, last.Hash, last.Time)
	if err != nil {
		t.Fatal(err)
	}
	return events, cp
}

func certificateFile(t *testing.T, events []Event, cp Checkpoint) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteCertificate(&buf, testPub, events, cp); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestCertificateOfDestruction(t *testing.T) {
	events, cp := purgeLog(t)
	file := certificateFile(t, events[4:], cp)
	rep, err := VerifyWithKey(strings.NewReader(file), testPub)
	if err != nil {
		t.Fatalf("a certificate does not verify: %v\n%s", err, file)
	}
	want := Certificate{MessageID: "msg-purged", Seq: 5, Rule: "hipaa-standard", Generation: "3", PurgedAt: t0.Add(4 * time.Minute)}
	if rep.Certificate == nil || *rep.Certificate != want || rep.First != 5 || rep.Events != 8 || rep.Head != cp.Head {
		t.Errorf("report %+v (certificate %+v), want %+v from event 5, 8 events, head of the checkpoint", rep, rep.Certificate, want)
	}
	if strings.Contains(file, "+1202") {
		t.Error("the certificate carries a phone number")
	}

	// An export of the whole chain is no certificate, and says it starts at event 1.
	var full bytes.Buffer
	if err := Export(&full, testPub, events, []Checkpoint{cp}); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(&full); err != nil || rep.First != 1 || rep.Certificate != nil {
		t.Errorf("a whole export: %+v, %v", rep, err)
	}
}

func TestCertificateAlteredFails(t *testing.T) {
	events, cp := purgeLog(t)
	file := certificateFile(t, events[4:], cp)
	lines := strings.SplitAfter(strings.TrimSuffix(file, "\n"), "\n")
	edit := func(i int, from, to string) string {
		l := copyLines(lines)
		if !strings.Contains(l[i], from) {
			t.Fatalf("line %d has no %q: %s", i+1, from, l[i])
		}
		l[i] = strings.Replace(l[i], from, to, 1)
		return strings.Join(l, "")
	}
	for _, tc := range []struct {
		name, file string
		problem    Problem
		says       string
	}{
		{"another message named", edit(0, `"messageId":"msg-purged"`, `"messageId":"msg-other"`), ProblemModified, "names message msg-other"},
		{"another rule named", edit(0, `"rule":"hipaa-standard"`, `"rule":"hipaa-short"`), ProblemModified, "names rule hipaa-short"},
		{"another purge time", edit(0, `"purgedAt":"2025-03-01T12:04:00`, `"purgedAt":"2025-03-01T12:03:00`), ProblemModified, "says purged at"},
		{"the purge event's time changed", edit(1, `"time":"2025-03-01T12:04:00`, `"time":"2025-03-01T12:03:00`), ProblemModified, "hash does not match"},
		{"the purge event's message changed, hash and all", strings.Replace(file, "msg-purged", "msg-elsewhere", -1), ProblemModified, "hash does not match"},
		{"an event after it dropped", strings.Join(append(copyLines(lines[:3]), lines[4:]...), ""), ProblemDeleted, "event 7 is missing"},
		{"the checkpoint dropped", strings.Join(lines[:len(lines)-1], ""), ProblemTruncated, "not covered by a signed checkpoint"},
		{"the segment starts elsewhere", edit(0, `"first":5`, `"first":6`), ProblemModified, "first line is not that event"},
		{"the signature of another key", strings.Join(append(copyLines(lines[:len(lines)-1]), checkpointBy(t, otherKeySigner(), cp)), ""), ProblemBadSignature, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyWithKey(strings.NewReader(tc.file), testPub)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Problem != tc.problem || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want a %s problem saying %q", err, tc.problem, tc.says)
			}
		})
	}
}

func TestWriteCertificateRefuses(t *testing.T) {
	events, cp := purgeLog(t)
	for _, tc := range []struct {
		name   string
		events []Event
		cp     Checkpoint
		says   string
	}{
		{"not a purge", events[3:], cp, "is a notified event"},
		{"a gap", append(append([]Event{}, events[4:6]...), events[7:]...), cp, "without a gap"},
		{"a checkpoint short of the last event", events[4:11], cp, "must cover event 11"},
	} {
		if err := WriteCertificate(&bytes.Buffer{}, testPub, tc.events, tc.cp); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
}

func copyLines(l []string) []string { return append([]string(nil), l...) }

func otherKeySigner() Signer { return NewEd25519Signer(otherKey) }

// checkpointBy returns cp's export line re-signed by signer.
func checkpointBy(t *testing.T, signer Signer, cp Checkpoint) string {
	t.Helper()
	re, err := SignCheckpoint(context.Background(), signer, cp.Tenant, cp.Size, cp.Head, cp.Time)
	if err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(exportLine{Checkpoint: NewCheckpointRecord(re)})
	if err != nil {
		t.Fatal(err)
	}
	return string(line) + "\n"
}
