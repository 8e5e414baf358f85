package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

func testAcceptAndRead(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	phone := newPhone()
	r := NewRequest(phone)
	r.Channel = store.ChannelSMTP
	before := time.Now()
	res := accept(t, s, r)
	after := time.Now()
	if res.MessageID != r.MessageID || res.Replayed || res.RecipientID == "" {
		t.Fatalf("result = %+v, want message %s, a recipient, not replayed", res, r.MessageID)
	}

	m, err := s.Message(ctx, r.MessageID)
	must(t, "read message", err)
	if !res.CreatedAt.Equal(m.CreatedAt) || !res.ExpiresAt.Equal(m.ExpiresAt) {
		t.Errorf("result times %v, %v differ from the stored %v, %v", res.CreatedAt, res.ExpiresAt, m.CreatedAt, m.ExpiresAt)
	}
	want := store.Message{
		ID: r.MessageID, Sender: r.Sender, RecipientID: res.RecipientID, Status: store.StatusAccepted,
		WrappedKey: r.WrappedKey, LinkTokenHash: r.LinkTokenHash, Channel: store.ChannelSMTP,
		ExpiresAt: r.ExpiresAt.UTC().Truncate(time.Microsecond),
	}
	if m.CreatedAt.Before(before.Truncate(time.Microsecond)) || m.CreatedAt.After(after) || !m.StatusChangedAt.Equal(m.CreatedAt) {
		t.Errorf("created %v, status changed %v; want both between %v and %v", m.CreatedAt, m.StatusChangedAt, before, after)
	}
	want.CreatedAt, want.StatusChangedAt = m.CreatedAt, m.StatusChangedAt
	if m != want {
		t.Errorf("message =\n%+v, want\n%+v", m, want)
	}
	if m.CreatedAt.Location() != time.UTC || m.ExpiresAt.Location() != time.UTC {
		t.Errorf("times are not UTC: %v, %v", m.CreatedAt.Location(), m.ExpiresAt.Location())
	}

	byLink, err := s.VisitLink(ctx, r.LinkTokenHash, [32]byte{}, false)
	must(t, "read message by link hash", err)
	if byLink.Message != m {
		t.Errorf("by link hash = %+v, want %+v", byLink.Message, m)
	}

	parts, err := s.MessageParts(ctx, r.MessageID)
	must(t, "read parts", err)
	if len(parts) != len(r.Parts) {
		t.Fatalf("got %d parts, want %d", len(parts), len(r.Parts))
	}
	for i, p := range parts {
		if p.Name != r.Parts[i].Name || !bytes.Equal(p.Ciphertext, r.Parts[i].Ciphertext) {
			t.Errorf("part %d = %s (%d bytes), want %s (%d bytes), bytes equal", i, p.Name, len(p.Ciphertext), r.Parts[i].Name, len(r.Parts[i].Ciphertext))
		}
	}

	rc, err := s.Recipient(ctx, res.RecipientID)
	must(t, "read recipient", err)
	if rc.ID != res.RecipientID || rc.Phone != phone || rc.OptedOut || rc.PasswordHash != "" ||
		!rc.CreatedAt.Equal(m.CreatedAt) {
		t.Errorf("recipient = %+v, want a new recipient for the phone, created with the message", rc)
	}
	byPhone, err := s.RecipientByPhone(ctx, phone)
	must(t, "read recipient by phone", err)
	if byPhone != rc {
		t.Errorf("by phone = %+v, want %+v", byPhone, rc)
	}

	// The outbox row carries what the notifier needs.
	entries, err := s.ClaimOutbox(ctx, time.Now(), 10, time.Minute)
	must(t, "claim outbox", err)
	if len(entries) != 1 {
		t.Fatalf("claimed %d outbox entries, want 1", len(entries))
	}
	e := entries[0]
	if e.MessageID != r.MessageID || e.Kind != "notify" || e.Attempts != 1 || !bytes.Equal(e.Payload, r.NotifyPayload) ||
		e.RecipientID != res.RecipientID || e.Phone != phone || e.OptedOut {
		t.Errorf("outbox entry = %+v", e)
	}

	// The accepted event: actor is the sender, detail holds codes only.
	events := sequenceAll(t, s)
	if len(events) != 1 {
		t.Fatalf("got %d audit events, want 1", len(events))
	}
	ev := events[0]
	if ev.Kind != audit.KindAccepted || ev.Actor != r.Sender || ev.MessageID != r.MessageID || ev.Tenant != Tenant ||
		ev.Detail["channel"] != "smtp" || ev.Detail["parts"] != "2" || len(ev.Detail) != 2 {
		t.Errorf("accepted event = %+v", ev)
	}
	if ev.Time.Before(before.Truncate(time.Microsecond)) || ev.Time.After(after) {
		t.Errorf("accepted event time %v not between %v and %v", ev.Time, before, after)
	}
	assertNoPHI(t, events, phone)
}

