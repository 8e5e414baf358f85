package controllers

// Render computes every object of a tenant's stack from its spec and from what the operator
// knows about the cluster (RenderInput), with no client calls: the decision logic is a pure
// function, tested with tables, and the reconciler only applies what it returns.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// Component is one of a tenant's workloads.
type Component string

const (
	ComponentGateway  Component = "gateway"
	ComponentViewer   Component = "viewer"
	ComponentKeystore Component = "keystore"
)

// components in the order their objects are rendered (and applied): the keystore first, as
// the others need it to become ready.
var components = []Component{ComponentKeystore, ComponentGateway, ComponentViewer}

// Labels and annotations of rendered objects, beside the tenant labels of labels.go.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	NameValue      = "securetext"

	// AnnotationConfigChecksum on a pod template is the SHA-256 of the component's rendered
	// configuration and the names (and versions, when known) of the Secrets it mounts: a change
	// to any of them changes the template and so rolls the pods.
	AnnotationConfigChecksum = "securetext.io/config-checksum"

	// annotationCertManagerIssuer and annotationCertManagerClusterIssuer make cert-manager's
	// ingress-shim issue the Ingress's TLS Secret.
	annotationCertManagerIssuer        = "cert-manager.io/issuer"
	annotationCertManagerClusterIssuer = "cert-manager.io/cluster-issuer"
)

// Default sizes and defaults of optional spec fields (the CRD schema defaults them too; these
// apply when an object was not defaulted, e.g. in unit tests or a spec from an older CRD).
const (
	defaultReplicas          = int32(2)
	defaultSMTPPort          = int32(587)
	defaultMaxMessageBytes   = int64(26214400)
	defaultSMSRatePerMinute  = int32(240)
	defaultRegion            = "US"
	defaultTimeZone          = "America/New_York"
	defaultReplyMaxLength    = int32(1000)
	defaultDatabaseSecretKey = "url"
	defaultDatabasePort      = int32(5432)
	defaultVaultPort         = int32(8200)
	defaultTokenExpiration   = int64(3600)
	publicTLSSecretSuffix    = "-public-tls"
)

// RenderInput is what Render needs that is not in the tenant's spec: the operator's settings
// for every tenant (ClusterInput), and what it knows about this tenant's Vault objects and
// generated Secrets.
type RenderInput struct {
	ClusterInput

	// Namespace of the tenant's workloads; defaults to the tenant's TargetNamespace.
	Namespace string

	// Vault is how the keystore reaches and logs in to Vault.
	Vault VaultInput

	// Secrets names the Secrets the operator generates in the tenant's namespace.
	Secrets GeneratedSecrets
	// SecretVersions maps the name of a Secret (or of the logo ConfigMap) the workloads mount
	// to its resourceVersion (or any other version string); when given, it is part of the config
	// checksum, so a rotated Secret rolls the pods that mount it.
	SecretVersions map[string]string

	// Logo, when the operator has fetched spec.branding.logoURL into a ConfigMap, is that
	// ConfigMap; the viewer serves the logo itself (-logo-file).
	Logo *LogoInput

	// Autoscaling, per component, adds a HorizontalPodAutoscaler; the Deployment then leaves
	// replicas to it.
	Autoscaling map[Component]AutoscalingInput

	// Retention is the tenant's retention settings (RetentionSettings), rendered into the
	// ConfigMap retention that the gateway mounts; the zero value has no policy and no hold.
	Retention retention.Settings
}

