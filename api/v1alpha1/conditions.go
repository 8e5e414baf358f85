package v1alpha1

// Condition types shared by the SecureText resources. Ready is always the summary a person or a
// tool (kubectl wait, Argo CD, Flux) looks at first.
const (
	// ConditionReady is True when everything the resource asks for is in place.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still moving the resource towards its spec.
	ConditionReconciling = "Reconciling"
	// ConditionVaultReady is True when the tenant's Vault mount, keys, policy and role match the spec.
	ConditionVaultReady = "VaultReady"
	// ConditionStalled is True when the operator cannot make progress without a person (kstatus).
	ConditionStalled = "Stalled"
	// ConditionWorkloadsReady is True when the tenant's gateway, viewer and keystore are available.
	ConditionWorkloadsReady = "WorkloadsReady"
	// ConditionRetentionReady is True when the tenant's retention settings (ConfigMap retention,
	// read by the gateway's sweeps) hold a valid RetentionPolicy and the active LegalHolds of its
	// namespace. It does not make the tenant's Ready False: without a policy messaging works and
	// nothing is disposed of, and the holds are rendered either way.
	ConditionRetentionReady = "RetentionReady"
)

// Condition reasons. They are CamelCase constants so that tools can match on them.
const (
	ReasonReconciled           = "Reconciled"
	ReasonProgressing          = "Progressing"
	ReasonNamespaceConflict    = "NamespaceConflict"
	ReasonNamespaceFailed      = "NamespaceFailed"
	ReasonNamespaceTerminating = "NamespaceTerminating"
	ReasonDeleting             = "Deleting"
	ReasonLegalHoldActive      = "LegalHoldActive"
	ReasonSecretsFailed        = "SecretsFailed"
	ReasonRenderFailed         = "RenderFailed"
	ReasonApplyFailed          = "ApplyFailed"
	ReasonWorkloadsProgressing = "WorkloadsProgressing"
	ReasonWorkloadsAvailable   = "WorkloadsAvailable"
	// ReasonSecretMissing: a Secret the spec names (database, SMS provider) does not exist.
	ReasonSecretMissing    = "SecretMissing"
	ReasonVaultProvisioned = "VaultProvisioned"
	// ReasonVaultNotConfigured: the operator runs without Vault settings, so no tenant gets keys.
	ReasonVaultNotConfigured = "VaultNotConfigured"
	// ReasonDatabaseNotConfigured: the operator's settings say nowhere where the tenants'
	// databases are, so the network policies open no database egress (WorkloadsReady).
	ReasonDatabaseNotConfigured = "DatabaseNotConfigured"
)

// RetentionReady reasons of a tenant, Ready reasons of a RetentionPolicy and a LegalHold.
const (
	// ReasonRetentionApplied: the tenant's policy and active holds are in its retention settings.
	ReasonRetentionApplied = "RetentionApplied"
	// ReasonRetentionPolicyNotSet: the tenant names no policy and the operator has no default
	// (--default-retention-policy): no sweep runs.
	ReasonRetentionPolicyNotSet = "RetentionPolicyNotSet"
	// ReasonRetentionPolicyNotFound: the policy the tenant uses does not exist: no sweep runs.
	ReasonRetentionPolicyNotFound = "RetentionPolicyNotFound"
	// ReasonRetentionPolicyInvalid: the policy breaks a rule of the workloads (a duration they
	// cannot read, an order the CRD would refuse): no sweep runs. On the policy itself too.
	ReasonRetentionPolicyInvalid = "RetentionPolicyInvalid"
	// ReasonRetentionSettingsInvalid: the rendered settings would be refused by the workloads
	// (a hold they cannot read): they sweep nothing until it is fixed.
	ReasonRetentionSettingsInvalid = "RetentionSettingsInvalid"
	// ReasonRetentionPolicyValid: a RetentionPolicy that the workloads can apply.
	ReasonRetentionPolicyValid = "RetentionPolicyValid"
	// ReasonHoldRendered: an active LegalHold is in its tenant's retention settings.
	ReasonHoldRendered = "HoldRendered"
	// ReasonHoldReleased: a released LegalHold is no longer in its tenant's retention settings.
	ReasonHoldReleased = "HoldReleased"
	// ReasonHoldPending: the tenant's retention settings do not show the hold's change yet.
	ReasonHoldPending = "HoldPending"
	// ReasonTenantNotFound: a LegalHold is in a namespace that no SecureTextTenant owns, so it
	// holds nothing.
	ReasonTenantNotFound = "TenantNotFound"
)

// VaultReady reasons when the operator could not bring the tenant's Vault objects to the spec.
// The first three are temporary (the operator retries by itself); the last two need a person.
const (
	// ReasonVaultUnavailable: Vault did not answer (connection refused, timeout), answered 429
	// or a 5xx other than sealed.
	ReasonVaultUnavailable = "VaultUnavailable"
	// ReasonVaultSealed: Vault answered 503 because it is sealed (or a standby without an active node).
	ReasonVaultSealed = "VaultSealed"
	// ReasonVaultForbidden: Vault refused the operator's token (401/403): the token expired, or
	// the operator's Vault policy (config/rbac/vault-operator-policy.hcl) is not the one installed.
	ReasonVaultForbidden = "VaultForbidden"
	// ReasonVaultConflict: something already in Vault at the tenant's paths cannot be made to
	// match without destroying data (a mount of another type, a key of another type, an
	// exportable key); the message says what, and a person decides.
	ReasonVaultConflict = "VaultConflict"
	// ReasonVaultFailed: Vault refused a request for another reason (4xx); the message quotes Vault.
	ReasonVaultFailed = "VaultFailed"
)
