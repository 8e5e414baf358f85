package controllers

// The workloads step of a tenant's reconcile: render the tenant's objects from its spec
// (render*.go), apply them (apply.go), then read whether the Deployments are available and
// where the tenant is reached.

import (
	"context"
	"fmt"
	"net"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// ensureWorkloads renders the tenant's objects, applies them, prunes what it no longer
// renders, and records the workloads' availability and the tenant's endpoints. in carries the
// generated Secrets' versions; the versions of the Secrets the spec names are added to it.
func (r *SecureTextTenantReconciler) ensureWorkloads(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, in RenderInput, st *tenantState) {
	ns := tenant.Status.Namespace
	var err error
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
	st.retentionWritten = true
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