// ClusterInput is what the operator knows about the cluster, the same for every tenant: the
// images, and where the ingress controller, the databases and the cluster's own addresses are.
type ClusterInput struct {
	// WorkloadImage is the image of the Dockerfile's `workloads` target: /usr/local/bin/securetext
	// (subcommands gateway, viewer and keystore).
	WorkloadImage string
	// KeystoreImage overrides WorkloadImage for the keystore; empty means WorkloadImage.
	KeystoreImage string
	// ImagePullPolicy of every container; empty leaves the Kubernetes default.
	ImagePullPolicy corev1.PullPolicy

	// Database says where the tenant's databases are, for the egress policy.
	Database DatabaseInput

	// IngressNamespaceSelector selects the namespace of the ingress controller, the only
	// source of traffic to the viewer and to the gateway's API.
	IngressNamespaceSelector *metav1.LabelSelector
	// IngressPodSelector narrows that to the controller's pods; nil means every pod there.
	IngressPodSelector *metav1.LabelSelector
	// IngressClassName of the tenant's Ingress; empty means the cluster's default class.
	IngressClassName string
	// IngressAnnotations are added to the Ingress, e.g. the controller's annotation that makes
	// it talk HTTPS to the backends (the viewer and the gateway's API serve HTTPS only).
	IngressAnnotations map[string]string

	// SMTPSources may reach a ClusterIP SMTP Service (in-cluster senders such as an EHR relay);
	// LoadBalancer and NodePort SMTP is open to everyone on the SMTP ports only.
	SMTPSources []networkingv1.NetworkPolicyPeer
	// MetricsNamespaceSelector, when set, may scrape the gateway's and viewer's /metrics.
	MetricsNamespaceSelector *metav1.LabelSelector
	// OperatorNamespace and OperatorPodSelector are where the operator's pods are: the only
	// peers admitted to the gateway's status port, where the operator reads the last retention
	// sweep. Without a namespace the port admits no one.
	OperatorNamespace   string
	OperatorPodSelector *metav1.LabelSelector

	// ClusterCIDRs are the cluster's pod and service ranges: the SMS provider egress (TCP 443
	// to the internet) excludes them so that it cannot reach anything inside the cluster.
	ClusterCIDRs []string
	// TrustedProxyCIDRs are the addresses of the ingress controller's proxies, whose
	// X-Forwarded-For the viewer believes (-trusted-proxies). Empty trusts no proxy: the viewer
	// then takes every request's source address, the proxy's, as the client's, so its
	// per-address throttles count all patients behind one proxy together. A wider range (the
	// whole cluster) would let any pod that reaches the viewer, or a rewritten source address,
	// choose whose throttle a request counts against.
	TrustedProxyCIDRs []string
}

// VaultInput is how the keystore reaches Vault; names come from the Vault reconciler.
type VaultInput struct {
	// Address of Vault, used when spec.vault.address is empty.
	Address string
	// CACertSecret, when set, holds the CA of Vault's certificate under key ca.crt.
	CACertSecret string
	// AuthMount is the path of Vault's Kubernetes auth method, e.g. "kubernetes".
	AuthMount string
	// Role is the tenant keystore's Kubernetes auth role.
	Role string
	// TransitMount, WrappingKey and SigningKey are the tenant's Transit mount and keys.
	TransitMount, WrappingKey, SigningKey string
	// StateMount is the tenant's KV version 2 mount for the keystore's checkpoint state.
	StateMount string
	// TokenAudience is the audience of the keystore's projected service account token; it must
	// match the role's audience. Empty means the API server's default audience.
	TokenAudience string
	// Peers, when given, are where Vault is for the keystore's egress policy; otherwise they
	// are derived from the address (an in-cluster service name selects its namespace, an IP
	// address its /32 or /128, anything else the internet outside ClusterCIDRs).
	Peers []networkingv1.NetworkPolicyPeer
}

// DatabaseInput is where the tenant's PostgreSQL is, for the egress policy.
type DatabaseInput struct {
	// Port of PostgreSQL; 0 means 5432.
	Port int32
	// Peers are where the databases are: address ranges, or namespace and pod selectors of an
	// in-cluster PostgreSQL. None opens no database egress at all (the workloads cannot reach
	// a database, and WorkloadsReady says so): a tenant must not reach every PostgreSQL in the
	// cluster and on the internet because a setting was left out.
	Peers []networkingv1.NetworkPolicyPeer
}

// Configured reports whether the operator knows where the databases are.
func (d DatabaseInput) Configured() bool { return len(d.Peers) > 0 }

// GeneratedSecrets names the Secrets the operator creates once in the tenant's namespace.
// Each TLS Secret holds tls.crt, tls.key and ca.crt (the tenant CA).
type GeneratedSecrets struct {
	// KeystoreServerTLS is the keystore's serving certificate, for KeystoreDNSNames.
	KeystoreServerTLS string
	// GatewayKeystoreClient and ViewerKeystoreClient are the components' client certificates
	// for the keystore's mutual TLS.
	GatewayKeystoreClient, ViewerKeystoreClient string
	// GatewayStatusTLS is the gateway status server's certificate, for GatewayStatusDNSNames.
	GatewayStatusTLS string
	// ServingTLS is the certificate the gateway (STARTTLS, API) and viewer serve when spec.tls
	// is not set.
	ServingTLS string
	// Senders holds the gateway's senders file (hashed credentials) under key senders.yaml.
	Senders string
}

