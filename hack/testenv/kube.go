package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ServiceCIDR is the API server's Service IP range: a /16, as a cluster's would be wide.
// envtest's own default, a /24, runs out after 63 tenants of four Services each.
const ServiceCIDR = "10.0.0.0/16"

// Kube is a real kube-apiserver and etcd (envtest) with the SecureText CRDs installed.
type Kube struct {
	Env    *envtest.Environment
	Config *rest.Config
}

// StartKube starts kube-apiserver and etcd from bin/ on loopback and installs the CRDs from
// config/crd/bases. envtest runs no controller-manager: namespaces never finish terminating and
// nothing garbage-collects, which tests must keep in mind.
func StartKube() (*Kube, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := Binary(name, "test-binaries"); err != nil {
			return nil, err
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		BinaryAssetsDirectory:    bin,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDR)
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", bin, err)
	}
	return &Kube{Env: env, Config: cfg}, nil
}

// Stop stops the API server and etcd and removes their data.
func (k *Kube) Stop() error { return k.Env.Stop() }

// WriteKubeconfig writes a kubeconfig for a cluster-admin user (group system:masters) to path.
func (k *Kube) WriteKubeconfig(path string) error {
	user, err := k.Env.AddUser(envtest.User{Name: "securetext-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add admin user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// Write then rename, so that a script waiting for the file never reads half of it.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
