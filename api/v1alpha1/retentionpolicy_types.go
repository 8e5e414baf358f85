package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RetentionPolicySpec says how long links, message content and audit events live.
// Durations are Go durations (h, m, s): 30 days is 720h.
// +kubebuilder:validation:XValidation:rule="!has(self.contentPurgeAfter) || !has(self.unreadLinkExpiry) || duration(self.contentPurgeAfter) >= duration(self.unreadLinkExpiry)",message="contentPurgeAfter must be at least unreadLinkExpiry: content cannot be purged while its link still works"
// +kubebuilder:validation:XValidation:rule="!has(self.auditRetention) || !has(self.contentPurgeAfter) || duration(self.auditRetention) >= duration(self.contentPurgeAfter)",message="auditRetention must be at least contentPurgeAfter: the record of a message must outlive its content"
type RetentionPolicySpec struct {
	// UnreadLinkExpiry is how long a texted link works; after it the message can no longer be
	// opened and an "expired" event is recorded.
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')",message="unreadLinkExpiry must be a duration of at least 1m, written like 720h (days are not a unit: 30 days is 720h)"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	UnreadLinkExpiry string `json:"unreadLinkExpiry,omitempty"`

	// ContentPurgeAfter is how long after acceptance a message's content is destroyed
	// (its data key is deleted, then its ciphertext); a metadata record stays.
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')",message="contentPurgeAfter must be a duration of at least 1m, written like 2160h (days are not a unit: 90 days is 2160h)"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ContentPurgeAfter string `json:"contentPurgeAfter,omitempty"`

	// AuditRetention is how long audit events are kept; HIPAA asks for 6 years of documentation
	// (45 CFR 164.316), which is the default (52608h).
	// +kubebuilder:default="52608h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m')",message="auditRetention must be a duration of at least 1m, written like 52608h (6 years)"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	AuditRetention string `json:"auditRetention,omitempty"`

	// SweepInterval is how often each tenant applies the policy.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="sweepInterval must be a duration between 1m and 24h, written like 1h"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	SweepInterval string `json:"sweepInterval,omitempty"`

	// KeyRotationPeriod bounds how long purged content stays recoverable from backups: the
	// tenant's Transit wrapping key is rotated at least this often (more often if the tenant's
	// spec.vault.keyRotationPeriod is shorter), the sweeps move the data keys of stored messages
	// to the new version, and the operator then destroys the old versions. Content purged at
	// time T is unrecoverable from every copy of the database by T + keyRotationPeriod +
	// 2 × sweepInterval + 10m.
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('24h')",message="keyRotationPeriod must be a duration of at least 24h, written like 720h (days are not a unit: 30 days is 720h)"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	KeyRotationPeriod string `json:"keyRotationPeriod,omitempty"`
}

// RetentionPolicyStatus reports the sweeps of the tenants that use the policy.
type RetentionPolicyStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready is True when the workloads can apply the policy (its durations parse
	// and keep their order); an invalid policy drives no sweep in any tenant.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastSweepTime is when a tenant last finished applying the policy: the latest of the
	// tenants' lastSweepTime.
	// +optional
	LastSweepTime *metav1.Time `json:"lastSweepTime,omitempty"`
	// LinksExpired is the sum over the tenants of the links their last sweep expired.
	// +optional
	LinksExpired int64 `json:"linksExpired,omitempty"`
	// MessagesPurged is the sum over the tenants of the messages whose content their last
	// sweep destroyed.
	// +optional
	MessagesPurged int64 `json:"messagesPurged,omitempty"`
	// MessagesHeld is the sum over the tenants of the messages their last sweep would have
	// expired or purged but a LegalHold kept.
	// +optional
	MessagesHeld int64 `json:"messagesHeld,omitempty"`
	// Tenants is the last sweep of each tenant that uses the policy, as the operator read it
	// from the tenant's gateway.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=4096
	// +optional
	Tenants []RetentionPolicyTenantStatus `json:"tenants,omitempty"`
}

// RetentionPolicyTenantStatus is one tenant's last sweep under the policy.
type RetentionPolicyTenantStatus struct {
	// Name of the SecureTextTenant.
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// LastSweepTime is when the tenant's last sweep finished.
	// +optional
	LastSweepTime *metav1.Time `json:"lastSweepTime,omitempty"`
	// LinksExpired is how many links the last sweep expired.
	// +optional
	LinksExpired int64 `json:"linksExpired,omitempty"`
	// MessagesPurged is how many messages' content the last sweep destroyed.
	// +optional
	MessagesPurged int64 `json:"messagesPurged,omitempty"`
	// MessagesHeld is how many messages due for expiry or purge a LegalHold kept.
	// +optional
	MessagesHeld int64 `json:"messagesHeld,omitempty"`
	// Errors is how many store calls of the last sweep failed; the gateway's log says which,
	// and the next sweep tries again.
	// +optional
	Errors int64 `json:"errors,omitempty"`
}

// RetentionPolicy is a reusable rule for disposing of old messages with a record, e.g.
// hipaa-standard. Tenants name the policy they use (spec.retentionPolicyName, or the operator's
// --default-retention-policy); the operator renders it, with the tenant's legal holds, into
// the tenant's retention settings, and a change reaches the running gateways without a restart.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=rp,categories=securetext
// +kubebuilder:printcolumn:name="Link Expiry",type=string,JSONPath=`.spec.unreadLinkExpiry`
// +kubebuilder:printcolumn:name="Purge After",type=string,JSONPath=`.spec.contentPurgeAfter`
// +kubebuilder:printcolumn:name="Audit Kept",type=string,JSONPath=`.spec.auditRetention`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Last Sweep",type=date,JSONPath=`.status.lastSweepTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RetentionPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   RetentionPolicySpec   `json:"spec"`
	Status RetentionPolicyStatus `json:"status,omitempty"`
}

// RetentionPolicyList is a list of RetentionPolicies.
// +kubebuilder:object:root=true
type RetentionPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RetentionPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RetentionPolicy{}, &RetentionPolicyList{})
}
