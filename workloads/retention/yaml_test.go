package retention

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParsePolicyYAML(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *Policy // nil: an error containing wantErr
		wantErr  string
	}{{
		name: "a RetentionPolicy object",
		in: `apiVersion: securetext.io/v1alpha1
kind: RetentionPolicy
metadata: {name: short, labels: {team: compliance}}
spec: {unreadLinkExpiry: 1m, contentPurgeAfter: 2m, auditRetention: 10m, sweepInterval: 1m}`,
		want: &Policy{Name: "short", UnreadLinkExpiry: Duration{time.Minute}, ContentPurgeAfter: Duration{2 * time.Minute},
			AuditRetention: Duration{10 * time.Minute}, SweepInterval: Duration{time.Minute}, KeyRotationPeriod: Duration{720 * time.Hour}},
	}, {
		name: "the spec alone, defaults for the rest",
		in:   `contentPurgeAfter: 1000h`,
		want: &Policy{Name: "dev", UnreadLinkExpiry: Duration{720 * time.Hour}, ContentPurgeAfter: Duration{1000 * time.Hour},
			AuditRetention: Duration{52608 * time.Hour}, SweepInterval: Duration{time.Hour}, KeyRotationPeriod: Duration{720 * time.Hour}},
	}, {
		name: "an object with no spec takes every default",
		in:   "kind: RetentionPolicy\nmetadata: {name: hipaa-standard}\n",
		want: &Policy{Name: "hipaa-standard", UnreadLinkExpiry: Duration{720 * time.Hour}, ContentPurgeAfter: Duration{2160 * time.Hour},
			AuditRetention: Duration{52608 * time.Hour}, SweepInterval: Duration{time.Hour}, KeyRotationPeriod: Duration{720 * time.Hour}},
	}, {
		name: "unknown field", in: "unreadLinkExpiry: 1h\npurgeAfter: 2h\n", wantErr: "field purgeAfter not found",
	}, {
		name: "days", in: "contentPurgeAfter: 90d\n", wantErr: "days are not a unit",
	}, {
		name: "purge before the link expires", in: "unreadLinkExpiry: 2h\ncontentPurgeAfter: 1h\n",
		wantErr: "contentPurgeAfter 1h0m0s must be at least unreadLinkExpiry 2h0m0s",
	}, {
		name: "sweep interval too long", in: "sweepInterval: 25h\n", wantErr: "sweepInterval 25h0m0s: must be at most 24h0m0s",
	}, {
		name: "below a minute", in: "sweepInterval: 30s\n", wantErr: "sweepInterval 30s: must be at least 1m0s",
	}, {
		name: "key rotation under a day", in: "keyRotationPeriod: 12h\n", wantErr: "keyRotationPeriod 12h0m0s: must be at least 24h0m0s",
	}, {
		name: "another kind", in: "kind: LegalHold\nmetadata: {name: x}\n", wantErr: "want a RetentionPolicy",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePolicyYAML([]byte(tc.in))
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPolicyYAMLFollowsTheCRD checks that the YAML policy has exactly the CRD's spec fields,
// with the CRD's defaults, so that a policy that works in `securetext dev` works in a cluster.
func TestPolicyYAMLFollowsTheCRD(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "securetext.io_retentionpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties map[string]struct {
									Default string `yaml:"default"`
								} `yaml:"properties"`
							} `yaml:"spec"`
						} `yaml:"properties"`
					} `yaml:"openAPIV3Schema"`
				} `yaml:"schema"`
			} `yaml:"versions"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) == 0 {
		t.Fatal("no versions in the CRD")
	}
	props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties
	var crdFields, ours []string
	for name, p := range props {
		crdFields = append(crdFields, name)
		d, err := time.ParseDuration(p.Default)
		if err != nil {
			t.Errorf("CRD default of %s: %v", name, err)
			continue
		}
		if policyDefaults[name] != d {
			t.Errorf("default of %s: CRD %s, securetext dev %s", name, d, policyDefaults[name])
		}
	}
	typ := reflect.TypeFor[yamlPolicySpec]()
	for i := range typ.NumField() {
		ours = append(ours, typ.Field(i).Tag.Get("yaml"))
	}
	slices.Sort(crdFields)
	slices.Sort(ours)
	if !slices.Equal(crdFields, ours) {
		t.Errorf("spec fields: CRD %v, securetext dev %v", crdFields, ours)
	}
}

func TestParseHoldsYAML(t *testing.T) {
	stream := `apiVersion: securetext.io/v1alpha1
