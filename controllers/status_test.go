package controllers

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// testGeneration is the tenant generation the condition tests observe.
const testGeneration = 7

// Errors the steps report, as the condition tests feed them in.
var (
	testVaultDown = &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultUnavailable,
		Err: errors.New("connection refused")}
	testVaultSealed    = &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultSealed, Err: errors.New("sealed")}
	testVaultForbidden = &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultForbidden,
		Err: errors.New("permission denied")}
	testVaultConflict = &VaultError{Op: "mount", Reason: securetextv1alpha1.ReasonVaultConflict,
		Err: errors.New("a kv mount is at the path")}
	testRenderErr     = errors.New(`spec.vault.keyRotationPeriod "soon": invalid duration`)
	testApplyErr      = errors.New("apply: admission webhook denied the request")
	testNsConflict    = errNamespaceConflict{namespace: "taken"}
	testNsTerminating = errNamespaceTerminating{namespace: "securetext-a"}
	testNsFailed      = errors.New("read namespace securetext-a: etcd timeout")
)

// wantCondition is what a table test expects of one condition: its status, its reason, and
// substrings of its message.
type wantCondition struct {
	status  metav1.ConditionStatus
	reason  string
	message []string
}

func checkCondition(t *testing.T, got metav1.Condition, typ string, want wantCondition) {
	t.Helper()
	if got.Type != typ || got.Status != want.status || got.Reason != want.reason || got.ObservedGeneration != testGeneration {
		t.Errorf("got %s=%s reason %s at generation %d; want %s=%s reason %s at generation %d",
			got.Type, got.Status, got.Reason, got.ObservedGeneration, typ, want.status, want.reason, testGeneration)
	}
	for _, m := range want.message {
		if !strings.Contains(got.Message, m) {
			t.Errorf("%s message %q does not say %q", typ, got.Message, m)
		}
	}
}

func TestVaultReadyCondition(t *testing.T) {
	cases := []struct {
		name string
		st   tenantState
		want wantCondition
	}{
		{"provisioned", tenantState{vaultMount: "securetext/a/transit"},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultProvisioned, []string{"Transit mount securetext/a/transit"}}},
		{"no Vault settings", tenantState{vaultOff: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultNotConfigured, []string{"--vault-addr", "no keys"}}},
		{"no Vault settings explains more than a render error", tenantState{vaultOff: true, renderErr: testRenderErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultNotConfigured, []string{"--vault-addr"}}},
		{"render error before the Vault step", tenantState{renderErr: testRenderErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonRenderFailed, []string{"keyRotationPeriod"}}},
		{"render error after the Vault step", tenantState{renderErr: testRenderErr, vaultMount: "securetext/a/transit"},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultProvisioned, []string{"securetext/a/transit"}}},
		{"Vault unavailable", tenantState{vaultErr: testVaultDown},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultUnavailable, []string{"read mount", "connection refused"}}},
		{"Vault error explains more than a render error", tenantState{vaultErr: testVaultSealed, renderErr: testRenderErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultSealed, []string{"sealed"}}},
		{"error that is not a VaultError", tenantState{vaultErr: errors.New("add finalizer: conflict")},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultFailed, []string{"add finalizer"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkCondition(t, vaultReadyCondition(tc.st, testGeneration), securetextv1alpha1.ConditionVaultReady, tc.want)
		})
	}
}

