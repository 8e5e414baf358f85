package phone

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeValid(t *testing.T) {
	tests := []struct {
		name, input, region, want string
	}{
		{"fiction range, 10 digits", "2025550143", "US", "+12025550143"},
		{"fiction range, lowest", "2025550100", "US", "+12025550100"},
		{"fiction range, highest", "2025550199", "US", "+12025550199"},
		{"empty region means US", "2025550143", "", "+12025550143"},
		{"lower-case region", "2025550143", "us", "+12025550143"},
		{"dots", "202.555.0143", "US", "+12025550143"},
		{"dashes", "202-555-0143", "US", "+12025550143"},
		{"mixed separators", "202.555-0143", "US", "+12025550143"},
		{"11 digits starting with 1", "12025550143", "US", "+12025550143"},
		{"11 digits with separators", "1-202-555-0143", "US", "+12025550143"},
		{"surrounding space", " 2025550143 ", "US", "+12025550143"},
		{"Canadian number read in US", "5145550143", "US", "+15145550143"},
		{"US number read in CA", "2025550143", "CA", "+12025550143"},
		{"international from US with 011", "011442079460958", "US", "+442079460958"},
		{"GB national with trunk 0", "02079460958", "GB", "+442079460958"},
		{"GB national with dots", "020.7946.0958", "GB", "+442079460958"},
		{"GB mobile", "07911123456", "GB", "+447911123456"},
		{"international from GB with 00", "0012025550143", "GB", "+12025550143"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.input, tt.region)
			if err != nil {
				t.Fatalf("Normalize(%q, %q): %v", tt.input, tt.region, err)
			}
			if got != tt.want {
				t.Fatalf("Normalize(%q, %q) = %q, want %q", tt.input, tt.region, got, tt.want)
			}
		})
	}
}

func TestNormalizeAPIValid(t *testing.T) {
	tests := []struct {
		name, input, region, want string
	}{
		{"plus and country code", "+12025550143", "US", "+12025550143"},
		{"formatted", "+1 (202) 555-0143", "US", "+12025550143"},
		{"parentheses without plus", "(202) 555-0143", "US", "+12025550143"},
		{"GB number with plus in a US tenant", "+44 20 7946 0958", "US", "+442079460958"},
		{"plain digits", "202.555.0143", "US", "+12025550143"},
		{"GB national", "020 7946 0958", "GB", "+442079460958"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeAPI(tt.input, tt.region)
			if err != nil {
				t.Fatalf("NormalizeAPI(%q, %q): %v", tt.input, tt.region, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizeAPI(%q, %q) = %q, want %q", tt.input, tt.region, got, tt.want)
			}
		})
	}
}

