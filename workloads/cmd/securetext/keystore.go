// securetext keystore serves the keystore HTTP API of one tenant over mutual TLS (see the
// keystore package README), backed by Vault Transit (production) or a local key file
// (development only).
//
//	securetext keystore -tenant acme -tls-cert tls.crt -tls-key tls.key -client-ca ca.crt \
//	    -vault-addr https://vault:8200 -vault-role keystore-acme \
//	    -transit-mount securetext/acme/transit -state-mount securetext/acme/state \
//	    -wrapping-key messages -signing-key audit
//
// Every flag can also be given as the environment variable SECURETEXT_KEYSTORE_<FLAG>, upper
// case with '-' as '_' (SECURETEXT_KEYSTORE_VAULT_ADDR for -vault-addr); a flag on the command
// line wins. Logs are JSON lines on stderr. SIGINT or SIGTERM stops accepting connections,
// lets running requests finish (up to keystoreShutdownTimeout) and returns.

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/internal/flagenv"
	"github.com/securetext/securetext/workloads/internal/serve"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/tenantpki"
	"github.com/securetext/securetext/workloads/vaultlogin"
)

// keystoreEnvPrefix is the prefix of the environment variable that stands in for each flag.
const keystoreEnvPrefix = "SECURETEXT_KEYSTORE_"

// keystoreShutdownTimeout bounds how long running requests may take to finish after a stop signal.
const keystoreShutdownTimeout = 10 * time.Second

// keystoreConfig is what the keystore's flags say.
type keystoreConfig struct {
	listen, tenant, tlsCert, tlsKey, clientCA string
	metricsAddr                               string

	backend          string
	localKeyFile     string
	generateLocalKey bool

	vaultAddr, vaultCACert                string
	vaultAuth, vaultAuthMount, vaultRole  string
	vaultTokenFile, vaultToken            string
	vaultJWTFile                          string
	transitMount, wrappingKey, signingKey string
	stateMount                            string
	vaultTimeout                          time.Duration
	batch                                 keystore.BatchConfig
}

// parseKeystoreFlags reads args, with the environment (lookupEnv) filling in flags not given.
func parseKeystoreFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*keystoreConfig, error) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	c := &keystoreConfig{}
	fs := flag.NewFlagSet("securetext keystore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", ":8443", "address to serve HTTPS on")
	fs.StringVar(&c.tenant, "tenant", "", "tenant whose keys this keystore holds (required)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM file of the server certificate (required)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM file of the server certificate's private key (required)")
	fs.StringVar(&c.clientCA, "client-ca", "", "PEM file of the tenant CA that client certificates chain to (required)")
	fs.StringVar(&c.backend, "backend", "vault", "key holder: vault or local (local is for development only)")
	fs.StringVar(&c.localKeyFile, "local-key-file", "", "key file of the local backend")
	fs.BoolVar(&c.generateLocalKey, "generate-local-key", false, "create -local-key-file with new keys if it does not exist")
	fs.StringVar(&c.vaultAddr, "vault-addr", getenv("VAULT_ADDR"), "Vault address (default $VAULT_ADDR)")
	fs.StringVar(&c.vaultCACert, "vault-ca-cert", "", "PEM file of the CA that Vault's certificate chains to (default: system roots)")
	fs.StringVar(&c.vaultAuth, "vault-auth", "kubernetes", "Vault auth method: kubernetes or token (token is for development)")
	fs.StringVar(&c.vaultAuthMount, "vault-auth-mount", "kubernetes", "mount path of Vault's Kubernetes auth method")
	fs.StringVar(&c.vaultRole, "vault-role", "", "Vault role to log in as (kubernetes auth)")
	fs.StringVar(&c.vaultJWTFile, "vault-jwt-file", vaultlogin.DefaultServiceAccountTokenPath,
		"service account token presented to Vault's Kubernetes auth (a projected token, re-read at every login)")
	fs.StringVar(&c.vaultTokenFile, "vault-token-file", "", "file holding the Vault token (token auth; default $VAULT_TOKEN)")
	fs.StringVar(&c.transitMount, "transit-mount", "", "path of the tenant's Transit mount")
	fs.StringVar(&c.wrappingKey, "wrapping-key", "", "Transit aes256-gcm96 key that wraps data keys")
	fs.StringVar(&c.signingKey, "signing-key", "", "Transit ed25519 key that signs audit checkpoints")
	fs.StringVar(&c.stateMount, "state-mount", "", "path of the tenant's KV version 2 mount, where the keystore records the last audit checkpoint it signed")
	fs.StringVar(&c.metricsAddr, "metrics-addr", ":9466", "address of /metrics (plain HTTP); empty: off")
	fs.DurationVar(&c.vaultTimeout, "vault-timeout", 5*time.Second, "bound on each Vault call")
	fs.BoolVar(&c.batch.Disabled, "batch-disabled", false, "send every wrap and unwrap as its own Vault call")
	fs.IntVar(&c.batch.MaxItems, "batch-max-items", 256, "most items in one Vault batch call")
	fs.IntVar(&c.batch.MaxInFlight, "batch-max-in-flight", keystore.TransitMaxInFlight, "most Vault batch calls of one kind (wrap, unwrap) in progress at once")
	fs.DurationVar(&c.batch.Window, "batch-window", 0, "how long a batch waits for more requests after its first")

	if err := flagenv.Apply(fs, keystoreEnvPrefix, lookupEnv); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: keystore takes flags only", fs.Arg(0))
	}
	if c.vaultTokenFile == "" {
		c.vaultToken = getenv("VAULT_TOKEN")
	}
	return c, c.validate()
}

