// Package retention is what a tenant's workloads know of its retention policy and legal holds:
// the settings the operator renders from the tenant's RetentionPolicy and the LegalHolds of its
// namespace (into the ConfigMap "retention", key retention.json, mounted as a file), or that
// `securetext dev -retention-policy/-legal-holds` reads from YAML. Parse validates them with
// the same rules as the CRDs, so a policy that the API server would refuse never drives a sweep.
//
// A hold wins over every rule: a message that any active hold matches is never expired or
// purged, whatever the policy says. Holds add up (a message is held while any hold matches).
package retention

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// FileName is the key of the ConfigMap "retention" and the name of the mounted file.
const FileName = "retention.json"

// Settings are one tenant's retention settings.
type Settings struct {
	// Policy is the policy to apply; nil means that no sweep runs (the tenant names a policy
	// that does not exist or is invalid: the tenant's conditions say which). Holds still hold.
	Policy *Policy `json:"policy"`
	// Holds are the active LegalHolds of the tenant's namespace: they hold their messages.
	Holds []Hold `json:"holds"`
	// Released are the LegalHolds of the namespace that were released (spec.active: false)
	// and still exist. They hold nothing; the workloads record their release in the audit
	// trail, with who released them.
	Released []Hold `json:"released,omitempty"`
}

// Policy is a RetentionPolicy's spec with its identity, durations written as Go durations
// ("720h"), as in the CRD.
type Policy struct {
	// Name is the RetentionPolicy's name, recorded in audit events as the rule applied.
	Name string `json:"name"`
	// Generation is the RetentionPolicy's metadata.generation, recorded with the name.
	Generation int64 `json:"generation,omitempty"`

	UnreadLinkExpiry  Duration `json:"unreadLinkExpiry"`
	ContentPurgeAfter Duration `json:"contentPurgeAfter"`
	AuditRetention    Duration `json:"auditRetention"`
	SweepInterval     Duration `json:"sweepInterval"`
	// KeyRotationPeriod is how often the operator rotates the tenant's wrapping key at least
	// (keys.go); the workloads only report, the operator acts on it.
	KeyRotationPeriod Duration `json:"keyRotationPeriod"`
}

// Hold is one active LegalHold.
type Hold struct {
	// Name is the LegalHold's name (unique in the tenant's namespace).
	Name string `json:"name"`
	// UID is the LegalHold's metadata.uid: a hold deleted and created again under the same
	// name is another hold.
	UID string `json:"uid,omitempty"`
	// Reason is the hold's spec.reason (a matter or case number).
	Reason string `json:"reason"`
	// Matcher selects the held messages.
	Matcher Matcher `json:"matcher"`
	// PlacedBy is the Kubernetes user who created the LegalHold, as the API server
	// authenticated them (the annotation securetext.io/held-by, written by the chart's
	// MutatingAdmissionPolicy); empty where the cluster did not record it.
	PlacedBy string `json:"placedBy,omitempty"`
	// PlacedAt is the LegalHold's creationTimestamp.
	PlacedAt *time.Time `json:"placedAt,omitempty"`
	// ReleasedBy is the user who set spec.active to false (securetext.io/released-by); only
	// on a hold in Settings.Released.
	ReleasedBy string `json:"releasedBy,omitempty"`
}

// Matcher selects messages: a message matches when it matches every field that is set;
// Recipients, Senders and MessageIDs each match any of their entries.
type Matcher struct {
	Recipients []string   `json:"recipients,omitempty"` // E.164
	Senders    []string   `json:"senders,omitempty"`    // sender addresses or API key names, case-insensitive
	MessageIDs []string   `json:"messageIDs,omitempty"`
	SentAfter  *time.Time `json:"sentAfter,omitempty"`  // accepted at or after
	SentBefore *time.Time `json:"sentBefore,omitempty"` // accepted before
}

// Message is what a Matcher looks at.
type Message struct {
	ID        string
	Recipient string // E.164
	Sender    string // the sender's address or API key name
	CreatedAt time.Time
	// WrappedKey is the message's wrapped data key, which the sweep moves to newer versions of
	// the wrapping key (keys.go); not a matter for holds.
	WrappedKey string
}

// Matches reports whether m selects msg.
func (m Matcher) Matches(msg Message) bool {
	if len(m.Recipients) > 0 && !slices.Contains(m.Recipients, msg.Recipient) {
		return false
	}
	if len(m.Senders) > 0 && !slices.ContainsFunc(m.Senders, func(s string) bool { return strings.EqualFold(s, msg.Sender) }) {
		return false
	}
	if len(m.MessageIDs) > 0 && !slices.Contains(m.MessageIDs, msg.ID) {
		return false
	}
	if m.SentAfter != nil && msg.CreatedAt.Before(*m.SentAfter) {
		return false
	}
	if m.SentBefore != nil && !msg.CreatedAt.Before(*m.SentBefore) {
		return false
	}
	return true
}