func TestNormalizeInvalid(t *testing.T) {
	tests := []struct {
		name   string
		api    bool
		input  string
		region string
		code   string
		reason string // exact Reason, or a fragment when fragment is set
		frag   bool
	}{
		{name: "9 digits", input: "202555014", region: "US", code: CodeDigitCount,
			reason: "has 9 digits; a NANP (+1) number has 10, or 11 starting with 1"},
		{name: "12 digits", input: "120255501430", region: "US", code: CodeDigitCount,
			reason: "has 12 digits; a NANP (+1) number has 10, or 11 starting with 1"},
		{name: "11 digits not starting with 1", input: "22025550143", region: "US", code: CodeDigitCount,
			reason: "has 11 digits; a NANP (+1) number has 10, or 11 starting with 1"},
		{name: "too short", input: "555-0143", region: "US", code: CodeDigitCount,
			reason: "has 7 digits; a NANP (+1) number has 10, or 11 starting with 1"},
		{name: "plus in email", input: "+12025550143", region: "US", code: CodePlus,
			reason: "sub-address separator: write the number without it", frag: true},
		{name: "plus inside, email", input: "202555+0143", region: "US", code: CodePlus,
			reason: "sub-address separator", frag: true},
		{name: "plus inside, API", api: true, input: "1+2025550143", region: "US", code: CodeCharacters,
			reason: `has a "+" after the start`, frag: true},
		{name: "letters", input: "john.smith", region: "US", code: CodeCharacters,
			reason: "contains letters; write the number with digits only (. and - may separate groups), e.g. 2025550143"},
		{name: "vanity number", input: "1-800-FLOWERS", region: "US", code: CodeCharacters,
			reason: "contains letters;", frag: true},
		{name: "other characters", input: "202_555_0199", region: "US", code: CodeCharacters,
			reason: "contains characters other than digits;", frag: true},
		{name: "spaces in email", input: "202 555 0199", region: "US", code: CodeCharacters,
			reason: "contains characters other than digits;", frag: true},
		{name: "letters and others", input: "ab_cd", region: "US", code: CodeCharacters,
			reason: "contains letters and other characters;", frag: true},
		{name: "no digits", input: "-.-", region: "US", code: CodeEmpty,
			reason: "has no digits", frag: true},
		{name: "empty", input: "", region: "US", code: CodeEmpty,
			reason: "is empty", frag: true},
		{name: "too long", input: strings.Repeat("1", 65), region: "US", code: CodeTooLong,
			reason: "is too long to be a phone number", frag: true},
		{name: "area code starts with 0", input: "0025550143", region: "US", code: CodeAreaCode,
			reason: "is not a valid NANP (+1) number: the area code 002 starts with 0; area codes start with 2–9"},
		{name: "area code starts with 1", input: "11025550143", region: "US", code: CodeAreaCode,
			reason: "is not a valid NANP (+1) number: the area code 102 starts with 1; area codes start with 2–9"},
		{name: "N11 area code", input: "2114367789", region: "US", code: CodeAreaService,
			reason: "is not a valid NANP (+1) number: 211 is a service code, not an area code"},
		{name: "911 area code", input: "1-911-555-0143", region: "US", code: CodeAreaService,
			reason: "is not a valid NANP (+1) number: 911 is a service code, not an area code"},
		{name: "exchange starts with 0", input: "2020550143", region: "US", code: CodeExchange,
			reason: "the exchange (the 3 digits after the area code) starts with 0", frag: true},
		{name: "exchange starts with 1", input: "2021550143", region: "US", code: CodeExchange,
			reason: "starts with 1; exchanges start with 2–9", frag: true},
		{name: "N11 exchange", input: "2024110143", region: "US", code: CodeExchangeService,
			reason: "is not a valid NANP (+1) number: 411 is a service code, not an exchange (the 3 digits after the area code)"},
		{name: "N11 area code after +1, API", api: true, input: "+1 311 555 0143", region: "US", code: CodeAreaService,
			reason: "311 is a service code, not an area code", frag: true},
		{name: "unassigned area code", input: "3705550143", region: "US", code: CodeInvalid,
			reason: "is not a valid number for region US"},
		{name: "GB too short", input: "020", region: "GB", code: CodeDigitCount,
			reason: "is too short for a GB number"},
		{name: "GB without area code", input: "79460958", region: "GB", code: CodeDigitCount,
			reason: "is missing its area code: write the full GB number"},
		{name: "GB too long", input: "020794609581234567", region: "GB", code: CodeDigitCount,
			reason: "is too long for a GB number"},
		{name: "US number read in GB", input: "2025550143", region: "GB", code: CodeInvalid,
			reason: "is not a valid number for region GB"},
		{name: "unknown country code, API", api: true, input: "+999 1234 5678", region: "US", code: CodeInvalid,
			reason: "", frag: true},
		{name: "longer than E.164 allows", api: true, input: "0300 90182 901820", region: "DE", code: CodeDigitCount,
			reason: "is too long: with its country code a number has at most 15 digits (E.164)"},
		{name: "extension x", input: "2025550143x12", region: "US", code: CodeExtension,
			reason: "ends with an extension, and an extension cannot receive texts: write the number of a phone that can (a mobile), without the extension"},
		{name: "extension ext", input: "202-555-0143ext12", region: "US", code: CodeExtension,
			reason: "ends with an extension", frag: true},
		{name: "extension #", input: "2025550143#12", region: "US", code: CodeExtension,
			reason: "ends with an extension", frag: true},
		{name: "extension, API", api: true, input: "+1 (202) 555-0143 ext. 12", region: "US", code: CodeExtension,
			reason: "ends with an extension", frag: true},
		{name: "extension as in tel: URIs, API", api: true, input: "+12025550143;ext=12", region: "US", code: CodeExtension,
			reason: "ends with an extension", frag: true},
		{name: "x without digits after it", input: "2025550199x", region: "US", code: CodeCharacters,
			reason: "contains letters;", frag: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			normalize := Normalize
			if tt.api {
				normalize = NormalizeAPI
			}
			got, err := normalize(tt.input, tt.region)
			if err == nil {
				t.Fatalf("normalize(%q) = %q, want an error", tt.input, got)
			}
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v is %T, want *InvalidError", err, err)
			}
			if ie.Code != tt.code {
				t.Errorf("Code = %q, want %q (reason %q)", ie.Code, tt.code, ie.Reason)
			}
			if tt.frag && !strings.Contains(ie.Reason, tt.reason) || !tt.frag && ie.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", ie.Reason, tt.reason)
			}
			// Reason and Error are for logs: they never repeat the number.
			digits := strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return r
				}
				return -1
			}, tt.input)
			if len(digits) >= 7 && (strings.Contains(ie.Reason, digits) || strings.Contains(err.Error(), digits)) {
				t.Errorf("reason %q repeats the number", ie.Reason)
			}
		})
	}
}

