package phone

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// fuzzRegions are the regions FuzzNormalize reads national numbers in: NANP, the tenant
// regions most likely after it, and numbering plans with quirks (Italian leading zeros,
// Argentine and Mexican mobile prefixes, variable-length German numbers).
var fuzzRegions = []string{"US", "CA", "GB", "DE", "IT", "AR", "MX", "BR", "IN", "AU", "FR", "JP", "us", ""}

var (
	e164Pattern = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
	// digitRun finds digit sequences in a refusal: a reason may name an area code, an
	// exchange or a digit count, never four digits in a row of anyone's number.
	digitRun = regexp.MustCompile(`[0-9]{4,}`)
)

// exampleNumber is the fiction-range number refusals give as an example.
const exampleNumber = "2025550143"

// codePattern is the form of every Code constant: a short token, safe as a metric label.
var codePattern = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)

// FuzzNormalize checks, for any input in any of fuzzRegions, that:
//   - an accepted number is E.164, and normalising it again (as an API field) changes nothing;
//   - what the email form accepts, the API form accepts as the same number;
//   - a refusal is an *InvalidError with a code of the constants' form whose Error and Reason never repeat the
//     number, and whose Message (quoted in an SMTP reply) is one line of valid UTF-8;
//   - Mask shows at most the country code and the last two digits.
func FuzzNormalize(f *testing.F) {
	seeds := []struct {
		input  string
		region uint8
	}{
		{"2025550143", 0}, {"202.555.0143", 0}, {"1-202-555-0143", 0}, {"+1 (202) 555-0143", 0},
		{"011442079460958", 0}, {"2114367789", 0}, {"2029115555", 0}, {"0025550143", 0},
		{"2025550143x12", 0}, {"202555014", 0}, {"120255501430", 0}, {"", 0}, {"   ", 0},
		{"5145550143", 1}, {"02079460958", 2}, {"07911123456", 2}, {"+44 20 7946 0958", 2},
		{"0012025550143", 2}, {"030 901820", 3}, {"+49 30 901820", 3}, {"06 6982 0000", 4},
		{"+39 06 6982 0000", 4}, {"011 15 2345-6789", 5}, {"+54 9 11 2345 6789", 5},
		{"55 1234 5678", 6}, {"+52 1 55 1234 5678", 6}, {"(11) 91234-5678", 7}, {"098765 43210", 8},
		{"0412 345 678", 9}, {"01 23 45 67 89", 10}, {"03-1234-5678", 11}, {"2025550143", 12},
		{"2025550143", 13}, {"٢٠٢٥٥٥٠١٤٣", 0}, {"２０２５５５０１４３", 0}, {"+", 0}, {"++12025550143", 0},
		{strings.Repeat("9", 65), 0}, {"(((202)))555----0143", 0}, {"+0 202 555 0143", 0},
	}
	for _, s := range seeds {
		f.Add(s.input, s.region)
	}
	f.Fuzz(func(t *testing.T, input string, regionIndex uint8) {
		region := fuzzRegions[int(regionIndex)%len(fuzzRegions)]
		email, emailErr := Normalize(input, region)
		api, apiErr := NormalizeAPI(input, region)
		checkNormalized(t, "Normalize", input, region, email, emailErr)
		checkNormalized(t, "NormalizeAPI", input, region, api, apiErr)
		if emailErr == nil && (apiErr != nil || api != email) {
			t.Fatalf("Normalize(%q, %q) = %q, but NormalizeAPI gives %q, %v: the API form must accept what email accepts",
				input, region, email, api, apiErr)
		}
		checkMask(t, input)
	})
}

func checkNormalized(t *testing.T, fn, input, region, got string, err error) {
	t.Helper()
	if err != nil {
		var invalid *InvalidError
		if !errors.As(err, &invalid) {
			t.Fatalf("%s(%q, %q): %v is not an *InvalidError", fn, input, region, err)
		}
		if !codePattern.MatchString(invalid.Code) {
			t.Fatalf("%s(%q, %q): code %q is not a short token", fn, input, region, invalid.Code)
		}
		for _, run := range digitRun.FindAllString(invalid.Error(), -1) {
			if run != exampleNumber {
				t.Fatalf("%s(%q, %q): the refusal %q holds the digits %s; it must not repeat the number", fn, input, region, invalid.Error(), run)
			}
		}
		msg := invalid.Message()
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\r\n\x00") {
			t.Fatalf("%s(%q, %q): Message %q is not one line of UTF-8; it is quoted in an SMTP reply", fn, input, region, msg)
		}
		return
	}
	if !e164Pattern.MatchString(got) {
		t.Fatalf("%s(%q, %q) = %q, not E.164", fn, input, region, got)
	}
	again, err := NormalizeAPI(got, region)
	if err != nil || again != got {
		t.Fatalf("%s(%q, %q) = %q, but normalising that gives %q, %v: a normalised number must not change", fn, input, region, got, again, err)
	}
	num, err := phonenumbers.Parse(got, "")
	if err != nil {
		t.Fatalf("%s(%q, %q) = %q, which phonenumbers cannot read: %v", fn, input, region, got, err)
	}
	cc := strconv.Itoa(int(num.GetCountryCode()))
	masked := Mask(got)
	rest := strings.TrimPrefix(got, "+"+cc)
	want := "+" + cc + strings.Repeat("*", len(rest)-2) + rest[len(rest)-2:]
	if len(rest) < 4 {
		want = masked // too short to keep the country code: checkMask bounds it
	}
	if masked != want {
		t.Fatalf("Mask(%q) = %q, want %q", got, masked, want)
	}
}

// checkMask checks that Mask of anything shows at most a country code (three digits) and two
// more digits.
func checkMask(t *testing.T, s string) {
	t.Helper()
	masked := Mask(s)
	shown := 0
	for i := 0; i < len(masked); i++ {
		if masked[i] >= '0' && masked[i] <= '9' {
			shown++
		}
	}
	if shown > 5 {
		t.Fatalf("Mask(%q) = %q shows %d digits; at most a country code and two digits may show", s, masked, shown)
	}
}
