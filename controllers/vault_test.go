package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/vaultlogin"
	"github.com/securetext/securetext/workloads/vaultpolicy"
)

const operatorPolicyFile = "../config/rbac/vault-operator-policy.hcl"

// vaultCounter counts the requests a provisioner sends, so tests can prove that a no-op
// Ensure only reads.
type vaultCounter struct {
	next    http.RoundTripper
	mu      sync.Mutex
	all     []string // "METHOD /v1/path"
	noToken []string // those sent without a Vault token, kept
}

func (c *vaultCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Method + " " + req.URL.Path
	c.mu.Lock()
	c.all = append(c.all, r)
	if req.Header.Get("X-Vault-Token") == "" {
		c.noToken = append(c.noToken, r)
	}
	c.mu.Unlock()
	return c.next.RoundTrip(req)
}

// tokenless returns the requests sent without a Vault token.
func (c *vaultCounter) tokenless() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.noToken)
}

// writes returns the non-GET requests since the last call, and forgets all requests.
func (c *vaultCounter) writes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var w []string
	for _, r := range c.all {
		if !strings.HasPrefix(r, http.MethodGet+" ") {
			w = append(w, r)
		}
	}
	c.all = nil
	return w
}

func (c *vaultCounter) requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all)
}

// vaultFixture is a fresh Vault dev server with Kubernetes auth enabled, as a cluster admin
// sets it up before installing the operator.
type vaultFixture struct {
	v    *testenv.Vault
	root *vaultapi.Client
}

func startVaultFixture(t *testing.T) *vaultFixture {
	t.Helper()
	v := testenv.StartVault(t)
	root := v.Client(t)
	root.SetMaxRetries(0)
	if err := root.Sys().EnableAuthWithOptionsWithContext(t.Context(), DefaultVaultAuthMount,
		&vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v", err)
	}
	return &vaultFixture{v: v, root: root}
}

// provisioner talks to the fixture's Vault with token, through a request counter.
func (f *vaultFixture) provisioner(t *testing.T, token string) (*VaultProvisioner, *vaultCounter) {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = f.v.Addr
	cfg.MaxRetries = 0
	counter := &vaultCounter{next: cfg.HttpClient.Transport}
	cfg.HttpClient.Transport = counter
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(token)
	client.ClearNamespace()
	return &VaultProvisioner{Client: client, Timeout: 2 * time.Second}, counter
}

// token creates a token with exactly these policies, as Vault's Kubernetes auth would issue.
func (f *vaultFixture) token(t *testing.T, policies ...string) string {
	t.Helper()
	s, err := f.root.Auth().Token().CreateWithContext(t.Context(), &vaultapi.TokenCreateRequest{
		Policies: policies, NoDefaultPolicy: true, TTL: "1h",
	})
	if err != nil {
		t.Fatalf("create token with %v: %v", policies, err)
	}
	return s.Auth.ClientToken
}