func TestWorkloadsReadyCondition(t *testing.T) {
	missingDB := "Secret db (spec.database.secretRef) does not exist in namespace securetext-a"
	missingSMS := "Secret sms (spec.sms.secretRef) does not exist in namespace securetext-a"
	cases := []struct {
		name string
		st   tenantState
		want wantCondition
	}{
		{"available", tenantState{},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonWorkloadsAvailable, []string{"keystore, gateway and viewer"}}},
		{"secrets failed, before anything else", tenantState{secretsErr: errors.New("secrets: create Secret tenant-ca: forbidden"),
			renderErr: testRenderErr, applyErr: testApplyErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonSecretsFailed, []string{"tenant-ca"}}},
		{"render failed, before apply", tenantState{renderErr: testRenderErr, applyErr: testApplyErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonRenderFailed, []string{"keyRotationPeriod"}}},
		{"apply failed, before missing Secrets", tenantState{applyErr: testApplyErr, missing: []string{missingDB}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonApplyFailed, []string{"admission webhook denied"}}},
		{"no database location, even with everything available", tenantState{noDatabaseEgress: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured, []string{"--database-cidrs", "network.databaseCIDRs", "--database-namespace-label", "cannot reach their database"}}},
		{"no database location, before missing Secrets and pods starting", tenantState{noDatabaseEgress: true,
			missing: []string{missingDB}, pending: []string{"gateway: 0 of 2 replicas available"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured, []string{"--database-cidrs"}}},
		{"apply failed, before no database location", tenantState{applyErr: testApplyErr, noDatabaseEgress: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonApplyFailed, []string{"admission webhook denied"}}},
		{"Secrets missing, before pods starting", tenantState{missing: []string{missingDB, missingSMS},
			pending: []string{"gateway: 0 of 2 replicas available"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonSecretMissing,
				[]string{missingDB + "; " + missingSMS, "create it; the pods cannot start without it"}}},
		{"pods starting", tenantState{pending: []string{"gateway: 0 of 2 replicas available", "viewer: not created yet"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing,
				[]string{"waiting for gateway: 0 of 2 replicas available; viewer: not created yet"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkCondition(t, workloadsReadyCondition(tc.st, testGeneration), securetextv1alpha1.ConditionWorkloadsReady, tc.want)
		})
	}
}

func TestReadyCondition(t *testing.T) {
	cases := []struct {
		name string
		st   tenantState
		want wantCondition
	}{
		{"everything in place", tenantState{vaultMount: "securetext/a/transit"},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonReconciled, []string{"namespace securetext-a", "matches its spec"}}},
		{"foreign namespace", tenantState{nsErr: testNsConflict},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, []string{`namespace "taken" already exists`}}},
		{"wrapped conflict", tenantState{nsErr: errors.Join(errors.New("other"), testNsConflict)},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, []string{"other", "taken"}}},
		{"old namespace terminating", tenantState{nsErr: testNsTerminating},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceTerminating, []string{"still being deleted"}}},
		{"namespace step failed", tenantState{nsErr: testNsFailed},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceFailed, []string{"etcd timeout"}}},
		{"namespace explains more than Vault", tenantState{nsErr: testNsFailed, vaultErr: testVaultSealed},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceFailed, []string{"etcd timeout"}}},
		{"Vault down", tenantState{vaultErr: testVaultDown},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultUnavailable, []string{"connection refused"}}},
		{"Vault down explains more than pods starting", tenantState{vaultErr: testVaultSealed,
			pending: []string{"keystore: 0 of 2 replicas available"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultSealed, []string{"sealed"}}},
		{"a failed apply explains more than Vault down", tenantState{vaultErr: testVaultDown, applyErr: testApplyErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonApplyFailed, []string{"admission webhook denied"}}},
		{"a missing Secret explains more than Vault down", tenantState{vaultErr: testVaultDown, missing: []string{"Secret db"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonSecretMissing, []string{"Secret db", "create it"}}},
		{"no Vault settings", tenantState{vaultOff: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultNotConfigured, []string{"--vault-addr"}}},
		{"pods starting", tenantState{vaultMount: "securetext/a/transit", pending: []string{"gateway: 0 of 2 replicas available"}},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing, []string{"waiting for gateway"}}},
		{"no database location", tenantState{vaultMount: "securetext/a/transit", noDatabaseEgress: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured, []string{"--database-cidrs"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkCondition(t, readyCondition(tc.st, "securetext-a", testGeneration), securetextv1alpha1.ConditionReady, tc.want)
		})
	}
}

func TestReconcilingCondition(t *testing.T) {
	cases := []struct {
		name string
		st   tenantState
		want wantCondition
	}{
		{"everything in place", tenantState{vaultMount: "securetext/a/transit"},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonReconciled, []string{"matches its spec"}}},
		{"foreign namespace", tenantState{nsErr: testNsConflict},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, []string{"namespace conflict to be resolved"}}},
		{"old namespace terminating", tenantState{nsErr: testNsTerminating},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceTerminating, []string{"old namespace to be deleted"}}},
		{"namespace step failed", tenantState{nsErr: testNsFailed, vaultErr: testVaultConflict},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, []string{"retrying the namespace step"}}},
		{"Vault down", tenantState{vaultErr: testVaultDown},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, []string{"moving the tenant towards its spec"}}},
		{"Vault refuses the operator's token", tenantState{vaultErr: testVaultForbidden},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, []string{"moving the tenant"}}},
		{"Vault conflict needs a person", tenantState{vaultErr: testVaultConflict},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultConflict, []string{"waiting for a person: ", "kv mount"}}},
		{"render error needs a person", tenantState{renderErr: testRenderErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonRenderFailed, []string{"waiting for a person: ", "keyRotationPeriod"}}},
		{"no Vault settings needs a person", tenantState{vaultOff: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonVaultNotConfigured, []string{"waiting for a person: ", "--vault-addr"}}},
		{"no database location needs a person", tenantState{vaultMount: "securetext/a/transit", noDatabaseEgress: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured, []string{"waiting for a person: ", "--database-cidrs"}}},
		{"pods starting", tenantState{pending: []string{"gateway: 0 of 2 replicas available"}},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, []string{"moving the tenant"}}},
		{"apply refused", tenantState{applyErr: testApplyErr},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, []string{"moving the tenant"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkCondition(t, reconcilingCondition(tc.st, testGeneration), securetextv1alpha1.ConditionReconciling, tc.want)
		})
	}
}

