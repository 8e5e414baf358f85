package controllers

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

func testPolicy(name string, gen int64, spec securetextv1alpha1.RetentionPolicySpec) *securetextv1alpha1.RetentionPolicy {
	return &securetextv1alpha1.RetentionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen}, Spec: spec}
}

// crdDefaults is a policy spec as the CRD's defaults leave it.
var crdDefaults = securetextv1alpha1.RetentionPolicySpec{
	UnreadLinkExpiry: "720h", ContentPurgeAfter: "2160h", AuditRetention: "52608h", SweepInterval: "1h",
}

func testHold(name, uid string, active bool, recipients ...string) securetextv1alpha1.LegalHold {
	return securetextv1alpha1.LegalHold{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "securetext-clinic", UID: types.UID(uid), Generation: 1},
		Spec: securetextv1alpha1.LegalHoldSpec{Reason: "matter " + name, Active: ptr.To(active),
			Matcher: securetextv1alpha1.HoldMatcher{Recipients: recipients}},
	}
}

func TestRetentionSettings(t *testing.T) {
	chicago := time.FixedZone("CST", -6*3600)
	after := metav1.NewTime(time.Date(2025, 3, 1, 6, 0, 0, 0, chicago))
	windowed := testHold("b-window", "uid-b", true)
	windowed.Spec.Matcher = securetextv1alpha1.HoldMatcher{Senders: []string{"ehr@clinic.example"}, SentAfter: &after}
	holds := []securetextv1alpha1.LegalHold{
		testHold("c-released", "uid-c", false, "+12025550143"),
		windowed,
		testHold("a-recipient", "uid-a", true, "+12025550143", "+12025550144"),
	}
	wantHolds := []retention.Hold{
		{Name: "a-recipient", UID: "uid-a", Reason: "matter a-recipient", Matcher: retention.Matcher{Recipients: []string{"+12025550143", "+12025550144"}}},
		{Name: "b-window", UID: "uid-b", Reason: "matter b-window",
			Matcher: retention.Matcher{Senders: []string{"ehr@clinic.example"}, SentAfter: ptr.To(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))}},
	}
	standard := &retention.Policy{Name: "hipaa-standard", Generation: 3,
		UnreadLinkExpiry: retention.Duration{D: 720 * time.Hour}, ContentPurgeAfter: retention.Duration{D: 2160 * time.Hour},
		AuditRetention: retention.Duration{D: 52608 * time.Hour}, SweepInterval: retention.Duration{D: time.Hour},
		KeyRotationPeriod: retention.Duration{D: 720 * time.Hour}}

	cases := []struct {
		name          string
		spec          string // spec.retentionPolicyName
		defaultPolicy string
		policy        *securetextv1alpha1.RetentionPolicy
		holds         []securetextv1alpha1.LegalHold
		wantPolicy    *retention.Policy
		wantHolds     []retention.Hold
		reason        string
		message       []string
	}{
		{"named policy", "hipaa-standard", "", testPolicy("hipaa-standard", 3, crdDefaults), holds, standard, wantHolds,
			securetextv1alpha1.ReasonRetentionApplied, []string{"hipaa-standard (generation 3)", "2 active LegalHold"}},
		{"the name wins over the default", "hipaa-standard", "other", testPolicy("hipaa-standard", 3, crdDefaults), nil, standard,
			[]retention.Hold{}, securetextv1alpha1.ReasonRetentionApplied, nil},
		{"default policy", "", "hipaa-standard", testPolicy("hipaa-standard", 3, crdDefaults), nil, standard, []retention.Hold{},
			securetextv1alpha1.ReasonRetentionApplied, []string{"0 active LegalHold"}},
		{"no name and no default", "", "", nil, holds, nil, wantHolds,
			securetextv1alpha1.ReasonRetentionPolicyNotSet, []string{"spec.retentionPolicyName is empty", "--default-retention-policy", "no message expires"}},
		{"named policy missing", "hipaa-strict", "", nil, holds, nil, wantHolds,
			securetextv1alpha1.ReasonRetentionPolicyNotFound, []string{"RetentionPolicy hipaa-strict (spec.retentionPolicyName) does not exist", "create it"}},
		{"default policy missing", "", "hipaa-standard", nil, nil, nil, []retention.Hold{},
			securetextv1alpha1.ReasonRetentionPolicyNotFound, []string{"--default-retention-policy"}},
		{"another policy passed", "hipaa-strict", "", testPolicy("hipaa-standard", 3, crdDefaults), nil, nil, []retention.Hold{},
			securetextv1alpha1.ReasonRetentionPolicyNotFound, nil},
		{"purge before link expiry (stored before the CRD rule)", "odd", "",
			testPolicy("odd", 1, securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "720h", ContentPurgeAfter: "1h", AuditRetention: "52608h", SweepInterval: "1h"}),
			holds, nil, wantHolds, securetextv1alpha1.ReasonRetentionPolicyInvalid, []string{"contentPurgeAfter 1h0m0s must be at least unreadLinkExpiry", "fix the policy"}},
		{"a duration Go cannot hold", "long", "",
			testPolicy("long", 1, securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "720h", ContentPurgeAfter: "2160h", AuditRetention: "3000000h", SweepInterval: "1h"}),
			nil, nil, []retention.Hold{}, securetextv1alpha1.ReasonRetentionPolicyInvalid, []string{`auditRetention "3000000h" is not a duration`}},
		{"a field the CRD did not default", "bare", "",
			testPolicy("bare", 1, securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "720h", ContentPurgeAfter: "2160h", AuditRetention: "52608h"}),
			nil, nil, []retention.Hold{}, securetextv1alpha1.ReasonRetentionPolicyInvalid, []string{`sweepInterval ""`}},
		{"a sweep interval over a day", "slow", "",
			testPolicy("slow", 1, securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "720h", ContentPurgeAfter: "2160h", AuditRetention: "52608h", SweepInterval: "48h"}),
			nil, nil, []retention.Hold{}, securetextv1alpha1.ReasonRetentionPolicyInvalid, []string{"sweepInterval 48h0m0s: must be at most 24h0m0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := renderTenant("clinic")
			tenant.Spec.RetentionPolicyName = tc.spec
			s, out := RetentionSettings(tenant, tc.defaultPolicy, tc.policy, tc.holds)
			if !reflect.DeepEqual(s.Policy, tc.wantPolicy) {
				t.Errorf("policy = %+v, want %+v", s.Policy, tc.wantPolicy)
			}
			if !reflect.DeepEqual(s.Holds, tc.wantHolds) {
				t.Errorf("holds = %+v, want %+v", s.Holds, tc.wantHolds)
			}
			if out.Reason != tc.reason {
				t.Errorf("reason %s, want %s (%s)", out.Reason, tc.reason, out.Message)
			}
			for _, m := range tc.message {
				if !strings.Contains(out.Message, m) {
					t.Errorf("message %q does not say %q", out.Message, m)
				}
			}
			// What the operator writes, the workloads read back as it was decided.
			data, err := s.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := retention.Parse(data)
			if err != nil {
				t.Fatalf("the workloads refuse the rendered settings: %v\n%s", err, data)
			}
			if !reflect.DeepEqual(back, s) {
				t.Errorf("read back %+v, want %+v", back, s)
			}
		})
	}
}

