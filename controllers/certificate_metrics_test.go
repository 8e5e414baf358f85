package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// TestCertificateExpiryMetric: the secrets step exports the NotAfter of every certificate it
// issues or finds, drops the serving certificate's once spec.tls names one, and a deleted
// tenant leaves no series.
func TestCertificateExpiryMetric(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	tenant := &securetextv1alpha1.SecureTextTenant{ObjectMeta: metav1.ObjectMeta{Name: "metrics-expiry"}}
	tenant.Spec.TextDomain = "text.clinic.example"
	tenant.Spec.Hostnames.Viewer = "view.clinic.example"
	ns := tenant.TargetNamespace()
	t.Cleanup(func() { forgetTenantMetrics(tenant.Name) })

	// expiries are the gauge's series of the tenant, by Secret, each checked against the
	// Secret's AnnotationNotAfter. (The suite's operator runs in this process too: other
	// tenants' series are left out.)
	expiries := func(t *testing.T) map[string]float64 {
		t.Helper()
		ch := make(chan prometheus.Metric, 64)
		certificateExpiry.Collect(ch)
		close(ch)
		out := map[string]float64{}
		for m := range ch {
			var pb dto.Metric
			if err := m.Write(&pb); err != nil {
				t.Fatal(err)
			}
			labels := map[string]string{}
			for _, l := range pb.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["tenant"] != tenant.Name {
				continue
			}
			secret, v := labels["secret"], pb.GetGauge().GetValue()
			out[secret] = v
			var sec corev1.Secret
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: secret}, &sec); err != nil {
				t.Fatal(err)
			}
			notAfter, err := time.Parse(time.RFC3339, sec.Annotations[AnnotationNotAfter])
			if err != nil || float64(notAfter.Unix()) != v {
				t.Errorf("%s: gauge %v, Secret's %s %q", secret, v, AnnotationNotAfter, sec.Annotations[AnnotationNotAfter])
			}
		}
		return out
	}
	run := func(t *testing.T, now time.Time) {
		t.Helper()
		s := &secretStep{c: c, reader: c, validity: DefaultCertificateValidity, now: now, tenant: tenant, ns: ns,
			res: secretsResult{Versions: map[string]string{}}}
		if err := s.run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	run(t, now) // issues every certificate
	if got := expiries(t); len(got) != 5 || got[SecretKeystoreTLS] != float64(now.Add(DefaultCertificateValidity).Unix()) {
		t.Fatalf("after issuing: %v, want 5 certificates expiring at %d", got, now.Add(DefaultCertificateValidity).Unix())
	}
	run(t, now.Add(time.Hour)) // finds them, not due
	if got := expiries(t); len(got) != 5 {
		t.Fatalf("after reading: %v, want 5 certificates", got)
	}
	tenant.Spec.TLS = &securetextv1alpha1.TLSSpec{SecretName: "clinic-tls"}
	run(t, now.Add(2*time.Hour))
	if got := expiries(t); len(got) != 4 || got[SecretServingTLS] != 0 {
		t.Fatalf("with spec.tls: %v, want the 3 keystore certificates and the gateway status one", got)
	}

	forgetTenantMetrics(tenant.Name)
	if got := expiries(t); len(got) != 0 {
		t.Errorf("series left after the tenant was forgotten: %v", got)
	}
}
