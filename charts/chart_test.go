package charts_test

// The chart as a platform engineer installs it: rendered through the Helm SDK for the default
// values and for real-world value sets, every object applied to a real kube-apiserver with a
// server-side dry-run (so the API server validates each manifest, CRDs and the Prometheus
// Operator's kinds included), helm lint's rules, and the schema refusing bad values.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/charts"
	"github.com/securetext/securetext/hack/testenv"
)

const (
	releaseName = "securetext"
	releaseNS   = "securetext-system"
)

var (
	kube *testenv.Kube
	k8s  client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if kube, err = testenv.StartKube(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: envtest:", err)
		return 1
	}
	defer kube.Stop()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := securetextv1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if k8s, err = client.New(kube.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: client:", err)
		return 1
	}
	// The Prometheus Operator's CRDs, generated from its API module by make test-binaries, so
	// that the ServiceMonitor, PodMonitor and PrometheusRule are validated like the rest.
	bin, err := testenv.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	monitoringCRDs := filepath.Join(bin, "crds", "monitoring")
	if _, err := os.Stat(monitoringCRDs); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v: run make test-binaries (hack/monitoring-crds.sh generates them)\n", err)
		return 1
	}
	if _, err := envtest.InstallCRDs(kube.Config, envtest.CRDInstallOptions{Paths: []string{monitoringCRDs}, ErrorIfPathMissing: true}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: install the monitoring CRDs:", err)
		return 1
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: release namespace:", err)
		return 1
	}
	return m.Run()
}

// valueSets are the default values and the installs platform engineers make most.
// clusterAPIVersions are the kinds the test API server serves that templates check for with
// .Capabilities.APIVersions.Has, as `helm install` finds them by discovery.
var clusterAPIVersions = []string{"admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"}

var valueSets = map[string]map[string]any{
	"default": nil,
	"monitoring on": {
		"monitoring": map[string]any{
			"namespaceLabels":  map[string]any{"kubernetes.io/metadata.name": "monitoring"},
			"serviceMonitor":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
			"podMonitor":       map[string]any{"enabled": true, "interval": "1m"},
			"prometheusRule":   map[string]any{"enabled": true},
			"grafanaDashboard": map[string]any{"enabled": true},
		},
		"networkPolicy": map[string]any{"enabled": true, "apiServerCIDRs": []any{"10.96.0.1/32", "172.18.0.2/32"}},
	},
	"CRDs off": {
		"crds": map[string]any{"enabled": false, "deletionGuard": false},
	},
	"external Vault with a CA": {
		"vault": map[string]any{
			"enabled": true, "address": "https://vault.example.com:8200",
			"keystoreAddress": "https://vault.vault.svc:8200", "caSecret": "vault-ca",
		},
		"networkPolicy":          map[string]any{"enabled": true, "vaultCIDRs": []any{"203.0.113.10/32"}},
		"network":                map[string]any{"databaseCIDRs": []any{"10.20.0.0/16"}},
		"defaultRetentionPolicy": "hipaa-standard",
	},
	"custom ingress class": {
		"ingress": map[string]any{
			"className":       "traefik",
			"namespaceLabels": map[string]any{"kubernetes.io/metadata.name": "traefik"},
			"podLabels":       map[string]any{"app.kubernetes.io/name": "traefik"},
			// Helm merges maps with the defaults: null drops the nginx default.
			"annotations": map[string]any{
				"nginx.ingress.kubernetes.io/backend-protocol":        nil,
				"traefik.ingress.kubernetes.io/service.serversscheme": "https",
				"traefik.ingress.kubernetes.io/router.tls":            "true",
			},
		},
		"replicaCount": 1,
	},
}

// TestChartDryRun renders each value set and applies every object to the API server with a
// server-side dry-run: a field the API does not know, a bad value or an invalid CEL expression
// is refused there, as it would be by a real install.
func TestChartDryRun(t *testing.T) {
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			rel, err := charts.Render(releaseName, releaseNS, values, clusterAPIVersions...)
			if err != nil {
				t.Fatal(err)
			}
			if len(rel.Objects) == 0 {
				t.Fatal("rendered nothing")
			}
			for _, obj := range rel.Objects {
				if err := dryRunApply(t.Context(), obj); err != nil {
					t.Errorf("%s/%s: %v", obj.GetKind(), obj.GetName(), err)
				}
			}
			if strings.TrimSpace(rel.Notes) == "" {
				t.Error("no NOTES")
			}
		})
	}
}

