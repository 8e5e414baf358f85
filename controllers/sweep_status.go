package controllers

// The sweep status step: how each tenant's last retention sweep reaches the RetentionPolicy's
// status (per tenant, and the sums), the LegalHolds' heldMessages, and an event on the tenant.
//
// The workloads have no Kubernetes API credentials, and must not get any for this: a stolen
// gateway token would then reach the API server. So the operator asks instead. Every gateway
// replica serves the tenant's last sweep, which the sweeper that held the lease kept in the
// tenant's database, on a status port (gateway.StatusServer) that:
//   - speaks mutual TLS under the tenant CA: the gateway's certificate is Secret
//     gateway-status-tls (secrets.go), for the gateway Service's name;
//   - serves only a client certificate naming spiffe://securetext.io/tenant/<tenant>/operator;
//   - admits, by exactly one NetworkPolicy rule, the operator's pods only (render_network.go).
//
// The operator's client certificate is minted in memory from the tenant CA, valid for a day,
// and never written anywhere: a Secret holding it would let whoever reads the tenant's Secrets
// speak as the operator, and it would need renewing like the others. The operator reads the
// CA's key already (it signs the tenant's certificates), so minting adds no privilege.
//
// A failed read is a Warning event on the tenant and nothing else: it never fails or delays
// the reconcile of the rest of the stack.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// Events of the sweep status step.
const (
	EventSweepStatusUnavailable = "SweepStatusUnavailable"
	EventSweepErrors            = "SweepErrors"
)

const (
	// DefaultSweepStatusTimeout bounds one read of a tenant's sweep status.
	DefaultSweepStatusTimeout = 5 * time.Second
	// operatorCertValidity is the life of the operator's in-memory client certificates; they
	// are minted again when a third of it is left.
	operatorCertValidity = 24 * time.Hour
	// maxStatusBody caps the status answer: counts and a few hold names.
	maxStatusBody = 256 << 10
)

// sweepStatusAddress is where the operator reads the sweep status of the tenant in ns
// (Options.SweepStatusAddress, by default the gateway Service's status port).
func (r *SecureTextTenantReconciler) sweepStatusAddress(tenant, ns string) string {
	if r.Options.SweepStatusAddress != nil {
		return r.Options.SweepStatusAddress(tenant, ns)
	}
	return GatewayStatusDNSNames(ns)[0] + ":" + strconv.Itoa(int(portGatewayStatus))
}

// operatorCert is the operator's client certificate for one tenant, and the tenant CA.
type operatorCert struct {
	caVersion string
	cert      tls.Certificate
	roots     *x509.CertPool
}

// operatorCerts caches the operator's client certificates by tenant.
type operatorCerts struct {
	mu    sync.Mutex
	certs map[string]operatorCert
}

// operatorCert returns the operator's client certificate for tenant, minting one from the
// tenant CA when there is none, the CA Secret changed, or a third of its life is left.
func (r *SecureTextTenantReconciler) operatorCert(ctx context.Context, tenant, ns string) (operatorCert, error) {
	s := &secretStep{c: r.Client, reader: r.APIReader}
	s.ns = ns
	caMeta, err := s.meta(ctx, SecretTenantCA)
	if err != nil {
		return operatorCert{}, err
	}
	if caMeta == nil {
		return operatorCert{}, fmt.Errorf("no tenant CA (Secret %s/%s) yet", ns, SecretTenantCA)
	}
	now := r.now()
	r.opCerts.mu.Lock()
	c, ok := r.opCerts.certs[tenant]
	r.opCerts.mu.Unlock()
	if ok && c.caVersion == caMeta.ResourceVersion && now.Before(renewalTime(c.cert.Leaf.NotAfter, operatorCertValidity)) {
		return c, nil
	}
	ca, version, err := s.loadCA(ctx)
	if err != nil {
		return operatorCert{}, err
	}
	cert, err := ca.IssueClient(tenant, tenantpki.ComponentOperator, now, operatorCertValidity)
	if err != nil {
		return operatorCert{}, err
	}
	c = operatorCert{caVersion: version, cert: cert, roots: ca.CertPool()}
	r.opCerts.mu.Lock()
	if r.opCerts.certs == nil {
		r.opCerts.certs = map[string]operatorCert{}
	}
	r.opCerts.certs[tenant] = c
	r.opCerts.mu.Unlock()
	return c, nil
}

// forgetOperatorCert drops the operator's certificate of a deleted tenant.
func (r *SecureTextTenantReconciler) forgetOperatorCert(tenant string) {
	r.opCerts.mu.Lock()
	delete(r.opCerts.certs, tenant)
	r.opCerts.mu.Unlock()
}

