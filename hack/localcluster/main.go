// Command localcluster runs a local Kubernetes control plane (kube-apiserver + etcd from bin/,
// the SecureText CRDs installed) for `make run`, writes a cluster-admin kubeconfig, and keeps
// running until interrupted. It has no nodes: pods never start, but every object, schema and
// CEL rule is handled by the real API server. With -vault-dir it also runs a Vault dev server
// whose Kubernetes auth method reviews tokens with that API server, as a cluster's Vault
// would, and writes its address and an operator token (the operator's documented policy only).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/hack/testenv"
)

func main() {
	kubeconfig := flag.String("write-kubeconfig", "bin/local/kubeconfig", "where to write the cluster-admin kubeconfig")
	vaultDir := flag.String("vault-dir", "", "run Vault too and write vault-addr and vault-token (the operator's) here")
	policyFile := flag.String("vault-operator-policy", "config/rbac/vault-operator-policy.hcl", "the operator's Vault policy")
	flag.Parse()
	if err := run(*kubeconfig, *vaultDir, *policyFile); err != nil {
		slog.Error("localcluster", "err", err)
		os.Exit(1)
	}
}

func run(kubeconfig, vaultDir, policyFile string) error {
	kube, err := testenv.StartKube()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer kube.Stop()
	if err := kube.WriteKubeconfig(kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	fmt.Printf("control plane ready: API server %s, kubeconfig %s\n", kube.Config.Host, kubeconfig)
	if vaultDir != "" {
		v, err := startVault(kube, vaultDir, policyFile)
		if err != nil {
			return err
		}
		defer v.Stop()
		fmt.Printf("vault ready: %s (operator token in %s)\n", v.Addr, filepath.Join(vaultDir, "vault-token"))
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	fmt.Println("stopping control plane")
	return nil
}

// startVault starts Vault, configures Kubernetes auth against kube, installs the operator's
// policy and writes a token that has only that policy.
func startVault(kube *testenv.Kube, dir, policyFile string) (*testenv.Vault, error) {
	ctx := context.Background()
	v, err := testenv.StartVaultProcess(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*testenv.Vault, error) { _ = v.Stop(); return nil, err }
	if _, err := testenv.ConfigureKubernetesAuthContext(ctx, kube, v); err != nil {
		return fail(err)
	}
	root, err := v.RootClient()
	if err != nil {
		return fail(err)
	}
	policy, err := os.ReadFile(policyFile)
	if err != nil {
		return fail(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "securetext-operator", string(policy)); err != nil {
		return fail(err)
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: []string{"securetext-operator"}, NoDefaultPolicy: true, TTL: "768h",
	})
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vault-token"), []byte(tok.Auth.ClientToken), 0o600); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vault-addr"), []byte(v.Addr), 0o600); err != nil {
		return fail(err)
	}
	return v, nil
}