func (c *keystoreConfig) validate() error {
	if c.tenant == "" {
		return errors.New("-tenant is required")
	}
	if err := tenantpki.CheckLabel("tenant", c.tenant); err != nil {
		return fmt.Errorf("-tenant %q: %w", c.tenant, err)
	}
	switch {
	case c.listen == "":
		return errors.New("-listen is required")
	case c.tlsCert == "":
		return errors.New("-tls-cert is required (PEM file of the server certificate)")
	case c.tlsKey == "":
		return errors.New("-tls-key is required (PEM file of the server certificate's key)")
	case c.clientCA == "":
		return errors.New("-client-ca is required (PEM file of the tenant CA)")
	}
	switch c.backend {
	case "local":
		if c.localKeyFile == "" {
			return errors.New("-local-key-file is required with -backend local")
		}
		return nil
	case "vault":
	default:
		return fmt.Errorf("-backend %q is unknown: use vault or local", c.backend)
	}
	switch {
	case c.generateLocalKey:
		return errors.New("-generate-local-key only applies to -backend local")
	case c.vaultAddr == "":
		return errors.New("-vault-addr is required with -backend vault (or set VAULT_ADDR)")
	case c.transitMount == "":
		return errors.New("-transit-mount is required with -backend vault")
	case c.wrappingKey == "":
		return errors.New("-wrapping-key is required with -backend vault")
	case c.signingKey == "":
		return errors.New("-signing-key is required with -backend vault")
	case c.stateMount == "":
		return errors.New("-state-mount is required with -backend vault: the KV version 2 mount where the keystore records the last audit checkpoint it signed")
	case c.vaultTimeout <= 0:
		return fmt.Errorf("-vault-timeout must be positive, not %s", c.vaultTimeout)
	case c.batch.MaxItems < 1:
		return fmt.Errorf("-batch-max-items must be at least 1, not %d", c.batch.MaxItems)
	case c.batch.MaxInFlight < 1:
		return fmt.Errorf("-batch-max-in-flight must be at least 1, not %d", c.batch.MaxInFlight)
	case c.batch.Window < 0:
		return fmt.Errorf("-batch-window must not be negative, not %s", c.batch.Window)
	}
	switch c.vaultAuth {
	case "kubernetes":
		if c.vaultRole == "" {
			return errors.New("-vault-role is required with -vault-auth kubernetes")
		}
		if c.vaultAuthMount == "" {
			return errors.New("-vault-auth-mount must not be empty with -vault-auth kubernetes")
		}
	case "token":
		if c.vaultTokenFile == "" && c.vaultToken == "" {
			return errors.New("-vault-token-file is required with -vault-auth token (or set VAULT_TOKEN)")
		}
	default:
		return fmt.Errorf("-vault-auth %q is unknown: use kubernetes or token", c.vaultAuth)
	}
	return nil
}

