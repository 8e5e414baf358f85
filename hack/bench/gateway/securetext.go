package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
	"github.com/securetext/securetext/workloads/vaultlogin"
	"github.com/securetext/securetext/workloads/vaultpolicy"
)

const (
	benchTenant = "bench"
	benchDomain = "text.bench.example"
	benchSender = "ehr"
)

// stack is SecureText as a tenant runs it, on this machine: PostgreSQL (durable commits), a
// Vault dev server with the tenant's Transit keys, the keystore in front of Vault over mTLS,
// and gateway.Run with a webhook SMS provider whose receiver discards the texts.
type stack struct {
	dir     string
	pg      *testenv.Postgres
	vault   *testenv.Vault
	dsn     string
	store   *store.Store
	transit *keystore.Transit
	ksHTTP  *http.Server
	smsHTTP *http.Server
	sms     atomic.Int64 // texts the receiver took
	smsConn atomic.Int64 // TCP connections the notifier opened to the receiver
	roots   *x509.CertPool
	apiKey  string
	addrs   gateway.Addrs
	logFile *os.File

	cancel context.CancelFunc
	done   chan error
}

func startStack(ctx context.Context, dir string, sessions int) (s *stack, err error) {
	s = &stack{dir: dir}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.logFile, err = os.Create(filepath.Join(dir, "securetext.log")); err != nil {
		return s, err
	}
	// The gateway logs as in production (JSON, info), to a file rather than a terminal.
	log := slog.New(slog.NewJSONHandler(s.logFile, nil))

	if s.pg, err = testenv.StartPostgresProcess(ctx); err != nil {
		return s, err
	}
	if s.dsn, err = s.pg.CreateDatabase(ctx, "bench_"+randomHex(4)); err != nil {
		return s, err
	}
	if s.vault, err = testenv.StartVaultProcess(ctx); err != nil {
		return s, err
	}
	token, err := setUpTransit(ctx, s.vault)
	if err != nil {
		return s, err
	}
	vcfg := vaultapi.DefaultConfig()
	vcfg.Address = s.vault.Addr
	if t, ok := vcfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 64 // as the keystore command does
	}
	vclient, err := vaultapi.NewClient(vcfg)
	if err != nil {
		return s, err
	}
	vclient.ClearNamespace()
	s.transit, err = keystore.NewTransit(keystore.TransitConfig{
		Client: vclient, Auth: vaultlogin.TokenAuth{Token: token}, Mount: "transit",
		WrappingKey: "messages", SigningKey: "audit", Logger: log,
	})
	if err != nil {
		return s, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = s.transit.WaitReady(readyCtx)
	cancel()
	if err != nil {
		return s, fmt.Errorf("keystore: log in to Vault: %w", err)
	}

	// The keystore serves the gateway over mTLS, as in a cluster.
	now := time.Now()
	ca, err := tenantpki.NewCA(benchTenant, now)
	if err != nil {
		return s, err
	}
	s.roots = ca.CertPool()
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	ksCert, err := ca.IssueServer([]string{"localhost"}, loopback, now, 24*time.Hour)
	if err != nil {
		return s, err
	}
	notary, err := audit.NewNotary(benchTenant, s.transit, s.transit.CheckpointState("state"), nil)
	if err != nil {
		return s, err
	}
	ks, err := keystore.NewServer(s.transit, keystore.ServerConfig{Tenant: benchTenant, Certificate: ksCert, ClientCAs: s.roots, Logger: log, Checkpoints: notary})
	if err != nil {
		return s, err
	}
	ksLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	s.ksHTTP = ks.HTTPServer(ksLn.Addr().String())
	go func() { _ = s.ksHTTP.Serve(tls.NewListener(ksLn, s.ksHTTP.TLSConfig)) }()
	clientCert, err := ca.IssueClient(benchTenant, tenantpki.ComponentGateway, now, 24*time.Hour)
	if err != nil {
		return s, err
	}
	keys, err := keystore.NewClient(keystore.ClientConfig{URL: "https://" + ksLn.Addr().String(), Certificate: clientCert, RootCAs: s.roots})
	if err != nil {
		return s, err
	}
	gwCert, err := ca.IssueServer([]string{"localhost"}, loopback, now, 24*time.Hour)
	if err != nil {
		return s, err
	}

	if s.store, err = store.Open(ctx, s.dsn, benchTenant, store.WithLogger(log)); err != nil {
		return s, err
	}
	snd, _, apiKey, err := gateway.NewCredentials(ctx, benchSender, "ehr@clinic.example")
	if err != nil {
		return s, err
	}
	s.apiKey = apiKey
	senders, err := gateway.NewSenders([]gateway.Sender{snd})
	if err != nil {
		return s, err
	}

	// The SMS gateway: takes every text and throws it away.
	secret := randomHex(32)
	smsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	s.smsHTTP = &http.Server{ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.smsConn.Add(1)
		}
	}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		n := s.sms.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"id":"sms-%d"}`, n)
	})}
	go func() { _ = s.smsHTTP.Serve(smsLn) }()
	provider, err := sms.New(sms.Config{Type: sms.TypeWebhook, Webhook: sms.WebhookConfig{
		URL: "http://" + smsLn.Addr().String() + "/send", Secret: []byte(secret), Logger: log,
	}})
	if err != nil {
		return s, err
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	s.cancel, s.done = cancelRun, make(chan error, 1)
	started := make(chan gateway.Addrs, 1)
	go func() {
		s.done <- gateway.Run(runCtx, gateway.Config{
			Tenant: benchTenant, TenantName: "Bench Clinic", TextDomain: benchDomain, Region: "US",
			Store: s.store, Keys: keys, Senders: senders,
			TLS:      &tls.Config{Certificates: []tls.Certificate{gwCert}, MinVersion: tls.VersionTLS12},
			SMTPAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
			// smtp-source can neither STARTTLS nor AUTH: it submits as a trusted relay.
			TrustedNetworks: []gateway.TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Sender: benchSender}},
			// smtp-source connects once per message and gives up at the first 421; a relay
			// sending from one address gets the same setting (-smtp-max-connections-per-ip).
			SMTPMaxConnectionsPerIP: 4 * sessions,
			SMS:                     provider, ProviderName: sms.TypeWebhook, ViewerURL: "https://view.bench.example",
			// The carrier's rate limit would hold texts back for minutes; here the notifier
			// sends as fast as it can, so its work is part of what is measured.
			SMSRate: rate.Limit(10000), SMSBurst: 1000,
			Logger:  log,
			Started: func(a gateway.Addrs) { started <- a },
		})
	}()
	select {
	case s.addrs = <-started:
		return s, nil
	case err := <-s.done:
		s.done <- err
		return s, fmt.Errorf("gateway did not start: %w", err)
	case <-time.After(time.Minute):
		return s, errors.New("gateway did not start within a minute")
	}
}

// setUpTransit mounts Transit with the tenant's keys and returns a keystore token.
func setUpTransit(ctx context.Context, v *testenv.Vault) (string, error) {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	root, err := vaultapi.NewClient(cfg)
	if err != nil {
		return "", err
	}
	root.SetToken(v.RootToken)
	root.ClearNamespace()
	if err := root.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		return "", fmt.Errorf("mount transit: %w", err)
	}
	if err := root.Sys().MountWithContext(ctx, "state", &vaultapi.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return "", fmt.Errorf("mount state: %w", err)
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": typ}); err != nil {
			return "", fmt.Errorf("create transit key %s: %w", name, err)
		}
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "keystore", vaultpolicy.Keystore("transit", "state", "messages", "audit")); err != nil {
		return "", fmt.Errorf("write policy: %w", err)
	}
	renewable := true
	secret, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"keystore"}, NoDefaultPolicy: true, TTL: "4h", Renewable: &renewable,
	})
	if err != nil {
		return "", fmt.Errorf("create keystore token: %w", err)
	}
	return secret.Auth.ClientToken, nil
}

// counts returns how many messages the store holds per channel, and how many notifications
// are pending.
func (s *stack) counts(ctx context.Context) (map[string]int, int, error) {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT channel, count(*) FROM messages GROUP BY channel`)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]int{}
	for rows.Next() {
		var ch string
		var n int
		if err := rows.Scan(&ch, &n); err != nil {
			return nil, 0, err
		}
		out[ch] = n
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	depth, _, err := s.store.OutboxStats(ctx, time.Now())
	return out, depth, err
}

// dbStats is what PostgreSQL counts: commits in the tenant's database, and WAL records,
// bytes and fsyncs of the whole server.
type dbStats struct {
	commits, walRecords, walBytes, walSyncs int64
}

func (s *stack) dbStats(ctx context.Context) (dbStats, error) {
	// Backends publish their counts at most once a second, and when idle for a second.
	time.Sleep(1500 * time.Millisecond)
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return dbStats{}, err
	}
	defer conn.Close(context.Background())
	var st dbStats
	err = conn.QueryRow(ctx, `SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		wal_records, wal_bytes::bigint, wal_sync FROM pg_stat_wal`).Scan(&st.commits, &st.walRecords, &st.walBytes, &st.walSyncs)
	return st, err
}

func (d dbStats) perMessage(before dbStats, messages int) string {
	n := float64(messages)
	return fmt.Sprintf("PostgreSQL did %.1f commits, %.1f WAL fsyncs, %.0f WAL records and %.1f KiB of WAL per message",
		float64(d.commits-before.commits)/n, float64(d.walSyncs-before.walSyncs)/n,
		float64(d.walRecords-before.walRecords)/n, float64(d.walBytes-before.walBytes)/n/1024)
}

// drain waits until the notifier has sent every pending SMS, and returns how long that took.
func (s *stack) drain(ctx context.Context, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		depth, _, err := s.store.OutboxStats(ctx, time.Now())
		if err != nil {
			return 0, err
		}
		if depth == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > bound {
			return 0, fmt.Errorf("%d SMS still pending %s after the run", depth, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the gateway and everything under it.
func (s *stack) Stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.ksHTTP != nil {
		_ = s.ksHTTP.Close()
	}
	if s.smsHTTP != nil {
		_ = s.smsHTTP.Close()
	}
	if s.transit != nil {
		s.transit.Close()
	}
	if s.vault != nil {
		_ = s.vault.Stop()
	}
	if s.pg != nil {
		_ = s.pg.Stop()
	}
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
