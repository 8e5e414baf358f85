package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/viewer"
)

const viewerEnvPrefix = "SECURETEXT_VIEWER_"

type viewerFlags struct {
	tenant, tenantName, language, timeZone string
	database                               databaseFlags
	keystore                               keystoreFlags
	sms                                    smsFlags
	tlsCert, tlsKey                        string
	addr, httpAddr, metricsAddr            string
	trustedProxies                         string
	logoFile, brandColor                   string
	supportPhone, supportEmail, supportURL string
	minPasswordLength                      int
	oneTimeCode                            bool
	idleTimeout, sessionLifetime           time.Duration
	failureWindow, maxDelay                time.Duration
	maxFailures, maxFailuresPerClient      int
	maxFailuresPerAddress                  int
	replies                                bool
	replyMaxLength                         int
}

func parseViewerFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*viewerFlags, error) {
	f := &viewerFlags{}
	fs := flag.NewFlagSet("securetext viewer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.tenant, "tenant", "", "tenant id, a DNS label (required)")
	fs.StringVar(&f.tenantName, "tenant-name", "", "the organisation's name as patients know it, shown on every page (required)")
	fs.StringVar(&f.language, "language", "en", "language of the pages (the lang attribute)")
	fs.StringVar(&f.timeZone, "time-zone", viewer.DefaultTimeZone, "IANA time zone in which pages show times")
	f.database.register(fs, viewer.DatabaseConnections())
	f.keystore.register(fs, "viewer")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for HTTPS (required with -addr)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of -tls-cert")
	fs.StringVar(&f.addr, "addr", ":9443", "HTTPS address for patients; empty: off")
	fs.StringVar(&f.httpAddr, "http-addr", "", "plain HTTP address, loopback only (development); empty: off")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9465", "address of /metrics; empty: off")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of the reverse proxies whose X-Forwarded-For names the client; empty: none, the connection's address is the client")
	fs.StringVar(&f.logoFile, "logo-file", "", "tenant logo (PNG, JPEG, WebP or SVG, at most 512 KiB)")
	fs.StringVar(&f.brandColor, "brand-color", "#1f4e79", "header and button colour, #rrggbb")
	fs.StringVar(&f.supportPhone, "support-phone", "", "phone number patients call about a message")
	fs.StringVar(&f.supportEmail, "support-email", "", "email address patients write to about a message")
	fs.StringVar(&f.supportURL, "support-url", "", "help page for patients")
	fs.IntVar(&f.minPasswordLength, "min-password-length", 15, "shortest password (at least 15; at least 8 with -one-time-code)")
	fs.BoolVar(&f.oneTimeCode, "one-time-code", true, "on first use, confirm the phone with a texted code before the first password is set (needs -sms-provider); false lets whoever opens a first link choose the password for every message to that number")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 15*time.Minute, "a session unused this long ends")
	fs.DurationVar(&f.sessionLifetime, "session-lifetime", 12*time.Hour, "every session ends this long after sign-in")
	fs.IntVar(&f.maxFailures, "max-failures", 100, "failed sign-ins per recipient within -failure-window from browsers the patient never signed in from, all together (at most 100); then only those browsers pause, texted codes still work")
	fs.IntVar(&f.maxFailuresPerClient, "max-failures-per-client", 10, "failed sign-ins per recipient within -failure-window from one client (a browser the patient signed in from, else an address)")
	fs.DurationVar(&f.failureWindow, "failure-window", 30*24*time.Hour, "how long a failed sign-in counts")
	fs.DurationVar(&f.maxDelay, "max-delay", 15*time.Minute, "longest wait between sign-in attempts from new browsers while a recipient's password is being guessed")
	fs.IntVar(&f.maxFailuresPerAddress, "max-failures-per-address", 30, "failed attempts from one client address per 15 minutes, on any recipients")
	fs.BoolVar(&f.replies, "replies", false, "let patients answer a message from its page (the sender reads replies in the API's message events)")
	fs.IntVar(&f.replyMaxLength, "reply-max-length", 1000, fmt.Sprintf("longest reply in characters (at most %d)", viewer.MaxReplyLength))
	f.sms.register(fs, "twilio, webhook or console, for one-time codes; empty: no codes (forgotten passwords go through support)", false)
	required := append([]string{"tenant", "tenant-name"}, keystoreFlagNames...)
	if err := parseFlags(fs, viewerEnvPrefix, args, lookupEnv, required...); err != nil {
		return nil, err
	}
	if f.addr != "" && (f.tlsCert == "" || f.tlsKey == "") {
		return nil, errors.New("-addr serves HTTPS: give -tls-cert and -tls-key (or -addr= with a loopback -http-addr for development)")
	}
	if f.oneTimeCode && f.sms.provider == "" {
		return nil, errors.New("-one-time-code (on by default) texts a code to confirm the phone before the first password: configure -sms-provider, or pass -one-time-code=false to let whoever opens a first link choose the password")
	}
	if err := f.database.check(); err != nil {
		return nil, err
	}
	return f, nil
}

