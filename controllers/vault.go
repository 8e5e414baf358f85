package controllers

// Vault objects of a tenant: its Transit mount and keys, its KV mount for the keystore's
// checkpoint state, the keystore's policy and its Kubernetes auth role. VaultProvisioner creates and repairs them (read, compare, write only
// what differs), rotates the wrapping key, and removes them when the tenant goes.
//
// Layout: one Transit mount per tenant, securetext/<tenant>/transit, rather than one key per
// tenant in a shared mount, because
//   - isolation is structural: a tenant's policy names paths under its own mount only, and a
//     mistake in a glob cannot reach a neighbour's keys unless it crosses a mount boundary;
//     the keys of every tenant keep the same short names (messages, audit);
//   - per-tenant mount settings: Vault tunes, audits (audit_non_hmac_*), seal-wraps, rate-limits
//     (sys/quotas/rate-limit with path=<mount>) and, in Enterprise, replicates per mount, so
//     one tenant's traffic or compliance settings never touch another's;
//   - crypto-shredding is total: unmounting a mount deletes everything stored under it (every
//     key version, archived versions, keys a person created by hand), in one call that needs
//     no knowledge of what is inside;
//   - Vault's cost of a mount is small (a router entry and a storage view), so 200 or 2,000
//     tenants are fine; the mount table is the only thing that grows.
//
// Names: the policy and the role are both securetext-tenant-<tenant>. The "tenant-" infix is
// deliberate: the operator's own policy is allowed to write sys/policies/acl/securetext-tenant-*,
// and must never match its own policy's name (securetext-operator), or the operator could
// rewrite its own rights.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/vaultpolicy"
)

const (
	// VaultMountPrefix is the path under which every tenant's mounts live; the operator's
	// Vault policy grants exactly sys/mounts/securetext/+/transit and securetext/+/state.
	VaultMountPrefix = "securetext"
	// vaultTenantObjectPrefix names tenant policies and roles; see the package comment on
	// why it is not just "securetext-".
	vaultTenantObjectPrefix = "securetext-tenant-"

	// DefaultWrappingKey and DefaultSigningKey are the Transit key names in every tenant's mount.
	DefaultWrappingKey = "messages"
	DefaultSigningKey  = "audit"
	// DefaultVaultAuthMount is where Vault's Kubernetes auth method is enabled.
	DefaultVaultAuthMount = "kubernetes"
	// DefaultKeystoreTokenTTL is the life of a keystore's Vault token; the keystore renews it
	// and logs in again at DefaultKeystoreTokenMaxTTL. Short, so that a token copied out of a
	// pod, or left behind by a deleted tenant, is useless soon.
	DefaultKeystoreTokenTTL    = 15 * time.Minute
	DefaultKeystoreTokenMaxTTL = time.Hour
	// defaultVaultTimeout bounds each Vault call.
	defaultVaultTimeout = 10 * time.Second

	wrappingKeyType = "aes256-gcm96"
	signingKeyType  = "ed25519"
)

// TransitLayout names the tenant's two Transit keys.
type TransitLayout struct {
	WrappingKey string // aes256-gcm96: wraps per-message data keys; default "messages"
	SigningKey  string // ed25519: signs audit checkpoints; default "audit"
}

// TenantVault is what the Vault objects of one tenant are made from.
type TenantVault struct {
	// Tenant is the SecureTextTenant's name; it names the mount, the policy and the role.
	Tenant string
	// Namespace and ServiceAccount are the keystore's: the only identity the role accepts.
	Namespace      string
	ServiceAccount string
	// RotationPeriod rotates the wrapping key when its latest version is this old; 0 never.
	RotationPeriod time.Duration
	// Keys names the Transit keys; empty fields take the defaults.
	Keys TransitLayout
	// Audience, when set, makes the role accept only service account tokens issued for this
	// audience (a projected token with audiences: [Audience] in the keystore pod). A token for
	// Vault then cannot be replayed to the Kubernetes API, nor the pod's API token to Vault.
	Audience string
}

// Mount is the tenant's Transit mount path.
func (t TenantVault) Mount() string { return VaultMountPrefix + "/" + t.Tenant + "/transit" }

