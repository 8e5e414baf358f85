package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TenantNamespacePrefix is prepended to a tenant's name when spec.namespace is not set.
const TenantNamespacePrefix = "securetext-"

// DeletionPolicy says what happens to a tenant's data when its SecureTextTenant is deleted.
// +kubebuilder:validation:Enum=Retain;Shred
type DeletionPolicy string

const (
	// DeletionRetain removes the tenant's workloads and keeps its Vault keys and database, so the
	// tenant can be recreated and its messages and audit trail read again.
	DeletionRetain DeletionPolicy = "Retain"
	// DeletionShred also destroys the tenant's Vault Transit key: every message ever stored for the
	// tenant becomes unreadable, backups included (crypto-shredding). Refused while a LegalHold is active.
	DeletionShred DeletionPolicy = "Shred"
)

// SMSProviderType names the service that delivers the link texts.
// +kubebuilder:validation:Enum=twilio;webhook;console
type SMSProviderType string

const (
	// SMSTwilio sends through Twilio's Messages API.
	SMSTwilio SMSProviderType = "twilio"
	// SMSWebhook POSTs a signed JSON document to any other SMS gateway.
	SMSWebhook SMSProviderType = "webhook"
	// SMSConsole prints the text, link token and one-time code included, to the gateway's and
	// viewer's logs; the API server accepts it only on a tenant with spec.development: true.
	SMSConsole SMSProviderType = "console"
)

// SecretKeyRef names a key in a Secret in the tenant's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key within the Secret. Each reference documents its default.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// Branding is what the patient sees on the viewer pages.
type Branding struct {
	// LogoURL is an https URL of the tenant's logo on a public DNS name; the viewer fetches and
	// serves it itself so that the patient's browser never contacts a third party.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^https://([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]{2,63}(/[^?#]*)?$') && !self.matches('^https://[^/]*\\\\.(svc|local|internal)(/|$)')",message="logoURL must be an https:// URL on a public DNS name (no IP addresses, ports or cluster-internal hosts: the viewer fetches it server-side)"
	LogoURL string `json:"logoURL,omitempty"`
	// PrimaryColor is a CSS hex colour such as #0b5394.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^#[0-9a-fA-F]{6}$')",message="primaryColor must be a hex colour such as #0b5394"
	// +kubebuilder:validation:MaxLength=7
	PrimaryColor string `json:"primaryColor,omitempty"`
	// SupportContact tells a patient whom to contact when a link has expired or they are
	// locked out: a phone number such as "(202) 555-0100", an email address such as
	// help@clinic.example, or an https:// URL. The viewer's error pages need one.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="(self.matches('^[+]?[0-9 ().-]{7,30}$') && self.matches('[0-9].*[0-9].*[0-9].*[0-9].*[0-9].*[0-9].*[0-9]')) || self.matches('^[^@[:space:]<>\"]+@[^@[:space:]<>\"]+[.][^@[:space:]<>\"]+$') || self.matches('^https://[^[:space:]]+$')",message="supportContact must be one phone number such as (202) 555-0100, one email address such as help@clinic.example, or one https:// URL"
	SupportContact string `json:"supportContact"`
}

// Hostnames are the public names of the tenant's HTTP endpoints.
type Hostnames struct {
	// Viewer is the host in the links texted to patients, e.g. view.clinic.example.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="viewer must be a lowercase DNS name such as view.clinic.example"
	Viewer string `json:"viewer"`
	// API is the host of the REST API; empty means the API is served on the viewer host under /v1.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="api must be a lowercase DNS name such as api.clinic.example"
	API string `json:"api,omitempty"`
}

// TLSSpec says where the certificates of the tenant's endpoints come from. Exactly one of
// issuerRef and secretName is set.
// +kubebuilder:validation:XValidation:rule="has(self.issuerRef) != has(self.secretName)",message="tls needs exactly one of issuerRef (cert-manager) or secretName (an existing kubernetes.io/tls Secret)"
type TLSSpec struct {
	// IssuerRef names a cert-manager Issuer or ClusterIssuer that signs the certificates.
	// +optional
	IssuerRef *IssuerRef `json:"issuerRef,omitempty"`
	// SecretName is an existing kubernetes.io/tls Secret in the tenant's namespace.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName,omitempty"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:default=ClusterIssuer
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +optional
	Kind string `json:"kind,omitempty"`
}

