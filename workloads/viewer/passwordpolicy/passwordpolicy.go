// Package passwordpolicy decides whether a password a patient chose may be used, following
// NIST SP 800-63B §3.1.1.2 and OWASP ASVS 5.0: a minimum length (15, or 8 with a second
// factor), at least 64 characters allowed, no composition rules, and a check against common
// and breached passwords, repetitive or sequential characters and words of the service
// itself. A refusal always says why, in words a patient understands.
//
// Passwords are compared after Unicode NFKC normalisation, the form package password hashes,
// and length is counted in characters (code points) of that form.
package passwordpolicy

import (
	"bufio"
	_ "embed"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxLength is the longest password accepted, in characters: well above the 64 NIST asks to
// allow, and short enough that a form cannot make the server hash megabytes.
const MaxLength = 256

//go:embed blocklist.txt
var blocklistFile string

// blocklist holds the entries of blocklist.txt, normalised.
var blocklist = func() map[string]struct{} {
	m := map[string]struct{}{}
	sc := bufio.NewScanner(strings.NewReader(blocklistFile))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m[fold(line)] = struct{}{}
	}
	return m
}()

// BlocklistSize is the number of entries in the shipped block-list.
func BlocklistSize() int { return len(blocklist) }

// Reason codes of a Refusal, for metrics and tests.
const (
	ReasonEmpty      = "empty"
	ReasonTooShort   = "too-short"
	ReasonTooLong    = "too-long"
	ReasonMismatch   = "mismatch"
	ReasonCommon     = "common"
	ReasonRepetitive = "repetitive"
	ReasonSequential = "sequential"
	ReasonContext    = "context"
)

// Refusal is why a password was refused.
type Refusal struct {
	Reason  string // one of the Reason constants
	Message string // for the patient: what is wrong and what to do instead
}

func (r *Refusal) Error() string { return r.Message }

// Policy is a tenant's password rules.
type Policy struct {
	MinLength int
	// Context are words of this service that must not make up a password: the tenant's name,
	// "securetext". Words shorter than 4 characters are ignored.
	Context []string
}

// Check returns nil if password may be used, or why not. confirm is the second entry of the
// password; it must be the same.
func (p Policy) Check(password, confirm string) *Refusal {
	pw := norm.NFKC.String(password)
	n := utf8.RuneCountInString(pw)
	switch {
	case strings.TrimSpace(pw) == "":
		return &Refusal{ReasonEmpty, "Enter a password."}
	case n < p.MinLength:
		return &Refusal{ReasonTooShort, fmt.Sprintf(
			"This password is too short: use at least %d characters (this one has %d). A short sentence you can remember works well, spaces included.",
			p.MinLength, n)}
	case n > MaxLength:
		return &Refusal{ReasonTooLong, fmt.Sprintf("This password is too long: use at most %d characters.", MaxLength)}
	case pw != norm.NFKC.String(confirm):
		return &Refusal{ReasonMismatch, "The two passwords are not the same. Type the same password in both boxes."}
	}
	f := fold(pw)
	if common(f) {
		return &Refusal{ReasonCommon,
			"This password is on a list of common or leaked passwords that attackers try first. Choose one that is less common, for example a few unrelated words."}
	}
	if repetitive(f) {
		return &Refusal{ReasonRepetitive,
			"This password repeats the same few characters (like aaaa or abcabc). Choose one with more variety."}
	}
	if sequential(f) {
		return &Refusal{ReasonSequential,
			"This password is a simple sequence (like 12345678 or qwertyuiop). Choose something harder to guess."}
	}
	for _, word := range p.Context {
		w := fold(word)
		if utf8.RuneCountInString(w) < 4 {
			continue
		}
		if rest := strings.ReplaceAll(f, w, ""); rest != f && utf8.RuneCountInString(rest) < 8 {
			return &Refusal{ReasonContext,
				"This password is mostly the name of this service or organisation, which attackers try first. Choose something else."}
		}
	}
	return nil
}

// fold is the form passwords are compared in: NFKC, lower case, without white space.
func fold(s string) string {
	s = strings.ToLower(norm.NFKC.String(s))
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// common reports whether f is a block-list entry, also with common decorations removed:
// trailing digits and punctuation ("password123!"), leading digits, or the entry doubled.
func common(f string) bool {
	candidates := []string{
		f,
		strings.TrimRightFunc(f, digitOrPunct),
		strings.TrimLeftFunc(f, digitOrPunct),
		strings.TrimFunc(f, digitOrPunct),
	}
	if half := len(f) / 2; len(f)%2 == 0 && f[:half] == f[half:] {
		candidates = append(candidates, f[:half])
	}
	for _, c := range candidates {
		if _, ok := blocklist[c]; ok && c != "" {
			return true
		}
	}
	return false
}

func digitOrPunct(r rune) bool {
	return unicode.IsDigit(r) || unicode.IsPunct(r) || unicode.IsSymbol(r)
}

// repetitive reports whether f uses at most 3 distinct characters, or is one short unit
// repeated ("abcabcabcabc", "ab12ab12ab12").
func repetitive(f string) bool {
	rs := []rune(f)
	distinct := map[rune]bool{}
	for _, r := range rs {
		distinct[r] = true
	}
	if len(distinct) <= 3 {
		return true
	}
	for unit := 1; unit <= len(rs)/2; unit++ {
		if len(rs)%unit != 0 || unit > 6 {
			continue
		}
		same := true
		for i := unit; i < len(rs) && same; i++ {
			same = rs[i] == rs[i-unit]
		}
		if same {
			return true
		}
	}
	return false
}

// keyboardRows are walks people type: rows of a US keyboard and its digit row.
var keyboardRows = []string{"1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz"}

// sequential reports whether f is one run of consecutive characters, up or down (in code
// points, or along a keyboard row, wrapping to the next row), such as "123456789",
// "zyxwvuts" or "qwertyuiopasdf".
func sequential(f string) bool {
	rs := []rune(f)
	if len(rs) < 4 {
		return false
	}
	for _, step := range []rune{1, -1} {
		run := true
		for i := 1; i < len(rs) && run; i++ {
			run = rs[i]-rs[i-1] == step
		}
		if run {
			return true
		}
	}
	walk := strings.Join(keyboardRows, "")
	rev := []rune(walk)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	for _, w := range []string{walk, string(rev), strings.Repeat("1234567890", 3), strings.Repeat("0987654321", 3)} {
		if strings.Contains(w, f) {
			return true
		}
	}
	return false
}
