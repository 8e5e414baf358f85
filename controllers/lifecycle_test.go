package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// tenantSeries counts the operator's metric series labelled with tenant.
func tenantSeries(t *testing.T, tenant string) int {
	t.Helper()
	n := 0
	for _, m := range series(t, func(family string) bool { return strings.HasPrefix(family, "securetext_operator_") }) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "tenant" && l.GetValue() == tenant {
				n++
			}
		}
	}
	return n
}

// encryptWith encrypts with the tenant's wrapping key as root, standing in for a message stored
// before deletion.
func encryptWith(t *testing.T, tenant string) string {
	t.Helper()
	s, err := vaultOps.Logical().WriteWithContext(t.Context(), "securetext/"+tenant+"/transit/encrypt/messages",
		map[string]any{"plaintext": "c2VjcmV0"})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data["ciphertext"].(string)
}

func mounted(t *testing.T, tenant string) bool {
	t.Helper()
	mounts, err := vaultOps.Sys().ListMountsWithContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, ok := mounts["securetext/"+tenant+"/transit/"]
	return ok
}

func TestRetainDeletionKeepsKeysAndCutsOffTheKeystore(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("retain")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	condition(t, "retain", securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, "")
	eventually(t, "tenant metrics exported", func() error {
		if n := tenantSeries(t, "retain"); n == 0 {
			return errors.New("no series")
		}
		return nil
	})
	ciphertext := encryptWith(t, "retain")

	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone", func() error { return gone(ctx, tenant) })
	if vaultRead(t, "auth/kubernetes/role/securetext-tenant-retain") != nil {
		t.Error("the keystore's role survived Retain deletion")
	}
	if vaultRead(t, "sys/policies/acl/securetext-tenant-retain") != nil {
		t.Error("the keystore's policy survived Retain deletion")
	}
	// The keys stay: what was stored can be read again when the tenant comes back.
	if _, err := vaultOps.Logical().WriteWithContext(t.Context(), "securetext/retain/transit/decrypt/messages",
		map[string]any{"ciphertext": ciphertext}); err != nil {
		t.Errorf("Retain lost the key: %v", err)
	}
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "securetext-retain"}, &ns); err == nil && ns.DeletionTimestamp.IsZero() {
		t.Error("the namespace (and the workloads in it) was not deleted")
	}
	eventually(t, "tenant metrics removed", func() error {
		if n := tenantSeries(t, "retain"); n != 0 {
			return fmt.Errorf("%d series left", n)
		}
		return nil
	})
}

func TestShredIsRefusedWhileALegalHoldIsActive(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("shred")
	tenant.Spec.DeletionPolicy = securetextv1alpha1.DeletionShred
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	condition(t, "shred", securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, "")
	ciphertext := encryptWith(t, "shred")
	hold := &securetextv1alpha1.LegalHold{
		ObjectMeta: metav1.ObjectMeta{Name: "litigation", Namespace: "securetext-shred"},
		Spec: securetextv1alpha1.LegalHoldSpec{Reason: "litigation",
			Matcher: securetextv1alpha1.HoldMatcher{Recipients: []string{"+12025550143"}}},
	}
	if err := k8s.Create(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Shred refused with LegalHoldActive", func() error {
		_, cond, err := readyCondition(ctx, "shred")
		if err != nil {
			return err
		}
		if cond.Reason != securetextv1alpha1.ReasonLegalHoldActive || !strings.Contains(cond.Message, "Shred is refused") ||
			!strings.Contains(cond.Message, "litigation") {
			return fmt.Errorf("Ready %s: %s", cond.Reason, cond.Message)
		}
		return nil
	})
	if !mounted(t, "shred") {
		t.Fatal("the key was destroyed under an active legal hold")
	}

	releaseHold(t, hold)
	eventually(t, "tenant gone after the hold is released", func() error { return gone(ctx, tenant) })
	if mounted(t, "shred") {
		t.Error("Shred left the tenant's Transit mount")
	}
	if _, err := vaultOps.Logical().WriteWithContext(t.Context(), "securetext/shred/transit/decrypt/messages",
		map[string]any{"ciphertext": ciphertext}); err == nil {
		t.Error("a message stored before Shred can still be decrypted")
	}
}

func TestTenantNeverInVaultIsDeletedWhileVaultIsDown(t *testing.T) {
	ctx := context.Background()
	if err := vault.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = vault.Resume() }()
	tenant := newTenant("novault")
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	got := condition(t, "novault", securetextv1alpha1.ConditionVaultReady, metav1.ConditionFalse, securetextv1alpha1.ReasonVaultUnavailable)
	if slices.Contains(got.Finalizers, controllers.VaultFinalizer) {
		t.Fatalf("Vault finalizer added although nothing was written to Vault: %v", got.Finalizers)
	}
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tenant gone with Vault still down", func() error { return gone(ctx, tenant) })
}