// empty reports whether m sets no field: such a matcher would hold everything, and the CRD
// refuses it.
func (m Matcher) empty() bool {
	return len(m.Recipients) == 0 && len(m.Senders) == 0 && len(m.MessageIDs) == 0 && m.SentAfter == nil && m.SentBefore == nil
}

// LinkExpiry is the policy's unreadLinkExpiry, or 0 without a policy.
func (s Settings) LinkExpiry() time.Duration {
	if s.Policy == nil {
		return 0
	}
	return s.Policy.UnreadLinkExpiry.D
}

// HeldBy returns the names of the holds that match msg; none means msg may be disposed of.
func (s Settings) HeldBy(msg Message) []string {
	var names []string
	for _, h := range s.Holds {
		if h.Matcher.Matches(msg) {
			names = append(names, h.Name)
		}
	}
	return names
}

// Limits of the durations, as the RetentionPolicy CRD's rules say.
const (
	MinDuration          = time.Minute
	MaxSweepInterval     = 24 * time.Hour
	MinKeyRotationPeriod = 24 * time.Hour
	// DefaultKeyRotationPeriod is the CRD's default keyRotationPeriod.
	DefaultKeyRotationPeriod = 720 * time.Hour
)

// Validate checks p with the RetentionPolicy CRD's rules and says what to fix.
func (p *Policy) Validate() error {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New("policy name is empty"))
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{
		{"unreadLinkExpiry", p.UnreadLinkExpiry}, {"contentPurgeAfter", p.ContentPurgeAfter},
		{"auditRetention", p.AuditRetention}, {"sweepInterval", p.SweepInterval},
	} {
		if d.v.D < MinDuration {
			errs = append(errs, fmt.Errorf("%s %s: must be at least %s", d.name, d.v.D, MinDuration))
		}
	}
	if p.KeyRotationPeriod.D < MinKeyRotationPeriod {
		errs = append(errs, fmt.Errorf("keyRotationPeriod %s: must be at least %s", p.KeyRotationPeriod.D, MinKeyRotationPeriod))
	}
	if p.SweepInterval.D > MaxSweepInterval {
		errs = append(errs, fmt.Errorf("sweepInterval %s: must be at most %s", p.SweepInterval.D, MaxSweepInterval))
	}
	if p.ContentPurgeAfter.D < p.UnreadLinkExpiry.D {
		errs = append(errs, fmt.Errorf("contentPurgeAfter %s must be at least unreadLinkExpiry %s: content cannot be purged while its link still works",
			p.ContentPurgeAfter.D, p.UnreadLinkExpiry.D))
	}
	if p.AuditRetention.D < p.ContentPurgeAfter.D {
		errs = append(errs, fmt.Errorf("auditRetention %s must be at least contentPurgeAfter %s: the record of a message must outlive its content",
			p.AuditRetention.D, p.ContentPurgeAfter.D))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retention policy %q: %w", p.Name, err)
	}
	return nil
}

// Validate checks the settings: the policy, if any, and every hold.
func (s Settings) Validate() error {
	var errs []error
	if s.Policy != nil {
		errs = append(errs, s.Policy.Validate())
	}
	seen := map[string]bool{}
	for i, h := range s.Holds {
		switch {
		case h.Name == "":
			errs = append(errs, fmt.Errorf("hold %d: name is empty", i))
		case seen[h.Name]:
			errs = append(errs, fmt.Errorf("hold %s: listed twice", h.Name))
		case h.Matcher.empty():
			errs = append(errs, fmt.Errorf("hold %s: the matcher sets none of recipients, senders, messageIDs, sentAfter or sentBefore", h.Name))
		case h.Matcher.SentAfter != nil && h.Matcher.SentBefore != nil && !h.Matcher.SentAfter.Before(*h.Matcher.SentBefore):
			errs = append(errs, fmt.Errorf("hold %s: sentAfter must be earlier than sentBefore", h.Name))
		}
		seen[h.Name] = true
	}
	return errors.Join(errs...)
}

// Parse reads settings as the operator renders them (JSON) and validates them. Unknown fields
// are refused: a setting the workloads do not know must not be silently ignored.
func Parse(data []byte) (Settings, error) {
	var s Settings
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Settings{}, fmt.Errorf("read retention settings: %w", err)
	}
	if s.Policy != nil && s.Policy.KeyRotationPeriod.D == 0 {
		// Settings rendered before the field existed: the CRD's default.
		s.Policy.KeyRotationPeriod.D = DefaultKeyRotationPeriod
	}
	if err := s.Validate(); err != nil {
		return Settings{}, fmt.Errorf("retention settings: %w", err)
	}
	return s, nil
}

// Marshal renders s as Parse reads it, indented, with a trailing newline.
func (s Settings) Marshal() ([]byte, error) {
	if s.Holds == nil {
		s.Holds = []Hold{}
	}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Duration is a time.Duration written as a Go duration string ("720h") in JSON.
type Duration struct{ D time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.D.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"720h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w (days are not a unit: 30 days is 720h)", s, err)
	}
	d.D = v
	return nil
}