// StateMount is the tenant's KV version 2 mount, where its keystore records the last audit
// checkpoint it signed: outside the tenant's database, so that whoever can write the database
// cannot make the keystore forget what it signed.
func (t TenantVault) StateMount() string { return VaultMountPrefix + "/" + t.Tenant + "/state" }

// PolicyName is the name of the keystore's Vault policy.
func (t TenantVault) PolicyName() string { return vaultTenantObjectPrefix + t.Tenant }

// RoleName is the keystore's Kubernetes auth role (the keystore's -vault-role).
func (t TenantVault) RoleName() string { return vaultTenantObjectPrefix + t.Tenant }

// WrappingKey is the name of the wrapping key.
func (t TenantVault) WrappingKey() string { return orDefault(t.Keys.WrappingKey, DefaultWrappingKey) }

// SigningKey is the name of the signing key.
func (t TenantVault) SigningKey() string { return orDefault(t.Keys.SigningKey, DefaultSigningKey) }

// Policy is the keystore's policy text, exactly as the keystore package defines it.
func (t TenantVault) Policy() string {
	return vaultpolicy.Keystore(t.Mount(), t.StateMount(), t.WrappingKey(), t.SigningKey())
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Names go into Vault paths and into policy globs, so they are checked here even though the
// API server already validated them: no '/', '*', '+', quotes or spaces can get through.
var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	keyName      = regexp.MustCompile(`^[A-Za-z0-9]([-_A-Za-z0-9]*[A-Za-z0-9])?$`)
)

func (t TenantVault) validate() error {
	check := func(what, v string, re *regexp.Regexp, max int) error {
		if len(v) == 0 || len(v) > max || !re.MatchString(v) {
			return fmt.Errorf("%s %q is not a valid name", what, v)
		}
		return nil
	}
	return errors.Join(
		check("tenant", t.Tenant, dnsSubdomain, 253),
		check("namespace", t.Namespace, dnsLabel, 63),
		check("service account", t.ServiceAccount, dnsSubdomain, 253),
		check("wrapping key", t.WrappingKey(), keyName, 128),
		check("signing key", t.SigningKey(), keyName, 128),
	)
}

// VaultProvisioner keeps tenants' Vault objects. It is safe for concurrent use on different
// tenants.
type VaultProvisioner struct {
	// Client is authenticated as the operator, whose Vault policy is
	// config/rbac/vault-operator-policy.hcl.
	Client *vaultapi.Client
	// AuthMount is the path of Vault's Kubernetes auth method; default "kubernetes".
	AuthMount string
	// TokenTTL and TokenMaxTTL of keystore tokens; defaults DefaultKeystoreTokenTTL and
	// DefaultKeystoreTokenMaxTTL.
	TokenTTL, TokenMaxTTL time.Duration
	// Timeout bounds each Vault call; default 10 s.
	Timeout time.Duration
	// Now is the clock for rotation; default time.Now.
	Now func() time.Time
	// Login is the session that keeps Client logged in (a *vaultlogin.Session); nil when
	// Client carries a token nobody renews. See call.
	Login VaultLogin
}

// VaultLogin is what the provisioner needs of the operator's Vault session
// (vaultlogin.Session).
type VaultLogin interface {
	// WaitLoggedIn waits for the first login, or for ctx, and then says why there was none.
	WaitLoggedIn(ctx context.Context) error
	// Err is nil while the client is logged in.
	Err() error
	// RequestLogin asks for a new login.
	RequestLogin()
}

// VaultResult says what Ensure, Remove or Shred did.
type VaultResult struct {
	// Changes lists what was created, repaired, rotated or removed, one short sentence each,
	// for events. Empty when Vault already matched: no write was made.
	Changes []string
	// Rotated is true when the wrapping key got a new version.
	Rotated bool
	// NextRotation is when the wrapping key is due for rotation; zero without a period. The
	// caller requeues for it.
	NextRotation time.Time
}

func (r *VaultResult) changed(format string, args ...any) {
	r.Changes = append(r.Changes, fmt.Sprintf(format, args...))
}

