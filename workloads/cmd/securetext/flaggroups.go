package main

// Flags that `securetext gateway` and `securetext viewer` share, and the gateway's status
// endpoint, each group with its loading.

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/internal/flagenv"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// parseFlags sets the flags of fs from the environment (flag -a-b from envPrefix+"A_B"), then
// from args, which must hold flags only, and checks that the required flags are not empty.
func parseFlags(fs *flag.FlagSet, envPrefix string, args []string, lookupEnv func(string) (string, bool), required ...string) error {
	if err := flagenv.Apply(fs, envPrefix, lookupEnv); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), fs.Name())
	}
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return fmt.Errorf("-%s is required (or set %s)", name, flagenv.Name(envPrefix, name))
		}
	}
	return nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// serverTLS loads -tls-cert and -tls-key.
func serverTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load -tls-cert/-tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// databaseFlags are -database-url and -database-url-file, of which exactly one is given, and
// -database-max-connections.
type databaseFlags struct {
	url, urlFile string
	maxConns     int
}

// register adds the flags, with maxConns the component's default pool size.
func (d *databaseFlags) register(fs *flag.FlagSet, maxConns int) {
	fs.StringVar(&d.url, "database-url", "", "PostgreSQL URL of the tenant's database, or sqlite:PATH (prefer -database-url-file)")
	fs.StringVar(&d.urlFile, "database-url-file", "", "file holding the database URL (from a Secret)")
	fs.IntVar(&d.maxConns, "database-max-connections", maxConns, "most PostgreSQL connections this process opens")
}

func (d *databaseFlags) check() error {
	if (d.url == "") == (d.urlFile == "") {
		return errors.New("give exactly one of -database-url-file and -database-url")
	}
	if d.maxConns < 1 {
		return errors.New("-database-max-connections must be at least 1")
	}
	return nil
}

// open opens tenant's store at the URL given.
func (d *databaseFlags) open(ctx context.Context, tenant string, log *slog.Logger) (*store.Store, error) {
	dsn := d.url
	if d.urlFile != "" {
		var err error
		if dsn, err = readSecret(d.urlFile); err != nil {
			return nil, fmt.Errorf("-database-url-file: %w", err)
		}
	}
	return store.Open(ctx, dsn, tenant, store.WithLogger(log), store.WithMaxConnections(d.maxConns))
}

// keystoreFlags are -keystore-url, -keystore-cert, -keystore-key and -keystore-ca, all
// required, and the gateway's -keystore-reserve.
type keystoreFlags struct {
	url, cert, key, ca string
	reserve            int
}

// keystoreFlagNames are the flags of keystoreFlags, all required.
var keystoreFlagNames = []string{"keystore-url", "keystore-cert", "keystore-key", "keystore-ca"}

func (k *keystoreFlags) register(fs *flag.FlagSet, component string) {
	fs.StringVar(&k.url, "keystore-url", "", "base URL of the tenant's keystore, https://… (required)")
	fs.StringVar(&k.cert, "keystore-cert", "", "PEM client certificate of component "+component+" for the keystore (required)")
	fs.StringVar(&k.key, "keystore-key", "", "PEM key of -keystore-cert (required)")
	fs.StringVar(&k.ca, "keystore-ca", "", "PEM tenant CA that the keystore's certificate chains to (required)")
	if component == tenantpki.ComponentGateway { // the viewer never asks for new keys
		fs.IntVar(&k.reserve, "keystore-reserve", keystore.DefaultReserveSize, fmt.Sprintf("most fresh data keys to hold ready for new "+
			"messages, each used once and zeroed unused after %v; at most %d; 0: ask the keystore for every message",
			keystore.DefaultReserveMaxAge, keystore.MaxReserve))
	}
}

// check reports a -keystore-reserve out of range.
func (k *keystoreFlags) check() error {
	if k.reserve < 0 || k.reserve > keystore.MaxReserve {
		return fmt.Errorf("-keystore-reserve %d: give 0 (no reserve) to %d keys", k.reserve, keystore.MaxReserve)
	}
	return nil
}

func (k *keystoreFlags) client() (*keystore.Client, error) {
	cert, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fmt.Errorf("load -keystore-cert/-keystore-key: %w", err)
	}
	caPEM, err := os.ReadFile(k.ca)
	if err != nil {
		return nil, fmt.Errorf("read -keystore-ca: %w", err)
	}
	roots, err := tenantpki.CertPoolFromPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("-keystore-ca: %w", err)
	}
	return keystore.NewClient(keystore.ClientConfig{URL: k.url, Certificate: cert, RootCAs: roots, Reserve: k.reserveConfig()})
}

