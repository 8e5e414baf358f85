// Package controllers holds the SecureText reconcilers. Each Reconcile reads like a table of
// contents: small, idempotent ensure steps, one file per concern, and one status write at the end
// that happens only when the status changed.
package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// How often a wait that no watch event ends is rechecked.
const (
	conflictRecheck    = time.Minute
	terminatingRecheck = 5 * time.Second
	conflictRetry      = 200 * time.Millisecond
	// missingSecretRecheck is how soon a Secret the spec names and that is missing is looked
	// for again.
	missingSecretRecheck = 15 * time.Second
)

// SecureTextTenantReconciler turns a SecureTextTenant into the tenant's dedicated stack.
type SecureTextTenantReconciler struct {
	client.Client
	// APIReader reads past the cache, which holds only objects the operator labelled.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Options   Options

	// vaultChecks remembers, per tenant name, the last Vault check that found everything in
	// place (a vaultCheck), so that the reconciles a rollout's Deployment status changes cause
	// do not each read all of the tenant's Vault objects again.
	vaultChecks sync.Map
	// opCerts are the operator's in-memory client certificates for the tenants' gateway status
	// endpoints (sweep_status.go).
	opCerts operatorCerts
}

// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants/status,verbs=patch
// +kubebuilder:rbac:groups=securetext.io,resources=legalholds,verbs=list;watch
// +kubebuilder:rbac:groups=securetext.io,resources=retentionpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=securetext.io,resources=retentionpolicies/status,verbs=patch
// +kubebuilder:rbac:groups=securetext.io,resources=legalholds/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get

// Reconcile brings one tenant's stack to its spec: namespace, generated Secrets, Vault,
// rendered objects, then the status, written once and only when it changed.
func (r *SecureTextTenantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tenant := &securetextv1alpha1.SecureTextTenant{}
	if err := r.Get(ctx, req.NamespacedName, tenant); err != nil {
		if apierrors.IsNotFound(err) {
			forgetTenantMetrics(req.Name)
			r.vaultChecks.Delete(req.Name)
			r.forgetOperatorCert(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tenant.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, tenant)
	}
	if err := r.ensureFinalizer(ctx, tenant); err != nil {
		return ctrl.Result{}, err
	}

	original := tenant.DeepCopy()
	st := r.ensureStack(ctx, tenant)
	// The steps may have written the tenant (the Vault finalizer): the status patch is checked
	// against that write, not against the read before it.
	original.ResourceVersion = tenant.ResourceVersion
	original.Finalizers = tenant.Finalizers
	setTenantConditions(tenant, st)
	recordTenantMetrics(tenant, st)
	if err := r.patchStatus(ctx, original, tenant); err != nil {
		if apierrors.IsConflict(err) && st.err() == nil {
			// The cache lagged behind the tenant's last write: read it again shortly.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, errors.Join(st.err(), err)
	}
	r.reportSweeps(ctx, tenant, st)

	// Waits are not failures: they requeue without error backoff or Warning events. A conflict
	// is rechecked now and then, because the foreign namespace is outside the operator's cache
	// and its removal sends no event.
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case errors.As(st.nsErr, &conflict):
		return ctrl.Result{RequeueAfter: conflictRecheck}, nil
	case errors.As(st.nsErr, &terminating):
		return ctrl.Result{RequeueAfter: terminatingRecheck}, nil
	}
	if err := st.err(); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.nextCheck(st)}, nil
}

