package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// The fuzz targets of the audit export reader. An export is outside input: a compliance
// officer verifies a file that has left the system, and it may have been edited.

var (
	fuzzKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	fuzzPub   = fuzzKey.Public().(ed25519.PublicKey)
	fuzzOther = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
)

// fuzzBytes hands out the fuzzer's bytes as the fields of a log, and zeros once they run out.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

// string takes up to max bytes, as they are: the store does not promise that an actor or a
// detail is UTF-8.
func (f *fuzzBytes) string(max int) string {
	n := min(int(f.byte())%(max+1), len(f.b))
	s := string(f.b[:n])
	f.b = f.b[n:]
	return s
}

// fuzzLog builds a chain of 1 to 16 events from data, with checkpoints where data says and a
// final one, as the store and the signer produce them; it returns the events, the
// checkpoints and their export.
func fuzzLog(t testing.TB, data []byte) ([]Event, []Checkpoint, []byte) {
	t.Helper()
	in := &fuzzBytes{b: data}
	tenants := []string{"clinic-a", "t", "klinik-ü", "a-very-long-tenant-name-that-is-still-one-line"}
	tenant := tenants[int(in.byte())%len(tenants)]
	n := 1 + int(in.byte())%16
	signer := NewEd25519Signer(fuzzKey)
	chain := NewChain(tenant, 0, [32]byte{})
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var events []Event
	var cps []Checkpoint
	for i := range n {
		at = at.Add(time.Duration(in.byte())*time.Second + time.Duration(in.byte())*time.Microsecond)
		e := Event{Time: at, Kind: kinds[int(in.byte())%len(kinds)], Actor: in.string(12), MessageID: in.string(26)}
		if d := int(in.byte()) % 4; d > 0 {
			e.Detail = map[string]string{}
			for range d {
				e.Detail[in.string(8)] = in.string(16)
			}
		}
		e = chain.Append(e)
		events = append(events, e)
		if in.byte()%4 == 0 || i == n-1 {
			cp, err := SignCheckpoint(context.Background(), signer, tenant, e.Seq, e.Hash, e.Time.Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, cp)
		}
	}
	var buf bytes.Buffer
	if err := Export(&buf, fuzzPub, events, cps); err != nil {
		t.Fatalf("export: %v", err)
	}
	return events, cps, buf.Bytes()
}

// FuzzExportVerify builds a log from the fuzzer's bytes (any actor, message id and detail
// bytes, any kind, checkpoints anywhere), exports it, and checks that:
//   - the export verifies, under its own key and under the trusted key, and describes exactly
//     the log: its tenant, key, event and checkpoint counts, and head;
//   - it does not verify under another trusted key;
//   - with one byte changed it either fails with a *VerifyError, or still describes the same
//     events (the change was one JSON or base64 can spell two ways, or an unsigned key id).
func FuzzExportVerify(f *testing.F) {
	f.Add([]byte{0, 0}, uint32(0), byte(1))
	f.Add([]byte("\x00\x05clinic log with details and checkpoints, repeated: clinic log with details"), uint32(200), byte(0x20))
	f.Add([]byte("\x02\x0f\x10\x00\x03actor\x05msgid\x03\x02k1\x02v1\x02k2\x02v2\x02k3\x02v3\x00"), uint32(123), byte('0'))
	f.Add(bytes.Repeat([]byte("\x7f\x01<\\\"&\x00\x1f\x03"), 20), uint32(4000), byte(0x80))
	f.Fuzz(func(t *testing.T, data []byte, at uint32, xor byte) {
		events, cps, export := fuzzLog(t, data)
		last := events[len(events)-1]
		want := Report{Tenant: last.Tenant, PublicKey: fuzzPub, Events: len(events), Checkpoints: len(cps), Head: last.Hash}

		rep, err := Verify(bytes.NewReader(export))
		if err != nil {
			t.Fatalf("the export of a log as the store wrote it does not verify: %v\n%s", err, export)
		}
		checkReport(t, rep, want)
		if rep, err := VerifyWithKey(bytes.NewReader(export), fuzzPub); err != nil {
			t.Fatalf("the export does not verify under its trusted key: %v", err)
		} else {
			checkReport(t, rep, want)
		}
		var ve *VerifyError
		if _, err := VerifyWithKey(bytes.NewReader(export), fuzzOther); !errors.As(err, &ve) || ve.Problem != ProblemBadSignature {
			t.Fatalf("the export verifies under another trusted key, or fails for another reason: %v", err)
		}

		changed := bytes.Clone(export)
		changed[int(at%uint32(len(changed)))] ^= xor | 1
		rep, err = Verify(bytes.NewReader(changed))
		if err != nil {
			if !errors.As(err, &ve) {
				t.Fatalf("a changed export fails with %v, not a *VerifyError", err)
			}
			return
		}
		checkReport(t, rep, want)
	})
}

func checkReport(t *testing.T, got, want Report) {
	t.Helper()
	if got.Tenant != want.Tenant || !got.PublicKey.Equal(want.PublicKey) || got.Events != want.Events ||
		got.Checkpoints != want.Checkpoints || got.Head != want.Head {
		t.Fatalf("verified export describes %+v, want %+v", got, want)
	}
}

// FuzzVerify reads any file as an export and checks that Verify never panics, that a refusal
// is a *VerifyError, and that what verifies has at least one event and one checkpoint,
// verifies the same under its own key as a trusted key, and does not verify under another.
func FuzzVerify(f *testing.F) {
	_, _, export := fuzzLog(f, []byte("\x00\x03seed export with three events"))
	f.Add(export)
	f.Add(bytes.ReplaceAll(export, []byte("\n"), []byte("\r\n")))
	if i := bytes.IndexByte(export, '\n'); i > 0 {
		f.Add(export[:i+1])
	}
	f.Add([]byte(`{"format":"securetext-audit/v1","tenant":"t","publicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}` + "\n" +
		`{"event":{"seq":1,"time":"2025-03-01T12:00:00Z","kind":"accepted","actor":"a","tenant":"t","prevHash":"","hash":""}}` + "\n"))
	f.Add([]byte(`{"format":"securetext-audit/v1"}{"x":1}`))
	f.Add([]byte("\n\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Verify(bytes.NewReader(data))
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify fails with %v, not a *VerifyError", err)
			}
			return
		}
		if rep.Events < 1 || rep.Checkpoints < 1 || rep.Tenant == "" || len(rep.PublicKey) != ed25519.PublicKeySize {
			t.Fatalf("Verify accepts an export without events, checkpoints, tenant or key: %+v", rep)
		}
		again, err := VerifyWithKey(bytes.NewReader(data), rep.PublicKey)
		if err != nil {
			t.Fatalf("an export that verifies does not verify under its own key as trusted: %v", err)
		}
		checkReport(t, again, rep)
		if _, err := VerifyWithKey(bytes.NewReader(data), fuzzOther); err == nil && !rep.PublicKey.Equal(fuzzOther) {
			t.Fatal("an export verifies under a key that did not sign it")
		}
	})
}