// as returns a client of the fixture's Vault that uses token.
func (f *vaultFixture) as(t *testing.T, token string) *vaultapi.Client {
	t.Helper()
	c, err := f.root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func (f *vaultFixture) read(t *testing.T, path string) map[string]any {
	t.Helper()
	s, err := f.root.Logical().ReadWithContext(t.Context(), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

func (f *vaultFixture) write(t *testing.T, path string, data map[string]any) {
	t.Helper()
	if _, err := f.root.Logical().WriteWithContext(t.Context(), path, data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func testTenant(name string) TenantVault {
	return TenantVault{
		Tenant:         name,
		Namespace:      securetextv1alpha1.TenantNamespacePrefix + name,
		ServiceAccount: "keystore",
		RotationPeriod: 90 * 24 * time.Hour,
		Audience:       "vault",
	}
}

func ensure(t *testing.T, p *VaultProvisioner, tv TenantVault) VaultResult {
	t.Helper()
	res, err := p.Ensure(t.Context(), tv)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", tv.Tenant, err)
	}
	return res
}

// ensureNoop asserts that Ensure finds nothing to do and sends only reads.
func ensureNoop(t *testing.T, p *VaultProvisioner, c *vaultCounter, tv TenantVault) {
	t.Helper()
	c.writes()
	res := ensure(t, p, tv)
	if w := c.writes(); len(w) > 0 || len(res.Changes) > 0 {
		t.Fatalf("Ensure of a tenant that matches: writes %v, changes %v; want none", w, res.Changes)
	}
}

func encrypt(t *testing.T, c *vaultapi.Client, tv TenantVault, plaintext string) string {
	t.Helper()
	s, err := c.Logical().WriteWithContext(t.Context(), tv.Mount()+"/encrypt/"+tv.WrappingKey(),
		map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte(plaintext))})
	if err != nil {
		t.Fatalf("encrypt with %s: %v", tv.Mount(), err)
	}
	return s.Data["ciphertext"].(string)
}

// decrypt returns the plaintext, or an error when Vault gives none.
func decrypt(t *testing.T, c *vaultapi.Client, tv TenantVault, ciphertext string) (string, error) {
	t.Helper()
	s, err := c.Logical().WriteWithContext(t.Context(), tv.Mount()+"/decrypt/"+tv.WrappingKey(),
		map[string]any{"ciphertext": ciphertext})
	if err != nil {
		return "", err
	}
	if s == nil || s.Data["plaintext"] == nil {
		return "", errors.New("no plaintext in Vault's answer")
	}
	b, err := base64.StdEncoding.DecodeString(s.Data["plaintext"].(string))
	return string(b), err
}

func wantStatus(t *testing.T, err error, status int, what string) {
	t.Helper()
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) || re.StatusCode != status {
		t.Errorf("%s: got %v, want Vault status %d", what, err, status)
	}
}

func jsonInt(v any) int64 {
	n, _ := v.(json.Number).Int64()
	return n
}

func TestVaultEnsureCreatesEverything(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")

	res := ensure(t, p, tv)
	if len(res.Changes) != 6 { // two mounts, two keys, policy, role
		t.Errorf("changes %q: want Transit and state mounts, 2 keys, policy, role", res.Changes)
	}
	if res.Rotated || res.NextRotation.Before(time.Now().Add(tv.RotationPeriod-time.Minute)) {
		t.Errorf("new key: rotated=%v next rotation %v, want not rotated and due in %v", res.Rotated, res.NextRotation, tv.RotationPeriod)
	}

	mount := f.read(t, "sys/mounts/"+tv.Mount())
	if mount["type"] != "transit" || mount["description"] != mountDescription(tv) {
		t.Errorf("mount %s: type %v description %q", tv.Mount(), mount["type"], mount["description"])
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		k := f.read(t, tv.Mount()+"/keys/"+name)
		if k["type"] != typ || k["exportable"] != false || k["deletion_allowed"] != false || k["allow_plaintext_backup"] != false {
			t.Errorf("key %s: type %v exportable %v deletion_allowed %v allow_plaintext_backup %v; want %s, all false",
				name, k["type"], k["exportable"], k["deletion_allowed"], k["allow_plaintext_backup"], typ)
		}
	}
	policy := f.read(t, "sys/policies/acl/securetext-tenant-acme")
	if want := vaultpolicy.Keystore("securetext/acme/transit", "securetext/acme/state", "messages", "audit"); policy["policy"] != want {
		t.Errorf("policy:\n%v\nwant vaultpolicy.Keystore:\n%s", policy["policy"], want)
	}
	role := f.read(t, "auth/kubernetes/role/securetext-tenant-acme")
	for field, want := range map[string][]string{
		"bound_service_account_names":      {"keystore"},
		"bound_service_account_namespaces": {"securetext-acme"},
		"token_policies":                   {"securetext-tenant-acme"},
		"token_bound_cidrs":                {},
	} {
		if got := stringList(role[field]); !slices.Equal(got, want) {
			t.Errorf("role %s = %q, want %q", field, got, want)
		}
	}
	if role["token_no_default_policy"] != true || jsonInt(role["token_ttl"]) != 900 || jsonInt(role["token_max_ttl"]) != 3600 ||
		role["audience"] != "vault" || role["bound_service_account_namespace_selector"] != "" || role["token_type"] != "service" {
		t.Errorf("role: no_default_policy %v ttl %v max_ttl %v audience %v selector %q type %v",
			role["token_no_default_policy"], role["token_ttl"], role["token_max_ttl"], role["audience"],
			role["bound_service_account_namespace_selector"], role["token_type"])
	}

	// The keystore's token works with its keys.
	tenantToken := f.as(t, f.token(t, tv.PolicyName()))
	ct := encrypt(t, tenantToken, tv, "potassium 6.1")
	if got, err := decrypt(t, tenantToken, tv, ct); err != nil || got != "potassium 6.1" {
		t.Fatalf("decrypt with the tenant's token: %q, %v", got, err)
	}

	ensureNoop(t, p, counter, tv)
	ensureNoop(t, p, counter, tv)

	// Latency is recorded by operation, with no tenant anywhere in the series.
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, mf := range families {
		if mf.GetName() != "securetext_operator_vault_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "operation" || strings.Contains(l.GetValue(), "acme") {
					t.Errorf("unexpected label %s=%s", l.GetName(), l.GetValue())
				}
				ops[l.GetValue()] = m.GetHistogram().GetSampleCount() > 0
			}
		}
	}
	for _, op := range []string{"read_mount", "mount", "read_key", "create_key", "read_policy", "write_policy", "read_role", "write_role"} {
		if !ops[op] {
			t.Errorf("no latency recorded for operation %s (have %v)", op, ops)
		}
	}
}

