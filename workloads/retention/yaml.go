package retention

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// The RetentionPolicy CRD's defaults (api/v1alpha1/retentionpolicy_types.go), applied to a
// field a YAML policy leaves out, as the API server applies them.
var policyDefaults = map[string]time.Duration{
	"unreadLinkExpiry":  720 * time.Hour,
	"contentPurgeAfter": 2160 * time.Hour,
	"auditRetention":    52608 * time.Hour,
	"sweepInterval":     time.Hour,
	"keyRotationPeriod": DefaultKeyRotationPeriod,
}

// yamlPolicySpec is a RetentionPolicy's spec as YAML: the CRD's fields, nothing else.
type yamlPolicySpec struct {
	UnreadLinkExpiry  string `yaml:"unreadLinkExpiry"`
	ContentPurgeAfter string `yaml:"contentPurgeAfter"`
	AuditRetention    string `yaml:"auditRetention"`
	SweepInterval     string `yaml:"sweepInterval"`
	KeyRotationPeriod string `yaml:"keyRotationPeriod"`
}

// yamlObject is a Kubernetes object as YAML, as far as this package reads one. Its metadata
// is read leniently (kubectl get -o yaml adds labels, resourceVersion, managedFields…); its
// spec strictly.
type yamlObject struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Metadata   yamlMetadata `yaml:"metadata"`
	Spec       yaml.Node    `yaml:"spec"`
	Status     yaml.Node    `yaml:"status"`
}

type yamlMetadata struct {
	Name              string
	UID               string
	Annotations       map[string]string
	CreationTimestamp *time.Time
}

func (m *yamlMetadata) UnmarshalYAML(node *yaml.Node) error {
	var v struct {
		Name              string            `yaml:"name"`
		UID               string            `yaml:"uid"`
		Annotations       map[string]string `yaml:"annotations"`
		CreationTimestamp *time.Time        `yaml:"creationTimestamp"`
	}
	if err := node.Decode(&v); err != nil {
		return err
	}
	*m = yamlMetadata(v)
	return nil
}

// yamlHoldSpec is a LegalHold's spec as YAML.
type yamlHoldSpec struct {
	Reason  string `yaml:"reason"`
	Matcher struct {
		Recipients []string   `yaml:"recipients"`
		Senders    []string   `yaml:"senders"`
		MessageIDs []string   `yaml:"messageIDs"`
		SentAfter  *time.Time `yaml:"sentAfter"`
		SentBefore *time.Time `yaml:"sentBefore"`
	} `yaml:"matcher"`
	Active *bool `yaml:"active"`
}

// Annotations the chart's MutatingAdmissionPolicy writes on each LegalHold.
const (
	AnnotationHeldBy     = "securetext.io/held-by"
	AnnotationReleasedBy = "securetext.io/released-by"
)

