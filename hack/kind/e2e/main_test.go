//go:build e2e

// Package e2e is SecureText on a real cluster: a three-node kind cluster from the node image
// that hack/kind/image.sh builds offline, kube-router enforcing NetworkPolicy, Traefik as the
// ingress controller, the project's Vault dev server with Kubernetes auth, a PostgreSQL per
// tenant, and the operator installed with its Helm chart as the README tells users. TestMain
// builds all that and two tenants; the tests then drive the product as its users do. Run it
// with `make test-e2e`, which builds the images first; E2E_KEEP=1 keeps the cluster afterwards
// (bin/kind/e2e/kubeconfig), and a failed run leaves pod logs and events in testoutput/e2e/.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	vaultapi "github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/tenantpki"
)

const (
	clusterName = "securetext-e2e"
	release     = "securetext"
	operatorNS  = "securetext-system"
	operator    = "securetext-operator"

	vaultImage    = "securetext/e2e-vault:dev"
	traefikImage  = "securetext/e2e-traefik:v3.7.13"
	postgresImage = "securetext/e2e-postgres:15"
	probeImage    = "securetext/kind-probe:busybox"
	// The chart's default images: make images tags them with the chart's appVersion too.
	operatorImage  = "securetext/operator:0.1.0"
	workloadsImage = "securetext/workloads:0.1.0"

	// httpsPort is where kind publishes Traefik's NodePort 30443 on this machine, so that the
	// links' https://view.<tenant>.test/ URLs work unchanged in a browser that reaches loopback.
	httpsPort     = "443"
	vaultNodePort = "30820"
	// readyTimeout bounds each wait for something the cluster does on its own.
	readyTimeout = 4 * time.Minute
)

//go:embed testdata
var testdata embed.FS

// tenant is one of the suite's tenants, with what its users hold: the sender's credentials.
type tenant struct {
	Name, DisplayName, DeletionPolicy string
	Namespace                         string
	SMTPPassword, APIKey              string
	cert                              *x509.Certificate // of its public hosts
	// applied and ready are when the suite applied the tenant and saw it Ready.
	applied, ready time.Time
}

func (t *tenant) viewerHost() string { return "view." + t.Name + ".test" }
func (t *tenant) apiHost() string    { return "api." + t.Name + ".test" }
func (t *tenant) textDomain() string { return "text." + t.Name + ".test" }

// suite is what TestMain built, for the tests.
type suite struct {
	root, dir   string
	kubeconfig  string
	kubectl     string
	helm        string
	k8s         client.Client
	clientset   kubernetes.Interface
	ca          *tenantpki.CA // the suite's CA: Vault's and the tenants' public certificates
	vault       *vaultapi.Client
	vaultCAFile string
	nodeIP      string // the control-plane node's address on kind's network
	a, b        *tenant
	timings     []timing
	start       time.Time
}

type timing struct {
	what string
	at   time.Duration
}

var s *suite

func TestMain(m *testing.M) {
	// controller-runtime's client logs nothing the suite needs.
	log.SetLogger(logr.Discard())
	os.Exit(run(m))
}

func run(m *testing.M) int {
	s = &suite{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	err := s.setUp(ctx)
	code := 1
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: setting up the cluster failed: %v\n", err)
	} else {
		s.printTimings()
		s.reportMemory(ctx)
		code = m.Run()
	}
	if code != 0 && s.k8s != nil {
		s.collect(context.Background())
	}
	if os.Getenv("E2E_KEEP") == "1" {
		fmt.Fprintf(os.Stderr, "e2e: kept cluster %s (E2E_KEEP=1): KUBECONFIG=%s %s get pods -A\n", clusterName, s.kubeconfig, s.kubectl)
	} else if s.root != "" {
		if out, err := exec.Command(filepath.Join(s.root, "hack/kind/cluster.sh"), "down", clusterName).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: deleting the cluster: %v\n%s", err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: suite took %s\n", time.Since(s.start).Round(time.Second))
	return code
}