// readSweepStatus asks the tenant's gateway for its last sweep over mutual TLS.
func (r *SecureTextTenantReconciler) readSweepStatus(ctx context.Context, tenant, ns string) (retention.Status, error) {
	c, err := r.operatorCert(ctx, tenant, ns)
	if err != nil {
		return retention.Status{}, fmt.Errorf("make the operator's client certificate: %w", err)
	}
	timeout := r.Options.SweepStatusTimeout
	if timeout <= 0 {
		timeout = DefaultSweepStatusTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c.cert}, RootCAs: c.roots,
			// The Service's name, whatever address the request goes to (tests dial loopback).
			ServerName: GatewayStatusDNSNames(ns)[0],
		},
		DisableKeepAlives: true,
	}
	defer transport.CloseIdleConnections()
	url := "https://" + r.sweepStatusAddress(tenant, ns) + retention.StatusPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return retention.Status{}, err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return retention.Status{}, fmt.Errorf("read %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	if err != nil {
		return retention.Status{}, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return retention.Status{}, fmt.Errorf("read %s: %s: %.200s", url, resp.Status, body)
	}
	var st retention.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return retention.Status{}, fmt.Errorf("read %s: decode: %w", url, err)
	}
	if st.Tenant != tenant {
		return retention.Status{}, fmt.Errorf("read %s: the answer is of tenant %q", url, st.Tenant)
	}
	return st, nil
}

// reportSweeps is the sweep status step of a Ready tenant with a policy: it reads the last
// sweep and writes it into the policy's and the holds' status. Failures are events only.
func (r *SecureTextTenantReconciler) reportSweeps(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, ts tenantState) {
	policy := ts.sweepPolicy
	ns := tenant.Status.Namespace
	if policy == nil || ns == "" || !meta.IsStatusConditionTrue(tenant.Status.Conditions, securetextv1alpha1.ConditionReady) {
		return
	}
	st, err := r.readSweepStatus(ctx, tenant.Name, ns)
	if err != nil {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventSweepStatusUnavailable, "ReadSweepStatus",
			"could not read the last retention sweep from the gateway: %s; the RetentionPolicy's and LegalHolds' status stay as they were", err)
		return
	}
	last := st.LastSweep
	if last == nil || last.Skipped != "" || last.Finished.IsZero() {
		return // no sweep ran yet
	}
	fresh, err := r.recordSweepInPolicy(ctx, policy.Name, tenant.Name, *last)
	if err != nil {
		log.FromContext(ctx).Error(err, "write the last retention sweep into the policy's status", "policy", policy.Name)
	}
	if fresh && last.Errors > 0 {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventSweepErrors, "RetentionSweep",
			"the retention sweep that finished at %s had %d failed store calls (the gateway's log names them); the next sweep tries again",
			last.Finished.UTC().Format(time.RFC3339), last.Errors)
	}
	if err := r.recordSweepInHolds(ctx, ns, *last); err != nil {
		log.FromContext(ctx).Error(err, "write held messages into the legal holds' status", "namespace", ns)
	}
	r.trimWrappingKey(ctx, tenant, ts, last.Keys)
}

// trimWrappingKey destroys the versions of the tenant's wrapping key that no stored message
// needs any more, as the last sweep reported (vault_trim.go).
func (r *SecureTextTenantReconciler) trimWrappingKey(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, ts tenantState, keys *retention.KeyStatus) {
	p := r.Options.Vault
	if p == nil || ts.vaultErr != nil || keys == nil || !keys.Trims || keys.Floor <= keys.MinAvailable {
		return
	}
	trim, err := p.TrimWrappingKey(ctx, ts.tenantVault, keys.Floor)
	if err != nil {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventVaultFailed, "TrimWrappingKey",
			"could not destroy the versions of the wrapping key below %d that no stored message needs: %s; purged content stays recoverable from backups until this succeeds", keys.Floor, err)
		return
	}
	if trim.Destroyed > 0 {
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeNormal, EventKeyVersionsDestroyed, "TrimWrappingKey",
			"destroyed the versions of Transit key %s/keys/%s below %d: content purged before %s can no longer be decrypted from any copy of the database",
			ts.tenantVault.Mount(), ts.tenantVault.WrappingKey(), trim.Destroyed, trim.Since.UTC().Format(time.RFC3339))
	}
}

