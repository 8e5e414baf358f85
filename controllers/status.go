package controllers

// Conditions and the status write. Each condition is a pure function of what the steps
// observed (tenantState), so a table test can cover every case; setTenantConditions only writes
// them, and patchStatus writes the status once, only when it changed.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// setTenantConditions derives the conditions from what the steps observed. It is pure, so
// that the status written depends only on what was observed.
func setTenantConditions(tenant *securetextv1alpha1.SecureTextTenant, st tenantState) {
	gen := tenant.Generation
	tenant.Status.ObservedGeneration = gen
	if st.nsErr == nil && st.activeHolds >= 0 {
		tenant.Status.ActiveLegalHolds = st.activeHolds
	}
	conditions := &tenant.Status.Conditions
	if st.nsErr == nil {
		// Without the namespace no later step ran: VaultReady and WorkloadsReady keep what the
		// last reconcile that got past the namespace found.
		meta.SetStatusCondition(conditions, vaultReadyCondition(st, gen))
		meta.SetStatusCondition(conditions, workloadsReadyCondition(st, gen))
		meta.SetStatusCondition(conditions, retentionReadyCondition(st, gen))
	}
	meta.SetStatusCondition(conditions, readyCondition(st, tenant.Status.Namespace, gen))
	meta.SetStatusCondition(conditions, reconcilingCondition(st, gen))
	if stalled, ok := stalledCondition(st, gen); ok {
		meta.SetStatusCondition(conditions, stalled)
	} else {
		meta.RemoveStatusCondition(conditions, securetextv1alpha1.ConditionStalled)
	}
}

// condition is a condition observed at generation gen.
func condition(typ string, status metav1.ConditionStatus, reason, message string, gen int64) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: gen}
}

// vaultReadyCondition says whether the tenant's Vault objects match its spec. A render error
// found before the Vault step ran (a keyRotationPeriod that does not parse) explains a missing
// mount.
func vaultReadyCondition(st tenantState, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionVaultReady
	switch {
	case st.vaultOff:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonVaultNotConfigured,
			"the operator has no Vault settings (--vault-addr): the tenant's keystore has no keys", gen)
	case st.renderErr != nil && st.vaultMount == "" && st.vaultErr == nil:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonRenderFailed, st.renderErr.Error(), gen)
	case st.vaultErr != nil:
		return condition(typ, metav1.ConditionFalse, VaultReason(st.vaultErr), st.vaultErr.Error(), gen)
	}
	return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonVaultProvisioned,
		fmt.Sprintf("Transit mount %s, its keys, the keystore's policy and role match the spec", st.vaultMount), gen)
}

// workloadsReadyCondition says whether the tenant's objects are applied and its Deployments
// available; the first step that failed explains why not.
func workloadsReadyCondition(st tenantState, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionWorkloadsReady
	switch {
	case st.secretsErr != nil:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonSecretsFailed, st.secretsErr.Error(), gen)
	case st.renderErr != nil:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonRenderFailed, st.renderErr.Error(), gen)
	case st.applyErr != nil:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonApplyFailed, st.applyErr.Error(), gen)
	case st.noDatabaseEgress:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonDatabaseNotConfigured, noDatabaseEgressMessage, gen)
	case len(st.missing) > 0:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonSecretMissing,
			strings.Join(st.missing, "; ")+": create it; the pods cannot start without it", gen)
	case len(st.pending) > 0:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing,
			"waiting for "+strings.Join(st.pending, "; "), gen)
	}
	return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonWorkloadsAvailable,
		"the keystore, gateway and viewer are available", gen)
}

