package controllers

// The Secrets the operator generates in a tenant's namespace: the tenant CA, the keystore's
// serving certificate, the gateway's and viewer's keystore client certificates, the serving
// certificate of the public endpoints when spec.tls is not set, the senders file, and a copy
// of Vault's CA when the operator is configured with one.
//
// They are created once. The CA and the senders file are never written again (an admin edits
// the senders file; deleting the CA Secret makes a new CA and re-issues every certificate).
// Leaf certificates are re-issued on purpose only: when a third of their life is left, when the
// names they certify changed, or when the CA Secret changed since they were signed.
// Everything the decision needs is in the Secrets' metadata, so the operator caches Secrets as
// metadata only and reads a Secret's data (the CA key) only when it signs.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// Names of the generated Secrets in every tenant namespace.
const (
	SecretTenantCA              = "tenant-ca"
	SecretKeystoreTLS           = "keystore-tls"
	SecretGatewayKeystoreClient = "gateway-keystore-client"
	SecretViewerKeystoreClient  = "viewer-keystore-client"
	SecretGatewayStatusTLS      = "gateway-status-tls"
	SecretServingTLS            = "serving-tls"
	SecretSenders               = "senders"
	SecretVaultCA               = "vault-ca"

	// keyCAKey holds the tenant CA's private key in SecretTenantCA (beside ca.crt).
	keyCAKey = "ca.key"

	// AnnotationNotAfter on a generated certificate Secret is the certificate's expiry (RFC 3339).
	AnnotationNotAfter = "securetext.io/not-after"
	// AnnotationCAVersion on a generated certificate Secret is the resourceVersion of the CA
	// Secret it was signed under.
	AnnotationCAVersion = "securetext.io/ca-version"
	// AnnotationNames on a generated certificate Secret is the SHA-256 of the names it
	// certifies: a certificate whose names changed (the tenant's hosts) is re-issued.
	AnnotationNames = "securetext.io/names-sha256"
	// annotationContent on a copied Secret is the SHA-256 of its data.
	annotationContent = "securetext.io/content-sha256"

	// DefaultCertificateValidity is the life of generated leaf certificates.
	DefaultCertificateValidity = 90 * 24 * time.Hour

	// emptySenders is the senders file of a new tenant: no sender may submit until an admin
	// adds one.
	emptySenders = `# Senders that may submit messages to this tenant. Make one with
#   securetext sender -id <id>
# and add the printed entry below; the gateway restarts with the new file.
senders: []
`
)

// generatedSecrets names the generated Secrets for Render.
func generatedSecrets() GeneratedSecrets {
	return GeneratedSecrets{
		KeystoreServerTLS:     SecretKeystoreTLS,
		GatewayKeystoreClient: SecretGatewayKeystoreClient,
		ViewerKeystoreClient:  SecretViewerKeystoreClient,
		GatewayStatusTLS:      SecretGatewayStatusTLS,
		ServingTLS:            SecretServingTLS,
		Senders:               SecretSenders,
	}
}

// leafCert is one generated certificate: its Secret, the names it certifies, and how it is
// issued for them.
type leafCert struct {
	secret string
	names  []string
	issue  func(ca *tenantpki.CA, now time.Time, validity time.Duration) (tls.Certificate, error)
}

// leafCerts are the certificates of tenant in namespace ns. The serving certificate is made
// only when spec.tls does not name one.
func leafCerts(tenant *securetextv1alpha1.SecureTextTenant, ns string) []leafCert {
	server := func(secret string, names []string) leafCert {
		return leafCert{secret, names, func(ca *tenantpki.CA, now time.Time, v time.Duration) (tls.Certificate, error) {
			return ca.IssueServer(names, nil, now, v)
		}}
	}
	client := func(secret, component string) leafCert {
		return leafCert{secret, []string{tenantpki.SPIFFEID(tenant.Name, component).String()},
			func(ca *tenantpki.CA, now time.Time, v time.Duration) (tls.Certificate, error) {
				return ca.IssueClient(tenant.Name, component, now, v)
			}}
	}
	certs := []leafCert{
		server(SecretKeystoreTLS, KeystoreDNSNames(ns)),
		client(SecretGatewayKeystoreClient, tenantpki.ComponentGateway),
		client(SecretViewerKeystoreClient, tenantpki.ComponentViewer),
		server(SecretGatewayStatusTLS, GatewayStatusDNSNames(ns)),
	}
	if tenant.Spec.TLS == nil {
		certs = append(certs, server(SecretServingTLS, servingDNSNames(tenant, ns)))
	}
	return certs
}

