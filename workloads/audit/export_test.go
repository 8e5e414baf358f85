package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const tenant = "clinic-a"

var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	testPub  = testKey.Public().(ed25519.PublicKey)
	t0       = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
)

// buildLog returns n chained events with a signed checkpoint every 10 events and a final one
// at n, as the store will produce them.
func buildLog(t testing.TB, n int) ([]Event, []Checkpoint) {
	t.Helper()
	signer := NewEd25519Signer(testKey)
	c := NewChain(tenant, 0, [32]byte{})
	var events []Event
	var cps []Checkpoint
	for i := range n {
		e := c.Append(Event{
			Time: t0.Add(time.Duration(i) * time.Second), Kind: kinds[i%len(kinds)], Actor: "system",
			MessageID: fmt.Sprintf("msg-%d", i/3), Detail: map[string]string{"code": fmt.Sprint(i)},
		})
		events = append(events, e)
		if e.Seq%10 == 0 || i == n-1 {
			cp, err := SignCheckpoint(context.Background(), signer, tenant, e.Seq, e.Hash, e.Time)
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, cp)
		}
	}
	return events, cps
}

func exportLines(t testing.TB, events []Event, cps []Checkpoint) []string {
	t.Helper()
	var buf bytes.Buffer
	if err := Export(&buf, testPub, events, cps); err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

// eventLine and checkpointLine return the index in lines of event seq / checkpoint size.
func eventLine(t *testing.T, lines []string, seq uint64) int {
	return findLine(t, lines, fmt.Sprintf(`{"event":{"seq":%d,`, seq))
}

func checkpointLine(t *testing.T, lines []string, size uint64) int {
	return findLine(t, lines, fmt.Sprintf(`"size":%d,`, size))
}

func findLine(t *testing.T, lines []string, marker string) int {
	t.Helper()
	for i, l := range lines {
		if strings.Contains(l, marker) {
			return i
		}
	}
	t.Fatalf("no line contains %s", marker)
	return 0
}

// editLine decodes line i, lets edit change it, and encodes it back.
func editLine(t *testing.T, lines []string, i int, edit func(*exportLine)) {
	t.Helper()
	var l exportLine
	if err := json.Unmarshal([]byte(lines[i]), &l); err != nil {
		t.Fatal(err)
	}
	edit(&l)
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	lines[i] = string(b) + "\n"
}

func TestExportVerify(t *testing.T) {
	events, cps := buildLog(t, 95)
	lines := exportLines(t, events, cps)
	if want := 1 + 95 + 10; len(lines) != want {
		t.Fatalf("export has %d lines, want %d", len(lines), want)
	}
	if !strings.Contains(lines[len(lines)-1], `"checkpoint"`) {
		t.Fatal("export does not end with a checkpoint")
	}
	rep, err := Verify(strings.NewReader(strings.Join(lines, "")))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 95 || rep.Checkpoints != 10 || rep.Head != events[94].Hash || rep.Tenant != tenant || !rep.PublicKey.Equal(testPub) {
		t.Fatalf("report = %+v", rep)
	}
	if _, err := VerifyWithKey(strings.NewReader(strings.Join(lines, "")), testPub); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	const n = 35 // checkpoints at 10, 20, 30 and 35
	events, cps := buildLog(t, n)

	tests := []struct {
		name    string
		tamper  func(t *testing.T, lines []string) []string
		key     ed25519.PublicKey // for VerifyWithKey; nil uses Verify
		seq     uint64
		problem Problem
	}{
		{
			name: "modified actor",
			tamper: func(t *testing.T, l []string) []string {
				editLine(t, l, eventLine(t, l, 17), func(x *exportLine) { x.Event.Actor = "someone-else" })
				return l
			},
			seq: 17, problem: ProblemModified,
		},
		{
			name: "modified detail",
			tamper: func(t *testing.T, l []string) []string {
				editLine(t, l, eventLine(t, l, 17), func(x *exportLine) { x.Event.Detail["code"] = "0" })
				return l
			},
			seq: 17, problem: ProblemModified,
		},
		{
			name: "modified time",
			tamper: func(t *testing.T, l []string) []string {
				editLine(t, l, eventLine(t, l, 1), func(x *exportLine) { x.Event.Time = "2025-03-01T12:00:00.000000001Z" })
				return l
			},
			seq: 1, problem: ProblemModified,
		},
		{
			name: "modified and re-hashed",
			tamper: func(t *testing.T, l []string) []string {
				e := events[16]
				e.Actor = "someone-else"
				e.Hash = e.LeafHash()
				l[eventLine(t, l, 17)] = mustLine(t, exportLine{Event: NewEventRecord(e)})
				return l
			},
			seq: 18, problem: ProblemModified, // detected by event 18's link
		},
		{
			name: "tail rewritten and re-hashed",
			tamper: func(t *testing.T, l []string) []string {
				c := NewChain(tenant, events[15].Seq, events[15].Hash)
				for _, e := range events[16:] {
					if e.Seq == 17 {
						e.Actor = "someone-else"
					}
					l[eventLine(t, l, e.Seq)] = mustLine(t, exportLine{Event: NewEventRecord(c.Append(e))})
				}
				return l
			},
			seq: 20, problem: ProblemModified, // the first signed checkpoint after the change
		},
		{
			name: "deleted event",
			tamper: func(t *testing.T, l []string) []string {
				return slices.Delete(l, eventLine(t, l, 17), eventLine(t, l, 17)+1)
			},
			seq: 17, problem: ProblemDeleted,
		},
		{
			name: "deleted first event",
			tamper: func(t *testing.T, l []string) []string {
				return slices.Delete(l, eventLine(t, l, 1), eventLine(t, l, 1)+1)
			},
			seq: 1, problem: ProblemDeleted,
		},
		{
			name: "deleted events with their checkpoint",
			tamper: func(t *testing.T, l []string) []string {
				return slices.Delete(l, eventLine(t, l, 19), eventLine(t, l, 22)+1)
			},
			seq: 19, problem: ProblemDeleted,
		},
		{
			name: "swapped events",
			tamper: func(t *testing.T, l []string) []string {
				i, j := eventLine(t, l, 17), eventLine(t, l, 18)
				l[i], l[j] = l[j], l[i]
				return l
			},
			seq: 17, problem: ProblemReordered,
		},
		{
			name: "duplicated event",
			tamper: func(t *testing.T, l []string) []string {
				i := eventLine(t, l, 17)
				return slices.Insert(l, i+2, l[i])
			},
			seq: 17, problem: ProblemReordered,
		},
		{
			name: "final checkpoint dropped",
			tamper: func(t *testing.T, l []string) []string {
				return l[:len(l)-1]
			},
			seq: 31, problem: ProblemTruncated,
		},
		{
			name: "last events and final checkpoint dropped",
			tamper: func(t *testing.T, l []string) []string {
				return l[:eventLine(t, l, 33)]
			},
			seq: 31, problem: ProblemTruncated,
		},
		{
			name: "last events dropped, final checkpoint kept",
			tamper: func(t *testing.T, l []string) []string {
				return slices.Delete(l, eventLine(t, l, 33), eventLine(t, l, 35)+1)
			},
			seq: 33, problem: ProblemTruncated,
		},
		{
			name: "forged checkpoint signature",
			tamper: func(t *testing.T, l []string) []string {
				editLine(t, l, checkpointLine(t, l, 20), func(x *exportLine) { x.Checkpoint.Signature[0] ^= 1 })
				return l
			},
			seq: 20, problem: ProblemBadSignature,
		},
		{
			name: "checkpoint signed by another key",
			tamper: func(t *testing.T, l []string) []string {
				cp, _ := SignCheckpoint(context.Background(), NewEd25519Signer(otherKey), tenant, 20, events[19].Hash, t0)
				l[checkpointLine(t, l, 20)] = mustLine(t, exportLine{Checkpoint: NewCheckpointRecord(cp)})
				return l
			},
			seq: 20, problem: ProblemBadSignature,
		},
		{
			name: "header names the wrong public key",
			tamper: func(t *testing.T, l []string) []string {
				l[0] = mustLine(t, exportHeader{Format: ExportFormat, Tenant: tenant, PublicKey: otherKey.Public().(ed25519.PublicKey)})
				return l
			},
			seq: 10, problem: ProblemBadSignature,
		},
		{
			name:   "not the trusted key",
			tamper: func(t *testing.T, l []string) []string { return l },
			key:    otherKey.Public().(ed25519.PublicKey),
			seq:    0, problem: ProblemBadSignature,
		},
		{
			name: "unknown format",
			tamper: func(t *testing.T, l []string) []string {
				l[0] = strings.Replace(l[0], ExportFormat, "securetext-audit/v9", 1)
				return l
			},
			seq: 0, problem: ProblemFormat,
		},
		{
			name: "garbled line",
			tamper: func(t *testing.T, l []string) []string {
				l[eventLine(t, l, 17)] = "{\"event\":{\"seq\":17\n"
				return l
			},
			seq: 17, problem: ProblemModified,
		},
		{
			name: "unknown field",
			tamper: func(t *testing.T, l []string) []string {
				i := eventLine(t, l, 17)
				l[i] = strings.Replace(l[i], `{"event":{`, `{"event":{"note":"x",`, 1)
				return l
			},
			seq: 17, problem: ProblemModified,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.tamper(t, exportLines(t, events, cps))
			in := strings.NewReader(strings.Join(lines, ""))
			var err error
			if tt.key != nil {
				_, err = VerifyWithKey(in, tt.key)
			} else {
				_, err = Verify(in)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify error = %v, want a *VerifyError", err)
			}
			if ve.Seq != tt.seq || ve.Problem != tt.problem {
				t.Fatalf("got seq %d, %s (%v); want seq %d, %s", ve.Seq, ve.Problem, err, tt.seq, tt.problem)
			}
			if tt.seq != 0 && !strings.HasPrefix(err.Error(), fmt.Sprintf("audit verify: event %d (line %d): ", tt.seq, ve.Line)) {
				t.Fatalf("message %q does not name event %d", err, tt.seq)
			}
			if !strings.HasSuffix(err.Error(), "— "+string(tt.problem)) {
				t.Fatalf("message %q does not end with the problem", err)
			}
			t.Log(err)
		})
	}
}

