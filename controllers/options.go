package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Options are the operator's settings: what it needs to render and provision a tenant that is
// not in the tenant's spec. main.go fills them from flags; tests fill them directly.
type Options struct {
	// WorkloadImage is the image of the gateway and viewer (and of the keystore unless
	// KeystoreImage is set); see RenderInput.
	WorkloadImage, KeystoreImage string
	ImagePullPolicy              corev1.PullPolicy

	// Vault provisions the tenants' Vault objects; nil leaves every tenant VaultReady=False
	// (VaultNotConfigured) and its workloads without a key store.
	Vault *VaultProvisioner
	// VaultAddress is where the keystores reach Vault (often not the address the operator
	// uses); empty means Vault.Client's address.
	VaultAddress string
	// VaultCACert, when set, is Vault's CA certificate (PEM); it is copied into each tenant's
	// namespace for the keystore.
	VaultCACert []byte
	// VaultAudience is the audience of the keystore's Vault token and of its role.
	VaultAudience string
	// VaultPeers are where Vault is, for the keystore's egress policy (see VaultInput.Peers).
	VaultPeers []networkingv1.NetworkPolicyPeer

	// Database is where the tenants' PostgreSQL is, for the egress policy.
	Database DatabaseInput

	// Ingress and network settings, as in RenderInput.
	IngressNamespaceSelector *metav1.LabelSelector
	IngressPodSelector       *metav1.LabelSelector
	IngressClassName         string
	IngressAnnotations       map[string]string
	SMTPSources              []networkingv1.NetworkPolicyPeer
	MetricsNamespaceSelector *metav1.LabelSelector
	ClusterCIDRs             []string
	TrustedProxyCIDRs        []string

	// CertificateValidity of generated certificates; default DefaultCertificateValidity.
	CertificateValidity time.Duration
	// Resync is how often a tenant is checked when nothing changed, to repair drift that no
	// watch reports (Vault); default 10 minutes.
	Resync time.Duration
	// MaxConcurrentReconciles tenants are reconciled at once; default 4.
	MaxConcurrentReconciles int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultResync is Options.Resync's default.
const DefaultResync = 10 * time.Minute

// renderInput is the part of RenderInput that comes from the options.
func (o Options) renderInput() RenderInput {
	addr := o.VaultAddress
	if addr == "" && o.Vault != nil && o.Vault.Client != nil {
		addr = o.Vault.Client.Address()
	}
	in := RenderInput{
		WorkloadImage:            o.WorkloadImage,
		KeystoreImage:            o.KeystoreImage,
		ImagePullPolicy:          o.ImagePullPolicy,
		Vault:                    VaultInput{Address: addr, TokenAudience: o.VaultAudience, Peers: o.VaultPeers},
		Database:                 o.Database,
		Secrets:                  generatedSecrets(),
		IngressNamespaceSelector: o.IngressNamespaceSelector,
		IngressPodSelector:       o.IngressPodSelector,
		IngressClassName:         o.IngressClassName,
		IngressAnnotations:       o.IngressAnnotations,
		SMTPSources:              o.SMTPSources,
		MetricsNamespaceSelector: o.MetricsNamespaceSelector,
		ClusterCIDRs:             o.ClusterCIDRs,
		TrustedProxyCIDRs:        o.TrustedProxyCIDRs,
	}
	if len(o.VaultCACert) > 0 {
		in.Vault.CACertSecret = SecretVaultCA
	}
	in.Vault.AuthMount = DefaultVaultAuthMount
	if o.Vault != nil && o.Vault.AuthMount != "" {
		in.Vault.AuthMount = o.Vault.AuthMount
	}
	return in
}
