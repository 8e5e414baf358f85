// Package phone turns the phone numbers senders write into E.164, and masks them for display.
//
// It guarantees that:
//
//   - a number returned by [Normalize] or [NormalizeAPI] is E.164 (+ and at most 15 digits) and valid
//     according to github.com/nyaruka/phonenumbers; for the North American Numbering Plan it also
//     passes the NANP structure rules (area code and exchange start with 2–9 and are not N11
//     service codes such as 211 or 911). The fiction range 202-555-0100…0199 is valid.
//   - a number returned by a [Policy] is also in one of the policy's allowed countries.
//   - a refusal is an [*InvalidError] whose Reason says what to fix without repeating the number,
//     so it is safe for logs and audit records; [InvalidError.Message] quotes the sender's own input
//     for the reply to that sender.
//   - [Mask] never shows more than the country code and the last two digits.
//
// Phone numbers are HIPAA identifiers: callers must not log them; log [Mask] or nothing.
package phone

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// DefaultRegion is the region used to read numbers written without a country code when the
// caller passes no region.
const DefaultRegion = "US"

// maxInputLen bounds what is parsed at all: an email local part is at most 64 octets (RFC 5321
// §4.5.3.1.1), and nothing longer can be a phone number with separators.
const maxInputLen = 64

// Codes of [InvalidError], stable enough to count in metrics or store in an audit record.
const (
	CodeEmpty           = "empty"
	CodeTooLong         = "too_long"
	CodePlus            = "plus_in_email"
	CodeCharacters      = "characters"
	CodeDigitCount      = "digit_count"
	CodeAreaCode        = "area_code"
	CodeAreaService     = "area_code_service"
	CodeExchange        = "exchange"
	CodeExchangeService = "exchange_service"
	CodeInvalid         = "invalid"
	CodeExtension       = "extension"
	CodeCountry         = "country"
)

// InvalidError says why a phone number was refused.
type InvalidError struct {
	// Code is one of the Code constants.
	Code string
	// Reason completes the sentence "the phone number …" and says what to fix. It never holds the
	// number itself (at most a refused area code or exchange, which is no one's number), so it is
	// safe to log and audit.
	Reason string

	input string // the sender's own input, for Message
}

// Error returns the reason without the number.
func (e *InvalidError) Error() string {
	return "phone number " + e.Reason
}

// Message is the refusal for the person who wrote the number: it quotes their input when that is
// short and printable, e.g. "2114367789 is not a valid NANP (+1) number: 211 is a service code,
// not an area code". Send it only to that person; log [InvalidError.Error] instead.
func (e *InvalidError) Message() string {
	if quotable(e.input) {
		return e.input + " " + e.Reason
	}
	return "The phone number " + e.Reason
}

func quotable(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return false
		}
	}
	return true
}

// Normalize reads a phone number written as the local part of an email address
// (<number>@<text domain>) and returns it in E.164. The input is digits with optional "." and
// "-" separators; a number without a country code is read in region (an ISO 3166 code such as
// "US" or "GB"; "" means [DefaultRegion]). For NANP regions 10 digits, or 11 starting with 1, are
// a number in +1, and 011 starts an international number.
//
// A leading "+" is refused: many mail systems treat "+" in a local part as a sub-address
// separator, so the number would not arrive intact.
//
// A number that cannot be used gives an [*InvalidError]; an unknown region gives another error
// (a configuration problem, not the sender's).
func Normalize(input, region string) (string, error) {
	return normalize(input, region, false)
}

// NormalizeAPI is [Normalize] for an API field: it also accepts a leading "+" with a country
// code, spaces and parentheses, as in "+1 (202) 555-0143".
func NormalizeAPI(input, region string) (string, error) {
	return normalize(input, region, true)
}