func TestStalledCondition(t *testing.T) {
	cases := []struct {
		name string
		st   tenantState
		want *wantCondition // nil: not stalled
	}{
		{"everything in place", tenantState{vaultMount: "securetext/a/transit"}, nil},
		{"foreign namespace", tenantState{nsErr: testNsConflict},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceConflict, []string{`namespace "taken" already exists`}}},
		{"old namespace terminating", tenantState{nsErr: testNsTerminating}, nil},
		{"namespace step failed, whatever Vault said before", tenantState{nsErr: testNsFailed, vaultErr: testVaultConflict}, nil},
		{"Vault down", tenantState{vaultErr: testVaultDown}, nil},
		{"Vault sealed", tenantState{vaultErr: testVaultSealed}, nil},
		{"Vault refuses the operator's token", tenantState{vaultErr: testVaultForbidden}, nil},
		{"Vault conflict", tenantState{vaultErr: testVaultConflict},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultConflict, []string{"kv mount"}}},
		{"error that is not a VaultError", tenantState{vaultErr: errors.New("add finalizer: conflict")},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultFailed, []string{"add finalizer"}}},
		{"no Vault settings", tenantState{vaultOff: true},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultNotConfigured, []string{"--vault-addr"}}},
		{"render error", tenantState{renderErr: testRenderErr},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonRenderFailed, []string{"keyRotationPeriod"}}},
		{"render error explains more than no Vault settings", tenantState{renderErr: testRenderErr, vaultOff: true},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonRenderFailed, []string{"keyRotationPeriod"}}},
		{"no database location", tenantState{vaultMount: "securetext/a/transit", noDatabaseEgress: true},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonDatabaseNotConfigured, []string{"--database-cidrs"}}},
		{"Vault conflict explains more than no database location", tenantState{vaultErr: testVaultConflict, noDatabaseEgress: true},
			&wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonVaultConflict, []string{"kv mount"}}},
		{"apply refused", tenantState{applyErr: testApplyErr}, nil},
		{"Secret missing", tenantState{missing: []string{"Secret db"}}, nil},
		{"pods starting", tenantState{pending: []string{"gateway: 0 of 2 replicas available"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, stalled := stalledCondition(tc.st, testGeneration)
			switch {
			case tc.want == nil && stalled:
				t.Errorf("stalled: %+v; want no Stalled condition", got)
			case tc.want != nil && !stalled:
				t.Errorf("not stalled; want Stalled=%s reason %s", tc.want.status, tc.want.reason)
			case tc.want != nil:
				checkCondition(t, got, securetextv1alpha1.ConditionStalled, *tc.want)
			}
		})
	}
}

