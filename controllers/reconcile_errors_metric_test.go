package controllers

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReconcileErrorSeriesStartAtZero: a tenant's reconcile error series exist from its first
// reconcile, at zero, and count only the steps that failed.
func TestReconcileErrorSeriesStartAtZero(t *testing.T) {
	tenant := renderTenant("metrics-zero")
	t.Cleanup(func() { forgetTenantMetrics(tenant.Name) })
	recordTenantMetrics(tenant, tenantState{})
	for _, step := range []string{"namespace", "secrets", "vault", "render", "apply"} {
		if v := testutil.ToFloat64(reconcileErrors.WithLabelValues(tenant.Name, step)); v != 0 {
			t.Errorf("%s = %v after a clean reconcile", step, v)
		}
	}
	recordTenantMetrics(tenant, tenantState{secretsErr: errors.New("boom")})
	if v := testutil.ToFloat64(reconcileErrors.WithLabelValues(tenant.Name, "secrets")); v != 1 {
		t.Errorf("secrets = %v after one failure", v)
	}
	if v := testutil.ToFloat64(reconcileErrors.WithLabelValues(tenant.Name, "apply")); v != 0 {
		t.Errorf("apply = %v, but only secrets failed", v)
	}
}
