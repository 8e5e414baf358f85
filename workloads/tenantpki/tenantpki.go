// Package tenantpki is a tenant's PKI: the CA that the operator creates per tenant and the
// certificates it issues, which authenticate the keystore's callers over mutual TLS (see the
// keystore's Server for why).
//
// Per tenant the operator creates one CA (NewCA, kept in a Kubernetes Secret), one server
// certificate for the keystore Service's DNS names (IssueServer) and one client certificate per
// calling component (IssueClient). A client certificate names its caller with exactly one URI
// SAN, a SPIFFE ID (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md):
//
//	spiffe://securetext.io/tenant/<tenant>/<component>
//
// Every key is ECDSA P-256 and every serial number is 128 bits from crypto/rand
// (CA/Browser Forum BR §7.1 asks for at least 64).
package tenantpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Callers of the keystore, as named in client certificates.
const (
	ComponentGateway = "gateway"
	ComponentViewer  = "viewer"
)

const (
	// TrustDomain is the SPIFFE trust domain of every SecureText identity.
	TrustDomain = "securetext.io"

	// caValidity is long because rotating the CA means re-issuing every certificate of the
	// tenant; leaf certificates are short-lived and re-issued by the operator instead.
	caValidity = 10 * 365 * 24 * time.Hour
	// clockSkew back-dates NotBefore so that a pod whose clock is a little behind the
	// operator's accepts a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
)

// CA is one tenant's certificate authority for keystore mutual TLS. It can sign leaf
// certificates only (MaxPathLen 0): no intermediate can be made from it.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates the CA of tenant, valid for about ten years from now.
func NewCA(tenant string, now time.Time) (*CA, error) {
	if err := CheckLabel("tenant", tenant); err != nil {
		return nil, fmt.Errorf("tenantpki: create CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: create CA for tenant %s: generate key: %w", tenant, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("tenantpki: create CA for tenant %s: %w", tenant, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"SecureText"},
			CommonName:   "SecureText keystore CA for tenant " + tenant,
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: create CA for tenant %s: sign certificate: %w", tenant, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: create CA for tenant %s: parse certificate: %w", tenant, err)
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA reads a CA written with (*CA).CertPEM and (*CA).KeyPEM. It refuses a certificate that
// is not a CA or a key that does not belong to it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: load CA: %w", err)
	}
	cert := pair.Leaf
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("tenantpki: load CA: certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tenantpki: load CA: private key of type %T cannot sign", pair.PrivateKey)
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPool returns a pool holding only this CA: the roots for ServerConfig.ClientCAs and
// ClientConfig.RootCAs.
func (ca *CA) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// CertPEM returns the CA certificate as a PEM "CERTIFICATE" block (the Secret's ca.crt).
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// KeyPEM returns the CA private key as a PEM "PRIVATE KEY" block (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) {
	b, err := keyPEM(ca.key)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: encode CA key: %w", err)
	}
	return b, nil
}

// IssueServer issues the keystore's server certificate for the given DNS names (the Service's
// names, such as "keystore.<namespace>.svc") and IP addresses, valid from now for validity.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return tls.Certificate{}, errors.New("tenantpki: issue server certificate: give at least one DNS name or IP address")
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"SecureText"}, CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	c, err := ca.issue(tmpl, now, validity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tenantpki: issue server certificate for %v %v: %w", dnsNames, ips, err)
	}
	return c, nil
}

// IssueClient issues the client certificate of component (ComponentGateway, ComponentViewer)
// in tenant, valid from now for validity. It is good for TLS client authentication only.
func (ca *CA) IssueClient(tenant, component string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if err := CheckLabel("tenant", tenant); err != nil {
		return tls.Certificate{}, fmt.Errorf("tenantpki: issue client certificate: %w", err)
	}
	if err := CheckLabel("component", component); err != nil {
		return tls.Certificate{}, fmt.Errorf("tenantpki: issue client certificate: %w", err)
	}
	id := SPIFFEID(tenant, component)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"SecureText"}, CommonName: component + "." + tenant},
		URIs:        []*url.URL{id},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	c, err := ca.issue(tmpl, now, validity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tenantpki: issue client certificate for %s: %w", id, err)
	}
	return c, nil
}