// TestRetentionSettingsRefusedByTheWorkloads: settings the workloads would refuse (here a
// hold whose matcher the CRD would have refused) keep the hold and say so.
func TestRetentionSettingsRefusedByTheWorkloads(t *testing.T) {
	empty := testHold("empty", "uid-e", true)
	s, out := RetentionSettings(renderTenant("clinic"), "std", testPolicy("std", 1, crdDefaults), []securetextv1alpha1.LegalHold{empty})
	if len(s.Holds) != 1 || s.Holds[0].Name != "empty" {
		t.Errorf("holds %+v: the hold was left out", s.Holds)
	}
	if out.Reason != securetextv1alpha1.ReasonRetentionSettingsInvalid || !strings.Contains(out.Message, "hold empty") {
		t.Errorf("outcome %+v", out)
	}
}

func TestRenderRetention(t *testing.T) {
	tenant := renderTenant("clinic")
	in := renderInput()
	in.Retention, _ = RetentionSettings(tenant, "std", testPolicy("std", 1, crdDefaults),
		[]securetextv1alpha1.LegalHold{testHold("matter-1", "uid-1", true, "+12025550143")})
	d := mustRender(t, tenant, in)

	var data string
	for _, cm := range d.ConfigMaps {
		if cm.Name == RetentionConfigMapName {
			data = cm.Data[retention.FileName]
			for k, v := range tenantLabels("clinic") {
				if cm.Labels[k] != v {
					t.Errorf("ConfigMap %s: label %s=%q, want %q", cm.Name, k, cm.Labels[k], v)
				}
			}
		}
	}
	got, err := retention.Parse([]byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s: %v\n%s", RetentionConfigMapName, err, data)
	}
	if !reflect.DeepEqual(got, in.Retention) {
		t.Errorf("ConfigMap holds %+v, want %+v", got, in.Retention)
	}

	for _, c := range components {
		dep := deploymentOf(t, d, c)
		ctr := dep.Spec.Template.Spec.Containers[0]
		vol := findVolume(dep, "retention")
		env := configOf(t, d, c)[envName(EnvPrefixGateway, flagRetentionFile)]
		if c != ComponentGateway {
			if vol != nil || env != "" {
				t.Errorf("%s mounts the retention settings", c)
			}
			continue
		}
		if env != RetentionFile || RetentionFile != "/etc/securetext/retention/retention.json" {
			t.Errorf("gateway -%s=%q", flagRetentionFile, env)
		}
		if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != RetentionConfigMapName ||
			!slices.Equal(vol.ConfigMap.Items, []corev1.KeyToPath{{Key: retention.FileName, Path: retention.FileName}}) {
			t.Fatalf("gateway retention volume = %+v", vol)
		}
		i := slices.IndexFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "retention" })
		// A subPath mount would never see the kubelet's updates.
		if i < 0 || ctr.VolumeMounts[i].MountPath != "/etc/securetext/retention" || ctr.VolumeMounts[i].SubPath != "" || !ctr.VolumeMounts[i].ReadOnly {
			t.Errorf("gateway retention mount = %+v", ctr.VolumeMounts)
		}
	}

	// A new policy, a new hold, a released one: the ConfigMap changes, no Deployment does, so
	// no pod rolls; the kubelet refreshes the mounted file.
	other := in
	other.Retention, _ = RetentionSettings(tenant, "std", testPolicy("std", 2, securetextv1alpha1.RetentionPolicySpec{
		UnreadLinkExpiry: "24h", ContentPurgeAfter: "48h", AuditRetention: "52608h", SweepInterval: "5m"}),
		[]securetextv1alpha1.LegalHold{testHold("matter-1", "uid-1", false, "+12025550143"), testHold("matter-2", "uid-2", true, "+12025550199")})
	changed := mustRender(t, tenant, other)
	if reflect.DeepEqual(changed.ConfigMaps, d.ConfigMaps) {
		t.Error("the ConfigMaps do not follow the retention settings")
	}
	if !reflect.DeepEqual(changed.Deployments, d.Deployments) {
		t.Error("a change of the retention settings changes a Deployment: it would roll the pods")
	}
}

