package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/tenantpki"
)

const keystoreTestTenant = "acme"

// envMap is an environment for runKeystore that ignores the test process's own.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// keystorePKI is a tenant CA with the keystore's server certificate, written as PEM files.
type keystorePKI struct {
	ca                     *tenantpki.CA
	certFile, keyFile, crt string
}

func newKeystorePKI(t *testing.T) *keystorePKI {
	t.Helper()
	now := time.Now()
	ca, err := tenantpki.NewCA(keystoreTestTenant, now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := tenantpki.KeyPEM(srv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &keystorePKI{ca: ca, certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), crt: filepath.Join(dir, "ca.crt")}
	writeTestFile(t, p.certFile, tenantpki.CertPEM(srv))
	writeTestFile(t, p.keyFile, keyPEM)
	writeTestFile(t, p.crt, ca.CertPEM())
	return p
}

func (p *keystorePKI) args() []string {
	return []string{"-tenant", keystoreTestTenant, "-tls-cert", p.certFile, "-tls-key", p.keyFile, "-client-ca", p.crt}
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runningKeystore is a keystore started by startKeystore.
type runningKeystore struct {
	addr string
	logs *syncBuffer
	stop func() error // cancels the context and returns what runKeystore returned
}

// startKeystore runs runKeystore in the background until it listens; the test stops it (and fails if runKeystore
// did not return nil) unless it called stop itself.
func startKeystore(t *testing.T, args []string, env map[string]string) *runningKeystore {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningKeystore{logs: &syncBuffer{}}
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runKeystore(ctx, args, envMap(env), io.Discard, r.logs, func(addr string) { addrc <- addr })
	}()
	select {
	case r.addr = <-addrc:
	case err := <-done:
		cancel()
		t.Fatalf("keystore exited before listening: %v\nlogs:\n%s", err, r.logs)
	}
	var once sync.Once
	var err error
	r.stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("keystore returned %v after its context was cancelled", err)
		}
		if t.Failed() {
			t.Logf("keystore logs:\n%s", r.logs)
		}
	})
	return r
}