// recordSweepInPolicy writes the tenant's last sweep into the policy's status, read past the
// cache and patched with an optimistic lock (several tenants write one policy). It reports
// whether the sweep was new to the status.
func (r *SecureTextTenantReconciler) recordSweepInPolicy(ctx context.Context, policyName, tenant string, last retention.Result) (bool, error) {
	var users securetextv1alpha1.SecureTextTenantList
	if err := r.List(ctx, &users, client.MatchingFields{indexRetentionPolicy: policyName}); err != nil {
		return false, fmt.Errorf("list the tenants of policy %s: %w", policyName, err)
	}
	using := map[string]bool{tenant: true}
	for _, t := range users.Items {
		using[t.Name] = true
	}
	fresh := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &securetextv1alpha1.RetentionPolicy{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Name: policyName}, p); err != nil {
			return client.IgnoreNotFound(err)
		}
		original := p.DeepCopy()
		fresh = setPolicyTenantStatus(&p.Status, tenant, last, using)
		if equality.Semantic.DeepEqual(original.Status, p.Status) {
			return nil
		}
		return r.Status().Patch(ctx, p, client.MergeFromWithOptions(original, client.MergeFromWithOptimisticLock{}))
	})
	return fresh, err
}

// setPolicyTenantStatus puts tenant's last sweep into a policy's status, drops the tenants
// that no longer use the policy, and sums the rest. It reports whether the sweep is newer
// than the one the status held for tenant.
func setPolicyTenantStatus(st *securetextv1alpha1.RetentionPolicyStatus, tenant string, last retention.Result, using map[string]bool) bool {
	entry := securetextv1alpha1.RetentionPolicyTenantStatus{
		Name: tenant, LastSweepTime: &metav1.Time{Time: last.Finished.UTC().Truncate(time.Second)},
		LinksExpired: int64(last.LinksExpired), MessagesPurged: int64(last.MessagesPurged),
		MessagesHeld: int64(last.MessagesHeld), Errors: int64(last.Errors),
	}
	fresh := true
	for _, t := range st.Tenants {
		if t.Name == tenant {
			fresh = t.LastSweepTime == nil || entry.LastSweepTime.After(t.LastSweepTime.Time)
		}
	}
	keepPolicyTenants(st, func() map[string]bool {
		others := maps.Clone(using)
		delete(others, tenant)
		return others
	}())
	st.Tenants = append(st.Tenants, entry)
	sumPolicyTenants(st)
	return fresh
}

// keepPolicyTenants drops from a policy's status the tenants that are not in using (deleted,
// or moved to another policy) and sums the rest again.
func keepPolicyTenants(st *securetextv1alpha1.RetentionPolicyStatus, using map[string]bool) {
	st.Tenants = slices.DeleteFunc(st.Tenants, func(t securetextv1alpha1.RetentionPolicyTenantStatus) bool { return !using[t.Name] })
	sumPolicyTenants(st)
}

// sumPolicyTenants sorts the tenants of a policy's status by name and sets the top-level sums.
func sumPolicyTenants(st *securetextv1alpha1.RetentionPolicyStatus) {
	kept := st.Tenants
	sort.Slice(kept, func(i, j int) bool { return kept[i].Name < kept[j].Name })
	st.LastSweepTime, st.LinksExpired, st.MessagesPurged, st.MessagesHeld = nil, 0, 0, 0
	for _, t := range kept {
		if t.LastSweepTime != nil && (st.LastSweepTime == nil || t.LastSweepTime.After(st.LastSweepTime.Time)) {
			st.LastSweepTime = t.LastSweepTime.DeepCopy()
		}
		st.LinksExpired += t.LinksExpired
		st.MessagesPurged += t.MessagesPurged
		st.MessagesHeld += t.MessagesHeld
	}
}

// recordSweepInHolds sets heldMessages of every hold in ns from the last sweep: how many
// messages it kept (0 for a hold that kept none, or that the sweep did not know yet).
func (r *SecureTextTenantReconciler) recordSweepInHolds(ctx context.Context, ns string, last retention.Result) error {
	holds, err := r.legalHolds(ctx, ns)
	if err != nil {
		return err
	}
	var errs []error
	for i := range holds {
		h := &holds[i]
		want := int64(last.HeldByHold[h.Name])
		if h.Status.HeldMessages == want {
			continue
		}
		original := h.DeepCopy()
		h.Status.HeldMessages = want
		if err := patchStatusIfChanged(ctx, r.Client, r.APIReader, original, h,
			func(h *securetextv1alpha1.LegalHold) any { return h.Status }); err != nil {
			errs = append(errs, fmt.Errorf("legal hold %s/%s: %w", ns, h.Name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}
