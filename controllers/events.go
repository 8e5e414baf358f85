package controllers

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// Event reasons, one per kind of change the operator makes or refuses to make.
const (
	EventNamespaceCreated  = "NamespaceCreated"
	EventNamespaceUpdated  = "NamespaceUpdated"
	EventNamespaceConflict = "NamespaceConflict"
	EventNamespaceDeleted  = "NamespaceDeleted"
	EventReconcileFailed   = "ReconcileFailed"
	EventDeletionBlocked   = "DeletionBlocked"
	EventSecretsChanged    = "SecretsChanged"
	EventVaultChanged      = "VaultChanged"
	EventVaultFailed       = "VaultFailed"
	EventWorkloadsApplied  = "WorkloadsApplied"
	EventOrphaned          = "Orphaned"
	// EventKeyVersionsDestroyed: old versions of the tenant's wrapping key were destroyed, so
	// content purged before them is gone from every copy of the database.
	EventKeyVersionsDestroyed = "KeyVersionsDestroyed"
)

// event records one Normal event listing changes; nothing when there are none.
func (r *SecureTextTenantReconciler) event(tenant *securetextv1alpha1.SecureTextTenant, reason, action string, changes []string) {
	if len(changes) == 0 {
		return
	}
	r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, reason, action, "%s", strings.Join(changes, "; "))
}

// prefixed joins items into one change for an event, "applied A, B"; none when items is empty.
func prefixed(prefix string, items []string) []string {
	if len(items) == 0 {
		return nil
	}
	return []string{prefix + strings.Join(items, ", ")}
}
