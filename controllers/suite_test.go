package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/hack/testenv"
)

// The suite runs the operator exactly as it ships (controllers.Setup), as the chart's
// ServiceAccount with the chart's RBAC (rbac_test.go), against a real kube-apiserver and etcd
// (envtest) and a real Vault dev server whose Kubernetes auth method reviews tokens with that
// API server. k8s talks to the API server directly, as admin, past the operator's cache.
var (
	k8s      client.Client
	scheme   = runtime.NewScheme()
	kube     *testenv.Kube
	vault    *testenv.Vault
	vaultOps *vaultapi.Client // root, for assertions
	kubeAuth *testenv.KubeAuth
	// writes counts the operator's writes to the API server.
	writes = &writeLog{}
	// vaultWrites counts the operator's writes to Vault.
	vaultWrites = &vaultLog{}
	// testDatabase is where the suite's operator is told the tenants' databases are.
	testDatabase = controllers.DatabaseInput{Peers: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}}
	// operatorOptions are the settings the suite's operator runs with.
	operatorOptions controllers.Options
	// stopOperator stops the running operator (restartOperator starts a new one).
	stopOperator func()
)

const (
	operatorPolicyFile = "../config/rbac/vault-operator-policy.hcl"
	testAudience       = "vault"
	testImage          = "securetext/workloads:test"
	testDefaultPolicy  = "suite-default"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := securetextv1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	ctx := context.Background()

	var err error
	if kube, err = testenv.StartKube(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: envtest:", err)
		return 1
	}
	defer kube.Stop()
	if k8s, err = client.New(kube.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: client:", err)
		return 1
	}
	if err := installChartRBAC(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the chart's RBAC:", err)
		return 1
	}
	if vault, err = testenv.StartVaultProcess(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: vault:", err)
		return 1
	}
	defer vault.Stop()
	if kubeAuth, err = testenv.ConfigureKubernetesAuthContext(ctx, kube, vault); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: vault kubernetes auth:", err)
		return 1
	}
	provisioner, err := operatorProvisioner(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: operator's Vault token:", err)
		return 1
	}
	operatorOptions = controllers.Options{
		ClusterInput: controllers.ClusterInput{WorkloadImage: testImage, ClusterCIDRs: []string{"10.0.0.0/8"},
			Database: testDatabase},
		Vault:         provisioner,
		VaultAudience: testAudience,
		// Tenants that name no policy use this one, which exists only while a test makes it.
		DefaultRetentionPolicy: testDefaultPolicy,
		// No pods run here: a test that serves a tenant's gateway status registers its address.
		SweepStatusAddress: sweepStatusAddress,
		SweepStatusTimeout: 2 * time.Second,
	}
	if err := restartOperator(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: operator:", err)
		return 1
	}
	defer func() { stopOperator() }()
	return reportRBAC(os.Stderr, m.Run())
}

// operatorProvisioner logs the operator in to Vault with a token that has only the operator's
// documented policy, so every test also proves that the policy is enough.
func operatorProvisioner(ctx context.Context) (*controllers.VaultProvisioner, error) {
	root, err := vault.RootClient()
	if err != nil {
		return nil, err
	}
	vaultOps = root
	policy, err := os.ReadFile(operatorPolicyFile)
	if err != nil {
		return nil, err
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "securetext-operator", string(policy)); err != nil {
		return nil, err
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"securetext-operator"}, NoDefaultPolicy: true, TTL: "4h",
	})
	if err != nil {
		return nil, err
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = vault.Addr
	cfg.MaxRetries = 0
	vaultWrites.next = cfg.HttpClient.Transport
	cfg.HttpClient.Transport = vaultWrites
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(tok.Auth.ClientToken)
	c.ClearNamespace()
	return &controllers.VaultProvisioner{Client: c, Timeout: 2 * time.Second}, nil
}

