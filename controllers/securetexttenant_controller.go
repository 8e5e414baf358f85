// Package controllers holds the SecureText reconcilers. Each Reconcile reads like a table of
// contents: small, idempotent ensure steps, one file per concern, and one status write at the end
// that happens only when the status changed.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// How often a wait that no watch event ends is rechecked.
const (
	conflictRecheck    = time.Minute
	terminatingRecheck = 5 * time.Second
	legalHoldRecheck   = 30 * time.Second
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
}

// vaultCheck is a Vault check that found the tenant's objects in place.
type vaultCheck struct {
	resourceVersion string // of the tenant when checked
	at              time.Time
	nextRotation    time.Time
}

// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=securetext.io,resources=securetexttenants/finalizers,verbs=update
// +kubebuilder:rbac:groups=securetext.io,resources=legalholds,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=configmaps;services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies;ingresses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get

// Reconcile brings one tenant's stack to its spec: namespace, generated Secrets, Vault,
// rendered objects, then the status, written once and only when it changed.
func (r *SecureTextTenantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tenant := &securetextv1alpha1.SecureTextTenant{}
	if err := r.Get(ctx, req.NamespacedName, tenant); err != nil {
		if apierrors.IsNotFound(err) {
			forgetTenantMetrics(req.Name)
			r.vaultChecks.Delete(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tenant.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, tenant)
	}
	if controllerutil.AddFinalizer(tenant, TenantFinalizer) {
		if err := r.Update(ctx, tenant); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	original := tenant.DeepCopy()
	var st tenantState
	st.nsErr = r.reconcileNamespace(ctx, tenant)
	if st.nsErr == nil {
		r.reconcileStack(ctx, tenant, &st)
	}
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
	// pending lists components whose Deployment is not yet available, "keystore: 0/2 available".
	pending []string
	// missing lists Secrets the spec names that do not exist.
	missing []string
	// renewAt and rotateAt are when certificates and the wrapping key are due.
	renewAt, rotateAt time.Time
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
	now := r.now()
	for _, at := range []time.Time{st.renewAt, st.rotateAt} {
		if !at.IsZero() {
			next = min(next, max(at.Sub(now), time.Second))
		}
	}
	return next
}

// resync is how often an unchanged tenant is checked again (Options.Resync).
func (r *SecureTextTenantReconciler) resync() time.Duration {
	if r.Options.Resync > 0 {
		return r.Options.Resync
	}
	return DefaultResync
}

func (r *SecureTextTenantReconciler) now() time.Time {
	if r.Options.Now != nil {
		return r.Options.Now()
	}
	return time.Now()
}

// reconcileStack runs the steps after the namespace: Secrets, Vault, render and apply, then
// reads the workloads' availability and the endpoints. Vault and the objects are independent,
// so a Vault outage does not stop the operator from repairing the network policies.
func (r *SecureTextTenantReconciler) reconcileStack(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, st *tenantState) {
	ns := tenant.Status.Namespace
	secrets, err := r.ensureSecrets(ctx, tenant, ns)
	r.event(tenant, EventSecretsChanged, "EnsureSecrets", secrets.Changes)
	st.renewAt = secrets.RenewAt
	if err != nil {
		st.secretsErr = fmt.Errorf("secrets: %w", err)
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "EnsureSecrets", "%s", err)
	}

	tv, in, err := r.tenantInputs(tenant, ns)
	if err != nil {
		st.renderErr = err
		return
	}
	r.reconcileVault(ctx, tenant, tv, st)
	if st.secretsErr != nil {
		return
	}
	in.SecretVersions = secrets.Versions
	if st.missing, err = r.referencedSecrets(ctx, tenant, ns, in.SecretVersions); err != nil {
		st.applyErr = err
		return
	}
	desired, err := Render(tenant, in)
	if err != nil {
		st.renderErr = err
		return
	}
	applied, err := r.applyDesired(ctx, tenant.Name, ns, desired)
	r.event(tenant, EventWorkloadsApplied, "Apply", prefixed("applied ", applied.Applied))
	r.event(tenant, EventWorkloadsApplied, "Prune", prefixed("deleted ", applied.Pruned))
	if err != nil {
		st.applyErr = fmt.Errorf("apply: %w", err)
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "Apply", "%s", err)
		return
	}
	st.pending, err = r.pendingWorkloads(ctx, desired)
	if err != nil {
		st.applyErr = err
		return
	}
	tenant.Status.Endpoints = r.endpoints(ctx, tenant, ns)
}

