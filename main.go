// Command securetext-operator reconciles SecureTextTenant, RetentionPolicy and LegalHold
// resources into dedicated, isolated per-tenant stacks. One replica per cluster is active at a
// time (leader election); metrics are served by controller-runtime's metrics server.
package main

import (
	"flag"
	"fmt"
	"os"
	goruntime "runtime"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
)

// version is the release this binary was built from, stamped by make (-X main.version=…).
var version = "dev"

// versionLine is what --version prints: the release, and the toolchain and platform it was
// built with.
func versionLine() string {
	return fmt.Sprintf("securetext-operator %s (%s, %s/%s)", version, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
}

func main() {
	var (
		metricsAddr, probeAddr, leaderElectionNamespace string
		leaderElect, secureMetrics, printVersion        bool
	)
	flag.BoolVar(&printVersion, "version", false, "print the version and exit")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "address of the Prometheus metrics endpoint; 0 turns it off")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"serve metrics over HTTPS to callers the API server authenticates and authorizes (get on /metrics); "+
			"false serves plain HTTP, for local runs only")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flag.BoolVar(&leaderElect, "leader-elect", true, "elect a leader so that only one replica reconciles at a time")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "",
		"namespace of the leader-election Lease; required when running outside a cluster")
	var op operatorFlags
	op.register(flag.CommandLine)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if printVersion {
		fmt.Println(versionLine())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(securetextv1alpha1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "securetext-operator.securetext.io",
		LeaderElectionNamespace: leaderElectionNamespace,
		// Release the lease on a clean stop so that the next replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	})
	if err != nil {
		setupLog.Error(err, "create manager")
		os.Exit(1)
	}

	options, stopVault, err := op.options(ctrl.Log.WithName("vault"))
	if err != nil {
		setupLog.Error(err, "operator settings")
		os.Exit(2)
	}
	defer stopVault()
	if err := controllers.Setup(mgr, options); err != nil {
		setupLog.Error(err, "set up controllers")
		os.Exit(1)
	}

	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	setupLog.Info("starting operator")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "run manager")
		os.Exit(1)
	}
}

// metricsOptions serves metrics with a self-signed certificate, letting in only callers that
// the API server authenticates (TokenReview) and authorizes (SubjectAccessReview) — Prometheus'
// service account with get on the /metrics non-resource URL.
func metricsOptions(addr string, secure bool) metricsserver.Options {
	if !secure {
		return metricsserver.Options{BindAddress: addr}
	}
	return metricsserver.Options{
		BindAddress:    addr,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
	}
}
