package viewer

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/store"
)

// withKey unwraps the data key of message m with the keystore, runs use with the key bound to
// the message, and zeroes the key afterwards.
func (v *Viewer) withKey(ctx context.Context, m store.Message, use func(sm sealed.Message) error) error {
	key, err := v.cfg.Keys.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		return fmt.Errorf("unwrap data key of message %s: %w", m.ID, err)
	}
	defer envelope.Zero(key)
	return use(sealed.Message{Tenant: v.cfg.Tenant, ID: m.ID, Key: key})
}

// openMessage opens l's message with its data key. The parts are those lookup read, or else
// read now.
func (v *Viewer) openMessage(ctx context.Context, l link, sm sealed.Message) (content.Message, error) {
	parts := l.parts
	if !l.partsRead {
		var err error
		if parts, err = v.cfg.Store.MessageParts(ctx, l.msg.ID); err != nil {
			return content.Message{}, err
		}
	}
	return sm.OpenParts(parts)
}

// openReplies opens the patient's replies to message sm with its data key, oldest first.
func (v *Viewer) openReplies(ctx context.Context, sm sealed.Message) ([]replyView, error) {
	replies, err := v.cfg.Store.Replies(ctx, sm.ID)
	if err != nil {
		return nil, err
	}
	texts, err := sm.OpenReplies(replies)
	if err != nil {
		return nil, err
	}
	views := make([]replyView, 0, len(replies))
	for i, rp := range replies {
		views = append(views, replyView{Text: texts[i], Sent: v.formatTime(rp.CreatedAt)})
	}
	return views, nil
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

// revealed is what a message page says besides the message: a notice, or why the reply the
// patient typed was refused.
type revealed struct {
	notice, replyError, typed string
}

// reveal shows l's message, and the recipient's replies when the tenant takes them, to a
// signed-in recipient.
func (v *Viewer) reveal(w http.ResponseWriter, r *http.Request, l link, recipientID string, say revealed) {
	ctx := r.Context()
	var (
		msg     content.Message
		replies []replyView
	)
	err := v.withKey(ctx, l.msg, func(sm sealed.Message) (err error) {
		if msg, err = v.openMessage(ctx, l, sm); err != nil || !v.cfg.Policy.Replies {
			return err
		}
		replies, err = v.openReplies(ctx, sm)
		return err
	})
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
		Replies: replies, Reply: say.typed,
	}
	if v.cfg.Policy.Replies && len(replies) < MaxReplies {
		view.ReplyMax = v.cfg.Policy.ReplyMaxLength
	}
	for i, a := range msg.Attachments {
		view.Attachments = append(view.Attachments, attachmentView{Index: i, Name: fileName(a.Name, i), Size: byteSize(len(a.Data))})
	}
	v.metrics.reveals.WithLabelValues("message").Inc()
	code := http.StatusOK
	if say.replyError != "" {
		code = http.StatusUnprocessableEntity
	}
	v.render(w, r, code, "message", "message", page{Title: "Secure message", Message: view, Notice: say.notice, Error: say.replyError})
}

// signedIn returns the request's session for l's message, or else answers with the login
// page: a step that needs the patient signed in (a download, a reply) comes from a message
// page whose session may have ended since.
func (v *Viewer) signedIn(w http.ResponseWriter, r *http.Request, l link) (session, bool) {
	s, ok := v.session(r.Context(), l)
	if !ok {
		v.loginPage(w, r, http.StatusUnauthorized, "", "Your session has ended. Enter your password to continue.")
	}
	return s, ok
}

// reply stores the signed-in recipient's answer to l's message, sealed under the message's
// data key, and shows the message again with the reply under it.
func (v *Viewer) reply(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	s, ok := v.signedIn(w, r, l)
	if !ok {
		return
	}
	if !v.cfg.Policy.Replies {
		v.status(w, r, http.StatusBadRequest, "bad-request", "Replies are not taken",
			v.brand.DisplayName+" does not take replies on this page. To answer, use the contact details below.")
		return
	}
	typed := r.PostFormValue("reply")
	text, problem := replyText(typed, v.cfg.Policy.ReplyMaxLength)
	if problem != "" {
		v.reveal(w, r, l, s.recipientID, revealed{replyError: problem, typed: typed})
		return
	}
	id := store.NewID()
	err := v.withKey(ctx, l.msg, func(sm sealed.Message) error {
		ciphertext, err := sm.SealReply(id, text)
		if err != nil {
			return err
		}
		return v.cfg.Store.AddReply(ctx, store.Reply{ID: id, MessageID: l.msg.ID, CreatedAt: v.now(), Ciphertext: ciphertext}, MaxReplies,
			audit.Event{Time: v.now(), Kind: audit.KindReplied, Actor: "patient", MessageID: l.msg.ID,
				Detail: map[string]string{"recipient": s.recipientID, "reply": id}})
	})
	switch {
	case errors.Is(err, store.ErrRateLimited):
		v.reveal(w, r, l, s.recipientID, revealed{
			replyError: "This message takes no more replies. To say more, contact " + v.brand.DisplayName + " using the details below."})
		return
	case err != nil:
		v.failed(w, r, l, "store reply", err)
		return
	}
	v.metrics.replies.Inc()
	v.reveal(w, r, l, s.recipientID, revealed{notice: "Your reply was sent to " + v.brand.DisplayName + "."})
}

// replyText is the reply a patient typed, with line ends made \n and other control
// characters removed, or why it cannot be sent.
func replyText(typed string, maxLength int) (string, string) {
	if !utf8.ValidString(typed) {
		return "", "Your reply could not be read. Please type it again."
	}
	text := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, strings.ReplaceAll(typed, "\r\n", "\n"))
	text = strings.TrimSpace(text)
	switch n := utf8.RuneCountInString(text); {
	case n == 0:
		return "", "Write your reply in the box before sending it."
	case n > maxLength:
		return "", fmt.Sprintf("Your reply has %d characters; it can have at most %d. Please shorten it.", n, maxLength)
	}
	return text, ""
}

// download sends attachment n of l's message to a signed-in recipient, as a file to save.
func (v *Viewer) download(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	s, ok := v.signedIn(w, r, l)
	if !ok {
		return
	}
	n, err := strconv.Atoi(r.PostFormValue("n"))
	if err != nil || n < 0 {
		v.notFound(w, r)
		return
	}
	var msg content.Message
	err = v.withKey(ctx, l.msg, func(sm sealed.Message) (err error) {
		msg, err = v.openMessage(ctx, l, sm)
		return err
	})
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
