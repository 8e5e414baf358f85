// Package vaultlogin logs a process in to Vault and keeps it logged in: Kubernetes auth with
// the pod's service account token in a cluster, a token for development; the first login,
// renewals, and a new login (with capped backoff) when renewal ends or Vault refuses the
// token. The keystore and the operator both use it.
package vaultlogin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// Auth logs a process in to Vault. Login sets the client's token and returns the login's
// secret (nil when there is nothing to renew).
type Auth interface {
	Login(ctx context.Context, client *vaultapi.Client) (*vaultapi.Secret, error)
}

// DefaultServiceAccountTokenPath is where Kubernetes mounts the pod's service account token.
const DefaultServiceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// KubernetesAuth logs in with Vault's Kubernetes auth method: POST auth/<Mount>/login with the
// role and the pod's service account token, which Vault checks with the TokenReview API. The
// token file is read at every login, because Kubernetes rotates projected tokens.
type KubernetesAuth struct {
	Mount     string // default "kubernetes"
	Role      string
	TokenPath string // default DefaultServiceAccountTokenPath
}

// Login implements Auth.
func (a KubernetesAuth) Login(ctx context.Context, client *vaultapi.Client) (*vaultapi.Secret, error) {
	mount := strings.Trim(a.Mount, "/")
	if mount == "" {
		mount = "kubernetes"
	}
	path := a.TokenPath
	if path == "" {
		path = DefaultServiceAccountTokenPath
	}
	if a.Role == "" {
		return nil, errors.New("kubernetes auth: no role configured")
	}
	jwt, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubernetes auth: read service account token: %w", err)
	}
	secret, err := client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{
		"role": a.Role,
		"jwt":  strings.TrimSpace(string(jwt)),
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes auth: log in to auth/%s as role %s: %w", mount, a.Role, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("kubernetes auth: auth/%s/login returned no token", mount)
	}
	client.SetToken(secret.Auth.ClientToken)
	return secret, nil
}

// TokenAuth uses a token given directly (development only): Token, or else the contents of
// TokenPath. A renewable token is renewed.
type TokenAuth struct {
	Token     string
	TokenPath string
}

// Login implements Auth: it sets the token and looks it up, so a bad token fails here.
func (a TokenAuth) Login(ctx context.Context, client *vaultapi.Client) (*vaultapi.Secret, error) {
	token := a.Token
	if token == "" && a.TokenPath != "" {
		b, err := os.ReadFile(a.TokenPath)
		if err != nil {
			return nil, fmt.Errorf("token auth: read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, errors.New("token auth: no token given")
	}
	client.SetToken(token)
	self, err := client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("token auth: look up the token: %w", err)
	}
	renewable, _ := self.TokenIsRenewable()
	ttl, _ := self.TokenTTL()
	if !renewable || ttl == 0 {
		return nil, nil
	}
	// The watcher renews what it is given; lookup-self is not a login, so give it the shape
	// of one.
	return &vaultapi.Secret{Auth: &vaultapi.SecretAuth{
		ClientToken: token, Renewable: true, LeaseDuration: int(ttl.Seconds()),
	}}, nil
}

// Session keeps a Vault client logged in — the first login, renewals, and a new login when
// renewal ends or is asked for — and tells calls whether they may proceed.
type Session struct {
	client *vaultapi.Client
	auth   Auth
	log    *slog.Logger

	mu       sync.Mutex
	loginErr error         // nil once logged in
	loggedIn chan struct{} // closed at the first successful login

	relogin chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

var errNotLoggedIn = errors.New("not logged in to Vault yet")

const (
	loginRetryMin = 500 * time.Millisecond
	loginRetryMax = 30 * time.Second
	loginTimeout  = 10 * time.Second
)

// Start logs client in with auth in the background and keeps it logged in until Stop.
func Start(client *vaultapi.Client, auth Auth, log *slog.Logger) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Session{
		client:   client,
		auth:     auth,
		log:      log,
		loginErr: errNotLoggedIn,
		loggedIn: make(chan struct{}),
		relogin:  make(chan struct{}, 1),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go a.loop(ctx)
	return a
}

// Err is nil while the client is logged in, and otherwise says why not.
func (a *Session) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loginErr
}

func (a *Session) setErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loginErr = err
	if err == nil {
		select {
		case <-a.loggedIn:
		default:
			close(a.loggedIn)
		}
	}
}

// RequestLogin asks for a new login (after Vault refused the token with a 403); repeated
// requests coalesce.
func (a *Session) RequestLogin() {
	select {
	case a.relogin <- struct{}{}:
	default:
	}
}

// WaitLoggedIn waits for the first login, or for ctx; it then returns why there was none.
func (a *Session) WaitLoggedIn(ctx context.Context) error {
	select {
	case <-a.loggedIn:
		return nil
	case <-ctx.Done():
		if err := a.Err(); err != nil {
			return err
		}
		return ctx.Err()
	}
}

// Stop ends renewals and the login loop.
func (a *Session) Stop() {
	a.cancel()
	<-a.done
}

// loop logs in, renews the token while it can, and logs in again when renewal ends, Vault
// refuses the token, or the login fails (with capped exponential backoff).
func (a *Session) loop(ctx context.Context) {
	defer close(a.done)
	backoff := loginRetryMin
	for ctx.Err() == nil {
		loginCtx, cancel := context.WithTimeout(ctx, loginTimeout)
		secret, err := a.auth.Login(loginCtx, a.client)
		cancel()
		if err != nil {
			a.setErr(fmt.Errorf("log in to Vault: %w", err))
			a.log.Warn("Vault login failed; retrying", "error", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, loginRetryMax)
			continue
		}
		backoff = loginRetryMin
		a.setErr(nil)
		a.log.Info("logged in to Vault")
		a.drainRelogin()
		if !a.watch(ctx, secret) {
			return
		}
		// Do not hammer Vault if it refuses a fresh token at once (a policy problem).
		if !sleep(ctx, loginRetryMin) {
			return
		}
	}
}

// watch renews secret until its lifetime ends or a new login is requested. It returns false
// when ctx ends.
func (a *Session) watch(ctx context.Context, secret *vaultapi.Secret) bool {
	if secret == nil || secret.Auth == nil || !secret.Auth.Renewable {
		select {
		case <-ctx.Done():
			return false
		case <-a.relogin:
			return true
		}
	}
	w, err := a.client.NewLifetimeWatcher(&vaultapi.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		a.log.Warn("cannot renew the Vault token; logging in again", "error", err)
		return true
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.relogin:
			return true
		case <-w.RenewCh():
		case err := <-w.DoneCh():
			if err != nil {
				a.log.Warn("Vault token renewal failed; logging in again", "error", err)
			}
			return true
		}
	}
}

func (a *Session) drainRelogin() {
	select {
	case <-a.relogin:
	default:
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
