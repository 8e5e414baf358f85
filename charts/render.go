// Package charts renders the SecureText Helm chart with the Helm SDK, as `helm install` does,
// for the tests that check what the chart installs: the chart's own tests (lint, schema, a
// server-side dry-run of every object) and the operator's suite, which runs as the chart's
// ServiceAccount with the RBAC the chart grants.
package charts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/securetext/securetext/hack/testenv"
)

const (
	// Name is the operator chart's name and directory under charts/.
	Name = "securetext-operator"
	// KubeVersion is the Kubernetes version the chart is rendered for: the one the project's
	// envtest and kind clusters run.
	KubeVersion = "v1.37.2"
)

// Dir is the operator chart's directory in this source tree, found from the working directory
// (the project builds with -trimpath, so the source files' own paths are not known at run time).
func Dir() (string, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", Name), nil
}

// Load reads the operator chart from Dir.
func Load() (*chart.Chart, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	c, err := loader.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return c, nil
}

// Release is a rendered chart: its objects in the order Helm would install them, and its notes.
type Release struct {
	Objects []*unstructured.Unstructured
	Notes   string
	// Manifest is the rendered YAML stream, as `helm template` prints it.
	Manifest string
}

// Render renders the chart as `helm install --dry-run=client` would for release name and
// namespace, with values merged over values.yaml and checked against values.schema.json.
// apiVersions adds API versions the target cluster serves (e.g. monitoring.coreos.com/v1).
func Render(releaseName, namespace string, values map[string]any, apiVersions ...string) (*Release, error) {
	c, err := Load()
	if err != nil {
		return nil, err
	}
	kv, err := common.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, err
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(io.Discard, nil)))
	cfg.Releases = storage.Init(driver.NewMemory())
	cfg.KubeClient = &kubefake.PrintingKubeClient{Out: io.Discard}
	cfg.Capabilities = common.DefaultCapabilities.Copy()
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	install.KubeVersion = kv
	install.APIVersions = apiVersions
	if values == nil {
		values = map[string]any{}
	}
	r, err := install.Run(c, values)
	if err != nil {
		return nil, err
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("helm returned a %T, not a v1 release", r)
	}
	objs, err := decode(rel.Manifest)
	if err != nil {
		return nil, err
	}
	notes := ""
	if rel.Info != nil {
		notes = rel.Info.Notes
	}
	return &Release{Objects: objs, Notes: notes, Manifest: rel.Manifest}, nil
}

// decode splits a YAML stream into objects, skipping empty documents.
func decode(manifest string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(manifest)), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode rendered manifest: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Find returns the rendered object of that kind and name, or nil.
func (r *Release) Find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Kinds lists "Kind/name" of every rendered object, sorted, for messages.
func (r *Release) Kinds() []string {
	var out []string
	for _, o := range r.Objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// String is the manifest with a header, for test logs.
func (r *Release) String() string {
	return "# " + strings.Join(r.Kinds(), ", ") + "\n" + r.Manifest
}
