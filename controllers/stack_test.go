package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
)

// condition waits until the tenant's condition typ, for the current generation, has status
// and (when not empty) reason, and returns the tenant.
func condition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) *securetextv1alpha1.SecureTextTenant {
	t.Helper()
	var got securetextv1alpha1.SecureTextTenant
	eventually(t, fmt.Sprintf("%s %s=%s %s", name, typ, status, reason), func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &got); err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, typ)
		switch {
		case c == nil:
			return fmt.Errorf("no %s condition yet", typ)
		case c.ObservedGeneration != got.Generation:
			return fmt.Errorf("%s describes generation %d, tenant is at %d", typ, c.ObservedGeneration, got.Generation)
		case c.Status != status || (reason != "" && c.Reason != reason):
			return fmt.Errorf("%s=%s reason %s: %s", typ, c.Status, c.Reason, c.Message)
		}
		return nil
	})
	return &got
}

// setAvailable plays the Deployment controller, which envtest does not run: it reports every
// Deployment in ns as rolled out and available.
func setAvailable(ns string) error {
	var list appsv1.DeploymentList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	if len(list.Items) != 3 {
		return fmt.Errorf("%d Deployments", len(list.Items))
	}
	for i := range list.Items {
		d := &list.Items[i]
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n,
			ReadyReplicas: n, AvailableReplicas: n, Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
			}}}
		if err := k8s.Status().Update(context.Background(), d); err != nil {
			return err
		}
	}
	return nil
}

// certificateSecrets are the generated Secrets that hold a certificate.
var certificateSecrets = []string{controllers.SecretKeystoreTLS, controllers.SecretGatewayKeystoreClient,
	controllers.SecretViewerKeystoreClient, controllers.SecretServingTLS, controllers.SecretGatewayStatusTLS}

