package sms

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestConsoleSend(t *testing.T) {
	var out bytes.Buffer
	c := NewConsole(&out)
	sent, err := c.Send(context.Background(), Message{To: "+12025550143", Body: testBody, Reference: "msg-1"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	want := "SMS to +1********43 (console provider, nothing was sent):\n  " + testBody + "\n"
	if out.String() != want {
		t.Errorf("console wrote %q, want %q", out.String(), want)
	}
	if strings.Contains(out.String(), "2025550143") {
		t.Errorf("console output holds the whole number")
	}
	if !strings.HasPrefix(sent.ProviderID, "console-") || len(sent.ProviderID) != len("console-")+16 {
		t.Errorf("ProviderID = %q, want console-<16 hex digits>", sent.ProviderID)
	}
	again, _ := c.Send(context.Background(), Message{To: "+12025550143", Body: testBody})
	if again.ProviderID == sent.ProviderID {
		t.Errorf("two sends got the same ProviderID %q", sent.ProviderID)
	}
}

// TestConsoleFullNumbersOnlyWhenAsked: the dev console (securetext dev, where the console is the
// phone) shows the whole number; the console of sms.New masks it unless its Config asks.
func TestConsoleFullNumbersOnlyWhenAsked(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"masked by default", Config{Type: TypeConsole}, "SMS to +1********43 (console provider, nothing was sent):\n"},
		{"whole number for dev", Config{Type: TypeConsole, ConsoleFullNumbers: true}, "SMS to +12025550143 (console provider, nothing was sent):\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.cfg.Console = &out
			p, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Send(context.Background(), Message{To: "+12025550143", Body: testBody}); err != nil {
				t.Fatal(err)
			}
			if want := tt.want + "  " + testBody + "\n"; out.String() != want {
				t.Errorf("console wrote %q, want %q", out.String(), want)
			}
		})
	}
}

func TestConsoleMultilineBodyStaysFramed(t *testing.T) {
	var out bytes.Buffer
	if _, err := NewConsole(&out).Send(context.Background(), Message{To: "+12025550143", Body: "line one\nline two"}); err != nil {
		t.Fatal(err)
	}
	if want := "SMS to +1********43 (console provider, nothing was sent):\n  line one\n  line two\n"; out.String() != want {
		t.Errorf("console wrote %q, want %q", out.String(), want)
	}
}

func TestConsoleConcurrent(t *testing.T) {
	var out bytes.Buffer
	c := NewConsole(&out)
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := c.Send(context.Background(), Message{To: "+12025550143", Body: testBody}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	block := "SMS to +1********43 (console provider, nothing was sent):\n  " + testBody + "\n"
	if out.String() != strings.Repeat(block, n) {
		t.Errorf("concurrent sends interleaved their output")
	}
}

func TestConsoleRefuses(t *testing.T) {
	var out bytes.Buffer
	c := NewConsole(&out)
	m := Message{To: "2025550143", Body: testBody}
	_, err := c.Send(context.Background(), m)
	checkSendError(t, err, m)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Send(ctx, Message{To: "+12025550143", Body: testBody})
	if !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled Send = %v, want temporary and context.Canceled", err)
	}
	if out.Len() != 0 {
		t.Errorf("refused sends wrote %q", out.String())
	}
	rec := httptest.NewRecorder()
	c.Handler(&recorder{}).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/sms/console/status", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("console callback: status %d, want 404", rec.Code)
	}
}