// assertNoPHI fails if an audit event mentions the phone number.
func assertNoPHI(t *testing.T, events []audit.Event, phone string) {
	t.Helper()
	digits := strings.TrimPrefix(phone, "+")
	for _, e := range events {
		for _, s := range append([]string{e.Actor, e.MessageID}, detailStrings(e.Detail)...) {
			if strings.Contains(s, digits) {
				t.Errorf("audit event %d mentions the phone number", e.Seq)
			}
		}
	}
}

func detailStrings(d map[string]string) []string {
	var out []string
	for k, v := range d {
		out = append(out, k, v)
	}
	return out
}

func testAcceptReusesRecipient(t *testing.T, h harness) {
	s, _ := h.open(t)
	phone := newPhone()
	first := accept(t, s, NewRequest(phone))
	second := accept(t, s, NewRequest(phone))
	if first.RecipientID != second.RecipientID {
		t.Errorf("two messages to one phone got recipients %s and %s", first.RecipientID, second.RecipientID)
	}
	other := accept(t, s, NewRequest(newPhone()))
	if other.RecipientID == first.RecipientID {
		t.Errorf("two phones share recipient %s", first.RecipientID)
	}
}

func testAcceptIsOneTransaction(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	first := NewRequest(newPhone())
	accept(t, s, first)

	for _, tc := range []struct {
		name   string
		change func(r *store.AcceptRequest)
	}{
		{"duplicate message id", func(r *store.AcceptRequest) { r.MessageID = first.MessageID }},
		{"duplicate link hash", func(r *store.AcceptRequest) { r.LinkTokenHash = first.LinkTokenHash }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sequenceAll(t, s)
			depth, _, err := s.OutboxStats(ctx, time.Now())
			must(t, "outbox stats", err)

			r := NewRequest(newPhone()) // a new recipient that must not be left behind
			tc.change(&r)
			_, err = s.AcceptMessage(ctx, r)
			wantErr(t, "accept", err, store.ErrConflict)
			if store.IsTemporary(err) {
				t.Errorf("a conflict is not temporary: %v", err)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(r.Phone, "+")) {
				t.Errorf("error mentions the phone number: %v", err)
			}

			_, err = s.RecipientByPhone(ctx, r.Phone)
			wantErr(t, "recipient of the failed accept", err, store.ErrNotFound)
			if after, _, err := s.OutboxStats(ctx, time.Now()); err != nil || after != depth {
				t.Errorf("outbox depth = %d, %v; want %d as before", after, err, depth)
			}
			if n, err := s.SequenceAudit(ctx, 100); err != nil || n != 0 {
				t.Errorf("sequenced %d pending audit events (%v), want none", n, err)
			}
			if tc.name == "duplicate link hash" {
				_, err = s.Message(ctx, r.MessageID)
				wantErr(t, "message of the failed accept", err, store.ErrNotFound)
			}
			// The idempotency key was not stored: the same key with another request is new.
			retry := NewRequest(r.Phone)
			retry.IdempotencyKey = r.IdempotencyKey
			if res := accept(t, s, retry); res.Replayed {
				t.Errorf("the failed accept left its idempotency key behind")
			}
		})
	}
}

