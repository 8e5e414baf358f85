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

	"github.com/securetext/securetext/workloads/internal/flagenv"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/viewer"
)

const viewerEnvPrefix = "SECURETEXT_VIEWER_"

type viewerFlags struct {
	tenant, tenantName, language, timeZone     string
	databaseURL, databaseURLFile               string
	keystoreURL, keystoreCert, keystoreKey     string
	keystoreCA                                 string
	tlsCert, tlsKey                            string
	addr, httpAddr, metricsAddr                string
	trustedProxies                             string
	logoFile, brandColor                       string
	supportPhone, supportEmail, supportURL     string
	minPasswordLength                          int
	oneTimeCode                                bool
	idleTimeout, sessionLifetime, lockFor      time.Duration
	maxFailures, maxFailuresPerAddress         int
	smsProvider                                string
	twilioAccountSID, twilioAuthTokenFile      string
	twilioFrom, twilioMessagingServiceSID      string
	webhookURL, webhookSecretFile, callbackURL string
}

func parseViewerFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*viewerFlags, error) {
	f := &viewerFlags{}
	fs := flag.NewFlagSet("securetext viewer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.tenant, "tenant", "", "tenant id, a DNS label (required)")
	fs.StringVar(&f.tenantName, "tenant-name", "", "the organisation's name as patients know it, shown on every page (required)")
	fs.StringVar(&f.language, "language", "en", "language of the pages (the lang attribute)")
	fs.StringVar(&f.timeZone, "time-zone", "America/New_York", "time zone in which pages show times")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL of the tenant's database, or sqlite:PATH (prefer -database-url-file)")
	fs.StringVar(&f.databaseURLFile, "database-url-file", "", "file holding the database URL (from a Secret)")
	fs.StringVar(&f.keystoreURL, "keystore-url", "", "base URL of the tenant's keystore, https://… (required)")
	fs.StringVar(&f.keystoreCert, "keystore-cert", "", "PEM client certificate of component viewer for the keystore (required)")
	fs.StringVar(&f.keystoreKey, "keystore-key", "", "PEM key of -keystore-cert (required)")
	fs.StringVar(&f.keystoreCA, "keystore-ca", "", "PEM tenant CA that the keystore's certificate chains to (required)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for HTTPS (required with -addr)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of -tls-cert")
	fs.StringVar(&f.addr, "addr", ":9443", "HTTPS address for patients; empty: off")
	fs.StringVar(&f.httpAddr, "http-addr", "", "plain HTTP address, loopback only (development); empty: off")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9465", "address of /metrics; empty: off")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client")
	fs.StringVar(&f.logoFile, "logo-file", "", "tenant logo (PNG, JPEG, WebP or SVG, at most 512 KiB)")
	fs.StringVar(&f.brandColor, "brand-color", "#1f4e79", "header and button colour, #rrggbb")
	fs.StringVar(&f.supportPhone, "support-phone", "", "phone number patients call about a message")
	fs.StringVar(&f.supportEmail, "support-email", "", "email address patients write to about a message")
	fs.StringVar(&f.supportURL, "support-url", "", "help page for patients")
	fs.IntVar(&f.minPasswordLength, "min-password-length", 15, "shortest password (at least 15; at least 8 with -one-time-code)")
	fs.BoolVar(&f.oneTimeCode, "one-time-code", false, "on first use, confirm the phone with a texted code (needs -sms-provider)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 15*time.Minute, "a session unused this long ends")
	fs.DurationVar(&f.sessionLifetime, "session-lifetime", 12*time.Hour, "every session ends this long after sign-in")
	fs.IntVar(&f.maxFailures, "max-failures", 10, "consecutive failed sign-ins that lock a recipient (at most 100)")
	fs.DurationVar(&f.lockFor, "lock-for", 15*time.Minute, "how long a lock lasts")
	fs.IntVar(&f.maxFailuresPerAddress, "max-failures-per-address", 30, "failed attempts from one client address per 15 minutes")
	fs.StringVar(&f.smsProvider, "sms-provider", "", "twilio, webhook or console, for one-time codes; empty: no codes (forgotten passwords go through support)")
	fs.StringVar(&f.twilioAccountSID, "twilio-account-sid", "", "Twilio account SID (AC…)")
	fs.StringVar(&f.twilioAuthTokenFile, "twilio-auth-token-file", "", "file holding the Twilio auth token")
	fs.StringVar(&f.twilioFrom, "twilio-from", "", "sending number, E.164")
	fs.StringVar(&f.twilioMessagingServiceSID, "twilio-messaging-service-sid", "", "Messaging Service SID (MG…), instead of -twilio-from")
	fs.StringVar(&f.webhookURL, "webhook-url", "", "URL of the webhook SMS gateway")
	fs.StringVar(&f.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (32+ bytes)")
	fs.StringVar(&f.callbackURL, "sms-callback-base-url", "", "public URL for the provider's callbacks (unused by the viewer's codes; accepted for symmetry)")
	if err := flagenv.Apply(fs, viewerEnvPrefix, lookupEnv); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: viewer takes flags only", fs.Arg(0))
	}
	for _, req := range []struct{ name, value string }{
		{"tenant", f.tenant}, {"tenant-name", f.tenantName},
		{"keystore-url", f.keystoreURL}, {"keystore-cert", f.keystoreCert}, {"keystore-key", f.keystoreKey},
		{"keystore-ca", f.keystoreCA},
	} {
		if req.value == "" {
			return nil, fmt.Errorf("-%s is required (or set %s)", req.name, flagenv.Name(viewerEnvPrefix, req.name))
		}
	}
	if f.addr != "" && (f.tlsCert == "" || f.tlsKey == "") {
		return nil, errors.New("-addr serves HTTPS: give -tls-cert and -tls-key (or -addr= with a loopback -http-addr for development)")
	}
	if (f.databaseURL == "") == (f.databaseURLFile == "") {
		return nil, errors.New("give exactly one of -database-url-file and -database-url")
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
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("load -tls-cert/-tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ksCert, err := tls.LoadX509KeyPair(f.keystoreCert, f.keystoreKey)
	if err != nil {
		return fmt.Errorf("load -keystore-cert/-keystore-key: %w", err)
	}
	caPEM, err := os.ReadFile(f.keystoreCA)
	if err != nil {
		return fmt.Errorf("read -keystore-ca: %w", err)
	}
	roots, err := keystore.CertPoolFromPEM(caPEM)
	if err != nil {
		return fmt.Errorf("-keystore-ca: %w", err)
	}
	keys, err := keystore.NewClient(keystore.ClientConfig{URL: f.keystoreURL, Certificate: ksCert, RootCAs: roots})
	if err != nil {
		return err
	}
	defer keys.Close()

	var provider sms.Provider
	if f.smsProvider != "" {
		smsCfg := sms.Config{Type: f.smsProvider, Console: stderr}
		switch f.smsProvider {
		case sms.TypeTwilio:
			token, err := readSecret(f.twilioAuthTokenFile)
			if err != nil {
				return fmt.Errorf("-twilio-auth-token-file: %w", err)
			}
			smsCfg.Twilio = sms.TwilioConfig{
				AccountSID: f.twilioAccountSID, AuthToken: token, From: f.twilioFrom,
				MessagingServiceSID: f.twilioMessagingServiceSID, CallbackBaseURL: f.callbackURL, Logger: log,
			}
		case sms.TypeWebhook:
			secret, err := readSecret(f.webhookSecretFile)
			if err != nil {
				return fmt.Errorf("-webhook-secret-file: %w", err)
			}
			smsCfg.Webhook = sms.WebhookConfig{URL: f.webhookURL, Secret: []byte(secret), Logger: log}
		}
		if provider, err = sms.New(smsCfg); err != nil {
			return err
		}
	}

	dsn := f.databaseURL
	if f.databaseURLFile != "" {
		if dsn, err = readSecret(f.databaseURLFile); err != nil {
			return fmt.Errorf("-database-url-file: %w", err)
		}
	}
	st, err := store.Open(ctx, dsn, f.tenant, store.WithLogger(log))
	if err != nil {
		return err
	}
	defer st.Close()
	return viewer.Run(ctx, viewer.Config{
		Tenant: f.tenant, Store: st, Keys: keys, SMS: provider, Branding: branding,
		Policy: viewer.Policy{
			MinPasswordLength: f.minPasswordLength, OneTimeCode: f.oneTimeCode,
			IdleTimeout: f.idleTimeout, SessionLifetime: f.sessionLifetime,
			MaxFailures: f.maxFailures, LockFor: f.lockFor, MaxFailuresPerAddress: f.maxFailuresPerAddress,
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
