package controllers

import (
	"fmt"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
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

	// DefaultRetentionPolicy names the RetentionPolicy of tenants whose spec.retentionPolicyName
	// is empty; empty leaves such tenants without a policy: no sweep runs, and their
	// RetentionReady condition says so.
	DefaultRetentionPolicy string

	// SweepStatusAddress, if set, is the host:port where the operator reads the last retention
	// sweep of tenant (namespace ns); default the gateway Service's status port. Tests point
	// it at a status server on loopback; the server's certificate is still checked for the
	// Service's name.
	SweepStatusAddress func(tenant, ns string) string
	// SweepStatusTimeout bounds one read of a tenant's sweep status; default
	// DefaultSweepStatusTimeout.
	SweepStatusTimeout time.Duration

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

// resync is how often an unchanged tenant is checked again (Options.Resync).
func (r *SecureTextTenantReconciler) resync() time.Duration {
	if r.Options.Resync > 0 {
		return r.Options.Resync
	}
	return DefaultResync
}

// now is the reconciler's clock (Options.Now).
func (r *SecureTextTenantReconciler) now() time.Time {
	if r.Options.Now != nil {
		return r.Options.Now()
	}
	return time.Now()
}

// tenantInputs are the tenant's Vault objects and render input: the options' part of the
// render input (renderInput) completed from the tenant's spec.
func (r *SecureTextTenantReconciler) tenantInputs(tenant *securetextv1alpha1.SecureTextTenant, ns string) (TenantVault, RenderInput, error) {
	tv := TenantVault{
		Tenant: tenant.Name, Namespace: ns, ServiceAccount: objectName(ComponentKeystore), Audience: r.Options.VaultAudience,
	}
	if p := tenant.Spec.Vault.KeyRotationPeriod; p != "" {
		d, err := time.ParseDuration(p)
		if err != nil {
			return tv, RenderInput{}, fmt.Errorf("spec.vault.keyRotationPeriod %q: %w", p, err)
		}
		tv.RotationPeriod = d
	}
	in := r.Options.renderInput()
	in.Namespace = ns
	for c, spec := range map[Component]securetextv1alpha1.ComponentSpec{
		ComponentGateway: tenant.Spec.Components.Gateway, ComponentViewer: tenant.Spec.Components.Viewer,
		ComponentKeystore: tenant.Spec.Components.Keystore,
	} {
		if a := spec.Autoscaling; a != nil {
			if in.Autoscaling == nil {
				in.Autoscaling = map[Component]AutoscalingInput{}
			}
			in.Autoscaling[c] = AutoscalingInput{MaxReplicas: a.MaxReplicas, TargetCPUUtilizationPercentage: a.TargetCPUUtilizationPercentage}
		}
	}
	in.Vault.Role = tv.RoleName()
	in.Vault.TransitMount = tv.Mount()
	in.Vault.StateMount = tv.StateMount()
	in.Vault.WrappingKey = tv.WrappingKey()
	in.Vault.SigningKey = tv.SigningKey()
	return tv, in, nil
}
