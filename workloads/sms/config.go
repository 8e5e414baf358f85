package sms

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

// Provider types of Config.
const (
	TypeTwilio  = "twilio"
	TypeWebhook = "webhook"
	TypeConsole = "console"
)

// Config chooses and configures a provider.
type Config struct {
	// Type is "twilio", "webhook" or "console".
	Type    string
	Twilio  TwilioConfig
	Webhook WebhookConfig
	// Console receives the console provider's texts; nil means standard output.
	Console io.Writer
	// ConsoleFullNumbers shows whole numbers on the console instead of masked ones: only for
	// `securetext dev`, where the console is the phone (see NewDevConsole).
	ConsoleFullNumbers bool
}

// Gateway is a configured provider with its callback endpoint. The Twilio one also implements
// [Finder].
type Gateway interface {
	Provider
	// Handler serves the provider's callbacks, reporting them to ev.
	Handler(ev Events) http.Handler
}

var (
	_ Gateway = (*Twilio)(nil)
	_ Gateway = (*Webhook)(nil)
	_ Gateway = (*Console)(nil)
)

// New returns the provider cfg.Type names.
func New(cfg Config) (Gateway, error) {
	switch cfg.Type {
	// Each constructor's nil pointer must not become a non-nil Gateway next to an error.
	case TypeTwilio:
		t, err := NewTwilio(cfg.Twilio)
		if err != nil {
			return nil, err
		}
		return t, nil
	case TypeWebhook:
		w, err := NewWebhook(cfg.Webhook)
		if err != nil {
			return nil, err
		}
		return w, nil
	case TypeConsole:
		w := cfg.Console
		if w == nil {
			w = os.Stdout
		}
		if cfg.ConsoleFullNumbers {
			return NewDevConsole(w), nil
		}
		return NewConsole(w), nil
	case "":
		return nil, fmt.Errorf("sms: no provider type: set twilio, webhook or console")
	default:
		return nil, fmt.Errorf("sms: unknown provider type %q: use twilio, webhook or console", cfg.Type)
	}
}
