package tenantpki

import (
	"crypto/x509"
	"errors"
	"slices"
)

// ComponentOperator is the operator's identity towards a tenant's workloads: it reads the
// gateway's retention status (gateway.StatusServer) with a client certificate of this name.
const ComponentOperator = "operator"

// Reasons for refusing a caller (Refusal.Reason): the "reason" of an audit event and the key
// of a refusal counter.
const (
	ReasonNoClientCertificate  = "no-client-certificate"
	ReasonUntrustedCertificate = "untrusted-certificate"
	ReasonInvalidIdentity      = "invalid-identity"
	ReasonWrongTenant          = "wrong-tenant"
	ReasonComponentNotAllowed  = "component-not-allowed"
)

// Refusal is why Authorize refused a caller. Unauthenticated tells 401 (no or an untrusted
// certificate) from 403 (a trusted certificate of someone who may not call).
type Refusal struct {
	Reason          string
	Unauthenticated bool
	// Component is the caller's verified component, "" when unknown.
	Component string
	// Detail is for the audit event: the cause of an untrusted certificate and what it claims
	// (claimed_tenant, claimed_component), or the verified tenant of another (peer_tenant).
	Detail map[string]string
	// Err is the verification error of an untrusted certificate.
	Err error
}

func (r *Refusal) Error() string {
	if r.Err != nil {
		return "tenantpki: refuse caller: " + r.Reason + ": " + r.Err.Error()
	}
	return "tenantpki: refuse caller: " + r.Reason
}

// Authorize decides whether the client that presented chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) may call a server of tenant that serves the allowed
// components: the chain must verify (verify, usually VerifyClientChain against the tenant CA
// or a cache of it), and its leaf must name tenant and one of allowed (Identity). It returns
// the caller's component. This is the one place where SecureText's servers judge a client
// certificate: the keystore and the gateway's status endpoint both call it.
func Authorize(chain []*x509.Certificate, tenant string, allowed []string, verify func([]*x509.Certificate) error) (string, *Refusal) {
	if len(chain) == 0 {
		return "", &Refusal{Reason: ReasonNoClientCertificate, Unauthenticated: true, Err: errors.New("no client certificate")}
	}
	if err := verify(chain); err != nil {
		detail := map[string]string{"cause": UntrustedCause(err)}
		// What an untrusted certificate names is only a claim.
		if t, c, err := Identity(chain[0]); err == nil {
			detail["claimed_tenant"], detail["claimed_component"] = t, c
		}
		return "", &Refusal{Reason: ReasonUntrustedCertificate, Unauthenticated: true, Detail: detail, Err: err}
	}
	peerTenant, component, err := Identity(chain[0])
	switch {
	case err != nil:
		return "", &Refusal{Reason: ReasonInvalidIdentity, Err: err}
	case peerTenant != tenant:
		return "", &Refusal{Reason: ReasonWrongTenant, Component: component, Detail: map[string]string{"peer_tenant": peerTenant}}
	case !slices.Contains(allowed, component):
		return "", &Refusal{Reason: ReasonComponentNotAllowed, Component: component, Detail: map[string]string{"peer_tenant": peerTenant}}
	}
	return component, nil
}