// dryRunApply server-side-applies obj without persisting it; objects that exist (the CRDs
// envtest installed) are validated as the upgrade they would be.
func dryRunApply(ctx context.Context, obj *unstructured.Unstructured) error {
	return k8s.Patch(ctx, obj.DeepCopy(), client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner("helm"),
		client.FieldValidation(metav1.FieldValidationStrict))
}

// TestDryRunApplyRefuses shows that the dry-run catches what a template could get wrong: an
// unknown field, a value of the wrong type, a bad CEL expression.
func TestDryRunApplyRefuses(t *testing.T) {
	rel, err := charts.Render(releaseName, releaseNS, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func() (string, *unstructured.Unstructured){
		"unknown field": func() (string, *unstructured.Unstructured) {
			o := rel.Find("Deployment", charts.Name).DeepCopy()
			_ = unstructured.SetNestedField(o.Object, int64(2), "spec", "replicass")
			return "replicass", o
		},
		"wrong type": func() (string, *unstructured.Unstructured) {
			o := rel.Find("Service", charts.Name+"-metrics").DeepCopy()
			_ = unstructured.SetNestedSlice(o.Object, []any{map[string]any{"name": "metrics", "port": "eight"}}, "spec", "ports")
			return "port", o
		},
		"bad CEL": func() (string, *unstructured.Unstructured) {
			o := rel.Find("ValidatingAdmissionPolicy", "securetext-legal-hold-crd-guard").DeepCopy()
			_ = unstructured.SetNestedSlice(o.Object, []any{map[string]any{"expression": "params.status.activeLegalHolds =="}}, "spec", "validations")
			return "expression", o
		},
	} {
		t.Run(name, func(t *testing.T) {
			field, obj := edit()
			err := dryRunApply(t.Context(), obj)
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("broken %s applied: %v", obj.GetKind(), err)
			}
		})
	}
}

