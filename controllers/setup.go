package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// CacheOptions keeps the operator's cache to what it owns: by default only objects it
// labelled (namespaces, Secrets — as metadata only —, workloads, policies), so a cluster with
// thousands of namespaces, Secrets and Deployments costs the operator only its tenants'. The
// SecureText resources themselves are cached whole.
func CacheOptions() cache.Options {
	owned := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
	everything := cache.ByObject{Label: labels.Everything()}
	return cache.Options{
		DefaultLabelSelector: owned,
		ByObject: map[client.Object]cache.ByObject{
			&securetextv1alpha1.SecureTextTenant{}: everything,
			&securetextv1alpha1.RetentionPolicy{}:  everything,
			&securetextv1alpha1.LegalHold{}:        everything,
		},
	}
}

// The operator's metrics endpoint (main.go) asks the API server who a scraper is and whether it
// may read /metrics.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Setup registers every SecureText reconciler with the manager. The operator's main and the
// envtest suites both call it, so tests run exactly what ships.
func Setup(mgr ctrl.Manager, opts Options) error {
	return (&SecureTextTenantReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder(FieldManager),
		Options:   opts,
	}).SetupWithManager(mgr)
}

// SetupWithManager registers the reconciler. Nothing the operator makes carries an owner
// reference to the tenant: a cluster-scoped owner would let garbage collection delete a
// tenant's stack (and its Secrets) when the CRD is reinstalled. The tenant label maps an
// event on a child back to its tenant instead, so a deleted or edited child is repaired at once.
func (r *SecureTextTenantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toTenant := handler.EnqueueRequestsFromMapFunc(tenantOfLabelledObject)
	b := ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.SecureTextTenant{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Namespace{}, toTenant).
		Watches(&corev1.Secret{}, toTenant, builder.OnlyMetadata).
		Watches(&securetextv1alpha1.LegalHold{}, handler.EnqueueRequestsFromMapFunc(r.tenantOfNamespacedObject))
	for _, obj := range ownedObjects() {
		b = b.Watches(obj, toTenant)
	}
	workers := r.Options.MaxConcurrentReconciles
	if workers <= 0 {
		workers = 4
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
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