// LogoInput names the ConfigMap that holds the tenant's logo.
type LogoInput struct {
	ConfigMapName string
	// Key in the ConfigMap's binaryData; its extension (.png, .jpg, .webp, .svg) is the type.
	Key string
}

// AutoscalingInput sizes a component's HorizontalPodAutoscaler.
type AutoscalingInput struct {
	MaxReplicas                    int32
	TargetCPUUtilizationPercentage int32
}

// Desired is a tenant's stack as typed objects, each with TypeMeta set for server-side apply.
type Desired struct {
	ServiceAccounts          []*corev1.ServiceAccount
	ConfigMaps               []*corev1.ConfigMap
	Deployments              []*appsv1.Deployment
	Services                 []*corev1.Service
	NetworkPolicies          []*networkingv1.NetworkPolicy
	PodDisruptionBudgets     []*policyv1.PodDisruptionBudget
	Ingresses                []*networkingv1.Ingress
	HorizontalPodAutoscalers []*autoscalingv2.HorizontalPodAutoscaler
}

// Objects lists every object in the order to apply them: network policies first, so that no
// pod ever runs without them, then identities, configuration and workloads.
func (d Desired) Objects() []client.Object {
	var out []client.Object
	for _, o := range d.NetworkPolicies {
		out = append(out, o)
	}
	for _, o := range d.ServiceAccounts {
		out = append(out, o)
	}
	for _, o := range d.ConfigMaps {
		out = append(out, o)
	}
	for _, o := range d.Services {
		out = append(out, o)
	}
	for _, o := range d.Deployments {
		out = append(out, o)
	}
	for _, o := range d.PodDisruptionBudgets {
		out = append(out, o)
	}
	for _, o := range d.HorizontalPodAutoscalers {
		out = append(out, o)
	}
	for _, o := range d.Ingresses {
		out = append(out, o)
	}
	return out
}

// tenantIDPattern is what the workloads accept as a tenant id (-tenant).
var tenantIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Render computes the desired objects of tenant t. It is deterministic: the same input gives
// deep-equal output.
func Render(t *securetextv1alpha1.SecureTextTenant, in RenderInput) (Desired, error) {
	r, err := newRenderer(t, in)
	if err != nil {
		return Desired{}, err
	}
	var d Desired
	for _, c := range components {
		d.ServiceAccounts = append(d.ServiceAccounts, r.serviceAccount(c))
	}
	settings, err := r.retentionConfigMap()
	if err != nil {
		return Desired{}, err
	}
	d.ConfigMaps = append(d.ConfigMaps, settings)
	for _, c := range components {
		cm, mounts := r.config(c)
		d.ConfigMaps = append(d.ConfigMaps, cm)
		d.Deployments = append(d.Deployments, r.deployment(c, cm, mounts))
		d.PodDisruptionBudgets = append(d.PodDisruptionBudgets, r.podDisruptionBudget(c))
		if hpa := r.horizontalPodAutoscaler(c); hpa != nil {
			d.HorizontalPodAutoscalers = append(d.HorizontalPodAutoscalers, hpa)
		}
	}
	d.Services = r.services()
	d.NetworkPolicies = r.networkPolicies()
	if ing := r.ingress(); ing != nil {
		d.Ingresses = append(d.Ingresses, ing)
	}
	return d, nil
}

// renderer carries the tenant and the input, with defaults filled in, through the render steps.
type renderer struct {
	t         *securetextv1alpha1.SecureTextTenant
	spec      securetextv1alpha1.SecureTextTenantSpec
	in        RenderInput
	ns        string
	vaultAddr string
}