func TestRetentionReadyCondition(t *testing.T) {
	applied := RetentionOutcome{securetextv1alpha1.ReasonRetentionApplied, "RetentionPolicy std (generation 1) applies"}
	missing := RetentionOutcome{securetextv1alpha1.ReasonRetentionPolicyNotFound, "RetentionPolicy std does not exist"}
	cases := []struct {
		name string
		st   tenantState
		want wantCondition
	}{
		{"applied", tenantState{retention: applied, retentionWritten: true},
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionApplied, []string{"std"}}},
		{"missing policy", tenantState{retention: missing, retentionWritten: true},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonRetentionPolicyNotFound, []string{"does not exist"}}},
		{"not written: the apply failed", tenantState{retention: applied, applyErr: testRenderErr},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonApplyFailed, []string{"not written"}}},
		{"not written yet", tenantState{retention: applied},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonProgressing, []string{"not written"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkCondition(t, retentionReadyCondition(tc.st, testGeneration), securetextv1alpha1.ConditionRetentionReady, tc.want)
		})
	}

	// Without a policy the tenant still serves messages: Ready stays True.
	tenant := &securetextv1alpha1.SecureTextTenant{}
	setTenantConditions(tenant, tenantState{retention: missing, retentionWritten: true})
	if c := meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v with a missing retention policy; want True", c)
	}
	if c := meta.FindStatusCondition(tenant.Status.Conditions, securetextv1alpha1.ConditionRetentionReady); c == nil ||
		c.Reason != securetextv1alpha1.ReasonRetentionPolicyNotFound {
		t.Errorf("RetentionReady = %+v", c)
	}
}

func TestSetRetentionPolicyConditions(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec securetextv1alpha1.RetentionPolicySpec
		want wantCondition
	}{
		{"valid", crdDefaults, wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonRetentionPolicyValid, []string{"720h", "every 1h"}}},
		{"invalid", securetextv1alpha1.RetentionPolicySpec{UnreadLinkExpiry: "720h", ContentPurgeAfter: "1h", AuditRetention: "52608h", SweepInterval: "1h"},
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonRetentionPolicyInvalid, []string{"contentPurgeAfter", "sweep nothing"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy("std", testGeneration, tc.spec)
			setRetentionPolicyConditions(p)
			if p.Status.ObservedGeneration != testGeneration || len(p.Status.Conditions) != 1 {
				t.Errorf("status %+v: want observedGeneration %d and one condition", p.Status, testGeneration)
			}
			checkCondition(t, p.Status.Conditions[0], securetextv1alpha1.ConditionReady, tc.want)
		})
	}
}

