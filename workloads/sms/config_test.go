package sms

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	var out bytes.Buffer
	g, err := New(Config{Type: TypeConsole, Console: &out})
	if err != nil {
		t.Fatalf("New(console): %v", err)
	}
	if _, err := g.Send(context.Background(), Message{To: "+12025550143", Body: "hello"}); err != nil || !strings.Contains(out.String(), "hello") {
		t.Errorf("console gateway: %v, wrote %q", err, out.String())
	}

	g, err = New(Config{Type: TypeTwilio, Twilio: TwilioConfig{AccountSID: testAccountSID, AuthToken: testAuthToken, From: testFrom}})
	if _, ok := g.(*Twilio); err != nil || !ok {
		t.Errorf("New(twilio) = %T, %v", g, err)
	}
	if _, ok := g.(Finder); !ok {
		t.Errorf("the Twilio gateway does not implement Finder")
	}
	g, err = New(Config{Type: TypeWebhook, Webhook: WebhookConfig{URL: "https://gw.example/send", Secret: testSecret}})
	if _, ok := g.(*Webhook); err != nil || !ok {
		t.Errorf("New(webhook) = %T, %v", g, err)
	}

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown type", Config{Type: "nexmo"}, `unknown provider type "nexmo"`},
		{"no type", Config{}, "no provider type"},
		{"bad twilio config", Config{Type: TypeTwilio}, "account SID"},
		{"bad webhook config", Config{Type: TypeWebhook}, "URL"},
	}
	for _, tt := range tests {
		g, err := New(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want an error saying %q", tt.name, err, tt.want)
		}
		if g != nil {
			t.Errorf("%s: New returned a non-nil Gateway %#v with its error", tt.name, g)
		}
	}
}
