package controllers

// The Vault step of a tenant's reconcile: it drives VaultProvisioner (vault.go, the Vault client
// layer) and records what it found for the VaultReady condition.

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// vaultCheck is a Vault check that found the tenant's objects in place.
type vaultCheck struct {
	resourceVersion string // of the tenant when checked
	at              time.Time
	nextRotation    time.Time
	rotationPeriod  time.Duration // the tenant's, or its retention policy's when shorter
}

// ensureVault brings the tenant's Vault objects to the spec. The Vault finalizer goes on
// the tenant before the first write to Vault, so that deletion cleans up exactly the tenants
// that have something in Vault: one whose Vault objects were never made is deleted without
// waiting for Vault.
func (r *SecureTextTenantReconciler) ensureVault(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, tv TenantVault, st *tenantState) {
	p := r.Options.Vault
	if p == nil {
		st.vaultOff = true
		return
	}
	now := r.now()
	if c, ok := r.vaultChecks.Load(tenant.Name); ok {
		// The same tenant, checked a moment ago: Vault drift is repaired at the resync, and a
		// spec or annotation change (a new resourceVersion) checks again at once.
		c := c.(vaultCheck)
		if c.resourceVersion == tenant.ResourceVersion && c.rotationPeriod == tv.RotationPeriod && now.Sub(c.at) < r.resync()/2 &&
			(c.nextRotation.IsZero() || now.Before(c.nextRotation)) {
			st.vaultMount, st.rotateAt = tv.Mount(), c.nextRotation
			return
		}
	}
	if !controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
		if _, err := p.Exists(ctx, tv); err != nil {
			st.vaultErr = err
			return
		}
		if err := r.addFinalizer(ctx, tenant, VaultFinalizer); err != nil {
			st.vaultErr = err
			return
		}
	}
	res, err := p.Ensure(ctx, tv)
	r.event(tenant, EventVaultChanged, "EnsureVault", res.Changes)
	st.rotateAt = res.NextRotation
	if err != nil {
		st.vaultErr = err
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventVaultFailed, "EnsureVault", "%s", err)
		return
	}
	st.vaultMount = tv.Mount()
	r.vaultChecks.Store(tenant.Name, vaultCheck{resourceVersion: tenant.ResourceVersion, at: now, nextRotation: res.NextRotation,
		rotationPeriod: tv.RotationPeriod})
}
