package testenv

import (
	"context"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
)

// TestVaultKubernetesAuthAgainstKube: the test Vault's kubernetes auth method, configured
// against the envtest kube-apiserver, logs in a ServiceAccount token obtained by TokenRequest
// for the account and namespace a role is bound to, and refuses a token of the same account
// name in another namespace and of another account: the API server reviews every token.
func TestVaultKubernetesAuthAgainstKube(t *testing.T) {
	kube, err := StartKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Stop() })
	v := StartVault(t)
	ctx := t.Context()
	auth := ConfigureKubernetesAuth(t, kube, v)
	auth.ServiceAccount(t, "securetext-clinic-a", "keystore")
	auth.ServiceAccount(t, "securetext-clinic-a", "gateway")
	auth.ServiceAccount(t, "securetext-clinic-b", "keystore")
	token := auth.Token
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	root := v.Client(t)
	must("write policy", root.Sys().PutPolicyWithContext(ctx, "clinic-a-keystore", `path "auth/token/lookup-self" { capabilities = ["read"] }`))
	const audience = "vault"
	_, err = root.Logical().WriteWithContext(ctx, "auth/kubernetes/role/clinic-a-keystore", map[string]any{
		"bound_service_account_names":      []string{"keystore"},
		"bound_service_account_namespaces": []string{"securetext-clinic-a"},
		"audience":                         audience,
		"token_policies":                   []string{"clinic-a-keystore"},
		"token_no_default_policy":          true,
		"token_ttl":                        "15m",
	})
	must("write role", err)

	login := func(jwt string) (*vaultapi.Secret, error) {
		c, err := root.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.ClearToken()
		return c.Logical().WriteWithContext(context.Background(), "auth/kubernetes/login", map[string]any{"role": "clinic-a-keystore", "jwt": jwt})
	}
	secret, err := login(token(t, "securetext-clinic-a", "keystore", audience))
	must("log in as clinic A's keystore", err)
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" ||
		strings.Join(secret.Auth.Policies, ",") != "clinic-a-keystore" {
		t.Fatalf("login of clinic A's keystore = %+v, want a token with only policy clinic-a-keystore", secret)
	}
	for name, jwt := range map[string]string{
		"clinic B's keystore (same account name, other namespace)": token(t, "securetext-clinic-b", "keystore", audience),
		"clinic A's gateway (other account)":                       token(t, "securetext-clinic-a", "gateway", audience),
		"clinic A's keystore with the wrong audience":              token(t, "securetext-clinic-a", "keystore", "someone-else"),
		"a forged token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2VjdXJldGV4dC1jbGluaWMtYTprZXlzdG9yZSJ9.c2lnbmF0dXJl",
	} {
		if s, err := login(jwt); err == nil {
			t.Errorf("%s logged in: %+v", name, s.Auth)
		}
	}
}