// TestChartValueSets checks what each value set changes in the rendered chart.
func TestChartValueSets(t *testing.T) {
	render := func(t *testing.T, set string) *charts.Release {
		t.Helper()
		rel, err := charts.Render(releaseName, releaseNS, valueSets[set])
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	args := func(t *testing.T, rel *charts.Release) []string {
		t.Helper()
		dep := rel.Find("Deployment", charts.Name)
		if dep == nil {
			t.Fatalf("no Deployment in %v", rel.Kinds())
		}
		containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
		var out []string
		for _, a := range containers[0].(map[string]any)["args"].([]any) {
			out = append(out, a.(string))
		}
		return out
	}
	monitoringKinds := []string{"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"}

	t.Run("default", func(t *testing.T) {
		rel := render(t, "default")
		for _, o := range rel.Objects {
			if slices.Contains(monitoringKinds, o.GetKind()) {
				t.Errorf("%s rendered by default: monitoring and the operator's NetworkPolicy are opt-in", o.GetKind())
			}
		}
		a := args(t, rel)
		for _, flag := range []string{"--vault-addr", "--metrics-namespace-label", "--database-cidrs=1"} {
			if slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, flag) }) {
				t.Errorf("default args carry %s: %v", flag, a)
			}
		}
		if !slices.Contains(a, "--leader-elect") {
			t.Errorf("no leader election: %v", a)
		}
		for _, crd := range []string{"legalholds.securetext.io", "retentionpolicies.securetext.io", "securetexttenants.securetext.io"} {
			o := rel.Find("CustomResourceDefinition", crd)
			if o == nil {
				t.Errorf("CRD %s not rendered", crd)
				continue
			}
			if o.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("CRD %s is not kept on uninstall", crd)
			}
		}
		if rel.Find("ValidatingAdmissionPolicy", "securetext-legal-hold-crd-guard") == nil {
			t.Error("no CRD deletion guard by default")
		}
		if rel.Find("PodDisruptionBudget", charts.Name) == nil {
			t.Error("two replicas and no PodDisruptionBudget")
		}
	})
	t.Run("monitoring on", func(t *testing.T) {
		rel := render(t, "monitoring on")
		for _, kind := range monitoringKinds {
			if !slices.ContainsFunc(rel.Objects, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind }) {
				t.Errorf("no %s in %v", kind, rel.Kinds())
			}
		}
		if rel.Find("ConfigMap", "securetext-operator-dashboard") == nil {
			t.Errorf("no dashboard ConfigMap in %v", rel.Kinds())
		}
		if !slices.Contains(args(t, rel), `--metrics-namespace-label=kubernetes.io/metadata.name=monitoring`) {
			t.Errorf("the tenants' policies are not told where Prometheus is: %v", args(t, rel))
		}
	})
	t.Run("CRDs off", func(t *testing.T) {
		rel := render(t, "CRDs off")
		for _, o := range rel.Objects {
			if o.GetKind() == "CustomResourceDefinition" || o.GetName() == "securetext-legal-hold-crd-guard" {
				t.Errorf("%s/%s rendered with crds.enabled=false", o.GetKind(), o.GetName())
			}
		}
		// The guards of holds and policies do not depend on who installs the CRDs.
		for _, name := range []string{"securetext-legal-hold-delete-guard", "securetext-retention-shortening-guard"} {
			if rel.Find("ValidatingAdmissionPolicy", name) == nil {
				t.Errorf("no %s with crds.enabled=false", name)
			}
		}
	})
	t.Run("external Vault with a CA", func(t *testing.T) {
		rel := render(t, "external Vault with a CA")
		a := args(t, rel)
		for _, want := range []string{"--vault-addr=https://vault.example.com:8200", "--keystore-vault-addr=https://vault.vault.svc:8200",
			"--vault-ca-cert=/etc/securetext/vault-ca/ca.crt", "--vault-jwt-file=/var/run/secrets/securetext/vault/token",
			"--database-cidrs=10.20.0.0/16", "--default-retention-policy=hipaa-standard"} {
			if !slices.Contains(a, want) {
				t.Errorf("no %s in %v", want, a)
			}
		}
		dep := rel.Find("Deployment", charts.Name)
		vols, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
		// The operator logs in with a token of Vault's audience (its role is bound to it), and
		// trusts Vault's CA.
		if len(vols) != 2 || !strings.Contains(fmt.Sprint(vols[0]), "serviceAccountToken:map[audience:vault") ||
			!strings.Contains(fmt.Sprint(vols[1]), "vault-ca") {
			t.Errorf("no projected Vault token and Vault CA Secret: %v", vols)
		}
		np := rel.Find("NetworkPolicy", charts.Name)
		if np == nil || !strings.Contains(fmt.Sprint(np.Object["spec"]), "203.0.113.10/32") {
			t.Errorf("the operator's NetworkPolicy does not admit Vault: %v", np)
		}
	})
	t.Run("custom ingress class", func(t *testing.T) {
		rel := render(t, "custom ingress class")
		a := args(t, rel)
		for _, want := range []string{"--ingress-class=traefik", "--ingress-namespace-label=kubernetes.io/metadata.name=traefik",
			"--ingress-pod-label=app.kubernetes.io/name=traefik", "--ingress-annotation=traefik.ingress.kubernetes.io/service.serversscheme=https"} {
			if !slices.Contains(a, want) {
				t.Errorf("no %s in %v", want, a)
			}
		}
		if slices.ContainsFunc(a, func(s string) bool { return strings.Contains(s, "nginx") }) {
			t.Errorf("the nginx defaults survive a replaced map: %v", a)
		}
		if rel.Find("PodDisruptionBudget", charts.Name) != nil {
			t.Error("a PodDisruptionBudget of minAvailable 1 on one replica would block every node drain")
		}
	})
}

// TestChartLint runs helm lint's rules (Chart.yaml, values against the schema, templates, the
// rendered YAML) on the chart for every value set.
func TestChartLint(t *testing.T) {
	kv, err := common.ParseKubeVersion(charts.KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			res := lint.RunAll(chartDir(t), values, releaseNS, lint.WithKubeVersion(kv))
			for _, msg := range res.Messages {
				if msg.Severity > support.InfoSev {
					t.Errorf("helm lint: %s", msg)
				} else {
					t.Logf("helm lint: %s", msg)
				}
			}
		})
	}
}