// TestOperatorRestartMidReconcile stops the operator right after its first write for a new
// tenant (the tenant CA) and starts a new one with a cold cache: the new one must finish the
// job without a second CA, with every certificate signed by the one CA, and reach Ready.
func TestOperatorRestartMidReconcile(t *testing.T) {
	ctx := context.Background()
	const name, ns = "restart", "securetext-restart"
	mark := writes.mark()
	tenant := newTenant(name)
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	caCreate := "create Secret " + ns + "/" + controllers.SecretTenantCA
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(writes.since(mark), caCreate) {
		if time.Now().After(deadline) {
			t.Fatalf("the operator never created the tenant CA; writes: %v", writes.since(mark))
		}
		time.Sleep(time.Millisecond)
	}
	if err := restartOperator(); err != nil {
		t.Fatal(err)
	}
	condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, "")
	provideDatabase(t, ns)
	readyAgain(t, name, ns)

	// Every certificate must chain to the one CA that is stored: a CA made by the first
	// operator and lost, or made twice, would show here.
	roots := tenantRoots(t, ns)
	for _, s := range certificateSecrets {
		_, cert, err := secretCert(ns, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := chainsTo(cert, roots); err != nil {
			t.Errorf("%s does not chain to the stored tenant CA: %v", s, err)
		}
	}
	if err := k8s.Delete(ctx, tenant); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	eventually(t, "tenant gone", func() error { return gone(ctx, tenant) })
}

// TestCRDReinstallKeepsTenantStacks deletes the SecureTextTenant CRD, as an uninstall or a
// careless reinstall does, on a cluster of its own (the suite's must keep its CRD). Deleting a
// CRD deletes every tenant; the operator must release them without deleting their namespaces.
func TestCRDReinstallKeepsTenantStacks(t *testing.T) {
	ctx := context.Background()
	cluster, c := ownCluster(t)
	defer startOperator(t, ctx, cluster)()

	tenant := newTenant("kept")
	if err := c.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stack applied", func() error {
		var cm corev1.ConfigMap
		return c.Get(ctx, client.ObjectKey{Namespace: "securetext-kept", Name: "gateway-config"}, &cm)
	})
	crd := &apiextensionsv1.CustomResourceDefinition{}
	crd.Name = "securetexttenants.securetext.io"
	if err := c.Delete(ctx, crd); err != nil {
		t.Fatal(err)
	}
	eventually(t, "CRD and its tenants gone", func() error {
		err := c.Get(ctx, client.ObjectKeyFromObject(crd), crd)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("CRD still there: %v", err)
	})
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "securetext-kept"}, &ns); err != nil || !ns.DeletionTimestamp.IsZero() {
		t.Fatalf("the tenant's namespace went with the CRD: %v %v", err, ns.DeletionTimestamp)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "securetext-kept", Name: "gateway-config"}, &cm); err != nil {
		t.Errorf("the tenant's workloads went with the CRD: %v", err)
	}
}

// TestReplacedTenantCAIsAdopted replaces the tenant CA's certificate and key by hand, keeping
// the operator's annotations (as kubectl apply of an edited manifest does): every certificate
// is re-issued from the new CA once, and then the operator is quiet again.
func TestReplacedTenantCAIsAdopted(t *testing.T) {
	ctx := context.Background()
	const name, ns = "newca", "securetext-newca"
	tenant := newTenant(name)
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, tenant) })
	condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, "")

	ca, err := tenantpki.NewCA(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "replace the CA", func() error {
		var sec corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.SecretTenantCA}, &sec); err != nil {
			return err
		}
		sec.Data = map[string][]byte{"ca.crt": ca.CertPEM(), "ca.key": key}
		return k8s.Update(ctx, &sec)
	})
	poke(t, name) // the CA Secret's own change may not reach the operator's cache at once
	eventually(t, "certificates re-issued from the new CA", func() error {
		for _, s := range certificateSecrets {
			_, cert, err := secretCert(ns, s)
			if err != nil {
				return err
			}
			if err := chainsTo(cert, ca.CertPool()); err != nil {
				return fmt.Errorf("%s: %v", s, err)
			}
		}
		return nil
	})
	poke(t, name)
	mark := writes.mark()
	poke(t, name)
	poke(t, name)
	if w := writesFor(writes.since(mark), name); len(w) != 0 {
		t.Errorf("the operator keeps writing after adopting the new CA: %v", w)
	}
}

// ownCluster starts a control plane for one test (one that changes CRDs, which the suite's
// must keep), stopped when the test ends, and a client of it.
func ownCluster(t *testing.T) (*testenv.Kube, client.Client) {
	t.Helper()
	cluster, err := testenv.StartKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	c, err := client.New(cluster.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cluster, c
}

// startOperator runs the operator (no Vault credentials, no metrics) against a cluster of a
// test's own, and returns what stops it.
func startOperator(t *testing.T, ctx context.Context, cluster *testenv.Kube) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cluster.Config, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.Options{
		ClusterInput: controllers.ClusterInput{WorkloadImage: testImage}, VaultAddress: "https://vault.vault.svc:8200"}); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	return func() { cancel(); <-done }
}