func TestSetTenantConditions(t *testing.T) {
	cases := []struct {
		name                         string
		st                           tenantState
		ready, reconciling           metav1.ConditionStatus
		readyReason, reconcileReason string
	}{
		{"everything in place", tenantState{}, metav1.ConditionTrue, metav1.ConditionFalse,
			securetextv1alpha1.ReasonReconciled, securetextv1alpha1.ReasonReconciled},
		{"foreign namespace", tenantState{nsErr: errNamespaceConflict{namespace: "x"}}, metav1.ConditionFalse, metav1.ConditionFalse,
			securetextv1alpha1.ReasonNamespaceConflict, securetextv1alpha1.ReasonNamespaceConflict},
		{"wrapped conflict", tenantState{nsErr: errors.Join(errors.New("other"), errNamespaceConflict{namespace: "x"})}, metav1.ConditionFalse,
			metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, securetextv1alpha1.ReasonNamespaceConflict},
		{"API error", tenantState{nsErr: errors.New("etcd timeout")}, metav1.ConditionFalse, metav1.ConditionTrue,
			securetextv1alpha1.ReasonNamespaceFailed, securetextv1alpha1.ReasonProgressing},
		{"Vault down", tenantState{vaultErr: &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultUnavailable,
			Err: errors.New("connection refused")}}, metav1.ConditionFalse, metav1.ConditionTrue,
			securetextv1alpha1.ReasonVaultUnavailable, securetextv1alpha1.ReasonProgressing},
		{"Vault down explains more than pods starting", tenantState{pending: []string{"keystore: 0 of 2 replicas available"},
			vaultErr: &VaultError{Op: "read mount", Reason: securetextv1alpha1.ReasonVaultSealed, Err: errors.New("sealed")}},
			metav1.ConditionFalse, metav1.ConditionTrue, securetextv1alpha1.ReasonVaultSealed, securetextv1alpha1.ReasonProgressing},
		{"Vault conflict needs a person", tenantState{vaultErr: &VaultError{Op: "mount", Reason: securetextv1alpha1.ReasonVaultConflict,
			Err: errors.New("kv mount")}}, metav1.ConditionFalse, metav1.ConditionFalse,
			securetextv1alpha1.ReasonVaultConflict, securetextv1alpha1.ReasonVaultConflict},
		{"pods starting", tenantState{pending: []string{"gateway: 0 of 2 replicas available"}}, metav1.ConditionFalse,
			metav1.ConditionTrue, securetextv1alpha1.ReasonWorkloadsProgressing, securetextv1alpha1.ReasonProgressing},
		{"apply refused", tenantState{applyErr: errors.New("admission webhook denied")}, metav1.ConditionFalse,
			metav1.ConditionTrue, securetextv1alpha1.ReasonApplyFailed, securetextv1alpha1.ReasonProgressing},
		{"no database location", tenantState{noDatabaseEgress: true}, metav1.ConditionFalse, metav1.ConditionFalse,
			securetextv1alpha1.ReasonDatabaseNotConfigured, securetextv1alpha1.ReasonDatabaseNotConfigured},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := &securetextv1alpha1.SecureTextTenant{}
			tenant.Generation = 7
			setTenantConditions(tenant, tc.st)
			if tenant.Status.ObservedGeneration != 7 {
				t.Errorf("observedGeneration = %d", tenant.Status.ObservedGeneration)
			}
			for _, want := range []struct {
				typ, reason string
				status      metav1.ConditionStatus
			}{
				{securetextv1alpha1.ConditionReady, tc.readyReason, tc.ready},
				{securetextv1alpha1.ConditionReconciling, tc.reconcileReason, tc.reconciling},
			} {
				c := meta.FindStatusCondition(tenant.Status.Conditions, want.typ)
				if c == nil || c.Status != want.status || c.Reason != want.reason || c.ObservedGeneration != 7 {
					t.Errorf("%s = %+v; want %s/%s at generation 7", want.typ, c, want.status, want.reason)
				}
			}
		})
	}
}

// TestSetTenantConditionsWithoutNamespace: when the namespace step fails, no later step ran,
// so VaultReady and WorkloadsReady keep what an earlier reconcile found, and a Stalled
// condition from before goes.
func TestSetTenantConditionsWithoutNamespace(t *testing.T) {
	tenant := &securetextv1alpha1.SecureTextTenant{}
	tenant.Generation = 6
	setTenantConditions(tenant, tenantState{vaultMount: "securetext/a/transit", renderErr: testRenderErr})
	if meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionStalled) == nil {
		t.Fatal("a render error sets Stalled")
	}
	tenant.Generation = testGeneration
	setTenantConditions(tenant, tenantState{nsErr: testNsTerminating})
	if tenant.Status.ObservedGeneration != testGeneration {
		t.Errorf("observedGeneration = %d; want %d", tenant.Status.ObservedGeneration, testGeneration)
	}
	for typ, reason := range map[string]string{
		securetextv1alpha1.ConditionVaultReady:     securetextv1alpha1.ReasonVaultProvisioned,
		securetextv1alpha1.ConditionWorkloadsReady: securetextv1alpha1.ReasonRenderFailed,
	} {
		c := meta.FindStatusCondition(tenant.Status.Conditions, typ)
		if c == nil || c.Reason != reason || c.ObservedGeneration != 6 {
			t.Errorf("%s = %+v; want the earlier reconcile's %s at generation 6", typ, c, reason)
		}
	}
	if c := meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionStalled); c != nil {
		t.Errorf("Stalled = %+v; want none while the old namespace terminates", c)
	}
	ready := meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionReady)
	if ready == nil {
		t.Fatal("no Ready condition")
	}
	checkCondition(t, *ready, securetextv1alpha1.ConditionReady,
		wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceTerminating, []string{"still being deleted"}})
}
