package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
	"github.com/securetext/securetext/workloads/viewer"
)

// Development-mode defaults: one tenant, everything on loopback.
const (
	devTenant     = "demo"
	devTenantName = "Demo Clinic"
	devDomain     = "text.demo.localhost"
	devSender     = "demo"
)

// devInfo is what a started dev stack tells its caller (tests).
type devInfo struct {
	Addrs                  gateway.Addrs
	ViewerURL              string // where the texts' links point: the viewer, on loopback
	DataDir                string
	APIKey                 string
	SMTPUser, SMTPPassword string
	CAFile                 string
}

// runDev runs the whole product in one process from a data folder: the gateway, the viewer,
// the keystore on its local backend, SQLite, and the console SMS provider writing to stdout.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, started func(devInfo)) error {
	flags := flag.NewFlagSet("securetext dev", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dataDir := flags.String("data", "securetext-dev-data", "folder for the database, the local key file, TLS certificates and demo credentials (created if missing)")
	smtpAddr := flags.String("smtp-addr", "127.0.0.1:2525", "SMTP submission address (STARTTLS; loopback clients may send without AUTH in dev mode)")
	apiAddr := flags.String("api-addr", "127.0.0.1:8443", "HTTPS address of the REST API")
	metricsAddr := flags.String("metrics-addr", "127.0.0.1:9464", "address of /metrics (empty: off)")
	viewerAddr := flags.String("viewer-addr", "127.0.0.1:8090", "plain HTTP address of the viewer, the patient's page (loopback only)")
	policyFile := flags.String("retention-policy", "", "YAML retention policy (a RetentionPolicy, or its spec alone; e.g. unreadLinkExpiry: 1m, contentPurgeAfter: 2m, sweepInterval: 1m) that the demo applies; empty: nothing expires or is purged")
	holdsFile := flags.String("legal-holds", "", "YAML LegalHolds (as kubectl applies them, --- between them) whose messages no sweep touches")
	if err := flags.Parse(args); err != nil {
		return err
	}
	for name, addr := range map[string]string{"-smtp-addr": *smtpAddr, "-api-addr": *apiAddr, "-metrics-addr": *metricsAddr, "-viewer-addr": *viewerAddr} {
		if addr != "" && !loopback(addr) {
			return fmt.Errorf("%s %s: dev mode listens on loopback only (127.0.0.1 or [::1])", name, addr)
		}
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	keyFile := filepath.Join(*dataDir, "local-key.json")
	if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
		if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
			return err
		}
	}
	keys, err := keystore.NewLocalInProcess(keyFile, devTenant, log)
	if err != nil {
		return err
	}
	tlsConfig, caFile, err := devTLS(*dataDir)
	if err != nil {
		return err
	}
	senders, user, pass, apiKey, err := devSenders(ctx, *dataDir)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(*dataDir, "tenant.db"), devTenant, store.WithLogger(log))
	if err != nil {
		return err
	}
	defer st.Close()

	// The console is the demo's phone, on the developer's own terminal: it shows whole numbers,
	// where a production console provider (a pod's log) masks them.
	console := &lockedWriter{w: stdout}
	provider, err := sms.New(sms.Config{Type: sms.TypeConsole, Console: console, ConsoleFullNumbers: true})
	if err != nil {
		return err
	}
	// The viewer first: the texts link to the address it bound.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	viewerStarted := make(chan viewer.Addrs, 1)
	viewerDone := make(chan error, 1)
	go func() {
		viewerDone <- viewer.Run(ctx, viewer.Config{
			Tenant: devTenant, Store: st, Keys: keys, SMS: provider,
			Branding: viewer.Branding{
				DisplayName: devTenantName, SupportPhone: "(202) 555-0100", SupportEmail: "support@demo.localhost",
			},
			// The demo shows every patient-facing feature, with production's defaults: the
			// first use of a number proves the phone with a code texted to the console.
			Policy:   viewer.Policy{OneTimeCode: true, Replies: true},
			HTTPAddr: *viewerAddr, Logger: log,
			Started: func(a viewer.Addrs) { viewerStarted <- a },
		})
	}()
	var viewerURL string
	select {
	case a := <-viewerStarted:
		viewerURL = "http://" + a.HTTP
	case err := <-viewerDone:
		return fmt.Errorf("start the viewer: %w", err)
	}
	defer func() {
		cancel()
		<-viewerDone
	}()

	trusted := []gateway.TrustedNetwork{
		{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Sender: devSender},
		{Prefix: netip.MustParsePrefix("::1/128"), Sender: devSender},
	}
	var background []func(context.Context)
	var settings retention.Settings
	reg := gateway.NewRegistry()
	if *policyFile != "" || *holdsFile != "" {
		if settings, err = retention.LoadFiles(*policyFile, *holdsFile); err != nil {
			return err
		}
		ring, _ := keys.Service.(keystore.KeyRing) // the local key file: one version, never destroyed
		sw, err := newSweeper(st, func() retention.Settings { return settings }, ring, reg, log)
		if err != nil {
			return err
		}
		background = append(background, sw.Run)
	}
	return gateway.Run(ctx, gateway.Config{
		Tenant: devTenant, TenantName: devTenantName, TextDomain: devDomain, Region: "US",
		Store: st, Keys: keys, Senders: senders, TLS: tlsConfig, Registry: reg,
		SMTPAddr: *smtpAddr, APIAddr: *apiAddr, MetricsAddr: *metricsAddr,
		TrustedNetworks: trusted,
		SMS:             provider, ProviderName: sms.TypeConsole, ViewerURL: viewerURL,
		AuditCheckpointInterval: time.Minute,
		PolicyLinkExpiry:        settings.LinkExpiry,
		Background:              background,
		Logger:                  log,
		Started: func(a gateway.Addrs) {
			console.printf("%s", devBanner(a, caFile, user, pass, apiKey, viewerURL))
			if started != nil {
				started(devInfo{Addrs: a, ViewerURL: viewerURL, DataDir: *dataDir, APIKey: apiKey, SMTPUser: user, SMTPPassword: pass, CAFile: caFile})
			}
		},
	})
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return (err == nil && ip.IsLoopback()) || host == "localhost"
}

