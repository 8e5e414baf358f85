package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// errNamespaceTerminating means the tenant's namespace is still being deleted (e.g. the tenant
// was deleted and recreated); it is recreated once it is gone. It is a wait, not a failure.
type errNamespaceTerminating struct{ namespace string }

func (e errNamespaceTerminating) Error() string {
	return fmt.Sprintf("namespace %s is still being deleted; it will be recreated once it is gone", e.namespace)
}

// errNamespaceConflict means the tenant's namespace exists and belongs to someone else.
type errNamespaceConflict struct{ namespace string }

func (e errNamespaceConflict) Error() string {
	return fmt.Sprintf("namespace %q already exists and is not managed by SecureText for this tenant: "+
		"choose another spec.namespace or delete that namespace", e.namespace)
}

// ensureNamespace is the namespace step with its events. Once the namespace is in place, its
// name goes into the status; the steps after it work there.
func (r *SecureTextTenantReconciler) ensureNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) error {
	name := tenant.TargetNamespace()
	changed, created, err := r.createOrRepairNamespace(ctx, tenant)
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case errors.As(err, &conflict):
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventNamespaceConflict, "EnsureNamespace", "%s", err)
	case errors.As(err, &terminating):
	case err != nil:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "EnsureNamespace", "%s", err)
	case created:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceCreated, "EnsureNamespace",
			"created namespace %s with Pod Security restricted enforced", name)
	case changed:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceUpdated, "EnsureNamespace",
			"repaired the labels of namespace %s", name)
	}
	if err == nil {
		tenant.Status.Namespace = name
	}
	return err
}

// createOrRepairNamespace creates the tenant's namespace, or repairs its labels with server-side apply.
// A namespace that exists but was not made for this tenant is never touched: a new namespace is
// created with Create, so one that appeared since the read is never taken over by the write. It reports
// whether it wrote anything, so that events describe real changes only.
func (r *SecureTextTenantReconciler) createOrRepairNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (changed, created bool, err error) {
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
		ns = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: want}}
		err := r.Create(ctx, &ns, client.FieldOwner(FieldManager))
		if apierrors.IsAlreadyExists(err) {
			// It appeared since the read: retry, so that the next pass reads it and decides
			// ownership from its labels (it is adopted only if it is ours).
			return false, false, fmt.Errorf("namespace %s appeared while being created; reading it again: %w", name, err)
		}
		if err != nil {
			return false, false, fmt.Errorf("create namespace %s: %w", name, err)
		}
		return true, true, nil
	case err != nil:
		return false, false, fmt.Errorf("read namespace %s: %w", name, err)
	case !namespaceOwnedBy(&ns, tenant.Name):
		return false, false, errNamespaceConflict{namespace: name}
	case !ns.DeletionTimestamp.IsZero():
		return false, false, errNamespaceTerminating{namespace: name}
	case labelsSatisfied(ns.Labels, want):
		return false, false, nil
	}

	apply := corev1ac.Namespace(name).WithLabels(maps.Clone(want))
	if err := r.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return false, false, fmt.Errorf("apply namespace %s: %w", name, err)
	}
	return true, false, nil
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

// activeLegalHolds names the active LegalHolds in the tenant's namespace. Deleting the namespace
// would delete them without an audited release, and Shred would destroy what they preserve, so
// deletion waits while there are any. They are read past the cache, which may not have seen a
// hold created a moment ago; a namespace that is not the tenant's own is not the tenant's
// concern.
func (r *SecureTextTenantReconciler) activeLegalHolds(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, namespace string) ([]string, error) {
	var ns corev1.Namespace
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read namespace %s: %w", namespace, err)
	}
	if !namespaceOwnedBy(&ns, tenant.Name) {
		return nil, nil
	}
	var holds securetextv1alpha1.LegalHoldList
	if err := r.APIReader.List(ctx, &holds, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("list legal holds in %s: %w", namespace, err)
	}
	var active []string
	for i := range holds.Items {
		if holds.Items[i].IsActive() {
			active = append(active, holds.Items[i].Name)
		}
	}
	return active, nil
}
