package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/hack/testenv"
)

// readManifest reads one YAML object from the repository, and the message on its first
// "# refused:" line, if any.
func readManifest(t *testing.T, rel string) (*unstructured.Unstructured, string) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	var refused string
	if first, _, _ := strings.Cut(string(data), "\n"); strings.HasPrefix(first, "# refused: ") {
		refused = strings.TrimPrefix(first, "# refused: ")
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return obj, refused
}

// TestSamplesAreAccepted applies every sample (server-side dry run, so other tests start clean).
func TestSamplesAreAccepted(t *testing.T) {
	files, err := filepath.Glob("../config/samples/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("samples: %v %v", files, err)
	}
	ensureNamespace(t, "securetext-clinic") // the LegalHold sample lives in the clinic's namespace
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		obj, _ := readManifest(t, strings.TrimPrefix(f, "../"))
		if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
			t.Errorf("%s refused: %v", f, err)
		}
	}
}

// TestInvalidExamplesAreRefused applies each file of config/samples/invalid and checks that the
// API server refuses it with the message that says what to fix.
func TestInvalidExamplesAreRefused(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob("../config/samples/invalid/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("invalid examples: %v %v", files, err)
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f, "../")
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj, refused := readManifest(t, rel)
			if refused == "" {
				t.Fatalf("%s has no '# refused:' first line", rel)
			}
			if filepath.Base(f) == "tenant-namespace-changed.yaml" {
				// An update: create the valid tenant first, then try to move its namespace.
				original, _ := readManifest(t, "config/samples/securetext_v1alpha1_securetexttenant.yaml")
				original.SetName("immutable-ns")
				obj.SetName("immutable-ns")
				if err := k8s.Create(ctx, original); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = k8s.Delete(ctx, original) })
				// The operator adds its finalizer meanwhile: retry on a conflict, not on a refusal.
				for range 20 {
					if err = k8s.Get(ctx, client.ObjectKeyFromObject(original), original); err != nil {
						t.Fatal(err)
					}
					obj.SetResourceVersion(original.GetResourceVersion())
					if err = k8s.Update(ctx, obj); !apierrors.IsConflict(err) {
						break
					}
				}
			} else {
				err = k8s.Create(ctx, obj, client.DryRunAll)
			}
			if err == nil {
				t.Fatalf("%s was accepted; want refusal containing %q", rel, refused)
			}
			if !strings.Contains(err.Error(), refused) {
				t.Fatalf("%s refused with %q; want it to contain %q", rel, err, refused)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}

