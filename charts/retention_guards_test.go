package charts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/charts"
)

// installPolicy applies the chart's admission policy name and its binding to the test API
// server, removed when the test ends.
func installPolicy(t *testing.T, name string) {
	t.Helper()
	rel, err := charts.Render(releaseName, releaseNS, nil, clusterAPIVersions...)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		obj := rel.Find(kind, name)
		if obj == nil {
			t.Fatalf("no %s %s in %v", kind, name, rel.Kinds())
		}
		if err := k8s.Patch(t.Context(), obj.DeepCopy(), client.Apply, client.ForceOwnership, client.FieldOwner("helm")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj.DeepCopy()) })
	}
}

// refusedSaying checks that err is the policy's refusal and says each of want.
func refusedSaying(err error, want ...string) error {
	if err == nil {
		return fmt.Errorf("allowed")
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return err
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			return fmt.Errorf("refusal does not say %q: %v", w, err)
		}
	}
	return nil
}

func TestLegalHoldDeleteGuard(t *testing.T) {
	ctx := t.Context()
	installPolicy(t, "securetext-legal-hold-delete-guard")
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hold-delete"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	hold := &securetextv1alpha1.LegalHold{
		ObjectMeta: metav1.ObjectMeta{Name: "matter-200", Namespace: "hold-delete"},
		Spec: securetextv1alpha1.LegalHoldSpec{Reason: "matter 2026-200",
			Matcher: securetextv1alpha1.HoldMatcher{Recipients: []string{"+12025550143"}}},
	}
	if err := k8s.Create(ctx, hold); err != nil {
		t.Fatal(err)
	}
	// The API server starts enforcing a new policy within moments.
	err := eventually(t, func() error {
		return refusedSaying(k8s.Delete(ctx, hold.DeepCopy(), client.DryRunAll), "LegalHold matter-200 is active", "Release it first")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Patch(ctx, hold, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"active":false}}`))); err != nil {
		t.Fatal(err)
	}
	if !ptr.Deref(hold.Spec.Active, true) {
		if err := k8s.Delete(ctx, hold); err != nil {
			t.Errorf("deleting a released hold: %v", err)
		}
	} else {
		t.Fatalf("hold still active after the release: %+v", hold.Spec)
	}
}

func TestRetentionShorteningGuard(t *testing.T) {
	ctx := t.Context()
	installPolicy(t, "securetext-retention-shortening-guard")
	policy := &securetextv1alpha1.RetentionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "guarded-standard"}}
	if err := k8s.Create(ctx, policy); err != nil { // the CRD's defaults: 720h, 2160h, 52608h, 1h
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), policy) })
	update := func(change func(p *securetextv1alpha1.RetentionPolicy), opts ...client.UpdateOption) error {
		p := &securetextv1alpha1.RetentionPolicy{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(policy), p); err != nil {
			return err
		}
		change(p)
		return k8s.Update(ctx, p, opts...)
	}
	confirm := func(p *securetextv1alpha1.RetentionPolicy, ticket string) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["securetext.io/confirm-shorter-retention"] = ticket
	}

	// The API server starts enforcing a new policy within moments: wait with dry runs, so that
	// an update let through before then changes nothing.
	err := eventually(t, func() error {
		return refusedSaying(update(func(p *securetextv1alpha1.RetentionPolicy) { p.Spec.ContentPurgeAfter = "720h" }, client.DryRunAll),
			"shortens contentPurgeAfter from 2160h to 720h of RetentionPolicy guarded-standard", "securetext.io/confirm-shorter-retention")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := update(func(p *securetextv1alpha1.RetentionPolicy) {
		p.Spec.ContentPurgeAfter = "720h"
		confirm(p, "CHG-1042")
	}); err != nil {
		t.Fatalf("a confirmed shortening: %v", err)
	}
	// The same confirmation again confirms nothing new.
	err = refusedSaying(update(func(p *securetextv1alpha1.RetentionPolicy) { p.Spec.UnreadLinkExpiry = "24h" }), "unreadLinkExpiry from 720h to 24h")
	if err != nil {
		t.Errorf("a shortening with the last change's confirmation: %v", err)
	}
	if err := update(func(p *securetextv1alpha1.RetentionPolicy) {
		p.Spec.UnreadLinkExpiry = "24h"
		p.Spec.AuditRetention = "43800h"
		confirm(p, "CHG-1043")
	}); err != nil {
		t.Errorf("a confirmed shortening of two durations: %v", err)
	}
	// Keeping messages longer, or changing how often to sweep, needs no confirmation.
	if err := update(func(p *securetextv1alpha1.RetentionPolicy) {
		p.Spec.ContentPurgeAfter = "4320h"
		p.Spec.SweepInterval = "30m"
	}); err != nil {
		t.Errorf("a longer retention: %v", err)
	}
}
