package controllers_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
)

// TestNoDatabaseLocationOpensNoEgress: an operator that was not told where the databases are
// still applies the tenant's stack, but with no database egress at all, and says on
// WorkloadsReady (and Ready, Stalled) what to set. Once told, it opens the egress to exactly
// there and the tenant becomes Ready.
func TestNoDatabaseLocationOpensNoEgress(t *testing.T) {
	ctx := context.Background()
	const name, ns = "nodb", "securetext-nodb"
	operatorOptions.Database = controllers.DatabaseInput{}
	t.Cleanup(func() {
		if !operatorOptions.Database.Configured() {
			operatorOptions.Database = testDatabase
			if err := restartOperator(); err != nil {
				t.Error(err)
			}
		}
	})
	if err := restartOperator(); err != nil {
		t.Fatal(err)
	}
	tenant := newTenant(name)
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, tenant) })
	provideDatabase(t, ns)

	got := condition(t, name, securetextv1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured)
	work := meta.FindStatusCondition(got.Status.Conditions, securetextv1alpha1.ConditionWorkloadsReady)
	for _, want := range []string{"--database-cidrs", "network.databaseCIDRs", "--database-namespace-label"} {
		if !strings.Contains(work.Message, want) {
			t.Errorf("WorkloadsReady message %q does not say %q", work.Message, want)
		}
	}
	for typ, status := range map[string]metav1.ConditionStatus{
		securetextv1alpha1.ConditionReady: metav1.ConditionFalse, securetextv1alpha1.ConditionStalled: metav1.ConditionTrue,
	} {
		if c := meta.FindStatusCondition(got.Status.Conditions, typ); c == nil || c.Status != status || c.Reason != securetextv1alpha1.ReasonDatabaseNotConfigured {
			t.Errorf("%s = %+v; want %s DatabaseNotConfigured", typ, c, status)
		}
	}
	for _, c := range []string{"keystore", "gateway", "viewer"} {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c}, &appsv1.Deployment{}); err != nil {
			t.Errorf("Deployment %s: %v; the stack is applied without database egress", c, err)
		}
	}
	if rules := databaseEgress(t, ns); len(rules) != 0 {
		t.Errorf("database egress %+v although the operator does not know where the databases are", rules)
	}

	operatorOptions.Database = testDatabase
	if err := restartOperator(); err != nil {
		t.Fatal(err)
	}
	readyAgain(t, name, ns)
	rules := databaseEgress(t, ns)
	if len(rules) != 2 {
		t.Fatalf("database egress %+v; want one rule each for the gateway and the viewer", rules)
	}
	for _, r := range rules {
		if !equality.Semantic.DeepEqual(r.To, testDatabase.Peers) {
			t.Errorf("database egress to %+v; want %+v", r.To, testDatabase.Peers)
		}
	}
}

// databaseEgress lists the egress rules on the PostgreSQL port of the policies in ns.
func databaseEgress(t *testing.T, ns string) []networkingv1.NetworkPolicyEgressRule {
	t.Helper()
	var list networkingv1.NetworkPolicyList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) == 0 {
		t.Fatalf("no NetworkPolicies in %s", ns)
	}
	var out []networkingv1.NetworkPolicyEgressRule
	for _, p := range list.Items {
		for _, r := range p.Spec.Egress {
			for _, port := range r.Ports {
				if port.Port != nil && port.Port.IntVal == 5432 {
					out = append(out, r)
				}
			}
		}
	}
	return out
}
