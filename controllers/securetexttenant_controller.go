// Package controllers holds the SecureText reconcilers. Each Reconcile reads like a table of
// contents: small, idempotent ensure steps, one file per concern, and one status write at the end
// that happens only when the status changed.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// How often a wait that no watch event ends is rechecked.
const (
	conflictRecheck    = time.Minute
	terminatingRecheck = 5 * time.Second
	legalHoldRecheck   = 30 * time.Second
)

// SecureTextTenantReconciler turns a SecureTextTenant into the tenant's dedicated stack.
type SecureTextTenantReconciler struct {
	client.Client
	// APIReader reads past the cache, which holds only objects the operator labelled.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
}

// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants/finalizers,verbs=update
// +kubebuilder:rbac:groups=securetext.io,resources=legalholds,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one tenant's stack to its spec.
func (r *SecureTextTenantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tenant := &securetextv1alpha1.SecureTextTenant{}
	if err := r.Get(ctx, req.NamespacedName, tenant); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tenant.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, tenant)
	}
	if controllerutil.AddFinalizer(tenant, TenantFinalizer) {
		if err := r.Update(ctx, tenant); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	original := tenant.DeepCopy()
	nsErr := r.reconcileNamespace(ctx, tenant)
	setTenantConditions(tenant, nsErr)
	if err := r.patchStatus(ctx, original, tenant); err != nil {
		return ctrl.Result{}, errors.Join(nsErr, err)
	}

	// Waits are not failures: they requeue without error backoff or Warning events. A conflict
	// is rechecked now and then, because the foreign namespace is outside the operator's cache
	// and its removal sends no event.
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case errors.As(nsErr, &conflict):
		return ctrl.Result{RequeueAfter: conflictRecheck}, nil
	case errors.As(nsErr, &terminating):
		return ctrl.Result{RequeueAfter: terminatingRecheck}, nil
	}
	return ctrl.Result{}, nsErr
}

// reconcileNamespace is the namespace step with its events.
func (r *SecureTextTenantReconciler) reconcileNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) error {
	name := tenant.TargetNamespace()
	changed, created, err := r.ensureNamespace(ctx, tenant)
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

// setTenantConditions derives the conditions from the outcome of the steps. It is pure, so
// that the status written depends only on what was observed.
func setTenantConditions(tenant *securetextv1alpha1.SecureTextTenant, nsErr error) {
	gen := tenant.Generation
	tenant.Status.ObservedGeneration = gen
	set := func(condType string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&tenant.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: gen,
		})
	}
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case errors.As(nsErr, &conflict):
		// Only a person can fix this: Stalled, in kstatus terms, rather than still reconciling.
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict,
			"waiting for the namespace conflict to be resolved")
		set(securetextv1alpha1.ConditionStalled, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceConflict, nsErr.Error())
		return
	case errors.As(nsErr, &terminating):
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceTerminating, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceTerminating,
			"waiting for the old namespace to be deleted")
	case nsErr != nil:
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceFailed, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing,
			"retrying the namespace step")
	default:
		set(securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonReconciled,
			fmt.Sprintf("namespace %s is in place", tenant.Status.Namespace))
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionFalse, securetextv1alpha1.ReasonReconciled,
			"the tenant matches its spec")
	}
	meta.RemoveStatusCondition(&tenant.Status.Conditions, securetextv1alpha1.ConditionStalled)
}

// patchStatus writes the status once, and only when it changed, so that a no-op reconcile makes
// no writes. The merge patch carries the resourceVersion of the read (optimistic lock).
func (r *SecureTextTenantReconciler) patchStatus(ctx context.Context, original, tenant *securetextv1alpha1.SecureTextTenant) error {
	if equality.Semantic.DeepEqual(original.Status, tenant.Status) {
		return nil
	}
	patch := client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{})
	if err := r.Status().Patch(ctx, tenant, patch); err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// finalize removes what the operator made for a deleted tenant, then releases it. The
// namespace is kept (and the tenant released at once) when the tenant carries the orphan
// annotation; deletion waits while an active LegalHold is in the namespace, because deleting the
// namespace would delete the hold without an audited release.
func (r *SecureTextTenantReconciler) finalize(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(tenant, TenantFinalizer) {
		return ctrl.Result{}, nil
	}
	orphan := tenant.Annotations[AnnotationOrphan] == "true"
	if !orphan {
		namespace := tenant.Status.Namespace
		if namespace == "" {
			namespace = tenant.TargetNamespace()
		}
		holds, err := r.activeLegalHolds(ctx, namespace)
		if err != nil {
			return ctrl.Result{}, err
		}
		if len(holds) > 0 {
			msg := fmt.Sprintf("deletion waits: active LegalHolds %v in namespace %s; release them (spec.active: false) "+
				"or set the annotation %s=true on the tenant to keep the namespace", holds, namespace, AnnotationOrphan)
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventDeletionBlocked, "Finalize", "%s", msg)
			original := tenant.DeepCopy()
			tenant.Status.ObservedGeneration = tenant.Generation
			meta.SetStatusCondition(&tenant.Status.Conditions, metav1.Condition{Type: securetextv1alpha1.ConditionReady,
				Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonLegalHoldActive, Message: msg,
				ObservedGeneration: tenant.Generation})
			return ctrl.Result{RequeueAfter: legalHoldRecheck}, r.patchStatus(ctx, original, tenant)
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
	}
	log.FromContext(ctx).Info("tenant cleaned up", "orphaned", orphan)
	controllerutil.RemoveFinalizer(tenant, TenantFinalizer)
	if err := r.Update(ctx, tenant); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("remove finalizer: %w", err))
	}
	return ctrl.Result{}, nil
}

// SetupWithManager registers the reconciler. Tenant namespaces carry no owner reference (a
// cluster-scoped owner would let garbage collection delete a namespace full of data when the
// CRD is reinstalled); the tenant label maps a namespace event back to its tenant instead.
func (r *SecureTextTenantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.SecureTextTenant{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(tenantOfLabelledObject)).
		Watches(&securetextv1alpha1.LegalHold{}, handler.EnqueueRequestsFromMapFunc(r.tenantOfNamespacedObject)).
		Named("securetexttenant").
		Complete(r)
}

// tenantOfNamespacedObject maps an object in a tenant's namespace (a LegalHold) to its tenant,
// so that releasing a hold lets a waiting deletion finish at once.
func (r *SecureTextTenantReconciler) tenantOfNamespacedObject(ctx context.Context, obj client.Object) []reconcile.Request {
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: obj.GetNamespace()}, &ns); err != nil {
		return nil // not a namespace the operator made (the cache holds only those)
	}
	return tenantOfLabelledObject(ctx, &ns)
}

// tenantOfLabelledObject maps an object the operator labelled to its tenant.
func tenantOfLabelledObject(_ context.Context, obj client.Object) []reconcile.Request {
	tenant := obj.GetLabels()[LabelTenant]
	if tenant == "" || obj.GetLabels()[LabelManagedBy] != ManagedByValue {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: tenant}}}
}
