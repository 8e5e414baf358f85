package controllers

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// desiredNamespaceLabels are the labels of a tenant's namespace: the tenant's own, plus Pod
// Security admission enforcing the restricted profile.
func desiredNamespaceLabels(tenant *securetextv1alpha1.SecureTextTenant) map[string]string {
	labels := tenantLabels(tenant.Name)
	labels[labelPodSecurityEnforce] = podSecurityRestricted
	labels[labelPodSecurityEnforceVersion] = podSecurityLatest
	labels[labelPodSecurityAudit] = podSecurityRestricted
	labels[labelPodSecurityWarn] = podSecurityRestricted
	return labels
}

// namespaceOwnedBy reports whether ns was made by the operator for the named tenant.
func namespaceOwnedBy(ns *corev1.Namespace, tenant string) bool {
	return ns.Labels[LabelManagedBy] == ManagedByValue && ns.Labels[LabelTenant] == tenant
}

// labelsSatisfied reports whether have already carries every label in want.
func labelsSatisfied(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// errNamespaceConflict means the tenant's namespace exists and belongs to someone else.
type errNamespaceConflict struct{ namespace string }

func (e errNamespaceConflict) Error() string {
	return fmt.Sprintf("namespace %q already exists and is not managed by SecureText for this tenant: "+
		"choose another spec.namespace or delete that namespace", e.namespace)
}

// ensureNamespace creates the tenant's namespace, or repairs its labels, with server-side apply.
// A namespace that exists but was not made for this tenant is never touched. It reports whether
// it wrote anything, so that events describe real changes only.
func (r *SecureTextTenantReconciler) ensureNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (changed, created bool, err error) {
	name := tenant.TargetNamespace()
	want := desiredNamespaceLabels(tenant)

	var ns corev1.Namespace
	// The cache sees only namespaces the operator labelled; ask the API server directly before
	// concluding that a namespace does not exist, so that an unlabelled one is never adopted.
	err = r.Get(ctx, client.ObjectKey{Name: name}, &ns)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, client.ObjectKey{Name: name}, &ns)
	}
	switch {
	case apierrors.IsNotFound(err):
		created = true
	case err != nil:
		return false, false, fmt.Errorf("read namespace %s: %w", name, err)
	case !namespaceOwnedBy(&ns, tenant.Name):
		return false, false, errNamespaceConflict{namespace: name}
	case !ns.DeletionTimestamp.IsZero():
		return false, false, fmt.Errorf("namespace %s is still being deleted; it will be recreated once it is gone", name)
	case labelsSatisfied(ns.Labels, want):
		return false, false, nil
	}

	apply := corev1ac.Namespace(name).WithLabels(maps.Clone(want))
	if err := r.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return false, false, fmt.Errorf("apply namespace %s: %w", name, err)
	}
	return true, created, nil
}

// deleteNamespace deletes the tenant's namespace if the operator made it for this tenant. It
// returns once deletion has started: the namespace controller finishes it in the background.
func (r *SecureTextTenantReconciler) deleteNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (deleted bool, err error) {
	name := tenant.Status.Namespace
	if name == "" {
		name = tenant.TargetNamespace()
	}
	var ns corev1.Namespace
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("read namespace %s: %w", name, err)
	}
	if !namespaceOwnedBy(&ns, tenant.Name) || !ns.DeletionTimestamp.IsZero() {
		return false, nil
	}
	// Preconditions: delete exactly the namespace that was read and checked above.
	err = r.Delete(ctx, &ns, client.Preconditions{UID: &ns.UID}, client.PropagationPolicy("Background"))
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return err == nil, nil
}