// Ensure creates the tenant's mount, keys, policy and role, repairs whatever differs, and
// rotates the wrapping key when it is due. When everything matches it only reads.
func (p *VaultProvisioner) Ensure(ctx context.Context, t TenantVault) (VaultResult, error) {
	var res VaultResult
	if err := t.validate(); err != nil {
		return res, &VaultError{Op: "check tenant Vault names", Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	if err := p.ensureMount(ctx, t.Mount(), transitEngine, mountDescription(t), true, &res); err != nil {
		return res, err
	}
	// The state mount's description is set when it is made and not repaired: it guards
	// nothing, and repairing it would need one more capability in the operator's policy.
	if err := p.ensureMount(ctx, t.StateMount(), kvEngine, stateMountDescription(t), false, &res); err != nil {
		return res, err
	}
	if err := p.ensureKey(ctx, t, t.WrappingKey(), wrappingKeyType, t.RotationPeriod, &res); err != nil {
		return res, err
	}
	if err := p.ensureKey(ctx, t, t.SigningKey(), signingKeyType, 0, &res); err != nil {
		return res, err
	}
	if err := p.ensurePolicy(ctx, t, &res); err != nil {
		return res, err
	}
	if err := p.ensureRole(ctx, t, &res); err != nil {
		return res, err
	}
	return res, nil
}

// Exists reports whether the tenant's Transit mount exists: whether Vault holds anything of
// the tenant that deletion must clean up.
func (p *VaultProvisioner) Exists(ctx context.Context, t TenantVault) (bool, error) {
	m, err := p.readMount(ctx, t.Mount())
	return m != nil, err
}

// Remove is the Retain deletion: it deletes the keystore's role and policy and keeps the mount
// and keys, so that a tenant created again under the same name reads its old messages. The
// policy goes too, not only the role: Vault resolves a token's policies by name on every
// request, so deleting the policy cuts off keystore tokens that are still valid at once,
// while deleting only the role would leave them working until they expire. Ensure puts both
// back. Idempotent; with nothing to remove it only reads.
func (p *VaultProvisioner) Remove(ctx context.Context, t TenantVault) (VaultResult, error) {
	var res VaultResult
	if err := t.validate(); err != nil {
		return res, &VaultError{Op: "check tenant Vault names", Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	if err := p.removeRole(ctx, t, &res); err != nil {
		return res, err
	}
	return res, p.removePolicy(ctx, t, &res)
}

// Shred is the Shred deletion (crypto-shredding): it cuts off the keystore (role, policy),
// then destroys the Transit keys and unmounts the tenant's mount. Every message ever wrapped
// with the tenant's key, in the database and in every backup, becomes unreadable.
//
// Each known key is destroyed explicitly (deletion_allowed=true, then DELETE) before the
// unmount, although the unmount alone would destroy it: the key deletions appear in Vault's
// audit log by name, which is what a compliance officer looks for, and a failure between the
// two steps leaves no usable key behind. The unmount then removes whatever else the mount
// holds. Idempotent: a tenant whose Vault objects never existed, or are gone already, costs
// only reads.
func (p *VaultProvisioner) Shred(ctx context.Context, t TenantVault) (VaultResult, error) {
	res, err := p.Remove(ctx, t)
	if err != nil {
		return res, err
	}
	mount := t.Mount()
	m, err := p.readMount(ctx, mount)
	if err != nil {
		return res, err
	}
	if m != nil {
		if m.engine() != transitEngine {
			return res, &VaultError{Op: "shred " + mount, Reason: securetextv1alpha1.ReasonVaultConflict,
				Err: fmt.Errorf("the mount is of type %q, not transit: not the operator's, so it is left alone", m.engine())}
		}
		for _, name := range []string{t.WrappingKey(), t.SigningKey()} {
			if err := p.destroyKey(ctx, mount, name, &res); err != nil {
				return res, err
			}
		}
		if err := p.unmount(ctx, mount, &res); err != nil {
			return res, err
		}
	}
	// The state records what the destroyed key signed; with the key gone it vouches for
	// nothing, and the tenant's audit trail stays in its database and its exports.
	state := t.StateMount()
	if m, err = p.readMount(ctx, state); err != nil || m == nil {
		return res, err
	}
	if m.engine() != kvEngine {
		return res, &VaultError{Op: "shred " + state, Reason: securetextv1alpha1.ReasonVaultConflict,
			Err: fmt.Errorf("the mount is of type %q, not kv version 2: not the operator's, so it is left alone", m.engine())}
	}
	return res, p.unmount(ctx, state, &res)
}

func (p *VaultProvisioner) unmount(ctx context.Context, mount string, res *VaultResult) error {
	if _, err := p.call(ctx, "unmount", "unmount "+mount, func(ctx context.Context) (*vaultapi.Secret, error) {
		return nil, p.Client.Sys().UnmountWithContext(ctx, mount)
	}); err != nil {
		return err
	}
	res.changed("unmounted %s", mount)
	return nil
}

// The secrets engines the operator mounts for a tenant: Transit for the keys, and KV version 2
// (type "kv" with options.version "2") for the keystore's checkpoint state.
var (
	transitEngine = mountEngine{Type: "transit"}
	kvEngine      = mountEngine{Type: "kv", Version: "2"}
)

type mountEngine struct{ Type, Version string }

func (e mountEngine) String() string {
	if e.Version != "" {
		return e.Type + " version " + e.Version
	}
	return e.Type
}

// mountInfo is the part of GET sys/mounts/<path> the operator compares.
type mountInfo struct {
	Type        string            `json:"type"`
	Description string            `json:"description"`
	Options     map[string]string `json:"options"`
}

func (m *mountInfo) engine() mountEngine {
	e := mountEngine{Type: m.Type}
	if m.Type == kvEngine.Type {
		e.Version = m.Options["version"]
	}
	return e
}

func mountDescription(t TenantVault) string {
	return fmt.Sprintf("SecureText tenant %s: keystore Transit keys (managed by %s; unmounting destroys them)", t.Tenant, FieldManager)
}

func stateMountDescription(t TenantVault) string {
	return fmt.Sprintf("SecureText tenant %s: the last audit checkpoint its keystore signed (managed by %s)", t.Tenant, FieldManager)
}

// readMount returns nil when nothing is mounted at path. Vault answers GET sys/mounts/<path>
// with 400 "No secret engine mount at <path>/" then; that answer is not counted as an error.
func (p *VaultProvisioner) readMount(ctx context.Context, path string) (*mountInfo, error) {
	s, err := p.call(ctx, "read_mount", "read mount "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
		s, err := p.Client.Logical().ReadWithContext(ctx, "sys/mounts/"+path)
		var re *vaultapi.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusNotFound ||
			re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "No secret engine mount")) {
			return nil, nil
		}
		return s, err
	})
	if err != nil || s == nil {
		return nil, err
	}
	var m mountInfo
	if err := decodeData(s, &m); err != nil {
		return nil, &VaultError{Op: "read mount " + path, Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	return &m, nil
}

func (p *VaultProvisioner) ensureMount(ctx context.Context, path string, engine mountEngine, desc string, repairDescription bool, res *VaultResult) error {
	m, err := p.readMount(ctx, path)
	if err != nil {
		return err
	}
	switch {
	case m == nil:
		in := &vaultapi.MountInput{Type: engine.Type, Description: desc}
		if engine.Version != "" {
			in.Options = map[string]string{"version": engine.Version}
		}
		_, err = p.call(ctx, "mount", "mount "+engine.String()+" at "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return nil, p.Client.Sys().MountWithContext(ctx, path, in)
		})
		if err == nil {
			res.changed("mounted %s at %s", engine, path)
		}
		return err
	case m.engine() != engine:
		return &VaultError{Op: "ensure mount " + path, Reason: securetextv1alpha1.ReasonVaultConflict,
			Err: fmt.Errorf("a %s engine is mounted there, want %s; move it away, the operator never unmounts what it did not make", m.engine(), engine)}
	case repairDescription && m.Description != desc:
		_, err = p.call(ctx, "tune_mount", "set the description of "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return nil, p.Client.Sys().TuneMountAllowNilWithContext(ctx, path, vaultapi.TuneMountConfigInput{Description: &desc})
		})
		if err == nil {
			res.changed("repaired the description of mount %s", path)
		}
		return err
	}
	return nil
}

// transitKey is the part of GET <mount>/keys/<name> the operator compares. Keys maps each
// version to its creation time: a Unix time in seconds for symmetric keys, an object with
// creation_time (RFC 3339) for asymmetric ones.
type transitKey struct {
	Type                 string                     `json:"type"`
	Exportable           bool                       `json:"exportable"`
	AllowPlaintextBackup bool                       `json:"allow_plaintext_backup"`
	DeletionAllowed      bool                       `json:"deletion_allowed"`
	LatestVersion        int                        `json:"latest_version"`
	MinDecryptionVersion int                        `json:"min_decryption_version"`
	MinEncryptionVersion int                        `json:"min_encryption_version"`
	MinAvailableVersion  int                        `json:"min_available_version"`
	Keys                 map[string]json.RawMessage `json:"keys"`
}

// latestCreated is when the latest version of k was made.
func (k *transitKey) latestCreated() (time.Time, error) { return k.created(k.LatestVersion) }

// keyVersionTime reads the creation time of version v from GET <mount>/keys/<name>.
func keyVersionTime(raw json.RawMessage, v int) (time.Time, error) {
	var unix int64
	if err := json.Unmarshal(raw, &unix); err == nil {
		return time.Unix(unix, 0), nil
	}
	var asym struct {
		CreationTime time.Time `json:"creation_time"`
	}
	if err := json.Unmarshal(raw, &asym); err != nil || asym.CreationTime.IsZero() {
		return time.Time{}, fmt.Errorf("no creation time for version %d", v)
	}
	return asym.CreationTime, nil
}

func (p *VaultProvisioner) readKey(ctx context.Context, mount, name string) (*transitKey, error) {
	path := mount + "/keys/" + name
	s, err := p.call(ctx, "read_key", "read Transit key "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().ReadWithContext(ctx, path)
	})
	if err != nil || s == nil {
		return nil, err
	}
	var k transitKey
	if err := decodeData(s, &k); err != nil {
		return nil, &VaultError{Op: "read Transit key " + path, Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	return &k, nil
}

// ensureKey creates the key (never exportable, no plaintext backup, not deletable), repairs
// deletion_allowed, and rotates it when period > 0 and its latest version is that old.
// exportable and allow_plaintext_backup cannot be turned off again in Vault, and a key's type
// never changes: those are conflicts for a person, never "repaired" by deleting the key.
func (p *VaultProvisioner) ensureKey(ctx context.Context, t TenantVault, name, keyType string, period time.Duration, res *VaultResult) error {
	mount := t.Mount()
	path := mount + "/keys/" + name
	k, err := p.readKey(ctx, mount, name)
	if err != nil {
		return err
	}
	if k == nil {
		s, err := p.call(ctx, "create_key", "create Transit key "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return p.Client.Logical().WriteWithContext(ctx, path, map[string]any{
				"type": keyType, "exportable": false, "allow_plaintext_backup": false,
			})
		})
		if err != nil {
			return err
		}
		res.changed("created %s key %s", keyType, path)
		if period > 0 {
			created := p.now()
			var nk transitKey
			if s != nil && decodeData(s, &nk) == nil {
				if c, err := nk.latestCreated(); err == nil {
					created = c
				}
			}
			res.NextRotation = created.Add(period)
		}
		return nil
	}
	var problems []string
	if k.Type != keyType {
		problems = append(problems, fmt.Sprintf("it is of type %s, want %s", k.Type, keyType))
	}
	if k.Exportable {
		problems = append(problems, "it is exportable")
	}
	if k.AllowPlaintextBackup {
		problems = append(problems, "it allows plaintext backup")
	}
	if len(problems) > 0 {
		return &VaultError{Op: "ensure Transit key " + path, Reason: securetextv1alpha1.ReasonVaultConflict,
			Err: fmt.Errorf("%s, and Vault cannot undo that; a person must decide whether to shred the tenant", strings.Join(problems, ", "))}
	}
	if k.DeletionAllowed {
		if _, err := p.call(ctx, "config_key", "forbid deletion of "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return p.Client.Logical().WriteWithContext(ctx, path+"/config", map[string]any{"deletion_allowed": false})
		}); err != nil {
			return err
		}
		res.changed("repaired Transit key %s: deletion_allowed=false", path)
	}
	if period <= 0 {
		return nil
	}
	created, err := k.latestCreated()
	if err != nil {
		return &VaultError{Op: "read Transit key " + path, Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	now := p.now()
	if due := created.Add(period); now.Before(due) {
		res.NextRotation = due
		return nil
	}
	if _, err := p.call(ctx, "rotate_key", "rotate Transit key "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().WriteWithContext(ctx, path+"/rotate", nil)
	}); err != nil {
		return err
	}
	res.Rotated = true
	res.NextRotation = now.Add(period)
	res.changed("rotated Transit key %s (version %d was made %s)", path, k.LatestVersion, created.UTC().Format(time.RFC3339))
	return nil
}

// destroyKey deletes a Transit key: deletion_allowed=true, then DELETE <mount>/keys/<name>.
func (p *VaultProvisioner) destroyKey(ctx context.Context, mount, name string, res *VaultResult) error {
	path := mount + "/keys/" + name
	k, err := p.readKey(ctx, mount, name)
	if err != nil || k == nil {
		return err
	}
	if !k.DeletionAllowed {
		if _, err := p.call(ctx, "config_key", "allow deletion of "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return p.Client.Logical().WriteWithContext(ctx, path+"/config", map[string]any{"deletion_allowed": true})
		}); err != nil {
			return err
		}
	}
	if _, err := p.call(ctx, "delete_key", "destroy Transit key "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().DeleteWithContext(ctx, path)
	}); err != nil {
		return err
	}
	res.changed("destroyed Transit key %s", path)
	return nil
}