// namesSum is the hex SHA-256 of the names a certificate certifies, for AnnotationNames.
func namesSum(names []string) string {
	sum := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return hex.EncodeToString(sum[:])
}

// servingDNSNames are the names of the gateway's and viewer's self-issued serving
// certificate: the public hosts, the text domain (STARTTLS), and the in-cluster Service names.
func servingDNSNames(tenant *securetextv1alpha1.SecureTextTenant, ns string) []string {
	names := []string{tenant.Spec.Hostnames.Viewer}
	if h := tenant.Spec.Hostnames.API; h != "" && h != tenant.Spec.Hostnames.Viewer {
		names = append(names, h)
	}
	names = append(names, tenant.Spec.TextDomain)
	for _, c := range []Component{ComponentGateway, ComponentViewer} {
		names = append(names, objectName(c)+"."+ns+".svc")
	}
	return names
}

// GatewayStatusDNSNames are the names of the gateway's status server certificate: the
// gateway Service, where the operator reads the retention status (sweep_status.go).
func GatewayStatusDNSNames(ns string) []string {
	return []string{ServiceGateway + "." + ns + ".svc"}
}

// secretsResult is what the secrets step did and found.
type secretsResult struct {
	// Changes, one sentence each, for events.
	Changes []string
	// Versions maps each generated Secret to its resourceVersion, for the config checksum.
	Versions map[string]string
	// RenewAt is when the first certificate is due for renewal.
	RenewAt time.Time
}

// secretStep generates and renews a tenant's Secrets.
type secretStep struct {
	c        client.Client // cached, metadata-only reads of Secrets
	reader   client.Reader // uncached, for the CA's data
	validity time.Duration
	vaultCA  []byte
	now      time.Time
	tenant   *securetextv1alpha1.SecureTextTenant
	ns       string
	res      secretsResult
}

// ensureSecrets is the secrets step: it creates the tenant's generated Secrets and renews
// certificates that are due, with their events. It returns the Secrets' versions, for the config
// checksum.
func (r *SecureTextTenantReconciler) ensureSecrets(ctx context.Context, tenant *securetextv1alpha1.SecureTextTenant, ns string, st *tenantState) map[string]string {
	validity := r.Options.CertificateValidity
	if validity <= 0 {
		validity = DefaultCertificateValidity
	}
	s := &secretStep{
		c: r.Client, reader: r.APIReader, validity: validity, vaultCA: r.Options.VaultCACert,
		now: r.now(), tenant: tenant, ns: ns, res: secretsResult{Versions: map[string]string{}},
	}
	err := s.run(ctx)
	r.event(tenant, EventSecretsChanged, "EnsureSecrets", s.res.Changes)
	st.renewAt = s.res.RenewAt
	if err != nil {
		st.secretsErr = fmt.Errorf("secrets: %w", err)
		r.Recorder.Eventf(tenant, nil, corev1.EventTypeWarning, EventReconcileFailed, "EnsureSecrets", "%s", err)
	}
	return s.res.Versions
}

func (s *secretStep) run(ctx context.Context) error {
	caMeta, err := s.meta(ctx, SecretTenantCA)
	if err != nil {
		return err
	}
	// Certificates record the resourceVersion of the CA Secret they were signed under: a CA
	// Secret that changed in any way (replaced by hand, deleted and made again) has another,
	// and every certificate is re-issued from what it holds now.
	var ca *tenantpki.CA // loaded or made only when a certificate must be signed
	caVersion := ""
	if caMeta != nil {
		caVersion = caMeta.ResourceVersion
	} else {
		if ca, caVersion, err = s.createCA(ctx); err != nil {
			return err
		}
	}
	s.res.Versions[SecretTenantCA] = caVersion

	for _, leaf := range leafCerts(s.tenant, s.ns) {
		m, err := s.meta(ctx, leaf.secret)
		if err != nil {
			return err
		}
		due, why := s.leafDue(m, caVersion, namesSum(leaf.names))
		if !due {
			s.res.Versions[leaf.secret] = m.ResourceVersion
			s.renewAt(m)
			continue
		}
		if ca == nil {
			if ca, caVersion, err = s.loadCA(ctx); err != nil {
				return err
			}
			s.res.Versions[SecretTenantCA] = caVersion
		}
		if err := s.writeLeaf(ctx, leaf, m, ca, caVersion, why); err != nil {
			return err
		}
	}
	if s.tenant.Spec.TLS != nil { // spec.tls names the serving certificate: not one the operator renews
		forgetCertificateExpiry(s.tenant.Name, SecretServingTLS)
	}

	if err := s.ensureOnce(ctx, SecretSenders, corev1.SecretTypeOpaque, map[string][]byte{keySenders: []byte(emptySenders)},
		"created an empty senders file (Secret %s); add senders with `securetext sender`"); err != nil {
		return err
	}
	if len(s.vaultCA) > 0 {
		return s.ensureCopy(ctx, SecretVaultCA, map[string][]byte{keyCACert: s.vaultCA})
	}
	return nil
}

