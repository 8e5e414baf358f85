// Package sms sends the text that tells a patient a secure message is waiting, and receives the
// provider's callbacks (delivery status and replies such as STOP).
//
// The text only ever holds a link: [Compose] builds it from the tenant's name and the link, and
// guarantees it fits one GSM-7 segment with "Reply STOP to opt out". Message content never
// reaches a provider.
//
// Providers ([NewTwilio], [NewWebhook], [NewConsole], or [New] from configuration) guarantee that:
//
//   - every failed Send returns a [*SendError] that matches exactly one of [ErrTemporary] and
//     [ErrPermanent] with errors.Is; [ErrOptedOut] implies ErrPermanent and [ErrAmbiguous]
//     (the request may have reached the provider) implies ErrTemporary. Wrong credentials and
//     configuration are temporary, so a misconfiguration never fails patients' texts for good.
//   - errors never contain the phone number, the text, or the provider's free-form message; a
//     [SendError.Code] is short and matches [CodePattern], fit to store.
//   - a callback handler calls [Events] only for requests whose signature it verified, answers
//     403 to anything else, and answers 2xx only after Events returned nil (503 otherwise, so
//     the provider retries). Request bodies are size-limited.
//
// Phone numbers are HIPAA identifiers: this package logs none (see phone.Mask for display).
package sms

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// Message is one text to send.
type Message struct {
	To        string // E.164
	Body      string // the complete text, already composed (see Compose)
	Reference string // SecureText's message id; providers may echo it back
}

// Sent is a provider's receipt for an accepted text.
type Sent struct {
	ProviderID string // e.g. Twilio's message SID; status callbacks refer to it
}

// Provider sends texts. Implementations are safe for concurrent use.
type Provider interface {
	Send(ctx context.Context, m Message) (Sent, error)
}

// Finder is implemented by providers that can look up an earlier send. After an error matching
// [ErrAmbiguous] the text may have been accepted; call Find before sending again so the patient
// does not get it twice. since is when the first attempt started. A miss is not proof that
// nothing was sent (see the provider's documentation for how far it looks).
type Finder interface {
	Find(ctx context.Context, m Message, since time.Time) (Sent, bool, error)
}

// Errors of Send, for errors.Is. A [*SendError] carries the details.
var (
	// ErrTemporary: try again later with backoff (network, timeouts, rate limits, provider
	// outages, and wrong credentials or settings, which an operator has to fix).
	ErrTemporary = errors.New("temporary SMS failure")
	// ErrPermanent: this text cannot be sent (e.g. the number cannot receive texts).
	ErrPermanent = errors.New("permanent SMS failure")
	// ErrOptedOut: the recipient replied STOP to this sender. It also matches ErrPermanent.
	ErrOptedOut = errors.New("recipient opted out of texts")
	// ErrAmbiguous: the request was sent but no usable answer came back, so the provider may
	// have accepted the text. It also matches ErrTemporary; use [Finder] before resending.
	ErrAmbiguous = errors.New("SMS outcome unknown")
)

// CodePattern is what every [SendError.Code] and [StatusUpdate.ErrorCode] matches.
var CodePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// SendError is why a provider did not accept a text.
type SendError struct {
	// Provider is "twilio", "webhook" or "console".
	Provider string
	// Code is short and matches CodePattern: a provider's code with its name
	// ("twilio:21610", "webhook:opted_out"), "twilio:http-503", or one of this package's own:
	// "timeout", "canceled", "network", "bad_response", "invalid_message".
	Code string
	// HTTPStatus is the provider's answer, 0 when there was none.
	HTTPStatus int
	// Temporary means try again later (see ErrTemporary).
	Temporary bool
	// Ambiguous means the provider may have accepted the text (see ErrAmbiguous).
	Ambiguous bool
	// OptedOut means the recipient opted out (see ErrOptedOut).
	OptedOut bool
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Detail is what happened and what to do, in this package's words: never the number, the
	// text or the provider's free-form message.
	Detail string

	cause error // only context errors, whose text holds nothing private
}

func (e *SendError) Error() string {
	return fmt.Sprintf("sms %s: %s (code %s)", e.Provider, e.Detail, e.Code)
}