func policyPath(t TenantVault) string { return "sys/policies/acl/" + t.PolicyName() }

// readPolicy returns the policy text and whether the policy exists.
func (p *VaultProvisioner) readPolicy(ctx context.Context, t TenantVault) (string, bool, error) {
	s, err := p.call(ctx, "read_policy", "read policy "+t.PolicyName(), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().ReadWithContext(ctx, policyPath(t))
	})
	if err != nil || s == nil {
		return "", false, err
	}
	text, _ := s.Data["policy"].(string)
	return text, true, nil
}

func (p *VaultProvisioner) ensurePolicy(ctx context.Context, t TenantVault, res *VaultResult) error {
	want := t.Policy()
	got, exists, err := p.readPolicy(ctx, t)
	if err != nil || (exists && got == want) {
		return err
	}
	if _, err := p.call(ctx, "write_policy", "write policy "+t.PolicyName(), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().WriteWithContext(ctx, policyPath(t), map[string]any{"policy": want})
	}); err != nil {
		return err
	}
	if exists {
		res.changed("repaired Vault policy %s", t.PolicyName())
	} else {
		res.changed("created Vault policy %s", t.PolicyName())
	}
	return nil
}

func (p *VaultProvisioner) removePolicy(ctx context.Context, t TenantVault, res *VaultResult) error {
	_, exists, err := p.readPolicy(ctx, t)
	if err != nil || !exists {
		return err
	}
	if _, err := p.call(ctx, "delete_policy", "delete policy "+t.PolicyName(), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().DeleteWithContext(ctx, policyPath(t))
	}); err != nil {
		return err
	}
	res.changed("deleted Vault policy %s", t.PolicyName())
	return nil
}

