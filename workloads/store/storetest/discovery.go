package storetest

import (
	"context"
	"slices"
	"testing"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// A discovery export lists every message, purged ones included, in id order, page by page.
func testListMessages(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	var ids []string
	phones := map[string]string{}
	for range 5 {
		r := NewRequest(newPhone())
		accept(t, s, r)
		ids, phones[r.MessageID] = append(ids, r.MessageID), r.Phone
	}
	must(t, "purge", s.Purge(ctx, ids[1], event(audit.KindPurged)))
	must(t, "revoke", s.Transition(ctx, ids[3], store.StatusRevoked, event(audit.KindRevoked)))

	var got []string
	after := ""
	for page := 0; ; page++ {
		batch, err := s.ListMessages(ctx, after, 2)
		must(t, "list messages", err)
		for _, m := range batch {
			if m.Recipient != phones[m.ID] || m.Sender != "sender-1" || m.CreatedAt.IsZero() {
				t.Errorf("listed message %+v lacks its recipient, sender or time", m)
			}
			got = append(got, m.ID)
		}
		if len(batch) < 2 {
			break
		}
		if page > 10 {
			t.Fatal("pages never end")
		}
		after = batch[len(batch)-1].ID
	}
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Errorf("listed %v, want every message, the purged one too, in id order: %v", got, ids)
	}
	_, err := s.ListMessages(ctx, "", 0)
	wantErr(t, "list with limit 0", err, store.ErrInvalid)
}
