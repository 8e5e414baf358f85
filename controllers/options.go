package controllers

import (
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// Options are the operator's settings: what it needs to render and provision a tenant that is
// not in the tenant's spec. main.go fills them from flags; tests fill them directly.
type Options struct {
	// ClusterInput is what every tenant's objects are rendered with: images, where the
	// ingress controller and the databases are, the cluster's address ranges.
	ClusterInput

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
		ClusterInput: o.ClusterInput,
		Vault:        VaultInput{Address: addr, TokenAudience: o.VaultAudience, Peers: o.VaultPeers},
		Secrets:      generatedSecrets(),
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
