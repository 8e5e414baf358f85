package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/securetext/securetext/controllers"
)

// verifyVault checks, with the root token, that VaultReady=True meant what it says: every
// tenant has its Transit mount and its keystore role, and sampled tenants (first, middle,
// last) have both keys with the right types, their policy, and a role bound to their
// keystore's service account. It also checks that the operator ran with its own policy only.
// It returns one line per check for the report, or an error naming what is missing.
func verifyVault(ctx context.Context, s *stack, m *measurement) ([]string, error) {
	var problems, lines []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// The operator's token.
	if tok, err := s.root.Auth().Token().LookupWithContext(ctx, s.operatorToken); err != nil {
		fail("look up the operator's token: %v", err)
	} else if got := stringList(tok.Data["policies"]); !slices.Equal(got, []string{operatorPolicy}) {
		fail("the operator's token has policies %v, want only [%s]", got, operatorPolicy)
	} else {
		lines = append(lines, fmt.Sprintf("the operator's Vault token holds policy %s only (%s), no root, no default policy", operatorPolicy, operatorPolicyFile))
	}

	// Every tenant's mount, from one list of the mount table.
	mounts, err := s.root.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list Vault mounts: %w", err)
	}
	found := 0
	for _, t := range m.tenants {
		mount, ok := mounts[tenantVault(t, m).Mount()+"/"]
		switch {
		case !ok:
			fail("no Transit mount %s", tenantVault(t, m).Mount())
		case mount.Type != "transit":
			fail("mount %s is of type %s, want transit", tenantVault(t, m).Mount(), mount.Type)
		default:
			found++
		}
	}
	lines = append(lines, fmt.Sprintf("Transit mounts securetext/<tenant>/transit: %d of %d tenants", found, len(m.tenants)))

	// Every tenant's role, from one list of the roles.
	roleDir := "auth/" + controllers.DefaultVaultAuthMount + "/role"
	list, err := s.root.Logical().ListWithContext(ctx, roleDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", roleDir, err)
	}
	var roles []string
	if list != nil {
		roles = stringList(list.Data["keys"])
	}
	found = 0
	for _, t := range m.tenants {
		if slices.Contains(roles, tenantVault(t, m).RoleName()) {
			found++
		} else {
			fail("no role %s/%s", roleDir, tenantVault(t, m).RoleName())
		}
	}
	lines = append(lines, fmt.Sprintf("Kubernetes auth roles %s/securetext-tenant-<tenant>: %d of %d tenants", roleDir, found, len(m.tenants)))

	// Sampled tenants in detail.
	var sampled []string
	for _, i := range []int{0, len(m.tenants) / 2, len(m.tenants) - 1} {
		if t := m.tenants[i]; !slices.Contains(sampled, t) {
			sampled = append(sampled, t)
		}
	}
	for _, t := range sampled {
		before := len(problems)
		tv := tenantVault(t, m)
		for key, typ := range map[string]string{tv.WrappingKey(): "aes256-gcm96", tv.SigningKey(): "ed25519"} {
			path := tv.Mount() + "/keys/" + key
			sec, err := s.root.Logical().ReadWithContext(ctx, path)
			switch {
			case err != nil:
				fail("GET %s: %v", path, err)
			case sec == nil:
				fail("GET %s: no such key", path)
			case sec.Data["type"] != typ:
				fail("GET %s: type %v, want %s", path, sec.Data["type"], typ)
			}
		}
		if policy, err := s.root.Sys().GetPolicyWithContext(ctx, tv.PolicyName()); err != nil || strings.TrimSpace(policy) == "" {
			fail("policy %s: missing (%v)", tv.PolicyName(), err)
		}
		path := roleDir + "/" + tv.RoleName()
		role, err := s.root.Logical().ReadWithContext(ctx, path)
		switch {
		case err != nil:
			fail("GET %s: %v", path, err)
		case role == nil:
			fail("GET %s: no such role", path)
		default:
			if got := stringList(role.Data["bound_service_account_namespaces"]); !slices.Equal(got, []string{tv.Namespace}) {
				fail("%s: bound_service_account_namespaces %v, want [%s]", path, got, tv.Namespace)
			}
			if got := stringList(role.Data["bound_service_account_names"]); !slices.Equal(got, []string{tv.ServiceAccount}) {
				fail("%s: bound_service_account_names %v, want [%s]", path, got, tv.ServiceAccount)
			}
			if got := stringList(role.Data["token_policies"]); !slices.Equal(got, []string{tv.PolicyName()}) {
				fail("%s: token_policies %v, want [%s]", path, got, tv.PolicyName())
			}
		}
		if len(problems) == before {
			lines = append(lines, fmt.Sprintf("%s: keys %s (aes256-gcm96) and %s (ed25519) in %s, policy %s, role bound to %s/%s",
				t, tv.WrappingKey(), tv.SigningKey(), tv.Mount(), tv.PolicyName(), tv.Namespace, tv.ServiceAccount))
		}
	}

	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("… and %d more", len(problems)-10))
		}
		return nil, fmt.Errorf("%w:\n  %s", errVerify, strings.Join(problems, "\n  "))
	}
	logf("Vault checked: every tenant has its mount and role; %s in detail", strings.Join(sampled, ", "))
	return lines, nil
}

// tenantVault names a tenant's Vault objects as the operator does.
func tenantVault(tenant string, m *measurement) controllers.TenantVault {
	return controllers.TenantVault{Tenant: tenant, Namespace: m.namespaces[tenant], ServiceAccount: string(controllers.ComponentKeystore)}
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
