package sealed

import (
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/store"
)

const (
	tenant    = "clinic-a"
	messageID = "01J9ZQ3V8K0000000000000000"
	replyID   = "01J9ZQ5000000000000000000"
	replyText = "Tuesday works for me."
	linkToken = "abcdefghjkmnpqrstvwxyz0123"
)

// fixedKey is the data key the stored vectors below were sealed with.
func fixedKey() []byte {
	key := make([]byte, envelope.KeySize)
	for i := range key {
		key[i] = byte(i)
	}
	return key
}

func fixedMessage() Message { return Message{Tenant: tenant, ID: messageID, Key: fixedKey()} }

var letter = content.Message{Subject: "Lab results", Text: "Your A1C is 5.4.",
	Attachments: []content.Attachment{{Name: "a1c.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7")}}}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Values as the gateway and the viewer stored them before this package sealed them: letter's
// parts, a reply and a link token under fixedKey. They must open for as long as such data is
// kept.
func TestOpensStoredValues(t *testing.T) {
	m := fixedMessage()
	got, err := m.OpenParts([]store.Part{
		{Name: "body", Ciphertext: unhex(t, "01966a00546e3c877da64773ec1a2125c322d3c5ab41fd567e82a677a8c1ee3651666dd740b688d070a792a2e59241a514bac8e3b53554035f8727d76b731ba3b182eb8c07f483fde9f4fbe6eab7bb29")},
		{Name: "attachment/0", Ciphertext: unhex(t, "01f68d2f4e05bf24d83e7bea89c6a55aad59d1efb4733f0c5076380a398a9097ef181b4067dad4481208858d2527802d2fbcc285860cb943b2d40262793daabcc7ed122f3f0f6f9c6b8393624d6845bf821fee9169a6d899a7fd6596")},
	})
	if err != nil || !reflect.DeepEqual(got, letter) {
		t.Errorf("stored parts open to %+v, %v; want %+v", got, err, letter)
	}
	texts, err := m.OpenReplies([]store.Reply{{ID: replyID, MessageID: messageID,
		Ciphertext: unhex(t, "0118d9adcea258c4690164f91b2cfe7c377b8fa804b833974d262e80f4fc8e4a0ca983c7d2d78752b673e716ebcd3ec46e9a")}})
	if err != nil || len(texts) != 1 || texts[0] != replyText {
		t.Errorf("stored reply opens to %q, %v; want %q", texts, err, replyText)
	}
	link, err := m.OpenLink(unhex(t, "01b83419753e586cbc14b7623de7d60ca10387ee09992151dd65bfc81b169210359bacbde56db072ba36759756423e874f257476a16531"))
	if err != nil || link != linkToken {
		t.Errorf("stored link opens to %q, %v; want %q", link, err, linkToken)
	}
}