func newRenderer(t *securetextv1alpha1.SecureTextTenant, in RenderInput) (*renderer, error) {
	if t == nil {
		return nil, errors.New("render: no tenant")
	}
	var errs []error
	if !tenantIDPattern.MatchString(t.Name) {
		errs = append(errs, fmt.Errorf("tenant name %q is not a DNS label, which the workloads need as their tenant id", t.Name))
	}
	if in.Namespace == "" {
		in.Namespace = t.TargetNamespace()
	}
	if in.WorkloadImage == "" {
		errs = append(errs, errors.New("render: no workload image"))
	}
	if in.KeystoreImage == "" {
		in.KeystoreImage = in.WorkloadImage
	}
	vaultAddr := t.Spec.Vault.Address
	if vaultAddr == "" {
		vaultAddr = in.Vault.Address
	}
	if vaultAddr == "" {
		errs = append(errs, errors.New("render: no Vault address (neither spec.vault.address nor the operator's default)"))
	}
	for what, v := range map[string]string{
		"Vault auth mount": in.Vault.AuthMount, "Vault role": in.Vault.Role, "Transit mount": in.Vault.TransitMount, "state mount": in.Vault.StateMount,
		"Transit wrapping key": in.Vault.WrappingKey, "Transit signing key": in.Vault.SigningKey,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("render: no %s", what))
		}
	}
	s := in.Secrets
	for what, v := range map[string]string{
		"keystore server TLS Secret": s.KeystoreServerTLS, "gateway keystore client Secret": s.GatewayKeystoreClient,
		"viewer keystore client Secret": s.ViewerKeystoreClient, "senders Secret": s.Senders,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("render: no %s name", what))
		}
	}
	if t.Spec.TLS == nil && s.ServingTLS == "" {
		errs = append(errs, errors.New("render: spec.tls is not set and no generated serving TLS Secret is named"))
	}
	if sms := t.Spec.SMS; sms.Provider != securetextv1alpha1.SMSConsole && (sms.SecretRef == nil || sms.SecretRef.Name == "") {
		errs = append(errs, fmt.Errorf("sms provider %s needs sms.secretRef", sms.Provider))
	}
	// The CRD refuses this too; a tenant stored before that rule must not run console either.
	if t.Spec.SMS.Provider == securetextv1alpha1.SMSConsole && !t.Spec.Development {
		errs = append(errs, errors.New("sms provider console writes every link and one-time code into the pods' logs: "+
			"set spec.development: true on a demo or test tenant, or use twilio or webhook"))
	}
	if t.Spec.Database.SecretRef.Name == "" {
		errs = append(errs, errors.New("spec.database.secretRef.name is empty"))
	}
	if len(errs) > 0 {
		// Sorted, so that the error is as deterministic as the output.
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	return &renderer{t: t, spec: t.Spec, in: in, ns: in.Namespace, vaultAddr: vaultAddr}, nil
}

// objectName is the name of a component's namespaced objects; the namespace is the tenant's
// own, so plain component names are unique.
func objectName(c Component) string { return string(c) }

// selectorLabels select a component's pods. They are part of Deployment selectors, which are
// immutable: never change them.
func selectorLabels(tenant string, c Component) map[string]string {
	return map[string]string{LabelTenant: tenant, LabelComponent: string(c)}
}

// componentLabels are the labels of a component's objects and pods.
func (r *renderer) componentLabels(c Component) map[string]string {
	l := tenantLabels(r.t.Name)
	l[LabelName] = NameValue
	l[LabelInstance] = r.t.Name
	if c != "" {
		l[LabelComponent] = string(c)
	}
	return l
}

func (r *renderer) meta(name string, c Component) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: r.ns, Labels: r.componentLabels(c)}
}