func testAcceptRefusesInvalid(t *testing.T, h harness) {
	s, _ := h.open(t)
	for _, tc := range []struct {
		name   string
		change func(r *store.AcceptRequest)
	}{
		{"no id", func(r *store.AcceptRequest) { r.MessageID = "" }},
		{"phone not E.164", func(r *store.AcceptRequest) { r.Phone = "2025550143" }},
		{"unknown channel", func(r *store.AcceptRequest) { r.Channel = "fax" }},
		{"no wrapped key", func(r *store.AcceptRequest) { r.WrappedKey = "" }},
		{"no link hash", func(r *store.AcceptRequest) { r.LinkTokenHash = [32]byte{} }},
		{"no parts", func(r *store.AcceptRequest) { r.Parts = nil }},
		{"duplicate part names", func(r *store.AcceptRequest) { r.Parts[1].Name = r.Parts[0].Name }},
		{"already expired", func(r *store.AcceptRequest) { r.ExpiresAt = time.Now().Add(-time.Second) }},
		{"key without request hash", func(r *store.AcceptRequest) { r.RequestHash = [32]byte{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRequest(newPhone())
			tc.change(&r)
			_, err := s.AcceptMessage(context.Background(), r)
			wantErr(t, "accept", err, store.ErrInvalid)
			if strings.Contains(err.Error(), strings.TrimPrefix(r.Phone, "+")) {
				t.Errorf("error mentions the phone number: %v", err)
			}
		})
	}
}

func testIdempotencyReplay(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	first := accept(t, s, r)
	sequenceAll(t, s)

	// A retry of the same request: new message id (the gateway makes one per attempt), same
	// key and request hash.
	retry := r
	retry.MessageID = store.NewID()
	retry.LinkTokenHash = sha256.Sum256([]byte(store.NewID()))
	res := accept(t, s, retry)
	if !res.Replayed || res.MessageID != first.MessageID || res.RecipientID != first.RecipientID ||
		!res.CreatedAt.Equal(first.CreatedAt) || !res.ExpiresAt.Equal(first.ExpiresAt) || first.CreatedAt.IsZero() {
		t.Fatalf("replay = %+v, want the first result %+v replayed", res, first)
	}
	_, err := s.Message(ctx, retry.MessageID)
	wantErr(t, "message of the replayed request", err, store.ErrNotFound)
	if depth, _, err := s.OutboxStats(ctx, time.Now()); err != nil || depth != 1 {
		t.Errorf("outbox depth = %d, %v; want 1", depth, err)
	}
	if n, err := s.SequenceAudit(ctx, 100); err != nil || n != 0 {
		t.Errorf("replay audited %d events (%v), want none", n, err)
	}

	// Replays replay even after the recipient opted out: the first request succeeded.
	_, err = s.SetOptOut(ctx, r.Phone, true)
	must(t, "opt out", err)
	res = accept(t, s, retry)
	if !res.Replayed || res.MessageID != first.MessageID {
		t.Errorf("replay after opt-out = %+v, want the first result", res)
	}

	// The same key from another sender is another key.
	other := NewRequest(newPhone())
	other.Sender = "sender-2"
	other.IdempotencyKey = r.IdempotencyKey
	if res := accept(t, s, other); res.Replayed {
		t.Errorf("a key of another sender was replayed")
	}
}

func testIdempotencyConflict(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	first := accept(t, s, r)

	different := NewRequest(r.Phone)
	different.IdempotencyKey = r.IdempotencyKey
	_, err := s.AcceptMessage(ctx, different)
	wantErr(t, "accept with a used key and another request", err, store.ErrIdempotencyConflict)
	if !strings.Contains(err.Error(), first.MessageID) {
		t.Errorf("error %q does not name the first message", err)
	}
	_, err = s.Message(ctx, different.MessageID)
	wantErr(t, "message of the refused request", err, store.ErrNotFound)
}

func testIdempotencyPurge(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)
	n, err := s.PurgeIdempotencyKeys(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("purge of keys older than an hour = %d, %v; want 0", n, err)
	}
	n, err = s.PurgeIdempotencyKeys(ctx, time.Now().Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("purge of all keys = %d, %v; want 1", n, err)
	}
	again := NewRequest(r.Phone)
	again.IdempotencyKey = r.IdempotencyKey
	if res := accept(t, s, again); res.Replayed || res.MessageID != again.MessageID {
		t.Errorf("after purging its key, the request was not stored anew: %+v", res)
	}
}