// The associated data layout, written out: each value is an envelope bound to the tenant, the
// message id and its part name. Sealed inline this way, it opens with Message; sealed with
// Message, it opens this way.
func TestAssociatedDataLayout(t *testing.T) {
	m := fixedMessage()
	ad := func(part string) envelope.AssociatedData {
		return envelope.AssociatedData{Tenant: tenant, MessageID: messageID, Part: part}
	}
	seal := func(part, plaintext string) []byte {
		t.Helper()
		b, err := envelope.Seal(m.Key, ad(part), []byte(plaintext))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	open := func(part string, sealed []byte) string {
		t.Helper()
		b, err := envelope.Open(m.Key, ad(part), sealed)
		if err != nil {
			t.Fatalf("open %s: %v", part, err)
		}
		return string(b)
	}

	plain, err := letter.Parts()
	if err != nil {
		t.Fatal(err)
	}
	var inline []store.Part
	for _, p := range plain {
		inline = append(inline, store.Part{Name: p.Name, Ciphertext: seal(p.Name, string(p.Plaintext))})
	}
	if got, err := m.OpenParts(inline); err != nil || !reflect.DeepEqual(got, letter) {
		t.Errorf("parts sealed inline open to %+v, %v", got, err)
	}
	parts, err := m.SealParts(plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != len(plain) {
		t.Fatalf("sealed %d parts of %d", len(parts), len(plain))
	}
	for i, p := range parts {
		if p.Name != plain[i].Name || open(p.Name, p.Ciphertext) != string(plain[i].Plaintext) {
			t.Errorf("part %d (%s) does not open as %s", i, p.Name, plain[i].Name)
		}
	}

	if texts, err := m.OpenReplies([]store.Reply{{ID: replyID, Ciphertext: seal("reply/"+replyID, replyText)}}); err != nil || texts[0] != replyText {
		t.Errorf("reply sealed inline opens to %q, %v", texts, err)
	}
	reply, err := m.SealReply(replyID, replyText)
	if err != nil {
		t.Fatal(err)
	}
	if got := open("reply/"+replyID, reply); got != replyText {
		t.Errorf("sealed reply opens inline to %q", got)
	}

	if got, err := m.OpenLink(seal("notify-link", linkToken)); err != nil || got != linkToken {
		t.Errorf("link sealed inline opens to %q, %v", got, err)
	}
	payload, err := m.SealLink(linkToken)
	if err != nil {
		t.Fatal(err)
	}
	if got := open("notify-link", payload); got != linkToken {
		t.Errorf("sealed link opens inline to %q", got)
	}
}

// A sealed value opens only as what, and where, it was sealed.
func TestValuesAreBound(t *testing.T) {
	m := fixedMessage()
	plain, err := letter.Parts()
	if err != nil {
		t.Fatal(err)
	}
	parts, err := m.SealParts(plain)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := m.SealReply(replyID, replyText)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := m.SealLink(linkToken)
	if err != nil {
		t.Fatal(err)
	}
	other := func(change func(*Message)) Message {
		o := fixedMessage()
		change(&o)
		return o
	}
	otherTenant := other(func(o *Message) { o.Tenant = "clinic-b" })
	otherMessage := other(func(o *Message) { o.ID = "01J9ZQ3V8K0000000000000001" })
	otherKey := other(func(o *Message) { o.Key[0] ^= 1 })

	tests := []struct {
		name string
		open func() error
	}{
		{"parts of another tenant", func() error { _, err := otherTenant.OpenParts(parts); return err }},
		{"parts of another message", func() error { _, err := otherMessage.OpenParts(parts); return err }},
		{"parts under another key", func() error { _, err := otherKey.OpenParts(parts); return err }},
		{"parts renamed", func() error {
			_, err := m.OpenParts([]store.Part{{Name: "body", Ciphertext: parts[1].Ciphertext}, {Name: "attachment/0", Ciphertext: parts[0].Ciphertext}})
			return err
		}},
		{"reply as the body", func() error { _, err := m.OpenParts([]store.Part{{Name: "body", Ciphertext: reply}}); return err }},
		{"reply under another id", func() error {
			_, err := m.OpenReplies([]store.Reply{{ID: "01J9ZQ5000000000000000001", Ciphertext: reply}})
			return err
		}},
		{"reply of another tenant", func() error {
			_, err := otherTenant.OpenReplies([]store.Reply{{ID: replyID, Ciphertext: reply}})
			return err
		}},
		{"link as a reply", func() error { _, err := m.OpenReplies([]store.Reply{{ID: replyID, Ciphertext: payload}}); return err }},
		{"reply as the link", func() error { _, err := m.OpenLink(reply); return err }},
		{"link of another tenant", func() error { _, err := otherTenant.OpenLink(payload); return err }},
		{"link of another message", func() error { _, err := otherMessage.OpenLink(payload); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.open(); !errors.Is(err, envelope.ErrDecrypt) {
				t.Fatalf("err = %v, want envelope.ErrDecrypt", err)
			}
		})
	}
}

func TestOpenPartsMalformed(t *testing.T) {
	m := fixedMessage()
	parts, err := m.SealParts([]content.Part{{Name: "body", Plaintext: []byte("not json")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.OpenParts(parts); !errors.Is(err, content.ErrMalformed) {
		t.Fatalf("err = %v, want content.ErrMalformed", err)
	}
}

func TestNoReplies(t *testing.T) {
	texts, err := fixedMessage().OpenReplies(nil)
	if err != nil || len(texts) != 0 {
		t.Fatalf("no replies open to %q, %v", texts, err)
	}
}

func TestBadKey(t *testing.T) {
	m := Message{Tenant: tenant, ID: messageID, Key: make([]byte, 16)}
	if _, err := m.SealParts([]content.Part{{Name: "body"}}); !errors.Is(err, envelope.ErrKeySize) {
		t.Errorf("SealParts: err = %v, want envelope.ErrKeySize", err)
	}
	if _, err := m.SealReply(replyID, replyText); !errors.Is(err, envelope.ErrKeySize) {
		t.Errorf("SealReply: err = %v, want envelope.ErrKeySize", err)
	}
	if _, err := m.SealLink(linkToken); !errors.Is(err, envelope.ErrKeySize) {
		t.Errorf("SealLink: err = %v, want envelope.ErrKeySize", err)
	}
}
