package controllers

// The workloads' configuration, rendered exactly as their commands read it: every flag of
// `securetext gateway`, `securetext viewer` and `keystore` can be given as an environment
// variable <PREFIX><FLAG> (upper case, '-' as '_'; workloads/internal/flagenv). Non-secret
// settings go into one ConfigMap per component, loaded with envFrom; secrets are mounted as
// files and only their paths are in the ConfigMap.
//
// COUPLING: the flag names below are those registered in workloads/cmd/securetext/gateway.go,
// viewer.go, flaggroups.go and keystore.go. render_test.go reads
// those files and fails when a rendered flag does not exist there.

import (
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

// Environment prefixes of the workloads' commands.
const (
	EnvPrefixGateway  = "SECURETEXT_GATEWAY_"
	EnvPrefixViewer   = "SECURETEXT_VIEWER_"
	EnvPrefixKeystore = "SECURETEXT_KEYSTORE_"
)

// Flags of the workloads that the operator sets.
const (
	// shared by gateway and viewer (and -tenant, -tls-cert, -tls-key by the keystore)
	flagTenant                    = "tenant"
	flagTenantName                = "tenant-name"
	flagDatabaseURLFile           = "database-url-file"
	flagKeystoreURL               = "keystore-url"
	flagKeystoreCert              = "keystore-cert"
	flagKeystoreKey               = "keystore-key"
	flagKeystoreCA                = "keystore-ca"
	flagTLSCert                   = "tls-cert"
	flagTLSKey                    = "tls-key"
	flagMetricsAddr               = "metrics-addr"
	flagSMSProvider               = "sms-provider"
	flagTwilioAccountSID          = "twilio-account-sid"
	flagTwilioAuthTokenFile       = "twilio-auth-token-file"
	flagTwilioFrom                = "twilio-from"
	flagTwilioMessagingServiceSID = "twilio-messaging-service-sid"
	flagWebhookURL                = "webhook-url"
	flagWebhookSecretFile         = "webhook-secret-file"

	// gateway
	flagTextDomain         = "text-domain"
	flagRegion             = "region"
	flagSendersFile        = "senders-file"
	flagSMTPAddr           = "smtp-addr"
	flagSMTPSAddr          = "smtps-addr"
	flagAPIAddr            = "api-addr"
	flagMaxMessageBytes    = "max-message-bytes"
	flagSMSCallbackBaseURL = "sms-callback-base-url"
	flagViewerURL          = "viewer-url"
	flagSMSRate            = "sms-rate"
	flagQuietHours         = "quiet-hours"
	flagQuietHoursZone     = "quiet-hours-zone"
	flagAllowedCountries   = "allowed-countries"
	flagRetentionFile      = "retention-file"
	flagStatusAddr         = "status-addr"
	flagStatusCert         = "status-cert"
	flagStatusKey          = "status-key"
	flagStatusClientCA     = "status-client-ca"

	// viewer
	flagAddr              = "addr"
	flagTimeZone          = "time-zone"
	flagTrustedProxies    = "trusted-proxies"
	flagLogoFile          = "logo-file"
	flagBrandColor        = "brand-color"
	flagSupportPhone      = "support-phone"
	flagSupportEmail      = "support-email"
	flagSupportURL        = "support-url"
	flagMinPasswordLength = "min-password-length"
	flagOneTimeCode       = "one-time-code"
	flagIdleTimeout       = "idle-timeout"
	flagSessionLifetime   = "session-lifetime"
	flagMaxFailures       = "max-failures"
	flagReplies           = "replies"
	flagReplyMaxLength    = "reply-max-length"

	// keystore
	flagListen         = "listen"
	flagClientCA       = "client-ca"
	flagBackend        = "backend"
	flagVaultAddr      = "vault-addr"
	flagVaultCACert    = "vault-ca-cert"
	flagVaultAuth      = "vault-auth"
	flagVaultAuthMount = "vault-auth-mount"
	flagVaultRole      = "vault-role"
	flagVaultJWTFile   = "vault-jwt-file"
	flagTransitMount   = "transit-mount"
	flagStateMount     = "state-mount"
	flagWrappingKey    = "wrapping-key"
	flagSigningKey     = "signing-key"
)

// Container ports. The SMTP ports are unprivileged inside the pod (no NET_BIND_SERVICE: every
// capability is dropped); the Services map the public ports onto them.
const (
	portSMTP            = int32(2587)
	portSMTPS           = int32(2465)
	portGatewayAPI      = int32(8443)
	portGatewayMetrics  = int32(9464)
	portGatewayStatus   = int32(9443)
	portViewer          = int32(9443)
	portViewerMetrics   = int32(9465)
	portKeystore        = int32(8443)
	portKeystoreMetrics = int32(9466)
	portNameSMTP        = "smtp"
	portNameSMTPS       = "smtps"
	portNameHTTPS       = "https"
	portNameMetrics     = "metrics"
	portNameStatus      = "status"
	servicePortHTTPS    = int32(443)
	secretFileMode      = int32(0o440)
	configDir           = "/etc/securetext"
	serviceAccountDir   = "/var/run/secrets/kubernetes.io/serviceaccount"
	serviceAccountToken = "token"
)

// Keys of the Secrets the workloads mount.
const (
	keyTLSCert        = corev1.TLSCertKey       // tls.crt
	keyTLSKey         = corev1.TLSPrivateKeyKey // tls.key
	keyCACert         = "ca.crt"
	keySenders        = "senders.yaml"
	keyTwilioSID      = "accountSID"
	keyTwilioToken    = "authToken"
	keyWebhookURL     = "url"
	keyWebhookSigning = "signingKey"
)

// envName is the environment variable that stands in for flag name (flagenv.Name).
func envName(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// volumeMount is a Secret or ConfigMap a container mounts: volume name, source and the keys
// it projects to files under dir.
type volumeMount struct {
	volume    string
	secret    string // a Secret, or
	configMap string // a ConfigMap
	items     []corev1.KeyToPath
	dir       string
	// refreshed marks a file the workload rereads while it runs: the kubelet replaces it in
	// place, so it stays out of the config checksum and a change rolls no pods.
	refreshed bool
}

// componentConfig is a component's rendered configuration: its ConfigMap data (environment
// variables), the files it mounts, and environment variables that come from a Secret key.
type componentConfig struct {
	env       map[string]string
	mounts    []volumeMount
	secretEnv []corev1.EnvVar
}

func (cc *componentConfig) set(prefix, flag, value string) { cc.env[envName(prefix, flag)] = value }

// mountSecret adds a volume with the given keys of a Secret (file name = key unless renamed) and
// returns the path of each file, by key.
func (cc *componentConfig) mountSecret(volume, secret, dir string, keys ...[2]string) map[string]string {
	paths := map[string]string{}
	vm := volumeMount{volume: volume, secret: secret, dir: dir}
	for _, k := range keys {
		key, file := k[0], k[1]
		if file == "" {
			file = key
		}
		vm.items = append(vm.items, corev1.KeyToPath{Key: key, Path: file})
		paths[key] = path.Join(dir, file)
	}
	cc.mounts = append(cc.mounts, vm)
	return paths
}

// secretKeys projects each key to a file of the same name.
func secretKeys(ks ...string) [][2]string {
	out := make([][2]string, len(ks))
	for i, k := range ks {
		out[i] = [2]string{k, ""}
	}
	return out
}

// config renders the configuration of component c.
func (r *renderer) config(c Component) (*corev1.ConfigMap, componentConfig) {
	var cc componentConfig
	switch c {
	case ComponentGateway:
		cc = r.gatewayConfig()
	case ComponentViewer:
		cc = r.viewerConfig()
	default:
		cc = r.keystoreConfig()
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   typeConfigMap,
		ObjectMeta: r.meta(configMapName(c), c),
		Data:       cc.env,
	}
	return cm, cc
}

func configMapName(c Component) string { return string(c) + "-config" }

// common renders what the gateway and the viewer share: tenant, database, keystore client,
// serving certificate.
func (r *renderer) common(prefix string, c Component, cc *componentConfig) {
	cc.set(prefix, flagTenant, r.t.Name)
	cc.set(prefix, flagTenantName, r.spec.DisplayName)

	dbKey := r.spec.Database.SecretRef.Key
	if dbKey == "" {
		dbKey = defaultDatabaseSecretKey
	}
	db := cc.mountSecret("database", r.spec.Database.SecretRef.Name, configDir+"/database", [2]string{dbKey, "url"})
	cc.set(prefix, flagDatabaseURLFile, db[dbKey])

	clientSecret := r.in.Secrets.GatewayKeystoreClient
	if c == ComponentViewer {
		clientSecret = r.in.Secrets.ViewerKeystoreClient
	}
	ks := cc.mountSecret("keystore-client", clientSecret, configDir+"/keystore-client", secretKeys(keyTLSCert, keyTLSKey, keyCACert)...)
	cc.set(prefix, flagKeystoreURL, KeystoreURL(r.ns))
	cc.set(prefix, flagKeystoreCert, ks[keyTLSCert])
	cc.set(prefix, flagKeystoreKey, ks[keyTLSKey])
	cc.set(prefix, flagKeystoreCA, ks[keyCACert])

	tls := cc.mountSecret("tls", r.publicTLSSecret(), configDir+"/tls", secretKeys(keyTLSCert, keyTLSKey)...)
	cc.set(prefix, flagTLSCert, tls[keyTLSCert])
	cc.set(prefix, flagTLSKey, tls[keyTLSKey])
}

// sms renders the SMS provider's flags: settings in the ConfigMap, the auth token and signing
// secret as files. The Twilio account SID and the webhook URL are flag values, not files, in
// the workloads; they come from the provider's Secret by reference (valueFrom), so that no
// value of a Secret is ever written into a ConfigMap or a pod spec.
func (r *renderer) sms(prefix string, cc *componentConfig) {
	s := r.spec.SMS
	cc.set(prefix, flagSMSProvider, string(s.Provider))
	switch s.Provider {
	case securetextv1alpha1.SMSTwilio:
		files := cc.mountSecret("sms", s.SecretRef.Name, configDir+"/sms", secretKeys(keyTwilioToken)...)
		cc.set(prefix, flagTwilioAuthTokenFile, files[keyTwilioToken])
		if s.From != "" {
			cc.set(prefix, flagTwilioFrom, s.From)
		}
		if s.MessagingServiceSID != "" {
			cc.set(prefix, flagTwilioMessagingServiceSID, s.MessagingServiceSID)
		}
		cc.secretEnv = append(cc.secretEnv, secretKeyEnv(envName(prefix, flagTwilioAccountSID), s.SecretRef.Name, keyTwilioSID))
	case securetextv1alpha1.SMSWebhook:
		files := cc.mountSecret("sms", s.SecretRef.Name, configDir+"/sms", secretKeys(keyWebhookSigning)...)
		cc.set(prefix, flagWebhookSecretFile, files[keyWebhookSigning])
		cc.secretEnv = append(cc.secretEnv, secretKeyEnv(envName(prefix, flagWebhookURL), s.SecretRef.Name, keyWebhookURL))
	}
}

func secretKeyEnv(name, secret, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key,
	}}}
}

