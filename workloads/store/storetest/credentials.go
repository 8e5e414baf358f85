package storetest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// recipientEvents returns the kinds of the pending and chained events that name recipient id
// in their detail.
func recipientEvents(t *testing.T, s *store.Store, id string) []audit.Kind {
	t.Helper()
	ctx := context.Background()
	_, err := s.SequenceAudit(ctx, 10000)
	must(t, "sequence audit", err)
	events, err := s.AuditEvents(ctx, 0, 10000)
	must(t, "read audit events", err)
	var kinds []audit.Kind
	for _, e := range events {
		if e.Detail["recipient"] == id {
			kinds = append(kinds, e.Kind)
		}
	}
	return kinds
}

func testFirstPassword(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	ev := audit.Event{Kind: audit.KindPasswordSet, Actor: "patient", Detail: map[string]string{"recipient": id}}

	must(t, "set first password", s.SetFirstPassword(ctx, id, "$argon2id$first", ev))
	wantErr(t, "set first password again", s.SetFirstPassword(ctx, id, "$argon2id$second", ev), store.ErrConflict)
	rc, err := s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.PasswordHash != "$argon2id$first" {
		t.Errorf("password hash = %q, want the first one", rc.PasswordHash)
	}
	if got := recipientEvents(t, s, id); len(got) != 1 || got[0] != audit.KindPasswordSet {
		t.Errorf("audit events = %v, want one password-set (the refused second call audits nothing)", got)
	}
	wantErr(t, "first password of a missing recipient", s.SetFirstPassword(ctx, "missing", "$argon2id$x", ev), store.ErrNotFound)
	wantErr(t, "empty hash", s.SetFirstPassword(ctx, id, "", ev), store.ErrInvalid)
}

// Concurrent first passwords from two browsers: exactly one wins.
func testFirstPasswordRace(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	ev := audit.Event{Kind: audit.KindPasswordSet, Actor: "patient", Detail: map[string]string{"recipient": id}}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.SetFirstPassword(ctx, id, "$argon2id$"+string(rune('a'+i)), ev) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !store.IsTemporary(err):
			wantErr(t, "losing first password", err, store.ErrConflict)
		}
	}
	if won != 1 {
		t.Errorf("%d browsers set the first password, want exactly 1", won)
	}
}

func testResetPassword(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	other := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Now()
	must(t, "set password", s.SetPassword(ctx, id, "$argon2id$old"))
	a, err := s.BeginLogin(ctx, id, client(false), now, time.Hour, func(store.LoginCounts) bool { return true })
	must(t, "begin sign-in", err)
	must(t, "fail sign-in", s.LoginFailed(ctx, a))
	for i, rid := range []string{id, id, other} {
		must(t, "create session", s.CreateSession(ctx, store.Session{
			IDHash: sha256.Sum256([]byte{byte(i)}), RecipientID: rid, ExpiresAt: now.Add(time.Hour),
		}))
	}

	ev := audit.Event{Kind: audit.KindPasswordReset, Actor: "patient", Detail: map[string]string{"recipient": id}}
	must(t, "reset password", s.ResetPassword(ctx, id, "$argon2id$new", ev))
	rc, err := s.Recipient(ctx, id)
	must(t, "read recipient", err)
	if rc.PasswordHash != "$argon2id$new" {
		t.Errorf("after reset: hash %q, want the new hash", rc.PasswordHash)
	}
	if a, err := s.BeginLogin(ctx, id, client(false), now, time.Hour, func(store.LoginCounts) bool { return false }); err != nil || a.Counts.Shared != 0 {
		t.Errorf("after reset: %+v, %v; want no failures counted against the new password", a.Counts, err)
	}
	for i := range 2 {
		_, err := s.Session(ctx, sha256.Sum256([]byte{byte(i)}))
		wantErr(t, "session of the reset recipient", err, store.ErrNotFound)
	}
	_, err = s.Session(ctx, sha256.Sum256([]byte{2}))
	must(t, "another recipient's session survives", err)
	if got := recipientEvents(t, s, id); len(got) != 1 || got[0] != audit.KindPasswordReset {
		t.Errorf("audit events = %v, want one password-reset", got)
	}
	wantErr(t, "reset a missing recipient", s.ResetPassword(ctx, "missing", "$argon2id$x", ev), store.ErrNotFound)

	n, err := s.DeleteRecipientSessions(ctx, other)
	if err != nil || n != 1 {
		t.Errorf("DeleteRecipientSessions = %d, %v; want 1", n, err)
	}
}