// meta reads a generated Secret's metadata from the cache; nil when it does not exist. What
// the cache does not hold is read past it: a Secret created a moment ago that the cache has
// not seen yet, or one that lost the operator's labels.
func (s *secretStep) meta(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	key := client.ObjectKey{Namespace: s.ns, Name: name}
	err := s.c.Get(ctx, key, m)
	if apierrors.IsNotFound(err) {
		err = s.reader.Get(ctx, key, m)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read Secret %s/%s: %w", s.ns, name, err)
	}
	return m, nil
}

// leafDue reports whether a certificate Secret must be (re-)issued, and why.
func (s *secretStep) leafDue(m *metav1.PartialObjectMetadata, caVersion, names string) (bool, string) {
	if m == nil {
		return true, "issued"
	}
	if m.Annotations[AnnotationCAVersion] != caVersion {
		return true, "re-issued (the tenant CA Secret changed)"
	}
	if m.Annotations[AnnotationNames] != names {
		return true, "re-issued (the names it certifies changed)"
	}
	notAfter, err := time.Parse(time.RFC3339, m.Annotations[AnnotationNotAfter])
	if err != nil {
		return true, "re-issued (its expiry annotation is missing)"
	}
	if !s.now.Before(renewalTime(notAfter, s.validity)) {
		return true, "renewed (a third of its life is left)"
	}
	return false, ""
}

// renewalTime is when a certificate expiring at notAfter is renewed: a third of its life before.
func renewalTime(notAfter time.Time, validity time.Duration) time.Time {
	return notAfter.Add(-validity / 3)
}

// renewAt notes when the certificate in m is due for renewal, and exports its expiry.
func (s *secretStep) renewAt(m *metav1.PartialObjectMetadata) {
	notAfter, err := time.Parse(time.RFC3339, m.Annotations[AnnotationNotAfter])
	if err != nil {
		return
	}
	recordCertificateExpiry(s.tenant.Name, m.Name, notAfter)
	if at := renewalTime(notAfter, s.validity); s.res.RenewAt.IsZero() || at.Before(s.res.RenewAt) {
		s.res.RenewAt = at
	}
}

func (s *secretStep) secret(name string, typ corev1.SecretType, annotations map[string]string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: tenantLabels(s.tenant.Name), Annotations: annotations},
		Type:       typ,
		Data:       data,
	}
}

// createCA makes the tenant CA and returns it with its Secret's resourceVersion. If a CA
// Secret appeared meanwhile (another operator replica, or a restart after the create), that
// one is used.
func (s *secretStep) createCA(ctx context.Context) (*tenantpki.CA, string, error) {
	ca, err := tenantpki.NewCA(s.tenant.Name, s.now)
	if err != nil {
		return nil, "", err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, "", err
	}
	sec := s.secret(SecretTenantCA, corev1.SecretTypeOpaque, nil, map[string][]byte{keyCACert: ca.CertPEM(), keyCAKey: key})
	err = s.c.Create(ctx, sec, client.FieldOwner(FieldManager))
	if apierrors.IsAlreadyExists(err) {
		return s.loadCA(ctx)
	}
	if err != nil {
		return nil, "", fmt.Errorf("create Secret %s/%s: %w", s.ns, SecretTenantCA, err)
	}
	s.res.Changes = append(s.res.Changes, fmt.Sprintf("created the tenant CA (Secret %s)", SecretTenantCA))
	return ca, sec.ResourceVersion, nil
}

