package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// client returns a LoginClient with a random address and, with browser, a random device token.
func client(browser bool) store.LoginClient {
	var c store.LoginClient
	copy(c.Address[:], randomBytes(32))
	if browser {
		copy(c.Browser[:], randomBytes(32))
	}
	return c
}

func testLoginFailures(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID

	const phc = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	must(t, "set password", s.SetPassword(ctx, id, phc))
	rc, err := s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.PasswordHash != phc {
		t.Errorf("password hash = %q, want %q", rc.PasswordHash, phc)
	}

	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const window = 30 * 24 * time.Hour
	always := func(store.LoginCounts) bool { return true }
	begin := func(c store.LoginClient, at time.Time, allow func(store.LoginCounts) bool) store.LoginAttempt {
		t.Helper()
		a, err := s.BeginLogin(ctx, id, c, at, window, allow)
		must(t, "begin sign-in", err)
		return a
	}
	fail := func(c store.LoginClient, at time.Time) store.LoginCounts {
		t.Helper()
		a := begin(c, at, always)
		must(t, "record failure", s.LoginFailed(ctx, a))
		return a.Counts
	}

	attacker, patient := client(false), client(true)
	for i := range 3 {
		got := fail(attacker, now.Add(time.Duration(i)*time.Minute))
		if got.Client != i || got.Shared != i || got.Trusted {
			t.Fatalf("before failure %d: %+v, want %d of the client and %d shared, untrusted", i+1, got, i, i)
		}
	}
	// Another client has its own count; the shared count has everyone's.
	got := fail(client(false), now.Add(3*time.Minute))
	if got.Client != 0 || got.Shared != 3 || !got.SharedOldest.Equal(now) || !got.SharedLast.Equal(now.Add(2*time.Minute)) {
		t.Errorf("a second client sees %+v, want its own count 0, 3 shared from %v to %v", got, now, now.Add(2*time.Minute))
	}

	// A refused attempt stores nothing; an attempt under way counts until it is settled.
	if a := begin(attacker, now.Add(4*time.Minute), func(store.LoginCounts) bool { return false }); a.ID != "" {
		t.Errorf("a refused attempt got id %q", a.ID)
	}
	pending := begin(attacker, now.Add(4*time.Minute), always)
	if a := begin(attacker, now.Add(4*time.Minute), always); a.Counts.Client != 4 {
		t.Errorf("with one attempt under way the client has %d, want 4 (3 failures and the pending one)", a.Counts.Client)
	} else {
		must(t, "abandon", s.LoginAbandoned(ctx, a))
	}
	must(t, "abandon", s.LoginAbandoned(ctx, pending))
	if a := begin(attacker, now.Add(4*time.Minute), always); a.Counts.Client != 3 {
		t.Errorf("after abandoning, the client has %d, want 3", a.Counts.Client)
	} else {
		must(t, "abandon", s.LoginAbandoned(ctx, a))
	}

	// The patient signs in: the browser becomes trusted, counted alone, outside the shared count.
	a := begin(patient, now.Add(5*time.Minute), always)
	if a.Counts.Trusted {
		t.Error("a browser that never signed in is trusted")
	}
	must(t, "sign in", s.LoginSucceeded(ctx, a, patient.Browser, now.Add(5*time.Minute)))
	got = fail(patient, now.Add(6*time.Minute))
	if !got.Trusted || got.Client != 0 {
		t.Errorf("after a sign-in the browser has %+v, want trusted with no failures", got)
	}
	got = fail(patient, now.Add(7*time.Minute))
	if got.Client != 1 || got.Shared != 4 {
		t.Errorf("a trusted browser's failure: %+v, want 1 of its own and the shared count unchanged at 4", got)
	}
	// A success clears the browser's own count, and only its own.
	a = begin(patient, now.Add(8*time.Minute), always)
	must(t, "sign in", s.LoginSucceeded(ctx, a, patient.Browser, now.Add(8*time.Minute)))
	if a := begin(patient, now.Add(9*time.Minute), always); a.Counts.Client != 0 || a.Counts.Shared != 4 {
		t.Errorf("after another sign-in: %+v, want no failures of its own, 4 shared", a.Counts)
	} else {
		must(t, "abandon", s.LoginAbandoned(ctx, a))
	}

	// Failures decay: after the window they count no more, and cleanup deletes them.
	later := now.Add(window + 150*time.Second)
	if a := begin(attacker, later, always); a.Counts.Client != 0 || a.Counts.Shared != 1 {
		t.Errorf("a window later: %+v, want no failures of the client and 1 shared (the one at +3m)", a.Counts)
	} else {
		must(t, "abandon", s.LoginAbandoned(ctx, a))
	}
	if a := begin(patient, now.Add(window+9*time.Minute), always); a.Counts.Trusted {
		t.Error("a browser is still trusted a window after its last sign-in")
	} else {
		must(t, "abandon", s.LoginAbandoned(ctx, a))
	}
	n, err := s.DeleteLoginAttempts(ctx, now.Add(4*time.Minute))
	if err != nil || n != 4 {
		t.Errorf("DeleteLoginAttempts = %d, %v; want the 4 failures before +4m", n, err)
	}

	_, err = s.BeginLogin(ctx, "missing", attacker, now, window, always)
	wantErr(t, "sign-in of a missing recipient", err, store.ErrNotFound)
	_, err = s.BeginLogin(ctx, id, store.LoginClient{}, now, window, always)
	wantErr(t, "sign-in without an address", err, store.ErrInvalid)
	wantErr(t, "settle a missing attempt", s.LoginFailed(ctx, store.LoginAttempt{ID: "missing"}), store.ErrNotFound)
	wantErr(t, "password of a missing recipient", s.SetPassword(ctx, "missing", phc), store.ErrNotFound)
}