func normalize(input, region string, api bool) (string, error) {
	region = strings.ToUpper(strings.TrimSpace(region))
	if region == "" {
		region = DefaultRegion
	}
	cc := phonenumbers.GetCountryCodeForRegion(region)
	if cc == 0 {
		return "", fmt.Errorf("read phone number: unknown region %q: use an ISO 3166 code such as US or GB", region)
	}
	input = strings.TrimSpace(input)
	invalid := func(code, reason string, args ...any) error {
		return &InvalidError{Code: code, Reason: fmt.Sprintf(reason, args...), input: input}
	}
	example := ""
	if cc == 1 {
		example = ", e.g. 2025550143"
	}

	if input == "" {
		return "", invalid(CodeEmpty, "is empty: write the recipient's phone number%s", example)
	}
	if len(input) > maxInputLen {
		return "", invalid(CodeTooLong, "is too long to be a phone number: write digits only%s", example)
	}
	if extension.MatchString(input) {
		return "", invalid(CodeExtension, "ends with an extension, and an extension cannot receive texts: write the number of a phone that can (a mobile), without the extension")
	}

	digits, plus, code, refusal := scan(input, api, example)
	if refusal != "" {
		return "", invalid(code, "%s", refusal)
	}
	if digits == "" {
		return "", invalid(CodeEmpty, "has no digits: write the recipient's phone number%s", example)
	}

	// text is what phonenumbers parses: an international number, or a national one in region.
	text := digits
	switch {
	case plus:
		text = "+" + digits
	case cc == 1 && !strings.HasPrefix(digits, "011"):
		// NANP: the digit count is the most common mistake, so it gets its own words.
		switch {
		case len(digits) == 10:
			text = "+1" + digits
		case len(digits) == 11 && digits[0] == '1':
			text = "+" + digits
		default:
			return "", invalid(CodeDigitCount, "has %d digits; a NANP (+1) number has 10, or 11 starting with 1", len(digits))
		}
	}
	num, perr := phonenumbers.Parse(text, region)
	if perr != nil {
		if plus {
			return "", invalid(CodeInvalid, "is not a valid international number: after + write the country code and the number")
		}
		return "", invalid(CodeInvalid, "is not a valid number for region %s", region)
	}
	return finish(num, region, invalid)
}

// extension matches a number followed by an extension: "2025550143x12", "202-555-0143 ext. 12",
// "2025550143#12", "tel:"-style ";ext=12".
var extension = regexp.MustCompile(`(?i)^[+(]?[0-9][0-9 ().-]*[0-9][ .-]*(x|ext\.?|extn?|extension|#|;ext=)[ .]*[0-9]+$`)

// finish applies the checks every parsed number goes through and formats it.
func finish(num *phonenumbers.PhoneNumber, region string, invalid func(code, reason string, args ...any) error) (string, error) {
	numRegion := region
	if int(num.GetCountryCode()) != phonenumbers.GetCountryCodeForRegion(region) {
		numRegion = fmt.Sprintf("+%d", num.GetCountryCode())
	}
	if num.GetCountryCode() == 1 {
		national := phonenumbers.GetNationalSignificantNumber(num)
		if len(national) != 10 {
			return "", invalid(CodeDigitCount, "has %d digits after the country code 1; a NANP number has 10", len(national))
		}
		if err := nanpStructure(national, invalid); err != nil {
			return "", err
		}
	}
	// A number valid in the tenant's own region is valid; asking that first spares the search
	// through every region that shares the country code (about 25 for +1), which is most of
	// the cost of a lookup.
	if !phonenumbers.IsValidNumberForRegion(num, region) && !phonenumbers.IsValidNumber(num) {
		switch phonenumbers.IsPossibleNumberWithReason(num) {
		case phonenumbers.TOO_SHORT:
			return "", invalid(CodeDigitCount, "is too short for a %s number", numberName(numRegion))
		case phonenumbers.TOO_LONG:
			return "", invalid(CodeDigitCount, "is too long for a %s number", numberName(numRegion))
		case phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
			return "", invalid(CodeDigitCount, "is missing its area code: write the full %s number", numberName(numRegion))
		case phonenumbers.INVALID_COUNTRY_CODE:
			return "", invalid(CodeInvalid, "does not start with a known country code")
		}
		if numRegion == region {
			return "", invalid(CodeInvalid, "is not a valid number for region %s", region)
		}
		return "", invalid(CodeInvalid, "is not a valid number for country code %s", numRegion)
	}
	// phonenumbers accepts some national numbers whose E.164 form is longer than E.164's 15
	// digits (variable-length German numbers); no network routes those.
	e164 := phonenumbers.Format(num, phonenumbers.E164)
	if len(e164)-1 > 15 {
		return "", invalid(CodeDigitCount, "is too long: with its country code a number has at most 15 digits (E.164)")
	}
	return e164, nil
}