func (p *VaultProvisioner) rolePath(t TenantVault) string {
	return "auth/" + strings.Trim(orDefault(p.AuthMount, DefaultVaultAuthMount), "/") + "/role/" + t.RoleName()
}

// desiredRole is the whole role, every field that widens or changes who may log in and what
// the token can do: an update of a Kubernetes auth role merges, so fields the operator left
// out would keep whatever someone set.
func (p *VaultProvisioner) desiredRole(t TenantVault) map[string]any {
	ttl := p.TokenTTL
	if ttl <= 0 {
		ttl = DefaultKeystoreTokenTTL
	}
	maxTTL := p.TokenMaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultKeystoreTokenMaxTTL
	}
	return map[string]any{
		"bound_service_account_names":              []string{t.ServiceAccount},
		"bound_service_account_namespaces":         []string{t.Namespace},
		"bound_service_account_namespace_selector": "",
		"audience":                t.Audience,
		"token_policies":          []string{t.PolicyName()},
		"token_no_default_policy": true,
		"token_ttl":               int64(ttl / time.Second),
		"token_max_ttl":           int64(maxTTL / time.Second),
		"token_explicit_max_ttl":  int64(0),
		"token_period":            int64(0),
		"token_num_uses":          int64(0),
		"token_bound_cidrs":       []string{},
		"token_type":              "service", // renewable; the keystore renews its token
	}
}

