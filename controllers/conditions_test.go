package controllers

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

func TestSetTenantConditions(t *testing.T) {
	cases := []struct {
		name                         string
		st                           tenantState
		ready, reconciling           metav1.ConditionStatus
		readyReason, reconcileReason string
	}{
		{"everything in place", tenantState{}, metav1.ConditionTrue, metav1.ConditionFalse,
			securetextv1alpha1.ReasonReconciled, securetextv1alpha1.ReasonReconciled},
		{"foreign namespace", tenantState{nsErr: errNamespaceConflict{namespace: "x"}}, metav1.ConditionFalse, metav1.ConditionFalse,
			securetextv1alpha1.ReasonNamespaceConflict, securetextv1alpha1.ReasonNamespaceConflict},
		{"wrapped conflict", tenantState{nsErr: errors.Join(errors.New("other"), errNamespaceConflict{namespace: "x"})}, metav1.ConditionFalse,
			metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, securetextv1alpha1.ReasonNamespaceConflict},
		{"API error", tenantState{nsErr: errors.New("etcd timeout")}, metav1.ConditionFalse, metav1.ConditionTrue,
			securetextv1alpha1.ReasonNamespaceFailed, securetextv1alpha1.ReasonProgressing},
		{"Vault down", tenantState{vaultErr: &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultUnavailable,
			Err: errors.New("connection refused")}}, metav1.ConditionFalse, metav1.ConditionTrue,
			securetextv1alpha1.ReasonVaultUnavailable, securetextv1alpha1.ReasonProgressing},
		{"Vault down explains more than pods starting", tenantState{pending: []string{"keystore: 0 of 2 replicas available"},
			vaultErr: &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultSealed, Err: errors.New("sealed")}},
			metav1.ConditionFalse, metav1.ConditionTrue, securetextv1alpha1.ReasonVaultSealed, securetextv1alpha1.ReasonProgressing},
		{"Vault conflict needs a person", tenantState{vaultErr: &VaultError{Op: "mount", Reason: securetextv1alpha1.ReasonVaultConflict,
			Err: errors.New("kv mount")}}, metav1.ConditionFalse, metav1.ConditionFalse,
			securetextv1alpha1.ReasonVaultConflict, securetextv1alpha1.ReasonVaultConflict},
		{"pods starting", tenantState{pending: []string{"gateway: 0 of 2 replicas available"}}, metav1.ConditionFalse,
			metav1.ConditionTrue, securetextv1alpha1.ReasonWorkloadsProgressing, securetextv1alpha1.ReasonProgressing},
		{"apply refused", tenantState{applyErr: errors.New("admission webhook denied")}, metav1.ConditionFalse,
			metav1.ConditionTrue, securetextv1alpha1.ReasonApplyFailed, securetextv1alpha1.ReasonProgressing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := &securetextv1alpha1.SecureTextTenant{}
			tenant.Generation = 7
			setTenantConditions(tenant, tc.st)
			if tenant.Status.ObservedGeneration != 7 {
				t.Errorf("observedGeneration = %d", tenant.Status.ObservedGeneration)
			}
			for _, want := range []struct {
				typ, reason string
				status      metav1.ConditionStatus
			}{
				{securetextv1alpha1.ConditionReady, tc.readyReason, tc.ready},
				{securetextv1alpha1.ConditionReconciling, tc.reconcileReason, tc.reconciling},
			} {
				c := meta.FindStatusCondition(tenant.Status.Conditions, want.typ)
				if c == nil || c.Status != want.status || c.Reason != want.reason || c.ObservedGeneration != 7 {
					t.Errorf("%s = %+v; want %s/%s at generation 7", want.typ, c, want.status, want.reason)
				}
			}
		})
	}
}

func TestNamespaceOwnership(t *testing.T) {
	labels := desiredNamespaceLabels(&securetextv1alpha1.SecureTextTenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}})
	if labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("restricted not enforced: %v", labels)
	}
	if !labelsSatisfied(map[string]string{"extra": "x", LabelTenant: "a", LabelManagedBy: ManagedByValue,
		LabelPartOf: PartOfValue, labelPodSecurityEnforce: "restricted", labelPodSecurityEnforceVersion: "latest",
		labelPodSecurityAudit: "restricted", labelPodSecurityWarn: "restricted"}, labels) {
		t.Error("extra labels should not count as drift")
	}
	if labelsSatisfied(map[string]string{LabelTenant: "a"}, labels) {
		t.Error("missing labels must count as drift")
	}
}