// limits are generous code limits for tests that are not about them.
var limits = store.CodeLimits{Window: time.Hour, PerClient: 5, PerRecipient: 10, TrustWindow: 30 * 24 * time.Hour}

// browserA is the browser the code tests ask for codes from, unless they say otherwise.
var browserA = client(true)

// code returns a one-time code asked for by browserA, in its stored form, and its matcher.
func code(id string, purpose store.CodePurpose, digits string, created time.Time) (store.OneTimeCode, func(string) func([16]byte, [32]byte) bool) {
	return codeFor(browserA, id, purpose, digits, created)
}

func codeFor(c0 store.LoginClient, id string, purpose store.CodePurpose, digits string, created time.Time) (store.OneTimeCode, func(string) func([16]byte, [32]byte) bool) {
	c := store.OneTimeCode{RecipientID: id, Purpose: purpose, Client: c0, CreatedAt: created, ExpiresAt: created.Add(10 * time.Minute)}
	copy(c.Salt[:], randomBytes(16))
	c.Hash = sha256.Sum256(append(c.Salt[:], digits...))
	matcher := func(typed string) func([16]byte, [32]byte) bool {
		return func(salt [16]byte, hash [32]byte) bool {
			h := sha256.Sum256(append(salt[:], typed...))
			return subtle.ConstantTimeCompare(h[:], hash[:]) == 1
		}
	}
	return c, matcher
}

