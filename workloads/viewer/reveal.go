package viewer

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/store"
)

// openMessage decrypts l's message: its data key is unwrapped by the keystore, each part
// opened with the tenant, message id and part name as associated data, and the key zeroed
// after use. The parts are those lookup read, or else read now.
func (v *Viewer) openMessage(ctx context.Context, l link) (content.Message, error) {
	m, parts := l.msg, l.parts
	if !l.partsRead {
		var err error
		if parts, err = v.cfg.Store.MessageParts(ctx, m.ID); err != nil {
			return content.Message{}, err
		}
	}
	key, err := v.cfg.Keys.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		return content.Message{}, fmt.Errorf("unwrap data key of message %s: %w", m.ID, err)
	}
	defer envelope.Zero(key)
	plain := make([]content.Part, 0, len(parts))
	for _, p := range parts {
		b, err := envelope.Open(key, envelope.AssociatedData{Tenant: v.cfg.Tenant, MessageID: m.ID, Part: p.Name}, p.Ciphertext)
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

// markRevealed audits that part of l's message is shown to recipientID, before it is shown:
// the first time, the message moves to opened (if it was not) and then to read; later, the
// event alone is appended. A message that became final meanwhile is ErrConflict.
func (v *Viewer) markRevealed(ctx context.Context, l *link, recipientID, part string) error {
	if err := v.markOpened(ctx, l); err != nil {
		return err
	}
	ev := audit.Event{Time: v.now(), Kind: audit.KindRevealed, Actor: "patient", MessageID: l.msg.ID,
		Detail: map[string]string{"recipient": recipientID, "part": part}}
	if l.msg.Status != store.StatusRead {
		if err := v.cfg.Store.Transition(ctx, l.msg.ID, store.StatusRead, ev); err != nil {
			return err
		}
		l.msg.Status = store.StatusRead
		return nil
	}
	return v.cfg.Store.AppendAudit(ctx, ev)
}

// reveal shows l's message to a signed-in recipient.
func (v *Viewer) reveal(w http.ResponseWriter, r *http.Request, l link, recipientID string) {
	ctx := r.Context()
	msg, err := v.openMessage(ctx, l)
	if err != nil {
		v.failed(w, r, l, "open message", err)
		return
	}
	if err := v.markRevealed(ctx, &l, recipientID, content.BodyPart); err != nil {
		v.failed(w, r, l, "record reveal", err)
		return
	}
	view := &messageView{
		Subject: msg.Subject, Text: msg.Text,
		Sent: v.formatTime(l.msg.CreatedAt), Until: v.formatTime(l.msg.ExpiresAt),
	}
	for i, a := range msg.Attachments {
		view.Attachments = append(view.Attachments, attachmentView{Index: i, Name: fileName(a.Name, i), Size: byteSize(len(a.Data))})
	}
	v.metrics.reveals.WithLabelValues("message").Inc()
	title := "Secure message"
	v.render(w, r, http.StatusOK, "message", "message", page{Title: title, Message: view})
}

// download sends attachment n of l's message to a signed-in recipient, as a file to save.
func (v *Viewer) download(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	s, ok := v.session(ctx, l)
	if !ok {
		v.loginPage(w, r, http.StatusUnauthorized, "", "Your session has ended. Enter your password to continue.")
		return
	}
	n, err := strconv.Atoi(r.PostFormValue("n"))
	if err != nil || n < 0 {
		v.notFound(w, r)
		return
	}
	msg, err := v.openMessage(ctx, l)
	if err != nil {
		v.failed(w, r, l, "open message", err)
		return
	}
	if n >= len(msg.Attachments) {
		v.notFound(w, r)
		return
	}
	a := msg.Attachments[n]
	if err := v.markRevealed(ctx, &l, s.recipientID, content.AttachmentPart(n)); err != nil {
		v.failed(w, r, l, "record download", err)
		return
	}
	v.metrics.reveals.WithLabelValues("attachment").Inc()
	h := w.Header()
	downloadHeaders(h)
	h.Set("Content-Type", downloadType(a.ContentType))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fileName(a.Name, n)}))
	h.Set("Content-Length", strconv.Itoa(len(a.Data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.Data)
}

// downloadType is the media type a download is sent with: the sender's, unless it is one a
// browser might render as a document with scripts, or does not parse.
func downloadType(t string) string {
	mt, _, err := mime.ParseMediaType(t)
	if err != nil {
		return "application/octet-stream"
	}
	switch {
	case mt == "text/html", mt == "image/svg+xml", mt == "application/xhtml+xml",
		strings.HasSuffix(mt, "+xml"), strings.HasSuffix(mt, "/xml"), mt == "text/javascript",
		mt == "application/javascript", mt == "multipart/x-mixed-replace":
		return "application/octet-stream"
	}
	return mt
}

// fileName is a safe name to offer for attachment i: the sender's name without any path or
// control characters, or attachment-N.
func fileName(name string, i int) string {
	if j := strings.LastIndexAny(name, `/\`); j >= 0 {
		name = name[j+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '"' {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(strings.TrimLeft(name, "."))
	if name == "" {
		return "attachment-" + strconv.Itoa(i+1)
	}
	if len(name) > 200 {
		name = name[:200]
	}
	return name
}
