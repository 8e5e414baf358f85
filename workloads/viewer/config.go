package viewer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // DefaultTimeZone and -time-zone load without the host's zone database

	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/viewer/passwordpolicy"
)

// Keys is what the viewer needs from the keystore: unwrapping a message's data key, and a
// health check. *keystore.Client (component "viewer") satisfies it.
type Keys interface {
	Unwrap(ctx context.Context, wrapped string) ([]byte, error)
	Health(ctx context.Context) error
}

// Config is one tenant's viewer.
type Config struct {
	Tenant string // the tenant id: bound into every envelope's associated data
	Store  *store.Store
	Keys   Keys
	// SMS texts one-time codes (first-use confirmation, forgotten passwords). nil: no codes;
	// a patient who forgot the password is told to contact support.
	SMS sms.Provider

	Branding Branding
	Policy   Policy

	// TLS serves Addr.
	TLS *tls.Config
	// Addr is the HTTPS address for patients. HTTPAddr is plain HTTP for development and must
	// be a loopback address. MetricsAddr serves /metrics. Empty disables each.
	Addr, HTTPAddr, MetricsAddr string
	// TrustedProxies are the networks of reverse proxies whose X-Forwarded-For names the
	// client (for per-address limits). Empty: the connection's address is the client.
	TrustedProxies []netip.Prefix

	Logger   *slog.Logger
	Registry *prometheus.Registry // nil: a new one
	// Started, if set, is called with the bound addresses once every listener is open.
	Started func(Addrs)

	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time
	// HashParams are argon2id's parameters for new password hashes. Zero: password.Default.
	// Only tests go lower; Run refuses anything below password.Default.
	HashParams password.Params
	// Sleep waits out the progressive delay after a failed attempt (tests record it).
	// Default: a timer that ends early when ctx does.
	Sleep func(ctx context.Context, d time.Duration)
}

// Addrs are the addresses the viewer listens on.
type Addrs struct {
	HTTPS, HTTP, Metrics string
}

// Branding is what a patient sees of the tenant.
type Branding struct {
	DisplayName string // "Riverside Clinic"; required
	// Logo is an image shown above the page (PNG, JPEG, WebP or SVG), served from the viewer
	// itself; LogoType is its media type. Empty: the display name only.
	Logo     []byte
	LogoType string
	// PrimaryColor is the header and button colour, #rrggbb. Text on it is white or black,
	// whichever contrasts more (always ≥ 4.5:1). Default #1f4e79.
	PrimaryColor string
	// Whom to contact about a message: shown on every page. At least one is required.
	SupportPhone, SupportEmail, SupportURL string
	// Language is the pages' lang attribute. Default "en".
	Language string
	// Location is the time zone in which times are shown. Default DefaultTimeZone.
	Location *time.Location
}

