// Package sealed keeps what a message stores under its data key: its content parts, the
// patient's replies and the link token on its way to the notifier. Message is the one place
// that seals and opens them, names them, and lays out their associated data.
//
// Each value is an envelope (package envelope) bound to the tenant, the message id and a part
// name, so a ciphertext copied to another tenant, message or part does not open:
//
//	body, attachment/N   the content parts, as package content encodes and names them
//	reply/<reply id>     a patient's reply (store.Reply), which cannot pass for the body or
//	                     for another reply
//	notify-link          the link token in the message's outbox row (store.AcceptRequest's
//	                     NotifyPayload), kept there until the notification is sent
//
// These names and the layout are part of the stored data: changing either makes every stored
// message unreadable.
package sealed

import (
	"fmt"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/store"
)

// linkPart names the sealed link token.
const linkPart = "notify-link"

// replyPart names the sealed text of reply id.
func replyPart(id string) string { return "reply/" + id }

// Message is a message's data key with the tenant and id the message belongs to. The key is
// the caller's: it zeroes it (envelope.Zero) when done.
type Message struct {
	Tenant string
	ID     string // the message id
	Key    []byte // the message's data key, envelope.KeySize bytes
}

func (m Message) seal(part string, plaintext []byte) ([]byte, error) {
	return envelope.Seal(m.Key, envelope.AssociatedData{Tenant: m.Tenant, MessageID: m.ID, Part: part}, plaintext)
}

func (m Message) open(part string, sealed []byte) ([]byte, error) {
	return envelope.Open(m.Key, envelope.AssociatedData{Tenant: m.Tenant, MessageID: m.ID, Part: part}, sealed)
}

// SealParts seals the content parts of the message (content.Message.Parts), each under its
// own name, in order.
func (m Message) SealParts(parts []content.Part) ([]store.Part, error) {
	out := make([]store.Part, 0, len(parts))
	for _, p := range parts {
		b, err := m.seal(p.Name, p.Plaintext)
		if err != nil {
			return nil, fmt.Errorf("seal part %s of message %s: %w", p.Name, m.ID, err)
		}
		out = append(out, store.Part{Name: p.Name, Ciphertext: b})
	}
	return out, nil
}

// OpenParts opens and decodes the message's stored parts. A part that does not authenticate
// is an error wrapping envelope.ErrDecrypt; parts that open but do not decode wrap
// content.ErrMalformed.
func (m Message) OpenParts(parts []store.Part) (content.Message, error) {
	plain := make([]content.Part, 0, len(parts))
	for _, p := range parts {
		b, err := m.open(p.Name, p.Ciphertext)
		if err != nil {
			return content.Message{}, fmt.Errorf("open message %s: %w", m.ID, err)
		}
		plain = append(plain, content.Part{Name: p.Name, Plaintext: b})
	}
	msg, err := content.Decode(plain)
	if err != nil {
		return content.Message{}, fmt.Errorf("decode message %s: %w", m.ID, err)
	}
	return msg, nil
}

// SealReply seals the text of reply id to the message, for store.Reply's Ciphertext.
func (m Message) SealReply(id, text string) ([]byte, error) {
	b, err := m.seal(replyPart(id), []byte(text))
	if err != nil {
		return nil, fmt.Errorf("seal reply %s to message %s: %w", id, m.ID, err)
	}
	return b, nil
}

// OpenReplies opens the message's stored replies: texts[i] is the text of replies[i].
func (m Message) OpenReplies(replies []store.Reply) (texts []string, err error) {
	texts = make([]string, 0, len(replies))
	for _, rp := range replies {
		b, err := m.open(replyPart(rp.ID), rp.Ciphertext)
		if err != nil {
			return nil, fmt.Errorf("open reply %s to message %s: %w", rp.ID, m.ID, err)
		}
		texts = append(texts, string(b))
	}
	return texts, nil
}

// SealLink seals the message's link token for its outbox row: the store keeps the token only
// as a hash, and the notifier needs the token itself to text it.
func (m Message) SealLink(link string) ([]byte, error) {
	b, err := m.seal(linkPart, []byte(link))
	if err != nil {
		return nil, fmt.Errorf("seal link of message %s: %w", m.ID, err)
	}
	return b, nil
}

// OpenLink returns the link token sealed in the message's outbox payload.
func (m Message) OpenLink(payload []byte) (string, error) {
	b, err := m.open(linkPart, payload)
	if err != nil {
		return "", fmt.Errorf("open link of message %s: %w", m.ID, err)
	}
	return string(b), nil
}