// loadCA reads the tenant CA's certificate and key past the cache, with the Secret's
// resourceVersion.
func (s *secretStep) loadCA(ctx context.Context) (*tenantpki.CA, string, error) {
	var sec corev1.Secret
	if err := s.reader.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: SecretTenantCA}, &sec); err != nil {
		return nil, "", fmt.Errorf("read Secret %s/%s: %w", s.ns, SecretTenantCA, err)
	}
	ca, err := tenantpki.LoadCA(sec.Data[keyCACert], sec.Data[keyCAKey])
	if err != nil {
		return nil, "", fmt.Errorf("Secret %s/%s: %w; delete it to make a new tenant CA (every certificate is then re-issued)",
			s.ns, SecretTenantCA, err)
	}
	return ca, sec.ResourceVersion, nil
}

// writeLeaf issues a certificate and creates or replaces its Secret. A replacement carries the
// resourceVersion that was read, so a concurrent change is never overwritten blindly.
func (s *secretStep) writeLeaf(ctx context.Context, leaf leafCert, existing *metav1.PartialObjectMetadata, ca *tenantpki.CA, caVersion, why string) error {
	cert, err := leaf.issue(ca, s.now, s.validity)
	if err != nil {
		return err
	}
	key, err := tenantpki.KeyPEM(cert)
	if err != nil {
		return err
	}
	notAfter := cert.Leaf.NotAfter.UTC()
	sec := s.secret(leaf.secret, corev1.SecretTypeTLS,
		map[string]string{AnnotationCAVersion: caVersion, AnnotationNames: namesSum(leaf.names),
			AnnotationNotAfter: notAfter.Format(time.RFC3339)},
		map[string][]byte{keyTLSCert: tenantpki.CertPEM(cert), keyTLSKey: key, keyCACert: ca.CertPEM()})
	if existing == nil {
		err = s.c.Create(ctx, sec, client.FieldOwner(FieldManager))
	} else {
		sec.ResourceVersion = existing.ResourceVersion
		err = s.c.Update(ctx, sec, client.FieldOwner(FieldManager))
	}
	if err != nil {
		return fmt.Errorf("write Secret %s/%s: %w", s.ns, leaf.secret, err)
	}
	s.res.Versions[leaf.secret] = sec.ResourceVersion
	recordCertificateExpiry(s.tenant.Name, leaf.secret, notAfter)
	s.res.Changes = append(s.res.Changes, fmt.Sprintf("%s the certificate in Secret %s, valid until %s",
		why, leaf.secret, notAfter.Format(time.RFC3339)))
	if at := renewalTime(notAfter, s.validity); s.res.RenewAt.IsZero() || at.Before(s.res.RenewAt) {
		s.res.RenewAt = at
	}
	return nil
}

// ensureOnce creates a Secret with data unless it exists; an existing one is never changed.
func (s *secretStep) ensureOnce(ctx context.Context, name string, typ corev1.SecretType, data map[string][]byte, change string) error {
	m, err := s.meta(ctx, name)
	if err != nil || m != nil {
		if m != nil {
			s.res.Versions[name] = m.ResourceVersion
		}
		return err
	}
	sec := s.secret(name, typ, nil, data)
	if err := s.c.Create(ctx, sec, client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("create Secret %s/%s: %w", s.ns, name, err)
	}
	s.res.Versions[name] = sec.ResourceVersion
	s.res.Changes = append(s.res.Changes, fmt.Sprintf(change, name))
	return nil
}

// ensureCopy keeps a Secret equal to data (the operator's own configuration, such as Vault's
// CA), comparing the content hash in its annotation.
func (s *secretStep) ensureCopy(ctx context.Context, name string, data map[string][]byte) error {
	sum := dataSum(data)
	m, err := s.meta(ctx, name)
	if err != nil {
		return err
	}
	if m != nil && m.Annotations[annotationContent] == sum {
		s.res.Versions[name] = m.ResourceVersion
		return nil
	}
	sec := s.secret(name, corev1.SecretTypeOpaque, map[string]string{annotationContent: sum}, data)
	if m == nil {
		err = s.c.Create(ctx, sec, client.FieldOwner(FieldManager))
	} else {
		sec.ResourceVersion = m.ResourceVersion
		err = s.c.Update(ctx, sec, client.FieldOwner(FieldManager))
	}
	if err != nil {
		return fmt.Errorf("write Secret %s/%s: %w", s.ns, name, err)
	}
	s.res.Versions[name] = sec.ResourceVersion
	s.res.Changes = append(s.res.Changes, fmt.Sprintf("wrote Vault's CA certificate to Secret %s", name))
	return nil
}

// dataSum is the hex SHA-256 of a Secret's data, in key order.
func dataSum(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range sortedKeys(data) {
		fmt.Fprintf(h, "%d:%s %d:", len(k), k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}
