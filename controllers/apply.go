package controllers

// Applying a tenant's rendered objects. Each object goes to the API server by server-side
// apply, with the operator's one field manager and forced ownership (the operator's fields are
// the operator's: an edit by hand is undone). An object is applied only when the cached copy
// differs from what Render decided, so a reconcile that finds everything in place writes
// nothing. Objects the operator made earlier that Render no longer returns (an Ingress after
// the API was turned off, an autoscaler removed) are deleted.

import (
	"context"
	"encoding/json"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
		same, current, err := r.matchesCluster(ctx, obj)
		if err != nil {
			return res, err
		}
		if same {
			continue
		}
		if current != nil && exactKind(obj) {
			// Server-side apply leaves fields that another manager added (a rule added to a
			// NetworkPolicy, a key added to a ConfigMap that pods load whole): replace the
			// object with what Render decided.
			replacement := obj.DeepCopyObject().(client.Object)
			replacement.SetResourceVersion(current.GetResourceVersion())
			if err := r.Update(ctx, replacement, client.FieldOwner(FieldManager)); err != nil {
				return res, fmt.Errorf("replace %s in %s: %w", id, ns, err)
			}
			res.Applied = append(res.Applied, id)
			continue
		}
		if err := r.handOffReplicas(ctx, obj, current); err != nil {
			return res, err
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

// ApplyConfiguration turns a rendered object into the body of a server-side apply
// (client.Client.Apply): the object's fields, without status or the zero creation timestamps
// that typed objects carry, so that the field manager owns exactly what Render decided.
func ApplyConfiguration(obj client.Object) (runtime.ApplyConfiguration, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %T %s for apply: %w", obj, obj.GetName(), err)
	}
	u := &unstructured.Unstructured{Object: m}
	if u.GetAPIVersion() == "" || u.GetKind() == "" {
		return nil, fmt.Errorf("%T %s has no apiVersion and kind: server-side apply needs them", obj, obj.GetName())
	}
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return client.ApplyConfigurationFromUnstructured(u), nil
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

// replicasHandOffManager co-owns a Deployment's replicas while an autoscaler takes over.
const replicasHandOffManager = FieldManager + "-replicas"

// handOffReplicas keeps a Deployment's replica count when autoscaling is turned on. Render then
// leaves spec.replicas to the HorizontalPodAutoscaler; if the operator's field manager still
// owned it, the apply would drop the field and the API server would default it to 1, scaling
// the component down until the autoscaler reacts. So another manager first takes co-ownership
// at the current value (the Kubernetes guidance for moving a Deployment to an autoscaler).
func (r *SecureTextTenantReconciler) handOffReplicas(ctx context.Context, obj, current client.Object) error {
	want, ok := obj.(*appsv1.Deployment)
	have, _ := current.(*appsv1.Deployment)
	if !ok || have == nil || want.Spec.Replicas != nil || have.Spec.Replicas == nil || !ownsReplicas(have) {
		return nil
	}
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": want.Name, "namespace": want.Namespace},
		"spec":     map[string]any{"replicas": int64(*have.Spec.Replicas)},
	}})
	if err := r.Apply(ctx, ac, client.FieldOwner(replicasHandOffManager)); err != nil {
		return fmt.Errorf("hand the replicas of Deployment %s over to the autoscaler: %w", want.Name, err)
	}
	return nil
}

// ownsReplicas reports whether the operator's field manager applied spec.replicas.
func ownsReplicas(d *appsv1.Deployment) bool {
	for _, mf := range d.ManagedFields {
		if mf.Manager != FieldManager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(mf.FieldsV1.Raw, &fields) == nil {
			if _, ok := fields.Spec["f:replicas"]; ok {
				return true
			}
		}
	}
	return false
}

// exactKind reports whether obj's kind is compared whole rather than field by field: objects
// whose every field is security-relevant, where anything added is a change.
func exactKind(obj client.Object) bool {
	switch obj.(type) {
	case *networkingv1.NetworkPolicy, *corev1.ConfigMap:
		return true
	}
	return false
}

// exactFields are the top-level fields an exactKind object must match exactly.
var exactFields = []string{"spec", "data", "binaryData"}

// matchesCluster reports whether the cached copy of obj already holds every field Render set
// to the value Render set, so that an apply would change nothing; for an exactKind object, also
// nothing else in its spec or data. It returns the cached copy, nil when there is none.
func (r *SecureTextTenantReconciler) matchesCluster(ctx context.Context, obj client.Object) (bool, client.Object, error) {
	current := obj.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(obj), current)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil, nil
	case err != nil:
		return false, nil, fmt.Errorf("read %s in %s: %w", objectID(obj), obj.GetNamespace(), err)
	}
	want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return false, nil, err
	}
	have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
	if err != nil {
		return false, nil, err
	}
	delete(want, "status")
	delete(want, "apiVersion")
	delete(want, "kind")
	if !fieldsSubset(want, have) {
		return false, current, nil
	}
	if exactKind(obj) {
		for _, f := range exactFields {
			if !reflect.DeepEqual(want[f], have[f]) {
				return false, current, nil
			}
		}
	}
	return true, current, nil
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
