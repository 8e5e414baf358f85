package controllers

// How the tenant's workloads are reached and what they may reach: Services, the Ingress, and
// the NetworkPolicies that isolate the tenant. Isolation rests on a namespace-wide default deny
// of both directions; every allow rule below names a port, and pod selectors only ever match
// pods of the tenant's own namespace, so no other tenant's pod is admitted anywhere.

import (
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Service names.
const (
	ServiceGatewaySMTP = "gateway-smtp"
	ServiceGateway     = "gateway"
	ServiceViewer      = "viewer"
)

// labelNamespaceName is set by the API server on every namespace to its name.
const labelNamespaceName = "kubernetes.io/metadata.name"

func (r *renderer) services() []*corev1.Service {
	svc := func(name string, c Component, typ corev1.ServiceType, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{
			TypeMeta:   typeService,
			ObjectMeta: r.meta(name, c),
			Spec:       corev1.ServiceSpec{Type: typ, Selector: selectorLabels(r.t.Name, c), Ports: ports},
		}
	}
	port := func(name string, port, target int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(target), Protocol: corev1.ProtocolTCP}
	}

	out := []*corev1.Service{
		svc(KeystoreServiceName, ComponentKeystore, corev1.ServiceTypeClusterIP,
			port(portNameHTTPS, portKeystore, portKeystore), port(portNameMetrics, portKeystoreMetrics, portKeystoreMetrics)),
		svc(ServiceGateway, ComponentGateway, corev1.ServiceTypeClusterIP,
			port(portNameHTTPS, servicePortHTTPS, portGatewayAPI), port(portNameMetrics, portGatewayMetrics, portGatewayMetrics),
			port(portNameStatus, portGatewayStatus, portGatewayStatus)),
		svc(ServiceViewer, ComponentViewer, corev1.ServiceTypeClusterIP,
			port(portNameHTTPS, servicePortHTTPS, portViewer), port(portNameMetrics, portViewerMetrics, portViewerMetrics)),
	}
	if r.smtpEnabled() {
		smtp := svc(ServiceGatewaySMTP, ComponentGateway, r.smtpServiceType(), r.smtpServicePorts()...)
		if smtp.Spec.Type != corev1.ServiceTypeClusterIP {
			// Keep the sender's address: the gateway limits connections per address and
			// trusts relays by address.
			smtp.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		out = append(out, smtp)
	}
	return out
}

func (r *renderer) smtpServiceType() corev1.ServiceType {
	if t := r.spec.SMTP.ServiceType; t != "" {
		return t
	}
	return corev1.ServiceTypeLoadBalancer
}

func (r *renderer) smtpServicePorts() []corev1.ServicePort {
	public := r.spec.SMTP.Port
	if public == 0 {
		public = defaultSMTPPort
	}
	ports := []corev1.ServicePort{{Name: portNameSMTP, Port: public, TargetPort: intstr.FromInt32(portSMTP), Protocol: corev1.ProtocolTCP}}
	if p := r.spec.SMTP.ImplicitTLSPort; p != 0 {
		ports = append(ports, corev1.ServicePort{Name: portNameSMTPS, Port: p, TargetPort: intstr.FromInt32(portSMTPS), Protocol: corev1.ProtocolTCP})
	}
	return ports
}

// ingress routes the viewer host to the viewer and the API host to the gateway. Without an
// API host the API is served under /v1 of the viewer host. The SMS provider's callbacks
// (/sms/<provider>) go to the gateway on the API host, whether or not the API is enabled.
func (r *renderer) ingress() *networkingv1.Ingress {
	pathPrefix := ptr.To(networkingv1.PathTypePrefix)
	backend := func(service string) networkingv1.IngressBackend {
		return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
			Name: service, Port: networkingv1.ServiceBackendPort{Name: portNameHTTPS},
		}}
	}
	path := func(p, service string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: pathPrefix, Backend: backend(service)}
	}
	smsPath := "/sms/" + string(r.spec.SMS.Provider)
	viewerPaths := []networkingv1.HTTPIngressPath{path("/", ServiceViewer)}
	var apiPaths []networkingv1.HTTPIngressPath
	apiHost := r.spec.Hostnames.API
	if apiHost == "" {
		if r.apiEnabled() {
			viewerPaths = append(viewerPaths, path("/v1", ServiceGateway))
		}
		if r.smsExternal() {
			viewerPaths = append(viewerPaths, path(smsPath, ServiceGateway))
		}
	} else {
		if r.apiEnabled() {
			apiPaths = append(apiPaths, path("/", ServiceGateway))
		} else if r.smsExternal() {
			apiPaths = append(apiPaths, path(smsPath, ServiceGateway))
		}
	}

	rules := []networkingv1.IngressRule{{Host: r.spec.Hostnames.Viewer, IngressRuleValue: networkingv1.IngressRuleValue{
		HTTP: &networkingv1.HTTPIngressRuleValue{Paths: viewerPaths},
	}}}
	hosts := []string{r.spec.Hostnames.Viewer}
	if len(apiPaths) > 0 {
		rules = append(rules, networkingv1.IngressRule{Host: apiHost, IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: apiPaths},
		}})
		hosts = append(hosts, apiHost)
	}

	meta := r.meta(NameValue, "")
	annotations := map[string]string{}
	for k, v := range r.in.IngressAnnotations {
		annotations[k] = v
	}
	var tls []networkingv1.IngressTLS
	if t := r.spec.TLS; t != nil {
		if t.IssuerRef != nil {
			if t.IssuerRef.Kind == "Issuer" {
				annotations[annotationCertManagerIssuer] = t.IssuerRef.Name
			} else {
				annotations[annotationCertManagerClusterIssuer] = t.IssuerRef.Name
			}
		}
		tls = []networkingv1.IngressTLS{{Hosts: hosts, SecretName: r.publicTLSSecret()}}
	} else {
		// No certificate named: the hosts are still TLS hosts, served with the ingress
		// controller's default certificate, so the controller redirects plain HTTP to HTTPS.
		tls = []networkingv1.IngressTLS{{Hosts: hosts}}
	}
	if len(annotations) > 0 {
		meta.Annotations = annotations
	}
	spec := networkingv1.IngressSpec{TLS: tls, Rules: rules}
	if r.in.IngressClassName != "" {
		spec.IngressClassName = ptr.To(r.in.IngressClassName)
	}
	return &networkingv1.Ingress{TypeMeta: typeIngress, ObjectMeta: meta, Spec: spec}
}