func runViewer(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer, started func(viewer.Addrs)) error {
	f, err := parseViewerFlags(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	loc, err := time.LoadLocation(f.timeZone)
	if err != nil {
		return fmt.Errorf("-time-zone: %w", err)
	}
	var proxies []netip.Prefix
	for _, item := range strings.Split(f.trustedProxies, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return fmt.Errorf("-trusted-proxies entry %q: want a CIDR such as 10.0.0.0/8", item)
		}
		proxies = append(proxies, p.Masked())
	}
	branding := viewer.Branding{
		DisplayName: f.tenantName, PrimaryColor: f.brandColor, Language: f.language, Location: loc,
		SupportPhone: f.supportPhone, SupportEmail: f.supportEmail, SupportURL: f.supportURL,
	}
	if f.logoFile != "" {
		if branding.Logo, err = os.ReadFile(f.logoFile); err != nil {
			return fmt.Errorf("-logo-file: %w", err)
		}
		branding.LogoType = logoType(f.logoFile)
	}
	var tlsConfig *tls.Config
	if f.tlsCert != "" {
		if tlsConfig, err = serverTLS(f.tlsCert, f.tlsKey); err != nil {
			return err
		}
	}
	keys, err := f.keystore.client()
	if err != nil {
		return err
	}
	defer keys.Close()

	var provider sms.Provider
	if f.sms.provider != "" {
		if provider, err = f.sms.open(log, stderr); err != nil {
			return err
		}
	}
	st, err := f.database.open(ctx, f.tenant, log)
	if err != nil {
		return err
	}
	defer st.Close()
	return viewer.Run(ctx, viewer.Config{
		Tenant: f.tenant, Store: st, Keys: keys, SMS: provider, Branding: branding,
		Policy: viewer.Policy{
			MinPasswordLength: f.minPasswordLength, OneTimeCode: f.oneTimeCode,
			IdleTimeout: f.idleTimeout, SessionLifetime: f.sessionLifetime,
			MaxFailures: f.maxFailures, MaxFailuresPerClient: f.maxFailuresPerClient, FailureWindow: f.failureWindow,
			MaxDelay: f.maxDelay, MaxFailuresPerAddress: f.maxFailuresPerAddress,
			Replies: f.replies, ReplyMaxLength: f.replyMaxLength,
		},
		TLS: tlsConfig, Addr: f.addr, HTTPAddr: f.httpAddr, MetricsAddr: f.metricsAddr, TrustedProxies: proxies,
		Logger: log, Started: started,
	})
}

func logoType(path string) string {
	switch strings.ToLower(path[strings.LastIndex(path, ".")+1:]) {
	case "png":
		return "image/png"
	case "jpg", "jpeg":
		return "image/jpeg"
	case "webp":
		return "image/webp"
	case "svg":
		return "image/svg+xml"
	}
	return "application/octet-stream" // refused by the viewer's configuration check
}
