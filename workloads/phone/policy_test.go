package phone

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPolicyDefaultCountries(t *testing.T) {
	p, err := NewPolicy("", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := p.AllowedCountries()
	if len(got) != 25 || !slices.Contains(got, "US") || !slices.Contains(got, "CA") || !slices.Contains(got, "JM") {
		t.Errorf("default countries of US = %v, want the 25 NANP countries", got)
	}
	gb, err := NewPolicy("GB", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := gb.AllowedCountries(); !slices.Equal(got, []string{"GB", "GG", "IM", "JE"}) {
		t.Errorf("default countries of GB = %v, want those sharing +44", got)
	}
}

func TestPolicyNormalize(t *testing.T) {
	tests := []struct {
		name, region, allowed, input string
		api                          bool
		want                         string // E.164, or "" for a refusal
		reason                       string // a fragment of the refusal's Reason
	}{
		{name: "US in the NANP default", region: "US", input: "2025550143", want: "+12025550143"},
		{name: "Canada in the NANP default", region: "US", input: "5145550143", want: "+15145550143"},
		{name: "GB outside the NANP default", region: "US", input: "011442079460958",
			reason: "is a number in GB, and this service texts only numbers in the countries of the North American Numbering Plan (+1)"},
		{name: "GB outside the NANP default, API", region: "US", input: "+44 20 7946 0958", api: true,
			reason: "is a number in GB, and this service texts only numbers in the countries of the North American Numbering Plan (+1)"},
		{name: "Canada outside US only", region: "US", allowed: "US", input: "5145550143",
			reason: "is a number in CA, and this service texts only numbers in US: write a number there, or ask your administrator to allow that country"},
		{name: "Canada in US,CA", region: "US", allowed: "us, CA", input: "5145550143", want: "+15145550143"},
		{name: "Jamaica outside US,CA", region: "US", allowed: "US,CA", input: "8765550143",
			reason: "is a number in JM, and this service texts only numbers in CA, US:"},
		{name: "GB allowed", region: "US", allowed: "US,GB", input: "011442079460958", want: "+442079460958"},
		{name: "+44 default of GB", region: "GB", input: "07911123456", want: "+447911123456"},
		{name: "US outside the +44 default of GB", region: "GB", input: "0012025550143",
			reason: "is a number in US, and this service texts only numbers in the countries of +44 (GB, GG, IM, JE)"},
		{name: "an invalid number is refused as before", region: "US", input: "2114367789",
			reason: "211 is a service code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(tt.region, ParseCountries(tt.allowed))
			if err != nil {
				t.Fatal(err)
			}
			normalize := p.Normalize
			if tt.api {
				normalize = p.NormalizeAPI
			}
			got, err := normalize(tt.input)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("Normalize(%q) = %q, %v; want %q", tt.input, got, err, tt.want)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("Normalize(%q) = %q, %v; want an *InvalidError", tt.input, got, err)
			}
			if !strings.Contains(ie.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", ie.Reason, tt.reason)
			}
			if !strings.HasPrefix(ie.Message(), tt.input+" ") {
				t.Errorf("Message() = %q, want it to quote the sender's input", ie.Message())
			}
		})
	}
}

func TestPolicyRefusesCountryOutsideWithCode(t *testing.T) {
	p, err := NewPolicy("US", []string{"US"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Normalize("5145550143")
	var ie *InvalidError
	if !errors.As(err, &ie) || ie.Code != CodeCountry {
		t.Fatalf("a Canadian number in a US-only policy: %v, want code %q", err, CodeCountry)
	}
	if strings.Contains(err.Error(), "5550143") {
		t.Errorf("Error() %q repeats the number", err)
	}
}

func TestNewPolicyRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct {
		region  string
		allowed []string
		want    string
	}{
		{"XX", nil, `phone region "XX" is not an ISO 3166 country code`},
		{"US", []string{"US", "USA"}, `allowed country "USA" is not an ISO 3166-1 alpha-2 code`},
		{"US", []string{"ZZ"}, `allowed country "ZZ"`},
	} {
		if _, err := NewPolicy(tt.region, tt.allowed); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewPolicy(%q, %q): %v, want %q", tt.region, tt.allowed, err, tt.want)
		}
	}
}