// referencedSecrets reads the metadata of the Secrets the spec names (the database's, the SMS
// provider's) past the cache, which holds only what the operator labelled: their versions go
// into the config checksum, so that a changed password rolls the pods at the next reconcile.
// It returns the ones that do not exist, for the status.
func (r *SecureTextTenantReconciler) referencedSecrets(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, ns string, versions map[string]string) ([]string, error) {
	refs := []struct{ name, field string }{{tenant.Spec.Database.SecretRef.Name, "spec.database.secretRef"}}
	if ref := tenant.Spec.SMS.SecretRef; ref != nil && tenant.Spec.SMS.Provider != securetextv1alpha1.SMSConsole {
		refs = append(refs, struct{ name, field string }{ref.Name, "spec.sms.secretRef"})
	}
	var missing []string
	for _, ref := range refs {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.name}, m)
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, fmt.Sprintf("Secret %s (%s) does not exist in namespace %s", ref.name, ref.field, ns))
		case err != nil:
			return nil, fmt.Errorf("read Secret %s/%s: %w", ns, ref.name, err)
		default:
			versions[ref.name] = m.ResourceVersion
		}
	}
	return missing, nil
}

// tenantInputs are the tenant's Vault objects and render input.
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
	in.Vault.WrappingKey = tv.WrappingKey()
	in.Vault.SigningKey = tv.SigningKey()
	return tv, in, nil
}

// reconcileVault brings the tenant's Vault objects to the spec. The Vault finalizer goes on
// the tenant before the first write to Vault, so that deletion cleans up exactly the tenants
// that have something in Vault: one whose Vault objects were never made is deleted without
// waiting for Vault.
func (r *SecureTextTenantReconciler) reconcileVault(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, tv TenantVault, st *tenantState) {
	p := r.Options.Vault
	if p == nil {
		st.vaultOff = true
		return
	}
	now := r.now()
	if c, ok := r.vaultChecks.Load(tenant.Name); ok {
		// The same tenant, checked a moment ago: Vault drift is repaired at the resync, and a
		// spec or annotation change (a new resourceVersion) checks again at once.
		c := c.(vaultCheck)
		if c.resourceVersion == tenant.ResourceVersion && now.Sub(c.at) < r.resync()/2 &&
			(c.nextRotation.IsZero() || now.Before(c.nextRotation)) {
			st.vaultMount, st.rotateAt = tv.Mount(), c.nextRotation
			return
		}
	}
	if !controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
		if _, err := p.Exists(ctx, tv); err != nil {
			st.vaultErr = err
			return
		}
		if err := r.addFinalizer(ctx, tenant, VaultFinalizer); err != nil {
			st.vaultErr = err
			return
		}
	}
	res, err := p.Ensure(ctx, tv)
	r.event(tenant, EventVaultChanged, "EnsureVault", res.Changes)
	st.rotateAt = res.NextRotation
	if err != nil {
		st.vaultErr = err
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventVaultFailed, "EnsureVault", "%s", err)
		return
	}
	st.vaultMount = tv.Mount()
	r.vaultChecks.Store(tenant.Name, vaultCheck{resourceVersion: tenant.ResourceVersion, at: now, nextRotation: res.NextRotation})
}

// addFinalizer adds a finalizer to the tenant with an optimistic-lock patch. The patch is sent
// from a copy, because the answer would overwrite the status this reconcile is computing; only
// the finalizers and the new resourceVersion are taken back.
func (r *SecureTextTenantReconciler) addFinalizer(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, name string) error {
	patched := tenant.DeepCopy()
	if !controllerutil.AddFinalizer(patched, name) {
		return nil
	}
	if err := r.Patch(ctx, patched, client.MergeFromWithOptions(tenant, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("add finalizer %s: %w", name, err)
	}
	tenant.Finalizers = patched.Finalizers
	tenant.ResourceVersion = patched.ResourceVersion
	return nil
}

// pendingWorkloads lists the Deployments that are not yet available with every replica
// updated to the current template.
func (r *SecureTextTenantReconciler) pendingWorkloads(ctx context.Context, d Desired) ([]string, error) {
	var pending []string
	for _, want := range d.Deployments {
		var dep appsv1.Deployment
		if err := r.Get(ctx, client.ObjectKeyFromObject(want), &dep); err != nil {
			if apierrors.IsNotFound(err) {
				pending = append(pending, want.Name+": not created yet")
				continue
			}
			return nil, fmt.Errorf("read Deployment %s: %w", want.Name, err)
		}
		if msg, ok := deploymentAvailable(&dep); !ok {
			pending = append(pending, dep.Name+": "+msg)
		}
	}
	return pending, nil
}

// deploymentAvailable reports whether a Deployment's rollout is complete and its pods are
// available (the checks of kubectl rollout status).
func deploymentAvailable(dep *appsv1.Deployment) (string, bool) {
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	s := dep.Status
	switch {
	case s.ObservedGeneration < dep.Generation:
		return "the new spec is not observed yet", false
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want), false
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas are terminating", s.Replicas-s.UpdatedReplicas), false
	case s.AvailableReplicas < want:
		return fmt.Sprintf("%d of %d replicas available", s.AvailableReplicas, want), false
	}
	return "", true
}