// roleDiff lists the fields of got that differ from want.
func roleDiff(want, got map[string]any) []string {
	var diff []string
	for field, w := range want {
		g := got[field]
		var same bool
		switch w := w.(type) {
		case []string:
			same = slices.Equal(w, stringList(g))
		case string:
			s, _ := g.(string)
			same = w == s
		case bool:
			b, _ := g.(bool)
			same = w == b
		case int64:
			n, ok := g.(json.Number)
			i, err := n.Int64()
			same = ok && err == nil && i == w
		}
		if !same {
			diff = append(diff, field)
		}
	}
	slices.Sort(diff)
	return diff
}

func stringList(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, item := range items {
		s, _ := item.(string)
		out = append(out, s)
	}
	return out
}

func (p *VaultProvisioner) readRole(ctx context.Context, t TenantVault) (map[string]any, error) {
	s, err := p.call(ctx, "read_role", "read role "+p.rolePath(t), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().ReadWithContext(ctx, p.rolePath(t))
	})
	if err != nil || s == nil {
		return nil, err
	}
	if s.Data == nil {
		s.Data = map[string]any{}
	}
	return s.Data, nil
}

func (p *VaultProvisioner) ensureRole(ctx context.Context, t TenantVault, res *VaultResult) error {
	want := p.desiredRole(t)
	got, err := p.readRole(ctx, t)
	if err != nil {
		return err
	}
	var diff []string
	if got != nil {
		if diff = roleDiff(want, got); len(diff) == 0 {
			return nil
		}
	}
	if _, err := p.call(ctx, "write_role", "write role "+p.rolePath(t), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().WriteWithContext(ctx, p.rolePath(t), want)
	}); err != nil {
		return err
	}
	if got == nil {
		res.changed("created Kubernetes auth role %s for service account %s/%s", t.RoleName(), t.Namespace, t.ServiceAccount)
	} else {
		res.changed("repaired Kubernetes auth role %s (%s)", t.RoleName(), strings.Join(diff, ", "))
	}
	return nil
}