// Names of the tenant's NetworkPolicies.
const (
	PolicyDefaultDeny     = "default-deny"
	PolicyDNS             = "allow-dns"
	PolicyGatewayIngress  = "gateway-ingress"
	PolicyGatewayEgress   = "gateway-egress"
	PolicyViewerIngress   = "viewer-ingress"
	PolicyViewerEgress    = "viewer-egress"
	PolicyKeystoreIngress = "keystore-ingress"
	PolicyKeystoreEgress  = "keystore-egress"
)

func tcpPort(p int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(p))}
}

func (r *renderer) networkPolicies() []*networkingv1.NetworkPolicy {
	ingressTypes := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressTypes := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	policy := func(name string, c Component, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
		sel := metav1.LabelSelector{}
		if c != "" {
			sel.MatchLabels = selectorLabels(r.t.Name, c)
		}
		return &networkingv1.NetworkPolicy{
			TypeMeta:   typeNetworkPolicy,
			ObjectMeta: r.meta(name, c),
			Spec:       networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: types, Ingress: in, Egress: out},
		}
	}
	pods := func(c Component) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(r.t.Name, c)}}
	}

	// Ingress to the gateway and the viewer: from the ingress controller over HTTPS; SMTP from
	// senders. A Service of type LoadBalancer or NodePort brings senders from anywhere (their
	// source address is kept), so the SMTP ports are open to all, and only they.
	ingressController := r.ingressControllerPeers()
	var metricsRule []networkingv1.NetworkPolicyIngressRule
	gatewayIn := []networkingv1.NetworkPolicyIngressRule{{From: ingressController, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portGatewayAPI)}}}
	if r.smtpEnabled() {
		smtpPorts := []networkingv1.NetworkPolicyPort{tcpPort(portSMTP)}
		if r.spec.SMTP.ImplicitTLSPort != 0 {
			smtpPorts = append(smtpPorts, tcpPort(portSMTPS))
		}
		if r.smtpServiceType() == corev1.ServiceTypeClusterIP {
			from := append(append([]networkingv1.NetworkPolicyPeer(nil), ingressController...), r.in.SMTPSources...)
			gatewayIn = append(gatewayIn, networkingv1.NetworkPolicyIngressRule{From: from, Ports: smtpPorts})
		} else {
			gatewayIn = append(gatewayIn, networkingv1.NetworkPolicyIngressRule{Ports: smtpPorts})
		}
	}
	viewerIn := []networkingv1.NetworkPolicyIngressRule{{From: ingressController, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portViewer)}}}
	if sel := r.in.MetricsNamespaceSelector; sel != nil {
		from := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel.DeepCopy()}}
		gatewayIn = append(gatewayIn, networkingv1.NetworkPolicyIngressRule{From: from, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portGatewayMetrics)}})
		metricsRule = []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portViewerMetrics)}}}
	}
	viewerIn = append(viewerIn, metricsRule...)
	// The operator reads the last retention sweep on the status port: its pods, and only they.
	if op := r.operatorPeer(); op != nil {
		gatewayIn = append(gatewayIn, networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{*op}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portGatewayStatus)},
		})
	}

	// Egress. The keystore and the database for both; the SMS provider for whoever texts.
	toKeystore := networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{pods(ComponentKeystore)}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(portKeystore)}}
	dbPort := r.in.Database.Port
	if dbPort == 0 {
		dbPort = defaultDatabasePort
	}
	toSMS := networkingv1.NetworkPolicyEgressRule{To: r.internetPeers(), Ports: []networkingv1.NetworkPolicyPort{tcpPort(443)}}
	gatewayOut := []networkingv1.NetworkPolicyEgressRule{toKeystore}
	viewerOut := []networkingv1.NetworkPolicyEgressRule{*toKeystore.DeepCopy()}
	// A rule with no peers would allow the port to every address: without a configured
	// location there is no database rule at all (WorkloadsReady says what to set).
	if r.in.Database.Configured() {
		toDatabase := networkingv1.NetworkPolicyEgressRule{To: copyPeers(r.in.Database.Peers), Ports: []networkingv1.NetworkPolicyPort{tcpPort(dbPort)}}
		gatewayOut = append(gatewayOut, toDatabase)
		viewerOut = append(viewerOut, *toDatabase.DeepCopy())
	}
	if r.smsExternal() {
		gatewayOut = append(gatewayOut, toSMS)
	}
	if r.smsExternal() && r.viewerSendsSMS() {
		viewerOut = append(viewerOut, *toSMS.DeepCopy())
	}

	keystoreIn := []networkingv1.NetworkPolicyIngressRule{{
		From:  []networkingv1.NetworkPolicyPeer{pods(ComponentGateway), pods(ComponentViewer)},
		Ports: []networkingv1.NetworkPolicyPort{tcpPort(portKeystore)},
	}}
	// The keystore's metrics carry the checkpoint refusals an alert watches.
	if sel := r.in.MetricsNamespaceSelector; sel != nil {
		keystoreIn = append(keystoreIn, networkingv1.NetworkPolicyIngressRule{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel.DeepCopy()}},
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(portKeystoreMetrics)},
		})
	}
	vaultPeers, vaultPort := r.vaultEgress()
	keystoreOut := []networkingv1.NetworkPolicyEgressRule{{To: vaultPeers, Ports: []networkingv1.NetworkPolicyPort{tcpPort(vaultPort)}}}

	dns := networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: "kube-system"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
		}},
		Ports: []networkingv1.NetworkPolicyPort{
			{Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromInt32(53))},
			tcpPort(53),
		},
	}

	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	return []*networkingv1.NetworkPolicy{
		policy(PolicyDefaultDeny, "", both, nil, nil),
		policy(PolicyDNS, "", egressTypes, nil, []networkingv1.NetworkPolicyEgressRule{dns}),
		policy(PolicyKeystoreIngress, ComponentKeystore, ingressTypes, keystoreIn, nil),
		policy(PolicyKeystoreEgress, ComponentKeystore, egressTypes, nil, keystoreOut),
		policy(PolicyGatewayIngress, ComponentGateway, ingressTypes, gatewayIn, nil),
		policy(PolicyGatewayEgress, ComponentGateway, egressTypes, nil, gatewayOut),
		policy(PolicyViewerIngress, ComponentViewer, ingressTypes, viewerIn, nil),
		policy(PolicyViewerEgress, ComponentViewer, egressTypes, nil, viewerOut),
	}
}

// operatorPeer is the operator's pods: its namespace by name and, when known, their labels;
// nil when the operator's namespace is not configured (then no rule admits anyone).
func (r *renderer) operatorPeer() *networkingv1.NetworkPolicyPeer {
	if r.in.OperatorNamespace == "" {
		return nil
	}
	peer := &networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: r.in.OperatorNamespace}},
	}
	if r.in.OperatorPodSelector != nil {
		peer.PodSelector = r.in.OperatorPodSelector.DeepCopy()
	}
	return peer
}

// ingressControllerPeers are the ingress controller's pods. Without a selector nothing is
// admitted over HTTP: a missing setting must not open the tenant up.
func (r *renderer) ingressControllerPeers() []networkingv1.NetworkPolicyPeer {
	if r.in.IngressNamespaceSelector == nil {
		return []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: "ingress-not-configured"}},
		}}
	}
	peer := networkingv1.NetworkPolicyPeer{NamespaceSelector: r.in.IngressNamespaceSelector.DeepCopy()}
	if r.in.IngressPodSelector != nil {
		peer.PodSelector = r.in.IngressPodSelector.DeepCopy()
	}
	return []networkingv1.NetworkPolicyPeer{peer}
}

func copyPeers(peers []networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer {
	if len(peers) == 0 {
		return nil
	}
	out := make([]networkingv1.NetworkPolicyPeer, len(peers))
	for i := range peers {
		peers[i].DeepCopyInto(&out[i])
	}
	return out
}

// internetPeers are all addresses outside the cluster's ranges.
func (r *renderer) internetPeers() []networkingv1.NetworkPolicyPeer {
	var v4, v6 []string
	for _, c := range r.in.ClusterCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			continue
		}
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked().String())
		} else {
			v6 = append(v6, p.Masked().String())
		}
	}
	out := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: v4}}}
	if len(v6) > 0 {
		out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: v6}})
	}
	return out
}