kind: LegalHold
metadata:
  name: matter-117
  namespace: securetext-demo
  uid: 6b1f0c1e-0000-4000-8000-000000000117
  resourceVersion: "42"
  creationTimestamp: "2026-03-01T09:00:00Z"
  annotations: {securetext.io/held-by: alice@clinic.example}
spec:
  reason: matter 2026-117
  matcher: {recipients: ["+12025550143"], sentAfter: "2026-01-01T00:00:00Z"}
status: {heldMessages: 3}
---
kind: LegalHold
metadata:
  name: matter-100
  annotations: {securetext.io/held-by: alice@clinic.example, securetext.io/released-by: bob@clinic.example}
spec:
  reason: matter 2025-100
  active: false
  matcher: {senders: [ehr@clinic.example]}
`
	holds, released, err := ParseHoldsYAML([]byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	after := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	placed := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	wantHolds := []Hold{{
		Name: "matter-117", UID: "6b1f0c1e-0000-4000-8000-000000000117", Reason: "matter 2026-117",
		Matcher:  Matcher{Recipients: []string{"+12025550143"}, SentAfter: &after},
		PlacedBy: "alice@clinic.example", PlacedAt: &placed,
	}}
	wantReleased := []Hold{{
		Name: "matter-100", Reason: "matter 2025-100", Matcher: Matcher{Senders: []string{"ehr@clinic.example"}},
		PlacedBy: "alice@clinic.example", ReleasedBy: "bob@clinic.example",
	}}
	if !reflect.DeepEqual(holds, wantHolds) {
		t.Errorf("holds:\n got %+v\nwant %+v", holds, wantHolds)
	}
	if !reflect.DeepEqual(released, wantReleased) {
		t.Errorf("released:\n got %+v\nwant %+v", released, wantReleased)
	}

	list := "kind: List\nitems:\n- kind: LegalHold\n  metadata: {name: a}\n  spec: {reason: r, matcher: {messageIDs: [m1]}}\n"
	if holds, _, err := ParseHoldsYAML([]byte(list)); err != nil || len(holds) != 1 || holds[0].Name != "a" {
		t.Errorf("a List: holds %+v, err %v", holds, err)
	}

	for _, tc := range []struct{ name, in, wantErr string }{
		{"no reason", "kind: LegalHold\nmetadata: {name: a}\nspec: {matcher: {messageIDs: [m1]}}\n", "spec.reason is empty"},
		{"empty matcher", "kind: LegalHold\nmetadata: {name: a}\nspec: {reason: r, matcher: {}}\n", "the matcher sets none"},
		{"unknown spec field", "kind: LegalHold\nmetadata: {name: a}\nspec: {reason: r, matcher: {phone: [x]}}\n", "field phone not found"},
		{"another kind", "kind: RetentionPolicy\nmetadata: {name: a}\n", "want kind LegalHold"},
		{"no name", "kind: LegalHold\nspec: {reason: r, matcher: {messageIDs: [m1]}}\n", "no metadata.name"},
		{"twice", "kind: LegalHold\nmetadata: {name: a}\nspec: {reason: r, matcher: {messageIDs: [m1]}}\n---\nkind: LegalHold\nmetadata: {name: a}\nspec: {reason: r, matcher: {messageIDs: [m2]}}\n", "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ParseHoldsYAML([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
