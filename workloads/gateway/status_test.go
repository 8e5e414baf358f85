package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

const statusServerName = "gateway.st-clinic-a.svc"

// startStatus serves a StatusServer of tenant clinic-a, on a real store, on loopback.
func startStatus(t *testing.T, ca *tenantpki.CA) (addr string, st *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "tenant.db"), "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	cert, err := ca.IssueServer([]string{statusServerName}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.NewStatusServer(gateway.StatusConfig{Tenant: "clinic-a", Certificate: cert, ClientCAs: ca.CertPool(), Sweeps: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String(), st
}

// getStatus asks for the retention status with client certificate cert (none when nil).
func getStatus(t *testing.T, ca *tenantpki.CA, addr string, cert *tls.Certificate) (*http.Response, error) {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.CertPool(), ServerName: statusServerName}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + addr + retention.StatusPath)
	if err == nil {
		t.Cleanup(func() { _ = resp.Body.Close() })
	}
	return resp, err
}

func TestStatusServerServesOnlyTheOperator(t *testing.T) {
	ca, err := tenantpki.NewCA("clinic-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := tenantpki.NewCA("clinic-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr, st := startStatus(t, ca)
	client := func(ca *tenantpki.CA, tenant, component string) *tls.Certificate {
		c, err := ca.IssueClient(tenant, component, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	operator := client(ca, "clinic-a", tenantpki.ComponentOperator)

	// Before the first sweep: served, with no sweep.
	resp, err := getStatus(t, ca, addr, operator)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("operator before any sweep: %v, %v; want 200", resp, err)
	}
	var got retention.Status
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.Tenant != "clinic-a" || got.LastSweep != nil {
		t.Fatalf("status before any sweep: %+v, %v; want tenant clinic-a and no sweep", got, err)
	}

	sweep := retention.Result{
		Started: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), Finished: time.Date(2026, 3, 1, 9, 1, 0, 0, time.UTC),
		Policy: "hipaa-standard", Generation: 2, LinksExpired: 4, MessagesPurged: 3, MessagesHeld: 2,
		HeldByHold: map[string]int{"matter-1": 2}, Errors: 1,
	}
	if err := st.SaveSweep(context.Background(), retention.RecordName, sweep); err != nil {
		t.Fatal(err)
	}
	resp, err = getStatus(t, ca, addr, operator)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("operator: %v, %v; want 200", resp, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	got = retention.Status{}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.LastSweep == nil || !reflect.DeepEqual(*got.LastSweep, sweep) {
		t.Fatalf("status: %+v, %v; want the saved sweep %+v", got, err, sweep)
	}

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want int // 0: the handshake fails
	}{
		{"no certificate", nil, http.StatusUnauthorized},
		{"another CA", client(otherCA, "clinic-a", tenantpki.ComponentOperator), 0},
		{"the gateway's identity", client(ca, "clinic-a", tenantpki.ComponentGateway), http.StatusForbidden},
		{"the viewer's identity", client(ca, "clinic-a", tenantpki.ComponentViewer), http.StatusForbidden},
		{"another tenant's operator", client(ca, "clinic-b", tenantpki.ComponentOperator), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := getStatus(t, ca, addr, tc.cert)
			if tc.want == 0 {
				var opErr *net.OpError
				if err == nil || !(errors.As(err, &opErr) || isTLSAlert(err)) {
					t.Fatalf("got %v, %v; want the handshake refused", resp, err)
				}
				return
			}
			if err != nil || resp.StatusCode != tc.want {
				t.Fatalf("got %v, %v; want %d", resp, err, tc.want)
			}
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if _, leaked := body["lastSweep"]; leaked {
				t.Errorf("a refused caller got the status: %v", body)
			}
		})
	}
}

func isTLSAlert(err error) bool {
	var alert tls.AlertError
	return errors.As(err, &alert)
}