// ParsePolicyYAML reads a retention policy for `securetext dev -retention-policy`: a
// RetentionPolicy object (kind: RetentionPolicy, as kubectl applies it) or its spec alone,
// named "dev". Fields left out take the CRD's defaults; unknown fields are refused, and the
// result is validated with the CRD's rules.
func ParsePolicyYAML(data []byte) (*Policy, error) {
	name := "dev"
	specNode := &yaml.Node{}
	if err := yaml.Unmarshal(data, specNode); err != nil {
		return nil, fmt.Errorf("retention policy: %w", err)
	}
	var head struct {
		Kind string `yaml:"kind"`
	}
	_ = specNode.Decode(&head)
	if head.Kind != "" {
		var obj yamlObject
		if err := strictDecode(specNode, &obj); err != nil {
			return nil, fmt.Errorf("retention policy: %w", err)
		}
		if obj.Kind != "RetentionPolicy" {
			return nil, fmt.Errorf("retention policy: kind %s: want a RetentionPolicy, or its spec alone", obj.Kind)
		}
		if obj.Metadata.Name != "" {
			name = obj.Metadata.Name
		}
		specNode = &obj.Spec
	}
	var spec yamlPolicySpec
	if specNode.Kind != 0 {
		if err := strictDecode(specNode, &spec); err != nil {
			return nil, fmt.Errorf("retention policy %s: spec: %w", name, err)
		}
	}
	p := &Policy{Name: name}
	var errs []error
	for _, f := range []struct {
		name string
		in   string
		out  *Duration
	}{
		{"unreadLinkExpiry", spec.UnreadLinkExpiry, &p.UnreadLinkExpiry},
		{"contentPurgeAfter", spec.ContentPurgeAfter, &p.ContentPurgeAfter},
		{"auditRetention", spec.AuditRetention, &p.AuditRetention},
		{"sweepInterval", spec.SweepInterval, &p.SweepInterval},
		{"keyRotationPeriod", spec.KeyRotationPeriod, &p.KeyRotationPeriod},
	} {
		if f.in == "" {
			f.out.D = policyDefaults[f.name]
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: write a duration like 720h (days are not a unit: 30 days is 720h)", f.name, f.in))
			continue
		}
		f.out.D = d
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("retention policy %s: %w", name, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// ParseHoldsYAML reads legal holds for `securetext dev -legal-holds`: LegalHold objects as
// kubectl applies them, as a YAML stream (--- between them) or a List. Active holds (spec.active
// true or left out, as the CRD defaults it) hold; released ones are returned apart.
func ParseHoldsYAML(data []byte) (holds, released []Hold, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []yamlObject
	for {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("legal holds: %w", err)
		}
		var list struct {
			Kind  string      `yaml:"kind"`
			Items []yaml.Node `yaml:"items"`
		}
		_ = node.Decode(&list)
		if list.Kind == "List" || list.Kind == "LegalHoldList" {
			for i := range list.Items {
				var obj yamlObject
				if err := strictDecode(&list.Items[i], &obj); err != nil {
					return nil, nil, fmt.Errorf("legal holds: item %d: %w", i, err)
				}
				objs = append(objs, obj)
			}
			continue
		}
		var obj yamlObject
		if err := strictDecode(&node, &obj); err != nil {
			return nil, nil, fmt.Errorf("legal holds: %w", err)
		}
		objs = append(objs, obj)
	}
	for i, obj := range objs {
		if obj.Kind != "LegalHold" {
			return nil, nil, fmt.Errorf("legal holds: object %d is a %q: want kind LegalHold", i+1, obj.Kind)
		}
		if obj.Metadata.Name == "" {
			return nil, nil, fmt.Errorf("legal holds: object %d has no metadata.name", i+1)
		}
		var spec yamlHoldSpec
		if err := strictDecode(&obj.Spec, &spec); err != nil {
			return nil, nil, fmt.Errorf("legal hold %s: spec: %w", obj.Metadata.Name, err)
		}
		if spec.Reason == "" {
			return nil, nil, fmt.Errorf("legal hold %s: spec.reason is empty: name the matter or case", obj.Metadata.Name)
		}
		h := Hold{
			Name: obj.Metadata.Name, UID: obj.Metadata.UID, Reason: spec.Reason,
			Matcher: Matcher{
				Recipients: spec.Matcher.Recipients, Senders: spec.Matcher.Senders, MessageIDs: spec.Matcher.MessageIDs,
				SentAfter: spec.Matcher.SentAfter, SentBefore: spec.Matcher.SentBefore,
			},
			PlacedBy: obj.Metadata.Annotations[AnnotationHeldBy], PlacedAt: obj.Metadata.CreationTimestamp,
		}
		if spec.Active == nil || *spec.Active {
			holds = append(holds, h)
			continue
		}
		h.ReleasedBy = obj.Metadata.Annotations[AnnotationReleasedBy]
		released = append(released, h)
	}
	if err := (Settings{Holds: holds}).Validate(); err != nil {
		return nil, nil, fmt.Errorf("legal holds: %w", err)
	}
	return holds, released, nil
}

// LoadFiles reads the settings of `securetext dev`: the policy from policyFile and the holds
// from holdsFile; an empty name leaves that part out (no policy: no sweep).
func LoadFiles(policyFile, holdsFile string) (Settings, error) {
	var s Settings
	if policyFile != "" {
		data, err := os.ReadFile(policyFile)
		if err != nil {
			return Settings{}, err
		}
		if s.Policy, err = ParsePolicyYAML(data); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", policyFile, err)
		}
	}
	if holdsFile != "" {
		data, err := os.ReadFile(holdsFile)
		if err != nil {
			return Settings{}, err
		}
		if s.Holds, s.Released, err = ParseHoldsYAML(data); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", holdsFile, err)
		}
	}
	return s, nil
}

// strictDecode decodes node into v, refusing fields v does not have.
func strictDecode(node *yaml.Node, v any) error {
	if node.Kind == 0 {
		return nil
	}
	out, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	return dec.Decode(v)
}