func testOneTimeCodes(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	ev := audit.Event{Kind: audit.KindCodeSent, Actor: "viewer", Detail: map[string]string{"recipient": id, "purpose": "setup"}}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const maxAttempts = 3

	use := func(purpose store.CodePurpose, at time.Time, m func([16]byte, [32]byte) bool) store.CodeResult {
		t.Helper()
		r, err := s.UseOneTimeCode(ctx, id, purpose, browserA.Browser, at, maxAttempts, m)
		must(t, "use code", err)
		return r
	}

	c, match := code(id, store.CodeSetup, "123456", now)
	if r := use(store.CodeSetup, now, match("123456")); r != store.CodeMissing {
		t.Errorf("before any code: %v, want CodeMissing", r)
	}
	must(t, "create code", s.CreateOneTimeCode(ctx, c, limits, ev))
	if r := use(store.CodeReset, now, match("123456")); r != store.CodeMissing {
		t.Errorf("code used for the other purpose: %v, want CodeMissing", r)
	}
	if r := use(store.CodeSetup, now, match("000000")); r != store.CodeWrong {
		t.Errorf("wrong code: %v, want CodeWrong", r)
	}
	if r := use(store.CodeSetup, now.Add(time.Minute), match("123456")); r != store.CodeAccepted {
		t.Errorf("right code: %v, want CodeAccepted", r)
	}
	if r := use(store.CodeSetup, now.Add(time.Minute), match("123456")); r != store.CodeMissing {
		t.Errorf("right code twice: %v, want CodeMissing (single use)", r)
	}

	// Expiry.
	c, match = code(id, store.CodeSetup, "222222", now.Add(time.Minute))
	must(t, "create code", s.CreateOneTimeCode(ctx, c, limits, ev))
	if r := use(store.CodeSetup, c.ExpiresAt, match("222222")); r != store.CodeMissing {
		t.Errorf("code at its expiry: %v, want CodeMissing", r)
	}

	// Too many wrong attempts kill the code.
	c, match = code(id, store.CodeSetup, "333333", now.Add(2*time.Minute))
	must(t, "create code", s.CreateOneTimeCode(ctx, c, limits, ev))
	for i := range maxAttempts {
		if r := use(store.CodeSetup, c.CreatedAt, match("999999")); r != store.CodeWrong {
			t.Fatalf("wrong attempt %d: %v, want CodeWrong", i+1, r)
		}
	}
	if r := use(store.CodeSetup, c.CreatedAt, match("333333")); r != store.CodeMissing {
		t.Errorf("right code after %d wrong ones: %v, want CodeMissing", maxAttempts, r)
	}

	// A newer code supersedes the older one.
	old, matchOld := code(id, store.CodeReset, "444444", now.Add(3*time.Minute))
	must(t, "create code", s.CreateOneTimeCode(ctx, old, limits, ev))
	newer, matchNew := code(id, store.CodeReset, "555555", now.Add(4*time.Minute))
	must(t, "create code", s.CreateOneTimeCode(ctx, newer, limits, ev))
	if r := use(store.CodeReset, newer.CreatedAt, matchOld("444444")); r != store.CodeWrong {
		t.Errorf("superseded code: %v, want CodeWrong", r)
	}
	if r := use(store.CodeReset, newer.CreatedAt, matchNew("555555")); r != store.CodeAccepted {
		t.Errorf("newest code: %v, want CodeAccepted", r)
	}

	n, err := s.DeleteExpiredCodes(ctx, now.Add(time.Hour))
	if err != nil || n != 5 {
		t.Errorf("DeleteExpiredCodes = %d, %v; want 5", n, err)
	}
	if got := recipientEvents(t, s, id); len(got) != 5 {
		t.Errorf("audit events = %v, want five code-sent", got)
	}
	wantErr(t, "code of a missing recipient", s.CreateOneTimeCode(ctx, store.OneTimeCode{
		RecipientID: "missing", Purpose: store.CodeSetup, Hash: c.Hash, Client: browserA, CreatedAt: now, ExpiresAt: now.Add(time.Minute),
	}, limits, ev), store.ErrNotFound)
	wantErr(t, "bad purpose", s.CreateOneTimeCode(ctx, store.OneTimeCode{
		RecipientID: id, Purpose: "other", Hash: c.Hash, Client: browserA, CreatedAt: now, ExpiresAt: now.Add(time.Minute),
	}, limits, ev), store.ErrInvalid)
	wantErr(t, "no browser", s.CreateOneTimeCode(ctx, store.OneTimeCode{
		RecipientID: id, Purpose: store.CodeSetup, Hash: c.Hash, Client: store.LoginClient{Address: browserA.Address}, CreatedAt: now, ExpiresAt: now.Add(time.Minute),
	}, limits, ev), store.ErrInvalid)
}

func testOneTimeCodeRateLimit(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	ev := audit.Event{Kind: audit.KindCodeSent, Actor: "viewer", Detail: map[string]string{"recipient": id}}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	lim := store.CodeLimits{Window: 15 * time.Minute, PerClient: 3, PerRecipient: 7, TrustWindow: 30 * 24 * time.Hour}

	// A burst of concurrent requests from one client (new browsers, one address) stores
	// exactly PerClient codes.
	attacker := client(false)
	var wg sync.WaitGroup
	errs := make([]error, 2*lim.PerClient)
	for i := range errs {
		from := client(true)
		from.Address = attacker.Address
		c, _ := codeFor(from, id, store.CodeReset, "111111", now.Add(time.Duration(i)*time.Millisecond))
		wg.Go(func() { errs[i] = s.CreateOneTimeCode(ctx, c, lim, ev) })
	}
	wg.Wait()
	stored := 0
	for _, err := range errs {
		switch {
		case err == nil:
			stored++
		case !store.IsTemporary(err):
			wantErr(t, "code over the limit", err, store.ErrRateLimited)
		}
	}
	if stored != lim.PerClient {
		t.Errorf("stored %d codes in a burst from one client, want %d", stored, lim.PerClient)
	}
	// Other clients share the per-recipient limit of untrusted clients.
	for i := range lim.PerRecipient - lim.PerClient {
		c, _ := codeFor(client(true), id, store.CodeReset, "111111", now.Add(time.Second))
		must(t, fmt.Sprintf("code %d of another client", i), s.CreateOneTimeCode(ctx, c, lim, ev))
	}
	c, _ := codeFor(client(true), id, store.CodeReset, "111111", now.Add(time.Second))
	wantErr(t, "code over the recipient's limit", s.CreateOneTimeCode(ctx, c, lim, ev), store.ErrRateLimited)
	// A browser the patient signed in from is not held by the per-recipient limit.
	patient := client(true)
	must(t, "trust browser", s.TrustBrowser(ctx, id, patient.Browser, now.Add(-time.Hour)))
	c, _ = codeFor(patient, id, store.CodeReset, "111111", now.Add(2*time.Second))
	must(t, "code of a trusted browser", s.CreateOneTimeCode(ctx, c, lim, ev))
	// After the window, codes flow again.
	c, _ = codeFor(attacker, id, store.CodeReset, "111111", now.Add(lim.Window+time.Second))
	c.Client.Browser = sha256.Sum256([]byte("x"))
	must(t, "code after the window", s.CreateOneTimeCode(ctx, c, lim, ev))
	wantErr(t, "PerRecipient not above PerClient", s.CreateOneTimeCode(ctx, c,
		store.CodeLimits{Window: time.Hour, PerClient: 3, PerRecipient: 3, TrustWindow: time.Hour}, ev), store.ErrInvalid)
}