// endpoints are where senders and patients reach the tenant. The SMTP endpoint of a
// LoadBalancer Service is known once the load balancer has an address.
func (r *SecureTextTenantReconciler) endpoints(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, ns string) securetextv1alpha1.Endpoints {
	var ep securetextv1alpha1.Endpoints
	ep.Viewer = "https://" + tenant.Spec.Hostnames.Viewer
	if tenant.Spec.API.Enabled == nil || *tenant.Spec.API.Enabled {
		host := tenant.Spec.Hostnames.API
		if host == "" {
			host = tenant.Spec.Hostnames.Viewer
		}
		ep.API = "https://" + host + "/v1"
	}
	var svc corev1.Service
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: ServiceGatewaySMTP}, &svc); err != nil || len(svc.Spec.Ports) == 0 {
		return ep
	}
	port := svc.Spec.Ports[0]
	switch svc.Spec.Type {
	case corev1.ServiceTypeLoadBalancer:
		for _, in := range svc.Status.LoadBalancer.Ingress {
			host := in.Hostname
			if host == "" {
				host = in.IP
			}
			if host != "" {
				ep.SMTP = net.JoinHostPort(host, strconv.Itoa(int(port.Port)))
				break
			}
		}
	case corev1.ServiceTypeNodePort:
		if port.NodePort != 0 {
			ep.SMTP = "<node address>:" + strconv.Itoa(int(port.NodePort))
		}
	default:
		ep.SMTP = net.JoinHostPort(svc.Name+"."+ns+".svc", strconv.Itoa(int(port.Port)))
	}
	return ep
}

// event records one Normal event listing changes; nothing when there are none.
func (r *SecureTextTenantReconciler) event(tenant *securetextv1alpha1.SecureTextTenant, reason, action string, changes []string) {
	if len(changes) == 0 {
		return
	}
	r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, reason, action, "%s", strings.Join(changes, "; "))
}

func prefixed(prefix string, items []string) []string {
	if len(items) == 0 {
		return nil
	}
	return []string{prefix + strings.Join(items, ", ")}
}

// reconcileNamespace is the namespace step with its events.
func (r *SecureTextTenantReconciler) reconcileNamespace(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) error {
	name := tenant.TargetNamespace()
	changed, created, err := r.ensureNamespace(ctx, tenant)
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	switch {
	case errors.As(err, &conflict):
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventNamespaceConflict, "EnsureNamespace", "%s", err)
	case errors.As(err, &terminating):
	case err != nil:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "EnsureNamespace", "%s", err)
	case created:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceCreated, "EnsureNamespace",
			"created namespace %s with Pod Security restricted enforced", name)
	case changed:
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceUpdated, "EnsureNamespace",
			"repaired the labels of namespace %s", name)
	}
	if err == nil {
		tenant.Status.Namespace = name
	}
	return err
}