func TestVaultEnsureRepairsDrift(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	ensure(t, p, tv)
	rolePath := "auth/kubernetes/role/" + tv.RoleName()

	cases := []struct {
		name  string
		drift func(t *testing.T)
		check func(t *testing.T)
	}{
		{"policy widened", func(t *testing.T) {
			f.write(t, "sys/policies/acl/"+tv.PolicyName(), map[string]any{"policy": tv.Policy() + `path "securetext/+/transit/*" { capabilities = ["update"] }` + "\n"})
		}, func(t *testing.T) {
			if got := f.read(t, "sys/policies/acl/"+tv.PolicyName())["policy"]; got != tv.Policy() {
				t.Errorf("policy not repaired:\n%v", got)
			}
		}},
		{"policy deleted", func(t *testing.T) {
			if _, err := f.root.Logical().DeleteWithContext(t.Context(), "sys/policies/acl/"+tv.PolicyName()); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			if got := f.read(t, "sys/policies/acl/"+tv.PolicyName())["policy"]; got != tv.Policy() {
				t.Errorf("policy not recreated:\n%v", got)
			}
		}},
		{"role bound to any service account in any namespace", func(t *testing.T) {
			f.write(t, rolePath, map[string]any{"bound_service_account_names": []string{"*"}, "bound_service_account_namespaces": []string{"*"}})
		}, func(t *testing.T) {
			role := f.read(t, rolePath)
			if names, nss := stringList(role["bound_service_account_names"]), stringList(role["bound_service_account_namespaces"]); !slices.Equal(names, []string{"keystore"}) || !slices.Equal(nss, []string{"securetext-acme"}) {
				t.Errorf("role binding not repaired: names %q namespaces %q", names, nss)
			}
		}},
		{"role with a namespace selector and the default policy", func(t *testing.T) {
			f.write(t, rolePath, map[string]any{"bound_service_account_namespace_selector": `{"matchLabels":{"a":"b"}}`,
				"token_no_default_policy": false, "token_policies": []string{tv.PolicyName(), "admin"}, "token_ttl": "24h", "token_max_ttl": "768h"})
		}, func(t *testing.T) {
			role := f.read(t, rolePath)
			if role["bound_service_account_namespace_selector"] != "" || role["token_no_default_policy"] != true ||
				!slices.Equal(stringList(role["token_policies"]), []string{tv.PolicyName()}) || jsonInt(role["token_ttl"]) != 900 {
				t.Errorf("role not repaired: %v", role)
			}
		}},
		{"role deleted", func(t *testing.T) {
			if _, err := f.root.Logical().DeleteWithContext(t.Context(), rolePath); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			if f.read(t, rolePath) == nil {
				t.Error("role not recreated")
			}
		}},
		{"wrapping key made deletable", func(t *testing.T) {
			f.write(t, tv.Mount()+"/keys/messages/config", map[string]any{"deletion_allowed": true})
		}, func(t *testing.T) {
			if f.read(t, tv.Mount()+"/keys/messages")["deletion_allowed"] != false {
				t.Error("deletion_allowed not repaired")
			}
		}},
		{"mount description changed", func(t *testing.T) {
			desc := "scratch space"
			if err := f.root.Sys().TuneMountAllowNilWithContext(t.Context(), tv.Mount(), vaultapi.TuneMountConfigInput{Description: &desc}); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			if f.read(t, "sys/mounts/"+tv.Mount())["description"] != mountDescription(tv) {
				t.Error("description not repaired")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.drift(t)
			counter.writes()
			res := ensure(t, p, tv)
			if w := counter.writes(); len(w) != 1 || len(res.Changes) != 1 {
				t.Errorf("repair: writes %q, changes %q; want exactly one of each", w, res.Changes)
			}
			tc.check(t)
			ensureNoop(t, p, counter, tv)
		})
	}
}

func TestVaultEnsureRefusesConflicts(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	for _, tc := range []struct {
		name string
		key  map[string]any
		want string
	}{
		{"exportable", map[string]any{"type": "aes256-gcm96", "exportable": true}, "exportable"},
		{"plaintext backup", map[string]any{"type": "aes256-gcm96", "allow_plaintext_backup": true}, "plaintext backup"},
		{"other type", map[string]any{"type": "chacha20-poly1305"}, "type chacha20-poly1305"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tv := testTenant(strings.ReplaceAll(tc.name, " ", "-"))
			if err := f.root.Sys().MountWithContext(t.Context(), tv.Mount(), &vaultapi.MountInput{Type: "transit"}); err != nil {
				t.Fatal(err)
			}
			f.write(t, tv.Mount()+"/keys/messages", tc.key)
			counter.writes()
			_, err := p.Ensure(t.Context(), tv)
			if VaultReason(err) != securetextv1alpha1.ReasonVaultConflict || IsVaultTemporary(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ensure: %v (reason %s); want a permanent %s naming %q", err, VaultReason(err), securetextv1alpha1.ReasonVaultConflict, tc.want)
			}
			// The key is left alone: a conflict is for a person to settle.
			if w := counter.writes(); len(w) != 2 || !strings.HasSuffix(w[0], "/transit/tune") || !strings.HasSuffix(w[1], "/state") {
				t.Errorf("writes %q: want only the mount description and the state mount", w)
			}
		})
	}
}

func TestVaultRotation(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	ensure(t, p, tv)
	ct := encrypt(t, f.root, tv, "before rotation")

	p.Now = func() time.Time { return time.Now().Add(tv.RotationPeriod - time.Hour) }
	ensureNoop(t, p, counter, tv)

	p.Now = func() time.Time { return time.Now().Add(tv.RotationPeriod + time.Minute) }
	res := ensure(t, p, tv)
	if w := counter.writes(); !res.Rotated || len(w) != 1 || !strings.HasSuffix(w[0], "/keys/messages/rotate") {
		t.Fatalf("rotation due: rotated=%v writes %q", res.Rotated, w)
	}
	if !res.NextRotation.After(time.Now().Add(tv.RotationPeriod)) {
		t.Errorf("next rotation %v: want a period after now", res.NextRotation)
	}
	wrapping := f.read(t, tv.Mount()+"/keys/messages")
	if jsonInt(wrapping["latest_version"]) != 2 {
		t.Errorf("wrapping key latest_version %v, want 2", wrapping["latest_version"])
	}
	if jsonInt(f.read(t, tv.Mount()+"/keys/audit")["latest_version"]) != 1 {
		t.Error("the signing key was rotated too")
	}
	if ct2 := encrypt(t, f.root, tv, "after"); !strings.HasPrefix(ct2, "vault:v2:") {
		t.Errorf("new ciphertext %q: want version 2", ct2)
	}
	if got, err := decrypt(t, f.root, tv, ct); err != nil || got != "before rotation" {
		t.Errorf("old ciphertext after rotation: %q, %v; old versions must stay usable", got, err)
	}

	// The new version is fresh: with the real clock nothing is due.
	p.Now = nil
	ensureNoop(t, p, counter, tv)

	// Without a period the key is never rotated.
	tv.RotationPeriod = 0
	p.Now = func() time.Time { return time.Now().Add(100 * 365 * 24 * time.Hour) }
	if res := ensure(t, p, tv); res.Rotated || !res.NextRotation.IsZero() {
		t.Errorf("no period: rotated=%v next %v", res.Rotated, res.NextRotation)
	}
}

