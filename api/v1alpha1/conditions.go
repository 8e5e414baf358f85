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
)
