package testenv

import (
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
	ctx := t.Context()
	k := &KubeAuth{Kube: kube, Client: kubernetes.NewForConfigOrDie(kube.Config)}
	k.ServiceAccount(t, "securetext-system", "vault-token-reviewer")
	_, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-token-reviewer", Namespace: "securetext-system"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("bind the token reviewer: %v", err)
	}
	root := v.Client(t)
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v", err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":    kube.Config.Host,
		"kubernetes_ca_cert": string(kube.Config.CAData),
		"token_reviewer_jwt": k.Token(t, "securetext-system", "vault-token-reviewer", ""),
	}); err != nil {
		t.Fatalf("configure kubernetes auth: %v", err)
	}
	return k
}

// ServiceAccount creates namespace ns (if missing) and ServiceAccount name in it.
func (k *KubeAuth) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	ctx := t.Context()
	_, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	_, err = k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create service account %s/%s: %v", ns, name, err)
	}
}

// Token returns a token of ServiceAccount ns/name from the TokenRequest API, as the kubelet
// projects it into a pod; audience "" means the API server's default.
func (k *KubeAuth) Token(t testing.TB, ns, name, audience string) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}
