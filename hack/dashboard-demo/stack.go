package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/hack/testenv"
)

// The tenants the demo creates, from config/samples: demo (console SMS, development) runs its
// workloads here; clinic (Twilio) is left without its Secrets, so the operator reports why it
// is not ready.
const (
	workloadTenant = "demo"
	tenantName     = "Demo Clinic" // the demo sample's displayName
	textDomain     = "text.demo.example"
	senderID       = "ehr"
	stopGrace      = 10 * time.Second
)

var samples = []string{
	"config/samples/securetext_v1alpha1_retentionpolicy.yaml",
	"config/samples/securetext_v1alpha1_securetexttenant.yaml",
	"config/samples/securetext_v1alpha1_securetexttenant_demo.yaml",
}

// proc is a child process with its log file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited <-chan struct{}
	log    *os.File
}

// stack is every running part, so that stop can end them in reverse order.
type stack struct {
	dir     string
	bin     string
	procs   []*proc
	cleanup []func()
	logf    func(format string, args ...any)
}

// startProc runs bin/<binary> args with its output in dir/<name>.log, and also to extra
// (the console texts, for the load driver) when given.
func (s *stack) startProc(name, binary string, extra io.Writer, args ...string) (*proc, error) {
	log, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	var out io.Writer = log
	if extra != nil {
		out = io.MultiWriter(log, extra)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = s.dir
	// The kernel kills the child if this program dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := testenv.StartChild(cmd, nil)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: exited, log: log}
	s.procs = append(s.procs, p)
	return p, nil
}

// running fails when p has exited, naming its last log lines.
func (p *proc) running() error {
	select {
	case <-p.exited:
		b, _ := os.ReadFile(p.log.Name())
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return fmt.Errorf("%s exited; its last lines:\n%s", p.name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	default:
		return nil
	}
}

// stop ends the processes (SIGTERM, then SIGKILL after stopGrace) newest first, then runs
// the other clean-ups newest first.
func (s *stack) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		if testenv.StopChild(p.cmd, p.exited, syscall.SIGTERM, stopGrace) {
			s.logf("%s did not stop within %s: killed", p.name, stopGrace)
		}
		p.log.Close()
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// waitHTTP waits until url answers at all (any status): the process behind it listens.
func waitHTTP(ctx context.Context, url string, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		if err := p.running(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not answer at %s", p.name, url)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// controlPlane is the local cluster: kube-apiserver and etcd, Vault with Kubernetes auth,
// PostgreSQL and a client for the API server.
type controlPlane struct {
	kube       *testenv.Kube
	kubeAuth   *testenv.KubeAuth
	kubeconfig string
	vault      *testenv.Vault
	root       *vaultapi.Client
	opToken    string // file holding the operator's Vault token (its documented policy only)
	pg         *testenv.Postgres
	dsn        string
	k8s        client.Client
}

// startControlPlane starts what `make run` starts (hack/localcluster), plus PostgreSQL.
func (s *stack) startControlPlane(ctx context.Context) (*controlPlane, error) {
	cp := &controlPlane{}
	var err error
	if cp.kube, err = testenv.StartKube(); err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	s.cleanup = append(s.cleanup, func() { _ = cp.kube.Stop() })
	cp.kubeconfig = filepath.Join(s.dir, "kubeconfig")
	if err := cp.kube.WriteKubeconfig(cp.kubeconfig); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := securetextv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if cp.k8s, err = client.New(cp.kube.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}

	if cp.vault, err = testenv.StartVaultProcess(ctx); err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, func() { _ = cp.vault.Stop() })
	if cp.kubeAuth, err = testenv.ConfigureKubernetesAuthContext(ctx, cp.kube, cp.vault); err != nil {
		return nil, err
	}
	if cp.root, err = cp.vault.RootClient(); err != nil {
		return nil, err
	}
	policy, err := os.ReadFile("config/rbac/vault-operator-policy.hcl")
	if err != nil {
		return nil, err
	}
	if err := cp.root.Sys().PutPolicyWithContext(ctx, "securetext-operator", string(policy)); err != nil {
		return nil, err
	}
	tok, err := cp.root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"securetext-operator"}, NoDefaultPolicy: true, TTL: "24h",
	})
	if err != nil {
		return nil, fmt.Errorf("create the operator's Vault token: %w", err)
	}
	cp.opToken = filepath.Join(s.dir, "operator-vault-token")
	if err := os.WriteFile(cp.opToken, []byte(tok.Auth.ClientToken), 0o600); err != nil {
		return nil, err
	}

	if cp.pg, err = testenv.StartPostgresProcess(ctx); err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, func() { _ = cp.pg.Stop() })
	if cp.dsn, err = cp.pg.CreateDatabase(ctx, workloadTenant); err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "securetext-system"}}
	if err := cp.k8s.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return cp, nil
}

