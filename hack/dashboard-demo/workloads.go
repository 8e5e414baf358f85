package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// pki is the demo tenant's CA on disk, with the certificates the workloads present on
// loopback, as the operator's tenant CA issues them in a cluster.
type pki struct {
	ca                              *tenantpki.CA
	caFile                          string
	keystoreCert, keystoreKey       string
	gatewayClient, gatewayClientKey string
	viewerClient, viewerClientKey   string
	serverCert, serverKey           string // the gateway's SMTP STARTTLS and API certificate
}

func writePKI(dir string) (*pki, error) {
	now := time.Now()
	ca, err := tenantpki.NewCA(workloadTenant, now)
	if err != nil {
		return nil, err
	}
	p := &pki{ca: ca, caFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(p.caFile, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	write := func(name string, issue func() (tls.Certificate, error)) (string, string, error) {
		cert, err := issue()
		if err != nil {
			return "", "", err
		}
		key, err := tenantpki.KeyPEM(cert)
		if err != nil {
			return "", "", err
		}
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := os.WriteFile(c, tenantpki.CertPEM(cert), 0o644); err != nil {
			return "", "", err
		}
		return c, k, os.WriteFile(k, key, 0o600)
	}
	server := func() (tls.Certificate, error) {
		return ca.IssueServer([]string{"localhost"}, loopback, now, 24*time.Hour)
	}
	client := func(component string) func() (tls.Certificate, error) {
		return func() (tls.Certificate, error) { return ca.IssueClient(workloadTenant, component, now, 24*time.Hour) }
	}
	if p.keystoreCert, p.keystoreKey, err = write("keystore", server); err != nil {
		return nil, err
	}
	if p.serverCert, p.serverKey, err = write("gateway", server); err != nil {
		return nil, err
	}
	if p.gatewayClient, p.gatewayClientKey, err = write("gateway-client", client(tenantpki.ComponentGateway)); err != nil {
		return nil, err
	}
	if p.viewerClient, p.viewerClientKey, err = write("viewer-client", client(tenantpki.ComponentViewer)); err != nil {
		return nil, err
	}
	return p, nil
}

// senderCredentials makes the sender "ehr" and writes the senders file the gateway reads.
type senderCredentials struct {
	file, smtpUser, smtpPassword, apiKey string
}

func writeSenders(ctx context.Context, dir string) (senderCredentials, error) {
	c := senderCredentials{file: filepath.Join(dir, "senders.yaml"), smtpUser: "ehr@clinic.demo.example"}
	snd, pass, key, err := gateway.NewCredentials(ctx, senderID, c.smtpUser)
	if err != nil {
		return c, err
	}
	c.smtpPassword, c.apiKey = pass, key
	b, err := yaml.Marshal(gateway.SendersFile{Senders: []gateway.Sender{snd}})
	if err != nil {
		return c, err
	}
	return c, os.WriteFile(c.file, b, 0o600)
}

// startWorkloads runs the demo tenant's keystore (Vault Transit, Kubernetes auth), viewer and
// gateway (PostgreSQL, console SMS) from bin/securetext, as the operator's Deployments run
// them. The console texts go to texts as well as to the logs.
func (s *stack) startWorkloads(ctx context.Context, cp *controlPlane, a listenAddrs, pk *pki, snd senderCredentials, login keystoreLogin, texts io.Writer) error {
	bin := filepath.Join(s.bin, "securetext")
	tv := login.vault
	ks, err := s.startProc("keystore", bin, nil, "keystore",
		"-tenant", workloadTenant, "-listen", a.keystore, "-metrics-addr", a.keystoreMetrics,
		"-tls-cert", pk.keystoreCert, "-tls-key", pk.keystoreKey, "-client-ca", pk.caFile,
		"-vault-addr", cp.vault.Addr, "-vault-auth", "kubernetes", "-vault-role", tv.RoleName(),
		"-vault-jwt-file", login.jwtFile,
		"-transit-mount", tv.Mount(), "-state-mount", tv.StateMount(),
		"-wrapping-key", tv.WrappingKey(), "-signing-key", tv.SigningKey())
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+a.keystoreMetrics+"/metrics", ks); err != nil {
		return err
	}
	common := func(clientCert, clientKey string) []string {
		return []string{"-tenant", workloadTenant, "-tenant-name", tenantName, "-database-url", cp.dsn,
			"-keystore-url", "https://" + a.keystore, "-keystore-cert", clientCert, "-keystore-key", clientKey, "-keystore-ca", pk.caFile,
			"-sms-provider", "console"}
	}
	viewerArgs := append([]string{"viewer"}, common(pk.viewerClient, pk.viewerClientKey)...)
	viewerArgs = append(viewerArgs, "-addr=", "-http-addr", a.viewer, "-metrics-addr", a.viewerMetrics,
		// The load driver stands in for an ingress controller on loopback: it names each
		// patient's own address in X-Forwarded-For, so the per-address throttle sees patients.
		"-trusted-proxies", "127.0.0.1/32", "-support-phone", "(202) 555-0100")
	vw, err := s.startProc("viewer", bin, texts, viewerArgs...)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+a.viewerMetrics+"/metrics", vw); err != nil {
		return err
	}
	gwArgs := append([]string{"gateway"}, common(pk.gatewayClient, pk.gatewayClientKey)...)
	gwArgs = append(gwArgs, "-text-domain", textDomain,
		"-tls-cert", pk.serverCert, "-tls-key", pk.serverKey, "-senders-file", snd.file,
		"-smtp-addr", a.smtp, "-api-addr", a.api, "-metrics-addr", a.gatewayMetrics,
		"-viewer-url", "http://"+a.viewer,
		// Checkpoints every half minute, so that the keystore's checkpoint calls show up.
		"-audit-checkpoint-interval", "30s")
	gw, err := s.startProc("gateway", bin, texts, gwArgs...)
	if err != nil {
		return err
	}
	return waitHTTP(ctx, "http://"+a.gatewayMetrics+"/metrics", gw)
}