// retentionReadyCondition says whether the tenant's retention settings are written and carry
// its policy. It stays out of Ready (notReadyCause): without a policy the tenant serves
// messages and nothing is disposed of; the holds are written either way.
func retentionReadyCondition(st tenantState, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionRetentionReady
	switch {
	case !st.retentionWritten:
		reason, msg := securetextv1alpha1.ReasonProgressing, "the retention settings are not written yet"
		if w := workloadsReadyCondition(st, gen); w.Status != metav1.ConditionTrue {
			reason, msg = w.Reason, msg+": "+w.Message
		}
		return condition(typ, metav1.ConditionFalse, reason, msg, gen)
	case !st.retention.Applied():
		return condition(typ, metav1.ConditionFalse, st.retention.Reason, st.retention.Message, gen)
	}
	return condition(typ, metav1.ConditionTrue, st.retention.Reason, st.retention.Message, gen)
}

// noDatabaseEgressMessage says what the platform engineer sets when the operator does not know
// where the databases are.
const noDatabaseEgressMessage = "the operator does not know where the tenants' PostgreSQL databases are, so the " +
	"network policies open no database egress and the gateway and viewer cannot reach their database: " +
	"set the operator's --database-cidrs (Helm: network.databaseCIDRs) to the databases' addresses, or " +
	"--database-namespace-label and --database-pod-label (Helm: network.databaseNamespaceLabels, " +
	"network.databasePodLabels) to an in-cluster PostgreSQL's namespace and pods"

// readyCondition is the summary: True when Vault and the workloads are ready, otherwise the
// reason and message of what best explains why not (notReadyCause).
func readyCondition(st tenantState, namespace string, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionReady
	cause, notReady := notReadyCause(st)
	if !notReady {
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonReconciled,
			fmt.Sprintf("the tenant's stack in namespace %s matches its spec and is available", namespace), gen)
	}
	return condition(typ, metav1.ConditionFalse, cause.Reason, cause.Message, gen)
}

// reconcilingCondition says whether the operator is still moving the tenant towards its spec.
// It is False when the tenant is there, and also when only a person can move it on (Stalled).
func reconcilingCondition(st tenantState, gen int64) metav1.Condition {
	const typ = securetextv1alpha1.ConditionReconciling
	switch namespaceReason(st.nsErr) {
	case securetextv1alpha1.ReasonNamespaceConflict:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict,
			"waiting for the namespace conflict to be resolved", gen)
	case securetextv1alpha1.ReasonNamespaceTerminating:
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceTerminating,
			"waiting for the old namespace to be deleted", gen)
	case securetextv1alpha1.ReasonNamespaceFailed:
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, "retrying the namespace step", gen)
	}
	cause, notReady := notReadyCause(st)
	switch {
	case !notReady:
		return condition(typ, metav1.ConditionFalse, securetextv1alpha1.ReasonReconciled, "the tenant matches its spec", gen)
	case needsPerson(st):
		return condition(typ, metav1.ConditionFalse, cause.Reason, "waiting for a person: "+cause.Message, gen)
	}
	return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing, "moving the tenant towards its spec", gen)
}

// stalledCondition is the Stalled condition, in kstatus terms, when only a person can move the
// tenant on (needsPerson); false when there is none to set.
func stalledCondition(st tenantState, gen int64) (metav1.Condition, bool) {
	const typ = securetextv1alpha1.ConditionStalled
	switch {
	case !needsPerson(st):
		return metav1.Condition{}, false
	case st.nsErr != nil: // the only namespace error that needs a person: a foreign namespace
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceConflict, st.nsErr.Error(), gen), true
	case st.renderErr != nil:
		return condition(typ, metav1.ConditionTrue, securetextv1alpha1.ReasonRenderFailed, st.renderErr.Error(), gen), true
	case !vaultNeedsPerson(st):
		work := workloadsReadyCondition(st, gen)
		return condition(typ, metav1.ConditionTrue, work.Reason, work.Message, gen), true
	}
	vault := vaultReadyCondition(st, gen)
	return condition(typ, metav1.ConditionTrue, vault.Reason, vault.Message, gen), true
}