// Concurrent attempts from many clients: the decision and the pending row are one step, so
// the number that go ahead never exceeds what allow permits.
func testLoginBurst(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const limit = 5
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 4 * limit {
		wg.Go(func() {
			a, err := s.BeginLogin(ctx, id, client(false), now, time.Hour, func(c store.LoginCounts) bool { return c.Shared < limit })
			if err != nil {
				if !store.IsTemporary(err) {
					t.Errorf("begin sign-in: %v", err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if a.ID != "" {
				allowed++
			}
		})
	}
	wg.Wait()
	if allowed != limit {
		t.Errorf("%d attempts went ahead in a burst, want %d", allowed, limit)
	}
}

// A failed sign-in and its audit events are one transaction: an event the audit log refuses
// leaves the attempt pending, not failed without a record.
func testLoginFailureAudited(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	c := client(false)
	a, err := s.BeginLogin(ctx, id, c, now, time.Hour, func(store.LoginCounts) bool { return true })
	must(t, "begin sign-in", err)
	good := audit.Event{Time: now, Kind: audit.KindAuthFailed, Actor: "patient", Detail: map[string]string{"recipient": id}}
	bad := audit.Event{Time: now, Kind: "no-such-kind", Actor: "viewer", Detail: map[string]string{"recipient": id}}
	if err := s.LoginFailed(ctx, a, good, bad); err == nil {
		t.Fatal("a failure with an invalid audit event was recorded")
	}
	if got := recipientEvents(t, s, id); len(got) != 0 {
		t.Errorf("audit events %v after the refused failure, want none", got)
	}
	// Still pending: settling it now works once, with both its events.
	locked := audit.Event{Time: now, Kind: audit.KindLocked, Actor: "viewer", Detail: map[string]string{"recipient": id}}
	must(t, "record failure", s.LoginFailed(ctx, a, good, locked))
	wantErr(t, "record the failure twice", s.LoginFailed(ctx, a, good), store.ErrNotFound)
	if got := recipientEvents(t, s, id); !slices.Equal(got, []audit.Kind{audit.KindAuthFailed, audit.KindLocked}) {
		t.Errorf("audit events %v, want auth-failed and locked", got)
	}
	b, err := s.BeginLogin(ctx, id, c, now, time.Hour, func(store.LoginCounts) bool { return true })
	must(t, "begin sign-in", err)
	if b.Counts.Client != 1 {
		t.Errorf("the client has %d failures, want 1", b.Counts.Client)
	}
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
