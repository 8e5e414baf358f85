package controllers_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// TestTenantCountsActiveLegalHolds: status.activeLegalHolds follows the holds of the tenant's
// namespace (created, released, deleted), because the chart's admission policy reads it to
// guard the LegalHold CRD.
func TestTenantCountsActiveLegalHolds(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("counted")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), tenant) })
	eventually(t, "namespace created", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "securetext-counted"}, &corev1.Namespace{})
	})
	holds := func(want int32) func() error {
		return func() error {
			var got securetextv1alpha1.SecureTextTenant
			if err := k8s.Get(ctx, client.ObjectKey{Name: "counted"}, &got); err != nil {
				return err
			}
			if got.Status.ActiveLegalHolds != want {
				return fmt.Errorf("activeLegalHolds %d, want %d", got.Status.ActiveLegalHolds, want)
			}
			return nil
		}
	}
	var created []*securetextv1alpha1.LegalHold
	for _, name := range []string{"matter-1", "matter-2"} {
		hold := &securetextv1alpha1.LegalHold{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "securetext-counted"},
			Spec: securetextv1alpha1.LegalHoldSpec{Reason: name,
				Matcher: securetextv1alpha1.HoldMatcher{Recipients: []string{"+12025550143"}}},
		}
		if err := k8s.Create(ctx, hold); err != nil {
			t.Fatal(err)
		}
		created = append(created, hold)
	}
	eventually(t, "two active holds", holds(2))

	releaseHold(t, created[0])
	eventually(t, "one active hold after a release", holds(1))

	for _, h := range created {
		if err := k8s.Delete(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "no active hold", holds(0))
}
