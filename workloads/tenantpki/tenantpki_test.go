package tenantpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustCA(t testing.TB, tenant string, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(tenant, now)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", tenant, err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA=%v valid=%v MaxPathLen=%d zero=%v, want a CA with path length 0",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA key usage %v lacks cert sign", c.KeyUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(now); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
		t.Errorf("CA lives %v, want about ten years", life)
	}
	if n := c.SerialNumber.BitLen(); n == 0 || n > 128 {
		t.Errorf("serial has %d bits, want 1..128", n)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if !strings.Contains(c.Subject.CommonName, "acme") {
		t.Errorf("CA subject %q does not name the tenant", c.Subject.CommonName)
	}
}

func TestNewCARejectsBadTenant(t *testing.T) {
	for _, tenant := range []string{"", "Acme", "ac_me", "-acme", "acme-", "a.b", strings.Repeat("a", 64)} {
		if _, err := NewCA(tenant, time.Now()); err == nil {
			t.Errorf("NewCA(%q) succeeded, want an error", tenant)
		}
	}
}

func TestIssueClient(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	cert, err := ca.IssueClient("acme", ComponentGateway, now, time.Hour)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	leaf := cert.Leaf
	if len(cert.Certificate) != 1 || leaf == nil || cert.PrivateKey == nil {
		t.Fatalf("IssueClient returned %d certificates, leaf %v, key %T", len(cert.Certificate), leaf != nil, cert.PrivateKey)
	}
	if want := "spiffe://securetext.io/tenant/acme/gateway"; len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("URI SANs = %v, want [%s]", leaf.URIs, want)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("extended key usage = %v, want client auth only", leaf.ExtKeyUsage)
	}
	if leaf.IsCA || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
		t.Errorf("client certificate is a CA or names hosts: IsCA=%v DNS=%v IP=%v", leaf.IsCA, leaf.DNSNames, leaf.IPAddresses)
	}
	if n := leaf.SerialNumber.BitLen(); n == 0 || n > 128 {
		t.Errorf("serial has %d bits, want 1..128", n)
	}
	tenant, component, err := Identity(leaf)
	if err != nil || tenant != "acme" || component != "gateway" {
		t.Errorf("Identity = %q, %q, %v; want acme, gateway", tenant, component, err)
	}
	if _, err := VerifyClientChain(ca.CertPool(), []*x509.Certificate{leaf}, now); err != nil {
		t.Errorf("client certificate does not verify against its CA: %v", err)
	}

	other, err := ca.IssueClient("acme", ComponentGateway, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if other.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
}

func TestIssueClientRefusesBadNames(t *testing.T) {
	ca := mustCA(t, "acme", time.Now())
	for _, tc := range []struct{ tenant, component string }{
		{"", "gateway"}, {"acme", ""}, {"Acme", "gateway"}, {"acme", "Gateway"},
		{"acme/x", "gateway"}, {"acme", "gate/way"}, {"acme", "gateway?x"},
	} {
		if _, err := ca.IssueClient(tc.tenant, tc.component, time.Now(), time.Hour); err == nil {
			t.Errorf("IssueClient(%q, %q) succeeded, want an error", tc.tenant, tc.component)
		}
	}
}

func TestIssueRefusesBadValidity(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	for _, v := range []time.Duration{0, -time.Hour, 11 * 365 * 24 * time.Hour} {
		if _, err := ca.IssueClient("acme", "gateway", now, v); err == nil {
			t.Errorf("IssueClient with validity %v succeeded, want an error", v)
		}
	}
	if _, err := ca.IssueServer(nil, nil, now, time.Hour); err == nil {
		t.Error("IssueServer without names succeeded, want an error")
	}
}

