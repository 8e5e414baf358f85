package sms

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGSM7Septets(t *testing.T) {
	tests := []struct {
		s  string
		n  int
		ok bool
	}{
		{"", 0, true},
		{"Hello, world!", 13, true},
		{"@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", 42, true},
		{"{}", 4, true},
		{"[x]", 5, true},
		{"~\\^|€", 10, true},
		{"https://t.example.org/m/AbC-123_x", 33, true},
		{"ç", 0, false}, // only upper-case Ç is in the alphabet
		{"a’b", 2, false},
		{"emoji 🙂", 6, false},
		{"`", 0, false},
	}
	for _, tt := range tests {
		n, ok := GSM7Septets(tt.s)
		if n != tt.n || ok != tt.ok {
			t.Errorf("GSM7Septets(%q) = %d, %v; want %d, %v", tt.s, n, ok, tt.n, tt.ok)
		}
	}
}

const testLink = "https://text.example.org/m/8f2Kq9ZrT3xW"

func TestCompose(t *testing.T) {
	tests := []struct {
		name, tenant, link string
		wantName           string // the name as it appears at the start of the text
	}{
		{"plain", "Lakeside Clinic", testLink, "Lakeside Clinic"},
		{"GSM-7 accents kept", "Clínica Médica Ñandú", testLink, "Clinica Médica Ñandu"},
		{"smart quotes replaced", "St. Mary’s “Family” Practice", testLink, `St. Mary's "Family" Practice`},
		{"dash replaced", "North – South Health", testLink, "North - South Health"},
		{"whitespace collapsed", "  Lakeside\n\tClinic  ", testLink, "Lakeside Clinic"},
		{"emoji dropped", "Happy 🙂 Teeth", testLink, "Happy Teeth"},
		{"extension characters kept", "[Lakeside] {Clinic}", testLink, "[Lakeside] {Clinic}"},
		{"long name truncated", strings.Repeat("Lakeside Regional ", 12), testLink, ""},
		{"long link leaves 10", "Lakeside Regional Medical Center", "https://t.example.org/" + strings.Repeat("a", 160-51-22-10), "Lakeside R"},
		{"truncation at extension character", strings.Repeat("[]", 80), testLink, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Compose(tt.tenant, tt.link)
			if err != nil {
				t.Fatalf("Compose: %v", err)
			}
			n, ok := GSM7Septets(got)
			if !ok || n > SegmentSeptets {
				t.Fatalf("Compose = %q: %d septets, GSM-7 %v; want one GSM-7 segment", got, n, ok)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("Compose = %q is not valid UTF-8", got)
			}
			if !strings.Contains(got, " "+tt.link+" ") {
				t.Errorf("Compose = %q does not hold the link", got)
			}
			if !strings.HasSuffix(got, "Reply STOP to opt out") {
				t.Errorf("Compose = %q does not end with the opt-out", got)
			}
			name, _, found := strings.Cut(got, ": You have a secure message. ")
			if !found || name == "" {
				t.Fatalf("Compose = %q does not start with the tenant name", got)
			}
			if tt.wantName != "" && name != tt.wantName {
				t.Errorf("name in text = %q, want %q", name, tt.wantName)
			}
			if name != strings.TrimSpace(name) {
				t.Errorf("name %q has surrounding space", name)
			}
		})
	}
}

func TestComposeTruncatesToExactlyOneSegment(t *testing.T) {
	got, err := Compose(strings.Repeat("A", 200), testLink)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := GSM7Septets(got); n != SegmentSeptets {
		t.Errorf("a long name should fill the segment: %d septets, want %d", n, SegmentSeptets)
	}
	// An extension character that would straddle the limit is left out whole.
	got, err = Compose(strings.Repeat("A", 200-1)+strings.Repeat("{", 10), testLink)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := GSM7Septets(got); n > SegmentSeptets {
		t.Errorf("%d septets, want at most %d", n, SegmentSeptets)
	}
	fixed, _ := GSM7Septets(": You have a secure message. " + testLink + " Reply STOP to opt out")
	got, err = Compose(strings.Repeat("A", SegmentSeptets-fixed-1)+"{", testLink)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "{") {
		t.Errorf("Compose = %q kept half of an extension character's room", got)
	}
}

func TestComposeRefuses(t *testing.T) {
	tests := []struct{ name, tenant, link, want string }{
		{"empty link", "Clinic", "", "link is empty"},
		{"link with space", "Clinic", "https://a.example/x y", "whitespace"},
		{"non-GSM link", "Clinic", "https://ex.example/ç", "GSM-7"},
		{"link too long", "Lakeside Regional", "https://t.example.org/" + strings.Repeat("a", 160-51-22-9), "leaves room for only 9"},
		{"link longer than a segment", "Clinic", "https://t.example.org/" + strings.Repeat("a", 200), "leaves room for only 0"},
		{"name with nothing sendable", "🙂🙂", testLink, "tenant name"},
		{"empty name", "   ", testLink, "tenant name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Compose(tt.tenant, tt.link)
			if err == nil {
				t.Fatalf("Compose = %q, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
	// A short name fits next to a link that would leave too little room for a long one.
	link := "https://t.example.org/" + strings.Repeat("a", 160-51-22-5)
	if _, err := Compose("Dr. A", link); err != nil {
		t.Errorf("Compose with a 5-character name and room for 5: %v", err)
	}
}