func (s *suite) mark(what string) {
	d := time.Since(s.start)
	s.timings = append(s.timings, timing{what, d})
	fmt.Fprintf(os.Stderr, "e2e: %s (%s)\n", what, d.Round(time.Second))
}

func (s *suite) printTimings() {
	fmt.Fprintln(os.Stderr, "\ne2e: set-up")
	for _, t := range s.timings {
		fmt.Fprintf(os.Stderr, "  %-52s %6.0fs\n", t.what, t.at.Seconds())
	}
	for _, t := range []*tenant{s.a, s.b} {
		fmt.Fprintf(os.Stderr, "  tenant %s: kubectl apply to Ready                    %6.0fs\n", t.Name, t.ready.Sub(t.applied).Seconds())
	}
	fmt.Fprintln(os.Stderr)
}

func (s *suite) setUp(ctx context.Context) error {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return fmt.Errorf("find the repository: %w", err)
	}
	s.root = strings.TrimSpace(string(root))
	bin := os.Getenv("SECURETEXT_BIN")
	if bin == "" {
		bin = filepath.Join(s.root, "bin")
	}
	s.dir = filepath.Join(bin, "kind", "e2e")
	s.kubeconfig = filepath.Join(s.dir, "kubeconfig")
	s.kubectl = filepath.Join(s.dir, "kubectl")
	// helm is in the machine's kind cache, where hack/kind/image.sh builds it (hack/lib.sh says
	// where: $SECURETEXT_KIND_CACHE, else the user cache directory's securetext/kind).
	cache := os.Getenv("SECURETEXT_KIND_CACHE")
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("find the kind cache: %w", err)
		}
		cache = filepath.Join(dir, "securetext", "kind")
	}
	s.helm = filepath.Join(cache, "bin", "helm")
	if _, err := os.Stat(s.helm); err != nil {
		return fmt.Errorf("no %s: run make kind-e2e-images (make test-e2e does)", s.helm)
	}

	up := exec.CommandContext(ctx, filepath.Join(s.root, "hack/kind/cluster.sh"), "up", clusterName, s.dir,
		operatorImage, workloadsImage, vaultImage, traefikImage, postgresImage, probeImage)
	up.Env = append(os.Environ(), "KIND_HTTPS_PORT="+httpsPort)
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		return fmt.Errorf("hack/kind/cluster.sh up: %w", err)
	}
	s.mark("cluster up, images loaded, kube-router and CoreDNS ready")
	if err := s.connect(); err != nil {
		return err
	}
	if err := s.proveEnforcement(ctx); err != nil {
		return err
	}
	s.mark("NetworkPolicy enforcement proven (default deny blocks a probe)")

	if s.ca, err = tenantpki.NewCA("e2e", time.Now()); err != nil {
		return err
	}
	if err := s.apply(ctx, "traefik.yaml", map[string]any{"TraefikImage": traefikImage}); err != nil {
		return err
	}
	if err := s.installVault(ctx); err != nil {
		return err
	}
	if err := s.rollout(ctx, "traefik", "deployment/traefik"); err != nil {
		return err
	}
	s.mark("Vault and Traefik running")
	if err := s.installChart(ctx); err != nil {
		return err
	}
	s.mark("chart installed, operator available")

	s.a = &tenant{Name: "alpha", DisplayName: "Alpha Family Clinic", DeletionPolicy: "Retain"}
	s.b = &tenant{Name: "bravo", DisplayName: "Bravo Pediatrics", DeletionPolicy: "Shred"}
	for _, t := range []*tenant{s.a, s.b} {
		if err := s.createTenant(ctx, t); err != nil {
			return fmt.Errorf("tenant %s: %w", t.Name, err)
		}
	}
	for _, t := range []*tenant{s.a, s.b} {
		if err := s.waitReady(ctx, t); err != nil {
			return fmt.Errorf("tenant %s: %w", t.Name, err)
		}
	}
	s.mark("both tenants Ready")
	return nil
}

