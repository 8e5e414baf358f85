package viewer

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/store"
)

// TestReplies: with the tenant's reply policy on, a signed-in patient answers a message; the
// reply is stored sealed under the message's key (and only for this message), audited without
// its text, shown back under the message, capped in length and number, and refused once the
// message is gone.
func TestReplies(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		f := newFixture(t, b, fixtureOptions{policy: Policy{Replies: true, ReplyMaxLength: 40}})
		id, link := f.message(phoneA, "Lab results", "Your results are normal.")
		br := f.browser()
		r := br.setFirstPassword(link, goodPassword)
		wantBody(t, "message page", r, "Reply to", `maxlength="40"`, "You have not replied")

		const text = "Thanks! Can I call\r\ntomorrow?\x07"
		r = br.step(link, "reply", "reply", text)
		wantStatus(t, "reply", r, http.StatusOK)
		wantBody(t, "after the reply", r, "Your reply was sent", "Thanks! Can I call\ntomorrow?</div>", "Your results are normal.")

		replies, err := f.Store.Replies(ctx, id)
		if err != nil || len(replies) != 1 {
			t.Fatalf("stored replies %d, %v; want 1", len(replies), err)
		}
		if strings.Contains(string(replies[0].Ciphertext), "Thanks") {
			t.Fatal("the reply is stored in the clear")
		}
		m, err := f.Store.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		key, err := f.Local.Unwrap(ctx, m.WrappedKey)
		if err != nil {
			t.Fatal(err)
		}
		defer envelope.Zero(key)
		ad := envelope.AssociatedData{Tenant: f.tenant, MessageID: id, Part: "reply/" + replies[0].ID}
		plain, err := envelope.Open(key, ad, replies[0].Ciphertext)
		if err != nil || string(plain) != "Thanks! Can I call\ntomorrow?" {
			t.Errorf("reply opens to %q, %v; want the text without the control character", plain, err)
		}
		ad.Part = "body"
		if _, err := envelope.Open(key, ad, replies[0].Ciphertext); err == nil {
			t.Error("the reply's ciphertext also opens as the message body")
		}
		var replied []audit.Event
		for _, e := range f.allEvents() {
			if e.Kind == audit.KindReplied {
				replied = append(replied, e)
			}
		}
		if len(replied) != 1 || replied[0].MessageID != id || replied[0].Detail["reply"] != replies[0].ID ||
			strings.Contains(strings.Join(slices.Collect(maps.Values(replied[0].Detail)), " "), "Thanks") {
			t.Errorf("replied events %+v, want one naming the reply, without its text", replied)
		}

		for _, tc := range []struct{ name, typed, want string }{
			{"empty", " \r\n ", "Write your reply in the box"},
			{"too long", strings.Repeat("é", 41), "Your reply has 41 characters; it can have at most 40"},
		} {
			r := br.step(link, "reply", "reply", tc.typed)
			wantStatus(t, tc.name, r, http.StatusUnprocessableEntity)
			wantBody(t, tc.name, r, tc.want, `aria-invalid="true"`)
		}
		// What the patient typed comes back escaped, never as markup.
		r = br.step(link, "reply", "reply", "<b>"+strings.Repeat("x", 40)+"</b>")
		wantBody(t, "refused markup", r, "&lt;b&gt;")
		if replies, _ := f.Store.Replies(ctx, id); len(replies) != 1 {
			t.Errorf("%d replies stored after refused ones, want 1", len(replies))
		}

		for i := len(replies); i < MaxReplies; i++ {
			wantStatus(t, "reply up to the cap", br.step(link, "reply", "reply", "again"), http.StatusOK)
		}
		r = br.step(link, "reply", "reply", "one too many")
		wantStatus(t, "reply past the cap", r, http.StatusUnprocessableEntity)
		wantBody(t, "reply past the cap", r, "This message takes no more replies")
		wantNoBody(t, "reply past the cap", r, `name="reply"`)

		// Another recipient's session cannot reply, and a withdrawn message takes no reply.
		_, other := f.message(phoneB, "S", "other text")
		wantStatus(t, "reply to another recipient's message", br.step(other, "reply", "reply", "hi"), http.StatusUnauthorized)
		if err := f.Store.Transition(ctx, id, store.StatusRevoked, audit.Event{Kind: audit.KindRevoked, Actor: "ehr"}); err != nil {
			t.Fatal(err)
		}
		r = br.step(link, "reply", "reply", "still there?")
		wantStatus(t, "reply to a revoked message", r, http.StatusGone)
	})
}

// TestRepliesOff: without the policy the page has no reply form and a reply is refused.
func TestRepliesOff(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	id, link := f.message(phoneA, "S", "text")
	br := f.browser()
	wantNoBody(t, "message page", br.setFirstPassword(link, goodPassword), `name="reply"`, "Your replies")
	wantStatus(t, "reply", br.step(link, "reply", "reply", "hello"), http.StatusBadRequest)
	if replies, err := f.Store.Replies(context.Background(), id); err != nil || len(replies) != 0 {
		t.Errorf("%d replies stored, %v; want none", len(replies), err)
	}
}