func devBanner(a gateway.Addrs, caFile, user, pass, apiKey, viewerURL string) string {
	smtpHost, smtpPort, _ := net.SplitHostPort(a.SMTP)
	var b strings.Builder
	fmt.Fprintf(&b, `
SecureText is running in development mode: a local key file, SQLite and the console SMS
provider. Do not use it for real patients.

  Text domain      %s
  SMTP submission  %s  (STARTTLS; loopback may send without AUTH in dev mode)
  REST API         https://%s  (certificate: %s)
  Metrics          %s
  Viewer           %s  (the patient's page: open the link in a text)

Send a first message by mail:

  swaks --server %s --port %s --from clinic@demo.localhost \
        --to 2025550143@%s --header "Subject: Lab results" --body "Your results are ready."

or authenticated, as senders do in production:

  swaks --server %s --port %s -tls -a PLAIN -au %s -ap %s \
        --from clinic@demo.localhost --to 2025550143@%s --body "Your results are ready."

or with the REST API:

  curl --cacert %s https://%s/v1/messages \
       -H "Authorization: Bearer %s" -H "Content-Type: application/json" \
       -d '{"to": "2025550143", "subject": "Lab results", "body": "Your results are ready."}'

The text the patient would get appears below (the console provider sends nothing, and stands
in for the patient's phone). Open its link in a browser: the first visit sends a one-time code
to that phone, which appears below too, and then sets a password of 15 characters or more.
Codes for "forgot password" also appear below.

`, devDomain, a.SMTP, a.API, caFile, metricsURL(a.Metrics), viewerURL,
		smtpHost, smtpPort, devDomain,
		smtpHost, smtpPort, user, pass, devDomain,
		caFile, a.API, apiKey)
	return b.String()
}

func metricsURL(addr string) string {
	if addr == "" {
		return "off"
	}
	return "http://" + addr + "/metrics"
}

// devTLS loads or makes a CA and a server certificate for localhost, 127.0.0.1 and ::1.
func devTLS(dir string) (*tls.Config, string, error) {
	caCertFile, caKeyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && time.Until(leaf.NotAfter) > 7*24*time.Hour {
			return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caCertFile, nil
		}
	}
	now := time.Now()
	ca, err := tenantpki.NewCA(devTenant, now)
	if err != nil {
		return nil, "", err
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, now, 365*24*time.Hour)
	if err != nil {
		return nil, "", err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, "", err
	}
	key, err := tenantpki.KeyPEM(cert)
	if err != nil {
		return nil, "", err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caCertFile, ca.CertPEM(), 0o644}, {caKeyFile, caKey, 0o600},
		{certFile, tenantpki.CertPEM(cert), 0o644}, {keyFile, key, 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, "", fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caCertFile, nil
}

// devCredentials is the demo sender's secrets, kept in the data folder so that they stay the
// same across restarts.
type devCredentials struct {
	Sender       gateway.Sender `json:"sender"`
	SMTPPassword string         `json:"smtpPassword"`
	APIKey       string         `json:"apiKey"`
}

func devSenders(ctx context.Context, dir string) (*gateway.Senders, string, string, string, error) {
	path := filepath.Join(dir, "demo-sender.yaml")
	var c devCredentials
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			return nil, "", "", "", fmt.Errorf("%s: %w (delete it to make new demo credentials)", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		c.Sender, c.SMTPPassword, c.APIKey, err = gateway.NewCredentials(ctx, devSender, "demo@"+devDomain)
		if err != nil {
			return nil, "", "", "", err
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			return nil, "", "", "", err
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, "", "", "", err
		}
	default:
		return nil, "", "", "", err
	}
	senders, err := gateway.NewSenders([]gateway.Sender{c.Sender})
	if err != nil {
		return nil, "", "", "", fmt.Errorf("%s: %w", path, err)
	}
	return senders, c.Sender.SMTPUsername, c.SMTPPassword, c.APIKey, nil
}

// lockedWriter keeps the banner and the console provider's texts from interleaving.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(l, format, args...)
}