func (s *suite) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.kubeconfig)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.kubeconfig, err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := securetextv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if s.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	s.clientset = kubernetes.NewForConfigOrDie(cfg)
	out, err := exec.Command("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", clusterName+"-control-plane").Output()
	if err != nil {
		return fmt.Errorf("the control-plane node's address: %w", err)
	}
	s.nodeIP = strings.TrimSpace(string(out))
	if net.ParseIP(s.nodeIP) == nil {
		return fmt.Errorf("the control-plane node's address %q is not an IP address", s.nodeIP)
	}
	return nil
}

// run runs a command with the cluster's kubeconfig and returns its standard output; an error
// carries its standard error.
func (s *suite) run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (s *suite) k(ctx context.Context, args ...string) (string, error) {
	return s.run(ctx, nil, s.kubectl, args...)
}

// render fills in a template of testdata.
func render(name string, data any) ([]byte, error) {
	tmpl, err := template.ParseFS(testdata, "testdata/"+name)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// apply applies a template of testdata with kubectl, server-side.
func (s *suite) apply(ctx context.Context, name string, data any) error {
	manifest, err := render(name, data)
	if err != nil {
		return err
	}
	_, err = s.run(ctx, manifest, s.kubectl, "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	return err
}

func (s *suite) rollout(ctx context.Context, ns, what string) error {
	_, err := s.k(ctx, "-n", ns, "rollout", "status", what, "--timeout="+readyTimeout.String())
	return err
}

// eventually retries f every second until it succeeds or timeout passes, returning its last error.
func eventually(ctx context.Context, timeout time.Duration, f func() error) error {
	return testenv.Poll(ctx, timeout, time.Second, f)
}

// proveEnforcement shows that the CNI enforces NetworkPolicy before any SecureText check relies
// on it: a probe reaches a server pod until a default-deny policy of the server's namespace
// cuts it off.
func (s *suite) proveEnforcement(ctx context.Context) error {
	const ns = "e2e-enforcement"
	if _, err := s.k(ctx, "create", "namespace", ns); err != nil {
		return err
	}
	if _, err := s.k(ctx, "-n", ns, "run", "server", "--image="+probeImage, "--image-pull-policy=Never",
		"--labels=app=server", "--port=8080", "--", "httpd", "-f", "-p", "8080", "-h", "/www"); err != nil {
		return err
	}
	if err := s.apply(ctx, "probe.yaml", probePod(ns, "client", nil)); err != nil {
		return err
	}
	if _, err := s.k(ctx, "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout="+readyTimeout.String()); err != nil {
		return err
	}
	ip, err := s.k(ctx, "-n", ns, "get", "pod", "server", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return err
	}
	if err := s.expectReach(ctx, ns, "client", ip, "8080", true); err != nil {
		return err
	}
	deny := []byte(`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"` + ns + `"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`)
	if _, err := s.run(ctx, deny, s.kubectl, "apply", "-f", "-"); err != nil {
		return err
	}
	if err := s.expectReach(ctx, ns, "client", ip, "8080", false); err != nil {
		return fmt.Errorf("the CNI does not enforce NetworkPolicy: %w", err)
	}
	_, err = s.k(ctx, "delete", "namespace", ns, "--wait=false")
	return err
}

func probePod(ns, name string, labels map[string]string) map[string]any {
	return map[string]any{"Namespace": ns, "Name": name, "Labels": labels, "ProbeImage": probeImage}
}

// reaches says whether pod ns/pod opens a TCP connection to host:port within 3 seconds.
func (s *suite) reaches(ctx context.Context, ns, pod, host, port string) bool {
	_, err := s.k(ctx, "-n", ns, "exec", pod, "--", "nc", "-w", "3", host, port)
	return err == nil
}

// expectReach waits (policies take a moment to reach every node) until pod's connection to
// host:port is open or blocked as wanted.
func (s *suite) expectReach(ctx context.Context, ns, pod, host, port string, open bool) error {
	return eventually(ctx, time.Minute, func() error {
		if got := s.reaches(ctx, ns, pod, host, port); got != open {
			return fmt.Errorf("%s/%s -> %s:%s open=%v, want %v", ns, pod, host, port, got, open)
		}
		return nil
	})
}

// installVault runs Vault with a certificate of the suite's CA, then enables and configures its
// Kubernetes auth method for the cluster, from the test through the NodePort.
func (s *suite) installVault(ctx context.Context) error {
	cert, err := s.ca.IssueServer([]string{"vault.vault.svc", "vault.vault.svc.cluster.local"}, nil, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	key, err := tenantpki.KeyPEM(cert)
	if err != nil {
		return err
	}
	// Vault refuses custom token IDs with its own prefixes (hvs.).
	rootToken := rand.Text()
	if err := s.apply(ctx, "vault.yaml", map[string]any{
		"VaultImage": vaultImage, "VaultCert": string(tenantpki.CertPEM(cert)), "VaultKey": string(key), "RootToken": rootToken,
	}); err != nil {
		return err
	}
	if err := s.rollout(ctx, "vault", "deployment/vault"); err != nil {
		return err
	}
	s.vaultCAFile = filepath.Join(s.dir, "ca.crt")
	if err := os.WriteFile(s.vaultCAFile, s.ca.CertPEM(), 0o600); err != nil {
		return err
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = "https://" + net.JoinHostPort(s.nodeIP, vaultNodePort)
	cfg.HttpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.ca.CertPool(), ServerName: "vault.vault.svc", MinVersion: tls.VersionTLS12},
	}}
	if s.vault, err = vaultapi.NewClient(cfg); err != nil {
		return err
	}
	s.vault.SetToken(rootToken)
	if err := eventually(ctx, time.Minute, func() error {
		_, err := s.vault.Sys().HealthWithContext(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("Vault through NodePort %s: %w", vaultNodePort, err)
	}
	if err := s.vault.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		return fmt.Errorf("enable kubernetes auth: %w", err)
	}
	// Inside the cluster Vault reviews tokens with its own ServiceAccount's token and CA.
	if _, err := s.vault.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": "https://kubernetes.default.svc",
	}); err != nil {
		return fmt.Errorf("configure kubernetes auth: %w", err)
	}
	return nil
}