// startOperator runs bin/securetext-operator against the control plane as `make run` does,
// with its metrics on plain HTTP at metricsAddr.
func (s *stack) startOperator(ctx context.Context, cp *controlPlane, metricsAddr string) (*proc, error) {
	probe, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := s.startProc("operator", filepath.Join(s.bin, "securetext-operator"), nil,
		"--kubeconfig", cp.kubeconfig,
		"--leader-election-namespace", "securetext-system",
		"--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address", probe,
		"--workload-image", "securetext/workloads:dev",
		"--vault-addr", cp.vault.Addr, "--vault-auth", "token", "--vault-token-file", cp.opToken,
		// The tenants' database is the PostgreSQL on loopback.
		"--database-cidrs", "127.0.0.1/32")
	if err != nil {
		return nil, err
	}
	return p, waitHTTP(ctx, "http://"+metricsAddr+"/metrics", p)
}

// applySamples creates the sample RetentionPolicy and tenants.
func applySamples(ctx context.Context, k8s client.Client) error {
	for _, f := range samples {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := k8s.Create(ctx, &obj); err != nil {
			return fmt.Errorf("create %s: %w", f, err)
		}
	}
	return nil
}

// tenantNamespace is the namespace the operator makes for a tenant.
func tenantNamespace(tenant string) string { return securetextv1alpha1.TenantNamespacePrefix + tenant }

// provideDatabase creates the demo tenant's database Secret (the sample's
// spec.database.secretRef), as the platform engineer does once the operator has made the
// namespace.
func provideDatabase(ctx context.Context, cp *controlPlane) error {
	var tenant securetextv1alpha1.SecureTextTenant
	if err := cp.k8s.Get(ctx, client.ObjectKey{Name: workloadTenant}, &tenant); err != nil {
		return err
	}
	ref := tenant.Spec.Database.SecretRef
	key := ref.Key
	if key == "" {
		key = "url"
	}
	return poll(ctx, time.Minute, "the "+workloadTenant+" namespace", func() error {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: tenantNamespace(workloadTenant)},
			StringData: map[string]string{key: cp.dsn}}
		if err := cp.k8s.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	})
}

// waitCondition waits until the tenant's condition typ has status want.
func waitCondition(ctx context.Context, k8s client.Client, tenant, typ string, want metav1.ConditionStatus, timeout time.Duration) error {
	return poll(ctx, timeout, tenant+" "+typ+"="+string(want), func() error {
		var t securetextv1alpha1.SecureTextTenant
		if err := k8s.Get(ctx, client.ObjectKey{Name: tenant}, &t); err != nil {
			return err
		}
		c := meta.FindStatusCondition(t.Status.Conditions, typ)
		if c == nil {
			return errors.New("no condition yet")
		}
		if c.Status != want {
			return fmt.Errorf("%s=%s %s: %s", typ, c.Status, c.Reason, c.Message)
		}
		return nil
	})
}