// SMTPSpec exposes the SMTP submission endpoint that senders email.
type SMTPSpec struct {
	// Enabled turns the SMTP submission endpoint on.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// ServiceType of the SMTP Service: LoadBalancer (default), NodePort or ClusterIP.
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=LoadBalancer;NodePort;ClusterIP
	// +optional
	ServiceType corev1.ServiceType `json:"serviceType,omitempty"`
	// Port of the submission endpoint (587, STARTTLS required before AUTH).
	// +kubebuilder:default=587
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// ImplicitTLSPort, when set, also serves submission over implicit TLS (RFC 8314, usually 465).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	ImplicitTLSPort int32 `json:"implicitTLSPort,omitempty"`
	// MaxMessageBytes is the largest message accepted; larger ones are refused with 552 5.3.4.
	// +kubebuilder:default=26214400
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=157286400
	// +optional
	MaxMessageBytes int64 `json:"maxMessageBytes,omitempty"`
}

// APISpec exposes the REST API.
type APISpec struct {
	// Enabled turns the REST API on.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// QuietHours holds texts back during the night in the recipient's time zone (TCPA: 8am–9pm).
type QuietHours struct {
	// Start of the quiet period, HH:MM in 24-hour time.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`
	// End of the quiet period, HH:MM in 24-hour time.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	End string `json:"end"`
	// TimeZone is an IANA zone such as America/New_York, used when a recipient's own is unknown;
	// empty means the tenant's spec.timeZone.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}$')",message="quietHours.timeZone must be an IANA time zone name such as America/New_York or UTC"
	TimeZone string `json:"timeZone,omitempty"`
}

// SMSSpec chooses how link texts are delivered.
// +kubebuilder:validation:XValidation:rule="!has(self.allowedCountries) || !has(self.defaultRegion) || self.defaultRegion in self.allowedCountries",message="sms.allowedCountries must include sms.defaultRegion (US unless set): numbers written without a country code are read in that region"
// +kubebuilder:validation:XValidation:rule="self.provider == 'console' || has(self.secretRef)",message="sms.secretRef is required for the twilio and webhook providers: name the Secret that holds the provider's credentials"
// +kubebuilder:validation:XValidation:rule="self.provider != 'twilio' || has(self.from) || has(self.messagingServiceSID)",message="the twilio provider needs sms.from (an E.164 number) or sms.messagingServiceSID"
type SMSSpec struct {
	// Provider is twilio, webhook or console. Console prints each text, with its link and
	// one-time code, to the pods' logs, so that anyone who can read those logs can open the
	// patient's messages: it is accepted only on a tenant with spec.development: true.
	Provider SMSProviderType `json:"provider"`
	// SecretRef names the Secret with the provider's credentials (twilio: accountSID, authToken;
	// webhook: url, signingKey).
	// +optional
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
	// From is the sending number in E.164, e.g. +12025550100.
	// +optional
	// +kubebuilder:validation:Pattern=`^\+[1-9][0-9]{7,14}$`
	From string `json:"from,omitempty"`
	// MessagingServiceSID is a Twilio Messaging Service to send from instead of a single number.
	// +optional
	// +kubebuilder:validation:Pattern=`^MG[0-9a-f]{32}$`
	MessagingServiceSID string `json:"messagingServiceSID,omitempty"`
	// RatePerMinute caps the texts sent per minute (10DLC campaigns are throughput-limited).
	// +kubebuilder:default=240
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	RatePerMinute int32 `json:"ratePerMinute,omitempty"`
	// QuietHours, when set, holds texts back during the night.
	// +optional
	QuietHours *QuietHours `json:"quietHours,omitempty"`
	// DefaultRegion is the ISO 3166 region used to read numbers without a country code.
	// +kubebuilder:default=US
	// +kubebuilder:validation:Pattern=`^[A-Z]{2}$`
	// +optional
	DefaultRegion string `json:"defaultRegion,omitempty"`
	// AllowedCountries are the countries (ISO 3166-1 alpha-2 codes such as US or CA) whose
	// numbers the gateway texts; a message to any other country is refused, naming these
	// countries. Unset means the countries that share defaultRegion's calling code (for US, the
	// North American Numbering Plan: US, CA and the Caribbean members). Every country
	// added is a country whose numbers a sender can make the tenant pay to text (SMS pumping).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:Pattern=`^[A-Z]{2}$`
	AllowedCountries []string `json:"allowedCountries,omitempty"`
}

// DatabaseSpec names the tenant's own PostgreSQL database.
type DatabaseSpec struct {
	// SecretRef names the Secret in the tenant's namespace that holds the connection URL
	// (key defaults to "url").
	SecretRef SecretKeyRef `json:"secretRef"`
}

// VaultSpec overrides the operator's Vault defaults for one tenant.
type VaultSpec struct {
	// Address at which this tenant's keystore reaches the operator's Vault, e.g.
	// https://vault.vault.svc:8200; empty means the operator's default. The tenant's Vault
	// objects are always made in the operator's own Vault. Data keys cross this connection, so
	// it must be https (plain http only to a loopback address).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && url(self).getHostname() in ['127.0.0.1', 'localhost', '::1']))",message="vault.address must be an https:// URL (plain http is allowed only to a loopback address): data keys travel over this connection"
	Address string `json:"address,omitempty"`
	// KeyRotationPeriod rotates the tenant's Transit key this often, e.g. 2160h (90 days);
	// empty means the key is rotated only by hand.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('24h')",message="vault.keyRotationPeriod must be a duration of at least 24h, written like 2160h (days are not a unit: 90 days is 2160h)"
	// +kubebuilder:validation:MaxLength=32
	KeyRotationPeriod string `json:"keyRotationPeriod,omitempty"`
}

// ComponentSpec sizes one of the tenant's workloads.
type ComponentSpec struct {
	// Replicas of the component; two or more keep it available during node drains.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// Resources of the component's container. Unset, the operator's defaults apply: memory
	// requests sized from the idle working set measured on a cluster plus ordinary work
	// (gateway 64Mi, viewer 128Mi, keystore 32Mi), limits for the peak (512Mi, 512Mi, 256Mi),
	// and CPU requests of 100m, 100m and 50m.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// Autoscaling, when set, adds a HorizontalPodAutoscaler between replicas and maxReplicas.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`
}

// AutoscalingSpec scales a component on CPU use.
type AutoscalingSpec struct {
	// MaxReplicas is the most replicas the autoscaler may run.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetCPUUtilizationPercentage of the containers' CPU requests; default 75.
	// +kubebuilder:default=75
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=100
	// +optional
	TargetCPUUtilizationPercentage int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// Components sizes the tenant's workloads.
type Components struct {
	// +optional
	Gateway ComponentSpec `json:"gateway,omitempty"`
	// +optional
	Viewer ComponentSpec `json:"viewer,omitempty"`
	// +optional
	Keystore ComponentSpec `json:"keystore,omitempty"`
}

// ViewerAuth is how patients prove who they are (NIST SP 800-63B, OWASP ASVS).
// +kubebuilder:validation:XValidation:rule="!has(self.minPasswordLength) || self.minPasswordLength >= 15 || !has(self.oneTimeCode) || self.oneTimeCode",message="minPasswordLength below 15 needs oneTimeCode: true (NIST SP 800-63B: 15 characters when the password is the only factor, 8 with a second factor)"
// +kubebuilder:validation:XValidation:rule="!has(self.sessionIdleTimeout) || !has(self.sessionAbsoluteTimeout) || duration(self.sessionIdleTimeout) <= duration(self.sessionAbsoluteTimeout)",message="sessionIdleTimeout must not be longer than sessionAbsoluteTimeout"
type ViewerAuth struct {
	// MinPasswordLength: 15 by default; 8 is allowed only together with oneTimeCode.
	// +kubebuilder:default=15
	// +kubebuilder:validation:Minimum=8
	// +kubebuilder:validation:Maximum=64
	// +optional
	MinPasswordLength int32 `json:"minPasswordLength,omitempty"`
	// OneTimeCode asks for a 6-digit code texted to the recipient's phone when a password is
	// set (on first use) or reset, so that only the phone's holder can set it. On by default.
	// Turning it off lets whoever opens a link first (a forwarded text, a shared or stolen
	// phone, a number that was reassigned) set the password for that number, and that password
	// then opens every later message to the number.
	// +kubebuilder:default=true
	// +optional
	OneTimeCode *bool `json:"oneTimeCode,omitempty"`
	// SessionIdleTimeout ends a remembered session after this long without use.
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="sessionIdleTimeout must be a duration between 1m and 24h, written like 15m"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	SessionIdleTimeout string `json:"sessionIdleTimeout,omitempty"`
	// SessionAbsoluteTimeout ends a remembered session this long after login, used or not.
	// +kubebuilder:default="12h"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="sessionAbsoluteTimeout must be a duration between 1m and 720h, written like 12h"
	// +optional
	// +kubebuilder:validation:MaxLength=32
	SessionAbsoluteTimeout string `json:"sessionAbsoluteTimeout,omitempty"`
	// MaxFailedSignIns is how many failed sign-ins a recipient's password takes in 30 days
	// from browsers the patient never signed in from (NIST SP 800-63B allows at most 100),
	// with delays that grow after the first 10. Nothing locks the patient out: a browser the
	// patient signed in from keeps its own count, and a code texted to the phone works only in
	// the browser that asked for it.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxFailedSignIns int32 `json:"maxFailedSignIns,omitempty"`
}

// Replies is the tenant's policy on patients answering a message from its page in the viewer.
type Replies struct {
	// Enabled shows a reply form under each message. A reply is stored encrypted under the
	// message's own key, is purged together with the message (retentionPolicyName) and is never
	// texted: the sender reads it in GET /v1/messages/{id}/events, as an event of kind "replied".
	// Turn it on only where someone on the sender's side reads those events. A change rolls the
	// viewer's pods.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`
	// MaxLength is the longest reply a patient may send, in characters (1000 by default).
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=5000
	// +optional
	MaxLength int32 `json:"maxLength,omitempty"`
}

// SecureTextTenantSpec is one customer's dedicated SecureText stack.
// +kubebuilder:validation:XValidation:rule="self.sms.provider != 'console' || (has(self.development) && self.development)",message="sms.provider console writes every link and one-time code into the pods' logs, so it is allowed only on a tenant marked spec.development: true (demos and tests); for patients use twilio or webhook"
// +kubebuilder:validation:XValidation:rule="has(self.__namespace__) == has(oldSelf.__namespace__) && (!has(self.__namespace__) || self.__namespace__ == oldSelf.__namespace__)",message="spec.namespace is immutable: it cannot be set, changed or removed after the tenant is created (delete and recreate the tenant to move it)"
type SecureTextTenantSpec struct {
	// DisplayName is the organisation's name as patients see it in texts and on pages.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	DisplayName string `json:"displayName"`

	// Namespace the tenant's workloads run in; defaults to securetext-<tenant name>. Immutable.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="namespace must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="!(self in ['default', 'kube-system', 'kube-public', 'kube-node-lease']) && !self.startsWith('kube-')",message="namespace must be a namespace of its own, not default or a kube- namespace"
	Namespace string `json:"namespace,omitempty"`

	// Development marks a tenant for demos and tests, never for patients: only such a tenant
	// may use sms.provider console, which writes every link and one-time code into the pods'
	// logs, where anyone who can read the logs can open the messages.
	// +kubebuilder:default=false
	// +optional
	Development bool `json:"development,omitempty"`

	// TimeZone is the IANA time zone (such as America/Chicago) in which the viewer's pages show
	// times, and in which quiet hours are read when sms.quietHours names none. Empty means
	// sms.quietHours.timeZone when that is set, else America/New_York.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}$')",message="timeZone must be an IANA time zone name such as America/New_York or UTC"
	TimeZone string `json:"timeZone,omitempty"`

	// TextDomain is the mail domain senders write to: <phone number>@<textDomain>.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="textDomain must be a lowercase DNS name with at least one dot, such as text.clinic.example"
	TextDomain string `json:"textDomain"`

	// Hostnames of the viewer and the API.
	Hostnames Hostnames `json:"hostnames"`

	// TLS for the viewer and API hosts.
	// +optional
	TLS *TLSSpec `json:"tls,omitempty"`

	// Branding of the viewer pages and texts; supportContact is required.
	Branding Branding `json:"branding"`

	// SMTP submission endpoint.
	// +kubebuilder:default={}
	// +optional
	SMTP SMTPSpec `json:"smtp,omitempty"`

	// API endpoint.
	// +kubebuilder:default={}
	// +optional
	API APISpec `json:"api,omitempty"`

	// SMS provider that delivers the link texts.
	SMS SMSSpec `json:"sms"`

	// Database is the tenant's own PostgreSQL database.
	Database DatabaseSpec `json:"database"`

	// Vault overrides for this tenant.
	// +optional
	Vault VaultSpec `json:"vault,omitempty"`

	// Components sizes the gateway, viewer and keystore.
	// +kubebuilder:default={}
	// +optional
	Components Components `json:"components,omitempty"`

	// ViewerAuth is how patients sign in to read their messages.
	// +kubebuilder:default={}
	// +optional
	ViewerAuth ViewerAuth `json:"viewerAuth,omitempty"`

	// Replies lets patients answer a message from its page (tenant policy).
	// +kubebuilder:default={}
	// +optional
	Replies Replies `json:"replies,omitempty"`

	// RetentionPolicyName names the RetentionPolicy that decides when links expire and content is
	// purged; empty means the policy the operator's --default-retention-policy names. With no
	// policy (neither is set), or when the policy does not exist or is invalid, no sweep runs:
	// nothing expires or is purged on a guess, legal holds are still rendered, and the
	// RetentionReady condition (not Ready) says what to fix.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RetentionPolicyName string `json:"retentionPolicyName,omitempty"`

	// DeletionPolicy: Retain (default) keeps the Vault keys and database when the tenant is
	// deleted; Shred destroys the tenant's Transit key, making all its messages unreadable.
	// +kubebuilder:default=Retain
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// Endpoints are where senders and patients reach the tenant.
type Endpoints struct {
	// SMTP is host:port of the submission endpoint.
	// +optional
	SMTP string `json:"smtp,omitempty"`
	// API is the base URL of the REST API.
	// +optional
	API string `json:"api,omitempty"`
	// Viewer is the base URL of the patient pages.
	// +optional
	Viewer string `json:"viewer,omitempty"`
}

// SecureTextTenantStatus is what the operator observed.
type SecureTextTenantStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (summary), Reconciling, VaultReady, WorkloadsReady, and RetentionReady
	// (outside the summary: whether the retention settings hold a policy).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Namespace the tenant's workloads run in.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Endpoints of the tenant.
	// +optional
	Endpoints Endpoints `json:"endpoints,omitempty"`
	// ActiveLegalHolds is how many active LegalHolds the tenant's namespace has. The chart's
	// ValidatingAdmissionPolicy reads it to refuse deleting the LegalHold and RetentionPolicy
	// CRDs while any hold is active.
	// +optional
	ActiveLegalHolds int32 `json:"activeLegalHolds,omitempty"`
}

// SecureTextTenant is one customer's dedicated SecureText stack: its namespace, gateway, viewer,
// keystore, network policies and Vault key.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=stt,categories=securetext
// +kubebuilder:validation:XValidation:rule="has(self.spec.__namespace__) || (self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",message="without spec.namespace the tenant's namespace is securetext-<name>, so the name must be a DNS label of at most 52 characters (lowercase letters, digits and '-', no dots); or set spec.namespace"
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Text Domain",type=string,JSONPath=`.spec.textDomain`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.namespace`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Vault",type=string,JSONPath=`.status.conditions[?(@.type=="VaultReady")].status`
// +kubebuilder:printcolumn:name="Workloads",type=string,JSONPath=`.status.conditions[?(@.type=="WorkloadsReady")].status`
// +kubebuilder:printcolumn:name="Retention",type=string,JSONPath=`.status.conditions[?(@.type=="RetentionReady")].status`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Viewer",type=string,JSONPath=`.status.endpoints.viewer`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SecureTextTenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SecureTextTenantSpec   `json:"spec"`
	Status SecureTextTenantStatus `json:"status,omitempty"`
}

// TargetNamespace is the namespace the tenant's workloads run in.
func (t *SecureTextTenant) TargetNamespace() string {
	if t.Spec.Namespace != "" {
		return t.Spec.Namespace
	}
	return TenantNamespacePrefix + t.Name
}

// SecureTextTenantList is a list of SecureTextTenants.
// +kubebuilder:object:root=true
type SecureTextTenantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SecureTextTenant `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SecureTextTenant{}, &SecureTextTenantList{})
}
