package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
)

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// newTenant is a minimal valid tenant: a development tenant, as the console SMS provider
// (texts printed to the pods' logs) is accepted only on those.
func newTenant(name string) *securetextv1alpha1.SecureTextTenant {
	return &securetextv1alpha1.SecureTextTenant{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: securetextv1alpha1.SecureTextTenantSpec{
			DisplayName: "Test Clinic " + name,
			Development: true,
			TextDomain:  "text." + name + ".example",
			Hostnames:   securetextv1alpha1.Hostnames{Viewer: "view." + name + ".example"},
			Branding:    securetextv1alpha1.Branding{SupportContact: "(202) 555-0100"},
			SMS:         securetextv1alpha1.SMSSpec{Provider: securetextv1alpha1.SMSConsole},
			Database:    securetextv1alpha1.DatabaseSpec{SecretRef: securetextv1alpha1.SecretKeyRef{Name: "db"}},
		},
	}
}

// readyCondition returns the tenant's Ready condition once it describes the current generation.
func readyCondition(ctx context.Context, name string) (*securetextv1alpha1.SecureTextTenant, *metav1.Condition, error) {
	var tenant securetextv1alpha1.SecureTextTenant
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &tenant); err != nil {
		return nil, nil, err
	}
	cond := meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionReady)
	switch {
	case cond == nil:
		return &tenant, nil, errors.New("no Ready condition yet")
	case tenant.Status.ObservedGeneration != tenant.Generation || cond.ObservedGeneration != tenant.Generation:
		return &tenant, cond, fmt.Errorf("status describes generation %d, tenant is at %d", cond.ObservedGeneration, tenant.Generation)
	}
	return &tenant, cond, nil
}

func TestTenantGetsRestrictedNamespaceAndReady(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("acme")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, tenant) })

	var ns corev1.Namespace
	eventually(t, "namespace created", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "securetext-acme"}, &ns)
	})
	for k, v := range map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"app.kubernetes.io/managed-by":       "securetext-operator",
		"securetext.io/tenant":               "acme",
	} {
		if ns.Labels[k] != v {
			t.Errorf("namespace label %s = %q, want %q", k, ns.Labels[k], v)
		}
	}
	if len(ns.OwnerReferences) != 0 {
		t.Errorf("namespace has owner references %v: reinstalling the CRD would garbage-collect it", ns.OwnerReferences)
	}

	provideDatabase(t, "securetext-acme")
	eventually(t, "Ready=True", func() error {
		if err := setAvailable("securetext-acme"); err != nil { // the database Secret's version rolls the pods
			return err
		}
		got, cond, err := readyCondition(ctx, "acme")
		if err != nil {
			return err
		}
		if cond.Status != metav1.ConditionTrue || cond.Reason != securetextv1alpha1.ReasonReconciled {
			return fmt.Errorf("Ready=%s reason %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		if got.Status.Namespace != "securetext-acme" {
			return fmt.Errorf("status.namespace = %q", got.Status.Namespace)
		}
		rec := meta.FindStatusCondition(got.Status.Conditions, securetextv1alpha1.ConditionReconciling)
		if rec == nil || rec.Status != metav1.ConditionFalse {
			return fmt.Errorf("Reconciling = %v, want False", rec)
		}
		if !hasFinalizer(got) {
			return errors.New("no finalizer")
		}
		return nil
	})

	eventually(t, "NamespaceCreated event", func() error {
		var list eventsv1.EventList
		if err := k8s.List(ctx, &list); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "acme" && e.Reason == controllers.EventNamespaceCreated && e.Type == corev1.EventTypeNormal {
				return nil
			}
		}
		return fmt.Errorf("no %s event among %d", controllers.EventNamespaceCreated, len(list.Items))
	})

	// A spec change moves observedGeneration forward.
	eventually(t, "spec update", func() error {
		var cur securetextv1alpha1.SecureTextTenant
		if err := k8s.Get(ctx, client.ObjectKey{Name: "acme"}, &cur); err != nil {
			return err
		}
		cur.Spec.DisplayName = "Acme Health"
		return k8s.Update(ctx, &cur)
	})
	eventually(t, "observedGeneration follows the spec", func() error {
		if err := setAvailable("securetext-acme"); err != nil { // the display name is in the config: the pods roll
			return err
		}
		got, cond, err := readyCondition(ctx, "acme")
		if err != nil {
			return err
		}
		if got.Generation < 2 || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("generation %d Ready %s", got.Generation, cond.Status)
		}
		return nil
	})
}

