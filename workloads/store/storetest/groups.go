package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/securetext/securetext/workloads/store"
)

// testAcceptGroups sends many accepts at once, so that they share transactions, with a few
// the database refuses among them: each still gets its own answer, and the others are stored.
func testAcceptGroups(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	optedOut := newPhone()
	_, err := s.SetOptOut(ctx, optedOut, true)
	must(t, "opt out", err)
	earlier := NewRequest(newPhone())
	accept(t, s, earlier)

	const plain = 48
	var reqs []store.AcceptRequest
	for range plain {
		reqs = append(reqs, NewRequest(newPhone()))
	}
	blocked := NewRequest(optedOut)
	sameID := NewRequest(newPhone())
	sameID.MessageID = earlier.MessageID
	retried := NewRequest(newPhone()) // one submission sent four times at once
	reqs = append(reqs, blocked, sameID, retried, retried, retried, retried)

	results := make([]store.AcceptResult, len(reqs))
	errs := make([]error, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.AcceptMessage(ctx, r)
		})
	}
	close(start)
	wg.Wait()

	for i := range plain {
		if errs[i] != nil || results[i].MessageID != reqs[i].MessageID || results[i].Replayed {
			t.Errorf("accept %d: %+v, %v; want stored", i, results[i], errs[i])
			continue
		}
		parts, err := s.MessageParts(ctx, reqs[i].MessageID)
		if err != nil || len(parts) != len(reqs[i].Parts) {
			t.Errorf("message %d: %d parts, %v", i, len(parts), err)
		}
	}
	wantErr(t, "accept for an opted-out recipient among others", errs[plain], store.ErrOptedOut)
	wantErr(t, "accept with a taken message id among others", errs[plain+1], store.ErrConflict)
	if errors.Is(errs[plain+1], store.ErrConflict) {
		if m, err := s.Message(ctx, earlier.MessageID); err != nil || m.WrappedKey != earlier.WrappedKey {
			t.Errorf("the earlier message was changed: %+v, %v", m, err)
		}
	}
	firsts := 0
	for i := plain + 2; i < len(reqs); i++ {
		if errs[i] != nil || results[i].MessageID != retried.MessageID {
			t.Errorf("retried submission %d: %+v, %v", i, results[i], errs[i])
		}
		if !results[i].Replayed {
			firsts++
		}
	}
	if firsts != 1 {
		t.Errorf("%d of 4 concurrent copies of one submission were stored as new, want 1", firsts)
	}
	if depth, _, err := s.OutboxStats(ctx, earlier.ExpiresAt); err != nil || depth != plain+2 {
		t.Errorf("outbox holds %d notifications (%v), want %d: one per stored message", depth, err, plain+2)
	}
}
