package controllers_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// statusAddrs maps a tenant namespace to the loopback address of its gateway's status server,
// for the tests that start one; envtest runs no pods.
var statusAddrs sync.Map

// sweepStatusAddress is the suite operator's Options.SweepStatusAddress: a registered server,
// else a closed loopback port (refused at once).
func sweepStatusAddress(_, ns string) string {
	if a, ok := statusAddrs.Load(ns); ok {
		return a.(string)
	}
	return "127.0.0.1:1"
}

// startGatewayStatus serves the real gateway status server of tenant on a real store, with
// the certificate the operator generated (Secret gateway-status-tls, from the tenant CA).
func startGatewayStatus(t *testing.T, tenant, ns string) *store.Store {
	t.Helper()
	var sec corev1.Secret
	eventually(t, "Secret "+controllers.SecretGatewayStatusTLS, func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.SecretGatewayStatusTLS}, &sec)
	})
	cert, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	roots, err := tenantpki.CertPoolFromPEM(sec.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "tenant.db"), tenant)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	srv, err := gateway.NewStatusServer(gateway.StatusConfig{Tenant: tenant, Certificate: cert, ClientCAs: roots, Sweeps: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	statusAddrs.Store(ns, ln.Addr().String())
	t.Cleanup(func() { statusAddrs.Delete(ns); _ = hs.Close() })
	return st
}

// TestSweepStatusFlowsBack: a Ready tenant's gateway reports its last sweep; the operator reads
// it over mutual TLS with its own identity and writes it into the RetentionPolicy's status
// (per tenant and summed), the LegalHold's heldMessages and, for a sweep with errors, an event.
func TestSweepStatusFlowsBack(t *testing.T) {
	ctx := context.Background()
	const name, ns = "swept", "securetext-swept"
	policy := newPolicy("swept-standard", "720h")
	policy.Spec.SweepInterval = "1m"
	tenantWithPolicy(t, name, ns, policy)
	hold := newHold(ns, "matter-9", "+12025550143")
	createCleaned(t, k8s, hold)
	other := newHold(ns, "matter-10", "+12025550144")
	createCleaned(t, k8s, other)

	st := startGatewayStatus(t, name, ns)
	finished := time.Now().UTC().Truncate(time.Second)
	sweep := retention.Result{
		Started: finished.Add(-time.Minute), Finished: finished, Policy: policy.Name, Generation: policy.Generation,
		LinksExpired: 5, MessagesPurged: 3, MessagesHeld: 4, HeldByHold: map[string]int{"matter-9": 4}, Errors: 2,
	}
	if err := st.SaveSweep(ctx, retention.RecordName, sweep); err != nil {
		t.Fatal(err)
	}
	readyAgain(t, name, ns)

	wantPolicy := func(what string, want securetextv1alpha1.RetentionPolicyTenantStatus) {
		t.Helper()
		eventually(t, what, func() error {
			var p securetextv1alpha1.RetentionPolicy
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
				return err
			}
			s := p.Status
			if len(s.Tenants) != 1 {
				return fmt.Errorf("tenants %+v, want one", s.Tenants)
			}
			got := s.Tenants[0]
			if got.Name != want.Name || got.LastSweepTime == nil || !got.LastSweepTime.Equal(want.LastSweepTime) ||
				got.LinksExpired != want.LinksExpired || got.MessagesPurged != want.MessagesPurged ||
				got.MessagesHeld != want.MessagesHeld || got.Errors != want.Errors {
				return fmt.Errorf("tenant status %+v, want %+v", got, want)
			}
			if s.LastSweepTime == nil || !s.LastSweepTime.Equal(want.LastSweepTime) || s.LinksExpired != want.LinksExpired ||
				s.MessagesPurged != want.MessagesPurged || s.MessagesHeld != want.MessagesHeld {
				return fmt.Errorf("policy sums %+v, want those of the one tenant", s)
			}
			return nil
		})
	}
	wantHeld := func(h *securetextv1alpha1.LegalHold, want int64) {
		t.Helper()
		eventually(t, h.Name+" heldMessages", func() error {
			var got securetextv1alpha1.LegalHold
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(h), &got); err != nil {
				return err
			}
			if got.Status.HeldMessages != want {
				return fmt.Errorf("heldMessages %d, want %d", got.Status.HeldMessages, want)
			}
			return nil
		})
	}
	at := func(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }

	wantPolicy("the sweep in the policy's status", securetextv1alpha1.RetentionPolicyTenantStatus{
		Name: name, LastSweepTime: at(finished), LinksExpired: 5, MessagesPurged: 3, MessagesHeld: 4, Errors: 2})
	wantHeld(hold, 4)
	wantHeld(other, 0)
	eventually(t, "a SweepErrors event", func() error {
		if n := eventReasons(t, name)[controllers.EventSweepErrors]; n == 0 {
			return fmt.Errorf("no %s event yet", controllers.EventSweepErrors)
		}
		return nil
	})

	// The next sweep replaces the last one everywhere.
	next := retention.Result{
		Started: finished.Add(time.Minute), Finished: finished.Add(2 * time.Minute), Policy: policy.Name,
		LinksExpired: 1, MessagesHeld: 2, HeldByHold: map[string]int{"matter-9": 1, "matter-10": 1},
	}
	if err := st.SaveSweep(ctx, retention.RecordName, next); err != nil {
		t.Fatal(err)
	}
	poke(t, name)
	wantPolicy("the next sweep in the policy's status", securetextv1alpha1.RetentionPolicyTenantStatus{
		Name: name, LastSweepTime: at(next.Finished), LinksExpired: 1, MessagesHeld: 2})
	wantHeld(hold, 1)
	wantHeld(other, 1)
}

// A tenant that is deleted leaves its policy's status at once, not at another tenant's next
// sweep, and the sums drop with it.
func TestDeletedTenantLeavesPolicyStatus(t *testing.T) {
	ctx := context.Background()
	const name, ns = "swept-gone", "securetext-swept-gone"
	policy := newPolicy("swept-gone-standard", "720h")
	policy.Spec.SweepInterval = "1m"
	tenant := tenantWithPolicy(t, name, ns, policy)
	st := startGatewayStatus(t, name, ns)
	finished := time.Now().UTC().Truncate(time.Second)
	if err := st.SaveSweep(ctx, retention.RecordName, retention.Result{Started: finished.Add(-time.Minute), Finished: finished,
		Policy: policy.Name, MessagesPurged: 7}); err != nil {
		t.Fatal(err)
	}
	readyAgain(t, name, ns)
	tenants := func(want int, purged int64) func() error {
		return func() error {
			var p securetextv1alpha1.RetentionPolicy
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
				return err
			}
			if len(p.Status.Tenants) != want || p.Status.MessagesPurged != purged {
				return fmt.Errorf("tenants %+v, purged %d; want %d tenants, %d purged", p.Status.Tenants, p.Status.MessagesPurged, want, purged)
			}
			return nil
		}
	}
	eventually(t, "the tenant in the policy's status", tenants(1, 7))
	if err := k8s.Delete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted tenant out of the policy's status", tenants(0, 0))
}