// configChecksum is the SHA-256 over a ConfigMap's data and the names and versions of the
// Secrets a pod mounts, in a canonical order.
func configChecksum(data map[string]string, secrets []string, versions map[string]string) string {
	h := sha256.New()
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// Length-prefixed, so that no two different maps hash alike.
		fmt.Fprintf(h, "data %d:%s %d:%s\n", len(k), k, len(data[k]), data[k])
	}
	secrets = append([]string(nil), secrets...)
	sort.Strings(secrets)
	for _, s := range secrets {
		fmt.Fprintf(h, "secret %d:%s %d:%s\n", len(s), s, len(versions[s]), versions[s])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// KeystoreServiceName is the keystore's Service; KeystoreDNSNames are the names its serving
// certificate must hold, as the gateway and viewer reach it at KeystoreURL.
const KeystoreServiceName = "keystore"

// KeystoreDNSNames are the DNS names of the keystore's Service in namespace ns.
func KeystoreDNSNames(ns string) []string {
	return []string{
		KeystoreServiceName,
		KeystoreServiceName + "." + ns,
		KeystoreServiceName + "." + ns + ".svc",
		KeystoreServiceName + "." + ns + ".svc.cluster.local",
	}
}

// KeystoreURL is the keystore's base URL inside namespace ns.
func KeystoreURL(ns string) string {
	return fmt.Sprintf("https://%s.%s.svc:%d", KeystoreServiceName, ns, portKeystore)
}

// publicTLSSecret is the Secret with the certificate of the tenant's public hosts: the one
// spec.tls names, the one cert-manager issues for the Ingress, or the generated one.
func (r *renderer) publicTLSSecret() string {
	switch {
	case r.spec.TLS != nil && r.spec.TLS.SecretName != "":
		return r.spec.TLS.SecretName
	case r.spec.TLS != nil && r.spec.TLS.IssuerRef != nil:
		return r.t.Name + publicTLSSecretSuffix
	}
	return r.in.Secrets.ServingTLS
}

// viewerURL is the public base URL of the viewer.
func (r *renderer) viewerURL() string { return "https://" + r.spec.Hostnames.Viewer }

// apiHost is the host that serves the REST API and the SMS provider's callbacks.
func (r *renderer) apiHost() string {
	if r.spec.Hostnames.API != "" {
		return r.spec.Hostnames.API
	}
	return r.spec.Hostnames.Viewer
}

func (r *renderer) smtpEnabled() bool {
	return r.spec.SMTP.Enabled == nil || *r.spec.SMTP.Enabled
}

func (r *renderer) apiEnabled() bool {
	return r.spec.API.Enabled == nil || *r.spec.API.Enabled
}

// smsExternal reports whether the provider is reached over the internet (not console).
func (r *renderer) smsExternal() bool {
	return r.spec.SMS.Provider != securetextv1alpha1.SMSConsole && r.spec.SMS.Provider != ""
}

// viewerSendsSMS reports whether the viewer texts one-time codes itself: unless the tenant
// turned codes off (the CRD defaults them on).
func (r *renderer) viewerSendsSMS() bool { return oneTimeCode(r.spec.ViewerAuth) }

// oneTimeCode is spec.viewerAuth.oneTimeCode with its default, on.
func oneTimeCode(a securetextv1alpha1.ViewerAuth) bool { return a.OneTimeCode == nil || *a.OneTimeCode }

// timeZone is the zone of the tenant's pages: spec.timeZone, else the zone of its quiet
// hours (a spec written before spec.timeZone existed), else America/New_York.
func (r *renderer) timeZone() string {
	switch q := r.spec.SMS.QuietHours; {
	case r.spec.TimeZone != "":
		return r.spec.TimeZone
	case q != nil && q.TimeZone != "":
		return q.TimeZone
	}
	return defaultTimeZone
}

// quietHoursZone is the zone quiet hours are read in: their own, else the tenant's.
func (r *renderer) quietHoursZone() string {
	if q := r.spec.SMS.QuietHours; q != nil && q.TimeZone != "" {
		return q.TimeZone
	}
	return r.timeZone()
}

func (r *renderer) replicas(c Component) int32 {
	var p *int32
	switch c {
	case ComponentGateway:
		p = r.spec.Components.Gateway.Replicas
	case ComponentViewer:
		p = r.spec.Components.Viewer.Replicas
	case ComponentKeystore:
		p = r.spec.Components.Keystore.Replicas
	}
	if p == nil || *p < 1 {
		return defaultReplicas
	}
	return *p
}

func (r *renderer) componentSpec(c Component) securetextv1alpha1.ComponentSpec {
	switch c {
	case ComponentGateway:
		return r.spec.Components.Gateway
	case ComponentViewer:
		return r.spec.Components.Viewer
	}
	return r.spec.Components.Keystore
}

// typeMeta values, so that server-side apply knows what each object is.
var (
	typeServiceAccount = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	typeConfigMap      = metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}
	typeService        = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	typeDeployment     = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	typeNetworkPolicy  = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	typeIngress        = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "Ingress"}
	typePDB            = metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"}
	typeHPA            = metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"}
)

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// supportContact sorts spec.branding.supportContact into the viewer's phone, email or URL.
func supportContact(s string) (flag string, ok bool) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", false
	case strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://"):
		return flagSupportURL, true
	case strings.Contains(s, "@"):
		return flagSupportEmail, true
	}
	return flagSupportPhone, true
}