// issue completes tmpl as a leaf certificate with a fresh P-256 key and signs it.
func (ca *CA) issue(tmpl *x509.Certificate, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if validity <= 0 {
		return tls.Certificate{}, fmt.Errorf("validity %v is not positive", validity)
	}
	if end := now.Add(validity); end.After(ca.cert.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("it would outlive the CA, which expires %s; rotate the CA first",
			ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return tls.Certificate{}, err
	}
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// newSerial returns a positive 128-bit serial number from crypto/rand.
func newSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

// CertPEM returns the certificate chain of c as PEM "CERTIFICATE" blocks, leaf first (a
// Secret's tls.crt).
func CertPEM(c tls.Certificate) []byte {
	var b []byte
	for _, der := range c.Certificate {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return b
}

// KeyPEM returns the private key of c as a PEM "PRIVATE KEY" block, PKCS #8 (a Secret's
// tls.key). Load the pair back with tls.X509KeyPair.
func KeyPEM(c tls.Certificate) ([]byte, error) {
	b, err := keyPEM(c.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("tenantpki: encode private key: %w", err)
	}
	return b, nil
}

func keyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPoolFromPEM returns a pool of the PEM certificates in b (a Secret's ca.crt). It fails
// when b holds no certificate, so a mounted empty file does not silently trust nothing.
func CertPoolFromPEM(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tenantpki: read CA certificates: certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("tenantpki: read CA certificates: no PEM CERTIFICATE block found")
	}
	return pool, nil
}

// SPIFFEID returns the identity of component in tenant:
// spiffe://securetext.io/tenant/<tenant>/<component>. It does not validate its arguments.
func SPIFFEID(tenant, component string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/tenant/" + tenant + "/" + component}
}

// Identity returns the tenant and component named by a client certificate. It does not verify
// the certificate (Server does that against the tenant CA); it only reads the name, strictly:
// the certificate must carry exactly one URI SAN, and that SAN must be
// spiffe://securetext.io/tenant/<tenant>/<component> with both names DNS labels (RFC 1123:
// lower-case letters, digits and '-', at most 63 characters) and nothing else (no port,
// user, query, fragment or percent-encoding).
func Identity(cert *x509.Certificate) (tenant, component string, err error) {
	if cert == nil {
		return "", "", errors.New("tenantpki: read caller identity: no certificate")
	}
	switch len(cert.URIs) {
	case 0:
		return "", "", errors.New("tenantpki: read caller identity: certificate has no URI SAN; want " + SPIFFEID("<tenant>", "<component>").String())
	case 1:
	default:
		return "", "", fmt.Errorf("tenantpki: read caller identity: certificate has %d URI SANs, want exactly one", len(cert.URIs))
	}
	u := cert.URIs[0]
	// The SAN is printed only after it passed, so a hostile certificate cannot fill logs.
	if u.Scheme != "spiffe" || u.Host != TrustDomain || u.Opaque != "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" || u.RawPath != "" {
		return "", "", errors.New("tenantpki: read caller identity: URI SAN is not a spiffe://" + TrustDomain + "/ ID without port, user, query or fragment")
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "tenant" {
		return "", "", errors.New("tenantpki: read caller identity: URI SAN path is not /tenant/<tenant>/<component>")
	}
	if err := CheckLabel("tenant", parts[2]); err != nil {
		return "", "", fmt.Errorf("tenantpki: read caller identity: %w", err)
	}
	if err := CheckLabel("component", parts[3]); err != nil {
		return "", "", fmt.Errorf("tenantpki: read caller identity: %w", err)
	}
	return parts[2], parts[3], nil
}

// CheckLabel reports whether s is an RFC 1123 DNS label, the form of a Kubernetes namespace
// name: 1 to 63 lower-case letters, digits or '-', starting and ending with a letter or digit.
func CheckLabel(what, s string) error {
	if len(s) == 0 || len(s) > 63 {
		return fmt.Errorf("%s name must be 1 to 63 characters", what)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("%s name must be a DNS label: lower-case letters, digits and inner '-'", what)
		}
	}
	return nil
}

// VerifyClientChain verifies that chain (leaf first, as the client sent it) leads to roots and
// that the leaf may be used for TLS client authentication at now. It returns the verified
// chain, leaf first and root last.
func VerifyClientChain(roots *x509.CertPool, chain []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// UntrustedCause turns a VerifyClientChain error into a short code for an audit record.
func UntrustedCause(err error) string {
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknown):
		return "unknown-authority"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "expired-or-not-yet-valid"
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return "not-for-client-auth"
	}
	return "invalid"
}