// Is matches the sentinel errors of this package.
func (e *SendError) Is(target error) bool {
	temporary := e.Temporary || e.Ambiguous
	switch target {
	case ErrTemporary:
		return temporary
	case ErrPermanent:
		return !temporary
	case ErrOptedOut:
		return e.OptedOut && !temporary
	case ErrAmbiguous:
		return e.Ambiguous
	}
	return false
}

// Unwrap returns the context error that ended the attempt, if any.
func (e *SendError) Unwrap() error { return e.cause }

// e164 is the shape of an E.164 number; phone.Normalize does the real validation upstream.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// maxBody is Twilio's limit on a text body; a composed notification is far shorter.
const maxBody = 1600

// checkMessage refuses what no provider could send, before anything leaves the process.
func checkMessage(provider string, m Message) error {
	bad := func(detail string) error {
		return &SendError{Provider: provider, Code: "invalid_message", Detail: detail}
	}
	switch {
	case !e164.MatchString(m.To):
		return bad("the To number is not in E.164 form (+ and the country code)")
	case strings.TrimSpace(m.Body) == "":
		return bad("the text is empty")
	case len([]rune(m.Body)) > maxBody:
		return bad(fmt.Sprintf("the text is longer than %d characters", maxBody))
	}
	return nil
}

// DeliveryStatus is what a provider reported about a text it accepted.
type DeliveryStatus string

// Delivery statuses, in the order they usually happen.
const (
	StatusSent        DeliveryStatus = "sent"        // handed to the carrier
	StatusDelivered   DeliveryStatus = "delivered"   // the handset confirmed it
	StatusUndelivered DeliveryStatus = "undelivered" // the carrier gave up
	StatusFailed      DeliveryStatus = "failed"      // the provider could not send it
)

// StatusUpdate is a delivery status callback.
type StatusUpdate struct {
	ProviderID string
	Status     DeliveryStatus
	// ErrorCode is the provider's code for an undelivered or failed text, e.g. "twilio:30003";
	// it matches CodePattern, or is empty.
	ErrorCode string
}

// Keyword is what an inbound text asks for.
type Keyword string

// Keywords of inbound texts.
const (
	KeywordNone  Keyword = ""
	KeywordStop  Keyword = "STOP"
	KeywordStart Keyword = "START"
	KeywordHelp  Keyword = "HELP"
)

// Inbound is a text a recipient sent back. Its words are not kept beyond the keyword: patients
// sometimes reply with health details, which do not belong in a delivery log.
type Inbound struct {
	From       string // E.164
	Keyword    Keyword
	ProviderID string
}

// Events receives what providers report. Both methods must be idempotent: providers deliver
// callbacks at least once.
type Events interface {
	Status(ctx context.Context, u StatusUpdate) error
	// Inbound handles a reply and returns the text to answer with (e.g. help text), or "".
	Inbound(ctx context.Context, in Inbound) (reply string, err error)
}

// Opt-out and opt-in words that US carriers and providers honour (CTIA; Twilio's defaults).
var keywords = map[string]Keyword{
	"STOP": KeywordStop, "STOPALL": KeywordStop, "UNSUBSCRIBE": KeywordStop, "CANCEL": KeywordStop,
	"END": KeywordStop, "QUIT": KeywordStop, "REVOKE": KeywordStop, "OPTOUT": KeywordStop,
	"START": KeywordStart, "UNSTOP": KeywordStart, "YES": KeywordStart,
	"HELP": KeywordHelp, "INFO": KeywordHelp,
}

// ParseKeyword reads an inbound text. The whole text must be the keyword, in any case, with
// surrounding whitespace and punctuation ignored ("Stop.", " stop! ") and inner spaces dropped
// ("Stop all", "opt out"); anything else is KeywordNone.
func ParseKeyword(text string) Keyword {
	if len(text) > 64 {
		return KeywordNone
	}
	text = strings.TrimFunc(text, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsPunct(r) || unicode.IsSymbol(r)
	})
	word := strings.ToUpper(strings.Join(strings.Fields(text), ""))
	return keywords[word]
}

// sanitizeCode makes a provider's code safe to store: prefix:code when it is short and plain,
// otherwise prefix:unrecognized.
func sanitizeCode(prefix, code string) string {
	if code == "" {
		return ""
	}
	c := prefix + ":" + code
	if !CodePattern.MatchString(c) {
		return prefix + ":unrecognized"
	}
	return c
}
