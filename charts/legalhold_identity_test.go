package charts_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/charts"
)

// TestLegalHoldIdentityPolicy installs the chart's MutatingAdmissionPolicy on the test API
// server and checks that it records who placed and who released a hold, and that neither
// annotation can be forged or rewritten by a later update.
func TestLegalHoldIdentityPolicy(t *testing.T) {
	ctx := t.Context()
	rel, err := charts.Render(releaseName, releaseNS, nil, clusterAPIVersions...)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"} {
		obj := rel.Find(kind, "securetext-legal-hold-identity")
		if obj == nil {
			t.Fatalf("no %s in %v", kind, rel.Kinds())
		}
		if err := k8s.Patch(ctx, obj.DeepCopy(), client.Apply, client.ForceOwnership, client.FieldOwner("helm")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj.DeepCopy()) })
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hold-identity"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	as := func(user string) client.Client {
		t.Helper()
		cfg := rest.CopyConfig(kube.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}}
		c, err := client.New(cfg, client.Options{Scheme: k8s.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	annotations := func(h *securetextv1alpha1.LegalHold) (heldBy, releasedBy string) {
		return h.Annotations["securetext.io/held-by"], h.Annotations["securetext.io/released-by"]
	}

	newHold := func(name string, forged map[string]string) *securetextv1alpha1.LegalHold {
		return &securetextv1alpha1.LegalHold{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "hold-identity", Annotations: forged},
			Spec: securetextv1alpha1.LegalHoldSpec{
				Reason:  "matter 2026-117",
				Matcher: securetextv1alpha1.HoldMatcher{Recipients: []string{"+12025550143"}},
			},
		}
	}
	// The API server starts enforcing a new policy within moments: retry the first create.
	hold := newHold("matter-117", map[string]string{"securetext.io/held-by": "someone-else", "securetext.io/released-by": "nobody"})
	err = eventually(t, func() error {
		h := hold.DeepCopy()
		if err := as("alice@clinic.example").Create(ctx, h); err != nil {
			return err
		}
		if by, _ := annotations(h); by != "alice@clinic.example" {
			_ = k8s.Delete(ctx, h)
			return fmt.Errorf("held-by = %q after alice created the hold", by)
		}
		hold = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, rel := annotations(hold); rel != "" {
		t.Errorf("released-by = %q on a hold that was never released (forged on create)", rel)
	}

	// An update by someone else keeps the author, and cannot forge a release.
	hold.Annotations["securetext.io/held-by"] = "mallory"
	hold.Annotations["securetext.io/released-by"] = "mallory"
	if err := as("mallory").Update(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if by, rel := annotations(hold); by != "alice@clinic.example" || rel != "" {
		t.Errorf("after mallory's update: held-by %q, released-by %q; want alice@clinic.example and none", by, rel)
	}

	// The release records who released it; a later update does not change that.
	hold.Spec.Active = ptr.To(false)
	if err := as("bob@clinic.example").Update(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if by, rel := annotations(hold); by != "alice@clinic.example" || rel != "bob@clinic.example" {
		t.Errorf("after bob's release: held-by %q, released-by %q", by, rel)
	}
	hold.Spec.Reason = "matter 2026-117, closed"
	hold.Annotations["securetext.io/released-by"] = "mallory"
	if err := as("mallory").Update(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if by, rel := annotations(hold); by != "alice@clinic.example" || rel != "bob@clinic.example" {
		t.Errorf("after mallory's later update: held-by %q, released-by %q", by, rel)
	}
}
