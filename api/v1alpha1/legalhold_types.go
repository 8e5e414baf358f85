package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HoldMatcher selects the messages a LegalHold keeps. A message is held when it matches every
// field that is set (recipients, senders and message ids each match any of their entries).
// +kubebuilder:validation:XValidation:rule="has(self.recipients) || has(self.senders) || has(self.messageIDs) || has(self.sentAfter) || has(self.sentBefore)",message="matcher must set at least one of recipients, senders, messageIDs, sentAfter or sentBefore: say which messages the hold keeps"
// +kubebuilder:validation:XValidation:rule="!has(self.sentAfter) || !has(self.sentBefore) || timestamp(self.sentAfter) < timestamp(self.sentBefore)",message="sentAfter must be earlier than sentBefore"
type HoldMatcher struct {
	// Recipients are phone numbers in E.164, e.g. +12025550143.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:Pattern=`^\+[1-9][0-9]{7,14}$`
	Recipients []string `json:"recipients,omitempty"`
	// Senders are sender addresses or API key names, matched exactly (case-insensitive).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=320
	Senders []string `json:"senders,omitempty"`
	// MessageIDs are SecureText message ids.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=64
	MessageIDs []string `json:"messageIDs,omitempty"`
	// SentAfter holds messages accepted at or after this time.
	// +optional
	SentAfter *metav1.Time `json:"sentAfter,omitempty"`
	// SentBefore holds messages accepted before this time.
	// +optional
	SentBefore *metav1.Time `json:"sentBefore,omitempty"`
}

// LegalHoldSpec keeps matching messages from being purged until the hold is released.
// +kubebuilder:validation:XValidation:rule="(has(oldSelf.active) && !oldSelf.active) || self.matcher == oldSelf.matcher",message="the matcher of an active hold cannot change: release the hold (active: false) or create a new one, so that every change of scope is on record"
type LegalHoldSpec struct {
	// Reason for the hold, e.g. a matter or case number; recorded in the audit trail.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1000
	Reason string `json:"reason"`
	// Matcher selects the held messages.
	Matcher HoldMatcher `json:"matcher"`
	// Active holds while true; set it to false to release the hold (the release is audited).
	// +kubebuilder:default=true
	// +optional
	Active *bool `json:"active,omitempty"`
}

// LegalHoldStatus reports what the hold keeps.
type LegalHoldStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready is True when the hold's tenant is found and its retention settings
	// (ConfigMap retention in this namespace, which the gateway reads) show the hold as it is:
	// an active hold in them, a released one gone from them.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// HeldMessages is how many messages the hold kept from purging at the last sweep.
	// +optional
	HeldMessages int64 `json:"heldMessages,omitempty"`
	// ReleasedAt is when the operator saw the hold released (spec.active false) and took it out
	// of the tenant's retention settings; cleared if the hold is made active again.
	// +optional
	ReleasedAt *metav1.Time `json:"releasedAt,omitempty"`
}

// LegalHold stops the disposal of matching messages in one tenant's namespace, so that a
// compliance team can hold without editing tenants. Holds and releases are audited.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=lh,categories=securetext
// +kubebuilder:printcolumn:name="Active",type=boolean,JSONPath=`.spec.active`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Held",type=integer,JSONPath=`.status.heldMessages`
// +kubebuilder:printcolumn:name="Released",type=date,JSONPath=`.status.releasedAt`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LegalHold struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LegalHoldSpec   `json:"spec"`
	Status LegalHoldStatus `json:"status,omitempty"`
}

// IsActive reports whether the hold currently keeps its messages.
func (h *LegalHold) IsActive() bool { return h.Spec.Active == nil || *h.Spec.Active }

// LegalHoldList is a list of LegalHolds.
// +kubebuilder:object:root=true
type LegalHoldList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LegalHold `json:"items"`
}

func init() {
	SchemeBuilder.Register(&LegalHold{}, &LegalHoldList{})
}