// gateway returns a Client of the tenant's gateway for the keystore at addr.
func (p *keystorePKI) gateway(t *testing.T, addr string) *keystore.Client {
	t.Helper()
	cert, err := p.ca.IssueClient(keystoreTestTenant, tenantpki.ComponentGateway, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := keystore.NewClient(keystore.ClientConfig{URL: "https://" + addr, Certificate: cert, RootCAs: p.ca.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // also zeroes the reserve and waits for a refill under way
	return c
}

func TestKeystoreFlagValidation(t *testing.T) {
	dir := t.TempDir()
	tls := []string{"-tls-cert", "c", "-tls-key", "k", "-client-ca", "ca"}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the error must contain it
	}{
		{"no tenant", tls, nil, "-tenant is required"},
		{"tenant not a DNS label", append([]string{"-tenant", "Acme!"}, tls...), nil, "must be a DNS label"},
		{"bad tenant", append([]string{"-tenant", "Acme_Corp"}, tls...), nil, "-tenant"},
		{"unknown backend", append([]string{"-tenant", keystoreTestTenant, "-backend", "hsm"}, tls...), nil, `-backend "hsm" is unknown`},
		{"no tls cert", []string{"-tenant", keystoreTestTenant, "-tls-key", "k", "-client-ca", "ca"}, nil, "-tls-cert is required"},
		{"no tls key", []string{"-tenant", keystoreTestTenant, "-tls-cert", "c", "-client-ca", "ca"}, nil, "-tls-key is required"},
		{"no client ca", []string{"-tenant", keystoreTestTenant, "-tls-cert", "c", "-tls-key", "k"}, nil, "-client-ca is required"},
		{"unreadable tls files", []string{"-tenant", keystoreTestTenant, "-backend", "local", "-local-key-file", "x",
			"-tls-cert", missing, "-tls-key", missing, "-client-ca", missing}, nil, "-tls-cert/-tls-key"},
		{"local without key file", append([]string{"-tenant", keystoreTestTenant, "-backend", "local"}, tls...), nil, "-local-key-file is required"},
		{"vault without address", append([]string{"-tenant", keystoreTestTenant}, tls...), nil, "-vault-addr is required"},
		{"vault without mount", append([]string{"-tenant", keystoreTestTenant, "-vault-addr", "http://127.0.0.1:1"}, tls...), nil, "-transit-mount is required"},
		{"vault without state mount", append([]string{"-tenant", keystoreTestTenant, "-vault-addr", "http://127.0.0.1:1",
			"-transit-mount", "transit", "-wrapping-key", "w", "-signing-key", "s"}, tls...), nil, "-state-mount is required"},
		{"unknown vault auth", append([]string{"-tenant", keystoreTestTenant, "-transit-mount", "transit", "-wrapping-key", "w",
			"-signing-key", "s", "-state-mount", "state", "-vault-auth", "ldap"}, tls...), map[string]string{"VAULT_ADDR": "http://127.0.0.1:1"}, `-vault-auth "ldap" is unknown`},
		{"kubernetes without role", append([]string{"-tenant", keystoreTestTenant, "-vault-addr", "http://127.0.0.1:1",
			"-transit-mount", "transit", "-wrapping-key", "w", "-signing-key", "s", "-state-mount", "state"}, tls...), nil, "-vault-role is required"},
		{"token without token", append([]string{"-tenant", keystoreTestTenant, "-vault-addr", "http://127.0.0.1:1", "-vault-auth", "token",
			"-transit-mount", "transit", "-wrapping-key", "w", "-signing-key", "s", "-state-mount", "state"}, tls...), nil, "-vault-token-file is required"},
		{"bad batch", append([]string{"-tenant", keystoreTestTenant, "-vault-addr", "http://127.0.0.1:1", "-batch-max-items", "0",
			"-transit-mount", "transit", "-wrapping-key", "w", "-signing-key", "s", "-state-mount", "state"}, tls...), nil, "-batch-max-items"},
		{"positional argument", append([]string{"-tenant", keystoreTestTenant, "extra"}, tls...), nil, `unexpected argument "extra"`},
		{"tenant from env", tls, map[string]string{"SECURETEXT_KEYSTORE_TENANT": keystoreTestTenant, "SECURETEXT_KEYSTORE_BACKEND": "hsm"}, `-backend "hsm" is unknown`},
		{"flag beats env", append([]string{"-backend", "local"}, tls...), map[string]string{"SECURETEXT_KEYSTORE_TENANT": keystoreTestTenant, "SECURETEXT_KEYSTORE_BACKEND": "hsm"}, "-local-key-file is required"},
		{"bad env value", tls, map[string]string{"SECURETEXT_KEYSTORE_VAULT_TIMEOUT": "soon"}, "SECURETEXT_KEYSTORE_VAULT_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runKeystore(t.Context(), tc.args, envMap(tc.env), io.Discard, io.Discard, func(string) {
				t.Error("keystore started listening")
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestKeystoreLocalBackendEndToEnd(t *testing.T) {
	p := newKeystorePKI(t)
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	args := append(p.args(), "-listen", "127.0.0.1:0", "-backend", "local", "-local-key-file", keyFile, "-generate-local-key")
	r := startKeystore(t, args, nil)
	if _, err := os.Stat(keyFile); err != nil {
		t.Fatalf("-generate-local-key did not create the key file: %v", err)
	}
	if !strings.Contains(r.logs.String(), "keystore listening on "+r.addr) {
		t.Errorf("logs do not say where the keystore listens:\n%s", r.logs)
	}
	c := p.gateway(t, r.addr)
	ctx := t.Context()
	dk, err := c.WrapNewKey(ctx)
	if err != nil {
		t.Fatalf("WrapNewKey: %v", err)
	}
	if !strings.HasPrefix(dk.Wrapped, "local:v1:") {
		t.Errorf("wrapped key %q is not from the local backend", dk.Wrapped)
	}
	got, err := c.Unwrap(ctx, dk.Wrapped)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, dk.Plaintext) {
		t.Fatal("Unwrap returned another key than WrapNewKey")
	}
	c.CloseIdleConnections()
	if err := r.stop(); err != nil {
		t.Fatalf("run returned %v after its context was cancelled, want nil", err)
	}

	// A second startKeystore reuses the generated file: keys wrapped before still unwrap.
	r2 := startKeystore(t, args, nil)
	got, err = p.gateway(t, r2.addr).Unwrap(ctx, dk.Wrapped)
	if err != nil || !bytes.Equal(got, dk.Plaintext) {
		t.Fatalf("after restart, Unwrap = %v, want the same key", err)
	}
}

func TestKeystoreVaultBackendEndToEnd(t *testing.T) {
	v := testenv.StartVault(t)
	root := v.Client(t)
	ctx := t.Context()
	if err := root.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	if err := root.Sys().MountWithContext(ctx, "state", &vaultapi.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatalf("mount state: %v", err)
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": typ}); err != nil {
			t.Fatalf("create key %s: %v", name, err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeTestFile(t, tokenFile, []byte(v.RootToken+"\n"))

	p := newKeystorePKI(t)
	args := append(p.args(), "-listen", "127.0.0.1:0", "-vault-addr", v.Addr,
		"-vault-auth", "token", "-vault-token-file", tokenFile,
		"-transit-mount", "transit", "-state-mount", "state", "-wrapping-key", "messages", "-signing-key", "audit",
		"-metrics-addr", "127.0.0.1:0")
	r := startKeystore(t, args, map[string]string{"VAULT_TOKEN": "not-this-one"})
	c := p.gateway(t, r.addr)
	// The keystore logs in in the background; wait for it, asserting nothing about how fast.
	testenv.Eventually(t, "keystore ready", func() error { return c.Health(ctx) })

	dk, err := c.WrapNewKey(ctx)
	if err != nil {
		t.Fatalf("WrapNewKey: %v", err)
	}
	if !strings.HasPrefix(dk.Wrapped, "vault:v1:") {
		t.Errorf("wrapped key %q is not from Vault Transit", dk.Wrapped)
	}
	got, err := c.Unwrap(ctx, dk.Wrapped)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, dk.Plaintext) {
		t.Fatal("Unwrap returned another key than WrapNewKey")
	}

	// Checkpoints are signed through the notary, whose state is in the KV mount: a second
	// keystore process on the same Vault continues from it.
	chain := audit.NewChain(keystoreTestTenant, 0, [32]byte{})
	events := []audit.Event{
		chain.Append(audit.Event{Time: time.Unix(1700000000, 0), Kind: audit.KindAccepted, Actor: "system"}),
		chain.Append(audit.Event{Time: time.Unix(1700000001, 0), Kind: audit.KindNotified, Actor: "system"}),
	}
	cp, err := c.ExtendCheckpoint(ctx, events[:1])
	if err != nil {
		t.Fatalf("ExtendCheckpoint: %v", err)
	}
	pub, err := c.PublicKey(ctx)
	if err != nil {
		t.Fatalf("PublicKey: %v", err)
	}
	if err := audit.VerifyCheckpoint(pub, cp); err != nil || cp.KeyID != audit.KeyID(pub) {
		t.Fatalf("checkpoint does not verify under the public key %s: %v", cp.KeyID, err)
	}
	r2 := startKeystore(t, args, nil)
	c2 := p.gateway(t, r2.addr)
	testenv.Eventually(t, "second keystore ready", func() error { return c2.Health(ctx) })
	if last, ok, err := c2.LastCheckpoint(ctx); err != nil || !ok || last.Size != 1 {
		t.Fatalf("the second keystore's last checkpoint: size %d ok=%v err=%v; want 1", last.Size, ok, err)
	}
	if cp2, err := c2.ExtendCheckpoint(ctx, events[1:]); err != nil || cp2.Size != 2 {
		t.Fatalf("extension through the second keystore: size %d err=%v", cp2.Size, err)
	}
	if _, err := c.ExtendCheckpoint(ctx, events[1:]); !errors.Is(err, audit.ErrNotExtension) {
		t.Fatalf("the same extension again through the first keystore: %v, want ErrNotExtension", err)
	}
	c2.CloseIdleConnections()
	if err := r2.stop(); err != nil {
		t.Fatalf("second keystore: %v", err)
	}
	c.CloseIdleConnections()
	if err := r.stop(); err != nil {
		t.Fatalf("run returned %v after its context was cancelled, want nil", err)
	}
}