// runKeystore runs "securetext keystore": it parses args, builds the backend and the server
// and serves until ctx is cancelled. ready, if set, is called with the listening address once
// the server accepts connections (tests).
func runKeystore(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer, ready func(addr string)) error {
	c, err := parseKeystoreFlags(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return fmt.Errorf("-tls-cert/-tls-key: load server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(c.clientCA)
	if err != nil {
		return fmt.Errorf("-client-ca: %w", err)
	}
	clientCAs, err := tenantpki.CertPoolFromPEM(caPEM)
	if err != nil {
		return fmt.Errorf("-client-ca %s: %w", c.clientCA, err)
	}

	var (
		svc    keystore.Service
		notary *audit.Notary
	)
	switch c.backend {
	case "local":
		l, err := openLocalKeys(c, log)
		if err != nil {
			return err
		}
		svc, notary = l.Service, l.Notary
	case "vault":
		t, err := newKeystoreTransit(c, log)
		if err != nil {
			return err
		}
		defer t.Close()
		svc = t
		notary, err = audit.NewNotary(c.tenant, t, t.CheckpointState(c.stateMount), nil)
		if err != nil {
			return err
		}
	}

	srv, err := keystore.NewServer(svc, keystore.ServerConfig{
		Tenant: c.tenant, Certificate: cert, ClientCAs: clientCAs, Logger: log, Checkpoints: notary,
	})
	if err != nil {
		return err
	}
	if c.metricsAddr != "" {
		stop, err := serveKeystoreMetrics(c.metricsAddr, srv, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	addr := ln.Addr().String()
	hs := srv.HTTPServer(addr)
	served := make(chan error, 1)
	go func() { served <- hs.ServeTLS(ln, "", "") }()
	log.Info("keystore listening on "+addr, slog.String("addr", addr),
		slog.String("tenant", c.tenant), slog.String("backend", c.backend))
	if ready != nil {
		ready(addr)
	}

	select {
	case err := <-served: // ServeTLS returns only on failure here: nobody called Shutdown
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	log.Info("keystore shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), keystoreShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", addr, err)
	}
	log.Info("keystore stopped")
	return nil
}

// openLocalKeys loads the local key file, creating it first when asked to, with the notary
// whose state is kept beside it.
func openLocalKeys(c *keystoreConfig, log *slog.Logger) (keystore.InProcess, error) {
	if c.generateLocalKey {
		_, err := os.Stat(c.localKeyFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := keystore.GenerateLocalKeyFile(c.localKeyFile); err != nil {
				return keystore.InProcess{}, fmt.Errorf("-local-key-file: %w", err)
			}
			log.Warn("generated a new local key file", slog.String("key_file", c.localKeyFile))
		case err != nil:
			return keystore.InProcess{}, fmt.Errorf("-local-key-file: %w", err)
		}
	}
	l, err := keystore.NewLocalInProcess(c.localKeyFile, c.tenant, log)
	if err != nil {
		return keystore.InProcess{}, fmt.Errorf("-local-key-file: %w", err)
	}
	return l, nil
}

// newKeystoreTransit starts the Vault Transit backend; it logs in in the background.
func newKeystoreTransit(c *keystoreConfig, log *slog.Logger) (*keystore.Transit, error) {
	vc := vaultapi.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client configuration: %w", vc.Error)
	}
	vc.Address = c.vaultAddr
	// The batchers keep up to 2×MaxInFlight Transit calls going (plus logins and renewals);
	// the default pool keeps GOMAXPROCS+1 idle connections, and every call past that would
	// open and close a connection.
	if t, ok := vc.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 64
	}
	if c.vaultCACert != "" {
		if err := vc.ConfigureTLS(&vaultapi.TLSConfig{CACert: c.vaultCACert}); err != nil {
			return nil, fmt.Errorf("-vault-ca-cert: %w", err)
		}
	}
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("-vault-addr: %w", err)
	}
	var auth vaultlogin.Auth
	if c.vaultAuth == "token" {
		auth = vaultlogin.TokenAuth{Token: c.vaultToken, TokenPath: c.vaultTokenFile}
	} else {
		auth = vaultlogin.KubernetesAuth{Mount: c.vaultAuthMount, Role: c.vaultRole, TokenPath: c.vaultJWTFile}
	}
	return keystore.NewTransit(keystore.TransitConfig{
		Client: client, Auth: auth, Mount: c.transitMount,
		WrappingKey: c.wrappingKey, SigningKey: c.signingKey,
		Timeout: c.vaultTimeout, Batch: c.batch, Logger: log,
	})
}

// serveKeystoreMetrics serves /metrics on addr (plain HTTP, as the gateway's and viewer's) with
// the keystore's series (keystore.NewMetrics): request latency and keys per request by
// operation, Vault Transit batch sizes and latency, refused callers by reason, and refused
// checkpoint extensions, each of which means the database offered an audit trail other than
// the one signed before. It instruments srv, so it runs before srv serves.
func serveKeystoreMetrics(addr string, srv *keystore.Server, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv.Instrument(keystore.NewMetrics(reg))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: metrics listener on %s: %w (is another process using the port?)", addr, err)
	}
	hs := serve.Metrics(reg, slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	go hs.Serve(ln)
	return func() { hs.Close() }, nil
}