// TestClientCertificateVerification covers what the server checks in every handshake:
// the chain, the validity period and the key usage.
func TestClientCertificateVerification(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	otherCA := mustCA(t, "acme", now)
	client, err := ca.IssueClient("acme", "gateway", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.IssueServer([]string{"keystore.acme.svc"}, nil, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.IssueClient("acme", "gateway", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	intermediate, leafOfIntermediate := issueThroughIntermediate(t, ca, now)

	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		at    time.Time
		cause string // "" means it verifies
	}{
		{"valid", []*x509.Certificate{client.Leaf}, now, ""},
		{"expired", []*x509.Certificate{client.Leaf}, now.Add(2 * time.Hour), "expired-or-not-yet-valid"},
		{"not yet valid", []*x509.Certificate{client.Leaf}, now.Add(-time.Hour), "expired-or-not-yet-valid"},
		{"server certificate", []*x509.Certificate{server.Leaf}, now, "not-for-client-auth"},
		{"another CA", []*x509.Certificate{foreign.Leaf}, now, "unknown-authority"},
		{"through an intermediate (MaxPathLen 0)", []*x509.Certificate{leafOfIntermediate, intermediate}, now, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyClientChain(ca.CertPool(), tc.chain, tc.at)
			switch {
			case tc.cause == "" && err != nil:
				t.Errorf("verify: %v, want success", err)
			case tc.cause != "" && err == nil:
				t.Errorf("verify succeeded, want failure (%s)", tc.cause)
			case tc.cause != "" && UntrustedCause(err) != tc.cause:
				t.Errorf("cause = %q (%v), want %q", UntrustedCause(err), err, tc.cause)
			}
		})
	}
}

// issueThroughIntermediate makes what the CA's MaxPathLen 0 forbids: an intermediate CA signed
// by ca, and a client certificate signed by that intermediate.
func issueThroughIntermediate(t *testing.T, ca *CA, now time.Time) (intermediate, leaf *x509.Certificate) {
	t.Helper()
	ikey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := newSerial()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "rogue intermediate"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, ca.cert, ikey.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	intermediate, _ = x509.ParseCertificate(der)
	lkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ = newSerial()
	der, err = x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		URIs:        []*url.URL{SPIFFEID("acme", "gateway")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, intermediate, lkey.Public(), ikey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return intermediate, leaf
}

func TestIssueServer(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	cert, err := ca.IssueServer([]string{"keystore.acme.svc", "keystore.acme.svc.cluster.local"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"keystore.acme.svc", "keystore.acme.svc.cluster.local", "127.0.0.1"} {
		_, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.CertPool(), DNSName: name, CurrentTime: now})
		if err != nil {
			t.Errorf("server certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.CertPool(), DNSName: "keystore.other.svc", CurrentTime: now}); err == nil {
		t.Error("server certificate verifies for a name it does not carry")
	}
	if len(cert.Leaf.ExtKeyUsage) != 1 || cert.Leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("extended key usage = %v, want server auth only", cert.Leaf.ExtKeyUsage)
	}
}

func TestPEMRoundTrip(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, "acme", now)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	// A certificate issued by the loaded CA verifies against a pool read from the PEM.
	pool, err := CertPoolFromPEM(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	client, err := loaded.IssueClient("acme", "viewer", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := KeyPEM(client)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(CertPEM(client), leafKey)
	if err != nil {
		t.Fatalf("X509KeyPair of CertPEM/KeyPEM: %v", err)
	}
	if _, err := VerifyClientChain(pool, []*x509.Certificate{pair.Leaf}, now); err != nil {
		t.Errorf("client certificate from loaded CA does not verify: %v", err)
	}

	other := mustCA(t, "acme", now)
	otherKey, _ := other.KeyPEM()
	if _, err := LoadCA(ca.CertPEM(), otherKey); err == nil {
		t.Error("LoadCA accepted a key that does not belong to the certificate")
	}
	if _, err := LoadCA(CertPEM(client), leafKey); err == nil {
		t.Error("LoadCA accepted a leaf certificate as a CA")
	}
	if _, err := CertPoolFromPEM(nil); err == nil {
		t.Error("CertPoolFromPEM(nil) succeeded, want an error")
	}
	if _, err := CertPoolFromPEM(leafKey); err == nil {
		t.Error("CertPoolFromPEM of a key succeeded, want an error")
	}
}

func TestIdentity(t *testing.T) {
	withURIs := func(raw ...string) *x509.Certificate {
		c := &x509.Certificate{DNSNames: []string{"gateway.acme"}}
		for _, r := range raw {
			u, err := url.Parse(r)
			if err != nil {
				t.Fatalf("parse %q: %v", r, err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	const good = "spiffe://securetext.io/tenant/acme/gateway"
	ok, _, err := Identity(withURIs(good))
	if err != nil || ok != "acme" {
		t.Fatalf("Identity(%s) = %q, %v", good, ok, err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"nil certificate", nil},
		{"no URI SAN", withURIs()},
		{"two securetext SANs", withURIs(good, "spiffe://securetext.io/tenant/acme/viewer")},
		{"a second, foreign URI", withURIs(good, "https://example.com/")},
		{"https scheme", withURIs("https://securetext.io/tenant/acme/gateway")},
		{"other trust domain", withURIs("spiffe://securetext.io.evil.example/tenant/acme/gateway")},
		{"upper-case trust domain", withURIs("spiffe://SECURETEXT.IO/tenant/acme/gateway")},
		{"port", withURIs("spiffe://securetext.io:443/tenant/acme/gateway")},
		{"user", withURIs("spiffe://admin@securetext.io/tenant/acme/gateway")},
		{"query", withURIs(good + "?component=viewer")},
		{"empty query", withURIs(good + "?")},
		{"fragment", withURIs(good + "#viewer")},
		{"percent-encoded slash", withURIs("spiffe://securetext.io/tenant/ac%2Fme/gateway")},
		{"percent-encoded letter", withURIs("spiffe://securetext.io/tenant/%61cme/gateway")},
		{"opaque", withURIs("spiffe:securetext.io/tenant/acme/gateway")},
		{"trailing slash", withURIs(good + "/")},
		{"extra segment", withURIs(good + "/x")},
		{"missing component", withURIs("spiffe://securetext.io/tenant/acme")},
		{"empty tenant", withURIs("spiffe://securetext.io/tenant//gateway")},
		{"wrong first segment", withURIs("spiffe://securetext.io/tenants/acme/gateway")},
		{"dot segment", withURIs("spiffe://securetext.io/tenant/../gateway")},
		{"upper-case tenant", withURIs("spiffe://securetext.io/tenant/Acme/gateway")},
		{"underscore in tenant", withURIs("spiffe://securetext.io/tenant/ac_me/gateway")},
		{"leading hyphen", withURIs("spiffe://securetext.io/tenant/-acme/gateway")},
		{"trailing hyphen in component", withURIs("spiffe://securetext.io/tenant/acme/gateway-")},
		{"64-character tenant", withURIs("spiffe://securetext.io/tenant/" + strings.Repeat("a", 64) + "/gateway")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tenant, component, err := Identity(tc.cert)
			if err == nil {
				t.Errorf("Identity = %q, %q, nil; want an error", tenant, component)
			}
		})
	}
	if tenant, _, err := Identity(withURIs("spiffe://securetext.io/tenant/" + strings.Repeat("a", 63) + "/gateway")); err != nil || len(tenant) != 63 {
		t.Errorf("63-character tenant refused: %v", err)
	}
	if _, _, err := Identity(withURIs()); err == nil || !strings.Contains(err.Error(), "spiffe://securetext.io/tenant/") {
		t.Errorf("error for a certificate without SAN does not say what is expected: %v", err)
	}
}