// conditionSummary is "Ready=False (Reason): message" for the report.
func conditionSummary(ctx context.Context, k8s client.Client, tenant string) string {
	var t securetextv1alpha1.SecureTextTenant
	if err := k8s.Get(ctx, client.ObjectKey{Name: tenant}, &t); err != nil {
		return err.Error()
	}
	c := meta.FindStatusCondition(t.Status.Conditions, securetextv1alpha1.ConditionReady)
	if c == nil {
		return "no Ready condition"
	}
	return fmt.Sprintf("Ready=%s (%s): %s", c.Status, c.Reason, c.Message)
}

func poll(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	if err := testenv.Poll(ctx, timeout, 250*time.Millisecond, check); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// keystoreLogin is how the demo tenant's keystore logs in to Vault: the Kubernetes auth role
// the operator made, and a token of the ServiceAccount that role accepts, as the kubelet
// would project it into the keystore's pod.
type keystoreLogin struct {
	vault   controllers.TenantVault
	jwtFile string
}

func keystoreVaultLogin(ctx context.Context, cp *controlPlane, dir string) (keystoreLogin, error) {
	tv := controllers.TenantVault{Tenant: workloadTenant}
	role, err := cp.root.Logical().ReadWithContext(ctx, "auth/"+controllers.DefaultVaultAuthMount+"/role/"+tv.RoleName())
	if err != nil || role == nil {
		return keystoreLogin{}, fmt.Errorf("read the keystore's Vault role %s: %v", tv.RoleName(), err)
	}
	first := func(key string) string {
		if l, ok := role.Data[key].([]any); ok && len(l) > 0 {
			s, _ := l[0].(string)
			return s
		}
		return ""
	}
	tv.Namespace, tv.ServiceAccount = first("bound_service_account_namespaces"), first("bound_service_account_names")
	tv.Audience, _ = role.Data["audience"].(string)
	jwt, err := cp.kubeAuth.TokenContext(ctx, tv.Namespace, tv.ServiceAccount, tv.Audience)
	if err != nil {
		return keystoreLogin{}, err
	}
	path := filepath.Join(dir, "keystore-sa-token")
	return keystoreLogin{vault: tv, jwtFile: path}, os.WriteFile(path, []byte(jwt), 0o600)
}

// setDeploymentsAvailable plays the Deployment controller and kubelet, which the local
// control plane lacks, for the demo tenant whose keystore, gateway and viewer run here as
// processes: it reports each of its Deployments rolled out and available.
func setDeploymentsAvailable(ctx context.Context, k8s client.Client) error {
	return poll(ctx, time.Minute, "the demo tenant's Deployments", func() error {
		var list appsv1.DeploymentList
		if err := k8s.List(ctx, &list, client.InNamespace(tenantNamespace(workloadTenant))); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return errors.New("no Deployments yet")
		}
		for i := range list.Items {
			d := &list.Items[i]
			n := int32(1)
			if d.Spec.Replicas != nil {
				n = *d.Spec.Replicas
			}
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n,
				ReadyReplicas: n, AvailableReplicas: n, Conditions: []appsv1.DeploymentCondition{{
					Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
				}}}
			if err := k8s.Status().Update(ctx, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// listenAddrs are the loopback addresses of the workloads.
type listenAddrs struct {
	keystore, keystoreMetrics   string
	smtp, api, gatewayMetrics   string
	viewer, viewerMetrics       string
	operatorMetrics, prometheus string
}

func newListenAddrs() (listenAddrs, error) {
	var a listenAddrs
	for _, p := range []*string{&a.keystore, &a.keystoreMetrics, &a.smtp, &a.api, &a.gatewayMetrics,
		&a.viewer, &a.viewerMetrics, &a.operatorMetrics, &a.prometheus} {
		addr, err := freeAddr()
		if err != nil {
			return a, err
		}
		*p = addr
	}
	return a, nil
}