// reserveConfig is the reserve -keystore-reserve asks for: 0 is none (ReserveConfig's Size 0
// would be the default size).
func (k *keystoreFlags) reserveConfig() keystore.ReserveConfig {
	return keystore.ReserveConfig{Size: k.reserve, Disabled: k.reserve == 0}
}

// smsFlags choose and configure the SMS provider.
type smsFlags struct {
	provider, callbackBaseURL             string
	twilioAccountSID, twilioAuthTokenFile string
	twilioFrom, twilioMessagingServiceSID string
	webhookURL, webhookSecretFile         string
}

// register adds the flags to fs; -sms-callback-base-url only with callbacks, for a command
// that serves the provider's callbacks.
func (s *smsFlags) register(fs *flag.FlagSet, providerUsage string, callbacks bool) {
	fs.StringVar(&s.provider, "sms-provider", "", providerUsage)
	if callbacks {
		fs.StringVar(&s.callbackBaseURL, "sms-callback-base-url", "", "public URL of this gateway's /sms/<provider> path, for delivery reports and replies")
	}
	fs.StringVar(&s.twilioAccountSID, "twilio-account-sid", "", "Twilio account SID (AC…)")
	fs.StringVar(&s.twilioAuthTokenFile, "twilio-auth-token-file", "", "file holding the Twilio auth token")
	fs.StringVar(&s.twilioFrom, "twilio-from", "", "sending number, E.164")
	fs.StringVar(&s.twilioMessagingServiceSID, "twilio-messaging-service-sid", "", "Messaging Service SID (MG…), instead of -twilio-from")
	fs.StringVar(&s.webhookURL, "webhook-url", "", "URL of the webhook SMS gateway")
	fs.StringVar(&s.webhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (32+ bytes)")
}

// open returns the provider -sms-provider names. The console provider writes to console
// (nil: standard output).
func (s *smsFlags) open(log *slog.Logger, console io.Writer) (sms.Gateway, error) {
	cfg := sms.Config{Type: s.provider, Console: console}
	switch s.provider {
	case sms.TypeTwilio:
		token, err := readSecret(s.twilioAuthTokenFile)
		if err != nil {
			return nil, fmt.Errorf("-twilio-auth-token-file: %w", err)
		}
		cfg.Twilio = sms.TwilioConfig{
			AccountSID: s.twilioAccountSID, AuthToken: token, From: s.twilioFrom,
			MessagingServiceSID: s.twilioMessagingServiceSID, CallbackBaseURL: s.callbackBaseURL, Logger: log,
		}
	case sms.TypeWebhook:
		secret, err := readSecret(s.webhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("-webhook-secret-file: %w", err)
		}
		cfg.Webhook = sms.WebhookConfig{URL: s.webhookURL, Secret: []byte(secret), Logger: log}
	}
	return sms.New(cfg)
}

// statusFlags are the gateway's -status-addr, -status-cert, -status-key and -status-client-ca:
// the mutual TLS endpoint where the operator reads the last retention sweep
// (gateway.StatusServer). Without -status-cert there is no such endpoint.
type statusFlags struct {
	addr, cert, key, clientCA string
}

func (f *statusFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "status-addr", ":9443", "HTTPS address (mutual TLS) where the operator reads the last retention sweep; used with -status-cert")
	fs.StringVar(&f.cert, "status-cert", "", "PEM server certificate of the status endpoint, from the tenant CA; empty: no status endpoint")
	fs.StringVar(&f.key, "status-key", "", "PEM key of -status-cert")
	fs.StringVar(&f.clientCA, "status-client-ca", "", "PEM tenant CA that the operator's client certificate must chain to (default -keystore-ca)")
}

// server returns the status server of tenant on st, or nil without -status-cert.
func (f *statusFlags) server(tenant, keystoreCA string, st *store.Store, log *slog.Logger) (*gateway.StatusServer, error) {
	if f.cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("load -status-cert/-status-key: %w", err)
	}
	caFile := f.clientCA
	if caFile == "" {
		caFile = keystoreCA
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read -status-client-ca: %w", err)
	}
	roots, err := tenantpki.CertPoolFromPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("-status-client-ca: %w", err)
	}
	return gateway.NewStatusServer(gateway.StatusConfig{Tenant: tenant, Certificate: cert, ClientCAs: roots, Sweeps: st, Logger: log})
}
