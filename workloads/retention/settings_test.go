package retention

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

var (
	march1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	march2 = march1.Add(24 * time.Hour)
)

func TestMatcherMatches(t *testing.T) {
	msg := Message{ID: "m1", Recipient: "+12025550143", Sender: "EHR-Main", CreatedAt: march1.Add(time.Hour)}
	for _, tc := range []struct {
		name string
		m    Matcher
		want bool
	}{
		{"recipient", Matcher{Recipients: []string{"+12025550100", "+12025550143"}}, true},
		{"other recipient", Matcher{Recipients: []string{"+12025550100"}}, false},
		{"sender, any case", Matcher{Senders: []string{"ehr-main"}}, true},
		{"other sender", Matcher{Senders: []string{"ehr-backup"}}, false},
		{"message id", Matcher{MessageIDs: []string{"m0", "m1"}}, true},
		{"other message id", Matcher{MessageIDs: []string{"m2"}}, false},
		{"sent after, inclusive", Matcher{SentAfter: ptr(march1.Add(time.Hour))}, true},
		{"sent after, later", Matcher{SentAfter: ptr(march1.Add(2 * time.Hour))}, false},
		{"sent before, exclusive", Matcher{SentBefore: ptr(march1.Add(time.Hour))}, false},
		{"sent before, later", Matcher{SentBefore: ptr(march2)}, true},
		{"every field matches", Matcher{Recipients: []string{"+12025550143"}, Senders: []string{"EHR-MAIN"}, MessageIDs: []string{"m1"},
			SentAfter: ptr(march1), SentBefore: ptr(march2)}, true},
		{"all but one field", Matcher{Recipients: []string{"+12025550143"}, Senders: []string{"ehr-main"}, SentAfter: ptr(march2)}, false},
	} {
		if got := tc.m.Matches(msg); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHeldByAddsUp(t *testing.T) {
	s := Settings{Holds: []Hold{
		{Name: "matter-1", Matcher: Matcher{Recipients: []string{"+12025550143"}}},
		{Name: "matter-2", Matcher: Matcher{SentBefore: ptr(march2)}},
		{Name: "matter-3", Matcher: Matcher{MessageIDs: []string{"other"}}},
	}}
	msg := Message{ID: "m1", Recipient: "+12025550143", CreatedAt: march1}
	if got := s.HeldBy(msg); !slices.Equal(got, []string{"matter-1", "matter-2"}) {
		t.Errorf("HeldBy = %v, want matter-1 and matter-2", got)
	}
	msg.CreatedAt = march2
	if got := s.HeldBy(msg); !slices.Equal(got, []string{"matter-1"}) {
		t.Errorf("HeldBy a later message = %v, want matter-1", got)
	}
	if got := (Settings{}).HeldBy(msg); got != nil {
		t.Errorf("HeldBy without holds = %v", got)
	}
}

func validPolicy() *Policy {
	return &Policy{Name: "hipaa-standard", Generation: 3,
		UnreadLinkExpiry: Duration{72 * time.Hour}, ContentPurgeAfter: Duration{720 * time.Hour},
		AuditRetention: Duration{52608 * time.Hour}, SweepInterval: Duration{time.Hour}, KeyRotationPeriod: Duration{720 * time.Hour}}
}

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Settings)
		want   string // in the error; "" for valid
	}{
		{"valid", func(*Settings) {}, ""},
		{"no policy, holds only", func(s *Settings) { s.Policy = nil }, ""},
		{"no name", func(s *Settings) { s.Policy.Name = "" }, "policy name is empty"},
		{"link expiry below a minute", func(s *Settings) { s.Policy.UnreadLinkExpiry.D = time.Second }, "unreadLinkExpiry 1s: must be at least 1m0s"},
		{"sweep interval zero", func(s *Settings) { s.Policy.SweepInterval.D = 0 }, "sweepInterval 0s: must be at least"},
		{"sweep interval over a day", func(s *Settings) { s.Policy.SweepInterval.D = 25 * time.Hour }, "must be at most 24h0m0s"},
		{"key rotation under a day", func(s *Settings) { s.Policy.KeyRotationPeriod.D = 23 * time.Hour }, "keyRotationPeriod 23h0m0s: must be at least 24h0m0s"},
		{"purge before links expire", func(s *Settings) { s.Policy.ContentPurgeAfter.D = time.Hour }, "content cannot be purged while its link still works"},
		{"audit shorter than content", func(s *Settings) { s.Policy.AuditRetention.D = 700 * time.Hour }, "the record of a message must outlive its content"},
		{"hold without name", func(s *Settings) { s.Holds[0].Name = "" }, "hold 0: name is empty"},
		{"hold twice", func(s *Settings) { s.Holds[1].Name = s.Holds[0].Name }, "hold matter-1: listed twice"},
		{"empty matcher", func(s *Settings) { s.Holds[0].Matcher = Matcher{} }, "the matcher sets none of"},
		{"backwards time range", func(s *Settings) {
			s.Holds[1].Matcher = Matcher{SentAfter: ptr(march2), SentBefore: ptr(march1)}
		}, "sentAfter must be earlier than sentBefore"},
	} {
		s := Settings{Policy: validPolicy(), Holds: []Hold{
			{Name: "matter-1", Reason: "case 1", Matcher: Matcher{Recipients: []string{"+12025550143"}}},
			{Name: "matter-2", Reason: "case 2", Matcher: Matcher{SentAfter: ptr(march1), SentBefore: ptr(march2)}},
		}}
		tc.change(&s)
		err := s.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	good := `{"policy": {"name": "hipaa-standard", "generation": 3, "unreadLinkExpiry": "72h", "contentPurgeAfter": "720h",
		"auditRetention": "52608h", "sweepInterval": "1h"},
	"holds": [{"name": "matter-1", "uid": "u1", "reason": "case 1", "matcher": {"senders": ["ehr"], "sentBefore": "2026-03-02T00:00:00Z"}}]}`
	s, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Policy == nil || s.Policy.ContentPurgeAfter.D != 720*time.Hour || s.Policy.Generation != 3 ||
		len(s.Holds) != 1 || !s.Holds[0].Matcher.SentBefore.Equal(march2) {
		t.Errorf("Parse = %+v", s)
	}
	// Marshal renders what Parse reads.
	out, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Parse(out); err != nil || again.Policy.SweepInterval != s.Policy.SweepInterval || again.Holds[0].Name != "matter-1" {
		t.Errorf("Parse(Marshal) = %+v, %v", again, err)
	}
	if s, err := Parse([]byte(`{"policy": null, "holds": []}`)); err != nil || s.Policy != nil {
		t.Errorf("no policy: %+v, %v", s, err)
	}

	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", `{`, "read retention settings"},
		{"unknown field", `{"policy": null, "holds": [], "purgeEverything": true}`, `unknown field "purgeEverything"`},
		{"days", `{"policy": {"name": "p", "unreadLinkExpiry": "30d", "contentPurgeAfter": "720h", "auditRetention": "52608h", "sweepInterval": "1h"}}`,
			"days are not a unit"},
		{"number duration", `{"policy": {"name": "p", "unreadLinkExpiry": 60, "contentPurgeAfter": "720h", "auditRetention": "52608h", "sweepInterval": "1h"}}`,
			`a duration is a string like "720h"`},
		{"invalid policy", `{"policy": {"name": "p", "unreadLinkExpiry": "720h", "contentPurgeAfter": "72h", "auditRetention": "52608h", "sweepInterval": "1h"}}`,
			"content cannot be purged while its link still works"},
		{"hold matching everything", `{"holds": [{"name": "h", "reason": "r", "matcher": {}}]}`, "the matcher sets none of"},
	} {
		if _, err := Parse([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
