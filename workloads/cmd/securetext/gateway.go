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

	"golang.org/x/time/rate"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/internal/flagenv"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
)

const gatewayEnvPrefix = "SECURETEXT_GATEWAY_"

type gatewayFlags struct {
	tenant, tenantName, textDomain, region    string
	databaseURL, databaseURLFile              string
	keystoreURL, keystoreCert, keystoreKey    string
	keystoreCA                                string
	tlsCert, tlsKey, sendersFile              string
	smtpAddr, smtpsAddr, apiAddr, metricsAddr string
	trustedNetworks                           string
	maxMessageBytes                           int64
	smtpMaxConns, smtpMaxConnsPerIP           int
	smsProvider, viewerURL, callbackBaseURL   string
	twilioAccountSID, twilioAuthTokenFile     string
	twilioFrom, twilioMessagingServiceSID     string
	webhookURL, webhookSecretFile             string
	smsRate                                   float64
	smsBurst                                  int
	smsLease                                  time.Duration
	quietHours, quietHoursZone                string
	checkpointInterval                        time.Duration
}

func parseGatewayFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*gatewayFlags, error) {
	f := &gatewayFlags{}
	fs := flag.NewFlagSet("securetext gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.tenant, "tenant", "", "tenant id, a DNS label (required)")
	fs.StringVar(&f.tenantName, "tenant-name", "", "the organisation's name as patients know it; starts every SMS (required)")
	fs.StringVar(&f.textDomain, "text-domain", "", "mail domain of recipients, e.g. text.clinic.example (required)")
	fs.StringVar(&f.region, "region", "US", "default region of phone numbers (ISO 3166)")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL of the tenant's database (prefer -database-url-file)")
	fs.StringVar(&f.databaseURLFile, "database-url-file", "", "file holding the PostgreSQL URL (from a Secret)")
	fs.StringVar(&f.keystoreURL, "keystore-url", "", "base URL of the tenant's keystore, https://… (required)")
	fs.StringVar(&f.keystoreCert, "keystore-cert", "", "PEM client certificate for the keystore (required)")
	fs.StringVar(&f.keystoreKey, "keystore-key", "", "PEM key of -keystore-cert (required)")
	fs.StringVar(&f.keystoreCA, "keystore-ca", "", "PEM tenant CA that the keystore's certificate chains to (required)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for STARTTLS, SMTPS and the API (required)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of -tls-cert (required)")
	fs.StringVar(&f.sendersFile, "senders-file", "", "YAML senders file with hashed credentials (see `securetext sender`) (required)")
	fs.StringVar(&f.smtpAddr, "smtp-addr", ":2587", "SMTP submission address (STARTTLS, 587 semantics)")
	fs.StringVar(&f.smtpsAddr, "smtps-addr", "", "implicit-TLS SMTP address (465 semantics); empty: off")
	fs.StringVar(&f.apiAddr, "api-addr", ":8443", "HTTPS address of the REST API and SMS callbacks")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9464", "address of /metrics; empty: off")
	fs.StringVar(&f.trustedNetworks, "trusted-networks", "", "comma-separated CIDR=sender pairs that may submit without TLS and AUTH, e.g. 10.1.2.0/24=ehr-relay")
	fs.Int64Var(&f.maxMessageBytes, "max-message-bytes", 10<<20, "largest accepted message")
	fs.IntVar(&f.smtpMaxConns, "smtp-max-connections", gateway.DefaultSMTPMaxConnections, "most SMTP connections at once; more get 421")
	fs.IntVar(&f.smtpMaxConnsPerIP, "smtp-max-connections-per-ip", gateway.DefaultSMTPMaxConnectionsPerIP, "most SMTP connections from one address (a relay sends from one); more get 421")
	fs.StringVar(&f.smsProvider, "sms-provider", "", "twilio, webhook or console (required)")
	fs.StringVar(&f.viewerURL, "viewer-url", "", "public base URL of the viewer; links are <viewer-url>/m/<token> (required)")
	fs.StringVar(&f.callbackBaseURL, "sms-callback-base-url", "", "public URL of this gateway's /sms/<provider> path, for delivery reports and replies")
	fs.StringVar(&f.twilioAccountSID, "twilio-account-sid", "", "Twilio account SID (AC…)")
	fs.StringVar(&f.twilioAuthTokenFile, "twilio-auth-token-file", "", "file holding the Twilio auth token")
	fs.StringVar(&f.twilioFrom, "twilio-from", "", "sending number, E.164")
	fs.StringVar(&f.twilioMessagingServiceSID, "twilio-messaging-service-sid", "", "Messaging Service SID (MG…), instead of -twilio-from")
	fs.StringVar(&f.webhookURL, "webhook-url", "", "URL of the webhook SMS gateway")
	fs.StringVar(&f.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (32+ bytes)")
	fs.Float64Var(&f.smsRate, "sms-rate", 10, "most SMS per second (10DLC throughput is limited per campaign)")
	fs.IntVar(&f.smsBurst, "sms-burst", 0, "SMS that may go at once (default: the rate)")
	fs.DurationVar(&f.smsLease, "sms-lease", 2*time.Minute, "how long a gateway reserves an SMS it is sending; after a crash its SMS go out when the lease ends (keep it well above the provider's timeout)")
	fs.StringVar(&f.quietHours, "quiet-hours", "", "daily window without SMS, e.g. 21:00-08:00")
	fs.StringVar(&f.quietHoursZone, "quiet-hours-zone", "America/New_York", "time zone of -quiet-hours")
	fs.DurationVar(&f.checkpointInterval, "audit-checkpoint-interval", 5*time.Minute, "how often the audit chain head is signed")
	if err := flagenv.Apply(fs, gatewayEnvPrefix, lookupEnv); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: gateway takes flags only", fs.Arg(0))
	}
	for _, req := range []struct{ name, value string }{
		{"tenant", f.tenant}, {"tenant-name", f.tenantName}, {"text-domain", f.textDomain},
		{"keystore-url", f.keystoreURL}, {"keystore-cert", f.keystoreCert}, {"keystore-key", f.keystoreKey},
		{"keystore-ca", f.keystoreCA}, {"tls-cert", f.tlsCert}, {"tls-key", f.tlsKey},
		{"senders-file", f.sendersFile}, {"sms-provider", f.smsProvider}, {"viewer-url", f.viewerURL},
	} {
		if req.value == "" {
			return nil, fmt.Errorf("-%s is required (or set %s)", req.name, flagenv.Name(gatewayEnvPrefix, req.name))
		}
	}
	if (f.databaseURL == "") == (f.databaseURLFile == "") {
		return nil, errors.New("give exactly one of -database-url-file and -database-url")
	}
	return f, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func parseTrusted(s string) ([]gateway.TrustedNetwork, error) {
	var out []gateway.TrustedNetwork
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		cidr, sender, ok := strings.Cut(item, "=")
		p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
		if !ok || err != nil || strings.TrimSpace(sender) == "" {
			return nil, fmt.Errorf("-trusted-networks entry %q: want CIDR=sender, e.g. 10.1.2.0/24=ehr-relay", item)
		}
		out = append(out, gateway.TrustedNetwork{Prefix: p.Masked(), Sender: strings.TrimSpace(sender)})
	}
	return out, nil
}

func runGateway(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer, started func(gateway.Addrs)) error {
	f, err := parseGatewayFlags(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	trusted, err := parseTrusted(f.trustedNetworks)
	if err != nil {
		return err
	}
	quiet, err := gateway.ParseQuietHours(f.quietHours, f.quietHoursZone)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return fmt.Errorf("load -tls-cert/-tls-key: %w", err)
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
	senders, err := gateway.LoadSenders(f.sendersFile)
	if err != nil {
		return err
	}
	smsCfg := sms.Config{Type: f.smsProvider}
	switch f.smsProvider {
	case sms.TypeTwilio:
		token, err := readSecret(f.twilioAuthTokenFile)
		if err != nil {
			return fmt.Errorf("-twilio-auth-token-file: %w", err)
		}
		smsCfg.Twilio = sms.TwilioConfig{
			AccountSID: f.twilioAccountSID, AuthToken: token, From: f.twilioFrom,
			MessagingServiceSID: f.twilioMessagingServiceSID, CallbackBaseURL: f.callbackBaseURL, Logger: log,
		}
	case sms.TypeWebhook:
		secret, err := readSecret(f.webhookSecretFile)
		if err != nil {
			return fmt.Errorf("-webhook-secret-file: %w", err)
		}
		smsCfg.Webhook = sms.WebhookConfig{URL: f.webhookURL, Secret: []byte(secret), Logger: log}
	}
	provider, err := sms.New(smsCfg)
	if err != nil {
		return err
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
	return gateway.Run(ctx, gateway.Config{
		Tenant: f.tenant, TenantName: f.tenantName, TextDomain: f.textDomain, Region: f.region,
		Store: st, Keys: keys, Senders: senders,
		TLS:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		SMTPAddr: f.smtpAddr, SMTPSAddr: f.smtpsAddr, APIAddr: f.apiAddr, MetricsAddr: f.metricsAddr,
		TrustedNetworks: trusted, MaxMessageBytes: f.maxMessageBytes,
		SMTPMaxConnections: f.smtpMaxConns, SMTPMaxConnectionsPerIP: f.smtpMaxConnsPerIP,
		SMS: provider, ProviderName: f.smsProvider, ViewerURL: f.viewerURL,
		SMSRate: rate.Limit(f.smsRate), SMSBurst: f.smsBurst, SMSLease: f.smsLease, QuietHours: quiet,
		AuditCheckpointInterval: f.checkpointInterval,
		Logger:                  log,
		Started:                 started,
	})
}