func numberName(region string) string {
	if strings.HasPrefix(region, "+") {
		return "country code " + region
	}
	return region
}

// nanpStructure checks a 10-digit NANP national number NPA-NXX-XXXX: area code (NPA) and exchange
// (NXX) start with 2–9, and N11 codes are service codes (211 community services … 911
// emergency), not area codes or exchanges. phonenumbers knows assigned area codes but accepts
// some N11 exchanges, and its refusals do not say which part is wrong.
// The refusals name the plan, not a country: its rules are the same in all its 25 countries.
func nanpStructure(national string, invalid func(code, reason string, args ...any) error) error {
	npa, nxx := national[0:3], national[3:6]
	switch {
	case npa[0] == '0' || npa[0] == '1':
		return invalid(CodeAreaCode, "is not a valid NANP (+1) number: the area code %s starts with %c; area codes start with 2–9", npa, npa[0])
	case npa[1] == '1' && npa[2] == '1':
		return invalid(CodeAreaService, "is not a valid NANP (+1) number: %s is a service code, not an area code", npa)
	case nxx[0] == '0' || nxx[0] == '1':
		return invalid(CodeExchange, "is not a valid NANP (+1) number: the exchange (the 3 digits after the area code) starts with %c; exchanges start with 2–9", nxx[0])
	case nxx[1] == '1' && nxx[2] == '1':
		return invalid(CodeExchangeService, "is not a valid NANP (+1) number: %s is a service code, not an exchange (the 3 digits after the area code)", nxx)
	}
	return nil
}

// scan collects the digits of input and whether it starts with "+". A refusal completes "the
// phone number …"; example (", e.g. …" or "") ends the advice on characters.
func scan(input string, api bool, example string) (digits string, plus bool, code, refusal string) {
	var b strings.Builder
	letters, others := false, false
	for i, r := range input {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '.' || r == '-':
		case r == '+' && !api:
			return "", false, CodePlus, `contains "+", which email treats as a sub-address separator: ` +
				`write the number without it (a number outside your region starts with the international ` +
				`dialing prefix instead, e.g. 011 in the US)`
		case r == '+' && i > 0:
			return "", false, CodeCharacters, `has a "+" after the start: write + only before the country code`
		case r == '+':
			plus = true
		case api && (r == ' ' || r == '(' || r == ')'):
		case (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'):
			letters = true
		default:
			others = true
		}
	}
	what := ""
	switch {
	case letters && others:
		what = "contains letters and other characters"
	case letters:
		what = "contains letters"
	case others:
		what = "contains characters other than digits"
	default:
		return b.String(), plus, "", ""
	}
	separators := ". and -"
	if api {
		separators = "spaces, parentheses, . and -"
	}
	return "", false, CodeCharacters, what + "; write the number with digits only (" + separators + " may separate groups)" + example
}

// Mask shows an E.164 number for operators: the country code and the last two digits, e.g.
// "+1********43". Anything that is not a parseable E.164 number keeps only its last two digits,
// and numbers too short to hide anything are masked completely.
func Mask(e164 string) string {
	digits := make([]byte, 0, len(e164))
	for i := 0; i < len(e164); i++ {
		if c := e164[i]; c >= '0' && c <= '9' {
			digits = append(digits, c)
		}
	}
	if len(digits) < 6 {
		return strings.Repeat("*", max(len(digits), 4))
	}
	prefix, rest := "", digits
	if strings.HasPrefix(e164, "+") {
		if num, err := phonenumbers.Parse(e164, ""); err == nil {
			cc := fmt.Sprint(num.GetCountryCode())
			if strings.HasPrefix(string(digits), cc) && len(digits)-len(cc) >= 4 {
				prefix, rest = "+"+cc, digits[len(cc):]
			}
		}
	}
	return prefix + strings.Repeat("*", len(rest)-2) + string(rest[len(rest)-2:])
}
