package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

func testLoginFailures(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	res := accept(t, s, NewRequest(newPhone()))
	id := res.RecipientID

	const phc = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	must(t, "set password", s.SetPassword(ctx, id, phc))
	rc, err := s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.PasswordHash != phc {
		t.Errorf("password hash = %q, want %q", rc.PasswordHash, phc)
	}

	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const maxFailures, lockFor = 3, 15 * time.Minute
	for i := 1; i < maxFailures; i++ {
		st, err := s.RecordLoginFailure(ctx, id, now, maxFailures, lockFor)
		must(t, "record failure", err)
		if st.FailedLogins != i || st.Locked(now) {
			t.Fatalf("after %d failures: %+v, want count %d and not locked", i, st, i)
		}
	}
	st, err := s.RecordLoginFailure(ctx, id, now, maxFailures, lockFor)
	must(t, "record failure", err)
	if st.FailedLogins != maxFailures || !st.Locked(now) || !st.LockedUntil.Equal(now.Add(lockFor)) {
		t.Fatalf("after %d failures: %+v, want locked until %v", maxFailures, st, now.Add(lockFor))
	}
	if st.Locked(now.Add(lockFor)) {
		t.Errorf("still locked when the lock ends")
	}
	rc, err = s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.FailedLogins != maxFailures || !rc.LockedUntil.Equal(st.LockedUntil) {
		t.Errorf("stored %d failures, locked until %v; want %d, %v", rc.FailedLogins, rc.LockedUntil, maxFailures, st.LockedUntil)
	}

	// After the lock ends, one more failure locks again at once.
	later := now.Add(lockFor + time.Minute)
	st, err = s.RecordLoginFailure(ctx, id, later, maxFailures, lockFor)
	must(t, "record failure after the lock", err)
	if !st.Locked(later) {
		t.Errorf("a failure right after the lock did not lock again: %+v", st)
	}

	must(t, "reset", s.ResetLoginFailures(ctx, id))
	rc, err = s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.FailedLogins != 0 || !rc.LockedUntil.IsZero() {
		t.Errorf("after reset: %d failures, locked until %v", rc.FailedLogins, rc.LockedUntil)
	}

	_, err = s.RecordLoginFailure(ctx, "missing", now, maxFailures, lockFor)
	wantErr(t, "failure of a missing recipient", err, store.ErrNotFound)
	wantErr(t, "password of a missing recipient", s.SetPassword(ctx, "missing", phc), store.ErrNotFound)
	wantErr(t, "reset of a missing recipient", s.ResetLoginFailures(ctx, "missing"), store.ErrNotFound)
}