// secretCert reads Secret ns/name and the certificate in its tls.crt.
func secretCert(ns, name string) (*corev1.Secret, *x509.Certificate, error) {
	var sec corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &sec); err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(sec.Data["tls.crt"])
	if block == nil {
		return &sec, nil, fmt.Errorf("Secret %s holds no certificate", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	return &sec, cert, err
}

// chainsTo checks that cert is signed by a CA in roots.
func chainsTo(cert *x509.Certificate, roots *x509.CertPool) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// provideDatabase creates the tenant's database Secret (spec.database.secretRef "db"), as the
// platform engineer does once the operator has made the namespace.
func provideDatabase(t *testing.T, ns string) {
	t.Helper()
	eventually(t, "database Secret in "+ns, func() error {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
			StringData: map[string]string{"url": "postgres://tenant@db.example:5432/tenant?sslmode=verify-full"}}
		if err := k8s.Create(context.Background(), sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	})
}

// poke makes the operator reconcile the tenant without changing its spec (an annotation
// change), and waits until it has.
func poke(t *testing.T, name string) {
	t.Helper()
	before := reconciles(t)
	eventually(t, "annotate "+name, func() error {
		var cur securetextv1alpha1.SecureTextTenant
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &cur); err != nil {
			return err
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["test.securetext.io/poke"] = time.Now().Format(time.RFC3339Nano)
		return k8s.Update(context.Background(), &cur)
	})
	eventually(t, "a reconcile after the poke", func() error {
		if n := reconciles(t); n <= before {
			return fmt.Errorf("%v reconciles, as before", n)
		}
		return nil
	})
}

// reconciles is controller-runtime's count of finished tenant reconciles.
func reconciles(t *testing.T) float64 {
	t.Helper()
	total := 0.0
	for _, m := range series(t, isFamily("controller_runtime_reconcile_total")) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" && l.GetValue() == "securetexttenant" {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// series returns the series of the registered metric families that keep takes.
func series(t *testing.T, keep func(family string) bool) []*dto.Metric {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if keep(f.GetName()) {
			out = append(out, f.GetMetric()...)
		}
	}
	return out
}

func isFamily(name string) func(string) bool { return func(f string) bool { return f == name } }

// writesFor keeps the writes that touch tenant name or its namespace.
func writesFor(all []string, name string) []string {
	var out []string
	for _, w := range all {
		if strings.Contains(w, " securetext-"+name+"/") || strings.HasSuffix(w, " /"+name) {
			out = append(out, w)
		}
	}
	return out
}

func eventReasons(t *testing.T, tenant string) map[string]int {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range list.Items {
		if e.Regarding.Name == tenant && e.Regarding.Kind == "SecureTextTenant" {
			// A repeated event is one Event object with a series count.
			n := 1
			if e.Series != nil {
				n = int(e.Series.Count)
			}
			out[e.Reason] += n
		}
	}
	return out
}

func vaultRead(t *testing.T, path string) map[string]any {
	t.Helper()
	s, err := vaultOps.Logical().ReadWithContext(t.Context(), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

// TestTenantStack applies a sample tenant and checks every object of its stack, in the
// cluster and in Vault, then drift repair, the config checksum, a no-op resync, and a Vault
// outage.
func TestTenantStack(t *testing.T) {
	ctx := context.Background()
	const name, ns = "stack", "securetext-stack"
	tenant := newTenant(name)
	tenant.Spec.Vault.KeyRotationPeriod = "2160h"
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, tenant) })

	first := condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, securetextv1alpha1.ReasonVaultProvisioned)
	if first.Status.Namespace != ns {
		// The Vault finalizer's patch once overwrote the status being computed.
		t.Errorf("status.namespace = %q with VaultReady=True", first.Status.Namespace)
	}
	missing := condition(t, name, securetextv1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, securetextv1alpha1.ReasonSecretMissing)
	if c := meta.FindStatusCondition(missing.Status.Conditions, securetextv1alpha1.ConditionWorkloadsReady); !strings.Contains(c.Message, "Secret db (spec.database.secretRef)") {
		t.Errorf("WorkloadsReady message %q does not name the missing Secret", c.Message)
	}
	provideDatabase(t, ns)
	got := condition(t, name, securetextv1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing)
	if !slices.Contains(got.Finalizers, controllers.VaultFinalizer) {
		t.Errorf("finalizers %v: no %s although Vault objects exist", got.Finalizers, controllers.VaultFinalizer)
	}

	t.Run("workloads", func(t *testing.T) { checkWorkloads(t, ns) })
	t.Run("network policies", func(t *testing.T) { checkNetworkPolicies(t, ns) })
	t.Run("secrets", func(t *testing.T) { checkSecrets(t, name, ns) })
	t.Run("vault", func(t *testing.T) { checkVault(t, name, ns) })

	readyAgain(t, name, ns)
	ready := condition(t, name, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonReconciled)
	if ep := ready.Status.Endpoints; ep.Viewer != "https://view.stack.example" || ep.API != "https://view.stack.example/v1" {
		t.Errorf("endpoints = %+v", ep)
	}
	reasons := eventReasons(t, name)
	for _, r := range []string{controllers.EventNamespaceCreated, controllers.EventSecretsChanged, controllers.EventVaultChanged,
		controllers.EventWorkloadsApplied} {
		if reasons[r] == 0 {
			t.Errorf("no %s event; events: %v", r, reasons)
		}
	}

	t.Run("no-op resync writes nothing", func(t *testing.T) {
		poke(t, name) // settle: the first poke may still see the status of setAvailable
		mark, vaultMark, events := writes.mark(), vaultWrites.mark(), eventReasons(t, name)
		for range 3 {
			poke(t, name)
		}
		if w := writesFor(writes.since(mark), name); len(w) != 0 {
			t.Errorf("3 no-op reconciles wrote to the API server: %v", w)
		}
		if w := vaultWrites.since(vaultMark); len(w) != 0 {
			t.Errorf("3 no-op reconciles wrote to Vault: %v", w)
		}
		if after := eventReasons(t, name); fmt.Sprint(after) != fmt.Sprint(events) {
			t.Errorf("events changed on a no-op: %v → %v", events, after)
		}
	})

	t.Run("a child's event does not read Vault again", func(t *testing.T) {
		poke(t, name) // the last check remembers this resourceVersion of the tenant
		mark, before := vaultWrites.readMark(), reconciles(t)
		eventually(t, "annotate the keystore Deployment", func() error {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keystore"}, &d); err != nil {
				return err
			}
			if d.Annotations == nil {
				d.Annotations = map[string]string{}
			}
			d.Annotations["test.securetext.io/touched"] = time.Now().Format(time.RFC3339Nano)
			return k8s.Update(ctx, &d)
		})
		eventually(t, "a reconcile for the Deployment's event", func() error {
			if reconciles(t) <= before {
				return errors.New("no reconcile yet")
			}
			return nil
		})
		for _, path := range vaultWrites.readsSince(mark) {
			if strings.Contains(path, "securetext-tenant-"+name) || strings.Contains(path, "/securetext/"+name+"/") {
				t.Errorf("a reconcile caused by a Deployment event read Vault: %s", path)
			}
		}
	})

	t.Run("an edited Deployment is repaired", func(t *testing.T) {
		eventually(t, "edit the gateway", func() error {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gateway"}, &d); err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Image = "evil/image:latest"
			d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = new(bool)
			return k8s.Update(ctx, &d)
		})
		eventually(t, "gateway repaired", func() error {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gateway"}, &d); err != nil {
				return err
			}
			c := d.Spec.Template.Spec.Containers[0]
			if c.Image != testImage || !*c.SecurityContext.ReadOnlyRootFilesystem {
				return fmt.Errorf("image %s, readOnlyRootFilesystem %v", c.Image, *c.SecurityContext.ReadOnlyRootFilesystem)
			}
			return nil
		})
	})

	t.Run("a deleted NetworkPolicy is recreated", func(t *testing.T) {
		var np networkingv1.NetworkPolicy
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.PolicyDefaultDeny}, &np); err != nil {
			t.Fatal(err)
		}
		oldUID := np.UID
		if err := k8s.Delete(ctx, &np); err != nil {
			t.Fatal(err)
		}
		eventually(t, "default-deny recreated", func() error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.PolicyDefaultDeny}, &np); err != nil {
				return err
			}
			if np.UID == oldUID {
				return errors.New("still the deleted one")
			}
			return nil
		})
	})

	t.Run("a rule added to a NetworkPolicy is removed", func(t *testing.T) {
		eventually(t, "open default-deny", func() error {
			var np networkingv1.NetworkPolicy
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.PolicyDefaultDeny}, &np); err != nil {
				return err
			}
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}} // admit everything
			return k8s.Update(ctx, &np)
		})
		eventually(t, "default-deny closed again", func() error {
			var np networkingv1.NetworkPolicy
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.PolicyDefaultDeny}, &np); err != nil {
				return err
			}
			if len(np.Spec.Ingress) != 0 {
				return fmt.Errorf("ingress rules %+v", np.Spec.Ingress)
			}
			return nil
		})
	})

	t.Run("a key added to a ConfigMap is removed", func(t *testing.T) {
		eventually(t, "add a setting", func() error {
			var cm corev1.ConfigMap
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "viewer-config"}, &cm); err != nil {
				return err
			}
			cm.Data["SECURETEXT_VIEWER_MAX_FAILURES"] = "100000" // envFrom would hand it to the pods
			return k8s.Update(ctx, &cm)
		})
		eventually(t, "setting removed", func() error {
			var cm corev1.ConfigMap
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "viewer-config"}, &cm); err != nil {
				return err
			}
			if v, ok := cm.Data["SECURETEXT_VIEWER_MAX_FAILURES"]; ok && v == "100000" {
				return errors.New("the added setting is still there")
			}
			return nil
		})
	})

	t.Run("a spec change rolls the config checksum of the pods it concerns", func(t *testing.T) {
		sums := checksums(t, ns)
		eventually(t, "change maxMessageBytes", func() error {
			var cur securetextv1alpha1.SecureTextTenant
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &cur); err != nil {
				return err
			}
			cur.Spec.SMTP.MaxMessageBytes = 10 << 20
			return k8s.Update(ctx, &cur)
		})
		eventually(t, "gateway checksum changes", func() error {
			now := checksums(t, ns)
			if now["gateway"] == sums["gateway"] {
				return errors.New("gateway checksum unchanged")
			}
			if now["viewer"] != sums["viewer"] || now["keystore"] != sums["keystore"] {
				return fmt.Errorf("an unrelated component rolled: %v → %v", sums, now)
			}
			return nil
		})
		var cm corev1.ConfigMap
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gateway-config"}, &cm); err != nil {
			t.Fatal(err)
		}
		if v := cm.Data["SECURETEXT_GATEWAY_MAX_MESSAGE_BYTES"]; v != "10485760" {
			t.Errorf("gateway config max message bytes = %q", v)
		}
	})

	t.Run("a new text domain re-issues the serving certificate only", func(t *testing.T) {
		var keystoreTLS corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.SecretKeystoreTLS}, &keystoreTLS); err != nil {
			t.Fatal(err)
		}
		eventually(t, "change textDomain", func() error {
			var cur securetextv1alpha1.SecureTextTenant
			if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &cur); err != nil {
				return err
			}
			cur.Spec.TextDomain = "mail.stack.example"
			return k8s.Update(ctx, &cur)
		})
		eventually(t, "serving certificate names the new domain", func() error {
			_, cert, err := secretCert(ns, controllers.SecretServingTLS)
			if err != nil {
				return err
			}
			if !slices.Contains(cert.DNSNames, "mail.stack.example") {
				return fmt.Errorf("names %v", cert.DNSNames)
			}
			return nil
		})
		var after corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.SecretKeystoreTLS}, &after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != keystoreTLS.ResourceVersion {
			t.Error("the keystore certificate was re-issued although its names did not change")
		}
	})

	t.Run("a changed database Secret rolls the gateway and the viewer", func(t *testing.T) {
		sums := checksums(t, ns)
		var db corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, &db); err != nil {
			t.Fatal(err)
		}
		db.Data["url"] = []byte("postgres://tenant@db2.example:5432/tenant?sslmode=verify-full")
		if err := k8s.Update(ctx, &db); err != nil {
			t.Fatal(err)
		}
		poke(t, name) // the operator does not watch Secrets it did not make; its resync finds the change
		eventually(t, "gateway and viewer checksums change", func() error {
			now := checksums(t, ns)
			if now["gateway"] == sums["gateway"] || now["viewer"] == sums["viewer"] {
				return fmt.Errorf("checksums %v → %v", sums, now)
			}
			if now["keystore"] != sums["keystore"] {
				return errors.New("the keystore, which has no database, rolled")
			}
			return nil
		})
	})

	t.Run("an autoscaler comes and goes with the spec", func(t *testing.T) {
		setAutoscaling := func(a *securetextv1alpha1.AutoscalingSpec) {
			eventually(t, "set viewer autoscaling", func() error {
				var cur securetextv1alpha1.SecureTextTenant
				if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &cur); err != nil {
					return err
				}
				cur.Spec.Components.Viewer.Autoscaling = a
				return k8s.Update(ctx, &cur)
			})
		}
		var hpa autoscalingv2.HorizontalPodAutoscaler
		key := client.ObjectKey{Namespace: ns, Name: "viewer"}
		setAutoscaling(&securetextv1alpha1.AutoscalingSpec{MaxReplicas: 6})
		eventually(t, "viewer HPA", func() error {
			if err := k8s.Get(ctx, key, &hpa); err != nil {
				return err
			}
			if hpa.Spec.MaxReplicas != 6 || *hpa.Spec.MinReplicas != 2 {
				return fmt.Errorf("HPA %d..%d", *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
			}
			return nil
		})
		poke(t, name)
		var d appsv1.Deployment
		if err := k8s.Get(ctx, key, &d); err != nil {
			t.Fatal(err)
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("turning autoscaling on left the viewer at %v replicas, want 2 until the autoscaler decides", d.Spec.Replicas)
		}
		setAutoscaling(nil)
		eventually(t, "viewer HPA deleted", func() error {
			err := k8s.Get(ctx, key, &hpa)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("HPA still there: %v", err)
		})
	})

	t.Run("Vault down, then back", func(t *testing.T) {
		readyAgain(t, name, ns) // the checksum change rolled the gateway
		if err := vault.Pause(); err != nil {
			t.Fatal(err)
		}
		resumed := false
		defer func() {
			if !resumed {
				_ = vault.Resume()
			}
		}()
		poke(t, name)
		down := condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionFalse, securetextv1alpha1.ReasonVaultUnavailable)
		c := meta.FindStatusCondition(down.Status.Conditions, securetextv1alpha1.ConditionReady)
		if c.Status != metav1.ConditionFalse || c.Reason != securetextv1alpha1.ReasonVaultUnavailable {
			t.Errorf("Ready = %s %s while Vault is down", c.Status, c.Reason)
		}
		if err := vault.Resume(); err != nil {
			t.Fatal(err)
		}
		resumed = true
		// Recovery needs no event: the operator retries with backoff on its own.
		condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, securetextv1alpha1.ReasonVaultProvisioned)
		condition(t, name, securetextv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	})
}

