package controllers_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
)

// TestRenderedObjectsApply applies a rendered stack to the real API server: every object passes
// its validation, and applying it again writes nothing (what a no-op reconcile must do).
func TestRenderedObjectsApply(t *testing.T) {
	ctx := context.Background()
	const ns = "render-apply-test"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })

	tenant := &securetextv1alpha1.SecureTextTenant{
		ObjectMeta: metav1.ObjectMeta{Name: "applied"},
		Spec: securetextv1alpha1.SecureTextTenantSpec{
			DisplayName: "Applied Clinic", Namespace: ns, TextDomain: "text.applied.example",
			Hostnames: securetextv1alpha1.Hostnames{Viewer: "view.applied.example", API: "api.applied.example"},
			TLS:       &securetextv1alpha1.TLSSpec{IssuerRef: &securetextv1alpha1.IssuerRef{Name: "letsencrypt"}},
			SMTP:      securetextv1alpha1.SMTPSpec{ServiceType: corev1.ServiceTypeNodePort, ImplicitTLSPort: 465},
			SMS: securetextv1alpha1.SMSSpec{Provider: securetextv1alpha1.SMSWebhook, SecretRef: &securetextv1alpha1.SecretKeyRef{Name: "webhook"},
				QuietHours: &securetextv1alpha1.QuietHours{Start: "21:00", End: "08:00", TimeZone: "America/New_York"}},
			Database:   securetextv1alpha1.DatabaseSpec{SecretRef: securetextv1alpha1.SecretKeyRef{Name: "db"}},
			Components: securetextv1alpha1.Components{Keystore: securetextv1alpha1.ComponentSpec{Replicas: ptr.To(int32(1))}},
			ViewerAuth: securetextv1alpha1.ViewerAuth{OneTimeCode: ptr.To(true), MinPasswordLength: 8},
		},
	}
	in := controllers.RenderInput{
		ClusterInput: controllers.ClusterInput{
			WorkloadImage:            "example.org/securetext/workloads:test",
			IngressNamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "ingress-nginx"}},
			MetricsNamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
			Database:                 controllers.DatabaseInput{Peers: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}},
			ClusterCIDRs:             []string{"10.244.0.0/16", "fd00::/48"},
		},
		Vault: controllers.VaultInput{Address: "https://vault.vault.svc:8200", AuthMount: "kubernetes", Role: "r",
			TransitMount: "transit", StateMount: "state", WrappingKey: "w", SigningKey: "s", TokenAudience: "vault", CACertSecret: "vault-ca"},
		Secrets:     controllers.GeneratedSecrets{KeystoreServerTLS: "ks", GatewayKeystoreClient: "gk", ViewerKeystoreClient: "vk", Senders: "senders", GatewayStatusTLS: "gs"},
		Autoscaling: map[controllers.Component]controllers.AutoscalingInput{controllers.ComponentGateway: {MaxReplicas: 6}},
		Logo:        &controllers.LogoInput{ConfigMapName: "logo", Key: "logo.svg"},
	}
	d, err := controllers.Render(tenant, in)
	if err != nil {
		t.Fatal(err)
	}
	apply := func() map[string]string {
		versions := map[string]string{}
		for _, obj := range d.Objects() {
			ac, err := controllers.ApplyConfiguration(obj)
			if err != nil {
				t.Fatal(err)
			}
			if err := k8s.Apply(ctx, ac, client.FieldOwner(controllers.FieldManager), client.ForceOwnership); err != nil {
				t.Fatalf("apply %s %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
			}
			live := obj.DeepCopyObject().(client.Object)
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
				t.Fatal(err)
			}
			versions[obj.GetObjectKind().GroupVersionKind().Kind+"/"+obj.GetName()] = live.GetResourceVersion()
		}
		return versions
	}
	first := apply()
	second := apply()
	for id, v := range first {
		if second[id] != v {
			t.Errorf("%s: applying the same object again wrote it (resourceVersion %s → %s)", id, v, second[id])
		}
	}
}