func TestSetLegalHoldStatus(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	earlier := metav1.NewTime(now.Add(-time.Hour))
	active, released := testHold("matter-1", "uid-1", true, "+12025550143"), testHold("matter-1", "uid-1", false, "+12025550143")
	with := func(holds ...securetextv1alpha1.LegalHold) *retention.Settings {
		s, _ := RetentionSettings(renderTenant("clinic"), "", nil, holds)
		return &s
	}
	edited := active.DeepCopy()
	edited.Spec.Reason = "matter 1, amended"
	cases := []struct {
		name         string
		hold         securetextv1alpha1.LegalHold
		releasedAt   *metav1.Time
		tenant       string
		settings     *retention.Settings
		want         wantCondition
		wantReleased *metav1.Time
	}{
		{"no tenant", active, nil, "", nil,
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonTenantNotFound, []string{"belongs to no SecureTextTenant"}}, nil},
		{"settings not written", active, nil, "clinic", nil,
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending, []string{"not written yet", "RetentionReady"}}, nil},
		{"active, not rendered yet", active, nil, "clinic", with(),
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending, []string{"not yet in"}}, nil},
		{"active, an older version rendered", *edited, nil, "clinic", with(active),
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending, []string{"not yet in"}}, nil},
		{"active and rendered", active, nil, "clinic", with(testHold("other", "uid-2", true, "+12025550199"), active),
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonHoldRendered, []string{"tenant clinic", "securetext-clinic/retention"}}, nil},
		{"released, still rendered", released, nil, "clinic", with(active),
			wantCondition{metav1.ConditionFalse, securetextv1alpha1.ReasonHoldPending, []string{"released, but still in"}}, &metav1.Time{Time: now}},
		{"released and gone", released, &earlier, "clinic", with(),
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonHoldReleased, []string{"no longer in"}}, &earlier},
		{"active again", active, &earlier, "clinic", with(active),
			wantCondition{metav1.ConditionTrue, securetextv1alpha1.ReasonHoldRendered, nil}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hold.DeepCopy()
			h.Generation = testGeneration
			h.Status.ReleasedAt = tc.releasedAt
			setLegalHoldStatus(h, tc.tenant, tc.settings, now)
			if h.Status.ObservedGeneration != testGeneration {
				t.Errorf("observedGeneration %d", h.Status.ObservedGeneration)
			}
			if !reflect.DeepEqual(h.Status.ReleasedAt, tc.wantReleased) {
				t.Errorf("releasedAt %v, want %v", h.Status.ReleasedAt, tc.wantReleased)
			}
			c := meta.FindStatusCondition(h.Status.Conditions, securetextv1alpha1.ConditionReady)
			if c == nil {
				t.Fatal("no Ready condition")
			}
			checkCondition(t, *c, securetextv1alpha1.ConditionReady, tc.want)
		})
	}
}

// TestRetentionSettingsRecordWhoHolds: who placed a hold and who released it (the annotations
// the chart's MutatingAdmissionPolicy writes) reach the workloads, and released holds are listed
// apart, holding nothing.
func TestRetentionSettingsRecordWhoHolds(t *testing.T) {
	placed := metav1.NewTime(time.Date(2026, 3, 1, 9, 0, 0, 0, time.FixedZone("EST", -5*3600)))
	active := testHold("matter-117", "uid-117", true, "+12025550143")
	active.CreationTimestamp = placed
	active.Annotations = map[string]string{retention.AnnotationHeldBy: "alice@clinic.example"}
	released := testHold("matter-100", "uid-100", false, "+12025550144")
	released.Annotations = map[string]string{retention.AnnotationHeldBy: "alice@clinic.example", retention.AnnotationReleasedBy: "bob@clinic.example"}

	s, _ := RetentionSettings(renderTenant("clinic"), "", nil, []securetextv1alpha1.LegalHold{released, active})
	wantPlaced := time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)
	wantHolds := []retention.Hold{{Name: "matter-117", UID: "uid-117", Reason: "matter matter-117",
		Matcher: retention.Matcher{Recipients: []string{"+12025550143"}}, PlacedBy: "alice@clinic.example", PlacedAt: &wantPlaced}}
	wantReleased := []retention.Hold{{Name: "matter-100", UID: "uid-100", Reason: "matter matter-100",
		Matcher: retention.Matcher{Recipients: []string{"+12025550144"}}, PlacedBy: "alice@clinic.example", ReleasedBy: "bob@clinic.example"}}
	if !reflect.DeepEqual(s.Holds, wantHolds) {
		t.Errorf("holds = %+v, want %+v", s.Holds, wantHolds)
	}
	if !reflect.DeepEqual(s.Released, wantReleased) {
		t.Errorf("released = %+v, want %+v", s.Released, wantReleased)
	}
	if got := s.HeldBy(retention.Message{ID: "m1", Recipient: "+12025550144"}); len(got) != 0 {
		t.Errorf("a released hold still holds: %v", got)
	}
	data, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := retention.Parse(data)
	if err != nil || !reflect.DeepEqual(back, s) {
		t.Errorf("read back %+v (%v), want %+v", back, err, s)
	}
}
