package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	vaultapi "github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/workloads/vaultlogin"
)

// operatorFlags are the settings that make controllers.Options.
type operatorFlags struct {
	workloadImage, keystoreImage, pullPolicy string

	vaultAddr, keystoreVaultAddr, vaultCACert, vaultAuth, vaultAuthMount, vaultRole string
	vaultTokenFile, vaultAudience, vaultJWTFile                                     string

	ingressNamespaceLabels, ingressPodLabels, ingressAnnotations kvFlag
	ingressClass                                                 string
	clusterCIDRs, trustedProxyCIDRs, databaseCIDRs               string
	databaseNamespaceLabels, databasePodLabels                   kvFlag
	databasePort                                                 int
	metricsNamespaceLabels                                       kvFlag
	operatorNamespace                                            string
	operatorPodLabels                                            kvFlag

	defaultRetentionPolicy string

	workers int
	resync  time.Duration
}

func (f *operatorFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.workloadImage, "workload-image", "", "image of the tenants' gateway, viewer and keystore (required)")
	fs.StringVar(&f.keystoreImage, "keystore-image", "", "image of the tenants' keystore; default -workload-image")
	fs.StringVar(&f.pullPolicy, "image-pull-policy", "", "imagePullPolicy of the tenants' containers (Always, IfNotPresent, Never)")

	fs.StringVar(&f.vaultAddr, "vault-addr", "", "address of Vault, https://…; empty runs without Vault (tenants stay VaultReady=False)")
	fs.StringVar(&f.keystoreVaultAddr, "keystore-vault-addr", "", "address the tenants' keystores use for Vault; default -vault-addr")
	fs.StringVar(&f.vaultCACert, "vault-ca-cert", "", "PEM file with Vault's CA; also copied to each tenant for its keystore")
	fs.StringVar(&f.vaultAuth, "vault-auth", "kubernetes", "how the operator logs in to Vault: kubernetes or token")
	fs.StringVar(&f.vaultAuthMount, "vault-auth-mount", controllers.DefaultVaultAuthMount,
		"path of Vault's Kubernetes auth method (the operator's and the keystores')")
	fs.StringVar(&f.vaultRole, "vault-role", "securetext-operator",
		"the operator's Kubernetes auth role (policy: config/rbac/vault-operator-policy.hcl)")
	fs.StringVar(&f.vaultTokenFile, "vault-token-file", "", "file with a Vault token, for -vault-auth token (development)")
	fs.StringVar(&f.vaultAudience, "vault-audience", "vault", "audience of the keystores' service account tokens for Vault")
	fs.StringVar(&f.vaultJWTFile, "vault-jwt-file", vaultlogin.DefaultServiceAccountTokenPath,
		"service account token the operator logs in to Vault with (-vault-auth kubernetes): a projected token of Vault's audience")

	f.ingressNamespaceLabels = kvFlag{m: map[string]string{"kubernetes.io/metadata.name": "ingress-nginx"}}
	f.ingressAnnotations = kvFlag{m: map[string]string{"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}}
	fs.Var(&f.ingressNamespaceLabels, "ingress-namespace-label",
		"a label (key=value; repeat the flag for more) of the ingress controller's namespace: the only source of HTTP traffic to tenants")
	fs.Var(&f.ingressPodLabels, "ingress-pod-label", "a label (key=value; repeatable) of the ingress controller's pods; none means all pods there")
	fs.StringVar(&f.ingressClass, "ingress-class", "", "ingressClassName of the tenants' Ingresses; empty means the cluster default")
	fs.Var(&f.ingressAnnotations, "ingress-annotation",
		"an annotation (key=value; repeatable) of the tenants' Ingresses; the backends serve HTTPS only")
	fs.Var(&f.metricsNamespaceLabels, "metrics-namespace-label",
		"a label (key=value; repeatable) of the namespace Prometheus runs in: admitted to the tenants' metrics ports; none admits no scraper")
	fs.StringVar(&f.operatorNamespace, "operator-namespace", "securetext-system",
		"the operator's own namespace: its pods alone are admitted to the tenants' gateway status port, where it reads the last retention sweep")
	f.operatorPodLabels = kvFlag{m: map[string]string{"app.kubernetes.io/name": "securetext-operator"}}
	fs.Var(&f.operatorPodLabels, "operator-pod-label",
		"a label (key=value; repeatable) of the operator's pods, with -operator-namespace the only peer of the gateway status port")
	fs.StringVar(&f.clusterCIDRs, "cluster-cidrs", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
		"the cluster's pod and service ranges (comma-separated), excluded from the SMS provider egress")
	fs.StringVar(&f.trustedProxyCIDRs, "trusted-proxy-cidrs", "",
		"addresses of the ingress controller's proxies (comma-separated CIDRs), whose X-Forwarded-For the tenants' viewers believe; "+
			"empty trusts none: the viewers then take the proxy's address as every client's, so their per-address throttles "+
			"count all patients behind one proxy together")
	fs.StringVar(&f.databaseCIDRs, "database-cidrs", "",
		"where the tenants' PostgreSQL is (comma-separated CIDRs); with no -database-cidrs and no -database-namespace-label or "+
			"-database-pod-label the tenants get no database egress at all and report WorkloadsReady=False (DatabaseNotConfigured)")
	fs.Var(&f.databaseNamespaceLabels, "database-namespace-label",
		"a label (key=value; repeatable) of the namespace of an in-cluster PostgreSQL the tenants may reach on -database-port")
	fs.Var(&f.databasePodLabels, "database-pod-label",
		"a label (key=value; repeatable) of an in-cluster PostgreSQL's pods; with -database-namespace-label, those pods in that "+
			"namespace; alone, those pods in each tenant's own namespace")
	fs.IntVar(&f.databasePort, "database-port", 5432, "port of the tenants' PostgreSQL")

	fs.StringVar(&f.defaultRetentionPolicy, "default-retention-policy", "",
		"the RetentionPolicy of tenants whose spec.retentionPolicyName is empty; empty gives them none: no message of theirs "+
			"expires or is purged, and their RetentionReady condition says so")

	fs.IntVar(&f.workers, "max-concurrent-reconciles", 4, "tenants reconciled at once")
	fs.DurationVar(&f.resync, "resync", controllers.DefaultResync, "how often an unchanged tenant is checked for drift (Vault)")
}

// options turns the flags into controllers.Options and, with Vault, logs the operator in. The
// returned stop ends the Vault session.
func (f *operatorFlags) options(log logr.Logger) (controllers.Options, func(), error) {
	o := controllers.Options{
		ClusterInput: controllers.ClusterInput{
			WorkloadImage: f.workloadImage, KeystoreImage: f.keystoreImage, ImagePullPolicy: corev1.PullPolicy(f.pullPolicy),
			IngressClassName: f.ingressClass,
			ClusterCIDRs:     splitList(f.clusterCIDRs), TrustedProxyCIDRs: splitList(f.trustedProxyCIDRs),
			Database: controllers.DatabaseInput{Port: int32(f.databasePort)},
		},
		VaultAddress: f.keystoreVaultAddr, VaultAudience: f.vaultAudience,
		DefaultRetentionPolicy:  f.defaultRetentionPolicy,
		MaxConcurrentReconciles: f.workers, Resync: f.resync,
	}
	var errs []error
	if f.workloadImage == "" {
		errs = append(errs, errors.New("-workload-image is required"))
	}
	o.IngressAnnotations = f.ingressAnnotations.m
	if len(f.ingressNamespaceLabels.m) > 0 {
		o.IngressNamespaceSelector = &metav1.LabelSelector{MatchLabels: f.ingressNamespaceLabels.m}
	}
	if len(f.ingressPodLabels.m) > 0 {
		o.IngressPodSelector = &metav1.LabelSelector{MatchLabels: f.ingressPodLabels.m}
	}
	if len(f.metricsNamespaceLabels.m) > 0 {
		o.MetricsNamespaceSelector = &metav1.LabelSelector{MatchLabels: f.metricsNamespaceLabels.m}
	}
	o.OperatorNamespace = f.operatorNamespace
	if len(f.operatorPodLabels.m) > 0 {
		o.OperatorPodSelector = &metav1.LabelSelector{MatchLabels: f.operatorPodLabels.m}
	}
	for _, fl := range [][2]string{{"-database-cidrs", f.databaseCIDRs}, {"-trusted-proxy-cidrs", f.trustedProxyCIDRs}} {
		name, list := fl[0], fl[1]
		for _, cidr := range splitList(list) {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a CIDR such as 10.20.0.0/16 or 192.0.2.10/32", name, cidr))
			}
		}
	}
	for _, cidr := range splitList(f.databaseCIDRs) {
		o.Database.Peers = append(o.Database.Peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}})
	}
	if len(f.databaseNamespaceLabels.m) > 0 || len(f.databasePodLabels.m) > 0 {
		var peer networkingv1.NetworkPolicyPeer
		if len(f.databaseNamespaceLabels.m) > 0 {
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: f.databaseNamespaceLabels.m}
		}
		if len(f.databasePodLabels.m) > 0 {
			peer.PodSelector = &metav1.LabelSelector{MatchLabels: f.databasePodLabels.m}
		}
		o.Database.Peers = append(o.Database.Peers, peer)
	}
	if len(errs) > 0 || f.vaultAddr == "" {
		return o, func() {}, errors.Join(errs...)
	}

	cfg := vaultapi.DefaultConfig()
	cfg.Address = f.vaultAddr
	if f.vaultCACert != "" {
		var err error
		if o.VaultCACert, err = os.ReadFile(f.vaultCACert); err != nil {
			return o, func() {}, fmt.Errorf("-vault-ca-cert: %w", err)
		}
		if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACertBytes: o.VaultCACert}); err != nil {
			return o, func() {}, fmt.Errorf("-vault-ca-cert: %w", err)
		}
	}
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		return o, func() {}, fmt.Errorf("vault client: %w", err)
	}
	var auth vaultlogin.Auth
	switch f.vaultAuth {
	case "kubernetes":
		auth = vaultlogin.KubernetesAuth{Mount: f.vaultAuthMount, Role: f.vaultRole, TokenPath: f.vaultJWTFile}
	case "token":
		auth = vaultlogin.TokenAuth{TokenPath: f.vaultTokenFile}
	default:
		return o, func() {}, fmt.Errorf("-vault-auth %q: use kubernetes or token", f.vaultAuth)
	}
	// The login runs in the background, and the provisioner's calls wait for it (within their
	// timeout): until it succeeds, tenants report VaultReady=False with why, and the operator
	// keeps serving its probes and every other step.
	session := vaultlogin.Start(client, auth, slog.New(logr.ToSlogHandler(log)))
	o.Vault = &controllers.VaultProvisioner{Client: client, AuthMount: f.vaultAuthMount, Login: session}
	return o, session.Stop, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// kvFlag is a repeatable key=value flag. Its default is replaced, not extended, by the first
// value given on the command line. A value may hold commas and '='.
type kvFlag struct {
	m   map[string]string
	set bool
}

func (f *kvFlag) String() string {
	if f == nil {
		return ""
	}
	var kv []string
	for k, v := range f.m {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, " ")
}

func (f *kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if k = strings.TrimSpace(k); !ok || k == "" {
		return fmt.Errorf("%q is not key=value", s)
	}
	if !f.set || f.m == nil {
		f.m, f.set = map[string]string{}, true
	}
	f.m[k] = v
	return nil
}