func testOptedOut(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	phone := newPhone()
	id, err := s.SetOptOut(ctx, phone, true)
	must(t, "opt out a new number", err)
	rc, err := s.RecipientByPhone(ctx, phone)
	must(t, "read recipient", err)
	if rc.ID != id || !rc.OptedOut {
		t.Fatalf("recipient = %+v, want %s opted out", rc, id)
	}
	optOut := sequenceAll(t, s)
	if len(optOut) != 1 || optOut[0].Kind != audit.KindOptedOut || optOut[0].Actor != "recipient" ||
		optOut[0].MessageID != "" || optOut[0].Detail["recipient"] != id {
		t.Fatalf("opting out audited %+v, want one opted-out event naming recipient %s", optOut, id)
	}
	assertNoPHI(t, optOut, phone)

	r := NewRequest(phone)
	_, err = s.AcceptMessage(ctx, r)
	wantErr(t, "accept for an opted-out recipient", err, store.ErrOptedOut)
	if strings.Contains(err.Error(), strings.TrimPrefix(phone, "+")) {
		t.Errorf("error mentions the phone number: %v", err)
	}
	_, err = s.Message(ctx, r.MessageID)
	wantErr(t, "message for an opted-out recipient", err, store.ErrNotFound)
	if depth, _, err := s.OutboxStats(ctx, time.Now()); err != nil || depth != 0 {
		t.Errorf("outbox depth = %d, %v; want 0", depth, err)
	}
	if n, err := s.SequenceAudit(ctx, 100); err != nil || n != 0 {
		t.Errorf("refused accept audited %d events (%v), want none", n, err)
	}

	again, err := s.SetOptOut(ctx, phone, false)
	must(t, "opt back in", err)
	if in := sequenceAll(t, s); len(in) != 1 || in[0].Kind != audit.KindOptedIn || in[0].Detail["recipient"] != id {
		t.Errorf("opting back in audited %+v, want one opted-in event", in)
	}
	if again != id {
		t.Errorf("opting back in made recipient %s, want %s", again, id)
	}
	if res := accept(t, s, r); res.RecipientID != id {
		t.Errorf("accepted for recipient %s, want %s", res.RecipientID, id)
	}

	// The relay learns of an opt-out that came after the message was accepted.
	_, err = s.SetOptOut(ctx, phone, true)
	must(t, "opt out again", err)
	entries, err := s.ClaimOutbox(ctx, time.Now(), 10, time.Minute)
	must(t, "claim", err)
	if len(entries) != 1 || !entries[0].OptedOut {
		t.Errorf("claimed %+v, want one entry marked opted out", entries)
	}
}