func TestVaultUnavailable(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	p.Timeout = 300 * time.Millisecond
	tv := testTenant("acme")

	t.Run("no answer", func(t *testing.T) {
		if err := f.v.Pause(); err != nil {
			t.Fatal(err)
		}
		_, err := p.Ensure(t.Context(), tv)
		if err := f.v.Resume(); err != nil {
			t.Fatal(err)
		}
		if VaultReason(err) != securetextv1alpha1.ReasonVaultUnavailable || !IsVaultTemporary(err) || !strings.Contains(err.Error(), "read mount securetext/acme/transit") {
			t.Fatalf("paused Vault: %v (reason %q); want temporary %s saying what was being done", err, VaultReason(err), securetextv1alpha1.ReasonVaultUnavailable)
		}
		ensure(t, p, tv) // recovery
		ensureNoop(t, p, counter, tv)
	})

	t.Run("forbidden", func(t *testing.T) {
		nobody, _ := f.provisioner(t, f.token(t, "nothing"))
		_, err := nobody.Ensure(t.Context(), tv)
		if VaultReason(err) != securetextv1alpha1.ReasonVaultForbidden || !strings.Contains(err.Error(), "403") {
			t.Fatalf("token without rights: %v (reason %q), want %s", err, VaultReason(err), securetextv1alpha1.ReasonVaultForbidden)
		}
	})

	t.Run("sealed", func(t *testing.T) {
		if err := f.root.Sys().SealWithContext(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, err := p.Ensure(t.Context(), tv)
		if VaultReason(err) != securetextv1alpha1.ReasonVaultSealed || !IsVaultTemporary(err) {
			t.Fatalf("sealed Vault: %v (reason %q), want %s", err, VaultReason(err), securetextv1alpha1.ReasonVaultSealed)
		}
	})

	t.Run("stopped", func(t *testing.T) {
		if err := f.v.Stop(); err != nil {
			t.Fatal(err)
		}
		_, err := p.Shred(t.Context(), tv)
		if VaultReason(err) != securetextv1alpha1.ReasonVaultUnavailable || !IsVaultTemporary(err) {
			t.Fatalf("stopped Vault: %v (reason %q), want %s", err, VaultReason(err), securetextv1alpha1.ReasonVaultUnavailable)
		}
	})
}

// gatedAuth logs in with token once gate is closed; entered is closed when the first login
// starts. logins counts the logins.
type gatedAuth struct {
	token   string
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
	mu      sync.Mutex
	logins  int
}

func (a *gatedAuth) Login(ctx context.Context, c *vaultapi.Client) (*vaultapi.Secret, error) {
	a.once.Do(func() { close(a.entered) })
	select {
	case <-a.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	a.mu.Lock()
	a.logins++
	a.mu.Unlock()
	c.SetToken(a.token)
	return nil, nil
}

func (a *gatedAuth) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.logins
}

// The operator logs in to Vault in the background. Its calls wait for the first login instead
// of going out without a token (Vault would answer 403, and every tenant reconciled while the
// operator starts would report VaultForbidden); a login that fails is the error, with no
// request sent; a 403 asks for a new login.
func TestVaultCallsWaitForLogin(t *testing.T) {
	f := startVaultFixture(t)
	tv := testTenant("acme")
	quiet := slog.New(slog.DiscardHandler)

	t.Run("first login", func(t *testing.T) {
		p, counter := f.provisioner(t, "")
		p.Client.ClearToken()
		auth := &gatedAuth{token: f.v.RootToken, gate: make(chan struct{}), entered: make(chan struct{})}
		session := vaultlogin.Start(p.Client, auth, quiet)
		t.Cleanup(session.Stop)
		p.Login = session

		done := make(chan error, 1)
		go func() {
			_, err := p.Ensure(t.Context(), tv)
			done <- err
		}()
		<-auth.entered
		select {
		case err := <-done:
			t.Fatalf("Ensure returned before the operator's first login: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		close(auth.gate)
		if err := <-done; err != nil {
			t.Fatalf("Ensure after the first login: %v", err)
		}
		if sent := counter.tokenless(); len(sent) > 0 {
			t.Fatalf("requests sent without a token: %v", sent)
		}
	})

	t.Run("login fails", func(t *testing.T) {
		p, counter := f.provisioner(t, "")
		p.Client.ClearToken()
		p.Timeout = time.Second
		jwt := t.TempDir() + "/token"
		if err := os.WriteFile(jwt, []byte("not-a-service-account-token"), 0o600); err != nil {
			t.Fatal(err)
		}
		session := vaultlogin.Start(p.Client, vaultlogin.KubernetesAuth{Role: "securetext-operator", TokenPath: jwt}, quiet)
		t.Cleanup(session.Stop)
		p.Login = session
		_, err := p.Ensure(t.Context(), tv)
		if err == nil || !strings.Contains(err.Error(), "log in to Vault before read mount securetext/acme/transit") {
			t.Fatalf("Ensure with a login Vault refuses: %v; want the login's failure", err)
		}
		t.Logf("Ensure with a login Vault refuses: %v (reason %s)", err, VaultReason(err))
		for _, r := range counter.tokenless() {
			if r != http.MethodPut+" /v1/auth/kubernetes/login" {
				t.Errorf("request sent without a login: %s", r)
			}
		}
	})

	t.Run("forbidden asks for a new login", func(t *testing.T) {
		p, _ := f.provisioner(t, "")
		auth := &gatedAuth{token: f.token(t, "nothing"), gate: make(chan struct{}), entered: make(chan struct{})}
		close(auth.gate)
		session := vaultlogin.Start(p.Client, auth, quiet)
		t.Cleanup(session.Stop)
		p.Login = session
		if _, err := p.Ensure(t.Context(), tv); VaultReason(err) != securetextv1alpha1.ReasonVaultForbidden {
			t.Fatalf("Ensure with a token without rights: %v, want %s", err, securetextv1alpha1.ReasonVaultForbidden)
		}
		testenv.Eventually(t, "a second login", func() error {
			if n := auth.count(); n < 2 {
				return fmt.Errorf("%d logins", n)
			}
			return nil
		})
	})
}

func TestVaultShred(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	other := testTenant("globex")
	ensure(t, p, tv)
	ensure(t, p, other)
	keystoreToken := f.as(t, f.token(t, tv.PolicyName()))
	ct := encrypt(t, keystoreToken, tv, "lab result")
	otherCT := encrypt(t, f.root, other, "neighbour")

	counter.writes()
	res, err := p.Shred(t.Context(), tv)
	if err != nil {
		t.Fatal(err)
	}
	w := counter.writes()
	if len(res.Changes) != 6 || len(w) != 8 { // role, policy, 2×(config, delete), 2 unmounts
		t.Errorf("shred: changes %q writes %q", res.Changes, w)
	}
	if got, err := decrypt(t, f.root, tv, ct); err == nil {
		t.Fatalf("decrypt after shred gave %q", got)
	}
	if f.read(t, "auth/kubernetes/role/"+tv.RoleName()) != nil || f.read(t, "sys/policies/acl/"+tv.PolicyName()) != nil {
		t.Error("role or policy left after shred")
	}
	if _, err := keystoreToken.Logical().WriteWithContext(t.Context(), tv.Mount()+"/encrypt/messages",
		map[string]any{"plaintext": "AAAA"}); err == nil {
		t.Error("the keystore's token still encrypts after shred")
	}

	// A tenant created again under the same name gets new keys: the old data stays gone.
	ensure(t, p, tv)
	if got, err := decrypt(t, f.root, tv, ct); err == nil {
		t.Fatalf("decrypt with the recreated tenant's key gave %q", got)
	}
	if _, err := p.Shred(t.Context(), tv); err != nil {
		t.Fatal(err)
	}

	// Idempotent, and a no-op for a tenant that never had Vault objects.
	for _, name := range []string{"acme", "never-provisioned"} {
		counter.writes()
		res, err := p.Shred(t.Context(), testTenant(name))
		if w := counter.writes(); err != nil || len(w) > 0 || len(res.Changes) > 0 {
			t.Errorf("shred %s again: err %v writes %q changes %q", name, err, w, res.Changes)
		}
	}

	// The neighbour is untouched.
	if got, err := decrypt(t, f.root, other, otherCT); err != nil || got != "neighbour" {
		t.Errorf("other tenant after shred: %q, %v", got, err)
	}
	ensureNoop(t, p, counter, other)
}

func TestVaultRemoveKeepsKeys(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	ensure(t, p, tv)
	keystoreToken := f.as(t, f.token(t, tv.PolicyName()))
	ct := encrypt(t, keystoreToken, tv, "kept")

	counter.writes()
	res, err := p.Remove(t.Context(), tv)
	if w := counter.writes(); err != nil || len(w) != 2 || len(res.Changes) != 2 {
		t.Fatalf("remove: err %v writes %q changes %q", err, w, res.Changes)
	}
	if f.read(t, "auth/kubernetes/role/"+tv.RoleName()) != nil || f.read(t, "sys/policies/acl/"+tv.PolicyName()) != nil {
		t.Error("role or policy left after remove")
	}
	if f.read(t, tv.Mount()+"/keys/messages") == nil || f.read(t, tv.Mount()+"/keys/audit") == nil {
		t.Fatal("remove destroyed a key")
	}
	// A keystore token issued before removal loses its rights at once.
	_, err = keystoreToken.Logical().WriteWithContext(t.Context(), tv.Mount()+"/decrypt/messages", map[string]any{"ciphertext": ct})
	wantStatus(t, err, http.StatusForbidden, "decrypt with a token of a removed tenant")

	if res, err := p.Remove(t.Context(), tv); err != nil || len(res.Changes) > 0 || len(counter.writes()) > 0 {
		t.Errorf("second remove: %v %q", err, res.Changes)
	}
	// The tenant comes back and reads its old messages.
	ensure(t, p, tv)
	if got, err := decrypt(t, f.as(t, f.token(t, tv.PolicyName())), tv, ct); err != nil || got != "kept" {
		t.Errorf("decrypt after re-ensure: %q, %v", got, err)
	}
}

func TestVaultTenantIsolation(t *testing.T) {
	f := startVaultFixture(t)
	p, _ := f.provisioner(t, f.v.RootToken)
	a, b := testTenant("acme"), testTenant("globex")
	ensure(t, p, a)
	ensure(t, p, b)
	bCT := encrypt(t, f.root, b, "globex patient")

	tokenA := f.as(t, f.token(t, a.PolicyName()))
	encrypt(t, tokenA, a, "own key works")
	ctx := t.Context()
	_, err := tokenA.Logical().WriteWithContext(ctx, b.Mount()+"/encrypt/messages", map[string]any{"plaintext": "AAAA"})
	wantStatus(t, err, http.StatusForbidden, "tenant A encrypts with tenant B's key")
	_, err = tokenA.Logical().WriteWithContext(ctx, b.Mount()+"/decrypt/messages", map[string]any{"ciphertext": bCT})
	wantStatus(t, err, http.StatusForbidden, "tenant A decrypts tenant B's ciphertext")
	_, err = tokenA.Logical().WriteWithContext(ctx, b.Mount()+"/sign/audit", map[string]any{"input": "AAAA"})
	wantStatus(t, err, http.StatusForbidden, "tenant A signs with tenant B's key")
	_, err = tokenA.Logical().ReadWithContext(ctx, b.Mount()+"/keys/messages")
	wantStatus(t, err, http.StatusForbidden, "tenant A reads tenant B's key")
	// Nor can a keystore create keys or change its own.
	_, err = tokenA.Logical().WriteWithContext(ctx, a.Mount()+"/encrypt/new-key", map[string]any{"plaintext": "AAAA"})
	wantStatus(t, err, http.StatusForbidden, "tenant A creates a key by encrypting")
	_, err = tokenA.Logical().WriteWithContext(ctx, a.Mount()+"/keys/messages/config", map[string]any{"deletion_allowed": true})
	wantStatus(t, err, http.StatusForbidden, "tenant A configures its key")
	_, err = tokenA.Logical().WriteWithContext(ctx, a.Mount()+"/datakey/plaintext/messages", nil)
	wantStatus(t, err, http.StatusForbidden, "tenant A asks Vault for a plaintext data key")
}

// operatorScenario is everything the operator does in Vault, for two tenants named after
// suffix: create, no-op, drift repair, rotation, Retain removal and re-creation, Shred (also of
// a tenant never provisioned), and looking up and renewing its own token. It returns the
// first error.
// TrimWrappingKey destroys the versions below the floor the sweeps report, never one that is
// not settled, and nothing twice: a ciphertext of a destroyed version no longer decrypts, one of
// the floor's version still does.
func TestVaultTrimWrappingKey(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	ensure(t, p, tv)
	ctx := t.Context()
	old := encrypt(t, f.root, tv, "purged long ago")
	f.write(t, tv.Mount()+"/keys/messages/rotate", nil)
	kept := encrypt(t, f.root, tv, "still stored")

	// Version 2 was made just now: a reserved key of version 1 may still be stored.
	counter.writes()
	if trim, err := p.TrimWrappingKey(ctx, tv, 2); err != nil || trim.Destroyed != 0 {
		t.Fatalf("trim of an unsettled version: %+v, %v; want nothing destroyed", trim, err)
	}
	if w := counter.writes(); len(w) != 0 {
		t.Errorf("trim of an unsettled version wrote %q", w)
	}
	p.Now = func() time.Time { return time.Now().Add(keystore.RotationSettle + time.Minute) }
	trim, err := p.TrimWrappingKey(ctx, tv, 5) // above the latest: lowered to it
	if err != nil || trim.Destroyed != 2 || trim.Since.IsZero() {
		t.Fatalf("trim: %+v, %v; want versions below 2 destroyed", trim, err)
	}
	key := f.read(t, tv.Mount()+"/keys/messages")
	if jsonInt(key["min_available_version"]) != 2 || jsonInt(key["min_decryption_version"]) != 2 {
		t.Errorf("after the trim: min_available_version %v, min_decryption_version %v", key["min_available_version"], key["min_decryption_version"])
	}
	if _, err := decrypt(t, f.root, tv, old); err == nil {
		t.Error("a ciphertext of the destroyed version 1 still decrypts")
	}
	if got, err := decrypt(t, f.root, tv, kept); err != nil || got != "still stored" {
		t.Errorf("a ciphertext of version 2: %q, %v", got, err)
	}
	if trim, err := p.TrimWrappingKey(ctx, tv, 2); err != nil || trim.Destroyed != 0 {
		t.Errorf("second trim: %+v, %v; want nothing more destroyed", trim, err)
	}
}

func operatorScenario(t *testing.T, f *vaultFixture, p *VaultProvisioner, token, suffix string) error {
	t.Helper()
	ctx := t.Context()
	a, b := testTenant("acme"+suffix), testTenant("globex"+suffix)
	for _, tv := range []TenantVault{a, b, a} {
		if _, err := p.Ensure(ctx, tv); err != nil {
			return err
		}
	}
	f.write(t, "auth/kubernetes/role/"+a.RoleName(), map[string]any{"bound_service_account_namespaces": []string{"*"}})
	f.write(t, a.Mount()+"/keys/messages/config", map[string]any{"deletion_allowed": true})
	desc := "drifted"
	if err := f.root.Sys().TuneMountAllowNilWithContext(ctx, a.Mount(), vaultapi.TuneMountConfigInput{Description: &desc}); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Ensure(ctx, a); err != nil {
		return err
	} else if len(res.Changes) != 3 {
		return fmt.Errorf("repair: changes %q, want 3", res.Changes)
	}
	p.Now = func() time.Time { return time.Now().Add(a.RotationPeriod + time.Minute) }
	res, err := p.Ensure(ctx, a)
	p.Now = nil
	if err != nil {
		return err
	} else if !res.Rotated {
		return errors.New("rotation did not rotate")
	}
	p.Now = func() time.Time { return time.Now().Add(keystore.RotationSettle + time.Minute) }
	trim, err := p.TrimWrappingKey(ctx, a, 2)
	p.Now = nil
	if err != nil {
		return err
	} else if trim.Destroyed != 2 {
		return fmt.Errorf("trim destroyed below %d, want 2", trim.Destroyed)
	}
	if _, err := p.Remove(ctx, a); err != nil {
		return err
	}
	if _, err := p.Ensure(ctx, a); err != nil {
		return err
	}
	for _, tv := range []TenantVault{a, b, testTenant("never-provisioned" + suffix)} {
		if _, err := p.Shred(ctx, tv); err != nil {
			return err
		}
	}
	own := f.as(t, token)
	if _, err := own.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		return fmt.Errorf("lookup-self: %w", err)
	}
	if _, err := own.Auth().Token().RenewSelfWithContext(ctx, 3600); err != nil {
		return fmt.Errorf("renew-self: %w", err)
	}
	return nil
}

func (f *vaultFixture) operatorPolicy(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(operatorPolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

// TestVaultOperatorPolicyIsSufficient runs everything the provisioner does with a token that
// holds only config/rbac/vault-operator-policy.hcl, and checks what that policy must not allow.
func TestVaultOperatorPolicyIsSufficient(t *testing.T) {
	f := startVaultFixture(t)
	if err := f.root.Sys().PutPolicyWithContext(t.Context(), "securetext-operator", f.operatorPolicy(t)); err != nil {
		t.Fatalf("load %s: %v", operatorPolicyFile, err)
	}
	operatorToken := f.token(t, "securetext-operator")
	p, _ := f.provisioner(t, operatorToken)
	if err := operatorScenario(t, f, p, operatorToken, ""); err != nil {
		t.Fatalf("with only the operator policy: %v", err)
	}
	a := testTenant("acme")
	ensure(t, p, a)

	// What the operator's policy must not allow.
	op := f.as(t, operatorToken)
	ctx := t.Context()
	_, err := op.Logical().WriteWithContext(ctx, a.Mount()+"/encrypt/messages", map[string]any{"plaintext": "AAAA"})
	wantStatus(t, err, http.StatusForbidden, "operator encrypts with a tenant key")
	_, err = op.Logical().WriteWithContext(ctx, a.Mount()+"/datakey/plaintext/messages", nil)
	wantStatus(t, err, http.StatusForbidden, "operator asks for a data key")
	_, err = op.Logical().ReadWithContext(ctx, a.Mount()+"/export/encryption-key/messages")
	wantStatus(t, err, http.StatusForbidden, "operator exports a tenant key")
	_, err = op.Logical().ReadWithContext(ctx, a.Mount()+"/backup/messages")
	wantStatus(t, err, http.StatusForbidden, "operator backs up a tenant key")
	err = op.Sys().PutPolicyWithContext(ctx, "securetext-operator", `path "*" { capabilities = ["sudo"] }`)
	wantStatus(t, err, http.StatusForbidden, "operator rewrites its own policy")
	err = op.Sys().PutPolicyWithContext(ctx, "admin", `path "*" { capabilities = ["sudo"] }`)
	wantStatus(t, err, http.StatusForbidden, "operator writes a policy outside securetext-tenant-*")
	err = op.Sys().MountWithContext(ctx, "elsewhere", &vaultapi.MountInput{Type: "transit"})
	wantStatus(t, err, http.StatusForbidden, "operator mounts outside securetext/")
	_, err = op.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{"kubernetes_host": "https://127.0.0.1:1"})
	wantStatus(t, err, http.StatusForbidden, "operator reconfigures Kubernetes auth")
	_, err = op.Logical().ReadWithContext(ctx, "sys/mounts")
	wantStatus(t, err, http.StatusForbidden, "operator lists mounts")
}

func TestVaultRefusesBadNames(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	for _, tv := range []TenantVault{
		{Tenant: "a/b", Namespace: "ns", ServiceAccount: "keystore"},
		{Tenant: "*", Namespace: "ns", ServiceAccount: "keystore"},
		{Tenant: "Acme", Namespace: "ns", ServiceAccount: "keystore"},
		{Tenant: "acme", Namespace: "*", ServiceAccount: "keystore"},
		{Tenant: "acme", Namespace: "ns", ServiceAccount: ""},
		{Tenant: "acme", Namespace: "ns", ServiceAccount: "keystore", Keys: TransitLayout{WrappingKey: "x/../y"}},
		{Tenant: `a"b`, Namespace: "ns", ServiceAccount: "keystore"},
	} {
		for name, fn := range map[string]func() (VaultResult, error){
			"Ensure": func() (VaultResult, error) { return p.Ensure(t.Context(), tv) },
			"Remove": func() (VaultResult, error) { return p.Remove(t.Context(), tv) },
			"Shred":  func() (VaultResult, error) { return p.Shred(t.Context(), tv) },
		} {
			if _, err := fn(); VaultReason(err) != securetextv1alpha1.ReasonVaultFailed || IsVaultTemporary(err) {
				t.Errorf("%s(%+v): %v, want a permanent %s", name, tv, err, securetextv1alpha1.ReasonVaultFailed)
			}
		}
	}
	if n := counter.requests(); n > 0 {
		t.Errorf("bad names reached Vault: %d requests", n)
	}
}

func TestVaultErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&vaultapi.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, securetextv1alpha1.ReasonVaultSealed},
		{&vaultapi.ResponseError{StatusCode: 503, Errors: []string{"node is in standby"}}, securetextv1alpha1.ReasonVaultUnavailable},
		{&vaultapi.ResponseError{StatusCode: 429}, securetextv1alpha1.ReasonVaultUnavailable},
		{&vaultapi.ResponseError{StatusCode: 500, Errors: []string{"internal error"}}, securetextv1alpha1.ReasonVaultUnavailable},
		{&vaultapi.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}, securetextv1alpha1.ReasonVaultForbidden},
		{&vaultapi.ResponseError{StatusCode: 400, Errors: []string{"invalid type"}}, securetextv1alpha1.ReasonVaultFailed},
		{fmt.Errorf("Put: %w", errors.New("connection refused")), securetextv1alpha1.ReasonVaultUnavailable},
	} {
		err := fmt.Errorf("ensure vault: %w", classifyVaultError("do something", tc.err))
		if got := VaultReason(err); got != tc.want {
			t.Errorf("%v: reason %s, want %s", tc.err, got, tc.want)
		}
		if !strings.Contains(err.Error(), "do something") || strings.Contains(err.Error(), "\n") {
			t.Errorf("message %q: want one line saying what was being done", err)
		}
	}
	if VaultReason(nil) != "" || IsVaultTemporary(nil) {
		t.Error("nil error has a reason")
	}
}