// setTenantConditions derives the conditions from what the steps observed. It is pure, so
// that the status written depends only on what was observed.
func setTenantConditions(tenant *securetextv1alpha1.SecureTextTenant, st tenantState) {
	gen := tenant.Generation
	tenant.Status.ObservedGeneration = gen
	set := func(condType string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&tenant.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: gen,
		})
	}
	var conflict errNamespaceConflict
	var terminating errNamespaceTerminating
	nsErr := st.nsErr
	switch {
	case errors.As(nsErr, &conflict):
		// Only a person can fix this: Stalled, in kstatus terms, rather than still reconciling.
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceConflict,
			"waiting for the namespace conflict to be resolved")
		set(securetextv1alpha1.ConditionStalled, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceConflict, nsErr.Error())
		return
	case errors.As(nsErr, &terminating):
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceTerminating, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionTrue, securetextv1alpha1.ReasonNamespaceTerminating,
			"waiting for the old namespace to be deleted")
		meta.RemoveStatusCondition(&tenant.Status.Conditions, securetextv1alpha1.ConditionStalled)
		return
	case nsErr != nil:
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, securetextv1alpha1.ReasonNamespaceFailed, nsErr.Error())
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing,
			"retrying the namespace step")
		meta.RemoveStatusCondition(&tenant.Status.Conditions, securetextv1alpha1.ConditionStalled)
		return
	}

	// VaultReady.
	vault := metav1.Condition{Status: metav1.ConditionTrue, Reason: securetextv1alpha1.ReasonVaultProvisioned,
		Message: fmt.Sprintf("Transit mount %s, its keys, the keystore's policy and role match the spec", st.vaultMount)}
	switch {
	case st.vaultOff:
		vault = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonVaultNotConfigured,
			Message: "the operator has no Vault settings (--vault-addr): the tenant's keystore has no keys"}
	case st.renderErr != nil && st.vaultMount == "" && st.vaultErr == nil:
		vault = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonRenderFailed, Message: st.renderErr.Error()}
	case st.vaultErr != nil:
		vault = metav1.Condition{Status: metav1.ConditionFalse, Reason: VaultReason(st.vaultErr), Message: st.vaultErr.Error()}
	}
	set(securetextv1alpha1.ConditionVaultReady, vault.Status, vault.Reason, vault.Message)

	// WorkloadsReady.
	work := metav1.Condition{Status: metav1.ConditionTrue, Reason: securetextv1alpha1.ReasonWorkloadsAvailable,
		Message: "the keystore, gateway and viewer are available"}
	switch {
	case st.secretsErr != nil:
		work = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonSecretsFailed, Message: st.secretsErr.Error()}
	case st.renderErr != nil:
		work = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonRenderFailed, Message: st.renderErr.Error()}
	case st.applyErr != nil:
		work = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonApplyFailed, Message: st.applyErr.Error()}
	case len(st.missing) > 0:
		work = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonSecretMissing,
			Message: strings.Join(st.missing, "; ") + ": create it; the pods cannot start without it"}
	case len(st.pending) > 0:
		work = metav1.Condition{Status: metav1.ConditionFalse, Reason: securetextv1alpha1.ReasonWorkloadsProgressing,
			Message: "waiting for " + strings.Join(st.pending, "; ")}
	}
	set(securetextv1alpha1.ConditionWorkloadsReady, work.Status, work.Reason, work.Message)

	// Ready summarises; Stalled when only a person can help (a render error is a spec or
	// operator setting, a Vault conflict or refusal needs a change in Vault).
	stalled := st.renderErr != nil || st.vaultOff || (st.vaultErr != nil && !IsVaultTemporary(st.vaultErr))
	switch {
	case vault.Status == metav1.ConditionTrue && work.Status == metav1.ConditionTrue:
		set(securetextv1alpha1.ConditionReady, metav1.ConditionTrue, securetextv1alpha1.ReasonReconciled,
			fmt.Sprintf("the tenant's stack in namespace %s matches its spec and is available", tenant.Status.Namespace))
		set(securetextv1alpha1.ConditionReconciling, metav1.ConditionFalse, securetextv1alpha1.ReasonReconciled,
			"the tenant matches its spec")
	default:
		// A Vault problem explains more than pods still starting: the keystore cannot become
		// ready without Vault.
		first := work
		if vault.Status != metav1.ConditionTrue && (work.Status == metav1.ConditionTrue || work.Reason == securetextv1alpha1.ReasonWorkloadsProgressing) {
			first = vault
		}
		set(securetextv1alpha1.ConditionReady, metav1.ConditionFalse, first.Reason, first.Message)
		if stalled {
			set(securetextv1alpha1.ConditionReconciling, metav1.ConditionFalse, first.Reason, "waiting for a person: "+first.Message)
		} else {
			set(securetextv1alpha1.ConditionReconciling, metav1.ConditionTrue, securetextv1alpha1.ReasonProgressing,
				"moving the tenant towards its spec")
		}
	}
	if stalled {
		msg := vault.Message
		reason := vault.Reason
		if st.renderErr != nil {
			msg, reason = st.renderErr.Error(), securetextv1alpha1.ReasonRenderFailed
		}
		set(securetextv1alpha1.ConditionStalled, metav1.ConditionTrue, reason, msg)
		return
	}
	meta.RemoveStatusCondition(&tenant.Status.Conditions, securetextv1alpha1.ConditionStalled)
}