// testMessageEvents: a message's audit trail is readable at once, before and after the
// sequencer links it, and holds only that message's events.
func testMessageEvents(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)
	other := NewRequest(newPhone())
	accept(t, s, other)

	events, err := s.MessageEvents(ctx, r.MessageID)
	must(t, "read events before sequencing", err)
	if len(events) != 1 || events[0].Kind != audit.KindAccepted || events[0].Seq != 0 ||
		events[0].MessageID != r.MessageID || events[0].Tenant != Tenant || events[0].Actor != r.Sender {
		t.Fatalf("events before sequencing = %+v, want the pending accepted event", events)
	}
	sequenceAll(t, s)
	must(t, "notified", s.Transition(ctx, r.MessageID, store.StatusNotified, event(audit.KindNotified)))
	events, err = s.MessageEvents(ctx, r.MessageID)
	must(t, "read events", err)
	if len(events) != 2 || events[0].Seq == 0 || events[0].Hash == [32]byte{} || events[0].Kind != audit.KindAccepted ||
		events[1].Seq != 0 || events[1].Kind != audit.KindNotified {
		t.Fatalf("events = %+v, want chained accepted then pending notified", events)
	}
	if none, err := s.MessageEvents(ctx, "no-such-message"); err != nil || len(none) != 0 {
		t.Errorf("events of an unknown message = %v, %v; want none", none, err)
	}
}

func event(kind audit.Kind) audit.Event {
	return audit.Event{Kind: kind, Actor: "system", Detail: map[string]string{"code": "test"}}
}

func testTransitions(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)

	steps := []struct {
		to   store.Status
		kind audit.Kind
		want store.Status
	}{
		{store.StatusNotified, audit.KindNotified, store.StatusNotified},
		{store.StatusDelivered, audit.KindDelivered, store.StatusDelivered},
		{store.StatusOpened, audit.KindLinkOpened, store.StatusOpened},
		{store.StatusRead, audit.KindRevealed, store.StatusRead},
		// A late delivery report is audited but does not move the status back.
		{store.StatusDelivered, audit.KindDelivered, store.StatusRead},
		{store.StatusRevoked, audit.KindRevoked, store.StatusRevoked},
	}
	prev, err := s.Message(ctx, r.MessageID)
	must(t, "read", err)
	for _, st := range steps {
		must(t, "transition to "+string(st.to), s.Transition(ctx, r.MessageID, st.to, event(st.kind)))
		m, err := s.Message(ctx, r.MessageID)
		must(t, "read", err)
		if m.Status != st.want {
			t.Fatalf("after %s: status %s, want %s", st.to, m.Status, st.want)
		}
		if m.Status == prev.Status && !m.StatusChangedAt.Equal(prev.StatusChangedAt) {
			t.Errorf("status stayed %s but its change time moved", m.Status)
		}
		prev = m
	}

	events := sequenceAll(t, s)
	var kinds []audit.Kind
	for _, e := range events {
		kinds = append(kinds, e.Kind)
		if e.MessageID != r.MessageID {
			t.Errorf("event %d names message %q", e.Seq, e.MessageID)
		}
	}
	want := []audit.Kind{audit.KindAccepted, audit.KindNotified, audit.KindDelivered, audit.KindLinkOpened,
		audit.KindRevealed, audit.KindDelivered, audit.KindRevoked}
	if !equal(kinds, want) {
		t.Errorf("audited %v, want %v", kinds, want)
	}

	// Revoking cancelled the SMS that was never sent.
	if depth, _, err := s.OutboxStats(ctx, time.Now()); err != nil || depth != 0 {
		t.Errorf("outbox depth after revoke = %d, %v; want 0", depth, err)
	}

	err = s.Transition(ctx, "no-such-message", store.StatusNotified, event(audit.KindNotified))
	wantErr(t, "transition of a missing message", err, store.ErrNotFound)
	err = s.Transition(ctx, r.MessageID, store.StatusPurged, event(audit.KindPurged))
	wantErr(t, "transition to purged", err, store.ErrInvalid)
	err = s.Transition(ctx, r.MessageID, store.StatusNotified, audit.Event{Kind: "teleported", Actor: "system"})
	wantErr(t, "transition with an unknown event kind", err, store.ErrInvalid)
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testFinalStatusRefusesChange(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	for final, kind := range map[store.Status]audit.Kind{store.StatusExpired: audit.KindExpired, store.StatusRevoked: audit.KindRevoked} {
		t.Run(string(final), func(t *testing.T) {
			r := NewRequest(newPhone())
			accept(t, s, r)
			must(t, "move to "+string(final), s.Transition(ctx, r.MessageID, final, event(kind)))
			sequenceAll(t, s)
			for _, to := range []store.Status{store.StatusRead, store.StatusNotified, store.StatusRevoked, store.StatusExpired} {
				err := s.Transition(ctx, r.MessageID, to, event(audit.KindAdminAction))
				wantErr(t, "move from "+string(final)+" to "+string(to), err, store.ErrConflict)
			}
			if n, err := s.SequenceAudit(ctx, 100); err != nil || n != 0 {
				t.Errorf("refused transitions audited %d events (%v), want none", n, err)
			}
			m, err := s.Message(ctx, r.MessageID)
			must(t, "read", err)
			if m.Status != final {
				t.Errorf("status = %s, want %s", m.Status, final)
			}
		})
	}
}

