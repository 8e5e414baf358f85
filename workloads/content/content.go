// Package content is the plaintext form of a message's parts: what the gateway seals part by
// part with the message's data key (package sealed) and what the viewer opens and shows.
//
// A message has a "body" part (subject and text) and one "attachment/N" part per attachment
// (file name, media type and bytes). File names and subjects can hold PHI, so they live
// inside the sealed parts, never in store columns, logs or audit events.
package content

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Message is what a sender wrote. It exists only in memory, between intake and sealing, and
// between opening and rendering.
type Message struct {
	Subject     string
	Text        string
	Attachments []Attachment
}

// Attachment is one file of a message.
type Attachment struct {
	Name        string // the file name the sender gave, possibly empty
	ContentType string // a media type such as application/pdf
	Data        []byte
}

// Part is one plaintext part, named as the store names it.
type Part struct {
	Name      string
	Plaintext []byte
}

// BodyPart names the part holding the subject and text.
const BodyPart = "body"

// AttachmentPart names the part of attachment i.
func AttachmentPart(i int) string { return "attachment/" + strconv.Itoa(i) }

// Size is the plaintext size of m, for size limits.
func (m Message) Size() int {
	n := len(m.Subject) + len(m.Text)
	for _, a := range m.Attachments {
		n += len(a.Name) + len(a.ContentType) + len(a.Data)
	}
	return n
}

type bodyJSON struct {
	Subject string `json:"subject,omitempty"`
	Text    string `json:"text"`
}

type attachmentHeader struct {
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type"`
}

// Parts encodes m: the body as JSON, each attachment as a 4-byte big-endian header length, a
// JSON header and the file's bytes (no base64, so large files do not grow).
func (m Message) Parts() ([]Part, error) {
	body, err := json.Marshal(bodyJSON{Subject: m.Subject, Text: m.Text})
	if err != nil {
		return nil, fmt.Errorf("encode message body: %w", err)
	}
	parts := make([]Part, 0, 1+len(m.Attachments))
	parts = append(parts, Part{Name: BodyPart, Plaintext: body})
	for i, a := range m.Attachments {
		h, err := json.Marshal(attachmentHeader{Name: a.Name, ContentType: a.ContentType})
		if err != nil {
			return nil, fmt.Errorf("encode attachment %d: %w", i, err)
		}
		b := make([]byte, 4, 4+len(h)+len(a.Data))
		binary.BigEndian.PutUint32(b, uint32(len(h)))
		b = append(append(b, h...), a.Data...)
		parts = append(parts, Part{Name: AttachmentPart(i), Plaintext: b})
	}
	return parts, nil
}

// ErrMalformed means a part does not decode; for a part that opened (it authenticated) this
// is a bug or a format from a newer version.
var ErrMalformed = errors.New("content: malformed part")

// Decode rebuilds a message from its parts, in any order.
func Decode(parts []Part) (Message, error) {
	var m Message
	var haveBody bool
	atts := map[int]Attachment{}
	for _, p := range parts {
		switch {
		case p.Name == BodyPart:
			var b bodyJSON
			if err := json.Unmarshal(p.Plaintext, &b); err != nil {
				return Message{}, fmt.Errorf("%w: body: %v", ErrMalformed, err)
			}
			m.Subject, m.Text, haveBody = b.Subject, b.Text, true
		case strings.HasPrefix(p.Name, "attachment/"):
			i, err := strconv.Atoi(strings.TrimPrefix(p.Name, "attachment/"))
			if err != nil || i < 0 || i >= len(parts) {
				return Message{}, fmt.Errorf("%w: unexpected part name %q", ErrMalformed, p.Name)
			}
			a, err := decodeAttachment(p.Plaintext)
			if err != nil {
				return Message{}, fmt.Errorf("%w: %s: %v", ErrMalformed, p.Name, err)
			}
			atts[i] = a
		default:
			return Message{}, fmt.Errorf("%w: unexpected part name %q", ErrMalformed, p.Name)
		}
	}
	if !haveBody {
		return Message{}, fmt.Errorf("%w: no body part", ErrMalformed)
	}
	for i := range len(atts) {
		a, ok := atts[i]
		if !ok {
			return Message{}, fmt.Errorf("%w: attachment %d is missing", ErrMalformed, i)
		}
		m.Attachments = append(m.Attachments, a)
	}
	return m, nil
}

func decodeAttachment(b []byte) (Attachment, error) {
	if len(b) < 4 {
		return Attachment{}, errors.New("too short")
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return Attachment{}, errors.New("header length exceeds the part")
	}
	var h attachmentHeader
	if err := json.Unmarshal(b[4:4+n], &h); err != nil {
		return Attachment{}, err
	}
	return Attachment{Name: h.Name, ContentType: h.ContentType, Data: b[4+n:]}, nil
}
