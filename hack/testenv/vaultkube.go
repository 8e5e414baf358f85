package testenv

import (
	"context"
	"fmt"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// KubeAuth is a test Vault's kubernetes auth method (mounted at "kubernetes") configured
// against a Kube: Vault reviews every login's ServiceAccount token with that API server,
// through a reviewer account bound to system:auth-delegator, as in a cluster.
type KubeAuth struct {
	Kube   *Kube
	Client kubernetes.Interface
}

// ConfigureKubernetesAuth enables and configures the kubernetes auth method of v against kube.
func ConfigureKubernetesAuth(t testing.TB, kube *Kube, v *Vault) *KubeAuth {
	t.Helper()
	k, err := ConfigureKubernetesAuthContext(t.Context(), kube, v)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ConfigureKubernetesAuthContext is ConfigureKubernetesAuth for TestMain and tools.
func ConfigureKubernetesAuthContext(ctx context.Context, kube *Kube, v *Vault) (*KubeAuth, error) {
	k := &KubeAuth{Kube: kube, Client: kubernetes.NewForConfigOrDie(kube.Config)}
	if err := k.ServiceAccountContext(ctx, "securetext-system", "vault-token-reviewer"); err != nil {
		return nil, err
	}
	_, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-token-reviewer", Namespace: "securetext-system"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("bind the token reviewer: %w", err)
	}
	root, err := v.RootClient()
	if err != nil {
		return nil, err
	}
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		return nil, fmt.Errorf("enable kubernetes auth: %w", err)
	}
	jwt, err := k.TokenContext(ctx, "securetext-system", "vault-token-reviewer", "")
	if err != nil {
		return nil, err
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":    kube.Config.Host,
		"kubernetes_ca_cert": string(kube.Config.CAData),
		"token_reviewer_jwt": jwt,
	}); err != nil {
		return nil, fmt.Errorf("configure kubernetes auth: %w", err)
	}
	return k, nil
}

// ServiceAccount creates namespace ns (if missing) and ServiceAccount name in it.
func (k *KubeAuth) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	if err := k.ServiceAccountContext(t.Context(), ns, name); err != nil {
		t.Fatal(err)
	}
}

// ServiceAccountContext is ServiceAccount for TestMain and tools.
func (k *KubeAuth) ServiceAccountContext(ctx context.Context, ns, name string) error {
	_, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	_, err = k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/%s: %w", ns, name, err)
	}
	return nil
}

// Token returns a token of ServiceAccount ns/name from the TokenRequest API, as the kubelet
// projects it into a pod; audience "" means the API server's default.
func (k *KubeAuth) Token(t testing.TB, ns, name, audience string) string {
	t.Helper()
	tok, err := k.TokenContext(t.Context(), ns, name, audience)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TokenContext is Token for TestMain and tools.
func (k *KubeAuth) TokenContext(ctx context.Context, ns, name, audience string) (string, error) {
	req := &authenticationv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token for %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}
