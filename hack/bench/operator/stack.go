package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	vaultapi "github.com/hashicorp/vault/api"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/hack/testenv"
)

const (
	// operatorPolicy is the name the operator's Vault policy is installed under (see the
	// policy file's header).
	operatorPolicy     = "securetext-operator"
	operatorPolicyFile = "config/rbac/vault-operator-policy.hcl"
	controllerName     = "securetexttenant"
	workloadImage      = "securetext/workloads:bench"
	managerStopTimeout = time.Minute
)

// stack is the operator's world on this machine: envtest's kube-apiserver and etcd, a Vault dev
// server set up as a cluster admin would, and the operator's manager in this process.
type stack struct {
	kube  *testenv.Kube
	vault *testenv.Vault
	// root is a Vault client with the root token, for setting up and checking; the operator
	// never sees it.
	root *vaultapi.Client
	// operatorToken is the operator's Vault token: policy securetext-operator and nothing else.
	operatorToken string
	// k8s reads and writes past the operator's cache, with its own rest.Config; requests
	// counts its requests by method, to tell them from the operator's.
	k8s      client.Client
	requests *requestCounter
	// qps and burst are the manager's client-side rate limits.
	qps   float32
	burst int

	cancel   context.CancelFunc
	done     chan error // mgr.Start's result
	logFile  *os.File
	stopOnce sync.Once
}

// startStack starts everything and returns once the operator's controller has synced its
// watches and started its workers, so the clock measures reconciling, not the start. On error
// it stops whatever it had started.
func startStack(ctx context.Context, o options, logPath string) (s *stack, err error) {
	s = &stack{}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	// The operator logs as in production (JSON, info) into a file; a watcher on the log tells
	// when the controller's workers start.
	if s.logFile, err = os.Create(logPath); err != nil {
		return s, err
	}
	started := make(chan struct{})
	var once sync.Once
	ctrl.SetLogger(logr.New(&startWatch{
		LogSink: zap.New(zap.WriteTo(s.logFile)).GetSink(),
		fire:    func() { once.Do(func() { close(started) }) },
	}))
	// How long requests wait in the manager's client-side rate limiter, to show whether it
	// (rather than the operator's work) sets the pace.
	metrics.RegisterRESTClientMetrics(metrics.MetricRateLimiterLatency)

	logf("starting kube-apiserver and etcd (envtest)")
	if s.kube, err = testenv.StartKube(); err != nil {
		return s, err
	}
	logf("starting Vault (bin/vault-dev)")
	if s.vault, err = testenv.StartVaultProcess(ctx); err != nil {
		return s, err
	}
	if s.root, err = s.vault.RootClient(); err != nil {
		return s, err
	}
	if s.operatorToken, err = setUpVault(ctx, s.root, s.kube.Config); err != nil {
		return s, err
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return s, err
	}
	if err := securetextv1alpha1.AddToScheme(scheme); err != nil {
		return s, err
	}

	// The bench's own client has no client-side rate limiter (it sends N creates and a List
	// every 250 ms), so that every wait the limiter metric records is the operator's.
	s.requests = &requestCounter{}
	benchCfg := rest.CopyConfig(s.kube.Config)
	benchCfg.QPS, benchCfg.Burst = -1, 0
	benchCfg.WrapTransport = s.requests.wrap
	if s.k8s, err = client.New(benchCfg, client.Options{Scheme: scheme}); err != nil {
		return s, fmt.Errorf("bench client: %w", err)
	}

	mgrCfg := rest.CopyConfig(s.kube.Config)
	if o.qps != 0 {
		mgrCfg.QPS = float32(o.qps)
	}
	if o.burst != 0 {
		mgrCfg.Burst = o.burst
	}
	s.qps, s.burst = mgrCfg.QPS, mgrCfg.Burst
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   controllers.CacheOptions(),
	})
	if err != nil {
		return s, fmt.Errorf("manager: %w", err)
	}
	vcfg := vaultapi.DefaultConfig() // as operator_flags.go builds the operator's client
	vcfg.Address = s.vault.Addr
	vclient, err := vaultapi.NewClient(vcfg)
	if err != nil {
		return s, fmt.Errorf("the operator's Vault client: %w", err)
	}
	vclient.SetToken(s.operatorToken)
	vclient.ClearNamespace()
	if err := controllers.Setup(mgr, controllers.Options{
		ClusterInput:            controllers.ClusterInput{WorkloadImage: workloadImage},
		Vault:                   &controllers.VaultProvisioner{Client: vclient},
		MaxConcurrentReconciles: o.workers,
	}); err != nil {
		return s, fmt.Errorf("controllers.Setup: %w", err)
	}
	var mgrCtx context.Context
	mgrCtx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan error, 1)
	go func() { s.done <- mgr.Start(mgrCtx) }()

	logf("starting the operator (%d workers)", o.workers)
	select {
	case <-started:
		return s, nil
	case err := <-s.done:
		s.done <- err // for Stop
		return s, fmt.Errorf("the operator stopped before its workers started: %v", err)
	case <-time.After(2 * time.Minute):
		return s, errors.New("the operator's controller did not start its workers within 2 minutes")
	case <-ctx.Done():
		return s, ctx.Err()
	}
}

