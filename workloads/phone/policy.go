package phone

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Policy is how one tenant reads recipients' numbers: the region of numbers written without a
// country code, and the countries whose numbers it texts. Every country allowed is one whose
// numbers a sender can make the tenant pay to text (SMS pumping fraud targets premium-rate
// countries), so the list is a setting, not "anywhere".
type Policy struct {
	region  string
	allowed []string // sorted ISO 3166-1 alpha-2 codes
	// named is how a refusal names the allowed countries.
	named string
}

// NewPolicy returns the policy of region (ISO 3166, "" means [DefaultRegion]) and allowed
// countries (ISO 3166-1 alpha-2 codes). No allowed countries means those that share region's
// calling code, the ones a number written without a country code can reach: for US, the 25
// countries of the North American Numbering Plan (+1).
func NewPolicy(region string, allowed []string) (*Policy, error) {
	region = strings.ToUpper(strings.TrimSpace(region))
	if region == "" {
		region = DefaultRegion
	}
	cc := phonenumbers.GetCountryCodeForRegion(region)
	if cc == 0 {
		return nil, fmt.Errorf("phone region %q is not an ISO 3166 country code such as US or GB", region)
	}
	var set []string
	for _, c := range allowed {
		c = strings.ToUpper(strings.TrimSpace(c))
		if c == "" {
			continue
		}
		if len(c) != 2 || phonenumbers.GetCountryCodeForRegion(c) == 0 {
			return nil, fmt.Errorf("allowed country %q is not an ISO 3166-1 alpha-2 code with a telephone numbering plan, such as US or CA", c)
		}
		set = append(set, c)
	}
	if len(set) == 0 {
		set = append(set, phonenumbers.GetRegionCodesForCountryCode(cc)...)
	}
	slices.Sort(set)
	set = slices.Compact(set)
	return &Policy{region: region, allowed: set, named: nameCountries(set)}, nil
}

// ParseCountries splits a comma-separated list of country codes, e.g. "US,CA".
func ParseCountries(list string) []string {
	var out []string
	for _, c := range strings.Split(list, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// nameCountries names a set of countries for a refusal: a whole calling code's countries by
// that code (the NANP by name), else the codes.
func nameCountries(set []string) string {
	if len(set) > 1 {
		cc := phonenumbers.GetCountryCodeForRegion(set[0])
		all := slices.Clone(phonenumbers.GetRegionCodesForCountryCode(cc))
		slices.Sort(all)
		if slices.Equal(all, set) {
			if cc == 1 {
				return "the countries of the North American Numbering Plan (+1)"
			}
			return fmt.Sprintf("the countries of +%d (%s)", cc, strings.Join(set, ", "))
		}
	}
	return strings.Join(set, ", ")
}

// Region is the region numbers without a country code are read in.
func (p *Policy) Region() string { return p.region }

// AllowedCountries are the ISO 3166-1 alpha-2 codes of the countries the policy texts, sorted.
func (p *Policy) AllowedCountries() []string { return slices.Clone(p.allowed) }

// Normalize is [Normalize] in the policy's region, refusing numbers outside its countries.
func (p *Policy) Normalize(input string) (string, error) {
	e164, err := Normalize(input, p.region)
	return p.check(input, e164, err)
}

// NormalizeAPI is [NormalizeAPI] in the policy's region, refusing numbers outside its
// countries.
func (p *Policy) NormalizeAPI(input string) (string, error) {
	e164, err := NormalizeAPI(input, p.region)
	return p.check(input, e164, err)
}

func (p *Policy) check(input, e164 string, err error) (string, error) {
	if err != nil {
		return "", err
	}
	num, err := phonenumbers.Parse(e164, "")
	if err != nil {
		return "", fmt.Errorf("read normalised phone number: %w", err)
	}
	// The tenant's own region first: the search through every region of a calling code is
	// most of the cost of a lookup.
	country := p.region
	if !phonenumbers.IsValidNumberForRegion(num, p.region) {
		country = phonenumbers.GetRegionCodeForNumber(num)
	}
	if _, ok := slices.BinarySearch(p.allowed, country); ok {
		return e164, nil
	}
	where := "is a number in " + country
	if len(country) != 2 {
		where = "is a non-geographic number"
	}
	return "", &InvalidError{Code: CodeCountry, input: strings.TrimSpace(input), Reason: fmt.Sprintf(
		"%s, and this service texts only numbers in %s: write a number there, or ask your administrator to allow that country",
		where, p.named)}
}