func TestInvalidErrorMessage(t *testing.T) {
	_, err := Normalize("2114367789", "US")
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("Normalize: %v, want *InvalidError", err)
	}
	if want := "2114367789 is not a valid NANP (+1) number: 211 is a service code, not an area code"; ie.Message() != want {
		t.Errorf("Message() = %q, want %q", ie.Message(), want)
	}
	if want := "phone number is not a valid NANP (+1) number: 211 is a service code, not an area code"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}

	_, err = Normalize("202555014", "")
	if !errors.As(err, &ie) {
		t.Fatalf("Normalize: %v, want *InvalidError", err)
	}
	if want := "202555014 has 9 digits; a NANP (+1) number has 10, or 11 starting with 1"; ie.Message() != want {
		t.Errorf("Message() = %q, want %q", ie.Message(), want)
	}

	// Input that is not short printable ASCII is not echoed back.
	_, err = Normalize("202\x00555", "US")
	if !errors.As(err, &ie) {
		t.Fatalf("Normalize: %v, want *InvalidError", err)
	}
	if got := ie.Message(); strings.Contains(got, "\x00") || !strings.HasPrefix(got, "The phone number contains") {
		t.Errorf("Message() = %q, want it to start with %q and not echo the input", got, "The phone number contains")
	}
}

func TestNormalizeUnknownRegion(t *testing.T) {
	_, err := Normalize("2025550143", "XX")
	if err == nil {
		t.Fatal("Normalize with region XX succeeded, want an error")
	}
	var ie *InvalidError
	if errors.As(err, &ie) {
		t.Fatalf("unknown region gave *InvalidError %v: it is a configuration problem, not the sender's", err)
	}
}

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+12025550143", "+1********43"},
		{"+442079460958", "+44********58"},
		{"+8613800138000", "+86*********00"},
		{"2025550143", "********43"},
		{"+999123456789", "**********89"}, // unknown country code: nothing but the last two
		{"+1234", "****"},
		{"", "****"},
	}
	for _, tt := range tests {
		if got := Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkNormalize measures the recipient check every SMTP RCPT and REST submission makes:
// a US number in a US tenant, and a Canadian one, which is valid for another region that
// shares +1.
//
//	go test ./workloads/phone -run '^$' -bench Normalize
func BenchmarkNormalize(b *testing.B) {
	for _, n := range []struct{ name, in string }{{"home-region", "202.555.0143"}, {"other-region", "514-555-0143"}} {
		b.Run(n.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Normalize(n.in, "US"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
