package controllers

// Labels and names the operator puts on what it creates. A tenant's workloads can never set
// these labels on the namespace themselves: only the operator writes the namespace.
const (
	// FieldManager is the one server-side-apply field manager the operator uses for everything.
	FieldManager = "securetext-operator"

	// AnnotationOrphan on a SecureTextTenant, set to "true", makes deletion keep the tenant's
	// namespace (and everything in it) instead of deleting it: the escape hatch when cleanup
	// cannot or must not run.
	AnnotationOrphan = "securetext.io/orphan-on-delete"

	// TenantFinalizer holds a SecureTextTenant until what the operator made for it is removed.
	TenantFinalizer = "securetext.io/tenant-cleanup"
	// VaultFinalizer holds a SecureTextTenant until its Vault objects are cleaned up by its
	// deletion policy. It is added just before the operator first writes to Vault for the tenant.
	VaultFinalizer = "securetext.io/vault-cleanup"

	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelTenant    = "securetext.io/tenant"

	ManagedByValue = "securetext-operator"
	PartOfValue    = "securetext"

	// Pod Security admission: every tenant namespace enforces the restricted profile.
	labelPodSecurityEnforce        = "pod-security.kubernetes.io/enforce"
	labelPodSecurityEnforceVersion = "pod-security.kubernetes.io/enforce-version"
	labelPodSecurityAudit          = "pod-security.kubernetes.io/audit"
	labelPodSecurityWarn           = "pod-security.kubernetes.io/warn"
	podSecurityRestricted          = "restricted"
	podSecurityLatest              = "latest"
)

// tenantLabels are the labels of every object made for a tenant.
func tenantLabels(tenant string) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelPartOf:    PartOfValue,
		LabelTenant:    tenant,
	}
}
