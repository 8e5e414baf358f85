package keystore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/vaultlogin"
	"github.com/securetext/securetext/workloads/vaultpolicy"
)

// TestTransitKubernetesAuth: the keystore logs in to Vault with its pod's ServiceAccount token
// (here from the TokenRequest API of a real kube-apiserver, which Vault asks to review it),
// through the role bound to that account and namespace, and then wraps and unwraps data keys.
// The same account name in another tenant's namespace is refused, so that keystore never
// logs in and answers with a temporary error.
func TestTransitKubernetesAuth(t *testing.T) {
	kube, err := testenv.StartKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Stop() })
	v := testenv.StartVault(t)
	auth := testenv.ConfigureKubernetesAuth(t, kube, v)
	auth.ServiceAccount(t, "securetext-clinic-a", "keystore")
	auth.ServiceAccount(t, "securetext-clinic-b", "keystore")

	ctx := t.Context()
	root := v.Client(t)
	if err := root.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": typ}); err != nil {
			t.Fatal(err)
		}
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "clinic-a-keystore", vaultpolicy.Keystore("transit", "state", "messages", "audit")); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/role/clinic-a-keystore", map[string]any{
		"bound_service_account_names":      []string{"keystore"},
		"bound_service_account_namespaces": []string{"securetext-clinic-a"},
		"audience":                         "vault",
		"token_policies":                   []string{"clinic-a-keystore"},
		"token_no_default_policy":          true,
		"token_ttl":                        "15m",
	}); err != nil {
		t.Fatal(err)
	}

	start := func(namespace string) *Transit {
		t.Helper()
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(auth.Token(t, namespace, "keystore", "vault")), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := vaultapi.DefaultConfig()
		cfg.Address = v.Addr
		client, err := vaultapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := NewTransit(TransitConfig{
			Client: client, Auth: vaultlogin.KubernetesAuth{Role: "clinic-a-keystore", TokenPath: tokenFile},
			Mount: "transit", WrappingKey: "messages", SigningKey: "audit", Timeout: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tr.Close)
		return tr
	}

	a := start("securetext-clinic-a")
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.WaitReady(readyCtx); err != nil {
		t.Fatalf("clinic A's keystore did not log in with its service account token: %v", err)
	}
	dk, err := a.WrapNewKey(ctx)
	if err != nil {
		t.Fatalf("wrap a data key after kubernetes login: %v", err)
	}
	got, err := a.Unwrap(ctx, dk.Wrapped)
	if err != nil || !bytes.Equal(got, dk.Plaintext) {
		t.Fatalf("unwrap after kubernetes login: %v", err)
	}

	b := start("securetext-clinic-b")
	shortCtx, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	if err := b.WaitReady(shortCtx); err == nil {
		t.Fatal("a keystore in clinic B's namespace logged in with clinic A's role")
	}
	if _, err := b.WrapNewKey(ctx); !IsTemporary(err) {
		t.Fatalf("wrap without a login: %v, want a temporary error", err)
	}
}