func (r *renderer) gatewayConfig() componentConfig {
	const p = EnvPrefixGateway
	cc := componentConfig{env: map[string]string{}}
	r.common(p, ComponentGateway, &cc)
	cc.set(p, flagTextDomain, r.spec.TextDomain)
	region := r.spec.SMS.DefaultRegion
	if region == "" {
		region = defaultRegion
	}
	cc.set(p, flagRegion, region)

	senders := cc.mountSecret("senders", r.in.Secrets.Senders, configDir+"/senders", secretKeys(keySenders)...)
	cc.set(p, flagSendersFile, senders[keySenders])

	// SMTP off is an empty address (the gateway opens no listener for an empty address); the
	// API listener always runs: it serves the probes and the SMS provider's callbacks.
	if r.smtpEnabled() {
		cc.set(p, flagSMTPAddr, listenAddr(portSMTP))
		if r.spec.SMTP.ImplicitTLSPort != 0 {
			cc.set(p, flagSMTPSAddr, listenAddr(portSMTPS))
		}
	} else {
		cc.set(p, flagSMTPAddr, "")
	}
	cc.set(p, flagAPIAddr, listenAddr(portGatewayAPI))
	cc.set(p, flagMetricsAddr, listenAddr(portGatewayMetrics))
	maxBytes := r.spec.SMTP.MaxMessageBytes
	if maxBytes == 0 {
		maxBytes = defaultMaxMessageBytes
	}
	cc.set(p, flagMaxMessageBytes, strconv.FormatInt(maxBytes, 10))

	r.sms(p, &cc)
	if r.smsExternal() {
		cc.set(p, flagSMSCallbackBaseURL, "https://"+r.apiHost()+"/sms/"+string(r.spec.SMS.Provider))
	}
	cc.set(p, flagViewerURL, r.viewerURL())
	perMinute := r.spec.SMS.RatePerMinute
	if perMinute == 0 {
		perMinute = defaultSMSRatePerMinute
	}
	cc.set(p, flagSMSRate, strconv.FormatFloat(float64(perMinute)/60, 'g', -1, 64))
	if q := r.spec.SMS.QuietHours; q != nil {
		cc.set(p, flagQuietHours, q.Start+"-"+q.End)
		cc.set(p, flagQuietHoursZone, r.quietHoursZone())
	}
	// Always set: the tenant's policy decides which countries it texts, not the gateway's default.
	// Unset, the gateway texts the countries that share the default region's calling code.
	if c := r.spec.SMS.AllowedCountries; len(c) > 0 {
		cc.set(p, flagAllowedCountries, strings.Join(c, ","))
	}
	// The sweeps' policy and legal holds (render_retention.go), reread as they change.
	cc.mounts = append(cc.mounts, retentionMount())
	cc.set(p, flagRetentionFile, RetentionFile)
	// The operator reads the last sweep here over mutual TLS (sweep_status.go).
	status := cc.mountSecret("status-tls", r.in.Secrets.GatewayStatusTLS, configDir+"/status-tls", secretKeys(keyTLSCert, keyTLSKey, keyCACert)...)
	cc.set(p, flagStatusAddr, listenAddr(portGatewayStatus))
	cc.set(p, flagStatusCert, status[keyTLSCert])
	cc.set(p, flagStatusKey, status[keyTLSKey])
	cc.set(p, flagStatusClientCA, status[keyCACert])
	return cc
}

