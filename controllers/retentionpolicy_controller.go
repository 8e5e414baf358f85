package controllers

// The RetentionPolicy reconciler reports whether the workloads can apply a policy. The tenants
// that use it render it themselves (render_retention.go); an invalid policy drives no sweep.

import (
	"cmp"
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// RetentionPolicyReconciler keeps a RetentionPolicy's Ready condition and observedGeneration.
type RetentionPolicyReconciler struct {
	client.Client
	// APIReader reads past the cache, for the status write (patchStatusIfChanged).
	APIReader client.Reader
	// DefaultPolicy is the operator's --default-retention-policy: the policy of a tenant that
	// names none.
	DefaultPolicy string
}

// +kubebuilder:rbac:groups=securetext.io,resources=retentionpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=securetext.io,resources=retentionpolicies/status,verbs=patch

// SetupWithManager registers the reconciler; its own status writes change no generation.
func (r *RetentionPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.RetentionPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A tenant that goes, or moves to another policy, leaves the status of its old one.
		Watches(&securetextv1alpha1.SecureTextTenant{}, handler.Funcs{
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				if old, now := r.policyOf(e.ObjectOld), r.policyOf(e.ObjectNew); old != "" && (old != now || !e.ObjectNew.GetDeletionTimestamp().IsZero()) {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: old}})
				}
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				if name := r.policyOf(e.Object); name != "" {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
				}
			},
		}).
		Named("retentionpolicy").
		Complete(r)
}

// Reconcile sets the policy's Ready condition from RetentionPolicySettings.
func (r *RetentionPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	policy := &securetextv1alpha1.RetentionPolicy{}
	if err := r.Get(ctx, req.NamespacedName, policy); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	original := policy.DeepCopy()
	setRetentionPolicyConditions(policy)
	var users securetextv1alpha1.SecureTextTenantList
	if err := r.List(ctx, &users, client.MatchingFields{indexRetentionPolicy: policy.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("list the tenants of policy %s: %w", policy.Name, err)
	}
	using := map[string]bool{}
	for _, t := range users.Items {
		if t.DeletionTimestamp.IsZero() {
			using[t.Name] = true
		}
	}
	keepPolicyTenants(&policy.Status, using)
	return ctrl.Result{}, patchStatusIfChanged(ctx, r.Client, r.APIReader, original, policy,
		func(p *securetextv1alpha1.RetentionPolicy) any { return p.Status })
}

// policyOf is the RetentionPolicy a tenant uses, "" for none.
func (r *RetentionPolicyReconciler) policyOf(obj client.Object) string {
	t, ok := obj.(*securetextv1alpha1.SecureTextTenant)
	if !ok {
		return ""
	}
	return RetentionPolicyName(t, r.DefaultPolicy)
}

// setRetentionPolicyConditions sets Ready and observedGeneration from the spec alone.
func setRetentionPolicyConditions(p *securetextv1alpha1.RetentionPolicy) {
	gen := p.Generation
	p.Status.ObservedGeneration = gen
	ready := condition(securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionPolicyValid,
		fmt.Sprintf("the workloads can apply the policy: links expire after %s, content is purged after %s, audit events are "+
			"kept for %s, sweeps run every %s, the wrapping key rotates at least every %s", p.Spec.UnreadLinkExpiry,
			p.Spec.ContentPurgeAfter, p.Spec.AuditRetention, p.Spec.SweepInterval, cmp.Or(p.Spec.KeyRotationPeriod, DefaultKeyRotationPeriod)), gen)
	if _, err := RetentionPolicySettings(p); err != nil {
		ready = condition(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonRetentionPolicyInvalid,
			fmt.Sprintf("%v: fix the policy; until then the tenants that use it sweep nothing", err), gen)
	}
	meta.SetStatusCondition(&p.Status.Conditions, ready)
}