// patchStatus writes the status once, and only when it changed, so that a no-op reconcile makes
// no writes. The merge patch carries the resourceVersion of the read (optimistic lock).
func (r *SecureTextTenantReconciler) patchStatus(ctx context.Context, original, tenant *securetextv1alpha1.SecureTextTenant) error {
	if equality.Semantic.DeepEqual(original.Status, tenant.Status) {
		// The cache may not have seen the operator's last status write yet, and status-only
		// changes trigger no reconcile: the server's copy decides whether a write is needed.
		live := &securetextv1alpha1.SecureTextTenant{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(tenant), live); err != nil {
			return client.IgnoreNotFound(fmt.Errorf("read tenant: %w", err))
		}
		if live.ResourceVersion == original.ResourceVersion || equality.Semantic.DeepEqual(live.Status, tenant.Status) {
			return nil
		}
		original = live
		tenant.ResourceVersion = live.ResourceVersion
	}
	patch := client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{})
	if err := r.Status().Patch(ctx, tenant, patch); err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// finalize removes what the operator made for a deleted tenant, then releases it:
//   - deletion waits while an active LegalHold is in the namespace, because deleting the
//     namespace would delete the hold without an audited release, and Shred would destroy
//     what the hold preserves;
//   - the tenant's Vault objects: Retain removes the keystore's role and policy and keeps the
//     Transit keys; Shred destroys the keys (crypto-shredding). A tenant without the Vault
//     finalizer never had anything in Vault and does not wait for it;
//   - the namespace, with everything the operator rendered in it.
//
// The orphan annotation, or a SecureTextTenant CRD that is itself being deleted (a CRD
// reinstall), skips all of it: the namespace, its data and Vault stay as they are.
func (r *SecureTextTenantReconciler) finalize(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(tenant, TenantFinalizer) && !controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
		return ctrl.Result{}, nil
	}
	orphan, why, err := r.orphaned(ctx, tenant)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !orphan {
		namespace := tenant.Status.Namespace
		if namespace == "" {
			namespace = tenant.TargetNamespace()
		}
		holds, err := r.activeLegalHolds(ctx, tenant, namespace)
		if err != nil {
			return ctrl.Result{}, err
		}
		if len(holds) > 0 {
			what := "deletion waits"
			if tenant.Spec.DeletionPolicy == securetextv1alpha1.DeletionShred {
				what = "Shred is refused"
			}
			msg := fmt.Sprintf("%s: active LegalHolds %v in namespace %s; release them (spec.active: false) "+
				"or set the annotation %s=true on the tenant to keep the namespace and the keys", what, holds, namespace, AnnotationOrphan)
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventDeletionBlocked, "Finalize", "%s", msg)
			return ctrl.Result{RequeueAfter: legalHoldRecheck}, r.setDeletionCondition(ctx, tenant, securetextv1alpha1.ReasonLegalHoldActive, msg)
		}
		if controllerutil.ContainsFinalizer(tenant, VaultFinalizer) {
			if err := r.cleanUpVault(ctx, tenant, namespace); err != nil {
				msg := fmt.Sprintf("deletion waits for Vault: %s; set the annotation %s=true on the tenant to delete it "+
					"without cleaning up Vault", err, AnnotationOrphan)
				return ctrl.Result{}, errors.Join(err, r.setDeletionCondition(ctx, tenant, VaultReason(err), msg))
			}
		}
		deleted, err := r.deleteNamespace(ctx, tenant)
		if err != nil {
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "Finalize", "%s", err)
			return ctrl.Result{}, err
		}
		if deleted {
			r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventNamespaceDeleted, "Finalize",
				"deleting namespace %s", namespace)
		}
	} else {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventOrphaned, "Finalize",
			"kept namespace %s and the tenant's Vault objects: %s", tenant.Status.Namespace, why)
	}
	log.FromContext(ctx).Info("tenant cleaned up", "orphaned", orphan)
	controllerutil.RemoveFinalizer(tenant, TenantFinalizer)
	controllerutil.RemoveFinalizer(tenant, VaultFinalizer)
	if err := r.Update(ctx, tenant); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("remove finalizer: %w", err))
	}
	forgetTenantMetrics(tenant.Name)
	r.vaultChecks.Delete(tenant.Name)
	return ctrl.Result{}, nil
}

