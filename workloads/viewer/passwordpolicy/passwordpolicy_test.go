package passwordpolicy

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	p := Policy{MinLength: 15, Context: []string{"Riverside Clinic", "securetext"}}
	for _, tc := range []struct {
		pw, confirm, want string // want "" = accepted
	}{
		{"", "", ReasonEmpty},
		{"short", "short", ReasonTooShort},
		{"ｐｕｒｐｌｅ", "ｐｕｒｐｌｅ", ReasonTooShort}, // NFKC: fullwidth letters are 6 characters
		{strings.Repeat("long words ", 30), strings.Repeat("long words ", 30), ReasonTooLong},
		{"   ", "   ", ReasonEmpty},
		{"purple giraffe dances", "purple giraffe dance", ReasonMismatch},
		{"passwordpassword", "passwordpassword", ReasonCommon},
		{"Password123456789!", "Password123456789!", ReasonCommon},
		{"iloveyou iloveyou", "iloveyou iloveyou", ReasonCommon},
		{"correct horse battery staple", "correct horse battery staple", ReasonCommon},
		{"zzzzzzzzzzzzzzzzzz", "zzzzzzzzzzzzzzzzzz", ReasonRepetitive},
		{"abcabcabcabcabcabc", "abcabcabcabcabcabc", ReasonRepetitive},
		{"abcdefghijklmnopq", "abcdefghijklmnopq", ReasonSequential},
		{"qwertyuiopasdfg", "qwertyuiopasdfg", ReasonSequential},
		{"9876543210987654", "9876543210987654", ReasonSequential},
		{"Riverside Clinic!!", "Riverside Clinic!!", ReasonContext},
		{"purple giraffe dances", "purple giraffe dances", ""},
		{"ｐｕｒｐｌｅ giraffe dances", "purple giraffe dances", ""}, // NFKC makes both the same
		{"Tomatoes grow in July", "Tomatoes grow in July", ""},
	} {
		r := p.Check(tc.pw, tc.confirm)
		switch {
		case tc.want == "" && r != nil:
			t.Errorf("%q refused: %s", tc.pw, r.Message)
		case tc.want != "" && (r == nil || r.Reason != tc.want):
			t.Errorf("%q: got %+v, want reason %s", tc.pw, r, tc.want)
		case r != nil && r.Message == "":
			t.Errorf("%q: refusal without a message", tc.pw)
		}
	}
	if BlocklistSize() < 300 {
		t.Errorf("block-list has %d entries", BlocklistSize())
	}
	if r := (Policy{MinLength: 8}).Check("tulip sky", "tulip sky"); r != nil {
		t.Errorf("8-character policy refused a 9-character password: %s", r.Message)
	}
}