// TestSchemaRefusals covers rules that have no example file: each case breaks one field of the
// demo sample and checks the refusal's message.
func TestSchemaRefusals(t *testing.T) {
	cases := []struct {
		name, want string
		mutate     func(spec map[string]any)
	}{
		{"twilio without secret", "sms.secretRef is required", func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "twilio", "from": "+12025550100"}
		}},
		{"short password without second factor", "minPasswordLength below 15 needs oneTimeCode", func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"minPasswordLength": int64(8), "oneTimeCode": false}
		}},
		{"console on a tenant marked not for development", "allowed only on a tenant marked spec.development: true", func(s map[string]any) {
			s["development"] = false
		}},
		{"time zone that is not an IANA name", "timeZone must be an IANA time zone name", func(s map[string]any) {
			s["timeZone"] = "Eastern Time"
		}},
		{"quiet hours in a zone that is not an IANA name", "quietHours.timeZone must be an IANA time zone name", func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "console", "quietHours": map[string]any{"start": "21:00", "end": "08:00", "timeZone": "EST 5"}}
		}},
		{"country in lower case", `spec.sms.allowedCountries[0] in body should match '^[A-Z]{2}$'`, func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "console", "allowedCountries": []any{"us"}}
		}},
		{"no countries listed", "spec.sms.allowedCountries in body should have at least 1 items", func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "console", "allowedCountries": []any{}}
		}},
		{"countries without the default region", "sms.allowedCountries must include sms.defaultRegion", func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "console", "allowedCountries": []any{"CA"}}
		}},
		{"idle longer than absolute", "sessionIdleTimeout must not be longer", func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"sessionIdleTimeout": "13h", "sessionAbsoluteTimeout": "12h"}
		}},
		{"days are not a unit", "sessionIdleTimeout must be a duration", func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"sessionIdleTimeout": "1d"}
		}},
		{"kube-system namespace", "must be a namespace of its own", func(s map[string]any) {
			s["namespace"] = "kube-system"
		}},
		{"tls with both sources", "tls needs exactly one of", func(s map[string]any) {
			s["tls"] = map[string]any{"secretName": "x", "issuerRef": map[string]any{"name": "y"}}
		}},
		{"bad colour", "primaryColor must be a hex colour", func(s map[string]any) {
			s["branding"] = map[string]any{"primaryColor": "blue", "supportContact": "(202) 555-0100"}
		}},
		{"unknown deletion policy", `supported values: "Retain", "Shred"`, func(s map[string]any) {
			s["deletionPolicy"] = "Delete"
		}},
		{"dotted name", "the name must be a DNS label", func(map[string]any) {}},
		{"vault over plain http", "vault.address must be an https:// URL", func(s map[string]any) {
			s["vault"] = map[string]any{"address": "http://vault.vault.svc:8200"}
		}},
		{"logo on a cluster host", "logoURL must be an https:// URL on a public DNS name", func(s map[string]any) {
			s["branding"] = map[string]any{"logoURL": "https://vault.vault.svc/logo.png", "supportContact": "(202) 555-0100"}
		}},
		{"logo on an IP address", "logoURL must be an https:// URL on a public DNS name", func(s map[string]any) {
			s["branding"] = map[string]any{"logoURL": "https://169.254.169.254/latest/meta-data", "supportContact": "(202) 555-0100"}
		}},
		{"no branding", "spec.branding: Required value", func(s map[string]any) {
			delete(s, "branding")
		}},
		{"no support contact", "spec.branding.supportContact: Required value", func(s map[string]any) {
			s["branding"] = map[string]any{"primaryColor": "#0b5394"}
		}},
		{"support contact that is not one contact", "supportContact must be one phone number", func(s map[string]any) {
			s["branding"] = map[string]any{"supportContact": "ask at the front desk"}
		}},
		{"empty tls secret", "spec.tls.secretName", func(s map[string]any) {
			s["tls"] = map[string]any{"secretName": ""}
		}},
		{"reply length zero", "spec.replies.maxLength in body should be greater than or equal to 1", func(s map[string]any) {
			s["replies"] = map[string]any{"enabled": true, "maxLength": int64(0)}
		}},
		{"reply length above 5000", "spec.replies.maxLength in body should be less than or equal to 5000", func(s map[string]any) {
			s["replies"] = map[string]any{"enabled": true, "maxLength": int64(6000)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj, _ := readManifest(t, "config/samples/securetext_v1alpha1_securetexttenant_demo.yaml")
			tc.mutate(obj.Object["spec"].(map[string]any))
			if tc.name == "dotted name" {
				obj.SetName("clinic.example")
			}
			err := k8s.Create(context.Background(), obj, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want a refusal containing %q", err, tc.want)
			}
		})
	}
}

