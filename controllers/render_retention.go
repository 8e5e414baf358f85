package controllers

// A tenant's retention settings (workloads/retention): the RetentionPolicy it uses and the
// active LegalHolds of its namespace, decided here with no client calls and rendered into the
// ConfigMap "retention", which the gateway mounts as a file. The file is not part of the
// config checksum: the kubelet refreshes a mounted ConfigMap in place, so a new policy or hold
// reaches the running gateways without rolling them.
//
// No sweep runs on a guess: when the tenant names no policy (and the operator has no
// default), or the policy does not exist or the workloads could not apply it, the settings
// carry no policy at all, never the CRD's defaults. Holds are rendered whatever the policy.

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/workloads/retention"
)

// RetentionConfigMapName is the ConfigMap with a tenant's retention settings, key
// retention.FileName.
const RetentionConfigMapName = "retention"

// retentionDir is where the gateway mounts the ConfigMap; RetentionFile is the file it reads.
const (
	retentionDir  = configDir + "/retention"
	RetentionFile = retentionDir + "/" + retention.FileName
)

// RetentionOutcome says how a tenant's retention settings were decided, for its
// RetentionReady condition.
type RetentionOutcome struct {
	// Reason is ReasonRetentionApplied when the settings carry the policy, otherwise why not.
	Reason string
	// Message says what the settings hold, or what to fix.
	Message string
}

// Applied reports whether the settings carry the tenant's policy.
func (o RetentionOutcome) Applied() bool {
	return o.Reason == securetextv1alpha1.ReasonRetentionApplied
}

// RetentionPolicyName is the name of the RetentionPolicy tenant t uses: its
// spec.retentionPolicyName, else the operator's default; "" when neither is set.
func RetentionPolicyName(t *securetextv1alpha1.SecureTextTenant, defaultPolicy string) string {
	return cmp.Or(t.Spec.RetentionPolicyName, defaultPolicy)
}

// RetentionSettings decides tenant t's retention settings from the policy it uses (nil when
// that does not exist) and the LegalHolds of its namespace: the active ones hold; the released
// ones are listed apart, holding nothing, so that the workloads audit who released them.
func RetentionSettings(t *securetextv1alpha1.SecureTextTenant, defaultPolicy string, policy *securetextv1alpha1.RetentionPolicy,
	holds []securetextv1alpha1.LegalHold) (retention.Settings, RetentionOutcome) {
	s := retention.Settings{Holds: []retention.Hold{}}
	for i := range holds {
		h := RetentionHold(&holds[i])
		if holds[i].IsActive() {
			s.Holds = append(s.Holds, h)
			continue
		}
		h.ReleasedBy = holds[i].Annotations[retention.AnnotationReleasedBy]
		s.Released = append(s.Released, h)
	}
	byName := func(a, b retention.Hold) int { return cmp.Compare(a.Name, b.Name) }
	slices.SortFunc(s.Holds, byName)
	slices.SortFunc(s.Released, byName)
	held := fmt.Sprintf("%d active LegalHold(s) of the namespace are rendered and hold", len(s.Holds))

	name := RetentionPolicyName(t, defaultPolicy)
	field := "spec.retentionPolicyName"
	if t.Spec.RetentionPolicyName == "" {
		field = "the operator's --default-retention-policy"
	}
	var out RetentionOutcome
	switch {
	case name == "":
		out = RetentionOutcome{securetextv1alpha1.ReasonRetentionPolicyNotSet,
			"spec.retentionPolicyName is empty and the operator has no --default-retention-policy: no message expires or is " +
				"purged; name a RetentionPolicy in spec.retentionPolicyName. " + held}
	case policy == nil || policy.Name != name:
		out = RetentionOutcome{securetextv1alpha1.ReasonRetentionPolicyNotFound,
			fmt.Sprintf("RetentionPolicy %s (%s) does not exist: create it or name another one; until then no message expires "+
				"or is purged. %s", name, field, held)}
	default:
		p, err := RetentionPolicySettings(policy)
		if err != nil {
			out = RetentionOutcome{securetextv1alpha1.ReasonRetentionPolicyInvalid,
				fmt.Sprintf("%s (%s): fix the policy or name another one; until then no message expires or is purged. %s",
					err, field, held)}
			break
		}
		s.Policy = p
		out = RetentionOutcome{securetextv1alpha1.ReasonRetentionApplied,
			fmt.Sprintf("RetentionPolicy %s (generation %d) applies; %s", name, policy.Generation, held)}
	}
	// The workloads refuse settings that do not validate, and then sweep nothing: say so
	// rather than leave a hold out, which could let its messages be purged.
	if err := s.Validate(); err != nil {
		out = RetentionOutcome{securetextv1alpha1.ReasonRetentionSettingsInvalid,
			fmt.Sprintf("the gateway would refuse these retention settings and sweep nothing: %v", err)}
	}
	return s, out
}