// ensureStack runs the steps in order and returns what they observed. Nothing runs without the
// namespace, and the workloads need the generated Secrets; Vault and the workloads are
// independent, so a Vault outage does not stop the operator from repairing the network policies.
func (r *SecureTextTenantReconciler) ensureStack(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) tenantState {
	var st tenantState
	if st.nsErr = r.ensureNamespace(ctx, tenant); st.nsErr != nil {
		return st
	}
	ns := tenant.Status.Namespace
	holds, holdsErr := r.legalHolds(ctx, ns)
	if st.activeHolds = countActive(holds); holdsErr != nil {
		log.FromContext(ctx).Error(holdsErr, "list legal holds", "namespace", ns)
		st.activeHolds = -1
	}
	secretVersions := r.ensureSecrets(ctx, tenant, ns, &st)
	tv, in, err := r.tenantInputs(tenant, ns)
	if err != nil {
		st.renderErr = err
		return st
	}
	var retentionErr error
	if holdsErr == nil {
		in.Retention, st.retention, retentionErr = r.retentionSettings(ctx, tenant, holds)
		if p := in.Retention.Policy; retentionErr == nil && p != nil {
			// The policy bounds how long purged content stays in backups (keys.go in package
			// retention): the wrapping key rotates at least as often as it says.
			if tv.RotationPeriod == 0 || p.KeyRotationPeriod.D < tv.RotationPeriod {
				tv.RotationPeriod = p.KeyRotationPeriod.D
			}
		}
	}
	r.ensureVault(ctx, tenant, tv, &st)
	st.tenantVault = tv
	if st.secretsErr != nil {
		return st
	}
	in.SecretVersions = secretVersions
	st.noDatabaseEgress = !in.Database.Configured()
	if holdsErr != nil {
		// Settings without the holds could let held messages be purged: write none.
		st.applyErr = holdsErr
		return st
	}
	if retentionErr != nil {
		st.applyErr = retentionErr
		return st
	}
	st.sweepPolicy = in.Retention.Policy
	r.ensureWorkloads(ctx, tenant, in, &st)
	return st
}

// tenantState is what the steps of one reconcile observed; setTenantConditions turns it into
// the status.
type tenantState struct {
	nsErr      error
	secretsErr error
	// vaultErr is the Vault step's error; vaultOff means the operator has no Vault settings.
	vaultErr   error
	vaultOff   bool
	vaultMount string
	renderErr  error
	applyErr   error
	// noDatabaseEgress means the operator's settings name no database location, so the
	// workloads are applied without any egress to a database.
	noDatabaseEgress bool
	// pending lists components whose Deployment is not yet available, "keystore: 0/2 available".
	pending []string
	// missing lists Secrets the spec names that do not exist.
	missing []string
	// renewAt and rotateAt are when certificates and the wrapping key are due.
	renewAt, rotateAt time.Time
	// activeHolds counts the active LegalHolds in the namespace; -1 when they could not be read.
	activeHolds int32
	// retention is how the retention settings were decided; retentionWritten means that they
	// were applied with the tenant's other objects.
	retention        RetentionOutcome
	retentionWritten bool
	// sweepPolicy is the policy in the tenant's retention settings, nil for none: its sweeps
	// are reported (sweep_status.go) and looked at again every sweepInterval.
	sweepPolicy *retention.Policy
	// tenantVault is the tenant's Vault objects as the Vault step saw them; the sweep status
	// step destroys old versions of its wrapping key.
	tenantVault TenantVault
}

// err is the first failure that should be retried with backoff, labelled with its step.
func (st tenantState) err() error {
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case st.nsErr != nil && !errors.As(st.nsErr, &conflict) && !errors.As(st.nsErr, &terminating):
		return st.nsErr
	case st.secretsErr != nil:
		return st.secretsErr
	case st.applyErr != nil:
		return st.applyErr
	case st.vaultErr != nil:
		return st.vaultErr
	}
	return nil
}

// nextCheck is when a tenant whose reconcile succeeded is looked at again: the resync period,
// or earlier when a certificate or the wrapping key is due.
func (r *SecureTextTenantReconciler) nextCheck(st tenantState) time.Duration {
	next := r.resync()
	if len(st.missing) > 0 {
		// The operator cannot watch Secrets it did not label: look again soon.
		next = min(next, missingSecretRecheck)
	}
	if p := st.sweepPolicy; p != nil && p.SweepInterval.D > 0 {
		// The status of the policy and of the holds follows the sweeps.
		next = min(next, p.SweepInterval.D)
	}
	now := r.now()
	for _, at := range []time.Time{st.renewAt, st.rotateAt} {
		if !at.IsZero() {
			next = min(next, max(at.Sub(now), time.Second))
		}
	}
	return next
}