// TestSchemaAccepts guards against rules that refuse valid input.
func TestSchemaAccepts(t *testing.T) {
	for name, mutate := range map[string]func(s map[string]any){
		"vault on loopback http": func(s map[string]any) { s["vault"] = map[string]any{"address": "http://127.0.0.1:8200"} },
		"vault on https":         func(s map[string]any) { s["vault"] = map[string]any{"address": "https://vault.vault.svc:8200"} },
		"public logo": func(s map[string]any) {
			s["branding"] = map[string]any{"logoURL": "https://cdn.clinic.example/logo.png", "supportContact": "+1 202 555 0100"}
		},
		"support email": func(s map[string]any) {
			s["branding"] = map[string]any{"supportContact": "help@clinic.example"}
		},
		"support page": func(s map[string]any) {
			s["branding"] = map[string]any{"supportContact": "https://clinic.example/help"}
		},
		"8 characters with code": func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"minPasswordLength": int64(8), "oneTimeCode": true}
		},
		"8 characters with the default code": func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"minPasswordLength": int64(8)}
		},
		"codes off with a long password": func(s map[string]any) {
			s["viewerAuth"] = map[string]any{"oneTimeCode": false}
		},
		"time zones": func(s map[string]any) {
			s["timeZone"] = "America/Argentina/Buenos_Aires"
			s["sms"] = map[string]any{"provider": "console", "quietHours": map[string]any{"start": "21:00", "end": "08:00", "timeZone": "Etc/GMT+5"}}
		},
		"quiet hours in the tenant's zone": func(s map[string]any) {
			s["timeZone"] = "UTC"
			s["sms"] = map[string]any{"provider": "console", "quietHours": map[string]any{"start": "21:00", "end": "08:00"}}
		},
		"countries": func(s map[string]any) {
			s["sms"] = map[string]any{"provider": "console", "defaultRegion": "CA", "allowedCountries": []any{"US", "CA"}}
		},
		"dotted name with namespace": func(s map[string]any) { s["namespace"] = "clinic-example" },
		"replies of 280 characters": func(s map[string]any) {
			s["replies"] = map[string]any{"enabled": true, "maxLength": int64(280)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			obj, _ := readManifest(t, "config/samples/securetext_v1alpha1_securetexttenant_demo.yaml")
			mutate(obj.Object["spec"].(map[string]any))
			if name == "dotted name with namespace" {
				obj.SetName("clinic.example")
			}
			if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

// TestSchemaDefaultsReplies: a tenant that does not mention replies gets them off, with the
// viewer's own default length, so the operator renders the same settings the viewer would assume.
func TestSchemaDefaultsReplies(t *testing.T) {
	obj, _ := readManifest(t, "config/samples/securetext_v1alpha1_securetexttenant_demo.yaml")
	if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	got, _, err := unstructured.NestedMap(obj.Object, "spec", "replies")
	if err != nil || !reflect.DeepEqual(got, map[string]any{"enabled": false, "maxLength": int64(1000)}) {
		t.Fatalf("spec.replies defaulted to %v (%v), want enabled: false, maxLength: 1000", got, err)
	}
}

// TestSchemaDefaultsSecureSettings: a production tenant that says nothing gets texted one-time
// codes on first use and is not a development tenant; its time zone and countries are left
// to the operator's documented fallbacks (render.go), so that existing tenants keep their
// quiet hours' zone.
func TestSchemaDefaultsSecureSettings(t *testing.T) {
	obj, _ := readManifest(t, "config/samples/securetext_v1alpha1_securetexttenant.yaml")
	spec := obj.Object["spec"].(map[string]any)
	delete(spec, "timeZone")
	delete(spec["sms"].(map[string]any), "allowedCountries")
	if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if code, found, err := unstructured.NestedBool(obj.Object, "spec", "viewerAuth", "oneTimeCode"); err != nil || !found || !code {
		t.Errorf("spec.viewerAuth.oneTimeCode defaulted to %v (found %v, %v); want true", code, found, err)
	}
	if dev, found, err := unstructured.NestedBool(obj.Object, "spec", "development"); err != nil || !found || dev {
		t.Errorf("spec.development defaulted to %v (found %v, %v); want false", dev, found, err)
	}
	for _, path := range [][]string{{"spec", "timeZone"}, {"spec", "sms", "allowedCountries"}} {
		if v, found, _ := unstructured.NestedFieldNoCopy(obj.Object, path...); found {
			t.Errorf("%s defaulted to %v; want it left unset", strings.Join(path, "."), v)
		}
	}
}

// TestActiveHoldMatcherIsImmutable: narrowing an active hold is refused; a released one may change.
func TestActiveHoldMatcherIsImmutable(t *testing.T) {
	ctx := context.Background()
	ensureNamespace(t, "securetext-clinic")
	hold, _ := readManifest(t, "config/samples/securetext_v1alpha1_legalhold.yaml")
	hold.SetName("immutable-hold")
	if err := k8s.Create(ctx, hold); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, hold) })
	// Patches: the operator writes the hold's status in between (no resourceVersion to match).
	widen := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"matcher":{"recipients":["+12025550199"]}}}`))
	err := k8s.Patch(ctx, hold, widen)
	if err == nil || !strings.Contains(err.Error(), "the matcher of an active hold cannot change") {
		t.Fatalf("changing the matcher of an active hold: got %v", err)
	}
	if err := k8s.Patch(ctx, hold, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"active":false}}`))); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := k8s.Patch(ctx, hold, widen); err != nil {
		t.Fatalf("changing a released hold: %v", err)
	}
}
