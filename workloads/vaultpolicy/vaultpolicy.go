// Package vaultpolicy holds the Vault policies SecureText's workloads log in with. The
// operator writes them for each tenant; the keystore's tests run under the same text, so the
// policy and the Transit paths the keystore calls cannot drift apart.
package vaultpolicy

import "fmt"

// Keystore is the Vault policy a tenant's keystore needs, and all it gets: use the wrapping
// key (encrypt, decrypt, and rewrap to its latest version for the retention sweeper) and the
// signing key of its Transit mount, read their public parts and versions, read and write the
// last audit checkpoint it signed in its KV version 2 mount stateMount (and nothing else
// there), and look up and renew its own token. No create capability, so an encrypt can never
// create a key, and nothing on keys/<name>/config or trim: destroying key versions is the
// operator's. Give it to the keystore's Kubernetes auth role as its only policy, with the
// default policy left out: besides being least privilege, that halves Vault's cost per
// request (Vault builds the token's ACL from all its policies on every request).
func Keystore(mount, stateMount, wrappingKey, signingKey string) string {
	return fmt.Sprintf(`path "%[1]s/encrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/decrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/rewrap/%[2]s" { capabilities = ["update"] }
path "%[1]s/keys/%[2]s" { capabilities = ["read"] }
path "%[1]s/sign/%[3]s" { capabilities = ["update"] }
path "%[1]s/keys/%[3]s" { capabilities = ["read"] }
path "%[4]s/data/audit-checkpoint" { capabilities = ["create", "read", "update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
`, mount, wrappingKey, signingKey, stateMount)
}