// A code works only in the browser that asked for it: another browser's wrong guesses do not
// use it up, its right guess does not work, and its requests do not replace it.
func testOneTimeCodeBoundToBrowser(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	ev := audit.Event{Kind: audit.KindCodeSent, Actor: "viewer", Detail: map[string]string{"recipient": id}}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	patient, attacker := client(true), client(true)
	c, match := codeFor(patient, id, store.CodeReset, "246810", now)
	must(t, "patient's code", s.CreateOneTimeCode(ctx, c, limits, ev))
	theirs, _ := codeFor(attacker, id, store.CodeReset, "135791", now.Add(time.Second))
	must(t, "attacker's code", s.CreateOneTimeCode(ctx, theirs, limits, ev))
	for range 10 {
		r, err := s.UseOneTimeCode(ctx, id, store.CodeReset, attacker.Browser, now.Add(time.Minute), 3, match("000000"))
		must(t, "attacker's guess", err)
		if r == store.CodeAccepted {
			t.Fatal("a wrong guess was accepted")
		}
	}
	if r, err := s.UseOneTimeCode(ctx, id, store.CodeReset, attacker.Browser, now.Add(time.Minute), 3, match("246810")); err != nil || r == store.CodeAccepted {
		t.Errorf("the patient's code in the attacker's browser: %v, %v; want not accepted", r, err)
	}
	if r, err := s.UseOneTimeCode(ctx, id, store.CodeReset, patient.Browser, now.Add(time.Minute), 3, match("246810")); err != nil || r != store.CodeAccepted {
		t.Errorf("the patient's code in the patient's browser: %v, %v; want CodeAccepted", r, err)
	}
}

// Concurrent uses of the right code: exactly one is accepted.
func testOneTimeCodeSingleUse(t *testing.T, h harness) {
	ctx := context.Background()
	s, _ := h.open(t)
	id := accept(t, s, NewRequest(newPhone())).RecipientID
	now := time.Now()
	c, match := code(id, store.CodeReset, "987654", now)
	must(t, "create code", s.CreateOneTimeCode(ctx, c, limits,
		audit.Event{Kind: audit.KindCodeSent, Actor: "viewer", Detail: map[string]string{"recipient": id}}))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted int
	)
	for range 8 {
		wg.Go(func() {
			r, err := s.UseOneTimeCode(ctx, id, store.CodeReset, browserA.Browser, now, 5, match("987654"))
			if err != nil && !store.IsTemporary(err) {
				t.Errorf("use code: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if r == store.CodeAccepted {
				accepted++
			}
		})
	}
	wg.Wait()
	if accepted != 1 {
		t.Errorf("code accepted %d times, want 1", accepted)
	}
}