// capabilityLine matches a capabilities line of the operator policy.
var capabilityLine = regexp.MustCompile(`(?m)^(\s*capabilities = \[)([^\]]*)(\])`)

// TestVaultOperatorPolicyIsMinimal takes each capability out of the operator policy in turn
// and expects the operator's scenario to fail without it: nothing in the file is spare.
func TestVaultOperatorPolicyIsMinimal(t *testing.T) {
	f := startVaultFixture(t)
	policy := f.operatorPolicy(t)
	variant := 0
	for _, loc := range capabilityLine.FindAllStringSubmatchIndex(policy, -1) {
		list := policy[loc[4]:loc[5]]
		caps := strings.Split(list, ", ")
		path := policy[strings.LastIndex(policy[:loc[0]], "path "):loc[0]]
		for i, c := range caps {
			variant++
			rest := slices.Delete(slices.Clone(caps), i, i+1)
			text := policy[:loc[4]] + strings.Join(rest, ", ") + policy[loc[5]:]
			name := fmt.Sprintf("securetext-operator-without-%d", variant)
			if err := f.root.Sys().PutPolicyWithContext(t.Context(), name, text); err != nil {
				t.Fatal(err)
			}
			token := f.token(t, name)
			p, _ := f.provisioner(t, token)
			if err := operatorScenario(t, f, p, token, fmt.Sprint("-", variant)); err == nil {
				t.Errorf("capability %s on %s is not needed", c, strings.TrimSpace(strings.SplitN(path, "{", 2)[0]))
			} else if VaultReason(err) != securetextv1alpha1.ReasonVaultForbidden && !strings.Contains(err.Error(), "403") {
				t.Errorf("without %s on %s: %v, want a 403", c, path, err)
			}
		}
	}
	if variant < 10 {
		t.Fatalf("found only %d capabilities in %s", variant, operatorPolicyFile)
	}
}

