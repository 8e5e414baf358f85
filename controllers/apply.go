package controllers

// Applying a tenant's rendered objects. Each object goes to the API server by server-side
// apply, with the operator's one field manager and forced ownership (the operator's fields are
// the operator's: an edit by hand is undone). An object is applied only when the cached copy
// differs from what Render decided, so a reconcile that finds everything in place writes
// nothing. Objects the operator made earlier that Render no longer returns (an Ingress after
// the API was turned off, an autoscaler removed) are deleted.

import (
	"context"
	"fmt"
	"reflect"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applyResult says what the apply step changed, "Kind/name" each, for events.
type applyResult struct {
	Applied []string
	Pruned  []string
}

// ownedKinds are the kinds of namespaced objects Render makes (besides Secrets, which the
// secrets step owns), as lists for pruning.
func ownedKinds() []client.ObjectList {
	return []client.ObjectList{
		&networkingv1.NetworkPolicyList{}, &corev1.ServiceAccountList{}, &corev1.ConfigMapList{},
		&corev1.ServiceList{}, &appsv1.DeploymentList{}, &policyv1.PodDisruptionBudgetList{},
		&autoscalingv2.HorizontalPodAutoscalerList{}, &networkingv1.IngressList{},
	}
}

// ownedObjects are empty objects of the kinds Render makes, for the manager's watches.
func ownedObjects() []client.Object {
	return []client.Object{
		&networkingv1.NetworkPolicy{}, &corev1.ServiceAccount{}, &corev1.ConfigMap{}, &corev1.Service{},
		&appsv1.Deployment{}, &policyv1.PodDisruptionBudget{}, &autoscalingv2.HorizontalPodAutoscaler{},
		&networkingv1.Ingress{},
	}
}

// applyDesired applies every object of d that differs from the cluster, then deletes what the
// operator made for the tenant that d no longer holds.
func (r *SecureTextTenantReconciler) applyDesired(ctx context.Context, tenant string, ns string, d Desired) (applyResult, error) {
	var res applyResult
	want := map[string]bool{}
	for _, obj := range d.Objects() {
		id := objectID(obj)
		want[id] = true
		same, err := r.matchesCluster(ctx, obj)
		if err != nil {
			return res, err
		}
		if same {
			continue
		}
		ac, err := ApplyConfiguration(obj)
		if err != nil {
			return res, err
		}
		if err := r.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return res, fmt.Errorf("apply %s in %s: %w", id, ns, err)
		}
		res.Applied = append(res.Applied, id)
	}

	selector := client.MatchingLabels{LabelManagedBy: ManagedByValue, LabelTenant: tenant}
	for _, list := range ownedKinds() {
		if err := r.List(ctx, list, client.InNamespace(ns), selector); err != nil {
			return res, fmt.Errorf("list %T in %s: %w", list, ns, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return res, err
		}
		for _, item := range items {
			obj := item.(client.Object)
			id := objectID(obj)
			if want[id] || !obj.GetDeletionTimestamp().IsZero() {
				continue
			}
			uid := obj.GetUID()
			err := r.Delete(ctx, obj, client.Preconditions{UID: &uid})
			if err != nil && !apierrors.IsNotFound(err) {
				return res, fmt.Errorf("delete %s in %s: %w", id, ns, err)
			}
			res.Pruned = append(res.Pruned, id)
		}
	}
	sort.Strings(res.Pruned)
	return res, nil
}

// objectID is "Kind/name" of an object; the kind comes from the scheme when TypeMeta is empty
// (objects read from the cache).
func objectID(obj client.Object) string {
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	if kind == "" {
		kind = reflect.TypeOf(obj).Elem().Name()
	}
	return kind + "/" + obj.GetName()
}

// matchesCluster reports whether the cached copy of obj already holds every field Render set
// to the value Render set: then an apply would change nothing.
func (r *SecureTextTenantReconciler) matchesCluster(ctx context.Context, obj client.Object) (bool, error) {
	current := obj.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(obj), current)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read %s in %s: %w", objectID(obj), obj.GetNamespace(), err)
	}
	want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return false, err
	}
	have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
	if err != nil {
		return false, err
	}
	delete(want, "status")
	delete(want, "apiVersion")
	delete(want, "kind")
	return fieldsSubset(want, have), nil
}

// fieldsSubset reports whether every field set in want has the same value in have. Fields
// that only have holds (defaults the API server filled in, fields of other managers) do not
// matter; a list must have the same length and each element must be a subset.
func fieldsSubset(want, have any) bool {
	switch w := want.(type) {
	case nil:
		return true
	case map[string]any:
		h, _ := have.(map[string]any)
		for k, wv := range w {
			if !fieldsSubset(wv, h[k]) {
				return false
			}
		}
		return true
	case []any:
		h, _ := have.([]any)
		if len(w) != len(h) {
			return false
		}
		for i := range w {
			if !fieldsSubset(w[i], h[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, have)
}