// readyAgain waits for Ready=True, playing the Deployment controller while the operator rolls
// the pods.
func readyAgain(t *testing.T, name, ns string) {
	t.Helper()
	eventually(t, name+" Ready again", func() error {
		if err := setAvailable(ns); err != nil {
			return err
		}
		_, cond, err := readyCondition(context.Background(), name)
		if err != nil {
			return err
		}
		if cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		return nil
	})
}

// checksums are the config checksums of the pod templates in ns, by Deployment.
func checksums(t *testing.T, ns string) map[string]string {
	t.Helper()
	var list appsv1.DeploymentList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range list.Items {
		out[d.Name] = d.Spec.Template.Annotations[controllers.AnnotationConfigChecksum]
	}
	return out
}

func checkWorkloads(t *testing.T, ns string) {
	ctx := context.Background()
	for _, c := range []string{"keystore", "gateway", "viewer"} {
		var sa corev1.ServiceAccount
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c}, &sa); err != nil {
			t.Fatalf("ServiceAccount %s: %v", c, err)
		}
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s automounts its token", c)
		}
		var d appsv1.Deployment
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c}, &d); err != nil {
			t.Fatalf("Deployment %s: %v", c, err)
		}
		pod := d.Spec.Template.Spec
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
			pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s pod security context = %+v", c, pod.SecurityContext)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || pod.ServiceAccountName != c {
			t.Errorf("%s: service account %q automount %v", c, pod.ServiceAccountName, pod.AutomountServiceAccountToken)
		}
		ctr := pod.Containers[0]
		sc := ctr.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
			*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s container security context = %+v", c, sc)
		}
		if ctr.Resources.Requests.Cpu().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s resources = %+v", c, ctr.Resources)
		}
		if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil {
			t.Errorf("%s has no probes", c)
		}
		if len(pod.TopologySpreadConstraints) == 0 {
			t.Errorf("%s has no topology spread", c)
		}
		if len(d.Spec.Template.Annotations[controllers.AnnotationConfigChecksum]) != 64 {
			t.Errorf("%s has no config checksum: %v", c, d.Spec.Template.Annotations)
		}
		if ctr.Image != testImage {
			t.Errorf("%s image %s", c, ctr.Image)
		}
		var pdb policyv1.PodDisruptionBudget
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c}, &pdb); err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", c, err)
		}
	}
	var smtp corev1.Service
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.ServiceGatewaySMTP}, &smtp); err != nil {
		t.Fatal(err)
	}
	if smtp.Spec.Type != corev1.ServiceTypeLoadBalancer || smtp.Spec.Ports[0].Port != 587 {
		t.Errorf("SMTP Service %s port %d", smtp.Spec.Type, smtp.Spec.Ports[0].Port)
	}
	for _, name := range []string{"keystore", "gateway", "viewer"} {
		var svc corev1.Service
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil || svc.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service %s: %v %s", name, err, svc.Spec.Type)
		}
	}
	var ing networkingv1.Ingress
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "securetext"}, &ing); err != nil {
		var list networkingv1.IngressList
		_ = k8s.List(ctx, &list, client.InNamespace(ns))
		if len(list.Items) != 1 {
			t.Fatalf("%d Ingresses", len(list.Items))
		}
		ing = list.Items[0]
	}
	// Without spec.tls the host is still a TLS host: the ingress controller's default
	// certificate, plain HTTP redirected.
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "" || len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "view.stack.example" {
		t.Errorf("Ingress = %+v", ing.Spec)
	}
}

