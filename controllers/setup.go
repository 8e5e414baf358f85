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
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	if err := (&SecureTextTenantReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder(FieldManager),
		Options:   opts,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&RetentionPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), DefaultPolicy: opts.DefaultRetentionPolicy}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&LegalHoldReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Now: opts.Now}).SetupWithManager(mgr)
}

// indexRetentionPolicy indexes tenants by the RetentionPolicy they use (RetentionPolicyName),
// so that a policy's change enqueues exactly those tenants.
const indexRetentionPolicy = "securetext.io/retention-policy"

// SetupWithManager registers the reconciler. Nothing the operator makes carries an owner
// reference to the tenant: a cluster-scoped owner would let garbage collection delete a
// tenant's stack (and its Secrets) when the CRD is reinstalled. The tenant label maps an
// event on a child back to its tenant instead, so a deleted or edited child is repaired at once.
func (r *SecureTextTenantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	defaultPolicy := r.Options.DefaultRetentionPolicy
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &securetextv1alpha1.SecureTextTenant{}, indexRetentionPolicy,
		func(obj client.Object) []string {
			if name := RetentionPolicyName(obj.(*securetextv1alpha1.SecureTextTenant), defaultPolicy); name != "" {
				return []string{name}
			}
			return nil
		}); err != nil {
		return err
	}
	toTenant := handler.EnqueueRequestsFromMapFunc(tenantOfLabelledObject)
	// The status writes of the policy and hold reconcilers change no generation and concern
	// no tenant.
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	b := ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.SecureTextTenant{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Namespace{}, toTenant).
		Watches(&corev1.Secret{}, toTenant, builder.OnlyMetadata).
		Watches(&securetextv1alpha1.LegalHold{}, handler.EnqueueRequestsFromMapFunc(r.tenantOfNamespacedObject), specChanged).
		Watches(&securetextv1alpha1.RetentionPolicy{}, handler.EnqueueRequestsFromMapFunc(r.tenantsUsingPolicy), specChanged)
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

// tenantsUsingPolicy maps a RetentionPolicy to the tenants that use it, by name or as the
// operator's default, so that a new, changed or deleted policy reaches their settings at once.
func (r *SecureTextTenantReconciler) tenantsUsingPolicy(ctx context.Context, obj client.Object) []reconcile.Request {
	var tenants securetextv1alpha1.SecureTextTenantList
	if err := r.List(ctx, &tenants, client.MatchingFields{indexRetentionPolicy: obj.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list the tenants of a retention policy", "policy", obj.GetName())
		return nil
	}
	out := make([]reconcile.Request, 0, len(tenants.Items))
	for _, t := range tenants.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: t.Name}})
	}
	return out
}

// tenantOfNamespacedObject maps an object in a tenant's namespace (a LegalHold) to its tenant,
// so that a new or released hold reaches the tenant's retention settings, and releasing a hold
// lets a waiting deletion finish, at once.
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