// Policy is the tenant's viewer authentication policy (SecureTextTenant spec.viewer.auth).
type Policy struct {
	// MinPasswordLength is the shortest password accepted: default 15; at least 15 unless
	// OneTimeCode is on, then at least 8 (NIST SP 800-63B §3.1.1.2).
	MinPasswordLength int
	// OneTimeCode: on first use, the patient confirms holding the phone with a texted code
	// before choosing a password.
	OneTimeCode bool
	// IdleTimeout ends a session not used for this long (default 15 min); SessionLifetime ends
	// any session this long after sign-in (default 12 h). Both are enforced on the server.
	IdleTimeout, SessionLifetime time.Duration
	// Sign-in throttling, keyed by recipient and client (NIST SP 800-63B §5.2.2: at most 100
	// failed attempts, and no lockout an attacker can hold). A client is a browser the
	// recipient signed in from within FailureWindow (trusted, known by a random device token
	// in a cookie), or else the client's address. Failures stop counting after FailureWindow
	// (default 30 days); a successful sign-in clears the client's own count, a reset clears
	// all.
	//
	//   - MaxFailuresPerClient (default 10, at most MaxFailures) failures of one client pause
	//     that client's password sign-in until they age out.
	//   - MaxFailures (default 100, at most 100) failures of all untrusted clients together
	//     pause password sign-in from untrusted clients until they age out, so guessing a
	//     password from browsers that never signed in stays below MaxFailures per window.
	//     Before that, once the untrusted clients together failed MaxFailuresPerClient times,
	//     each further attempt waits a delay that doubles from one minute up to MaxDelay
	//     (default 15 min): the longest a patient in a new browser waits while under attack.
	//   - Trusted browsers, remembered sessions and texted codes are held by none of the
	//     shared limits: an attacker with a link cannot keep the patient out.
	MaxFailures, MaxFailuresPerClient int
	FailureWindow, MaxDelay           time.Duration
	// FailureDelay is the base of the delay of each wrong-password answer: from a client's
	// third failure, the answer waits FailureDelay·2^(n-3), at most MaxFailureDelay
	// (defaults 1 s, 8 s). Negative: no delay.
	FailureDelay, MaxFailureDelay time.Duration
	// MaxFailuresPerAddress failed attempts (passwords and codes) from one client address
	// within AddressWindow, on any recipients, block further attempts from it until the
	// window passes (defaults 30 per 15 min). Codes texted count too.
	MaxFailuresPerAddress int
	AddressWindow         time.Duration
	// CodeLifetime (default 10 min) and CodeMaxAttempts wrong tries per code (default 5). A
	// code works only in the browser that asked for it, so nobody else's tries use it up. At
	// most CodesPerClient codes per client (default 3) and CodesPerRecipient for all
	// untrusted clients together (default 10, more than CodesPerClient) are texted within
	// CodeWindow (default 1 h).
	CodeLifetime                      time.Duration
	CodeMaxAttempts                   int
	CodesPerClient, CodesPerRecipient int
	CodeWindow                        time.Duration
	// Replies shows a form under each message with which the patient can answer it. A reply
	// is sealed under the message's data key, so it is purged with the message, and reaches
	// the sender in the API's message events. ReplyMaxLength caps one reply in characters
	// (default 1000, at most MaxReplyLength); a message takes at most MaxReplies replies.
	Replies        bool
	ReplyMaxLength int
}

// DefaultTimeZone is where pages show times when the tenant names no zone: patients read
// "3:04 PM EST", not a UTC time they would have to convert. The zone database is built in
// (time/tzdata), so it loads on images without one.
const DefaultTimeZone = "America/New_York"

// Reply limits: the longest reply a tenant may allow, and the most replies one message takes
// (a bound on what one link can write, not a conversation).
const (
	MaxReplyLength = 5000
	MaxReplies     = 20
)

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

