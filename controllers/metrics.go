package controllers

import (
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
)

func init() {
	metrics.Registry.MustRegister(tenantCondition, reconcileErrors)
}

// tenantConditionTypes are the condition types exported as metrics.
var tenantConditionTypes = []string{
	securetextv1alpha1.ConditionReady, securetextv1alpha1.ConditionVaultReady,
	securetextv1alpha1.ConditionWorkloadsReady, securetextv1alpha1.ConditionStalled,
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
		if err != nil {
			reconcileErrors.WithLabelValues(tenant.Name, step).Inc()
		}
	}
}

// forgetTenantMetrics removes every series of a deleted tenant.
func forgetTenantMetrics(tenant string) {
	tenantCondition.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
	reconcileErrors.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
}
