package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// The REST API answers every error with an RFC 9457 problem document. Its type is
// problemTypeBase followed by a reason code: the intake's Reason constants, and these codes
// that only the API uses.
const (
	problemTypeBase = "https://securetext.io/problems/"

	reasonMalformed        = "malformed-request"      // 400: the request cannot be read
	reasonForbidden        = "forbidden"              // 403: the key's scope does not cover the request
	reasonNotFound         = "not-found"              // 404
	reasonMethodNotAllowed = "method-not-allowed"     // 405
	reasonFinal            = "message-final"          // 409: the message's status is final
	reasonUnsupportedType  = "unsupported-media-type" // 415
)

// problemTitles are the short, fixed summaries of each problem type (RFC 9457 §3.1.3).
var problemTitles = map[string]string{
	reasonMalformed:           "Malformed request",
	ReasonUnauthenticated:     "Authentication required",
	reasonForbidden:           "Not allowed with this key",
	reasonNotFound:            "Not found",
	reasonMethodNotAllowed:    "Method not allowed",
	reasonFinal:               "Message can no longer change",
	ReasonTooLarge:            "Request too large",
	reasonUnsupportedType:     "Unsupported media type",
	ReasonInvalid:             "Invalid message",
	ReasonInvalidRecipient:    "Invalid recipient",
	ReasonOptedOut:            "Recipient opted out",
	ReasonIdempotencyConflict: "Idempotency key reused",
	ReasonUnavailable:         "Temporarily unavailable",
	ReasonInternal:            "Internal error",
}

// problem is an RFC 9457 problem document. Detail says what to do next; neither it nor
// Errors ever holds a phone number or message content.
type problem struct {
	Type   string         `json:"type"`
	Title  string         `json:"title"`
	Status int            `json:"status"`
	Detail string         `json:"detail"`
	Errors []fieldProblem `json:"errors,omitempty"`

	reason string // the reason code, for logs and metrics
}

// fieldProblem names one request field at fault: a JSON member ("to",
// "attachments[0].content_type"), a header ("Idempotency-Key"), or the request body as a whole
// ("request body"). Offset is, for a body that is not valid JSON, the byte (from 0) where
// reading stopped.
type fieldProblem struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
	Offset *int64 `json:"offset,omitempty"`
}

func newProblem(status int, reason, detail string, fields ...fieldProblem) *problem {
	title, ok := problemTitles[reason]
	if !ok {
		title = http.StatusText(status)
	}
	return &problem{
		Type: problemTypeBase + reason, Title: title, Status: status, Detail: detail,
		Errors: fields, reason: reason,
	}
}

// Error makes a problem usable as an error inside the API; Detail is safe to show the sender.
func (p *problem) Error() string { return p.Detail }

// refusal is p as the intake's error type, for Metrics.Observe.
func (p *problem) refusal() error {
	field := ""
	if len(p.Errors) > 0 {
		field = p.Errors[0].Field
	}
	return &RefusedError{Reason: p.reason, Field: field, Detail: p.Detail}
}

// writeProblem sends p as application/problem+json.
func writeProblem(w http.ResponseWriter, p *problem) {
	body, err := json.Marshal(p)
	if err != nil { // cannot happen: strings and an int
		http.Error(w, p.Detail, p.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// setSecurityHeaders is the one place that sets the headers every API response carries: no
// cache may keep an answer (they name messages and their statuses), no browser may sniff a
// type, render, frame or refer from it.
func setSecurityHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
}