func hasFinalizer(t *securetextv1alpha1.SecureTextTenant) bool {
	for _, f := range t.Finalizers {
		if f == controllers.TenantFinalizer {
			return true
		}
	}
	return false
}

func TestNamespaceLabelsAreRepaired(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("repair")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, tenant) })
	var ns corev1.Namespace
	eventually(t, "namespace created", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "securetext-repair"}, &ns)
	})
	// Someone weakens Pod Security on the tenant's namespace.
	eventually(t, "weaken namespace", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-repair"}, &ns); err != nil {
			return err
		}
		ns.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
		return k8s.Update(ctx, &ns)
	})
	eventually(t, "restricted restored", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-repair"}, &ns); err != nil {
			return err
		}
		if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
			return fmt.Errorf("enforce = %q", got)
		}
		return nil
	})
}

func TestForeignNamespaceIsNeverAdopted(t *testing.T) {
	ctx := context.Background()
	ensureNamespace(t, "someone-elses")
	tenant := newTenant("intruder")
	tenant.Spec.Namespace = "someone-elses"
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ready=False NamespaceConflict", func() error {
		_, cond, err := readyCondition(ctx, "intruder")
		if err != nil {
			return err
		}
		if cond.Status != metav1.ConditionFalse || cond.Reason != securetextv1alpha1.ReasonNamespaceConflict {
			return fmt.Errorf("Ready=%s reason %s", cond.Status, cond.Reason)
		}
		return nil
	})
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "someone-elses"}, &ns); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.Labels[controllers.LabelTenant]; ok {
		t.Fatalf("foreign namespace was labelled: %v", ns.Labels)
	}
	// Deleting the tenant must not delete the namespace it never owned.
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone", func() error { return gone(ctx, tenant) })
	if err := k8s.Get(ctx, client.ObjectKey{Name: "someone-elses"}, &ns); err != nil || !ns.DeletionTimestamp.IsZero() {
		t.Fatalf("foreign namespace touched on tenant deletion: %v %v", err, ns.DeletionTimestamp)
	}
}

func TestDeletionRemovesNamespaceAndFinalizer(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("leaving")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	provideDatabase(t, "securetext-leaving")
	readyAgain(t, "leaving", "securetext-leaving")
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone (finalizer released)", func() error { return gone(ctx, tenant) })
	// envtest runs no namespace controller, so the namespace stays Terminating instead of vanishing.
	eventually(t, "namespace deleted", func() error {
		var ns corev1.Namespace
		err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-leaving"}, &ns)
		if apierrors.IsNotFound(err) || (err == nil && !ns.DeletionTimestamp.IsZero()) {
			return nil
		}
		return fmt.Errorf("namespace still live: %v", err)
	})
}

func gone(ctx context.Context, obj client.Object) error {
	err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("still there (finalizers %v): %v", obj.GetFinalizers(), err)
}

func TestActiveLegalHoldBlocksDeletionUntilReleased(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("held")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace created", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "securetext-held"}, &corev1.Namespace{})
	})
	hold := &securetextv1alpha1.LegalHold{
		ObjectMeta: metav1.ObjectMeta{Name: "matter-1", Namespace: "securetext-held"},
		Spec: securetextv1alpha1.LegalHoldSpec{Reason: "matter 1",
			Matcher: securetextv1alpha1.HoldMatcher{Recipients: []string{"+12025550143"}}},
	}
	if err := k8s.Create(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deletion blocked with LegalHoldActive", func() error {
		_, cond, err := readyCondition(ctx, "held")
		if err != nil {
			return err
		}
		if cond.Reason != securetextv1alpha1.ReasonLegalHoldActive || !strings.Contains(cond.Message, "matter-1") {
			return fmt.Errorf("Ready reason %s: %s", cond.Reason, cond.Message)
		}
		return nil
	})
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-held"}, &ns); err != nil || !ns.DeletionTimestamp.IsZero() {
		t.Fatalf("namespace deleted under an active hold: %v %v", err, ns.DeletionTimestamp)
	}
	// Releasing the hold lets deletion finish (the operator rechecks without a new event).
	releaseHold(t, hold)
	eventually(t, "tenant gone after release", func() error { return gone(ctx, tenant) })
}

func TestOrphanAnnotationKeepsNamespace(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("orphaned")
	tenant.Annotations = map[string]string{controllers.AnnotationOrphan: "true"}
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace created", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "securetext-orphaned"}, &corev1.Namespace{})
	})
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone", func() error { return gone(ctx, tenant) })
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-orphaned"}, &ns); err != nil || !ns.DeletionTimestamp.IsZero() {
		t.Fatalf("orphaned namespace was deleted: %v %v", err, ns.DeletionTimestamp)
	}
}
