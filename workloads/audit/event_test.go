package audit

import (
	"encoding/hex"
	"testing"
	"time"
)

func fixedEvent() Event {
	return Event{
		Seq:       1,
		Time:      time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC),
		Kind:      KindAccepted,
		Actor:     "api:ehr-1",
		Tenant:    "clinic-a",
		MessageID: "01J9ZQ3V8K",
		Detail:    map[string]string{"channel": "smtp", "size": "1234"},
	}
}

// goldenHash was computed once from fixedEvent, and cross-checked with an independent script
// that follows the Canonical doc comment. If this test fails, the canonical encoding
// changed, and every stored chain would stop verifying: that needs a new format version, not a
// new constant.
const goldenHash = "51aaf81f64b24911528ad973c12389d4fbd7c9ad46071fa9cb49570d7f4525d3"

func TestGoldenHash(t *testing.T) {
	h := fixedEvent().LeafHash()
	if got := hex.EncodeToString(h[:]); got != goldenHash {
		t.Fatalf("leaf hash of the fixed event = %s, want %s", got, goldenHash)
	}
}

func TestCanonicalCoversEveryField(t *testing.T) {
	base := fixedEvent().LeafHash()
	changes := map[string]func(*Event){
		"seq":          func(e *Event) { e.Seq = 2 },
		"time":         func(e *Event) { e.Time = e.Time.Add(time.Nanosecond) },
		"kind":         func(e *Event) { e.Kind = KindRevealed },
		"actor":        func(e *Event) { e.Actor = "api:ehr-2" },
		"tenant":       func(e *Event) { e.Tenant = "clinic-b" },
		"message":      func(e *Event) { e.MessageID = "01J9ZQ3V8L" },
		"detail value": func(e *Event) { e.Detail["size"] = "1235" },
		"detail key":   func(e *Event) { e.Detail = map[string]string{"channel": "smtp", "sizes": "1234"} },
		"detail extra": func(e *Event) { e.Detail["x"] = "" },
		"detail nil":   func(e *Event) { e.Detail = nil },
		"prev hash":    func(e *Event) { e.PrevHash[31] = 1 },
		// Same concatenated text, different field boundaries.
		"boundary": func(e *Event) { e.Actor, e.Tenant = "api:ehr-1c", "linic-a" },
	}
	for name, change := range changes {
		e := fixedEvent()
		change(&e)
		if e.LeafHash() == base {
			t.Errorf("changing %s did not change the hash", name)
		}
	}

	same := fixedEvent()
	same.Time = same.Time.In(time.FixedZone("EST", -5*3600)) // same instant, other zone
	same.Hash = [32]byte{1}                                  // Hash is not part of its own input
	if same.LeafHash() != base {
		t.Error("hash depends on the time zone or on the Hash field")
	}
}

func TestChain(t *testing.T) {
	build := func() []Event {
		c := NewChain("clinic-a", 0, [32]byte{})
		var out []Event
		for i := range 5 {
			e := fixedEvent()
			e.Seq, e.Tenant = 99, "ignored" // Append owns these
			e.Time = e.Time.Add(time.Duration(i) * time.Second)
			out = append(out, c.Append(e))
		}
		return out
	}
	a, b := build(), build()
	if a[0].Seq != 1 || a[0].PrevHash != ([32]byte{}) {
		t.Fatalf("first event: seq %d, prev %x; want 1 and zeros", a[0].Seq, a[0].PrevHash)
	}
	for i := range a {
		if a[i].Hash != b[i].Hash {
			t.Fatalf("event %d: hash differs between identical chains", a[i].Seq)
		}
		if a[i].Seq != uint64(i+1) || a[i].Tenant != "clinic-a" || a[i].Hash != a[i].LeafHash() {
			t.Fatalf("event %d: seq/tenant/hash not filled in", i+1)
		}
		if i > 0 && a[i].PrevHash != a[i-1].Hash {
			t.Fatalf("event %d does not link to event %d", a[i].Seq, a[i-1].Seq)
		}
	}

	// A chain resumed from a stored head continues exactly as the original did.
	resumed := NewChain("clinic-a", a[2].Seq, a[2].Hash)
	e := fixedEvent()
	e.Time = e.Time.Add(3 * time.Second)
	if got := resumed.Append(e); got.Hash != a[3].Hash {
		t.Fatal("resumed chain diverged")
	}
	if seq, head := resumed.Head(); seq != 4 || head != a[3].Hash {
		t.Fatalf("Head() = %d, %x", seq, head)
	}

	// The appended event owns its Detail: later changes by the caller cannot desync the hash.
	detail := map[string]string{"code": "21610"}
	got := NewChain("clinic-a", 0, [32]byte{}).Append(Event{Kind: KindFailed, Detail: detail})
	detail["code"] = "changed"
	if got.LeafHash() != got.Hash {
		t.Fatal("event hash depends on the caller's map after Append")
	}
}

func TestKindIsValid(t *testing.T) {
	for _, k := range kinds {
		if !k.IsValid() {
			t.Errorf("%q not valid", k)
		}
	}
	for _, k := range []Kind{"", "read", "Accepted"} {
		if k.IsValid() {
			t.Errorf("%q valid", k)
		}
	}
}

func BenchmarkChainAppend(b *testing.B) {
	c := NewChain("clinic-a", 0, [32]byte{})
	e := fixedEvent()
	for b.Loop() {
		c.Append(e)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