// orphaned reports whether deletion must leave the tenant's namespace and Vault objects alone.
func (r *SecureTextTenantReconciler) orphaned(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant) (bool, string, error) {
	if tenant.Annotations[AnnotationOrphan] == "true" {
		return true, "the tenant has the annotation " + AnnotationOrphan + "=true", nil
	}
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	err := r.APIReader.Get(ctx, client.ObjectKey{Name: tenantCRDName}, crd)
	switch {
	case apierrors.IsNotFound(err):
		return true, "the SecureTextTenant CRD is gone", nil
	case err != nil:
		return false, "", fmt.Errorf("read CRD %s: %w", tenantCRDName, err)
	case !crd.DeletionTimestamp.IsZero():
		return true, "the SecureTextTenant CRD is being deleted (a reinstall deletes every tenant; their stacks are kept)", nil
	}
	return false, "", nil
}

// tenantCRDName is the SecureTextTenant CRD's name.
const tenantCRDName = "securetexttenants." + "securetext.io"

// cleanUpVault runs the tenant's deletion policy in Vault, then drops the Vault finalizer.
func (r *SecureTextTenantReconciler) cleanUpVault(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, namespace string) error {
	p := r.Options.Vault
	if p == nil {
		return &VaultError{Op: "clean up", Reason: securetextv1alpha1.ReasonVaultNotConfigured,
			Err: errors.New("the operator has no Vault settings, but the tenant has objects in Vault")}
	}
	tv, _, err := r.tenantInputs(tenant, namespace)
	if err != nil {
		return err
	}
	var res VaultResult
	if tenant.Spec.DeletionPolicy == securetextv1alpha1.DeletionShred {
		res, err = p.Shred(ctx, tv)
	} else {
		res, err = p.Remove(ctx, tv)
	}
	r.event(tenant, EventVaultChanged, "Finalize", res.Changes)
	if err != nil {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventVaultFailed, "Finalize", "%s", err)
		return err
	}
	before := tenant.DeepCopy()
	controllerutil.RemoveFinalizer(tenant, VaultFinalizer)
	if err := r.Patch(ctx, tenant, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("remove finalizer %s: %w", VaultFinalizer, err)
	}
	return nil
}

// setDeletionCondition says on Ready why deletion does not finish.
func (r *SecureTextTenantReconciler) setDeletionCondition(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, reason, msg string) error {
	original := tenant.DeepCopy()
	tenant.Status.ObservedGeneration = tenant.Generation
	meta.SetStatusCondition(&tenant.Status.Conditions, metav1.Condition{Type: securetextv1alpha1.ConditionReady,
		Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: tenant.Generation})
	return r.patchStatus(ctx, original, tenant)
}

// SetupWithManager registers the reconciler. Nothing the operator makes carries an owner
// reference to the tenant: a cluster-scoped owner would let garbage collection delete a
// tenant's stack (and its Secrets) when the CRD is reinstalled. The tenant label maps an
// event on a child back to its tenant instead, so a deleted or edited child is repaired at once.
func (r *SecureTextTenantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toTenant := handler.EnqueueRequestsFromMapFunc(tenantOfLabelledObject)
	b := ctrl.NewControllerManagedBy(mgr).
		For(&securetextv1alpha1.SecureTextTenant{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Namespace{}, toTenant).
		Watches(&corev1.Secret{}, toTenant, builder.OnlyMetadata).
		Watches(&securetextv1alpha1.LegalHold{}, handler.EnqueueRequestsFromMapFunc(r.tenantOfNamespacedObject))
	for _, obj := range ownedObjects() {
		b = b.Watches(obj, toTenant)
	}
	workers := r.Options.MaxConcurrentReconciles
	if workers <= 0 {
		workers = 4
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("securetexttenant").
		Complete(r)
}

// tenantOfNamespacedObject maps an object in a tenant's namespace (a LegalHold) to its tenant,
// so that releasing a hold lets a waiting deletion finish at once.
func (r *SecureTextTenantReconciler) tenantOfNamespacedObject(ctx context.Context, obj client.Object) []reconcile.Request {
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: obj.GetNamespace()}, &ns); err != nil {
		return nil // not a namespace the operator made (the cache holds only those)
	}
	return tenantOfLabelledObject(ctx, &ns)
}

// tenantOfLabelledObject maps an object the operator labelled to its tenant.
func tenantOfLabelledObject(_ context.Context, obj client.Object) []reconcile.Request {
	tenant := obj.GetLabels()[LabelTenant]
	if tenant == "" || obj.GetLabels()[LabelManagedBy] != ManagedByValue {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: tenant}}}
}