func (r *renderer) viewerConfig() componentConfig {
	const p = EnvPrefixViewer
	cc := componentConfig{env: map[string]string{}}
	r.common(p, ComponentViewer, &cc)
	cc.set(p, flagAddr, listenAddr(portViewer))
	cc.set(p, flagMetricsAddr, listenAddr(portViewerMetrics))
	cc.set(p, flagTimeZone, r.timeZone())
	// Only the configured ingress proxies: unset trusts none (the viewer's default), so that
	// neither a forged header nor a rewritten source address picks whose throttle counts.
	if proxies := r.in.TrustedProxyCIDRs; len(proxies) > 0 {
		cc.set(p, flagTrustedProxies, strings.Join(proxies, ","))
	}

	b := r.spec.Branding
	if b.PrimaryColor != "" {
		cc.set(p, flagBrandColor, b.PrimaryColor)
	}
	if f, ok := supportContact(b.SupportContact); ok {
		cc.set(p, f, strings.TrimSpace(b.SupportContact))
	}
	if l := r.in.Logo; l != nil && l.ConfigMapName != "" && l.Key != "" {
		file := "logo" + path.Ext(l.Key)
		cc.mounts = append(cc.mounts, volumeMount{
			volume: "logo", configMap: l.ConfigMapName, dir: configDir + "/logo",
			items: []corev1.KeyToPath{{Key: l.Key, Path: file}},
		})
		cc.set(p, flagLogoFile, configDir+"/logo/"+file)
	}

	a := r.spec.ViewerAuth
	if a.MinPasswordLength != 0 {
		cc.set(p, flagMinPasswordLength, strconv.Itoa(int(a.MinPasswordLength)))
	}
	// Always set: the tenant's policy decides, not the viewer's default.
	cc.set(p, flagOneTimeCode, strconv.FormatBool(oneTimeCode(a)))
	if a.SessionIdleTimeout != "" {
		cc.set(p, flagIdleTimeout, a.SessionIdleTimeout)
	}
	if a.SessionAbsoluteTimeout != "" {
		cc.set(p, flagSessionLifetime, a.SessionAbsoluteTimeout)
	}
	if a.MaxFailedSignIns != 0 {
		cc.set(p, flagMaxFailures, strconv.Itoa(int(a.MaxFailedSignIns)))
	}
	// Always set, like one-time-code.
	replyMax := r.spec.Replies.MaxLength
	if replyMax == 0 {
		replyMax = defaultReplyMaxLength
	}
	cc.set(p, flagReplies, strconv.FormatBool(r.spec.Replies.Enabled))
	cc.set(p, flagReplyMaxLength, strconv.Itoa(int(replyMax)))
	// The viewer texts one-time codes itself; without codes it needs no SMS provider at all.
	if r.viewerSendsSMS() {
		r.sms(p, &cc)
	}
	return cc
}