// withDefaults returns cfg with defaults filled in, or what is wrong with it.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.Tenant == "" {
		bad("viewer: Tenant is required")
	}
	if cfg.Store == nil || cfg.Keys == nil {
		bad("viewer: Store and Keys are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.HashParams == (password.Params{}) {
		cfg.HashParams = password.Default
	}

	b := &cfg.Branding
	b.DisplayName = strings.TrimSpace(b.DisplayName)
	if b.DisplayName == "" {
		bad("viewer: Branding.DisplayName is required: patients must see who wrote to them")
	}
	if b.PrimaryColor == "" {
		b.PrimaryColor = "#1f4e79"
	}
	if !hexColor.MatchString(b.PrimaryColor) {
		bad("viewer: Branding.PrimaryColor %q must be a hex colour like #1f4e79", b.PrimaryColor)
	}
	b.PrimaryColor = strings.ToLower(b.PrimaryColor)
	if b.SupportPhone == "" && b.SupportEmail == "" && b.SupportURL == "" {
		bad("viewer: give at least one of Branding.SupportPhone, SupportEmail and SupportURL: expired-link pages say whom to contact")
	}
	if b.SupportURL != "" {
		if u, err := url.Parse(b.SupportURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("viewer: Branding.SupportURL must be an http(s) URL")
		}
	}
	if b.SupportEmail != "" && (strings.ContainsAny(b.SupportEmail, " <>\"\r\n") || !strings.Contains(b.SupportEmail, "@")) {
		bad("viewer: Branding.SupportEmail must be a plain address like help@clinic.example")
	}
	if len(b.Logo) > 0 {
		switch b.LogoType {
		case "image/png", "image/jpeg", "image/webp", "image/svg+xml":
		default:
			bad("viewer: Branding.LogoType %q: use image/png, image/jpeg, image/webp or image/svg+xml", b.LogoType)
		}
		if len(b.Logo) > 512<<10 {
			bad("viewer: Branding.Logo is larger than 512 KiB; patients load it on phones")
		}
	}
	if b.Language == "" {
		b.Language = "en"
	}
	if b.Location == nil {
		loc, err := time.LoadLocation(DefaultTimeZone)
		if err != nil {
			bad("viewer: load time zone %s: %v", DefaultTimeZone, err)
		}
		b.Location = loc
	}

	p := &cfg.Policy
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	defInt(&p.MinPasswordLength, 15)
	def(&p.IdleTimeout, 15*time.Minute)
	def(&p.SessionLifetime, 12*time.Hour)
	defInt(&p.MaxFailures, 100)
	defInt(&p.MaxFailuresPerClient, min(10, p.MaxFailures))
	def(&p.FailureWindow, 30*24*time.Hour)
	def(&p.MaxDelay, 15*time.Minute)
	def(&p.FailureDelay, time.Second)
	def(&p.MaxFailureDelay, 8*time.Second)
	defInt(&p.MaxFailuresPerAddress, 30)
	def(&p.AddressWindow, 15*time.Minute)
	def(&p.CodeLifetime, 10*time.Minute)
	defInt(&p.CodeMaxAttempts, 5)
	defInt(&p.CodesPerClient, 3)
	defInt(&p.CodesPerRecipient, max(10, p.CodesPerClient+1))
	def(&p.CodeWindow, time.Hour)
	defInt(&p.ReplyMaxLength, 1000)
	if p.ReplyMaxLength < 1 || p.ReplyMaxLength > MaxReplyLength {
		bad("viewer: Policy.ReplyMaxLength %d must be 1 to %d characters", p.ReplyMaxLength, MaxReplyLength)
	}
	switch {
	case p.MinPasswordLength < 8:
		bad("viewer: Policy.MinPasswordLength %d is below 8, the least NIST SP 800-63B allows", p.MinPasswordLength)
	case p.MinPasswordLength < 15 && !p.OneTimeCode:
		bad("viewer: Policy.MinPasswordLength %d is below 15: shorter passwords need Policy.OneTimeCode on", p.MinPasswordLength)
	case p.MinPasswordLength > passwordpolicy.MaxLength:
		bad("viewer: Policy.MinPasswordLength %d is above the %d characters a password may have", p.MinPasswordLength, passwordpolicy.MaxLength)
	}
	if p.OneTimeCode && cfg.SMS == nil {
		bad("viewer: Policy.OneTimeCode texts a code to confirm the phone before the first password, and there is no SMS provider: configure one (-sms-provider), or turn the code off (-one-time-code=false) to let whoever opens a first link choose the password")
	}
	if p.IdleTimeout < 0 || p.SessionLifetime < p.IdleTimeout {
		bad("viewer: Policy.IdleTimeout must be positive and no longer than SessionLifetime")
	}
	if p.MaxFailures < 1 || p.MaxFailures > 100 {
		bad("viewer: Policy.MaxFailures must be 1 to 100 (NIST SP 800-63B: at most 100 failed attempts)")
	}
	if p.MaxFailuresPerClient < 1 || p.MaxFailuresPerClient > p.MaxFailures {
		bad("viewer: Policy.MaxFailuresPerClient must be 1 to MaxFailures (%d)", p.MaxFailures)
	}
	if p.FailureWindow < 0 || p.MaxDelay < 0 || p.MaxFailuresPerAddress < 1 || p.AddressWindow < 0 {
		bad("viewer: Policy.FailureWindow, MaxDelay, MaxFailuresPerAddress and AddressWindow must be positive")
	}
	if p.CodeLifetime < 0 || p.CodeLifetime > 10*time.Minute {
		bad("viewer: Policy.CodeLifetime must be at most 10 minutes")
	}
	if p.CodeMaxAttempts < 1 || p.CodesPerClient < 1 || p.CodeWindow < p.CodeLifetime {
		bad("viewer: Policy.CodeMaxAttempts and CodesPerClient must be positive, CodeWindow at least CodeLifetime")
	}
	if p.CodesPerRecipient <= p.CodesPerClient {
		bad("viewer: Policy.CodesPerRecipient (%d) must exceed CodesPerClient (%d), so that one client cannot use up the patient's codes", p.CodesPerRecipient, p.CodesPerClient)
	}
	return cfg, errors.Join(errs...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
