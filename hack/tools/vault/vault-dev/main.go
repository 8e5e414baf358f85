// Command vault-dev is a Vault server in dev mode — in-memory storage, initialised with one key
// share and unsealed by itself — for SecureText's tests and `make run`.
//
// It exists because the full `vault` command does not build from the Go module proxy at v1.21.x:
// the sdk inside Vault's repository has API that no published github.com/hashicorp/vault/sdk
// version matches. Vault's core, its HTTP handler, the Transit engine and the Kubernetes auth
// plugin do build, so this command assembles a core from them the way Vault's own test clusters
// do (vault.NewCore, Initialize, Unseal) and serves the real HTTP API on a loopback address.
//
// Only the transit secrets engine and the kubernetes auth method are available besides the ones
// every core has (sys, token, cubbyhole, identity, kv).
//
// Once the server accepts requests it prints one JSON line to stdout,
//
//	{"addr":"http://127.0.0.1:8200","root_token":"hvs...."}
//
// and logs to stderr only. SIGINT or SIGTERM stop it; everything it stored is gone.
//
// Without TLS it listens on loopback only. With -tls-cert and -tls-key it serves HTTPS and may
// listen on any address: that is how the kind end-to-end suite runs it as a pod in its cluster
// (hack/kind/e2e), where the operator and the keystores refuse a Vault reached over plain HTTP.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	kubeauth "github.com/hashicorp/vault-plugin-auth-kubernetes"
	"github.com/hashicorp/vault/builtin/logical/transit"
	"github.com/hashicorp/vault/helper/namespace"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8200", "loopback `host:port` to serve on (port 0 picks a free port)")
	rootToken := flag.String("root-token", "", "`id` of the root token to create (default: the generated initial root token)")
	tlsCert := flag.String("tls-cert", "", "PEM `file` of the serving certificate (chain); with -tls-key, serve HTTPS on any address")
	tlsKey := flag.String("tls-key", "", "PEM `file` of the serving certificate's private key")
	flag.Parse()

	logger := hclog.New(&hclog.LoggerOptions{Name: "vault-dev", Output: os.Stderr, Level: hclog.Info})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *addr, *rootToken, *tlsCert, *tlsKey); err != nil {
		logger.Error("vault-dev failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger hclog.Logger, addr, rootToken, tlsCert, tlsKey string) error {
	ln, scheme, err := listen(addr, tlsCert, tlsKey)
	if err != nil {
		return err
	}
	apiAddr := scheme + "://" + ln.Addr().String()

	storage, err := inmem.NewInmem(nil, logger.Named("storage"))
	if err != nil {
		return err
	}
	backends := builtins{
		consts.PluginTypeSecrets:    {"transit": transit.Factory},
		consts.PluginTypeCredential: {"kubernetes": kubeauth.Factory},
	}
	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           storage,
		Logger:             logger,
		DisableMlock:       true,
		RedirectAddr:       apiAddr,
		LogicalBackends:    backends[consts.PluginTypeSecrets],
		CredentialBackends: backends[consts.PluginTypeCredential],
		BuiltinRegistry:    backends,
	})
	if err != nil {
		return err
	}
	defer core.Shutdown()

	token, err := initDev(core, rootToken)
	if err != nil {
		return err
	}

	server := &http.Server{
		Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
			Core:           core,
			ListenerConfig: &configutil.Listener{Type: "tcp", Address: ln.Addr().String(), TLSDisable: true},
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(ln) }()

	// The listener is already bound, so a client that reads this line can connect at once.
	line, err := json.Marshal(map[string]string{"addr": apiAddr, "root_token": token})
	if err != nil {
		return err
	}
	if _, err := fmt.Println(string(line)); err != nil {
		return err
	}
	logger.Info("vault dev server ready", "addr", apiAddr)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// listen opens the server's listener and says its scheme. Plain HTTP is refused anywhere but a
// loopback address, since this server has a root token that tests know; with a certificate and
// key it serves TLS 1.2 or newer on any address.
func listen(addr, certFile, keyFile string) (net.Listener, string, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, "", errors.New("-tls-cert and -tls-key go together: give both or neither")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("-addr %q: %w", addr, err)
	}
	if certFile == "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, "", fmt.Errorf("-addr %q: without -tls-cert the host must be a loopback IP address", addr)
		}
		ln, err := net.Listen("tcp", addr)
		return ln, "http", err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), "https", nil
}

// initDev does what `vault server -dev` does: initialise with a single unseal key, unseal, and
// optionally replace the generated root token by one with a chosen id.
func initDev(core *vault.Core, rootToken string) (string, error) {
	ctx := namespace.RootContext(context.Background())
	init, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig: &vault.SealConfig{SecretShares: 1, SecretThreshold: 1, Name: "shamir"},
	})
	if err != nil {
		return "", fmt.Errorf("initialize: %w", err)
	}
	if unsealed, err := core.Unseal(init.SecretShares[0]); err != nil || !unsealed {
		return "", fmt.Errorf("unseal: unsealed=%v: %w", unsealed, err)
	}
	if rootToken == "" {
		return init.RootToken, nil
	}

	// Like -dev-root-token-id: a root token with the chosen id, then revoke the generated one.
	req := &logical.Request{
		Operation:   logical.UpdateOperation,
		ClientToken: init.RootToken,
		Path:        "auth/token/create",
		Data: map[string]any{
			"id":                rootToken,
			"policies":          []string{"root"},
			"no_parent":         true,
			"no_default_policy": true,
		},
	}
	resp, err := core.HandleRequest(ctx, req)
	if err == nil && (resp == nil || resp.Auth == nil) {
		err = errors.New("no auth in response")
	}
	if err != nil {
		return "", fmt.Errorf("create root token %q: %w", rootToken, err)
	}
	req = &logical.Request{Operation: logical.UpdateOperation, ClientToken: init.RootToken, Path: "auth/token/revoke-self"}
	if _, err := core.HandleRequest(ctx, req); err != nil {
		return "", fmt.Errorf("revoke initial root token: %w", err)
	}
	return resp.Auth.ClientToken, nil
}

// builtins is the plugin catalog's view of what is compiled in. The core looks mounts up in
// CoreConfig.LogicalBackends/CredentialBackends first, but the catalog (plugin listing, mount
// versions, deprecation status) asks the BuiltinRegistry, which must therefore not be nil.
type builtins map[consts.PluginType]map[string]logical.Factory

func (b builtins) Contains(name string, t consts.PluginType) bool {
	_, ok := b[t][name]
	return ok
}

func (b builtins) Get(name string, t consts.PluginType) (func() (any, error), bool) {
	f, ok := b[t][name]
	if !ok {
		return nil, false
	}
	return func() (any, error) { return f, nil }, true
}

func (b builtins) Keys(t consts.PluginType) []string {
	var keys []string
	for name := range b[t] {
		keys = append(keys, name)
	}
	return keys
}

func (b builtins) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	if b.Contains(name, t) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

func (builtins) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }
