package controllers

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// renderTenant is a fully specified Twilio tenant, as the CRD defaults would leave it.
func renderTenant(name string) *securetextv1alpha1.SecureTextTenant {
	return &securetextv1alpha1.SecureTextTenant{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: securetextv1alpha1.SecureTextTenantSpec{
			DisplayName: "Example Family Clinic",
			TextDomain:  "text." + name + ".example",
			Hostnames:   securetextv1alpha1.Hostnames{Viewer: "view." + name + ".example", API: "api." + name + ".example"},
			TLS:         &securetextv1alpha1.TLSSpec{IssuerRef: &securetextv1alpha1.IssuerRef{Name: "letsencrypt", Kind: "ClusterIssuer"}},
			Branding:    securetextv1alpha1.Branding{PrimaryColor: "#0b5394", SupportContact: "(202) 555-0100"},
			SMTP:        securetextv1alpha1.SMTPSpec{Enabled: ptr.To(true), ServiceType: corev1.ServiceTypeLoadBalancer, Port: 587, MaxMessageBytes: 26214400},
			API:         securetextv1alpha1.APISpec{Enabled: ptr.To(true)},
			SMS: securetextv1alpha1.SMSSpec{
				Provider: securetextv1alpha1.SMSTwilio, SecretRef: &securetextv1alpha1.SecretKeyRef{Name: "twilio-credentials"},
				From: "+12025550100", RatePerMinute: 240, DefaultRegion: "US",
				QuietHours: &securetextv1alpha1.QuietHours{Start: "21:00", End: "08:00", TimeZone: "America/Chicago"},
			},
			Database: securetextv1alpha1.DatabaseSpec{SecretRef: securetextv1alpha1.SecretKeyRef{Name: name + "-database", Key: "dsn"}},
			Components: securetextv1alpha1.Components{
				Gateway: securetextv1alpha1.ComponentSpec{Replicas: ptr.To(int32(3)), Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				}},
				Viewer:   securetextv1alpha1.ComponentSpec{Replicas: ptr.To(int32(2))},
				Keystore: securetextv1alpha1.ComponentSpec{Replicas: ptr.To(int32(1))},
			},
			ViewerAuth: securetextv1alpha1.ViewerAuth{
				MinPasswordLength: 15, OneTimeCode: ptr.To(true), SessionIdleTimeout: "15m", SessionAbsoluteTimeout: "12h", MaxFailedSignIns: 100,
			},
			Replies:        securetextv1alpha1.Replies{MaxLength: 1000},
			DeletionPolicy: securetextv1alpha1.DeletionRetain,
		},
	}
}

func renderInput() RenderInput {
	return RenderInput{
		ClusterInput: ClusterInput{
			WorkloadImage:            "ghcr.io/securetext/workloads:v1",
			IngressNamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: "ingress-nginx"}},
			ClusterCIDRs:             []string{"10.244.0.0/16", "10.96.0.0/12", "fd00::/48"},
		},
		Vault: VaultInput{
			Address: "https://vault.vault.svc:8200", AuthMount: "kubernetes", Role: "keystore-clinic",
			TransitMount: "transit", StateMount: "state", WrappingKey: "tenant-clinic", SigningKey: "tenant-clinic-audit", TokenAudience: "vault",
		},
		Secrets: GeneratedSecrets{
			KeystoreServerTLS: "keystore-tls", GatewayKeystoreClient: "gateway-keystore-client",
			ViewerKeystoreClient: "viewer-keystore-client", ServingTLS: "serving-tls", Senders: "senders",
			GatewayStatusTLS: "gateway-status-tls",
		},
	}
}

func mustRender(t *testing.T, tenant *securetextv1alpha1.SecureTextTenant, in RenderInput) Desired {
	t.Helper()
	d, err := Render(tenant, in)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return d
}

func deploymentOf(t *testing.T, d Desired, c Component) *appsv1.Deployment {
	t.Helper()
	for _, dep := range d.Deployments {
		if dep.Name == string(c) {
			return dep
		}
	}
	t.Fatalf("no Deployment %s", c)
	return nil
}

func configOf(t *testing.T, d Desired, c Component) map[string]string {
	t.Helper()
	for _, cm := range d.ConfigMaps {
		if cm.Name == configMapName(c) {
			return cm.Data
		}
	}
	t.Fatalf("no ConfigMap for %s", c)
	return nil
}

func policyOf(t *testing.T, d Desired, name string) *networkingv1.NetworkPolicy {
	t.Helper()
	for _, p := range d.NetworkPolicies {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no NetworkPolicy %s", name)
	return nil
}

func TestRenderSecurityContexts(t *testing.T) {
	d := mustRender(t, renderTenant("clinic"), renderInput())
	if len(d.Deployments) != 3 {
		t.Fatalf("%d Deployments, want 3", len(d.Deployments))
	}
	for _, dep := range d.Deployments {
		pod := dep.Spec.Template.Spec
		psc := pod.SecurityContext
		if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsUser, 0) != 65532 ||
			ptr.Deref(psc.RunAsGroup, 0) != 65532 || psc.SeccompProfile == nil ||
			psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod security context %+v", dep.Name, psc)
		}
		if ptr.Deref(pod.AutomountServiceAccountToken, true) {
			t.Errorf("%s: service account token is automounted", dep.Name)
		}
		if pod.ServiceAccountName != dep.Name {
			t.Errorf("%s: service account %q", dep.Name, pod.ServiceAccountName)
		}
		if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
			t.Fatalf("%s: %d containers", dep.Name, len(pod.Containers))
		}
		c := pod.Containers[0]
		sc := c.SecurityContext
		if sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
			ptr.Deref(sc.AllowPrivilegeEscalation, true) || ptr.Deref(sc.Privileged, true) ||
			sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			len(sc.Capabilities.Add) != 0 || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: container security context %+v", dep.Name, sc)
		}
		for _, pr := range []struct {
			probe *corev1.Probe
			path  string
		}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}} {
			if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path ||
				pr.probe.HTTPGet.Scheme != corev1.URISchemeHTTPS || pr.probe.HTTPGet.Port.StrVal != portNameHTTPS {
				t.Errorf("%s: probe %s: %+v", dep.Name, pr.path, pr.probe)
			}
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == portNameHTTPS }) {
			t.Errorf("%s: probes name port %q, which the container does not have", dep.Name, portNameHTTPS)
		}
		for _, p := range c.Ports {
			if p.ContainerPort < 1024 {
				t.Errorf("%s: port %d is privileged, but every capability is dropped", dep.Name, p.ContainerPort)
			}
		}
		if len(c.Resources.Requests) == 0 || len(c.Resources.Limits) == 0 && dep.Name != "gateway" {
			t.Errorf("%s: resources %+v", dep.Name, c.Resources)
		}
		var keys []string
		for _, tsc := range pod.TopologySpreadConstraints {
			keys = append(keys, tsc.TopologyKey)
			if tsc.WhenUnsatisfiable != corev1.ScheduleAnyway || !reflect.DeepEqual(tsc.LabelSelector.MatchLabels, dep.Spec.Selector.MatchLabels) ||
				!reflect.DeepEqual(tsc.MatchLabelKeys, []string{appsv1.DefaultDeploymentUniqueLabelKey}) {
				t.Errorf("%s: topology spread %+v", dep.Name, tsc)
			}
		}
		if !reflect.DeepEqual(keys, []string{corev1.LabelHostname}) {
			t.Errorf("%s: topology keys %v", dep.Name, keys)
		}
		if a := pod.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
			a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != corev1.LabelTopologyZone ||
			!reflect.DeepEqual(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchLabels, dep.Spec.Selector.MatchLabels) {
			t.Errorf("%s: affinity %+v, want a preferred anti-affinity over zones", dep.Name, pod.Affinity)
		}
		if !labels.SelectorFromSet(dep.Spec.Selector.MatchLabels).Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("%s: selector does not match the pod labels", dep.Name)
		}
		if len(dep.Spec.Template.Annotations[AnnotationConfigChecksum]) != 64 {
			t.Errorf("%s: checksum annotation %q", dep.Name, dep.Spec.Template.Annotations[AnnotationConfigChecksum])
		}
	}
	for _, sa := range d.ServiceAccounts {
		if ptr.Deref(sa.AutomountServiceAccountToken, true) {
			t.Errorf("ServiceAccount %s automounts its token", sa.Name)
		}
	}

	// Resources: the spec's when given, defaults otherwise.
	gw := deploymentOf(t, d, ComponentGateway).Spec.Template.Spec.Containers[0].Resources
	if got := gw.Requests[corev1.ResourceCPU]; got.String() != "250m" || len(gw.Requests) != 1 {
		t.Errorf("gateway resources %v, want the spec's", gw)
	}
	ks := deploymentOf(t, d, ComponentKeystore).Spec.Template.Spec.Containers[0].Resources
	if !equality.Semantic.DeepEqual(ks, defaultResources[ComponentKeystore]) {
		t.Errorf("keystore resources %v, want the defaults", ks)
	}
}

func TestRenderKeystoreVaultToken(t *testing.T) {
	d := mustRender(t, renderTenant("clinic"), renderInput())
	for _, c := range components {
		pod := deploymentOf(t, d, c).Spec.Template.Spec
		var projected []corev1.ServiceAccountTokenProjection
		for _, v := range pod.Volumes {
			if v.Projected == nil {
				continue
			}
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					projected = append(projected, *s.ServiceAccountToken)
				}
			}
		}
		switch c {
		case ComponentKeystore:
			if len(projected) != 1 || projected[0].Audience != "vault" || projected[0].Path != "token" ||
				ptr.Deref(projected[0].ExpirationSeconds, 0) != 3600 {
				t.Errorf("keystore token projection %+v", projected)
			}
			mounted := slices.ContainsFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" && m.ReadOnly
			})
			if !mounted {
				t.Errorf("keystore token not mounted where vaultlogin.DefaultServiceAccountTokenPath is")
			}
		default:
			if len(projected) != 0 {
				t.Errorf("%s has a service account token: only the keystore needs one", c)
			}
		}
	}
}

// secretValueFlags are flags whose value is a secret; the operator must never set them.
var secretValueFlags = []string{"database-url", "vault-token-file", "vault-token"}

func TestRenderNoSecretValuesInEnv(t *testing.T) {
	for _, provider := range []securetextv1alpha1.SMSProviderType{securetextv1alpha1.SMSTwilio, securetextv1alpha1.SMSWebhook, securetextv1alpha1.SMSConsole} {
		t.Run(string(provider), func(t *testing.T) {
			tenant := renderTenant("clinic")
			tenant.Spec.SMS.Provider = provider
			tenant.Spec.Development = provider == securetextv1alpha1.SMSConsole
			tenant.Spec.ViewerAuth.OneTimeCode = ptr.To(true)
			in := renderInput()
			in.Secrets.ServingTLS = ""
			d := mustRender(t, tenant, in)
			allowedFromSecret := map[string]bool{
				envName(EnvPrefixGateway, flagTwilioAccountSID): provider == securetextv1alpha1.SMSTwilio,
				envName(EnvPrefixViewer, flagTwilioAccountSID):  provider == securetextv1alpha1.SMSTwilio,
				envName(EnvPrefixGateway, flagWebhookURL):       provider == securetextv1alpha1.SMSWebhook,
				envName(EnvPrefixViewer, flagWebhookURL):        provider == securetextv1alpha1.SMSWebhook,
			}
			for _, dep := range d.Deployments {
				c := dep.Spec.Template.Spec.Containers[0]
				for _, e := range c.Env {
					if e.Value != "" {
						t.Errorf("%s: env %s has a literal value; configuration goes into the ConfigMap", dep.Name, e.Name)
					}
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || !allowedFromSecret[e.Name] {
						t.Errorf("%s: env %s from %+v: secrets are mounted as files", dep.Name, e.Name, e.ValueFrom)
					}
				}
				for _, ef := range c.EnvFrom {
					if ef.SecretRef != nil {
						t.Errorf("%s: envFrom Secret %s", dep.Name, ef.SecretRef.Name)
					}
				}
			}
			for _, cm := range d.ConfigMaps {
				for k, v := range cm.Data {
					for _, f := range secretValueFlags {
						for _, p := range []string{EnvPrefixGateway, EnvPrefixViewer, EnvPrefixKeystore} {
							if k == envName(p, f) {
								t.Errorf("%s sets %s: a secret value in a ConfigMap", cm.Name, k)
							}
						}
					}
					if strings.HasSuffix(k, "_FILE") || strings.HasSuffix(k, "_CERT") || strings.HasSuffix(k, "_KEY") && !strings.HasSuffix(k, "_SIGNING_KEY") && !strings.HasSuffix(k, "_WRAPPING_KEY") || strings.HasSuffix(k, "_CA") {
						// Files under configDir are mounted Secrets; the one under
						// serviceAccountDir is the keystore's projected Vault token.
						if !strings.HasPrefix(v, configDir+"/") && (cm.Name != "keystore-config" || v != serviceAccountDir+"/"+serviceAccountToken) {
							t.Errorf("%s: %s=%q is not a mounted file", cm.Name, k, v)
						}
					}
				}
			}
			gw := configOf(t, d, ComponentGateway)
			if gw[envName(EnvPrefixGateway, flagDatabaseURLFile)] != "/etc/securetext/database/url" {
				t.Errorf("database URL file %q", gw[envName(EnvPrefixGateway, flagDatabaseURLFile)])
			}
			// The database Secret's key is projected to the file the flag names.
			vol := findVolume(deploymentOf(t, d, ComponentGateway), "database")
			if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "clinic-database" ||
				!reflect.DeepEqual(vol.Secret.Items, []corev1.KeyToPath{{Key: "dsn", Path: "url"}}) {
				t.Errorf("database volume %+v", vol)
			}
			if got := gw[envName(EnvPrefixGateway, flagTLSCert)]; got != "/etc/securetext/tls/tls.crt" {
				t.Errorf("tls cert %q", got)
			}
			if vol := findVolume(deploymentOf(t, d, ComponentGateway), "tls"); vol.Secret.SecretName != "clinic-public-tls" {
				t.Errorf("public TLS Secret %q, want cert-manager's", vol.Secret.SecretName)
			}
		})
	}
}

func findVolume(dep *appsv1.Deployment, name string) *corev1.Volume {
	for i, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return &dep.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

func TestRenderConfigValues(t *testing.T) {
	tenant := renderTenant("clinic")
	tenant.Spec.ViewerAuth = securetextv1alpha1.ViewerAuth{
		MinPasswordLength: 8, OneTimeCode: ptr.To(true), SessionIdleTimeout: "10m", SessionAbsoluteTimeout: "8h", MaxFailedSignIns: 50,
	}
	tenant.Spec.Vault.Address = "https://vault.example.org:8200"
	tenant.Spec.SMTP.ImplicitTLSPort = 465
	in := renderInput()
	in.Logo = &LogoInput{ConfigMapName: "logo", Key: "clinic.png"}
	in.TrustedProxyCIDRs = []string{"10.244.0.0/16"}
	d := mustRender(t, tenant, in)

	g, v, k := EnvPrefixGateway, EnvPrefixViewer, EnvPrefixKeystore
	want := map[Component]map[string]string{
		ComponentGateway: {
			envName(g, "tenant"): "clinic", envName(g, "tenant-name"): "Example Family Clinic",
			envName(g, "text-domain"): "text.clinic.example", envName(g, "region"): "US",
			envName(g, "keystore-url"): "https://keystore.securetext-clinic.svc:8443",
			envName(g, "smtp-addr"):    ":2587", envName(g, "smtps-addr"): ":2465", envName(g, "api-addr"): ":8443",
			envName(g, "max-message-bytes"): "26214400", envName(g, "sms-provider"): "twilio",
			envName(g, "twilio-from"): "+12025550100", envName(g, "twilio-auth-token-file"): "/etc/securetext/sms/authToken",
			envName(g, "sms-callback-base-url"): "https://api.clinic.example/sms/twilio",
			envName(g, "viewer-url"):            "https://view.clinic.example", envName(g, "sms-rate"): "4",
			envName(g, "quiet-hours"): "21:00-08:00", envName(g, "quiet-hours-zone"): "America/Chicago",
			envName(g, "senders-file"): "/etc/securetext/senders/senders.yaml", envName(g, "allowed-countries"): "",
		},
		ComponentViewer: {
			envName(v, "tenant"): "clinic", envName(v, "addr"): ":9443", envName(v, "time-zone"): "America/Chicago",
			envName(v, "brand-color"): "#0b5394", envName(v, "support-phone"): "(202) 555-0100",
			envName(v, "min-password-length"): "8", envName(v, "one-time-code"): "true",
			envName(v, "idle-timeout"): "10m", envName(v, "session-lifetime"): "8h", envName(v, "max-failures"): "50",
			envName(v, "logo-file"): "/etc/securetext/logo/logo.png", envName(v, "trusted-proxies"): "10.244.0.0/16",
			envName(v, "sms-provider"): "twilio",
			envName(v, "replies"):      "false", envName(v, "reply-max-length"): "1000",
		},
		ComponentKeystore: {
			envName(k, "tenant"): "clinic", envName(k, "listen"): ":8443", envName(k, "backend"): "vault",
			envName(k, "vault-addr"): "https://vault.example.org:8200", envName(k, "vault-auth"): "kubernetes",
			envName(k, "vault-auth-mount"): "kubernetes", envName(k, "vault-role"): "keystore-clinic",
			envName(k, "transit-mount"): "transit", envName(k, "state-mount"): "state", envName(k, "metrics-addr"): ":9466", envName(k, "wrapping-key"): "tenant-clinic",
			envName(k, "signing-key"): "tenant-clinic-audit", envName(k, "client-ca"): "/etc/securetext/tls/ca.crt",
		},
	}
	for c, kv := range want {
		got := configOf(t, d, c)
		for key, val := range kv {
			if got[key] != val {
				t.Errorf("%s: %s=%q, want %q", c, key, got[key], val)
			}
		}
	}

	// No proxies configured: none trusted, whatever the cluster's ranges (the viewer's own
	// default trusts none either).
	in.TrustedProxyCIDRs = nil
	if got, ok := configOf(t, mustRender(t, tenant, in), ComponentViewer)[envName(v, "trusted-proxies")]; ok {
		t.Errorf("no proxies configured, yet trusted-proxies=%q", got)
	}
	in.TrustedProxyCIDRs = []string{"10.244.0.0/16"}

	// Replies: the tenant's choice, and the CRD's default length for a spec that was not defaulted.
	for _, tc := range []struct {
		replies         securetextv1alpha1.Replies
		enabled, maxLen string
	}{
		{securetextv1alpha1.Replies{Enabled: true, MaxLength: 280}, "true", "280"},
		{securetextv1alpha1.Replies{}, "false", "1000"},
	} {
		r := tenant.DeepCopy()
		r.Spec.Replies = tc.replies
		cfg := configOf(t, mustRender(t, r, in), ComponentViewer)
		if got := cfg[envName(v, "replies")]; got != tc.enabled {
			t.Errorf("%+v: replies=%q, want %q", tc.replies, got, tc.enabled)
		}
		if got := cfg[envName(v, "reply-max-length")]; got != tc.maxLen {
			t.Errorf("%+v: reply-max-length=%q, want %q", tc.replies, got, tc.maxLen)
		}
	}

	// The binaries of the workloads image.
	if c := deploymentOf(t, d, ComponentGateway).Spec.Template.Spec.Containers[0]; !reflect.DeepEqual(c.Command, []string{"/usr/local/bin/securetext"}) || !reflect.DeepEqual(c.Args, []string{"gateway"}) {
		t.Errorf("gateway command %v %v", c.Command, c.Args)
	}
	if c := deploymentOf(t, d, ComponentViewer).Spec.Template.Spec.Containers[0]; !reflect.DeepEqual(c.Args, []string{"viewer"}) {
		t.Errorf("viewer args %v", c.Args)
	}
	if c := deploymentOf(t, d, ComponentKeystore).Spec.Template.Spec.Containers[0]; !reflect.DeepEqual(c.Command, []string{"/usr/local/bin/securetext"}) || !reflect.DeepEqual(c.Args, []string{"keystore"}) {
		t.Errorf("keystore command %v %v", c.Command, c.Args)
	}

	// Without one-time codes the viewer has no SMS provider and no SMS credentials.
	tenant.Spec.ViewerAuth.OneTimeCode = ptr.To(false)
	tenant.Spec.ViewerAuth.MinPasswordLength = 15
	d = mustRender(t, tenant, in)
	for key := range configOf(t, d, ComponentViewer) {
		if strings.Contains(key, "SMS") || strings.Contains(key, "TWILIO") {
			t.Errorf("viewer without one-time codes sets %s", key)
		}
	}
	if findVolume(deploymentOf(t, d, ComponentViewer), "sms") != nil || len(deploymentOf(t, d, ComponentViewer).Spec.Template.Spec.Containers[0].Env) != 0 {
		t.Errorf("viewer without one-time codes mounts SMS credentials")
	}

	// SMTP off: no listener, no Service.
	tenant.Spec.SMTP.Enabled = ptr.To(false)
	d = mustRender(t, tenant, in)
	if got, ok := configOf(t, d, ComponentGateway)[envName(g, "smtp-addr")]; !ok || got != "" {
		t.Errorf("SMTP off: smtp-addr %q (set: %v), want set to empty", got, ok)
	}
	for _, s := range d.Services {
		if s.Name == ServiceGatewaySMTP {
			t.Errorf("SMTP off renders the SMTP Service")
		}
	}
}

// TestRenderTenantSettings: the pages' time zone, the zone of quiet hours, the countries the
// gateway texts and the one-time code, each from the tenant's spec with its documented default,
// and always rendered so that the tenant's policy decides, not the workloads' defaults.
func TestRenderTenantSettings(t *testing.T) {
	quiet := func(zone string) *securetextv1alpha1.QuietHours {
		return &securetextv1alpha1.QuietHours{Start: "21:00", End: "08:00", TimeZone: zone}
	}
	cases := []struct {
		name      string
		edit      func(*securetextv1alpha1.SecureTextTenantSpec)
		pageZone  string
		quietZone string // "" means no quiet hours rendered
		countries string // "" means not rendered: the gateway's default, the region's calling code
		code      string
	}{
		{"defaults", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.SMS.QuietHours, s.SMS.DefaultRegion, s.ViewerAuth.OneTimeCode = nil, "", nil
		}, "America/New_York", "", "", "true"},
		{"tenant zone, also for quiet hours that name none", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.TimeZone, s.SMS.QuietHours = "America/Denver", quiet("")
		}, "America/Denver", "America/Denver", "", "true"},
		{"quiet hours with a zone of their own", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.TimeZone, s.SMS.QuietHours = "America/Denver", quiet("America/Chicago")
		}, "America/Denver", "America/Chicago", "", "true"},
		{"no tenant zone: that of quiet hours, as before spec.timeZone", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.SMS.QuietHours = quiet("America/Chicago")
		}, "America/Chicago", "America/Chicago", "", "true"},
		{"countries of the default region's calling code", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.SMS.DefaultRegion = "CA"
		}, "America/Chicago", "America/Chicago", "", "true"},
		{"countries listed", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.SMS.AllowedCountries = []string{"US", "CA", "PR"}
		}, "America/Chicago", "America/Chicago", "US,CA,PR", "true"},
		{"one-time code turned off", func(s *securetextv1alpha1.SecureTextTenantSpec) {
			s.ViewerAuth.OneTimeCode = ptr.To(false)
		}, "America/Chicago", "America/Chicago", "", "false"},
	}
	g, v := EnvPrefixGateway, EnvPrefixViewer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := renderTenant("clinic")
			tc.edit(&tenant.Spec)
			d := mustRender(t, tenant, renderInput())
			gw, vw := configOf(t, d, ComponentGateway), configOf(t, d, ComponentViewer)
			if got := vw[envName(v, "time-zone")]; got != tc.pageZone {
				t.Errorf("viewer time-zone %q, want %q", got, tc.pageZone)
			}
			if got := gw[envName(g, "quiet-hours-zone")]; got != tc.quietZone {
				t.Errorf("gateway quiet-hours-zone %q, want %q", got, tc.quietZone)
			}
			if got := gw[envName(g, "allowed-countries")]; got != tc.countries {
				t.Errorf("gateway allowed-countries %q, want %q", got, tc.countries)
			}
			if got, ok := vw[envName(v, "one-time-code")]; !ok || got != tc.code {
				t.Errorf("viewer one-time-code %q (set: %v), want %q", got, ok, tc.code)
			}
		})
	}
}

// TestRenderDatabaseEgress: the database egress goes only where the operator was told the
// databases are; without that, there is none, and no egress rule anywhere is open to every
// address.
func TestRenderDatabaseEgress(t *testing.T) {
	cidr := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.20.0.0/16"}}
	inCluster := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{labelNamespaceName: "postgres"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"cnpg.io/cluster": "tenants"}},
	}
	cases := []struct {
		name  string
		peers []networkingv1.NetworkPolicyPeer
		port  int32
	}{
		{"not configured", nil, 0},
		{"CIDRs", []networkingv1.NetworkPolicyPeer{cidr}, 0},
		{"in-cluster PostgreSQL on another port", []networkingv1.NetworkPolicyPeer{inCluster}, 6432},
		{"both", []networkingv1.NetworkPolicyPeer{cidr, inCluster}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := renderInput()
			in.Database = DatabaseInput{Peers: tc.peers, Port: tc.port}
			d := mustRender(t, renderTenant("clinic"), in)
			wantPort := tc.port
			if wantPort == 0 {
				wantPort = 5432
			}
			for _, name := range []string{PolicyGatewayEgress, PolicyViewerEgress} {
				var db []networkingv1.NetworkPolicyEgressRule
				for _, r := range policyOf(t, d, name).Spec.Egress {
					if r.Ports[0].Port.IntVal == wantPort || r.Ports[0].Port.IntVal == 5432 {
						db = append(db, r)
					}
				}
				switch {
				case len(tc.peers) == 0 && len(db) != 0:
					t.Errorf("%s: database egress %+v although no database location is configured", name, db)
				case len(tc.peers) > 0 && (len(db) != 1 || !equality.Semantic.DeepEqual(db[0].To, tc.peers) || db[0].Ports[0].Port.IntVal != wantPort):
					t.Errorf("%s: database egress %+v, want to %+v on %d", name, db, tc.peers, wantPort)
				}
			}
			for _, p := range d.NetworkPolicies {
				for _, r := range p.Spec.Egress {
					if len(r.To) == 0 {
						t.Errorf("%s allows %v to every address", p.Name, r.Ports)
					}
				}
			}
		})
	}
}

// registeredFlags reads the flag names a command registers from its source files: the
// operator renders flags for processes it cannot link against (package main).
func registeredFlags(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`fs\.[A-Za-z0-9]+Var\([^,]+,\s*"([a-z0-9-]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d flags in %v: has the source changed shape?", len(out), files)
	}
	return out
}

func TestRenderFlagsExist(t *testing.T) {
	gatewayFlags := registeredFlags(t, "workloads/cmd/securetext/gateway.go", "workloads/cmd/securetext/flaggroups.go")
	viewerFlags := registeredFlags(t, "workloads/cmd/securetext/viewer.go", "workloads/cmd/securetext/flaggroups.go")
	delete(viewerFlags, flagSMSCallbackBaseURL) // registered only for the gateway (callbacks)
	keystoreFlags := registeredFlags(t, "workloads/cmd/securetext/keystore.go")
	commands := map[Component]struct {
		prefix   string
		flags    map[string]bool
		required []string
	}{
		ComponentGateway: {EnvPrefixGateway, gatewayFlags, []string{"tenant", "tenant-name", "text-domain", "keystore-url",
			"keystore-cert", "keystore-key", "keystore-ca", "tls-cert", "tls-key", "senders-file", "sms-provider", "viewer-url", "database-url-file"}},
		ComponentViewer: {EnvPrefixViewer, viewerFlags, []string{"tenant", "tenant-name", "keystore-url", "keystore-cert",
			"keystore-key", "keystore-ca", "tls-cert", "tls-key", "addr", "database-url-file"}},
		ComponentKeystore: {EnvPrefixKeystore, keystoreFlags, []string{"tenant", "listen", "tls-cert", "tls-key", "client-ca",
			"backend", "vault-addr", "vault-auth", "vault-auth-mount", "vault-role", "transit-mount", "wrapping-key", "signing-key"}},
	}
	durations := map[string]bool{"idle-timeout": true, "session-lifetime": true}
	ints := map[string]bool{"min-password-length": true, "max-failures": true, "max-message-bytes": true, "reply-max-length": true}
	bools := map[string]bool{"one-time-code": true, "replies": true}

	for _, provider := range []securetextv1alpha1.SMSProviderType{securetextv1alpha1.SMSTwilio, securetextv1alpha1.SMSWebhook, securetextv1alpha1.SMSConsole} {
		tenant := renderTenant("clinic")
		tenant.Spec.SMS.Provider = provider
		tenant.Spec.Development = provider == securetextv1alpha1.SMSConsole
		tenant.Spec.SMS.MessagingServiceSID = "MG0123456789abcdef0123456789abcdef"
		tenant.Spec.ViewerAuth.OneTimeCode = ptr.To(true)
		tenant.Spec.Replies = securetextv1alpha1.Replies{Enabled: true, MaxLength: 280}
		tenant.Spec.SMTP.ImplicitTLSPort = 465
		in := renderInput()
		in.Logo = &LogoInput{ConfigMapName: "logo", Key: "logo.svg"}
		in.TrustedProxyCIDRs = []string{"10.0.0.0/8"}
		in.Vault.CACertSecret = "vault-ca"
		d := mustRender(t, tenant, in)
		for c, cmd := range commands {
			dep := deploymentOf(t, d, c)
			names := map[string]string{}
			for k, v := range configOf(t, d, c) {
				names[k] = v
			}
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				names[e.Name] = "(from Secret)"
			}
			set := map[string]bool{}
			for env, val := range names {
				flag, ok := flagOfEnv(cmd.prefix, env, cmd.flags)
				if !ok {
					t.Errorf("%s/%s: %s=%q names no flag of the %s command", provider, c, env, val, c)
					continue
				}
				set[flag] = true
				switch {
				case durations[flag]:
					if _, err := time.ParseDuration(val); err != nil {
						t.Errorf("%s: -%s=%q: %v", c, flag, val, err)
					}
				case ints[flag]:
					if _, err := strconv.ParseInt(val, 10, 64); err != nil {
						t.Errorf("%s: -%s=%q: %v", c, flag, val, err)
					}
				case bools[flag]:
					if _, err := strconv.ParseBool(val); err != nil {
						t.Errorf("%s: -%s=%q: %v", c, flag, val, err)
					}
				}
			}
			for _, f := range cmd.required {
				if !set[f] {
					t.Errorf("%s/%s: required flag -%s is not rendered", provider, c, f)
				}
			}
		}
	}
}

// flagOfEnv maps an environment variable back to the flag it stands in for.
func flagOfEnv(prefix, env string, flags map[string]bool) (string, bool) {
	for f := range flags {
		if envName(prefix, f) == env {
			return f, true
		}
	}
	return "", false
}

func TestRenderChecksum(t *testing.T) {
	base := renderTenant("clinic")
	in := renderInput()
	first := mustRender(t, base, in)
	again := mustRender(t, base.DeepCopy(), renderInput())
	if !equality.Semantic.DeepEqual(first, again) || !reflect.DeepEqual(first, again) {
		t.Fatalf("rendering twice gives different objects")
	}
	sum := func(d Desired, c Component) string {
		return deploymentOf(t, d, c).Spec.Template.Annotations[AnnotationConfigChecksum]
	}

	cases := []struct {
		name    string
		edit    func(*securetextv1alpha1.SecureTextTenant, *RenderInput)
		changed []Component
	}{
		{"nothing", func(*securetextv1alpha1.SecureTextTenant, *RenderInput) {}, nil},
		{"replicas only", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.Components.Viewer.Replicas = ptr.To(int32(5))
		}, nil},
		{"min password length", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.MinPasswordLength = 20
		}, []Component{ComponentViewer}},
		{"idle timeout", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.SessionIdleTimeout = "5m"
		}, []Component{ComponentViewer}},
		{"lockout threshold", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.MaxFailedSignIns = 20
		}, []Component{ComponentViewer}},
		{"replies enabled", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.Replies.Enabled = true
		}, []Component{ComponentViewer}},
		{"reply length", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.Replies.MaxLength = 280
		}, []Component{ComponentViewer}},
		{"display name", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.DisplayName = "Other Clinic"
		}, []Component{ComponentGateway, ComponentViewer}},
		{"SMS rate", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.SMS.RatePerMinute = 60
		}, []Component{ComponentGateway}},
		{"database Secret renamed", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.Database.SecretRef.Name = "other-db"
		}, []Component{ComponentGateway, ComponentViewer}},
		{"senders Secret version", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.SecretVersions = map[string]string{"senders": "42"}
		}, []Component{ComponentGateway}},
		{"logo ConfigMap version", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.Logo = &LogoInput{ConfigMapName: "logo", Key: "logo.png"}
		}, []Component{ComponentViewer}},
		{"Vault role", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.Vault.Role = "other"
		}, []Component{ComponentKeystore}},
		{"retention settings (refreshed in place)", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.Retention.Holds = append(in.Retention.Holds, retention.Hold{Name: "matter-1", Matcher: retention.Matcher{MessageIDs: []string{"m1"}}})
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant, in := base.DeepCopy(), renderInput()
			tc.edit(tenant, &in)
			d := mustRender(t, tenant, in)
			for _, c := range components {
				changed := sum(d, c) != sum(first, c)
				if changed != slices.Contains(tc.changed, c) {
					t.Errorf("%s checksum changed: %v, want %v", c, changed, !changed)
				}
			}
		})
	}
}

func TestRenderSMTPService(t *testing.T) {
	cases := []struct {
		typ       corev1.ServiceType
		port, tls int32
		wantType  corev1.ServiceType
		wantPorts []int32
		policy    corev1.ServiceExternalTrafficPolicy
		openToAll bool
	}{
		{"", 0, 0, corev1.ServiceTypeLoadBalancer, []int32{587}, corev1.ServiceExternalTrafficPolicyLocal, true},
		{corev1.ServiceTypeLoadBalancer, 587, 465, corev1.ServiceTypeLoadBalancer, []int32{587, 465}, corev1.ServiceExternalTrafficPolicyLocal, true},
		{corev1.ServiceTypeNodePort, 2525, 0, corev1.ServiceTypeNodePort, []int32{2525}, corev1.ServiceExternalTrafficPolicyLocal, true},
		{corev1.ServiceTypeClusterIP, 587, 0, corev1.ServiceTypeClusterIP, []int32{587}, "", false},
	}
	for _, tc := range cases {
		t.Run(string(tc.wantType)+"/"+strconv.Itoa(len(tc.wantPorts)), func(t *testing.T) {
			tenant := renderTenant("clinic")
			tenant.Spec.SMTP.ServiceType, tenant.Spec.SMTP.Port, tenant.Spec.SMTP.ImplicitTLSPort = tc.typ, tc.port, tc.tls
			d := mustRender(t, tenant, renderInput())
			types := map[string]corev1.ServiceType{}
			var smtp *corev1.Service
			for _, s := range d.Services {
				types[s.Name] = s.Spec.Type
				if s.Name == ServiceGatewaySMTP {
					smtp = s
				}
			}
			wantTypes := map[string]corev1.ServiceType{
				ServiceGatewaySMTP: tc.wantType, ServiceGateway: corev1.ServiceTypeClusterIP,
				ServiceViewer: corev1.ServiceTypeClusterIP, KeystoreServiceName: corev1.ServiceTypeClusterIP,
			}
			if !reflect.DeepEqual(types, wantTypes) {
				t.Fatalf("Service types %v, want %v", types, wantTypes)
			}
			var ports []int32
			for _, p := range smtp.Spec.Ports {
				ports = append(ports, p.Port)
				if want := map[string]int32{portNameSMTP: portSMTP, portNameSMTPS: portSMTPS}[p.Name]; p.TargetPort.IntVal != want {
					t.Errorf("port %s targets %v, want %d", p.Name, p.TargetPort, want)
				}
			}
			if !reflect.DeepEqual(ports, tc.wantPorts) || smtp.Spec.ExternalTrafficPolicy != tc.policy {
				t.Errorf("ports %v policy %q, want %v %q", ports, smtp.Spec.ExternalTrafficPolicy, tc.wantPorts, tc.policy)
			}
			// The SMTP ingress rule: open to all (LoadBalancer, NodePort) or the ingress
			// controller only (ClusterIP), and on the SMTP ports only.
			gw := policyOf(t, d, PolicyGatewayIngress)
			var smtpRule *networkingv1.NetworkPolicyIngressRule
			for i, r := range gw.Spec.Ingress {
				if r.Ports[0].Port.IntVal == portSMTP {
					smtpRule = &gw.Spec.Ingress[i]
				}
			}
			if smtpRule == nil {
				t.Fatal("no SMTP ingress rule")
			}
			if (len(smtpRule.From) == 0) != tc.openToAll {
				t.Errorf("SMTP rule from %+v, open to all: want %v", smtpRule.From, tc.openToAll)
			}
			for _, p := range smtpRule.Ports {
				if p.Port.IntVal != portSMTP && p.Port.IntVal != portSMTPS {
					t.Errorf("SMTP rule opens port %v", p.Port)
				}
			}
		})
	}
}

func TestRenderPodDisruptionBudgets(t *testing.T) {
	for _, replicas := range []int32{1, 2, 5} {
		tenant := renderTenant("clinic")
		tenant.Spec.Components.Viewer.Replicas = ptr.To(replicas)
		d := mustRender(t, tenant, renderInput())
		for _, pdb := range d.PodDisruptionBudgets {
			if pdb.Name != "viewer" {
				continue
			}
			if !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, selectorLabels("clinic", ComponentViewer)) {
				t.Errorf("selector %v", pdb.Spec.Selector)
			}
			switch {
			case replicas > 1 && (pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntVal != 1 || pdb.Spec.MaxUnavailable != nil):
				t.Errorf("%d replicas: PDB %+v, want minAvailable 1", replicas, pdb.Spec)
			case replicas == 1 && (pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntVal != 1 || pdb.Spec.MinAvailable != nil):
				t.Errorf("1 replica: PDB %+v, want maxUnavailable 1", pdb.Spec)
			}
		}
		if got := *deploymentOf(t, d, ComponentViewer).Spec.Replicas; got != replicas {
			t.Errorf("replicas %d, want %d", got, replicas)
		}
	}
}

func TestRenderAutoscaling(t *testing.T) {
	in := renderInput()
	in.Autoscaling = map[Component]AutoscalingInput{ComponentGateway: {MaxReplicas: 10, TargetCPUUtilizationPercentage: 60}}
	d := mustRender(t, renderTenant("clinic"), in)
	if len(d.HorizontalPodAutoscalers) != 1 {
		t.Fatalf("%d HPAs", len(d.HorizontalPodAutoscalers))
	}
	h := d.HorizontalPodAutoscalers[0]
	if h.Spec.ScaleTargetRef.Name != "gateway" || *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 10 ||
		*h.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 {
		t.Errorf("HPA %+v", h.Spec)
	}
	if deploymentOf(t, d, ComponentGateway).Spec.Replicas != nil {
		t.Errorf("an autoscaled Deployment sets replicas: the HPA and the operator would fight over them")
	}
	if deploymentOf(t, d, ComponentViewer).Spec.Replicas == nil {
		t.Errorf("the viewer is not autoscaled and has no replicas")
	}
}

func TestRenderLabelsAndMeta(t *testing.T) {
	tenant := renderTenant("clinic")
	tenant.Spec.Namespace = "clinic-prod"
	in := renderInput()
	in.Autoscaling = map[Component]AutoscalingInput{ComponentViewer: {MaxReplicas: 4}}
	d := mustRender(t, tenant, in)
	objs := d.Objects()
	if len(objs) != 3+4+3+4+8+3+1+1 { // ConfigMaps: one per component and the retention settings
		t.Errorf("%d objects", len(objs))
	}
	seen := map[string]bool{}
	for _, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		id := gvk.Kind + "/" + o.GetName()
		if gvk.Kind == "" || gvk.Version == "" {
			t.Errorf("%s has no TypeMeta: server-side apply needs apiVersion and kind", o.GetName())
		}
		if seen[id] {
			t.Errorf("%s rendered twice", id)
		}
		seen[id] = true
		if o.GetNamespace() != "clinic-prod" {
			t.Errorf("%s in namespace %q", id, o.GetNamespace())
		}
		for k, v := range tenantLabels("clinic") {
			if o.GetLabels()[k] != v {
				t.Errorf("%s: label %s=%q, want %q", id, k, o.GetLabels()[k], v)
			}
		}
	}
	if objs[0].GetObjectKind().GroupVersionKind().Kind != "NetworkPolicy" || objs[0].GetName() != PolicyDefaultDeny {
		t.Errorf("the default deny is not applied first")
	}
	for _, dep := range d.Deployments {
		for k, v := range tenantLabels("clinic") {
			if dep.Spec.Template.Labels[k] != v {
				t.Errorf("%s pods lack label %s", dep.Name, k)
			}
		}
	}
}

func TestRenderIngress(t *testing.T) {
	cases := []struct {
		name       string
		edit       func(*securetextv1alpha1.SecureTextTenant)
		annotation string
		secret     string
		hosts      map[string][]string // host -> "path service"
	}{
		{"cluster issuer, API host", func(*securetextv1alpha1.SecureTextTenant) {}, annotationCertManagerClusterIssuer + "=letsencrypt", "clinic-public-tls",
			map[string][]string{"view.clinic.example": {"/ viewer"}, "api.clinic.example": {"/ gateway"}}},
		{"existing Secret, API on the viewer host", func(t *securetextv1alpha1.SecureTextTenant) {
			t.Spec.TLS = &securetextv1alpha1.TLSSpec{SecretName: "clinic-cert"}
			t.Spec.Hostnames.API = ""
		}, "", "clinic-cert",
			map[string][]string{"view.clinic.example": {"/ viewer", "/v1 gateway", "/sms/twilio gateway"}}},
		{"issuer, API off, callbacks still routed", func(t *securetextv1alpha1.SecureTextTenant) {
			t.Spec.TLS.IssuerRef.Kind = "Issuer"
			t.Spec.API.Enabled = ptr.To(false)
		}, annotationCertManagerIssuer + "=letsencrypt", "clinic-public-tls",
			map[string][]string{"view.clinic.example": {"/ viewer"}, "api.clinic.example": {"/sms/twilio gateway"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := renderTenant("clinic")
			tc.edit(tenant)
			d := mustRender(t, tenant, renderInput())
			ing := d.Ingresses[0]
			var ann []string
			for _, k := range sortedKeys(ing.Annotations) {
				if strings.HasPrefix(k, "cert-manager.io/") {
					ann = append(ann, k+"="+ing.Annotations[k])
				}
			}
			if strings.Join(ann, ",") != tc.annotation {
				t.Errorf("annotations %v, want %q", ann, tc.annotation)
			}
			got := map[string][]string{}
			var hosts []string
			for _, r := range ing.Spec.Rules {
				hosts = append(hosts, r.Host)
				for _, p := range r.HTTP.Paths {
					got[r.Host] = append(got[r.Host], p.Path+" "+p.Backend.Service.Name)
					if p.Backend.Service.Port.Name != portNameHTTPS {
						t.Errorf("backend port %+v", p.Backend.Service.Port)
					}
				}
			}
			if !reflect.DeepEqual(got, tc.hosts) {
				t.Errorf("routes %v, want %v", got, tc.hosts)
			}
			if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != tc.secret || !reflect.DeepEqual(ing.Spec.TLS[0].Hosts, hosts) {
				t.Errorf("TLS %+v, want Secret %s for %v", ing.Spec.TLS, tc.secret, hosts)
			}
			// The workloads serve the same certificate the Ingress uses.
			if v := findVolume(deploymentOf(t, d, ComponentViewer), "tls"); v.Secret.SecretName != tc.secret {
				t.Errorf("viewer mounts TLS Secret %s, want %s", v.Secret.SecretName, tc.secret)
			}
		})
	}
}

func TestRenderNetworkPolicies(t *testing.T) {
	in := renderInput()
	in.Database.Peers = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.10/32"}}}
	in.OperatorNamespace = "securetext-system"
	in.OperatorPodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: "securetext-operator"}}
	d := mustRender(t, renderTenant("clinic"), in)
	if len(d.NetworkPolicies) != 8 {
		t.Fatalf("%d policies", len(d.NetworkPolicies))
	}
	tcp, udp := ptr.To(corev1.ProtocolTCP), ptr.To(corev1.ProtocolUDP)
	port := func(p int32, proto *corev1.Protocol) string { return string(*proto) + "/" + strconv.Itoa(int(p)) }
	describePorts := func(ports []networkingv1.NetworkPolicyPort) []string {
		var out []string
		for _, p := range ports {
			if p.Port == nil || p.Protocol == nil {
				out = append(out, "ANY")
				continue
			}
			out = append(out, port(p.Port.IntVal, p.Protocol))
		}
		return out
	}
	describePeers := func(peers []networkingv1.NetworkPolicyPeer) []string {
		var out []string
		for _, p := range peers {
			var s []string
			if p.NamespaceSelector != nil {
				s = append(s, "ns:"+metav1.FormatLabelSelector(p.NamespaceSelector))
			}
			if p.PodSelector != nil {
				s = append(s, "pod:"+metav1.FormatLabelSelector(p.PodSelector))
			}
			if p.IPBlock != nil {
				s = append(s, "ip:"+p.IPBlock.CIDR+"-"+strings.Join(p.IPBlock.Except, "-"))
			}
			out = append(out, strings.Join(s, "+"))
		}
		if len(out) == 0 {
			return []string{"ANYONE"}
		}
		return out
	}
	type rule struct{ peers, ports []string }
	describe := func(p *networkingv1.NetworkPolicy) (string, []string, []rule, []rule) {
		var types []string
		for _, t := range p.Spec.PolicyTypes {
			types = append(types, string(t))
		}
		var in, out []rule
		for _, r := range p.Spec.Ingress {
			in = append(in, rule{describePeers(r.From), describePorts(r.Ports)})
		}
		for _, r := range p.Spec.Egress {
			out = append(out, rule{describePeers(r.To), describePorts(r.Ports)})
		}
		return metav1.FormatLabelSelector(&p.Spec.PodSelector), types, in, out
	}

	pod := func(c string) string {
		return "pod:" + LabelComponent + "=" + c + "," + LabelTenant + "=clinic"
	}
	ingressNS := "ns:" + labelNamespaceName + "=ingress-nginx"
	internet := []string{"ip:0.0.0.0/0-10.244.0.0/16-10.96.0.0/12", "ip:::/0-fd00::/48"}
	want := map[string]struct {
		selector string
		types    []string
		in, out  []rule
	}{
		PolicyDefaultDeny: {"<none>", []string{"Ingress", "Egress"}, nil, nil},
		PolicyDNS: {"<none>", []string{"Egress"}, nil, []rule{{
			[]string{"ns:" + labelNamespaceName + "=kube-system+pod:k8s-app=kube-dns"}, []string{port(53, udp), port(53, tcp)},
		}}},
		PolicyKeystoreIngress: {pod("keystore")[4:], []string{"Ingress"}, []rule{{
			[]string{pod("gateway"), pod("viewer")}, []string{port(8443, tcp)},
		}}, nil},
		PolicyKeystoreEgress: {pod("keystore")[4:], []string{"Egress"}, nil, []rule{{
			[]string{"ns:" + labelNamespaceName + "=vault"}, []string{port(8200, tcp)},
		}}},
		PolicyGatewayIngress: {pod("gateway")[4:], []string{"Ingress"}, []rule{
			{[]string{ingressNS}, []string{port(8443, tcp)}},
			{[]string{"ANYONE"}, []string{port(2587, tcp)}},
			// The operator reads the retention status: its pods, in its namespace, only.
			{[]string{"ns:" + labelNamespaceName + "=securetext-system+pod:" + LabelName + "=securetext-operator"}, []string{port(9443, tcp)}},
		}, nil},
		PolicyGatewayEgress: {pod("gateway")[4:], []string{"Egress"}, nil, []rule{
			{[]string{pod("keystore")}, []string{port(8443, tcp)}},
			{[]string{"ip:192.0.2.10/32-"}, []string{port(5432, tcp)}},
			{internet, []string{port(443, tcp)}},
		}},
		PolicyViewerIngress: {pod("viewer")[4:], []string{"Ingress"}, []rule{
			{[]string{ingressNS}, []string{port(9443, tcp)}},
		}, nil},
		PolicyViewerEgress: {pod("viewer")[4:], []string{"Egress"}, nil, []rule{
			{[]string{pod("keystore")}, []string{port(8443, tcp)}},
			{[]string{"ip:192.0.2.10/32-"}, []string{port(5432, tcp)}},
			{internet, []string{port(443, tcp)}}, // one-time codes, on by default
		}},
	}
	for name, w := range want {
		sel, types, gotIn, gotOut := describe(policyOf(t, d, name))
		if sel != w.selector || !reflect.DeepEqual(types, w.types) || !reflect.DeepEqual(gotIn, w.in) || !reflect.DeepEqual(gotOut, w.out) {
			t.Errorf("%s:\n got  %s %v in %v out %v\n want %s %v in %v out %v", name, sel, types, gotIn, gotOut, w.selector, w.types, w.in, w.out)
		}
	}

	// Every component's pods are selected by an ingress and an egress policy of their own
	// (beside the default deny), and every allow rule names its ports.
	for _, p := range d.NetworkPolicies {
		for _, r := range p.Spec.Ingress {
			if len(r.Ports) == 0 {
				t.Errorf("%s admits every port", p.Name)
			}
		}
		for _, r := range p.Spec.Egress {
			if len(r.Ports) == 0 {
				t.Errorf("%s allows every port", p.Name)
			}
		}
	}
}

func TestRenderNetworkPolicyEgressVariants(t *testing.T) {
	cases := []struct {
		name      string
		edit      func(*securetextv1alpha1.SecureTextTenant, *RenderInput)
		vault     []string // CIDRs or namespace
		vaultPort int32
		viewerSMS bool
		gwSMS     bool
	}{
		{"in-cluster vault", func(*securetextv1alpha1.SecureTextTenant, *RenderInput) {}, []string{"ns=vault"}, 8200, true, true},
		{"vault by IP", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.Vault.Address = "https://203.0.113.7:8443"
		}, []string{"203.0.113.7/32"}, 8443, true, true},
		{"external vault by name", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.Vault.Address = "https://vault.example.org"
		}, []string{"0.0.0.0/0", "::/0"}, 443, true, true},
		{"vault peers given", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			in.Vault.Peers = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.51.100.0/24"}}}
		}, []string{"198.51.100.0/24"}, 8200, true, true},
		{"one-time codes", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.OneTimeCode = ptr.To(true)
		}, []string{"ns=vault"}, 8200, true, true},
		{"one-time codes by default", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.OneTimeCode = nil
		}, []string{"ns=vault"}, 8200, true, true},
		{"one-time codes off", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.ViewerAuth.OneTimeCode = ptr.To(false)
		}, []string{"ns=vault"}, 8200, false, true},
		{"console provider", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.SMS.Provider, t.Spec.Development = securetextv1alpha1.SMSConsole, true
			t.Spec.ViewerAuth.OneTimeCode = ptr.To(true)
		}, []string{"ns=vault"}, 8200, false, false},
	}
	has443 := func(p *networkingv1.NetworkPolicy) bool {
		for _, r := range p.Spec.Egress {
			if r.Ports[0].Port.IntVal == 443 {
				if len(r.To) == 0 || r.To[0].IPBlock == nil || r.To[0].IPBlock.CIDR != "0.0.0.0/0" || !slices.Contains(r.To[0].IPBlock.Except, "10.244.0.0/16") {
					t.Errorf("%s: SMS egress %+v does not exclude the cluster", p.Name, r.To)
				}
				return true
			}
		}
		return false
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant, in := renderTenant("clinic"), renderInput()
			tc.edit(tenant, &in)
			d := mustRender(t, tenant, in)
			ks := policyOf(t, d, PolicyKeystoreEgress).Spec.Egress
			if len(ks) != 1 || ks[0].Ports[0].Port.IntVal != tc.vaultPort {
				t.Fatalf("keystore egress %+v", ks)
			}
			var got []string
			for _, p := range ks[0].To {
				switch {
				case p.IPBlock != nil:
					got = append(got, p.IPBlock.CIDR)
				case p.NamespaceSelector != nil:
					got = append(got, "ns="+p.NamespaceSelector.MatchLabels[labelNamespaceName])
				}
			}
			if !reflect.DeepEqual(got, tc.vault) {
				t.Errorf("keystore → Vault peers %v, want %v", got, tc.vault)
			}
			if g := has443(policyOf(t, d, PolicyGatewayEgress)); g != tc.gwSMS {
				t.Errorf("gateway SMS egress %v, want %v", g, tc.gwSMS)
			}
			if v := has443(policyOf(t, d, PolicyViewerEgress)); v != tc.viewerSMS {
				t.Errorf("viewer SMS egress %v, want %v", v, tc.viewerSMS)
			}
		})
	}
}

// peerAdmits reports whether a NetworkPolicy peer of a policy in namespace policyNS admits a
// pod with podLabels in a namespace with nsLabels (the NetworkPolicy semantics of from/to).
func peerAdmits(t *testing.T, peer networkingv1.NetworkPolicyPeer, policyNS string, nsLabels, podLabels map[string]string) bool {
	t.Helper()
	if peer.IPBlock != nil {
		return false // pod-to-pod traffic inside the cluster is matched by selectors, not CIDRs excluding the cluster
	}
	match := func(sel *metav1.LabelSelector, set map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		return s.Matches(labels.Set(set))
	}
	if peer.NamespaceSelector == nil {
		// A pod selector alone selects pods in the policy's own namespace.
		if nsLabels[labelNamespaceName] != policyNS {
			return false
		}
	} else if !match(peer.NamespaceSelector, nsLabels) {
		return false
	}
	return peer.PodSelector == nil || match(peer.PodSelector, podLabels)
}

func TestRenderTenantIsolation(t *testing.T) {
	a := mustRender(t, renderTenant("alpha"), renderInput())
	b := mustRender(t, renderTenant("bravo"), renderInput())
	nsA := renderTenant("alpha").TargetNamespace()
	nsB := renderTenant("bravo").TargetNamespace()
	nsALabels := desiredNamespaceLabels(renderTenant("alpha"))
	nsALabels[labelNamespaceName] = nsA

	// Every pod of tenant A, with its exact labels.
	var podsA []map[string]string
	for _, dep := range a.Deployments {
		podsA = append(podsA, dep.Spec.Template.Labels)
	}

	var keystorePolicies int
	for _, p := range b.NetworkPolicies {
		if p.Namespace != nsB {
			t.Fatalf("%s in %s", p.Name, p.Namespace)
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(deploymentOf(t, b, ComponentKeystore).Spec.Template.Labels)) {
			continue
		}
		keystorePolicies++
		for _, r := range p.Spec.Ingress {
			for _, peer := range r.From {
				for _, pod := range podsA {
					if peerAdmits(t, peer, nsB, nsALabels, pod) {
						t.Errorf("%s/%s admits tenant alpha's pod %v", nsB, p.Name, pod)
					}
				}
			}
			if len(r.From) == 0 {
				t.Errorf("%s/%s admits everyone to the keystore", nsB, p.Name)
			}
		}
	}
	if keystorePolicies < 2 {
		t.Errorf("bravo's keystore is selected by %d policies, want the default deny and its own", keystorePolicies)
	}
	// Tenant A's gateway cannot leave for bravo's keystore either: its egress to a keystore is
	// by pod selector in its own namespace.
	for _, r := range policyOf(t, a, PolicyGatewayEgress).Spec.Egress {
		for _, peer := range r.To {
			if peer.NamespaceSelector != nil && peer.PodSelector != nil {
				t.Errorf("alpha's gateway may reach pods of other namespaces: %+v", peer)
			}
		}
	}
	// And the two tenants' keystores are different Services in different namespaces.
	if KeystoreURL(nsA) == KeystoreURL(nsB) {
		t.Errorf("both tenants use %s", KeystoreURL(nsA))
	}
}

func TestRenderErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*securetextv1alpha1.SecureTextTenant, *RenderInput)
		want string
	}{
		{"no image", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) { in.WorkloadImage = "" }, "workload image"},
		{"no vault address", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) { in.Vault.Address = "" }, "Vault address"},
		{"no vault role", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) { in.Vault.Role = "" }, "Vault role"},
		{"no senders", func(_ *securetextv1alpha1.SecureTextTenant, in *RenderInput) { in.Secrets.Senders = "" }, "senders"},
		{"no TLS at all", func(t *securetextv1alpha1.SecureTextTenant, in *RenderInput) {
			t.Spec.TLS = nil
			in.Secrets.ServingTLS = ""
		}, "spec.tls"},
		{"twilio without secret", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) { t.Spec.SMS.SecretRef = nil }, "secretRef"},
		// A tenant stored before the CRD refused this must not run console either.
		{"console on a production tenant", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Spec.SMS = securetextv1alpha1.SMSSpec{Provider: securetextv1alpha1.SMSConsole}
		}, "set spec.development: true"},
		{"dotted tenant name", func(t *securetextv1alpha1.SecureTextTenant, _ *RenderInput) {
			t.Name = "clinic.example"
			t.Spec.Namespace = "clinic"
		}, "DNS label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant, in := renderTenant("clinic"), renderInput()
			tc.edit(tenant, &in)
			_, err := Render(tenant, in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
	// The demo tenant (console SMS, no TLS, no API host) renders with a generated certificate.
	demo := renderTenant("demo")
	demo.Spec.TLS, demo.Spec.SMS = nil, securetextv1alpha1.SMSSpec{Provider: securetextv1alpha1.SMSConsole}
	demo.Spec.Development = true
	demo.Spec.Hostnames.API = ""
	d := mustRender(t, demo, renderInput())
	// Without spec.tls the hosts are still TLS hosts (the controller's default certificate,
	// HTTP redirected to HTTPS), and no Secret is named.
	if tls := d.Ingresses[0].Spec.TLS; len(tls) != 1 || tls[0].SecretName != "" || !reflect.DeepEqual(tls[0].Hosts, []string{demo.Spec.Hostnames.Viewer}) {
		t.Errorf("Ingress TLS without spec.tls: %+v", tls)
	}
	if v := findVolume(deploymentOf(t, d, ComponentGateway), "tls"); v.Secret.SecretName != "serving-tls" {
		t.Errorf("gateway serves %s, want the generated serving-tls", v.Secret.SecretName)
	}
}

// The gateway serves the retention status on its own port, behind the gateway Service, with a
// certificate of the tenant CA; only the operator's pods are admitted to it, and no one when
// the operator's namespace is unknown.
func TestRenderGatewayStatusEndpoint(t *testing.T) {
	in := renderInput()
	d := mustRender(t, renderTenant("clinic"), in)
	for _, r := range policyOf(t, d, PolicyGatewayIngress).Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port.IntVal == portGatewayStatus {
				t.Errorf("without the operator's namespace the status port is admitted from %v", r.From)
			}
		}
	}
	var svcPort *corev1.ServicePort
	for _, svc := range d.Services {
		if svc.Name != ServiceGateway {
			continue
		}
		for i := range svc.Spec.Ports {
			if svc.Spec.Ports[i].Name == portNameStatus {
				svcPort = &svc.Spec.Ports[i]
			}
		}
	}
	if svcPort == nil || svcPort.Port != 9443 || svcPort.TargetPort.IntVal != 9443 {
		t.Errorf("gateway Service status port: %+v, want 9443 → 9443", svcPort)
	}
	found := false
	for _, p := range deploymentOf(t, d, ComponentGateway).Spec.Template.Spec.Containers[0].Ports {
		found = found || (p.Name == portNameStatus && p.ContainerPort == 9443)
	}
	if !found {
		t.Error("the gateway container does not declare the status port")
	}
	cfg := configOf(t, d, ComponentGateway)
	for flag, want := range map[string]string{
		flagStatusAddr: ":9443", flagStatusCert: "/etc/securetext/status-tls/tls.crt",
		flagStatusKey: "/etc/securetext/status-tls/tls.key", flagStatusClientCA: "/etc/securetext/status-tls/ca.crt",
	} {
		if got := cfg[envName(EnvPrefixGateway, flag)]; got != want {
			t.Errorf("gateway -%s = %q, want %q", flag, got, want)
		}
	}
	mounted := false
	for _, v := range deploymentOf(t, d, ComponentGateway).Spec.Template.Spec.Volumes {
		mounted = mounted || (v.Secret != nil && v.Secret.SecretName == "gateway-status-tls")
	}
	if !mounted {
		t.Error("the gateway does not mount Secret gateway-status-tls")
	}
	if names := GatewayStatusDNSNames("st-clinic"); !reflect.DeepEqual(names, []string{"gateway.st-clinic.svc"}) {
		t.Errorf("status certificate names %v", names)
	}
}