// notReadyCause is the condition whose reason and message best explain why the tenant is not
// Ready; false when it is Ready. Without the namespace nothing else ran. A Vault problem
// explains more than pods still starting: the keystore cannot become ready without Vault.
func notReadyCause(st tenantState) (metav1.Condition, bool) {
	if reason := namespaceReason(st.nsErr); reason != "" {
		return metav1.Condition{Status: metav1.ConditionFalse, Reason: reason, Message: st.nsErr.Error()}, true
	}
	vault, work := vaultReadyCondition(st, 0), workloadsReadyCondition(st, 0)
	switch {
	case vault.Status == metav1.ConditionTrue && work.Status == metav1.ConditionTrue:
		return metav1.Condition{}, false
	case vault.Status != metav1.ConditionTrue &&
		(work.Status == metav1.ConditionTrue || work.Reason == securetextv1alpha1.ReasonWorkloadsProgressing):
		return vault, true
	}
	return work, true
}

// needsPerson reports whether only a person can move the tenant on: its namespace belongs to
// someone else, a render error (a spec or operator setting), no database location in the
// operator's settings, no Vault settings, or Vault refusing or conflicting rather than being
// briefly unavailable (a change in Vault).
func needsPerson(st tenantState) bool {
	switch namespaceReason(st.nsErr) {
	case securetextv1alpha1.ReasonNamespaceConflict:
		return true
	case "":
		return st.renderErr != nil || st.noDatabaseEgress || vaultNeedsPerson(st)
	}
	return false
}

// vaultNeedsPerson reports whether the Vault step waits for a person: no Vault settings, or
// Vault refusing or conflicting.
func vaultNeedsPerson(st tenantState) bool {
	return st.vaultOff || (st.vaultErr != nil && !IsVaultTemporary(st.vaultErr))
}

// namespaceReason is the condition reason for the namespace step's error; "" for nil.
func namespaceReason(err error) string {
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case err == nil:
		return ""
	case errors.As(err, &conflict):
		return securetextv1alpha1.ReasonNamespaceConflict
	case errors.As(err, &terminating):
		return securetextv1alpha1.ReasonNamespaceTerminating
	}
	return securetextv1alpha1.ReasonNamespaceFailed
}

// patchStatus writes the status once, and only when it changed, so that a no-op reconcile makes
// no writes (patchStatusIfChanged).
func (r *SecureTextTenantReconciler) patchStatus(ctx context.Context, original, tenant *securetextv1alpha1.SecureTextTenant) error {
	return patchStatusIfChanged(ctx, r.Client, r.APIReader, original, tenant,
		func(t *securetextv1alpha1.SecureTextTenant) any { return t.Status })
}

// patchStatusIfChanged writes obj's status when it differs from original's, by a merge patch
// that carries the resourceVersion of the read (optimistic lock). When it does not differ, the
// cache may not have seen the operator's last status write yet, and status-only changes trigger
// no reconcile: the server's copy (read past the cache) decides whether a write is needed.
func patchStatusIfChanged[T client.Object](ctx context.Context, c client.Client, server client.Reader, original, obj T, status func(T) any) error {
	if equality.Semantic.DeepEqual(status(original), status(obj)) {
		live := original.DeepCopyObject().(T)
		if err := server.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
			return client.IgnoreNotFound(fmt.Errorf("read %s: %w", objectID(obj), err))
		}
		if live.GetResourceVersion() == original.GetResourceVersion() || equality.Semantic.DeepEqual(status(live), status(obj)) {
			return nil
		}
		original = live
		obj.SetResourceVersion(live.GetResourceVersion())
	}
	patch := client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{})
	if err := c.Status().Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// setDeletionCondition says on Ready why deletion does not finish.
func (r *SecureTextTenantReconciler) setDeletionCondition(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, reason, msg string) error {
	original := tenant.DeepCopy()
	tenant.Status.ObservedGeneration = tenant.Generation
	meta.SetStatusCondition(&tenant.Status.Conditions,
		condition(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg, tenant.Generation))
	return r.patchStatus(ctx, original, tenant)
}
