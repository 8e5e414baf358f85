package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions keeps the operator's cache to what it owns: objects it labelled. A cluster with
// thousands of namespaces costs the operator only its tenants' namespaces.
func CacheOptions() cache.Options {
	owned := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Namespace{}: {Label: owned},
		},
	}
}

// The operator's metrics endpoint (main.go) asks the API server who a scraper is and whether it
// may read /metrics.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Setup registers every SecureText reconciler with the manager. The operator's main and the
// envtest suites both call it, so tests run exactly what ships.
func Setup(mgr ctrl.Manager) error {
	return (&SecureTextTenantReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder(FieldManager),
	}).SetupWithManager(mgr)
}