// TestChartSchemaRefusesBadValues: each mistake is refused before anything renders, with a
// message that names the value and what is wrong with it.
func TestChartSchemaRefusesBadValues(t *testing.T) {
	cases := []struct {
		name   string
		values map[string]any
		want   []string
	}{
		{"wrong type", map[string]any{"replicaCount": "two"}, []string{"/replicaCount", "got string, want integer"}},
		{"unknown key", map[string]any{"vault": map[string]any{"adress": "https://vault:8200"}}, []string{"/vault", "'adress' not allowed"}},
		{"negative replicas", map[string]any{"replicaCount": -1}, []string{"/replicaCount", "minimum: got -1, want 1"}},
		{"bad duration", map[string]any{"resync": "10 minutes"}, []string{"/resync", "'10 minutes' does not match"}},
		{"missing Vault address with Vault enabled", map[string]any{"vault": map[string]any{"enabled": true}}, []string{"/vault/address", "minLength: got 0, want 1"}},
		{"plain-http Vault off loopback", map[string]any{"vault": map[string]any{"enabled": true, "address": "http://vault:8200"}}, []string{"/vault/address", "does not match"}},
		{"bad CIDR", map[string]any{"network": map[string]any{"databaseCIDRs": []any{"10.0.0.0"}}}, []string{"/network/databaseCIDRs/0", "does not match"}},
		{"bad scrape interval", map[string]any{"monitoring": map[string]any{"podMonitor": map[string]any{"interval": "30"}}}, []string{"/monitoring/podMonitor/interval"}},
		{"retention policy that is not a name", map[string]any{"defaultRetentionPolicy": "HIPAA standard"}, []string{"/defaultRetentionPolicy", "does not match"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := charts.Render(releaseName, releaseNS, tc.values)
			if err == nil {
				t.Fatalf("%v accepted", tc.values)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestLegalHoldCRDGuard installs the chart's ValidatingAdmissionPolicy for real and tries to
// delete the LegalHold and RetentionPolicy CRDs (dry-run, so that a wrong guard deletes
// nothing): refused while a tenant reports an active hold, allowed once none does. The
// SecureTextTenant CRD is not guarded: tenants cannot be deleted while they hold anyway.
func TestLegalHoldCRDGuard(t *testing.T) {
	ctx := t.Context()
	rel, err := charts.Render(releaseName, releaseNS, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		obj := rel.Find(kind, "securetext-legal-hold-crd-guard")
		if obj == nil {
			t.Fatalf("no %s", kind)
		}
		if err := k8s.Patch(ctx, obj.DeepCopy(), client.Apply, client.ForceOwnership, client.FieldOwner("helm")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj.DeepCopy()) })
	}

	sample, err := os.ReadFile(filepath.Join(chartDir(t), "..", "..", "config", "samples", "securetext_v1alpha1_securetexttenant_demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tenant := &securetextv1alpha1.SecureTextTenant{}
	if err := yaml.Unmarshal(sample, tenant); err != nil {
		t.Fatal(err)
	}
	tenant.Name = "clinic-guard"
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), tenant) })
	setHolds := func(n int32) {
		t.Helper()
		tenant.Status.ActiveLegalHolds = n
		if err := k8s.Status().Update(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	deleteCRD := func(name string) error {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		crd.SetName(name)
		return k8s.Delete(ctx, crd, client.DryRunAll)
	}
	guarded := []string{"legalholds.securetext.io", "retentionpolicies.securetext.io"}

	setHolds(2)
	// The API server starts enforcing a new policy, and sees a param's change, within moments.
	for _, crd := range guarded {
		err := eventually(t, func() error {
			if err := deleteCRD(crd); err == nil {
				return fmt.Errorf("deleting %s was allowed with 2 active holds", crd)
			} else if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
				return err
			} else {
				if !strings.Contains(err.Error(), "tenant clinic-guard has 2 active LegalHold(s)") {
					return fmt.Errorf("refusal does not say why: %v", err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := deleteCRD("securetexttenants.securetext.io"); err != nil {
		t.Errorf("the tenant CRD is guarded too: %v", err)
	}

	setHolds(0)
	for _, crd := range guarded {
		if err := eventually(t, func() error { return deleteCRD(crd) }); err != nil {
			t.Errorf("deleting %s without holds: %v", crd, err)
		}
	}
}

// eventually retries f for up to 20 s while it fails, and returns its last error.
func eventually(t *testing.T, f func() error) error {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// chartDir is charts.Dir, failing the test when the source tree is not found.
func chartDir(t *testing.T) string {
	t.Helper()
	dir, err := charts.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