func (p *VaultProvisioner) removeRole(ctx context.Context, t TenantVault, res *VaultResult) error {
	got, err := p.readRole(ctx, t)
	if err != nil || got == nil {
		return err
	}
	if _, err := p.call(ctx, "delete_role", "delete role "+p.rolePath(t), func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().DeleteWithContext(ctx, p.rolePath(t))
	}); err != nil {
		return err
	}
	res.changed("deleted Kubernetes auth role %s", t.RoleName())
	return nil
}

func decodeData(s *vaultapi.Secret, out any) error {
	b, err := json.Marshal(s.Data)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func (p *VaultProvisioner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// call runs one Vault request with the call timeout, records its latency under operation, and
// classifies its error. op says what was being done, for the error message.
//
// With a Login session, the request waits (within the timeout) for the session's first login
// and is not sent while the session is logged out: Vault answers a request without a token
// with 403, which would read as the operator being refused, and every reconcile right after
// the operator starts would report it. A 403 asks the session for a new login, in case the
// token was revoked or expired early.
func (p *VaultProvisioner) call(ctx context.Context, operation, op string, fn func(context.Context) (*vaultapi.Secret, error)) (*vaultapi.Secret, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = defaultVaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.loggedIn(ctx); err != nil {
		verr := classifyVaultError("log in to Vault before "+op, err)
		vaultRequestErrors.WithLabelValues("login", verr.Reason).Inc()
		return nil, verr
	}
	start := time.Now()
	s, err := fn(ctx)
	vaultRequestDuration.WithLabelValues(operation).Observe(time.Since(start).Seconds())
	if err != nil {
		verr := classifyVaultError(op, err)
		vaultRequestErrors.WithLabelValues(operation, verr.Reason).Inc()
		if verr.Reason == securetextv1alpha1.ReasonVaultForbidden && p.Login != nil {
			p.Login.RequestLogin()
		}
		return s, verr
	}
	return s, nil
}

// loggedIn is nil when the client may send requests: there is no session, or it is logged in.
func (p *VaultProvisioner) loggedIn(ctx context.Context) error {
	if p.Login == nil {
		return nil
	}
	if err := p.Login.WaitLoggedIn(ctx); err != nil {
		return err
	}
	return p.Login.Err()
}

// VaultError is a failed Vault step. Reason is one of the ReasonVault* constants, for the
// VaultReady condition; Error says what was being done and what Vault said.
type VaultError struct {
	Op     string
	Reason string
	Err    error
}

func (e *VaultError) Error() string { return "vault: " + e.Op + ": " + e.Err.Error() }
func (e *VaultError) Unwrap() error { return e.Err }

// Temporary reports whether retrying alone can succeed: Vault unreachable, sealed, or refusing
// the operator's token (which a new login or a policy fix by a person ends). Conflicts and
// other refusals need a change to Vault or the spec.
func (e *VaultError) Temporary() bool {
	switch e.Reason {
	case securetextv1alpha1.ReasonVaultUnavailable, securetextv1alpha1.ReasonVaultSealed, securetextv1alpha1.ReasonVaultForbidden:
		return true
	}
	return false
}

// VaultReason is the VaultReady reason for err: "" for nil, ReasonVaultFailed for an error
// that is not a VaultError.
func VaultReason(err error) string {
	if err == nil {
		return ""
	}
	var ve *VaultError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return securetextv1alpha1.ReasonVaultFailed
}

// IsVaultTemporary reports whether err is a VaultError that retrying can end.
func IsVaultTemporary(err error) bool {
	var ve *VaultError
	return errors.As(err, &ve) && ve.Temporary()
}

// classifyVaultError sorts an error from the Vault client. Status codes per Vault's API
// documentation: 429 rate limited, 500 internal, 502 upstream, 503 sealed or standby. An
// error without a response (refused, reset, timed out) is Vault being unavailable.
func classifyVaultError(op string, err error) *VaultError {
	var ve *VaultError
	if errors.As(err, &ve) {
		return ve
	}
	reason := securetextv1alpha1.ReasonVaultUnavailable
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(msg), "sealed"):
			reason = securetextv1alpha1.ReasonVaultSealed
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
			reason = securetextv1alpha1.ReasonVaultUnavailable
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			reason = securetextv1alpha1.ReasonVaultForbidden
		default:
			reason = securetextv1alpha1.ReasonVaultFailed
		}
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		// The client's own message spans lines and repeats the URL; keep it to one line.
		err = &vaultStatusError{status: re.StatusCode, msg: msg, cause: re}
	}
	return &VaultError{Op: op, Reason: reason, Err: err}
}

// vaultStatusError is a one-line form of *vaultapi.ResponseError that still unwraps to it.
type vaultStatusError struct {
	status int
	msg    string
	cause  *vaultapi.ResponseError
}

func (e *vaultStatusError) Error() string {
	return fmt.Sprintf("Vault answered %d: %s", e.status, e.msg)
}
func (e *vaultStatusError) Unwrap() error { return e.cause }

// Vault call metrics: operation is one of a fixed set of verbs (read_key, create_key, …), never
// a tenant or a path, so the series stay few and need no cleanup when a tenant goes.
var (
	vaultRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "securetext_operator_vault_request_duration_seconds",
		Help:    "Latency of the operator's Vault calls, by operation.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"operation"})
	vaultRequestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "securetext_operator_vault_request_errors_total",
		Help: "The operator's failed Vault calls, by operation and VaultReady reason.",
	}, []string{"operation", "reason"})
)

func init() {
	metrics.Registry.MustRegister(vaultRequestDuration, vaultRequestErrors)
}