// vaultEgress is where the keystore may connect to reach Vault: the peers RenderInput names,
// else the namespace of an in-cluster Service address (<svc>.<namespace>.svc[.…]), else the
// address itself when it is an IP, else the internet outside the cluster; on Vault's port.
func (r *renderer) vaultEgress() ([]networkingv1.NetworkPolicyPeer, int32) {
	port := defaultVaultPort
	host := ""
	if u, err := url.Parse(r.vaultAddr); err == nil {
		host = u.Hostname()
		switch p, err := strconv.ParseInt(u.Port(), 10, 32); {
		case err == nil && p > 0:
			port = int32(p)
		case u.Port() == "" && u.Scheme == "https":
			port = 443
		case u.Port() == "" && u.Scheme == "http":
			port = 80
		}
	}
	if len(r.in.Vault.Peers) > 0 {
		return copyPeers(r.in.Vault.Peers), port
	}
	if ip := net.ParseIP(host); ip != nil {
		bits := "/32"
		if ip.To4() == nil {
			bits = "/128"
		}
		return []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: ip.String() + bits}}}, port
	}
	if labels := strings.Split(host, "."); len(labels) >= 3 && labels[2] == "svc" {
		return []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: labels[1]}},
		}}, port
	}
	return r.internetPeers(), port
}