func (r *renderer) keystoreConfig() componentConfig {
	const p = EnvPrefixKeystore
	cc := componentConfig{env: map[string]string{}}
	cc.set(p, flagTenant, r.t.Name)
	cc.set(p, flagListen, listenAddr(portKeystore))
	cc.set(p, flagMetricsAddr, listenAddr(portKeystoreMetrics))
	tls := cc.mountSecret("tls", r.in.Secrets.KeystoreServerTLS, configDir+"/tls", secretKeys(keyTLSCert, keyTLSKey, keyCACert)...)
	cc.set(p, flagTLSCert, tls[keyTLSCert])
	cc.set(p, flagTLSKey, tls[keyTLSKey])
	cc.set(p, flagClientCA, tls[keyCACert])
	cc.set(p, flagBackend, "vault")
	cc.set(p, flagVaultAddr, r.vaultAddr)
	if r.in.Vault.CACertSecret != "" {
		ca := cc.mountSecret("vault-ca", r.in.Vault.CACertSecret, configDir+"/vault-ca", secretKeys(keyCACert)...)
		cc.set(p, flagVaultCACert, ca[keyCACert])
	}
	// Kubernetes auth reads the projected token at the default service account path.
	cc.set(p, flagVaultAuth, "kubernetes")
	cc.set(p, flagVaultAuthMount, r.in.Vault.AuthMount)
	cc.set(p, flagVaultRole, r.in.Vault.Role)
	cc.set(p, flagVaultJWTFile, serviceAccountDir+"/"+serviceAccountToken)
	cc.set(p, flagTransitMount, r.in.Vault.TransitMount)
	cc.set(p, flagStateMount, r.in.Vault.StateMount)
	cc.set(p, flagWrappingKey, r.in.Vault.WrappingKey)
	cc.set(p, flagSigningKey, r.in.Vault.SigningKey)
	return cc
}

func listenAddr(port int32) string { return ":" + strconv.Itoa(int(port)) }