// DefaultKeyRotationPeriod is the RetentionPolicy CRD's default keyRotationPeriod, for a policy
// stored before the field existed.
const DefaultKeyRotationPeriod = "720h"

// RetentionPolicySettings is a RetentionPolicy as the workloads read it, or why they could not
// apply it. The CRD's rules are checked again (retention.Policy.Validate): a policy stored
// before a rule existed, or a duration the API server accepts but Go cannot hold (more than
// about 292 years), must not drive a sweep.
func RetentionPolicySettings(p *securetextv1alpha1.RetentionPolicy) (*retention.Policy, error) {
	out := &retention.Policy{Name: p.Name, Generation: p.Generation}
	var errs []error
	for _, f := range []struct {
		name  string
		value string
		into  *retention.Duration
	}{
		{"unreadLinkExpiry", p.Spec.UnreadLinkExpiry, &out.UnreadLinkExpiry},
		{"contentPurgeAfter", p.Spec.ContentPurgeAfter, &out.ContentPurgeAfter},
		{"auditRetention", p.Spec.AuditRetention, &out.AuditRetention},
		{"sweepInterval", p.Spec.SweepInterval, &out.SweepInterval},
		{"keyRotationPeriod", cmp.Or(p.Spec.KeyRotationPeriod, DefaultKeyRotationPeriod), &out.KeyRotationPeriod},
	} {
		d, err := time.ParseDuration(f.value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not a duration the workloads can read (written like 720h, at most 2562047h)", f.name, f.value))
			continue
		}
		f.into.D = d
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("retention policy %q: %w", p.Name, errors.Join(errs...))
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// RetentionHold is a LegalHold as the workloads read it. The UID tells a hold apart from one
// deleted and created again under the same name, and ties the workloads' audit events of the
// hold to the API server's audit log. Who placed it is the annotation the chart's
// MutatingAdmissionPolicy writes from the authenticated user (empty where it is not installed).
func RetentionHold(h *securetextv1alpha1.LegalHold) retention.Hold {
	m := h.Spec.Matcher
	return retention.Hold{
		Name:     h.Name,
		UID:      string(h.UID),
		Reason:   h.Spec.Reason,
		PlacedBy: h.Annotations[retention.AnnotationHeldBy],
		PlacedAt: utcTime(&h.CreationTimestamp),
		Matcher: retention.Matcher{
			Recipients: slices.Clone(m.Recipients),
			Senders:    slices.Clone(m.Senders),
			MessageIDs: slices.Clone(m.MessageIDs),
			SentAfter:  utcTime(m.SentAfter),
			SentBefore: utcTime(m.SentBefore),
		},
	}
}

func utcTime(t *metav1.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// retentionConfigMap renders settings into the ConfigMap the gateway mounts.
func (r *renderer) retentionConfigMap() (*corev1.ConfigMap, error) {
	data, err := r.in.Retention.Marshal()
	if err != nil {
		return nil, fmt.Errorf("render retention settings: %w", err)
	}
	return &corev1.ConfigMap{
		TypeMeta:   typeConfigMap,
		ObjectMeta: r.meta(RetentionConfigMapName, ""),
		Data:       map[string]string{retention.FileName: string(data)},
	}, nil
}

// retentionMount mounts the retention settings into the gateway. A ConfigMap volume without
// subPath, so that the kubelet replaces the file when the ConfigMap changes.
func retentionMount() volumeMount {
	return volumeMount{
		volume: "retention", configMap: RetentionConfigMapName, dir: retentionDir, refreshed: true,
		items: []corev1.KeyToPath{{Key: retention.FileName, Path: retention.FileName}},
	}
}

// parseRenderedRetention reads the settings back from a rendered ConfigMap, as written (no
// validation: a LegalHold's status looks only for the hold).
func parseRenderedRetention(cm *corev1.ConfigMap) (retention.Settings, error) {
	var s retention.Settings
	raw, ok := cm.Data[retention.FileName]
	if !ok {
		return s, fmt.Errorf("ConfigMap %s has no key %s", cm.Name, retention.FileName)
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return s, fmt.Errorf("read ConfigMap %s: %w", cm.Name, err)
	}
	return s, nil
}