func testSessions(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	recipient := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	const idle, absolute = 15 * time.Minute, 12 * time.Hour

	sess := store.Session{
		IDHash: sha256.Sum256([]byte("session 1")), RecipientID: recipient,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(absolute),
	}
	must(t, "create session", s.CreateSession(ctx, sess))
	wantErr(t, "create it again", s.CreateSession(ctx, sess), store.ErrConflict)
	got, err := s.Session(ctx, sess.IDHash)
	must(t, "read session", err)
	if got != sess {
		t.Errorf("session = %+v, want %+v", got, sess)
	}
	if !got.Valid(now.Add(idle-time.Second), idle) || got.Valid(now.Add(idle), idle) {
		t.Errorf("idle timeout not applied at %v", idle)
	}

	seen := now.Add(10 * time.Minute)
	must(t, "touch", s.TouchSession(ctx, sess.IDHash, seen))
	got, err = s.Session(ctx, sess.IDHash)
	must(t, "read session", err)
	if !got.LastSeenAt.Equal(seen) || !got.Valid(now.Add(idle), idle) {
		t.Errorf("after touch: %+v, want last seen %v and valid", got, seen)
	}
	if got.Valid(now.Add(absolute), time.Duration(1<<62)) {
		t.Errorf("valid past the absolute timeout")
	}
	wantErr(t, "touch a missing session", s.TouchSession(ctx, sha256.Sum256([]byte("missing")), seen), store.ErrNotFound)

	// Three more: one idle too long, one past its absolute timeout, one fresh.
	idleSess := store.Session{IDHash: sha256.Sum256([]byte("idle")), RecipientID: recipient,
		CreatedAt: now.Add(-time.Hour), LastSeenAt: now.Add(-time.Hour), ExpiresAt: now.Add(absolute)}
	oldSess := store.Session{IDHash: sha256.Sum256([]byte("old")), RecipientID: recipient,
		CreatedAt: now.Add(-absolute), LastSeenAt: now, ExpiresAt: now}
	fresh := store.Session{IDHash: sha256.Sum256([]byte("fresh")), RecipientID: recipient,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(absolute)}
	for _, x := range []store.Session{idleSess, oldSess, fresh} {
		must(t, "create session", s.CreateSession(ctx, x))
	}
	n, err := s.DeleteExpiredSessions(ctx, now, idle)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d expired sessions (%v), want 2", n, err)
	}
	for _, gone := range []store.Session{idleSess, oldSess} {
		_, err := s.Session(ctx, gone.IDHash)
		wantErr(t, "read expired session", err, store.ErrNotFound)
	}
	for _, kept := range []store.Session{sess, fresh} {
		_, err := s.Session(ctx, kept.IDHash)
		must(t, "read live session", err)
	}

	must(t, "delete session", s.DeleteSession(ctx, sess.IDHash))
	_, err = s.Session(ctx, sess.IDHash)
	wantErr(t, "read deleted session", err, store.ErrNotFound)
	must(t, "delete a deleted session", s.DeleteSession(ctx, sess.IDHash))
}

// VisitLink reads a link's message, the browser's session only if it is the recipient's, and
// the parts only when asked and signed in.
func testVisitLink(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	req := NewRequest(newPhone())
	res := accept(t, s, req)
	other := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Now().UTC().Truncate(time.Microsecond)
	own := store.Session{IDHash: sha256.Sum256([]byte("own")), RecipientID: res.RecipientID,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}
	foreign := store.Session{IDHash: sha256.Sum256([]byte("foreign")), RecipientID: other,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}
	must(t, "create session", s.CreateSession(ctx, own))
	must(t, "create session", s.CreateSession(ctx, foreign))
	want, err := s.Message(ctx, req.MessageID)
	must(t, "read message", err)

	type visit struct {
		name        string
		session     [32]byte
		withParts   bool
		wantSession bool
		wantParts   int
	}
	cases := []visit{
		{"no session", [32]byte{}, true, false, 0},
		{"unknown session", sha256.Sum256([]byte("nobody")), true, false, 0},
		{"another recipient's session", foreign.IDHash, true, false, 0},
		{"own session without parts", own.IDHash, false, true, 0},
		{"own session with parts", own.IDHash, true, true, len(req.Parts)},
	}
	check := func(t *testing.T, tc visit) {
		v, err := s.VisitLink(ctx, req.LinkTokenHash, tc.session, tc.withParts)
		if err != nil {
			t.Errorf("%s: visit link: %v", tc.name, err)
			return
		}
		if v.Message != want {
			t.Errorf("%s: message = %+v, want %+v", tc.name, v.Message, want)
		}
		switch {
		case tc.wantSession && (v.Session == nil || *v.Session != own):
			t.Errorf("%s: session = %+v, want %+v", tc.name, v.Session, own)
		case !tc.wantSession && v.Session != nil:
			t.Errorf("%s: session = %+v, want none", tc.name, v.Session)
		}
		if len(v.Parts) != tc.wantParts {
			t.Errorf("%s: %d parts, want %d", tc.name, len(v.Parts), tc.wantParts)
			return
		}
		for i, p := range v.Parts {
			if p.Name != req.Parts[i].Name || !bytes.Equal(p.Ciphertext, req.Parts[i].Ciphertext) {
				t.Errorf("%s: part %d = %s, want %s in accept order", tc.name, i, p.Name, req.Parts[i].Name)
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { check(t, tc) })
	}
	_, err = s.VisitLink(ctx, sha256.Sum256([]byte("missing")), own.IDHash, true)
	wantErr(t, "unknown link", err, store.ErrNotFound)

	// Concurrent visits may share a round trip (PostgreSQL): each still gets its own answer.
	t.Run("concurrent", func(t *testing.T) {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() {
				<-start
				if i%len(cases) == 0 && i%2 == 0 {
					if _, err := s.VisitLink(ctx, sha256.Sum256([]byte("missing")), own.IDHash, true); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("unknown link among others: got error %v, want %v", err, store.ErrNotFound)
					}
					return
				}
				check(t, cases[i%len(cases)])
			})
		}
		close(start)
		wg.Wait()
	})
}