// Stop stops the manager, then Vault, then the API server and etcd. Stopping twice is fine.
func (s *stack) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
			select {
			case err := <-s.done:
				if err != nil {
					logf("the operator stopped with: %v", err)
				}
			case <-time.After(managerStopTimeout):
				logf("the operator had not stopped %s after its context ended", managerStopTimeout)
			}
		}
		if s.vault != nil {
			if err := s.vault.Stop(); err != nil {
				logf("%v", err)
			}
		}
		if s.kube != nil {
			if err := s.kube.Stop(); err != nil {
				logf("stop envtest: %v", err)
			}
		}
		if s.logFile != nil {
			_ = s.logFile.Close()
		}
	})
}

// managerErr reports whether the manager has stopped, without waiting.
func (s *stack) managerErr() (bool, error) {
	select {
	case err := <-s.done:
		s.done <- err // for Stop
		return true, err
	default:
		return false, nil
	}
}

// setUpVault does what a cluster admin does before installing the operator, as the controller
// tests do (vault_test.go: startVaultFixture, token): install the operator's policy, enable and
// configure Kubernetes auth at "kubernetes", and issue the operator a token that holds that
// policy only (no default policy). The token reviewer JWT is left out: nothing logs in with a
// ServiceAccount token here.
func setUpVault(ctx context.Context, root *vaultapi.Client, kube *rest.Config) (string, error) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	policy, err := os.ReadFile(filepath.Join(repo, operatorPolicyFile))
	if err != nil {
		return "", err
	}
	if err := root.Sys().PutPolicyWithContext(ctx, operatorPolicy, string(policy)); err != nil {
		return "", fmt.Errorf("write Vault policy %s: %w", operatorPolicy, err)
	}
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, controllers.DefaultVaultAuthMount,
		&vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		return "", fmt.Errorf("enable kubernetes auth: %w", err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/"+controllers.DefaultVaultAuthMount+"/config", map[string]any{
		"kubernetes_host":    kube.Host,
		"kubernetes_ca_cert": string(kube.CAData),
	}); err != nil {
		return "", fmt.Errorf("configure kubernetes auth: %w", err)
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{operatorPolicy}, NoDefaultPolicy: true, TTL: "2h",
	})
	if err != nil {
		return "", fmt.Errorf("create the operator's Vault token: %w", err)
	}
	return tok.Auth.ClientToken, nil
}

// startWatch is a log sink that passes everything on and calls fire when the tenant
// controller logs "Starting workers": controller-runtime logs it once the controller's
// watches have synced.
type startWatch struct {
	logr.LogSink
	kv   []any // the values of WithValues, where the controller's name is
	fire func()
}

func (s *startWatch) Init(info logr.RuntimeInfo) {
	info.CallDepth++ // this sink is one more frame between the caller and zap
	s.LogSink.Init(info)
}

func (s *startWatch) Info(level int, msg string, kv ...any) {
	if msg == "Starting workers" && s.controller() == controllerName {
		s.fire()
	}
	s.LogSink.Info(level, msg, kv...)
}

func (s *startWatch) WithValues(kv ...any) logr.LogSink {
	return &startWatch{LogSink: s.LogSink.WithValues(kv...), kv: append(slices.Clone(s.kv), kv...), fire: s.fire}
}

func (s *startWatch) WithName(name string) logr.LogSink {
	return &startWatch{LogSink: s.LogSink.WithName(name), kv: s.kv, fire: s.fire}
}

func (s *startWatch) controller() string {
	for i := 0; i+1 < len(s.kv); i += 2 {
		if s.kv[i] == "controller" {
			name, _ := s.kv[i+1].(string)
			return name
		}
	}
	return ""
}
