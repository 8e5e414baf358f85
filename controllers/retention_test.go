package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/workloads/retention"
)

// The retention settings a tenant's gateway reads: the RetentionPolicy it uses and the active
// LegalHolds of its namespace, in the ConfigMap retention, followed as they change without
// rolling the pods; and the statuses of the policies and holds.

func newPolicy(name, purgeAfter string) *securetextv1alpha1.RetentionPolicy {
	return &securetextv1alpha1.RetentionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "168h", ContentPurgeAfter: purgeAfter,
			AuditRetention: "52608h", SweepInterval: "15m"},
	}
}

func newHold(ns, name string, recipients ...string) *securetextv1alpha1.LegalHold {
	return &securetextv1alpha1.LegalHold{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: securetextv1alpha1.LegalHoldSpec{Reason: "matter " + name,
			Matcher: securetextv1alpha1.HoldMatcher{Recipients: recipients}},
	}
}

// createCleaned creates obj with c and deletes it when the test ends.
func createCleaned(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
}

// releaseHold sets spec.active false by a patch, as kubectl does: the operator writes the
// hold's status, so an update of a copy read earlier would conflict.
func releaseHold(t *testing.T, hold client.Object) {
	t.Helper()
	release := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"active":false}}`))
	if err := k8s.Patch(context.Background(), hold, release); err != nil {
		t.Fatalf("release %s: %v", objectName(hold), err)
	}
}

// settingsIn waits until the retention settings in namespace ns, read as the gateway reads
// them (retention.Parse), pass check, and returns them.
func settingsIn(t *testing.T, c client.Client, ns, what string, check func(retention.Settings) error) retention.Settings {
	t.Helper()
	var s retention.Settings
	eventually(t, "retention settings in "+ns+": "+what, func() error {
		var cm corev1.ConfigMap
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.RetentionConfigMapName}, &cm); err != nil {
			return err
		}
		var err error
		if s, err = retention.Parse([]byte(cm.Data[retention.FileName])); err != nil {
			return fmt.Errorf("the gateway would refuse them: %w", err)
		}
		return check(s)
	})
	return s
}

// holdNames lists the names of the holds in s.
func holdNames(s retention.Settings) string {
	var names []string
	for _, h := range s.Holds {
		names = append(names, h.Name)
	}
	return strings.Join(names, ",")
}

// statusCondition waits until obj, read with c, has condition typ with status and reason for
// its current generation (status.observedGeneration too), and returns the condition.
func statusCondition(t *testing.T, c client.Client, obj client.Object, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, fmt.Sprintf("%s %s=%s %s", objectName(obj), typ, status, reason), func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		var observed int64
		switch o := obj.(type) {
		case *securetextv1alpha1.RetentionPolicy:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		case *securetextv1alpha1.LegalHold:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		case *securetextv1alpha1.SecureTextTenant:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		}
		cond := meta.FindStatusCondition(conds, typ)
		switch {
		case cond == nil:
			return fmt.Errorf("no %s condition yet", typ)
		case observed != obj.GetGeneration() || cond.ObservedGeneration != obj.GetGeneration():
			return fmt.Errorf("status describes generation %d (%s: %d), object is at %d", observed, typ, cond.ObservedGeneration, obj.GetGeneration())
		case cond.Status != status || cond.Reason != reason:
			return fmt.Errorf("%s=%s reason %s: %s", typ, cond.Status, cond.Reason, cond.Message)
		}
		got = *cond
		return nil
	})
	return got
}

func objectName(obj client.Object) string {
	if obj.GetNamespace() == "" {
		return obj.GetName()
	}
	return obj.GetNamespace() + "/" + obj.GetName()
}

// gatewayTemplate is the gateway Deployment's generation and config checksum.
func gatewayTemplate(t *testing.T, ns string) string {
	t.Helper()
	var d appsv1.Deployment
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "gateway"}, &d); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("generation %d, checksum %s", d.Generation, d.Spec.Template.Annotations[controllers.AnnotationConfigChecksum])
}

// TestRetentionSettingsFollowPolicyAndHolds: a tenant naming a policy gets it in its settings;
// a change of the policy, a new hold and a released one reach the settings, without rolling
// the gateway; the policy and the holds report Ready.
// tenantWithPolicy creates a RetentionPolicy and a tenant that uses it (both deleted when the
// test ends), waits for the tenant's namespace and gives it a database.
func tenantWithPolicy(t *testing.T, name, ns string, policy *securetextv1alpha1.RetentionPolicy) *securetextv1alpha1.SecureTextTenant {
	t.Helper()
	createCleaned(t, k8s, policy)
	tenant := newTenant(name)
	tenant.Spec.RetentionPolicyName = policy.Name
	createCleaned(t, k8s, tenant)
	eventually(t, "namespace "+ns, func() error { return k8s.Get(context.Background(), client.ObjectKey{Name: ns}, &corev1.Namespace{}) })
	provideDatabase(t, ns)
	return tenant
}

func TestRetentionSettingsFollowPolicyAndHolds(t *testing.T) {
	ctx := context.Background()
	const name, ns = "retained", "securetext-retained"
	policy := newPolicy("retained-standard", "720h")
	tenant := tenantWithPolicy(t, name, ns, policy)
	condition(t, name, securetextv1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing)

	statusCondition(t, k8s, policy, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionPolicyValid)
	s := settingsIn(t, k8s, ns, "the named policy", func(s retention.Settings) error {
		if s.Policy == nil || s.Policy.Name != policy.Name {
			return fmt.Errorf("policy %+v", s.Policy)
		}
		return nil
	})
	if p := s.Policy; p.Generation != policy.Generation || p.UnreadLinkExpiry.D != 168*time.Hour || p.ContentPurgeAfter.D != 720*time.Hour ||
		p.AuditRetention.D != 52608*time.Hour || p.SweepInterval.D != 15*time.Minute || len(s.Holds) != 0 {
		t.Errorf("settings %+v, policy %+v", s, *p)
	}
	ready := statusCondition(t, k8s, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionApplied)
	if !strings.Contains(ready.Message, policy.Name) {
		t.Errorf("RetentionReady message %q does not name the policy", ready.Message)
	}
	template := gatewayTemplate(t, ns)

	t.Run("a policy change", func(t *testing.T) {
		eventually(t, "edit the policy", func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(policy), policy); err != nil {
				return err
			}
			policy.Spec.ContentPurgeAfter = "336h"
			return k8s.Update(ctx, policy)
		})
		settingsIn(t, k8s, ns, "the edited policy", func(s retention.Settings) error {
			if s.Policy == nil || s.Policy.ContentPurgeAfter.D != 336*time.Hour || s.Policy.Generation != policy.Generation {
				return fmt.Errorf("policy %+v, want contentPurgeAfter 336h at generation %d", s.Policy, policy.Generation)
			}
			return nil
		})
		statusCondition(t, k8s, policy, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionPolicyValid)
	})

	hold := newHold(ns, "matter-7", "+12025550143")
	createCleaned(t, k8s, hold)
	t.Run("a new hold", func(t *testing.T) {
		s := settingsIn(t, k8s, ns, "the new hold", func(s retention.Settings) error {
			if holdNames(s) != "matter-7" {
				return fmt.Errorf("holds %q", holdNames(s))
			}
			return nil
		})
		if h := s.Holds[0]; h.UID != string(hold.UID) || h.Reason != "matter matter-7" || len(h.Matcher.Recipients) != 1 {
			t.Errorf("rendered hold %+v, want uid %s", h, hold.UID)
		}
		statusCondition(t, k8s, hold, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonHoldRendered)
		if hold.Status.ReleasedAt != nil {
			t.Errorf("releasedAt %v on an active hold", hold.Status.ReleasedAt)
		}
	})

	t.Run("a released hold", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		releaseHold(t, hold)
		settingsIn(t, k8s, ns, "the hold released", func(s retention.Settings) error {
			if len(s.Holds) != 0 {
				return fmt.Errorf("holds %q", holdNames(s))
			}
			return nil
		})
		statusCondition(t, k8s, hold, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonHoldReleased)
		if at := hold.Status.ReleasedAt; at == nil || at.Time.Before(before.Truncate(time.Second)) || at.Time.After(time.Now()) {
			t.Errorf("releasedAt %v, want the time of the release", at)
		}
	})

	if now := gatewayTemplate(t, ns); now != template {
		t.Errorf("the gateway's pod template changed with the retention settings (%s → %s): the pods would roll", template, now)
	}
}

// TestRetentionWithoutAPolicy: a tenant that names no policy uses the operator's default; while
// that does not exist no sweep runs (no policy in the settings), the holds are still there,
// RetentionReady says what to fix and Ready stays True. Creating the policy applies it.
func TestRetentionWithoutAPolicy(t *testing.T) {
	ctx := context.Background()
	const name, ns = "unretained", "securetext-unretained"
	tenant := newTenant(name)
	createCleaned(t, k8s, tenant)
	eventually(t, "namespace "+ns, func() error { return k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}) })
	provideDatabase(t, ns)
	hold := newHold(ns, "matter-9", "+12025550177")
	createCleaned(t, k8s, hold)

	missing := statusCondition(t, k8s, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionFalse,
		securetextv1alpha1.ReasonRetentionPolicyNotFound)
	for _, m := range []string{testDefaultPolicy, "--default-retention-policy", "does not exist"} {
		if !strings.Contains(missing.Message, m) {
			t.Errorf("RetentionReady message %q does not say %q", missing.Message, m)
		}
	}
	settingsIn(t, k8s, ns, "no policy, the hold", func(s retention.Settings) error {
		if s.Policy != nil || holdNames(s) != "matter-9" {
			return fmt.Errorf("policy %+v, holds %q", s.Policy, holdNames(s))
		}
		return nil
	})
	statusCondition(t, k8s, hold, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonHoldRendered)
	readyAgain(t, name, ns)
	statusCondition(t, k8s, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionFalse,
		securetextv1alpha1.ReasonRetentionPolicyNotFound)

	createCleaned(t, k8s, newPolicy(testDefaultPolicy, "2160h"))
	settingsIn(t, k8s, ns, "the default policy", func(s retention.Settings) error {
		if s.Policy == nil || s.Policy.Name != testDefaultPolicy || holdNames(s) != "matter-9" {
			return fmt.Errorf("policy %+v, holds %q", s.Policy, holdNames(s))
		}
		return nil
	})
	statusCondition(t, k8s, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionApplied)

	t.Run("a named policy that does not exist", func(t *testing.T) {
		eventually(t, "name a missing policy", func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(tenant), tenant); err != nil {
				return err
			}
			tenant.Spec.RetentionPolicyName = "no-such-policy"
			return k8s.Update(ctx, tenant)
		})
		c := statusCondition(t, k8s, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionFalse,
			securetextv1alpha1.ReasonRetentionPolicyNotFound)
		if !strings.Contains(c.Message, "no-such-policy (spec.retentionPolicyName)") {
			t.Errorf("RetentionReady message %q", c.Message)
		}
		settingsIn(t, k8s, ns, "no policy again", func(s retention.Settings) error {
			if s.Policy != nil || holdNames(s) != "matter-9" {
				return fmt.Errorf("policy %+v, holds %q", s.Policy, holdNames(s))
			}
			return nil
		})
	})
}

// TestLegalHoldOutsideATenant: a hold in a namespace no tenant owns keeps nothing, and says so.
func TestLegalHoldOutsideATenant(t *testing.T) {
	ensureNamespace(t, "not-a-tenant")
	hold := newHold("not-a-tenant", "misplaced", "+12025550143")
	createCleaned(t, k8s, hold)
	statusCondition(t, k8s, hold, securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonTenantNotFound)
}

// TestRetentionPolicyStoredBeforeACRDRule: the API server refuses a policy that purges content
// while its link still works, but one stored before that rule existed stays. The operator must
// not sweep with it. The CRD is changed on a cluster of its own (the suite's must keep its rules).
func TestRetentionPolicyStoredBeforeACRDRule(t *testing.T) {
	ctx := context.Background()
	cluster, c := ownCluster(t)

	legacy := newPolicy("legacy", "1h") // purged after 1h, link works for 168h
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: "retentionpolicies.securetext.io"}, crd); err != nil {
		t.Fatal(err)
	}
	rules := crd.DeepCopy()
	for i := range crd.Spec.Versions {
		withoutCEL(crd.Spec.Versions[i].Schema.OpenAPIV3Schema)
	}
	if err := c.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the policy stored without the rules", func() error { return c.Create(ctx, legacy.DeepCopy()) })
	eventually(t, "the rules back", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
			return err
		}
		crd.Spec.Versions = rules.Spec.Versions
		if err := c.Update(ctx, crd); err != nil {
			return err
		}
		again := newPolicy("refused", "1h")
		if err := c.Create(ctx, again, client.DryRunAll); err == nil {
			return errors.New("the API server still admits content purged before its link expires")
		}
		return nil
	})

	defer startOperator(t, ctx, cluster)()

	tenant := newTenant("legacy")
	tenant.Spec.RetentionPolicyName = legacy.Name
	if err := c.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	cond := statusCondition(t, c, legacy, securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonRetentionPolicyInvalid)
	if !strings.Contains(cond.Message, "contentPurgeAfter") {
		t.Errorf("policy Ready message %q does not say what to fix", cond.Message)
	}
	statusCondition(t, c, tenant, securetextv1alpha1.ConditionRetentionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonRetentionPolicyInvalid)
	settingsIn(t, c, "securetext-legacy", "no policy", func(s retention.Settings) error {
		if s.Policy != nil {
			return fmt.Errorf("the settings carry the invalid policy %+v", *s.Policy)
		}
		return nil
	})
}

// withoutCEL drops every x-kubernetes-validations rule from a schema, as a CRD from before the
// rules had none.
func withoutCEL(s *apiextensionsv1.JSONSchemaProps) {
	if s == nil {
		return
	}
	s.XValidations = nil
	for k, p := range s.Properties {
		withoutCEL(&p)
		s.Properties[k] = p
	}
	if s.Items != nil {
		withoutCEL(s.Items.Schema)
	}
}