// Replies are stored with an audit event, capped per message, refused once the message is
// gone, and deleted when it is purged.
func testReplies(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	r := NewRequest(newPhone())
	recipient := accept(t, s, r).RecipientID
	replied := func(id string) audit.Event {
		return audit.Event{Kind: audit.KindReplied, Actor: "patient", Detail: map[string]string{"recipient": recipient, "reply": id}}
	}
	first := store.Reply{ID: store.NewID(), MessageID: r.MessageID, Ciphertext: randomBytes(40)}
	second := store.Reply{ID: store.NewID(), MessageID: r.MessageID, Ciphertext: randomBytes(50),
		CreatedAt: time.Now().Add(time.Minute)}
	must(t, "add reply", s.AddReply(ctx, first, 2, replied(first.ID)))
	must(t, "add second reply", s.AddReply(ctx, second, 2, replied(second.ID)))
	third := store.Reply{ID: store.NewID(), MessageID: r.MessageID, Ciphertext: randomBytes(10)}
	wantErr(t, "reply past the cap", s.AddReply(ctx, third, 2, replied(third.ID)), store.ErrRateLimited)
	wantErr(t, "reply without ciphertext", s.AddReply(ctx, store.Reply{ID: "x", MessageID: r.MessageID}, 2, replied("x")), store.ErrInvalid)
	wantErr(t, "reply to a missing message", s.AddReply(ctx, store.Reply{ID: "y", MessageID: "missing", Ciphertext: []byte{1}}, 2, replied("y")), store.ErrNotFound)

	got, err := s.Replies(ctx, r.MessageID)
	must(t, "read replies", err)
	if len(got) != 2 || got[0].ID != first.ID || got[1].ID != second.ID ||
		!bytes.Equal(got[0].Ciphertext, first.Ciphertext) || !bytes.Equal(got[1].Ciphertext, second.Ciphertext) {
		t.Fatalf("replies = %+v, want the two stored, oldest first", got)
	}
	events, err := s.MessageEvents(ctx, r.MessageID)
	must(t, "read events", err)
	var ids []string
	for _, e := range events {
		if e.Kind == audit.KindReplied {
			ids = append(ids, e.Detail["reply"])
		}
	}
	if len(ids) != 2 || ids[0] != first.ID || ids[1] != second.ID {
		t.Errorf("replied events name %v, want the two stored replies (the refused one audits nothing)", ids)
	}

	must(t, "revoke", s.Transition(ctx, r.MessageID, store.StatusRevoked, event(audit.KindRevoked)))
	wantErr(t, "reply to a revoked message", s.AddReply(ctx, third, 5, replied(third.ID)), store.ErrConflict)
	must(t, "purge", s.Purge(ctx, r.MessageID, event(audit.KindPurged)))
	if got, err := s.Replies(ctx, r.MessageID); err != nil || len(got) != 0 {
		t.Errorf("after purge: %d replies, %v; want none", len(got), err)
	}
}