// installChart installs the operator as the README and NOTES.txt tell users: the chart with
// Vault on and its CA in a Secret, then the operator's Vault policy (from the chart's ConfigMap)
// and role.
func (s *suite) installChart(ctx context.Context) error {
	if _, err := s.k(ctx, "create", "namespace", operatorNS); err != nil {
		return err
	}
	if _, err := s.k(ctx, "-n", operatorNS, "create", "secret", "generic", "vault-ca", "--from-file=ca.crt="+s.vaultCAFile); err != nil {
		return err
	}
	values, err := render("values.yaml", nil)
	if err != nil {
		return err
	}
	valuesFile := filepath.Join(s.dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		return err
	}
	if _, err := s.run(ctx, nil, s.helm, "install", release, filepath.Join(s.root, "charts/securetext-operator"),
		"-n", operatorNS, "-f", valuesFile,
		"--set", "vault.enabled=true", "--set", "vault.address=https://vault.vault.svc:8200", "--set", "vault.caSecret=vault-ca"); err != nil {
		return err
	}
	policy, err := s.k(ctx, "-n", operatorNS, "get", "configmap", operator+"-vault-policy", "-o", "jsonpath={.data.policy\\.hcl}")
	if err != nil {
		return err
	}
	if err := s.vault.Sys().PutPolicyWithContext(ctx, "securetext-operator", policy); err != nil {
		return fmt.Errorf("write the operator's policy: %w", err)
	}
	if _, err := s.vault.Logical().WriteWithContext(ctx, "auth/kubernetes/role/securetext-operator", map[string]any{
		"bound_service_account_names":      operator,
		"bound_service_account_namespaces": operatorNS,
		"policies":                         "securetext-operator",
		"audience":                         "vault",
		"ttl":                              "1h",
	}); err != nil {
		return fmt.Errorf("write the operator's role: %w", err)
	}
	// Prometheus' stand-in, bound to the metrics-reader ClusterRole as the chart README says.
	if _, err := s.k(ctx, "-n", operatorNS, "create", "serviceaccount", metricsReader); err != nil {
		return err
	}
	if _, err := s.k(ctx, "create", "clusterrolebinding", metricsReader, "--clusterrole="+operator+"-metrics-reader",
		"--serviceaccount="+operatorNS+":"+metricsReader); err != nil {
		return err
	}
	return s.rollout(ctx, operatorNS, "deployment/"+operator)
}

