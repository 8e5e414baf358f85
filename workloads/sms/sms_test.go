package sms

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestParseKeyword(t *testing.T) {
	tests := []struct {
		text string
		want Keyword
	}{
		{"STOP", KeywordStop},
		{"stop", KeywordStop},
		{"Stop.", KeywordStop},
		{"  stop!  ", KeywordStop},
		{"STOP\n", KeywordStop},
		{"\"Stop\"", KeywordStop},
		{"StopAll", KeywordStop},
		{"stop all", KeywordStop},
		{"UNSUBSCRIBE", KeywordStop},
		{"Cancel", KeywordStop},
		{"end", KeywordStop},
		{"Quit.", KeywordStop},
		{"revoke", KeywordStop},
		{"OPTOUT", KeywordStop},
		{"opt out", KeywordStop},
		{"opt-out", KeywordNone}, // inner punctuation is not dropped
		{"START", KeywordStart},
		{"unstop", KeywordStart},
		{"Yes", KeywordStart},
		{"HELP", KeywordHelp},
		{"help?", KeywordHelp},
		{"info", KeywordHelp},
		{"", KeywordNone},
		{"   ", KeywordNone},
		{"please stop", KeywordNone},
		{"stop texting me about my appointment", KeywordNone},
		{"stopp", KeywordNone},
		{"STOP " + strings.Repeat(" ", 100), KeywordNone}, // too long to be a keyword
		{"I have a question", KeywordNone},
	}
	for _, tt := range tests {
		if got := ParseKeyword(tt.text); got != tt.want {
			t.Errorf("ParseKeyword(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestSendErrorIs(t *testing.T) {
	tests := []struct {
		name                                      string
		err                                       *SendError
		temporary, permanent, optedOut, ambiguous bool
	}{
		{"permanent", &SendError{}, false, true, false, false},
		{"temporary", &SendError{Temporary: true}, true, false, false, false},
		{"opted out", &SendError{OptedOut: true}, false, true, true, false},
		{"ambiguous", &SendError{Ambiguous: true}, true, false, false, true},
		{"ambiguous and temporary", &SendError{Temporary: true, Ambiguous: true}, true, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error = tt.err
			for _, c := range []struct {
				target error
				want   bool
			}{{ErrTemporary, tt.temporary}, {ErrPermanent, tt.permanent}, {ErrOptedOut, tt.optedOut}, {ErrAmbiguous, tt.ambiguous}} {
				if got := errors.Is(err, c.target); got != c.want {
					t.Errorf("errors.Is(%v) = %v, want %v", c.target, got, c.want)
				}
			}
		})
	}
	canceled := &SendError{Temporary: true, cause: context.Canceled}
	if !errors.Is(canceled, context.Canceled) {
		t.Error("a canceled attempt does not match context.Canceled")
	}
}

func TestSanitizeCode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"30003", "twilio:30003"},
		{"invalid_number", "twilio:invalid_number"},
		{"has space", "twilio:unrecognized"},
		{"+12025550143 bad", "twilio:unrecognized"},
		{strings.Repeat("x", 60), "twilio:unrecognized"},
	}
	for _, tt := range tests {
		got := sanitizeCode("twilio", tt.in)
		if got != tt.want {
			t.Errorf("sanitizeCode(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got != "" && !CodePattern.MatchString(got) {
			t.Errorf("sanitizeCode(%q) = %q does not match CodePattern", tt.in, got)
		}
	}
}

func TestCheckMessage(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		ok   bool
	}{
		{"valid", Message{To: "+12025550143", Body: "hi"}, true},
		{"no plus", Message{To: "12025550143", Body: "hi"}, false},
		{"letters", Message{To: "+1202555014x", Body: "hi"}, false},
		{"empty body", Message{To: "+12025550143", Body: "  "}, false},
		{"long body", Message{To: "+12025550143", Body: strings.Repeat("a", 1601)}, false},
	}
	for _, tt := range tests {
		err := checkMessage("test", tt.m)
		if (err == nil) != tt.ok {
			t.Errorf("%s: checkMessage = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrPermanent) || strings.Contains(err.Error(), "2025550143")) {
			t.Errorf("%s: error %q must be permanent and not hold the number", tt.name, err)
		}
	}
}

// recorder is an Events that remembers what it was told.
type recorder struct {
	mu       sync.Mutex
	statuses []StatusUpdate
	inbound  []Inbound
	reply    string
	err      error
}

func (r *recorder) Status(_ context.Context, u StatusUpdate) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.statuses = append(r.statuses, u)
	return nil
}

func (r *recorder) Inbound(_ context.Context, in Inbound) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", r.err
	}
	r.inbound = append(r.inbound, in)
	return r.reply, nil
}

func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.statuses) + len(r.inbound)
}

// checkSendError checks what every provider promises about its errors.
func checkSendError(t *testing.T, err error, m Message) *SendError {
	t.Helper()
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is %T, want *SendError", err, err)
	}
	if !CodePattern.MatchString(se.Code) {
		t.Errorf("Code %q does not match CodePattern", se.Code)
	}
	if errors.Is(err, ErrTemporary) == errors.Is(err, ErrPermanent) {
		t.Errorf("error %v must be exactly one of temporary and permanent", err)
	}
	text := err.Error()
	if digits := strings.TrimPrefix(m.To, "+"); digits != "" && strings.Contains(text, digits[len(digits)-7:]) {
		t.Errorf("error %q holds the phone number", text)
	}
	if m.Body != "" && strings.Contains(text, m.Body) {
		t.Errorf("error %q holds the text", text)
	}
	return se
}
