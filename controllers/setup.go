package controllers

import (
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