func testPurge(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	accept(t, s, r)
	must(t, "expire", s.Transition(ctx, r.MessageID, store.StatusExpired, event(audit.KindExpired)))
	must(t, "purge", s.Purge(ctx, r.MessageID, audit.Event{Kind: audit.KindPurged, Actor: "retention", Detail: map[string]string{"policy": "hipaa-standard"}}))

	m, err := s.Message(ctx, r.MessageID)
	must(t, "read purged message", err)
	if m.Status != store.StatusPurged || m.WrappedKey != "" || m.LinkTokenHash != r.LinkTokenHash {
		t.Errorf("purged message = %+v, want status purged, no wrapped key, link hash kept", m)
	}
	parts, err := s.MessageParts(ctx, r.MessageID)
	must(t, "read parts of purged message", err)
	if len(parts) != 0 {
		t.Errorf("purged message still has %d parts", len(parts))
	}
	events := sequenceAll(t, s)
	if last := events[len(events)-1]; last.Kind != audit.KindPurged || last.Actor != "retention" || last.Detail["policy"] != "hipaa-standard" {
		t.Errorf("last event = %+v, want the purge", last)
	}

	wantErr(t, "purge twice", s.Purge(ctx, r.MessageID, event(audit.KindPurged)), store.ErrConflict)
	wantErr(t, "transition after purge", s.Transition(ctx, r.MessageID, store.StatusRead, event(audit.KindRevealed)), store.ErrConflict)
	wantErr(t, "purge a missing message", s.Purge(ctx, "no-such-message", event(audit.KindPurged)), store.ErrNotFound)

	// Purging straight from a live status also cancels the pending SMS.
	live := NewRequest(newPhone())
	accept(t, s, live)
	must(t, "purge live message", s.Purge(ctx, live.MessageID, event(audit.KindPurged)))
	if depth, _, err := s.OutboxStats(ctx, time.Now()); err != nil || depth != 0 {
		t.Errorf("outbox depth after purge = %d, %v; want 0", depth, err)
	}
}

func testReadsNotFound(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	_, err := s.Message(ctx, "missing")
	wantErr(t, "Message", err, store.ErrNotFound)
	_, err = s.VisitLink(ctx, sha256.Sum256([]byte("missing")), [32]byte{}, false)
	wantErr(t, "VisitLink", err, store.ErrNotFound)
	_, err = s.MessageByProviderID(ctx, "missing")
	wantErr(t, "MessageByProviderID", err, store.ErrNotFound)
	_, err = s.MessageParts(ctx, "missing")
	wantErr(t, "MessageParts", err, store.ErrNotFound)
	_, err = s.Recipient(ctx, "missing")
	wantErr(t, "Recipient", err, store.ErrNotFound)
	_, err = s.RecipientByPhone(ctx, "+12025550000")
	wantErr(t, "RecipientByPhone", err, store.ErrNotFound)
	_, err = s.Session(ctx, sha256.Sum256([]byte("missing")))
	wantErr(t, "Session", err, store.ErrNotFound)
	if err != nil && errors.Is(err, store.ErrUnavailable) {
		t.Errorf("not found is not temporary: %v", err)
	}
}
