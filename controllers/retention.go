package controllers

// The retention step of a tenant's reconcile: read the RetentionPolicy the tenant uses and the
// LegalHolds of its namespace from the cache, and decide its retention settings
// (RetentionSettings, render_retention.go); the workloads step renders and applies them with
// everything else. A change of the policy or of a hold enqueues the tenants it concerns
// (setup.go).

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// legalHolds lists the LegalHolds of the tenant's namespace from the cache.
func (r *SecureTextTenantReconciler) legalHolds(ctx context.Context, ns string) ([]securetextv1alpha1.LegalHold, error) {
	var holds securetextv1alpha1.LegalHoldList
	if err := r.List(ctx, &holds, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("list legal holds in %s: %w", ns, err)
	}
	return holds.Items, nil
}

// countActive counts the active holds.
func countActive(holds []securetextv1alpha1.LegalHold) int32 {
	var n int32
	for i := range holds {
		if holds[i].IsActive() {
			n++
		}
	}
	return n
}

// retentionSettings reads the RetentionPolicy the tenant uses from the cache and decides the
// tenant's retention settings. Only a policy that does not exist leaves the policy out; any
// other read error is returned, so that a passing API hiccup does not stop the sweeps.
func (r *SecureTextTenantReconciler) retentionSettings(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant,
	holds []securetextv1alpha1.LegalHold) (retention.Settings, RetentionOutcome, error) {
	var policy *securetextv1alpha1.RetentionPolicy
	if name := RetentionPolicyName(tenant, r.Options.DefaultRetentionPolicy); name != "" {
		p := &securetextv1alpha1.RetentionPolicy{}
		switch err := r.Get(ctx, client.ObjectKey{Name: name}, p); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return retention.Settings{}, RetentionOutcome{}, fmt.Errorf("read RetentionPolicy %s: %w", name, err)
		default:
			policy = p
		}
	}
	s, out := RetentionSettings(tenant, r.Options.DefaultRetentionPolicy, policy, holds)
	return s, out, nil
}
