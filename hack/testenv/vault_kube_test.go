package testenv

import (
	"context"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
	kc := kubernetes.NewForConfigOrDie(kube.Config)

	// The reviewer: an account allowed to create TokenReviews (system:auth-delegator), as the
	// operator's Helm chart would grant to the account whose token it gives Vault.
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, ns := range []string{"securetext-system", "securetext-clinic-a", "securetext-clinic-b"} {
		_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must("create namespace "+ns, err)
	}
	serviceAccount := func(ns, name string) {
		_, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		must("create service account "+ns+"/"+name, err)
	}
	token := func(ns, name, audience string) string {
		t.Helper()
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}
		if audience != "" {
			req.Spec.Audiences = []string{audience}
		}
		tr, err := kc.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, req, metav1.CreateOptions{})
		must("request a token for "+ns+"/"+name, err)
		return tr.Status.Token
	}
	serviceAccount("securetext-system", "vault-token-reviewer")
	_, err = kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-token-reviewer", Namespace: "securetext-system"}},
	}, metav1.CreateOptions{})
	must("bind the reviewer", err)
	// envtest runs no controller-manager, so the bootstrap ClusterRole may not exist yet.
	_, err = kc.RbacV1().ClusterRoles().Get(ctx, "system:auth-delegator", metav1.GetOptions{})
	must("read ClusterRole system:auth-delegator (bootstrapped by the API server)", err)
	serviceAccount("securetext-clinic-a", "keystore")
	serviceAccount("securetext-clinic-a", "gateway")
	serviceAccount("securetext-clinic-b", "keystore")

	root := v.Client(t)
	must("enable kubernetes auth", root.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}))
	_, err = root.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":    kube.Config.Host,
		"kubernetes_ca_cert": string(kube.Config.CAData),
		"token_reviewer_jwt": token("securetext-system", "vault-token-reviewer", ""),
	})
	must("configure kubernetes auth", err)
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
	secret, err := login(token("securetext-clinic-a", "keystore", audience))
	must("log in as clinic A's keystore", err)
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" ||
		strings.Join(secret.Auth.Policies, ",") != "clinic-a-keystore" {
		t.Fatalf("login of clinic A's keystore = %+v, want a token with only policy clinic-a-keystore", secret)
	}
	for name, jwt := range map[string]string{
		"clinic B's keystore (same account name, other namespace)": token("securetext-clinic-b", "keystore", audience),
		"clinic A's gateway (other account)":                       token("securetext-clinic-a", "gateway", audience),
		"clinic A's keystore with the wrong audience":              token("securetext-clinic-a", "keystore", "someone-else"),
		"a forged token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2VjdXJldGV4dC1jbGluaWMtYTprZXlzdG9yZSJ9.c2lnbmF0dXJl",
	} {
		if s, err := login(jwt); err == nil {
			t.Errorf("%s logged in: %+v", name, s.Auth)
		}
	}
}
