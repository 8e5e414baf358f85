package controllers

// Destroying old versions of a tenant's wrapping key, so that content purged before is
// unrecoverable from every copy of the database, backups included (package retention, keys.go):
// the retention sweeper moves the data keys of every stored message to a settled version and
// reports the oldest version any of them needs (the floor) on the gateway's status endpoint;
// the operator, which alone may configure the tenant's Transit keys, destroys the versions below.

import (
	"context"
	"fmt"
	"strconv"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/keystore"
)

// KeyTrim is what TrimWrappingKey did.
type KeyTrim struct {
	// Destroyed is the new min_available_version: every version below it is gone. 0 when
	// nothing was destroyed.
	Destroyed int
	// Since is when version Destroyed was made: content purged before it is unrecoverable now.
	Since time.Time
}

// TrimWrappingKey destroys the versions of t's wrapping key below floor: first Vault stops
// decrypting with them (keys/<name>/config min_decryption_version, and min_encryption_version,
// which Vault's trim requires), then it deletes them (keys/<name>/trim min_available_version).
// A floor above the version that was the latest keystore.RotationSettle ago is lowered to it, so
// that no report can make the operator destroy a version a newly stored message may carry.
func (p *VaultProvisioner) TrimWrappingKey(ctx context.Context, t TenantVault, floor int) (KeyTrim, error) {
	if err := t.validate(); err != nil {
		return KeyTrim{}, &VaultError{Op: "check tenant Vault names", Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	mount, name := t.Mount(), t.WrappingKey()
	path := mount + "/keys/" + name
	k, err := p.readKey(ctx, mount, name)
	if err != nil || k == nil {
		return KeyTrim{}, err
	}
	settledBy := p.now().Add(-keystore.RotationSettle)
	for floor > 1 {
		if c, err := k.created(floor); err == nil && !c.After(settledBy) {
			break
		}
		floor--
	}
	if floor <= max(k.MinAvailableVersion, 1) || floor > k.LatestVersion {
		return KeyTrim{}, nil
	}
	since, err := k.created(floor)
	if err != nil {
		return KeyTrim{}, &VaultError{Op: "read Transit key " + path, Reason: securetextv1alpha1.ReasonVaultFailed, Err: err}
	}
	if k.MinDecryptionVersion < floor || k.MinEncryptionVersion < floor {
		if _, err := p.call(ctx, "config_key", "stop decrypting with old versions of "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
			return p.Client.Logical().WriteWithContext(ctx, path+"/config", map[string]any{
				"min_decryption_version": max(k.MinDecryptionVersion, floor), "min_encryption_version": max(k.MinEncryptionVersion, floor),
			})
		}); err != nil {
			return KeyTrim{}, err
		}
	}
	if _, err := p.call(ctx, "trim_key", "destroy old versions of "+path, func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.Client.Logical().WriteWithContext(ctx, path+"/trim", map[string]any{"min_available_version": floor})
	}); err != nil {
		return KeyTrim{}, err
	}
	return KeyTrim{Destroyed: floor, Since: since}, nil
}

// created is when version v of k was made.
func (k *transitKey) created(v int) (time.Time, error) {
	raw, ok := k.Keys[strconv.Itoa(v)]
	if !ok {
		return time.Time{}, fmt.Errorf("Vault lists no version %d", v)
	}
	return keyVersionTime(raw, v)
}
