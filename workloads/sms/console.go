package sms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/securetext/securetext/workloads/phone"
)

// Console is the provider for local demos: it writes each text to a writer instead of sending
// it, with the number masked (phone.Mask), because that writer is usually a pod's log. Safe
// for concurrent use.
type Console struct {
	mu          sync.Mutex
	w           io.Writer
	fullNumbers bool
}

var _ Provider = (*Console)(nil)

// NewConsole returns a Console that writes to w, masking the numbers.
func NewConsole(w io.Writer) *Console {
	return &Console{w: w}
}

// NewDevConsole returns a Console that writes to w with the whole number, for `securetext dev`:
// there the console is the phone, on the developer's own terminal, and the developer needs to
// see which number each text is for. Never use it where w is a log.
func NewDevConsole(w io.Writer) *Console {
	return &Console{w: w, fullNumbers: true}
}

// Send writes the text, framed so it is not mistaken for a log line:
//
//	SMS to +1********43 (console provider, nothing was sent):
//	  Clinic: You have a secure message. https://… Reply STOP to opt out
func (c *Console) Send(ctx context.Context, m Message) (Sent, error) {
	if err := checkMessage("console", m); err != nil {
		return Sent{}, err
	}
	if err := ctx.Err(); err != nil {
		return Sent{}, &SendError{Provider: "console", Code: "canceled", Temporary: true, Detail: "the attempt was canceled", cause: err}
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	var b strings.Builder
	to := phone.Mask(m.To)
	if c.fullNumbers {
		to = m.To // checkMessage made sure it is E.164: nothing else can reach the terminal
	}
	fmt.Fprintf(&b, "SMS to %s (console provider, nothing was sent):\n", to)
	for line := range strings.Lines(m.Body) {
		b.WriteString("  " + strings.TrimRight(line, "\r\n") + "\n")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.w, b.String()); err != nil {
		return Sent{}, &SendError{Provider: "console", Code: "console:write", Temporary: true, Detail: "could not write the text to the console"}
	}
	return Sent{ProviderID: "console-" + hex.EncodeToString(id[:])}, nil
}

// Handler answers 404: nothing calls back a console.
func (c *Console) Handler(Events) http.Handler {
	return http.NotFoundHandler()
}