// createTenant applies a tenant and, once the operator has made its namespace, what its admin
// provides there: the public certificate, the database and a sender.
func (s *suite) createTenant(ctx context.Context, t *tenant) error {
	manifest, err := render("tenant.yaml", t)
	if err != nil {
		return err
	}
	t.applied = time.Now()
	if _, err := s.run(ctx, manifest, s.kubectl, "apply", "-f", "-"); err != nil {
		return err
	}
	var stt securetextv1alpha1.SecureTextTenant
	if err := eventually(ctx, readyTimeout, func() error {
		if err := s.k8s.Get(ctx, client.ObjectKey{Name: t.Name}, &stt); err != nil {
			return err
		}
		if stt.Status.Namespace == "" {
			return errors.New("no status.namespace yet")
		}
		return s.k8s.Get(ctx, client.ObjectKey{Name: stt.Status.Namespace}, &corev1.Namespace{})
	}); err != nil {
		return err
	}
	t.Namespace = stt.Status.Namespace
	cert, err := s.ca.IssueServer([]string{t.viewerHost(), t.apiHost(), t.textDomain()}, nil, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	key, err := tenantpki.KeyPEM(cert)
	if err != nil {
		return err
	}
	t.cert = cert.Leaf
	password := rand.Text()
	if err := s.apply(ctx, "tenant-secrets.yaml", map[string]any{
		"Name": t.Name, "Namespace": t.Namespace, "PostgresImage": postgresImage,
		"PublicCert": string(tenantpki.CertPEM(cert)), "PublicKey": string(key),
		"DatabasePassword": password,
		"DatabaseURL":      "postgres://securetext:" + password + "@postgres." + t.Namespace + ".svc:5432/securetext?sslmode=disable",
	}); err != nil {
		return err
	}
	return s.addSender(ctx, t)
}

// addSender gives the tenant a sender, as an admin does with `securetext sender`: its entry
// (hashes only) goes into the senders Secret, the SMTP password and API key to the test.
func (s *suite) addSender(ctx context.Context, t *tenant) error {
	sender, smtpPassword, apiKey, err := gateway.NewCredentials(ctx, "ehr", "ehr@"+t.Name+".test")
	if err != nil {
		return err
	}
	t.SMTPPassword, t.APIKey = smtpPassword, apiKey
	file, err := yaml.Marshal(gateway.SendersFile{Senders: []gateway.Sender{sender}})
	if err != nil {
		return err
	}
	return eventually(ctx, readyTimeout, func() error {
		var sec corev1.Secret
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: "senders"}, &sec); err != nil {
			return err
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data["senders.yaml"] = file
		return s.k8s.Update(ctx, &sec)
	})
}

