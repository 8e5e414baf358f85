package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

const pollInterval = 250 * time.Millisecond

// measurement is what one run observed between the first Create and the List that found every
// tenant VaultReady=True.
type measurement struct {
	tenants []string
	// namespaces are the tenants' status.namespace, for the checks in Vault.
	namespaces map[string]string

	created   time.Duration // the N Creates
	elapsed   time.Duration // first Create to all VaultReady
	t50, t90  time.Duration // first Create to half and 90 % VaultReady (at poll resolution)
	metrics   metricsDelta
	cpu       cpuDelta
	benchReqs map[string]int // the bench client's requests by method during the run
	mem       memory
	// load is the machine's load average before the run.
	load string
	// errorLines are the first errors the operator logged, for the notes, of errorTotal.
	errorLines []string
	errorTotal int
}

// measure creates the tenants, waits until all are VaultReady=True, and takes the counters and
// the memory at that moment.
func measure(ctx context.Context, o options, s *stack) (*measurement, error) {
	m := &measurement{namespaces: map[string]string{}, load: loadAvg()}
	for i := range o.tenants {
		m.tenants = append(m.tenants, fmt.Sprintf("bench-%03d", i))
	}

	before, err := gather()
	if err != nil {
		return nil, err
	}
	cpuBefore := takeCPU()
	s.requests.reset()

	logf("creating %d SecureTextTenants", o.tenants)
	start := time.Now()
	for _, name := range m.tenants {
		if err := s.k8s.Create(ctx, newTenant(name)); err != nil {
			return nil, fmt.Errorf("create tenant %s: %w", name, err)
		}
	}
	m.created = time.Since(start)
	logf("created %d tenants in %s; waiting for VaultReady=True on all", o.tenants, m.created.Round(time.Millisecond))

	half, ninety := (o.tenants+1)/2, (9*o.tenants+9)/10
	var list securetextv1alpha1.SecureTextTenantList
	lastLog := start
	for {
		list = securetextv1alpha1.SecureTextTenantList{} // decode each answer into a fresh list
		if err := s.k8s.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		now := time.Since(start)
		ready := 0
		for i := range list.Items {
			if vaultReady(&list.Items[i]) {
				ready++
			}
		}
		if ready >= half && m.t50 == 0 {
			m.t50 = now
		}
		if ready >= ninety && m.t90 == 0 {
			m.t90 = now
		}
		if ready == o.tenants {
			m.elapsed = now
			break
		}
		if stopped, err := s.managerErr(); stopped {
			return nil, fmt.Errorf("the operator stopped after %s with %d of %d tenants VaultReady: %v", now.Round(time.Second), ready, o.tenants, err)
		}
		if now > o.timeout {
			return nil, fmt.Errorf("only %d of %d tenants VaultReady=True after %s; %s", ready, o.tenants, o.timeout, notReady(list.Items))
		}
		if time.Since(lastLog) >= 10*time.Second {
			logf("%d of %d tenants VaultReady after %s", ready, o.tenants, now.Round(time.Second))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	after, err := gather()
	if err != nil {
		return nil, err
	}
	m.cpu = cpuSince(cpuBefore)
	m.benchReqs = s.requests.snapshot()
	m.metrics = after.since(before)
	for _, t := range list.Items {
		m.namespaces[t.Name] = t.Status.Namespace
	}
	logf("all %d tenants VaultReady=True %s after the first Create", o.tenants, m.elapsed.Round(time.Millisecond))

	// Memory at N tenants, once the garbage of the burst is collected.
	runtime.GC()
	m.mem = readMemory()
	return m, nil
}

// newTenant is a minimal valid tenant, as in controllers/securetexttenant_controller_test.go.
func newTenant(name string) *securetextv1alpha1.SecureTextTenant {
	return &securetextv1alpha1.SecureTextTenant{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: securetextv1alpha1.SecureTextTenantSpec{
			Development: true,
			DisplayName: "Bench Clinic " + name,
			TextDomain:  "text." + name + ".example",
			Hostnames:   securetextv1alpha1.Hostnames{Viewer: "view." + name + ".example"},
			Branding:    securetextv1alpha1.Branding{SupportContact: "(202) 555-0100"},
			SMS:         securetextv1alpha1.SMSSpec{Provider: securetextv1alpha1.SMSConsole},
			Database:    securetextv1alpha1.DatabaseSpec{SecretRef: securetextv1alpha1.SecretKeyRef{Name: "db"}},
		},
	}
}

// vaultReady is VaultReady=True for the tenant's current generation.
func vaultReady(t *securetextv1alpha1.SecureTextTenant) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, securetextv1alpha1.ConditionVaultReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == t.Generation
}

// notReady summarises why tenants are not VaultReady: how many per reason, and one message
// of each reason.
func notReady(tenants []securetextv1alpha1.SecureTextTenant) string {
	count := map[string]int{}
	example := map[string]string{}
	for i := range tenants {
		t := &tenants[i]
		if vaultReady(t) {
			continue
		}
		reason, msg := "no VaultReady condition", ""
		if c := meta.FindStatusCondition(t.Status.Conditions, securetextv1alpha1.ConditionVaultReady); c != nil {
			reason, msg = string(c.Status)+"/"+c.Reason, c.Message
		}
		count[reason]++
		if _, ok := example[reason]; !ok {
			example[reason] = t.Name + ": " + msg
		}
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%d with VaultReady %s (e.g. %s)", count[r], r, example[r]))
	}
	if len(parts) == 0 {
		return "every listed tenant is ready, but some are missing"
	}
	return strings.Join(parts, "; ")
}

// requestCounter counts a client's API requests by method.
type requestCounter struct {
	mu       sync.Mutex
	byMethod map[string]int
}

func (c *requestCounter) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if c.byMethod == nil {
			c.byMethod = map[string]int{}
		}
		c.byMethod[req.Method]++
		c.mu.Unlock()
		return next.RoundTrip(req)
	})
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	c.byMethod = map[string]int{}
	c.mu.Unlock()
}

func (c *requestCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byMethod)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

var errVerify = errors.New("the operator's Vault objects are not as expected")