func mustLine(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func TestExportRefuses(t *testing.T) {
	events, cps := buildLog(t, 15) // checkpoints at 10 and 15
	var buf bytes.Buffer
	if err := Export(&buf, testPub, nil, nil); err == nil {
		t.Error("exported no events")
	}
	if err := Export(&buf, testPub, events, cps[:1]); err == nil {
		t.Error("exported without a final checkpoint")
	}
	if err := Export(&buf, testPub[:16], events, cps); err == nil {
		t.Error("exported with a short public key")
	}
	swapped := slices.Clone(events)
	swapped[3], swapped[4] = swapped[4], swapped[3]
	if err := Export(&buf, testPub, swapped, cps); err == nil {
		t.Error("exported events out of order")
	}
	// A store missing an event still exports, so that Verify can show the gap.
	buf.Reset()
	if err := Export(&buf, testPub, slices.Delete(slices.Clone(events), 3, 4), cps); err != nil {
		t.Fatalf("export with a gap: %v", err)
	}
	var ve *VerifyError
	if _, err := Verify(&buf); !errors.As(err, &ve) || ve.Seq != 4 || ve.Problem != ProblemDeleted {
		t.Fatalf("verify export with a gap: %v", err)
	}
}

func TestCheckpoint(t *testing.T) {
	ctx := context.Background()
	signer := NewEd25519Signer(testKey)
	head := [32]byte{1, 2, 3}
	cp, err := SignCheckpoint(ctx, signer, tenant, 42, head, t0)
	if err != nil {
		t.Fatal(err)
	}
	if cp.KeyID != KeyID(testPub) {
		t.Errorf("key id %q", cp.KeyID)
	}
	if err := VerifyCheckpoint(testPub, cp); err != nil {
		t.Fatal(err)
	}
	want := "securetext.io/audit/clinic-a\n42\nAQIDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime " +
		t0.UTC().Format(time.RFC3339Nano) + "\n"
	if got := string(CheckpointBody(tenant, 42, head, t0)); got != want {
		t.Errorf("body = %q, want %q", got, want)
	}

	for name, c := range map[string]Checkpoint{
		"other tenant": {Tenant: "clinic-b", Size: cp.Size, Head: cp.Head, Time: cp.Time, Signature: cp.Signature},
		"other size":   {Tenant: cp.Tenant, Size: 41, Head: cp.Head, Time: cp.Time, Signature: cp.Signature},
		"other head":   {Tenant: cp.Tenant, Size: cp.Size, Head: [32]byte{1, 2, 4}, Time: cp.Time, Signature: cp.Signature},
		"other time":   {Tenant: cp.Tenant, Size: cp.Size, Head: cp.Head, Time: cp.Time.Add(time.Second), Signature: cp.Signature},
		"no signature": {Tenant: cp.Tenant, Size: cp.Size, Head: cp.Head, Time: cp.Time},
	} {
		if err := VerifyCheckpoint(testPub, c); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err = %v, want ErrBadSignature", name, err)
		}
	}
	if err := VerifyCheckpoint(testPub[:31], cp); err == nil {
		t.Error("short public key accepted")
	}
	if _, err := SignCheckpoint(ctx, signer, "clinic-a\n1", 42, head, t0); err == nil {
		t.Error("tenant with a newline accepted")
	}
}

func BenchmarkVerify10k(b *testing.B) {
	events, cps := buildLog(b, 10_000)
	var buf bytes.Buffer
	if err := Export(&buf, testPub, events, cps); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, err := Verify(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*10_000/b.Elapsed().Seconds(), "events/s")
}
