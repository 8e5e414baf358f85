package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/phone"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
)

const gatewayEnvPrefix = "SECURETEXT_GATEWAY_"

type gatewayFlags struct {
	tenant, tenantName, textDomain, region    string
	allowedCountries                          []string
	database                                  databaseFlags
	keystore                                  keystoreFlags
	sms                                       smsFlags
	tlsCert, tlsKey, sendersFile              string
	smtpAddr, smtpsAddr, apiAddr, metricsAddr string
	trustedNetworks                           string
	maxMessageBytes                           int64
	smtpMaxConns, smtpMaxConnsPerIP           int
	viewerURL                                 string
	smsRate                                   float64
	smsBurst                                  int
	smsLease                                  time.Duration
	quietHours, quietHoursZone                string
	checkpointInterval                        time.Duration
	retentionFile                             string
	status                                    statusFlags
}

func parseGatewayFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*gatewayFlags, error) {
	f := &gatewayFlags{}
	fs := flag.NewFlagSet("securetext gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.tenant, "tenant", "", "tenant id, a DNS label (required)")
	fs.StringVar(&f.tenantName, "tenant-name", "", "the organisation's name as patients know it; starts every SMS (required)")
	fs.StringVar(&f.textDomain, "text-domain", "", "mail domain of recipients, e.g. text.clinic.example (required)")
	fs.StringVar(&f.region, "region", "US", "default region of phone numbers (ISO 3166)")
	allowed := fs.String("allowed-countries", "", "comma-separated countries (ISO 3166-1 alpha-2, e.g. US,CA) whose numbers are texted; others are refused, naming these (default: the countries sharing -region's calling code, for US the 25 of the North American Numbering Plan)")
	f.database.register(fs, store.DefaultMaxConnections)
	f.keystore.register(fs, "gateway")
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
	f.sms.register(fs, "twilio, webhook or console (required)", true)
	fs.StringVar(&f.viewerURL, "viewer-url", "", "public base URL of the viewer; links are <viewer-url>/m/<token> (required)")
	fs.Float64Var(&f.smsRate, "sms-rate", 10, "most SMS per second (10DLC throughput is limited per campaign)")
	fs.IntVar(&f.smsBurst, "sms-burst", 0, "SMS that may go at once (default: the rate)")
	fs.DurationVar(&f.smsLease, "sms-lease", 2*time.Minute, "how long a gateway reserves an SMS it is sending; after a crash its SMS go out when the lease ends (keep it well above the provider's timeout)")
	fs.StringVar(&f.quietHours, "quiet-hours", "", "daily window without SMS, e.g. 21:00-08:00")
	fs.StringVar(&f.quietHoursZone, "quiet-hours-zone", "America/New_York", "time zone of -quiet-hours")
	fs.DurationVar(&f.checkpointInterval, "audit-checkpoint-interval", 5*time.Minute, "how often the audit chain head is signed")
	fs.StringVar(&f.retentionFile, "retention-file", "", "retention settings (JSON: the tenant's RetentionPolicy and LegalHolds, as the operator renders them), reread when the file changes; empty: nothing expires or is purged")
	f.status.register(fs)
	required := append([]string{"tenant", "tenant-name", "text-domain"}, keystoreFlagNames...)
	required = append(required, "tls-cert", "tls-key", "senders-file", "sms-provider", "viewer-url")
	if err := parseFlags(fs, gatewayEnvPrefix, args, lookupEnv, required...); err != nil {
		return nil, err
	}
	f.allowedCountries = phone.ParseCountries(*allowed)
	if _, err := phone.NewPolicy(f.region, f.allowedCountries); err != nil {
		return nil, fmt.Errorf("-region or -allowed-countries: %w", err)
	}
	if err := f.database.check(); err != nil {
		return nil, err
	}
	if err := f.keystore.check(); err != nil {
		return nil, err
	}
	return f, nil
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
	tlsConfig, err := serverTLS(f.tlsCert, f.tlsKey)
	if err != nil {
		return err
	}
	keys, err := f.keystore.client()
	if err != nil {
		return err
	}
	defer keys.Close()
	senders, err := gateway.LoadSenders(f.sendersFile)
	if err != nil {
		return err
	}
	provider, err := f.sms.open(log, nil) // the console provider writes to standard output
	if err != nil {
		return err
	}
	st, err := f.database.open(ctx, f.tenant, log)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := gateway.NewRegistry()
	background, linkExpiry, settings, err := retentionLoops(f.retentionFile, st, keys, reg, log)
	if err != nil {
		return err
	}
	status, err := f.status.server(f.tenant, f.keystore.ca, st, log)
	if err != nil {
		return err
	}
	return gateway.Run(ctx, gateway.Config{
		Tenant: f.tenant, TenantName: f.tenantName, TextDomain: f.textDomain,
		Region: f.region, AllowedCountries: f.allowedCountries,
		Store: st, Keys: keys, Senders: senders, Registry: reg,
		TLS:      tlsConfig,
		SMTPAddr: f.smtpAddr, SMTPSAddr: f.smtpsAddr, APIAddr: f.apiAddr, MetricsAddr: f.metricsAddr,
		TrustedNetworks: trusted, MaxMessageBytes: f.maxMessageBytes,
		SMTPMaxConnections: f.smtpMaxConns, SMTPMaxConnectionsPerIP: f.smtpMaxConnsPerIP,
		SMS: provider, ProviderName: f.sms.provider, ViewerURL: f.viewerURL,
		SMSRate: rate.Limit(f.smsRate), SMSBurst: f.smsBurst, SMSLease: f.smsLease, QuietHours: quiet,
		AuditCheckpointInterval: f.checkpointInterval,
		PolicyLinkExpiry:        linkExpiry,
		RetentionSettings:       settings,
		Background:              background,
		Status:                  status,
		StatusAddr:              f.status.addr,
		Logger:                  log,
		Started:                 started,
	})
}

// retentionPause is how long the sweeper leaves the database to intake after each batch, as a
// multiple of the batch's time: measured with hack/bench/retention over 1,000,000 messages on
// PostgreSQL with 32 writers on 2 CPUs, a pause of 2 keeps intake at 80 % of its rate while a
// sweep runs (a pause of 1: 69 %), and the sweep still purges about 2,500 messages a second.
const retentionPause = 2

// retentionLoops are the gateway's retention sweeper and the watcher of its settings file
// (none when file is empty), the policy's link expiry as it stands, and the settings as they
// stand (whose legal holds are exported). Every gateway replica runs them; a lease in the
// database lets one sweep at a time.
func retentionLoops(file string, st *store.Store, keys keystore.KeyRing, reg prometheus.Registerer, log *slog.Logger) ([]func(context.Context), func() time.Duration, func() retention.Settings, error) {
	if file == "" {
		return nil, nil, nil, nil
	}
	src, err := retention.LoadSource(file, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("-retention-file: %w", err)
	}
	sw, err := newSweeper(st, src.Settings, keys, reg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	loops := []func(context.Context){
		func(ctx context.Context) { src.Watch(ctx, retention.DefaultWatchInterval) },
		sw.Run,
	}
	return loops, func() time.Duration { return src.Settings().LinkExpiry() }, src.Settings, nil
}

// newSweeper is the retention sweeper of st, named in its lease by the host (the pod's name),
// which moves stored data keys to new versions of the wrapping key through keys.
func newSweeper(st *store.Store, settings func() retention.Settings, keys keystore.KeyRing, reg prometheus.Registerer, log *slog.Logger) (*retention.Sweeper, error) {
	host, _ := os.Hostname()
	return retention.NewSweeper(retention.SweeperConfig{
		Store: st, Settings: settings, Holder: host, Keys: keys, Pause: retentionPause,
		Metrics: retention.NewMetrics(reg), Logger: log,
	})
}
