package controllers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// Tenant metrics. A tenant's name is not PHI and the number of tenants is bounded by the
// cluster's SecureTextTenants, so it is a label; every series of a tenant is removed when the
// tenant is deleted (forgetTenantMetrics).
var (
	tenantCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "securetext_operator_tenant_condition",
		Help: "1 for each tenant's current status of each condition type (True, False, Unknown), 0 for the others.",
	}, []string{"tenant", "type", "status"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "securetext_operator_reconcile_errors_total",
		Help: "Failed reconcile steps, by tenant and step (namespace, secrets, vault, render, apply).",
	}, []string{"tenant", "step"})
	certificateExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "securetext_operator_certificate_expiry_timestamp_seconds",
		Help: "Expiry (NotAfter, Unix seconds) of each certificate the operator issued for a tenant, by tenant and Secret. The operator renews a certificate when a third of its life is left.",
	}, []string{"tenant", "secret"})
)

// MetricCollectors are the operator's own collectors. They are registered once, on
// controller-runtime's registry, by this package's init functions; the chart's tests describe
// them to prove that its alerts and dashboard name only series the operator exports.
func MetricCollectors() []prometheus.Collector {
	return []prometheus.Collector{tenantCondition, reconcileErrors, certificateExpiry,
		vaultRequestDuration, vaultRequestErrors}
}

func init() {
	// vault.go registers the Vault call metrics beside their definition.
	metrics.Registry.MustRegister(tenantCondition, reconcileErrors, certificateExpiry)
}

// tenantConditionTypes are the condition types exported as metrics.
var tenantConditionTypes = []string{
	securetextv1alpha1.ConditionReady, securetextv1alpha1.ConditionVaultReady,
	securetextv1alpha1.ConditionWorkloadsReady, securetextv1alpha1.ConditionStalled, securetextv1alpha1.ConditionRetentionReady,
}

// recordTenantMetrics exports the tenant's conditions and counts the steps that failed.
func recordTenantMetrics(tenant *securetextv1alpha1.SecureTextTenant, st tenantState) {
	for _, typ := range tenantConditionTypes {
		current := metav1.ConditionUnknown
		for _, c := range tenant.Status.Conditions {
			if c.Type == typ {
				current = c.Status
			}
		}
		if typ == securetextv1alpha1.ConditionStalled && current == metav1.ConditionUnknown {
			current = metav1.ConditionFalse // no Stalled condition means not stalled
		}
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if s == current {
				v = 1
			}
			tenantCondition.WithLabelValues(tenant.Name, typ, string(s)).Set(v)
		}
	}
	for step, err := range map[string]error{
		"namespace": st.nsErr, "secrets": st.secretsErr, "vault": st.vaultErr, "render": st.renderErr, "apply": st.applyErr,
	} {
		// Every step's series exists from the first reconcile, at zero until it fails, so
		// that "no errors" reads 0 rather than looking like a target that is not scraped.
		c := reconcileErrors.WithLabelValues(tenant.Name, step)
		if err != nil {
			c.Inc()
		}
	}
}

// recordCertificateExpiry exports when the certificate in a tenant's Secret expires.
func recordCertificateExpiry(tenant, secret string, notAfter time.Time) {
	certificateExpiry.WithLabelValues(tenant, secret).Set(float64(notAfter.Unix()))
}

// forgetCertificateExpiry removes the series of a certificate the operator no longer keeps
// (the serving certificate, once spec.tls names one), so that it cannot raise an alert.
func forgetCertificateExpiry(tenant, secret string) {
	certificateExpiry.DeleteLabelValues(tenant, secret)
}

// forgetTenantMetrics removes every series of a deleted tenant.
func forgetTenantMetrics(tenant string) {
	tenantCondition.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
	reconcileErrors.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
	certificateExpiry.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
}
