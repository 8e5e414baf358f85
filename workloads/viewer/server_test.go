package viewer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/tenantpki"
)

func TestRun(t *testing.T) {
	f := newFixture(t, sqliteBackend, fixtureOptions{})
	_, link := f.message(phoneA, "S", "run text")
	now := time.Now()
	ca, err := tenantpki.NewCA("clinic-a", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.Viewer.cfg
	cfg.HashParams = password.Params{} // Run refuses test parameters
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	cfg.Addr, cfg.HTTPAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	started := make(chan Addrs, 1)
	cfg.Started = func(a Addrs) { started <- a }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	var addrs Addrs
	select {
	case addrs = <-started:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not start")
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	get := func(c *http.Client, url string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz", "/m/" + link} {
		resp, body := get(httpsClient, "https://"+addrs.HTTPS+p)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HTTPS %s: %d %s", p, resp.StatusCode, body)
		}
		checkHeaders(t, "HTTPS "+p, resp.Header)
	}
	// The loopback development listener: the same pages, cookies without __Host- and Secure.
	resp, body := get(http.DefaultClient, "http://"+addrs.HTTP+"/m/"+link)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have a secure message") {
		t.Errorf("HTTP landing: %d", resp.StatusCode)
	}
	checkHeaders(t, "HTTP landing", resp.Header)
	for _, c := range resp.Cookies() {
		if c.Name != devCSRFCookie || c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("development cookie %+v", c)
		}
	}
	resp, body = get(http.DefaultClient, "http://"+addrs.Metrics+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `securetext_viewer_page_views_total{page="landing"}`) ||
		!strings.Contains(body, `securetext_viewer_request_duration_seconds_count{code="200",method="GET",route="GET /m/{token}"}`) {
		t.Errorf("metrics lack the viewer's series:\n%s", body)
	}
	if strings.Contains(body, link) {
		t.Error("a link token appears in the metrics")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}

	for name, mutate := range map[string]func(*Config){
		"public plain HTTP": func(c *Config) { c.Addr, c.HTTPAddr = "", "0.0.0.0:0" },
		"HTTPS without TLS": func(c *Config) { c.TLS = nil },
		"cheap hashes":      func(c *Config) { c.HashParams = cheapHash },
	} {
		c := cfg
		c.Started = nil
		mutate(&c)
		if err := Run(context.Background(), c); err == nil {
			t.Errorf("%s: Run started", name)
		}
	}
}