// waitReady waits for Ready=True and records when it was seen.
func (s *suite) waitReady(ctx context.Context, t *tenant) error {
	err := eventually(ctx, 2*readyTimeout, func() error {
		var stt securetextv1alpha1.SecureTextTenant
		if err := s.k8s.Get(ctx, client.ObjectKey{Name: t.Name}, &stt); err != nil {
			return err
		}
		for _, c := range stt.Status.Conditions {
			if c.Type == securetextv1alpha1.ConditionReady {
				if c.Status == metav1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		return errors.New("no Ready condition yet")
	})
	t.ready = time.Now()
	return err
}

// collect writes what a failed run needs to be understood to testoutput/e2e/: every pod's
// logs (the previous container's too), the events and the objects of the namespaces involved.
// An earlier run's files are removed first, so that every file there is of this run.
func (s *suite) collect(ctx context.Context) {
	dir := filepath.Join(s.root, "testoutput", "e2e")
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return
	}
	write := func(name, content string) {
		_ = os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	}
	out, _ := s.k(ctx, "get", "pods", "-A", "-o", "wide")
	write("pods.txt", out)
	out, _ = s.k(ctx, "get", "events", "-A", "--sort-by=.lastTimestamp")
	write("events.txt", out)
	out, _ = s.k(ctx, "get", "securetexttenants", "-o", "yaml")
	write("securetexttenants.yaml", out)
	var pods corev1.PodList
	if err := s.k8s.List(ctx, &pods); err != nil {
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			for _, previous := range []bool{false, true} {
				logs, err := s.clientset.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, Previous: previous}).DoRaw(ctx)
				if err != nil {
					continue
				}
				suffix := ""
				if previous {
					suffix = ".previous"
				}
				write(fmt.Sprintf("%s_%s_%s%s.log", p.Namespace, p.Name, c.Name, suffix), string(logs))
			}
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: pod logs, events and tenants in %s\n", dir)
}

// reportMemory prints the idle memory of each tenant's containers, the cgroup working set as
// the kubelet's summary API reports it, beside the container's memory request, sorted by pod.
// Pods of a rollout that has not finished (terminating, or not yet ready) are left out: the
// summary reports them with a working set of zero or of a process still starting.
func (s *suite) reportMemory(ctx context.Context) {
	type summary struct {
		Pods []struct {
			PodRef struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"podRef"`
			Containers []struct {
				Name   string `json:"name"`
				Memory struct {
					WorkingSetBytes uint64 `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"containers"`
		} `json:"pods"`
	}
	var nodes corev1.NodeList
	if err := s.k8s.List(ctx, &nodes); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: memory: %v\n", err)
		return
	}
	var lines []string
	for _, n := range nodes.Items {
		raw, err := s.clientset.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", n.Name, "proxy/stats/summary").DoRaw(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: memory of node %s: %v\n", n.Name, err)
			continue
		}
		var sum summary
		if err := json.Unmarshal(raw, &sum); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: memory of node %s: %v\n", n.Name, err)
			continue
		}
		for _, p := range sum.Pods {
			if !strings.HasPrefix(p.PodRef.Namespace, "securetext-") {
				continue
			}
			var pod corev1.Pod
			if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: p.PodRef.Namespace, Name: p.PodRef.Name}, &pod); err != nil ||
				pod.DeletionTimestamp != nil || !podReady(&pod) {
				continue
			}
			for _, c := range p.Containers {
				request := "-"
				for _, pc := range pod.Spec.Containers {
					if pc.Name == c.Name {
						if q, ok := pc.Resources.Requests[corev1.ResourceMemory]; ok {
							request = q.String()
						}
					}
				}
				lines = append(lines, fmt.Sprintf("  %-18s %-46s %6.1f %8s\n", p.PodRef.Namespace, p.PodRef.Name+"/"+c.Name,
					float64(c.Memory.WorkingSetBytes)/(1<<20), request))
			}
		}
	}
	slices.Sort(lines)
	fmt.Fprintf(os.Stderr, "e2e: idle memory of the tenants' containers (working set, kubelet summary API)\n")
	fmt.Fprintf(os.Stderr, "  %-18s %-46s %6s %8s\n%s", "NAMESPACE", "POD", "MiB", "REQUEST", strings.Join(lines, ""))
}

// podReady reports whether the pod's Ready condition is True.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
