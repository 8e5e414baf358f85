package controllers

// The LegalHold reconciler reports whether a hold is in effect: its tenant found, and the
// tenant's retention settings (the ConfigMap retention that the tenant reconciler writes and
// the gateway reads) showing the hold as it is. It also records when a hold was released.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// LegalHoldReconciler keeps a LegalHold's Ready condition, observedGeneration and releasedAt.
type LegalHoldReconciler struct {
	client.Client
	// APIReader reads past the cache, for the status write (patchStatusIfChanged).
	APIReader client.Reader
	// Now is the clock of releasedAt; default time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=securetext.io,resources=legalholds,verbs=get;list;watch
// +kubebuilder:rbac:groups=securetext.io,resources=legalholds/status,verbs=patch

// SetupWithManager registers the reconciler: a hold's spec change, and a change of the
// retention settings of its namespace, look at the hold again.
func (r *LegalHoldReconciler) SetupWithManager(mgr ctrl.Manager) error {
	settings := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == RetentionConfigMapName })
	return ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.LegalHold{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.holdsOfNamespace), builder.WithPredicates(settings)).
		Named("legalhold").
		Complete(r)
}

// holdsOfNamespace maps a namespace's retention settings to the holds of that namespace.
func (r *LegalHoldReconciler) holdsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var holds securetextv1alpha1.LegalHoldList
	if err := r.List(ctx, &holds, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "list legal holds", "namespace", obj.GetNamespace())
		return nil
	}
	out := make([]reconcile.Request, 0, len(holds.Items))
	for _, h := range holds.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&h)})
	}
	return out
}

// Reconcile finds the hold's tenant and retention settings and writes the hold's status.
func (r *LegalHoldReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hold := &securetextv1alpha1.LegalHold{}
	if err := r.Get(ctx, req.NamespacedName, hold); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	tenant, settings, err := r.tenantSettings(ctx, hold.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	original := hold.DeepCopy()
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	setLegalHoldStatus(hold, tenant, settings, now())
	return ctrl.Result{}, patchStatusIfChanged(ctx, r.Client, r.APIReader, original, hold,
		func(h *securetextv1alpha1.LegalHold) any { return h.Status })
}

// tenantSettings returns the tenant that owns namespace ns ("" for none) and its rendered
// retention settings (nil while there are none), both from the cache.
func (r *LegalHoldReconciler) tenantSettings(ctx context.Context, ns string) (string, *retention.Settings, error) {
	var namespace corev1.Namespace
	switch err := r.Get(ctx, client.ObjectKey{Name: ns}, &namespace); {
	case apierrors.IsNotFound(err):
		return "", nil, nil // not a namespace the operator made (the cache holds only those)
	case err != nil:
		return "", nil, fmt.Errorf("read namespace %s: %w", ns, err)
	}
	name := namespace.Labels[LabelTenant]
	if name == "" || !namespaceOwnedBy(&namespace, name) {
		return "", nil, nil
	}
	switch err := r.Get(ctx, client.ObjectKey{Name: name}, &securetextv1alpha1.SecureTextTenant{}); {
	case apierrors.IsNotFound(err):
		return "", nil, nil
	case err != nil:
		return "", nil, fmt.Errorf("read tenant %s: %w", name, err)
	}
	var cm corev1.ConfigMap
	switch err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: RetentionConfigMapName}, &cm); {
	case apierrors.IsNotFound(err):
		return name, nil, nil
	case err != nil:
		return name, nil, fmt.Errorf("read ConfigMap %s/%s: %w", ns, RetentionConfigMapName, err)
	}
	s, err := parseRenderedRetention(&cm)
	if err != nil {
		return name, nil, err
	}
	return name, &s, nil
}

// setLegalHoldStatus sets the hold's status from its tenant ("" when none owns the namespace)
// and the tenant's rendered settings (nil while there are none). It is pure but for now, the
// time a release is first seen.
func setLegalHoldStatus(h *securetextv1alpha1.LegalHold, tenant string, settings *retention.Settings, now time.Time) {
	gen := h.Generation
	h.Status.ObservedGeneration = gen
	active := h.IsActive()
	switch {
	case active:
		h.Status.ReleasedAt = nil
	case h.Status.ReleasedAt == nil:
		h.Status.ReleasedAt = &metav1.Time{Time: now}
	}
	meta.SetStatusCondition(&h.Status.Conditions, legalHoldReadyCondition(h, tenant, settings, gen))
}

// legalHoldReadyCondition is True when the tenant's settings show the hold as it is: an
// active hold in them exactly as RetentionHold renders it, a released one gone from them.
func legalHoldReadyCondition(h *securetextv1alpha1.LegalHold, tenant string, settings *retention.Settings, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionReady
	where := fmt.Sprintf("the retention settings of tenant %s (ConfigMap %s/%s)", tenant, h.Namespace, RetentionConfigMapName)
	if tenant == "" {
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonTenantNotFound,
			fmt.Sprintf("namespace %s belongs to no SecureTextTenant, so this hold keeps nothing: create it in the namespace of "+
				"the tenant whose messages it holds (the tenant's status.namespace)", h.Namespace), gen)
	}
	if settings == nil {
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending,
			where+" are not written yet: see the tenant's RetentionReady condition", gen)
	}
	var rendered *retention.Hold
	for i := range settings.Holds {
		if settings.Holds[i].Name == h.Name {
			rendered = &settings.Holds[i]
		}
	}
	if !h.IsActive() {
		if rendered != nil {
			return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending,
				"released, but still in "+where+" until the operator writes them again", gen)
		}
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonHoldReleased,
			"released: no longer in "+where+"; the messages it matched follow the retention policy again, unless another hold matches them", gen)
	}
	if rendered == nil || !sameHold(*rendered, RetentionHold(h)) {
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending,
			"not yet in "+where+" as it is now", gen)
	}
	return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonHoldRendered,
		"in "+where+": the gateway keeps the messages it matches from every sweep once the kubelet refreshes the mounted file", gen)
}

// sameHold compares holds as the workloads read them (JSON), so that equal times in other
// locations or nil and empty lists do not differ.
func sameHold(a, b retention.Hold) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
