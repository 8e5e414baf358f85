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

// keyLog is purgeLog with the purge naming key version 2 and, at event 9, the destruction of
// the versions below minVersion.
func keyLog(t *testing.T, minVersion string) ([]Event, Checkpoint) {
	t.Helper()
	c := NewChain(tenant, 0, [32]byte{})
	var events []Event
	for i := range 12 {
		e := Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: KindNotified, Actor: "system", MessageID: "msg-other"}
		switch i {
		case 4:
			e = Event{Time: e.Time, Kind: KindPurged, Actor: "retention", MessageID: "msg-purged",
				Detail: map[string]string{"rule": "hipaa-standard", "generation": "3", "key_version_max": "2"}}
		case 8:
			e = Event{Time: e.Time, Kind: KindKeyVersionsDestroyed, Actor: "retention",
				Detail: map[string]string{"min_version": minVersion, "previous_min_version": "1"}}
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

// A certificate names the key-version bound of the purge and the later event that destroyed
// those versions; verify checks both against the signed events, and refuses a claim the events
// do not make.
func TestCertificateKeyBound(t *testing.T) {
	events, cp := keyLog(t, "3")
	file := certificateFile(t, events[4:], cp)
	rep, err := VerifyWithKey(strings.NewReader(file), testPub)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, file)
	}
	c := rep.Certificate
	if c == nil || c.KeyVersionMax != 2 || c.KeysDestroyed == nil || *c.KeysDestroyed != (KeyDestruction{Seq: 9, MinVersion: 3, At: t0.Add(8 * time.Minute)}) {
		t.Fatalf("certificate %+v", c)
	}

	// A destruction that stops below the purged version proves nothing: not claimed.
	short, cpShort := keyLog(t, "2")
	if rep, err := VerifyWithKey(strings.NewReader(certificateFile(t, short[4:], cpShort)), testPub); err != nil ||
		rep.Certificate.KeyVersionMax != 2 || rep.Certificate.KeysDestroyed != nil {
		t.Errorf("a destruction below the bound: %+v, %v", rep.Certificate, err)
	}

	for _, tc := range []struct{ name, from, to, says string }{
		{"another key version", `"keyVersionMax":2`, `"keyVersionMax":1`, "names key version 1"},
		{"another destroyed version", `"minVersion":3`, `"minVersion":4`, "records something else"},
		{"a destruction that does not cover", `"minVersion":3`, `"minVersion":2`, "does not cover key version 2"},
		{"another event named", `"seq":9,`, `"seq":10,`, "records something else"},
		{"a destruction claimed where there is none", `"keysDestroyed":{"seq":9,`, `"keysDestroyed":{"seq":99,`, "holds no such event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, rest, _ := strings.Cut(file, "\n")
			if !strings.Contains(first, tc.from) {
				t.Fatalf("header has no %q: %s", tc.from, first)
			}
			altered := strings.Replace(first, tc.from, tc.to, 1) + "\n" + rest
			_, err := VerifyWithKey(strings.NewReader(altered), testPub)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Problem != ProblemModified || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want a modified problem saying %q", err, tc.says)
			}
		})
	}
}