func checkNetworkPolicies(t *testing.T, ns string) {
	var list networkingv1.NetworkPolicyList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	byName := map[string]networkingv1.NetworkPolicy{}
	for _, p := range list.Items {
		byName[p.Name] = p
	}
	deny, ok := byName[controllers.PolicyDefaultDeny]
	if !ok || len(deny.Spec.PodSelector.MatchLabels) != 0 || len(deny.Spec.Ingress) != 0 || len(deny.Spec.Egress) != 0 ||
		len(deny.Spec.PolicyTypes) != 2 {
		t.Errorf("default deny = %+v", deny.Spec)
	}
	ks, ok := byName[controllers.PolicyKeystoreIngress]
	if !ok || len(ks.Spec.Ingress) != 1 {
		t.Fatalf("keystore ingress policy = %+v", ks.Spec)
	}
	for _, peer := range ks.Spec.Ingress[0].From {
		// No namespace selector: only pods of this namespace, never another tenant's.
		if peer.NamespaceSelector != nil || peer.IPBlock != nil || peer.PodSelector == nil ||
			peer.PodSelector.MatchLabels[controllers.LabelTenant] != "stack" {
			t.Errorf("keystore admits %+v", peer)
		}
	}
	if len(ks.Spec.Ingress[0].From) != 2 {
		t.Errorf("keystore admits %d peers, want the gateway and the viewer", len(ks.Spec.Ingress[0].From))
	}
	gwOut := byName[controllers.PolicyGatewayEgress]
	if len(gwOut.Spec.Egress) < 2 {
		t.Errorf("gateway egress = %+v", gwOut.Spec.Egress)
	}
}

