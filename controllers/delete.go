package controllers

// Deletion and finalizers. TenantFinalizer holds every tenant until the operator has removed
// what it made; VaultFinalizer holds only tenants that have something in Vault.

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// legalHoldRecheck is how often a deletion that waits for an active LegalHold is rechecked.
const legalHoldRecheck = 30 * time.Second

// ensureFinalizer puts TenantFinalizer on the tenant, so that its deletion waits for finalize to
// remove what the operator made for it.
func (r *SecureTextTenantReconciler) ensureFinalizer(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) error {
	if controllerutil.AddFinalizer(tenant, TenantFinalizer) {
		if err := r.Update(ctx, tenant); err != nil {
			return fmt.Errorf("add finalizer: %w", err)
		}
	}
	return nil
}

// addFinalizer adds a finalizer to the tenant with an optimistic-lock patch. The patch is sent
// from a copy, because the answer would overwrite the status this reconcile is computing; only
// the finalizers and the new resourceVersion are taken back.
func (r *SecureTextTenantReconciler) addFinalizer(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, name string) error {
	patched := tenant.DeepCopy()
	if !controllerutil.AddFinalizer(patched, name) {
		return nil
	}
	if err := r.Patch(ctx, patched, client.MergeFromWithOptions(tenant, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("add finalizer %s: %w", name, err)
	}
	tenant.Finalizers = patched.Finalizers
	tenant.ResourceVersion = patched.ResourceVersion
	return nil
}

// finalize removes what the operator made for a deleted tenant, then releases it:
//   - deletion waits while an active LegalHold is in the namespace, because deleting the
//     namespace would delete the hold without an audited release, and Shred would destroy
//     what the hold preserves;
//   - the tenant's Vault objects: Retain removes the keystore's role and policy and keeps the
//     Transit keys; Shred destroys the keys (crypto-shredding). A tenant without the Vault
//     finalizer never had anything in Vault and does not wait for it;
//   - the namespace, with everything the operator rendered in it.
//
// The orphan annotation, or a SecureTextTenant CRD that is itself being deleted (a CRD
// reinstall), skips all of it: the namespace, its data and Vault stay as they are.
func (r *SecureTextTenantReconciler) finalize(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(tenant, TenantFinalizer) && !controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
		return ctrl.Result{}, nil
	}
	orphan, why, err := r.orphaned(ctx, tenant)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !orphan {
		namespace := tenant.Status.Namespace
		if namespace == "" {
			namespace = tenant.TargetNamespace()
		}
		holds, err := r.activeLegalHolds(ctx, tenant, namespace)
		if err != nil {
			return ctrl.Result{}, err
		}
		if len(holds) > 0 {
			what := "deletion waits"
			if tenant.Spec.DeletionPolicy == securetextv1alpha1.DeletionShred {
				what = "Shred is refused"
			}
			msg := fmt.Sprintf("%s: active LegalHolds %v in namespace %s; release them (spec.active: false) "+
				"or set the annotation %s=true on the tenant to keep the namespace and the keys", what, holds, namespace, AnnotationOrphan)
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventDeletionBlocked, "Finalize", "%s", msg)
			return ctrl.Result{RequeueAfter: legalHoldRecheck}, r.setDeletionCondition(ctx, tenant, securetextv1alpha1.ReasonLegalHoldActive, msg)
		}
		if controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
			if err := r.cleanUpVault(ctx, tenant, namespace); err != nil {
				msg := fmt.Sprintf("deletion waits for Vault: %s; set the annotation %s=true on the tenant to delete it "+
					"without cleaning up Vault", err, AnnotationOrphan)
				return ctrl.Result{}, errors.Join(err, r.setDeletionCondition(ctx, tenant, VaultReason(err), msg))
			}
		}
		deleted, err := r.deleteNamespace(ctx, tenant)
		if err != nil {
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "Finalize", "%s", err)
			return ctrl.Result{}, err
		}
		if deleted {
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceDeleted, "Finalize",
				"deleting namespace %s", namespace)
		}
	} else {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventOrphaned, "Finalize",
			"kept namespace %s and the tenant's Vault objects: %s", tenant.Status.Namespace, why)
	}
	log.FromContext(ctx).Info("tenant cleaned up", "orphaned", orphan)
	controllerutil.RemoveFinalizer(tenant, TenantFinalizer)
	controllerutil.RemoveFinalizer(tenant, VaultFinalizer)
	if err := r.Update(ctx, tenant); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("remove finalizer: %w", err))
	}
	forgetTenantMetrics(tenant.Name)
	r.vaultChecks.Delete(tenant.Name)
	return ctrl.Result{}, nil
}

// orphaned reports whether deletion must leave the tenant's namespace and Vault objects alone.
func (r *SecureTextTenantReconciler) orphaned(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (bool, string, error) {
	if tenant.Annotations[AnnotationOrphan] == "true" {
		return true, "the tenant has the annotation " + AnnotationOrphan + "=true", nil
	}
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	err := r.APIReader.Get(ctx, client.ObjectKey{Name: tenantCRDName}, crd)
	switch {
	case apierrors.IsNotFound(err):
		return true, "the SecureTextTenant CRD is gone", nil
	case err != nil:
		return false, "", fmt.Errorf("read CRD %s: %w", tenantCRDName, err)
	case !crd.DeletionTimestamp.IsZero():
		return true, "the SecureTextTenant CRD is being deleted (a reinstall deletes every tenant; their stacks are kept)", nil
	}
	return false, "", nil
}

// tenantCRDName is the SecureTextTenant CRD's name.
const tenantCRDName = "securetexttenants." + "securetext.io"

// cleanUpVault runs the tenant's deletion policy in Vault, then drops the Vault finalizer.
func (r *SecureTextTenantReconciler) cleanUpVault(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, namespace string) error {
	p := r.Options.Vault
	if p == nil {
		return &VaultError{Op: "clean up", Reason: securetextv1alpha1.ReasonVaultNotConfigured,
			Err: errors.New("the operator has no Vault settings, but the tenant has objects in Vault")}
	}
	tv, _, err := r.tenantInputs(tenant, namespace)
	if err != nil {
		return err
	}
	var res VaultResult
	if tenant.Spec.DeletionPolicy == securetextv1alpha1.DeletionShred {
		res, err = p.Shred(ctx, tv)
	} else {
		res, err = p.Remove(ctx, tv)
	}
	r.event(tenant, EventVaultChanged, "Finalize", res.Changes)
	if err != nil {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventVaultFailed, "Finalize", "%s", err)
		return err
	}
	before := tenant.DeepCopy()
	controllerutil.RemoveFinalizer(tenant, VaultFinalizer)
	if err := r.Patch(ctx, tenant, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("remove finalizer %s: %w", VaultFinalizer, err)
	}
	return nil
}
