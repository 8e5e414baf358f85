# securetext-operator: the SecureText operator's own Vault policy, and all it gets.
#
# Install it under exactly this name (the tenant globs below must never match it):
#
#   vault policy write securetext-operator config/rbac/vault-operator-policy.hcl
#
# and give it to the operator's identity as its only policy, with the default policy left out
# (token_no_default_policy=true on the operator's Kubernetes auth role).
#
# It covers exactly what controllers/vault.go (VaultProvisioner) calls. Tests prove both
# directions: TestVaultOperatorPolicyIsSufficient runs Ensure, drift repair, rotation, Remove
# and Shred with a token that holds nothing else, and TestVaultOperatorPolicyIsMinimal runs
# the same with each capability below taken out in turn and expects every run to fail.
#
# It assumes the defaults: tenant mounts under securetext/, Kubernetes auth enabled at
# auth/kubernetes. A cluster admin enables and configures that auth method
# (auth/kubernetes/config); the operator never does.
#
# What it deliberately does not allow:
#   - encrypt, decrypt, datakey, sign, export, backup on any tenant key: the operator manages
#     the keys but can never use them or take them out of Vault;
#   - listing mounts, policies or roles: every path it touches is computed from the tenant's name;
#   - reading or writing anything inside a tenant's state mount (the keystore's record of
#     the last audit checkpoint it signed);
#   - any policy or role outside securetext-tenant-*, and mounting anywhere but
#     securetext/<tenant>/transit and securetext/<tenant>/state.
# Residual risk, inherent in delegating policy writes: the policies it writes could say
# anything, and its roles could bind any service account. Protect the operator's
# ServiceAccount like a Vault admin credential.

# Tenant Transit mounts, securetext/<tenant>/transit: read (GET sys/mounts/<path>), mount
# (POST), unmount (DELETE, crypto-shredding), and set the description (tune).
path "sys/mounts/securetext/+/transit" {
  capabilities = ["read", "update", "delete"]
}
path "sys/mounts/securetext/+/transit/tune" {
  capabilities = ["update"]
}

# Tenant state mounts, securetext/<tenant>/state (KV version 2, where the keystore records the
# last audit checkpoint it signed): read, mount, unmount on Shred. Nothing inside them.
path "sys/mounts/securetext/+/state" {
  capabilities = ["read", "update", "delete"]
}

# Tenant keys: read, create (POST keys/<name>, an update to Transit), configure
# deletion_allowed and min_decryption_version (keys/<name>/config), rotate (keys/<name>/rotate),
# destroy the old versions of the wrapping key that no stored message needs (keys/<name>/trim,
# so that purged content is gone from backups too), destroy (DELETE keys/<name>, Shred only).
path "securetext/+/transit/keys/*" {
  capabilities = ["read", "update", "delete"]
}

# The keystore policy of each tenant (workloads/keystore.VaultPolicy).
path "sys/policies/acl/securetext-tenant-*" {
  capabilities = ["read", "update", "delete"]
}

# The keystore's Kubernetes auth role of each tenant (the auth method checks existence, so a
# new role needs create and a repaired one update).
path "auth/kubernetes/role/securetext-tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# The operator's own token: look it up and renew it (its login loop, not VaultProvisioner;
# the default policy that usually grants these is left out).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