// The sweep status step destroys what the last sweep reports no stored message needs, and
// says so in an event; a report from a key holder that never trims, or a floor at the versions
// already destroyed, changes nothing.
func TestTrimFollowsReportedFloor(t *testing.T) {
	f := startVaultFixture(t)
	p, counter := f.provisioner(t, f.v.RootToken)
	tv := testTenant("acme")
	ensure(t, p, tv)
	f.write(t, tv.Mount()+"/keys/messages/rotate", nil)
	p.Now = func() time.Time { return time.Now().Add(keystore.RotationSettle + time.Minute) }
	rec := events.NewFakeRecorder(10)
	r := &SecureTextTenantReconciler{Recorder: rec, Options: Options{Vault: p}}
	tenant := &securetextv1alpha1.SecureTextTenant{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}
	st := tenantState{tenantVault: tv}

	counter.writes()
	for _, k := range []*retention.KeyStatus{
		nil,
		{Latest: 2, Floor: 2, MinAvailable: 1, Trims: false},
		{Latest: 2, Floor: 1, MinAvailable: 1, Trims: true},
	} {
		r.trimWrappingKey(t.Context(), tenant, st, k)
	}
	if w := counter.writes(); len(w) != 0 {
		t.Fatalf("reports with nothing to destroy wrote %q", w)
	}
	r.trimWrappingKey(t.Context(), tenant, st, &retention.KeyStatus{Latest: 2, Floor: 2, MinAvailable: 1, Trims: true})
	if got := jsonInt(f.read(t, tv.Mount()+"/keys/messages")["min_available_version"]); got != 2 {
		t.Errorf("min_available_version %d after a floor of 2 was reported", got)
	}
	select {
	case e := <-rec.Events:
		if !strings.Contains(e, EventKeyVersionsDestroyed) || !strings.Contains(e, "below 2") {
			t.Errorf("event %q", e)
		}
	default:
		t.Error("no KeyVersionsDestroyed event")
	}
}