// tenantRoots is a pool holding the CA certificate stored in namespace ns.
func tenantRoots(t *testing.T, ns string) *x509.CertPool {
	t.Helper()
	var ca corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.SecretTenantCA}, &ca); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.Data["ca.crt"]) {
		t.Fatal("tenant CA has no certificate")
	}
	return roots
}

func checkSecrets(t *testing.T, tenant, ns string) {
	ctx := context.Background()
	roots := tenantRoots(t, ns)
	leaf := func(secret string) *x509.Certificate {
		s, cert, err := secretCert(ns, secret)
		if err != nil {
			t.Fatal(err)
		}
		if s.Type != corev1.SecretTypeTLS || len(s.Data["tls.key"]) == 0 {
			t.Errorf("%s: type %s", secret, s.Type)
		}
		if err := chainsTo(cert, roots); err != nil {
			t.Errorf("%s does not chain to the tenant CA: %v", secret, err)
		}
		if s.Annotations[controllers.AnnotationNotAfter] != cert.NotAfter.UTC().Format(time.RFC3339) {
			t.Errorf("%s: not-after annotation %q, certificate %s", secret, s.Annotations[controllers.AnnotationNotAfter], cert.NotAfter)
		}
		return cert
	}
	server := leaf(controllers.SecretKeystoreTLS)
	if !slices.Equal(server.DNSNames, controllers.KeystoreDNSNames(ns)) {
		t.Errorf("keystore certificate names %v", server.DNSNames)
	}
	for _, c := range []string{"gateway", "viewer"} {
		cert := leaf(c + "-keystore-client")
		if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://securetext.io/tenant/"+tenant+"/"+c {
			t.Errorf("%s client certificate URIs %v", c, cert.URIs)
		}
	}
	leaf(controllers.SecretServingTLS)
	var senders corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.SecretSenders}, &senders); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(senders.Data["senders.yaml"]), "senders: []") {
		t.Errorf("senders.yaml = %q", senders.Data["senders.yaml"])
	}
}