// restartOperator stops the running operator, if any, and starts a new one: a new manager
// with a cold cache, as after a pod restart. It runs as the chart's ServiceAccount
// (operatorConfig), so every test also proves that the chart's RBAC is enough.
func restartOperator() error {
	if stopOperator != nil {
		stopOperator()
	}
	mgr, err := ctrl.NewManager(operatorConfig(), ctrl.Options{
		Scheme:     scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      controllers.CacheOptions(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		NewClient: func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.New(cfg, opts)
			if err != nil {
				return nil, err
			}
			return writes.wrap(c), nil
		},
	})
	if err != nil {
		return err
	}
	if err := controllers.Setup(mgr, operatorOptions); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopOperator = func() { cancel(); <-done }
	return nil
}

// writeLog records every write the operator sends to the API server, "VERB Kind ns/name".
// Applies are recorded before they are sent.
type writeLog struct {
	mu  sync.Mutex
	all []string
}

// add records a write; a refused one (a conflict, AlreadyExists) is marked " (refused)".
func (w *writeLog) add(verb string, obj client.Object, c client.Client, err error) {
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	if gvk, err := c.GroupVersionKindFor(obj); err == nil {
		kind = gvk.Kind
	}
	w.mu.Lock()
	entry := fmt.Sprintf("%s %s %s/%s", verb, kind, obj.GetNamespace(), obj.GetName())
	if err != nil {
		entry += " (refused)"
	}
	w.all = append(w.all, entry)
	w.mu.Unlock()
}

// since returns the writes recorded after mark (a len of an earlier since call or 0).
func (w *writeLog) since(mark int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.all[mark:]...)
}

func (w *writeLog) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.all)
}

func (w *writeLog) wrap(c client.Client) client.Client {
	return interceptor.NewClient(withoutWatch{c}, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			err := c.Create(ctx, obj, opts...)
			w.add("create", obj, c, err)
			return err
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			err := c.Update(ctx, obj, opts...)
			w.add("update", obj, c, err)
			return err
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			err := c.Patch(ctx, obj, patch, opts...)
			w.add("patch", obj, c, err)
			return err
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			err := c.Delete(ctx, obj, opts...)
			w.add("delete", obj, c, err)
			return err
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			w.mu.Lock()
			w.all = append(w.all, fmt.Sprintf("apply %v", applyTarget(obj)))
			w.mu.Unlock()
			return c.Apply(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			err := c.SubResource(sub).Update(ctx, obj, opts...)
			w.add("update/"+sub, obj, c, err)
			return err
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			err := c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			w.add("patch/"+sub, obj, c, err)
			return err
		},
	})
}

// withoutWatch lets the interceptor wrap a client without Watch (the manager's client).
type withoutWatch struct{ client.Client }

func (withoutWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not supported")
}

// applyTarget names the object of an apply configuration, "Kind ns/name".
func applyTarget(obj runtime.ApplyConfiguration) string {
	var o struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	b, err := json.Marshal(obj)
	if err != nil || json.Unmarshal(b, &o) != nil {
		return fmt.Sprintf("%T", obj)
	}
	return fmt.Sprintf("%s %s/%s", o.Kind, o.Metadata.Namespace, o.Metadata.Name)
}

// vaultLog records the operator's Vault requests: writes as "METHOD /v1/path" in all, every
// request's path in reads.
type vaultLog struct {
	next  http.RoundTripper
	mu    sync.Mutex
	all   []string
	reads []string
}

func (v *vaultLog) RoundTrip(req *http.Request) (*http.Response, error) {
	v.mu.Lock()
	if req.Method != http.MethodGet {
		v.all = append(v.all, req.Method+" "+req.URL.Path)
	}
	v.reads = append(v.reads, req.URL.Path)
	v.mu.Unlock()
	return v.next.RoundTrip(req)
}

// readsSince returns the paths of every request after mark (a len of an earlier readMark).
func (v *vaultLog) readsSince(mark int) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.reads[mark:]...)
}

func (v *vaultLog) readMark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.reads)
}

func (v *vaultLog) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.all)
}

func (v *vaultLog) since(mark int) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.all[mark:]...)
}

// eventually waits for the operator (testenv.Eventually).
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, what, check)
}
