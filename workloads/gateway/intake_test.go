package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

func submission(to string) Submission {
	return Submission{
		Sender: "ehr", Channel: store.ChannelAPI, To: to,
		Content: content.Message{Subject: "Lab results", Text: "Your A1C is 5.4.",
			Attachments: []content.Attachment{{Name: "a1c.pdf", ContentType: "application/pdf", Data: []byte("%PDF")}}},
	}
}

func TestIntakeStoresEncrypted(t *testing.T) {
	for _, b := range []backend{postgresBackend, sqliteBackend} {
		t.Run(string(b), func(t *testing.T) {
			f := newFixture(t, b)
			ctx := context.Background()
			acc, err := f.Intake.Accept(ctx, submission("+12025550143"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := f.Store.Message(ctx, acc.MessageID)
			if err != nil {
				t.Fatal(err)
			}
			if m.Status != store.StatusAccepted || m.Channel != store.ChannelAPI || !m.ExpiresAt.Equal(acc.ExpiresAt.UTC().Truncate(time.Microsecond)) {
				t.Fatalf("stored %+v, accepted %+v", m, acc)
			}
			if d := time.Until(m.ExpiresAt); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour {
				t.Errorf("default expiry %v, want 7 days", d)
			}
			parts, err := f.Store.MessageParts(ctx, acc.MessageID)
			if err != nil {
				t.Fatal(err)
			}
			key, err := f.Keys.Unwrap(ctx, m.WrappedKey)
			if err != nil {
				t.Fatal(err)
			}
			var plain []content.Part
			for _, p := range parts {
				pt, err := envelope.Open(key, envelope.AssociatedData{Tenant: testTenant, MessageID: acc.MessageID, Part: p.Name}, p.Ciphertext)
				if err != nil {
					t.Fatalf("open %s: %v", p.Name, err)
				}
				plain = append(plain, content.Part{Name: p.Name, Plaintext: pt})
			}
			got, err := content.Decode(plain)
			if err != nil || got.Subject != "Lab results" || got.Text != "Your A1C is 5.4." || len(got.Attachments) != 1 ||
				got.Attachments[0].Name != "a1c.pdf" {
				t.Fatalf("decoded %+v, %v", got, err)
			}
			// The outbox carries the link token sealed under the message's key; its hash is the
			// stored one.
			entries, err := f.Store.ClaimOutbox(ctx, time.Now(), 10, time.Minute)
			if err != nil || len(entries) != 1 {
				t.Fatalf("claim: %v, %v", entries, err)
			}
			link, err := sealed.Message{Tenant: testTenant, ID: acc.MessageID, Key: key}.OpenLink(entries[0].Payload)
			if err != nil {
				t.Fatal(err)
			}
			if token.Hash(link) != m.LinkTokenHash || len(link) != 26 {
				t.Fatalf("link token %q does not hash to the stored hash", link)
			}
			if _, err := (sealed.Message{Tenant: "other-tenant", ID: acc.MessageID, Key: key}).OpenLink(entries[0].Payload); !errors.Is(err, envelope.ErrDecrypt) {
				t.Fatalf("link opened under another tenant: %v", err)
			}
		})
	}
}

func TestIntakeRefusals(t *testing.T) {
	f := newFixture(t, sqliteBackend)
	ctx := context.Background()
	if _, err := f.Store.SetOptOut(ctx, "+12025550144", true); err != nil {
		t.Fatal(err)
	}
	s := submission("+12025550144")
	_, err := f.Intake.Accept(ctx, s)
	if Reason(err) != ReasonOptedOut {
		t.Errorf("opted out: %v (reason %s)", err, Reason(err))
	}
	s = submission("+12025550145")
	s.ExpiresIn = 40 * 24 * time.Hour
	if _, err := f.Intake.Accept(ctx, s); Reason(err) != ReasonInvalid {
		t.Errorf("too long expiry: %v", err)
	}
	s.ExpiresIn = time.Second
	if _, err := f.Intake.Accept(ctx, s); Reason(err) != ReasonInvalid {
		t.Errorf("too short expiry: %v", err)
	}

	s = submission("+12025550145")
	s.IdempotencyKey, s.RequestHash = "k1", sha256.Sum256([]byte("request 1"))
	first, err := f.Intake.Accept(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Intake.Accept(ctx, s)
	if err != nil || !again.Replayed || again.MessageID != first.MessageID || !again.ExpiresAt.Equal(first.ExpiresAt.UTC().Truncate(time.Microsecond)) {
		t.Fatalf("replay: %+v, %v; first %+v", again, err, first)
	}
	s.RequestHash = sha256.Sum256([]byte("request 2"))
	if _, err := f.Intake.Accept(ctx, s); Reason(err) != ReasonIdempotencyConflict {
		t.Errorf("key reused for another request: %v", err)
	}
	if n := f.messageCount(); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

func TestIntakeOutagesAreTemporary(t *testing.T) {
	f := newFixture(t, postgresBackend)
	ctx := context.Background()

	f.KeystoreDown()
	_, err := f.Intake.Accept(ctx, submission("+12025550143"))
	if !Temporary(err) {
		t.Fatalf("keystore down: %v, want a temporary error", err)
	}
	f.KeystoreUp()

	restore := f.DatabaseDown()
	_, err = f.Intake.Accept(ctx, submission("+12025550143"))
	if !Temporary(err) {
		t.Fatalf("database down: %v, want a temporary error", err)
	}
	restore()
	if n := f.messageCount(); n != 0 {
		t.Fatalf("%d messages stored during outages, want 0", n)
	}
	if _, err := f.Intake.Accept(ctx, submission("+12025550143")); err != nil {
		t.Fatalf("after the outages: %v", err)
	}
}

// TestIntakeExpiryFollowsThePolicy: no link works longer than the tenant's retention policy's
// unreadLinkExpiry: the default expiry is cut to it, and a longer one asked for is refused
// with the policy named.
func TestIntakeExpiryFollowsThePolicy(t *testing.T) {
	in := &Intake{}
	policy := 72 * time.Hour
	in.PolicyLinkExpiry = func() time.Duration { return policy }
	for _, tc := range []struct {
		asked, want time.Duration
		refusal     string
	}{
		{0, 72 * time.Hour, ""},
		{24 * time.Hour, 24 * time.Hour, ""},
		{72 * time.Hour, 72 * time.Hour, ""},
		{96 * time.Hour, 0, "expiry must be at most 72h0m0s (the tenant's retention policy: unreadLinkExpiry)"},
	} {
		got, err := in.expiry(tc.asked)
		switch {
		case tc.refusal != "":
			if Reason(err) != ReasonInvalid || !strings.Contains(err.Error(), tc.refusal) {
				t.Errorf("asked %s: %v, want a refusal saying %q", tc.asked, err, tc.refusal)
			}
		case err != nil || got != tc.want:
			t.Errorf("asked %s: %s, %v; want %s", tc.asked, got, err, tc.want)
		}
	}
	// A policy longer than the gateway's own limits, or none, leaves those limits.
	policy = 90 * 24 * time.Hour
	if _, err := in.expiry(40 * 24 * time.Hour); Reason(err) != ReasonInvalid || strings.Contains(err.Error(), "retention policy") {
		t.Errorf("40 days under a 90-day policy: %v, want the gateway's own 30-day limit", err)
	}
	policy = 0
	if got, err := in.expiry(0); err != nil || got != defaultExpiry {
		t.Errorf("no policy: %s, %v; want the default %s", got, err, defaultExpiry)
	}
}