// prometheusConfig scrapes the operator and the demo tenant's workloads every interval. The
// workloads' series get the tenant and component labels that the chart's PodMonitor copies
// from their pods' labels (securetext.io/tenant, app.kubernetes.io/component).
func prometheusConfig(a listenAddrs, interval time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nscrape_configs:\n", interval, interval)
	fmt.Fprintf(&b, "  - job_name: securetext-operator\n    static_configs:\n      - targets: [%q]\n", a.operatorMetrics)
	b.WriteString("  - job_name: securetext-workloads\n    static_configs:\n")
	for _, t := range []struct{ component, addr string }{
		{"keystore", a.keystoreMetrics}, {"gateway", a.gatewayMetrics}, {"viewer", a.viewerMetrics},
	} {
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {tenant: %q, component: %q}\n", t.addr, workloadTenant, t.component)
	}
	return b.String()
}

// startPrometheus runs Debian's prometheus with its storage in dir.
func (s *stack) startPrometheus(ctx context.Context, a listenAddrs, interval time.Duration) (promClient, error) {
	cfg := filepath.Join(s.dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(prometheusConfig(a, interval)), 0o644); err != nil {
		return promClient{}, err
	}
	path, err := findPrometheus()
	if err != nil {
		return promClient{}, err
	}
	p, err := s.startProc("prometheus", path, nil,
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(s.dir, "tsdb"),
		"--web.listen-address="+a.prometheus, "--storage.tsdb.retention.time=1d")
	if err != nil {
		return promClient{}, err
	}
	c := promClient{base: "http://" + a.prometheus, http: httpClient(30 * time.Second)}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.ready(rctx); err != nil {
		return c, fmt.Errorf("%w\n%v", err, p.running())
	}
	return c, nil
}

func findPrometheus() (string, error) {
	for _, p := range []string{"/usr/bin/prometheus"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("prometheus is not installed: apt-get install -y prometheus (then keep its service stopped)")
}