func checkVault(t *testing.T, tenant, ns string) {
	mount := "securetext/" + tenant + "/transit"
	for key, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		k := vaultRead(t, mount+"/keys/"+key)
		if k == nil || k["type"] != typ || k["exportable"] != false || k["deletion_allowed"] != false {
			t.Errorf("key %s = %v", key, k)
		}
	}
	if k := vaultRead(t, mount+"/keys/messages"); k["auto_rotate_period"] != nil && fmt.Sprint(k["auto_rotate_period"]) != "0" {
		t.Logf("auto_rotate_period %v (the operator rotates)", k["auto_rotate_period"])
	}
	role := vaultRead(t, "auth/kubernetes/role/securetext-tenant-"+tenant)
	if role == nil {
		t.Fatal("no Kubernetes auth role")
	}
	if fmt.Sprint(role["bound_service_account_names"]) != "[keystore]" ||
		fmt.Sprint(role["bound_service_account_namespaces"]) != "["+ns+"]" ||
		fmt.Sprint(role["audience"]) != testAudience ||
		fmt.Sprint(role["token_policies"]) != "[securetext-tenant-"+tenant+"]" {
		t.Errorf("role = %v", role)
	}
	policy := vaultRead(t, "sys/policies/acl/securetext-tenant-"+tenant)
	text, _ := policy["policy"].(string)
	if !strings.Contains(text, mount+"/encrypt/messages") || strings.Contains(text, "securetext/+") || strings.Contains(text, "*") {
		t.Errorf("policy:\n%s", text)
	}

	// The keystore's account logs in (a TokenRequest token, reviewed by this API server) and
	// may use only its own tenant's key.
	token := kubeAuth.Token(t, ns, "keystore", testAudience)
	login, err := vaultOps.Logical().WriteWithContext(t.Context(), "auth/kubernetes/login",
		map[string]any{"role": "securetext-tenant-" + tenant, "jwt": token})
	if err != nil {
		t.Fatalf("keystore login: %v", err)
	}
	c, err := vaultOps.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(login.Auth.ClientToken)
	if _, err := c.Logical().WriteWithContext(t.Context(), mount+"/encrypt/messages",
		map[string]any{"plaintext": "aGVsbG8="}); err != nil {
		t.Errorf("keystore cannot encrypt with its key: %v", err)
	}
	// Another namespace's account with the same name is refused by Vault.
	kubeAuth.ServiceAccount(t, "securetext-other", "keystore")
	other := kubeAuth.Token(t, "securetext-other", "keystore", testAudience)
	if _, err := vaultOps.Logical().WriteWithContext(t.Context(), "auth/kubernetes/login",
		map[string]any{"role": "securetext-tenant-" + tenant, "jwt": other}); err == nil {
		t.Error("a keystore account of another namespace logged in as this tenant")
	}
	// And a token for another audience (the pod's API token) is refused too.
	if _, err := vaultOps.Logical().WriteWithContext(t.Context(), "auth/kubernetes/login",
		map[string]any{"role": "securetext-tenant-" + tenant, "jwt": kubeAuth.Token(t, ns, "keystore", "")}); err == nil {
		t.Error("a token without the Vault audience logged in")
	}
}
