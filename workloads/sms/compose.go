package sms

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// SegmentSeptets is the size of one GSM-7 SMS segment (3GPP TS 23.038): 160 septets. A text
// with any character outside GSM-7 is sent as UCS-2, 70 characters per segment, and a longer
// text is split into segments that are billed, and sometimes delivered, separately.
const SegmentSeptets = 160

// gsm7Basic is the GSM 03.38 default alphabet (one septet each), without ESC.
const gsm7Basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
	"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"

// gsm7Extension is the extension table: ESC plus the character, two septets each.
const gsm7Extension = "\f^{}\\[~]|€"

var gsm7 = func() map[rune]int {
	m := make(map[rune]int, 140)
	for _, r := range gsm7Basic {
		m[r] = 1
	}
	for _, r := range gsm7Extension {
		m[r] = 2
	}
	return m
}()

// GSM7Septets counts the septets s takes in the GSM-7 alphabet; extension characters such as
// { } [ ] ~ \ ^ | € count two. ok is false when s has a character GSM-7 cannot encode (then the
// whole text would go as UCS-2), and n counts only the characters that it can.
func GSM7Septets(s string) (n int, ok bool) {
	ok = true
	for _, r := range s {
		w, in := gsm7[r]
		if !in {
			ok = false
		}
		n += w
	}
	return n, ok
}

// Wording of the notification. It names the sender (the tenant), carries the link, and offers the
// opt-out in every text, as the TCPA healthcare exemption requires. It never carries the subject
// or anything else from the message.
const (
	composeLead   = ": You have a secure message. "
	composeOptOut = " Reply STOP to opt out"
	// minNameSeptets is the shortest tenant name that still tells a patient who wrote; a link
	// that leaves less room is refused.
	minNameSeptets = 10
)

// Compose builds the notification text:
//
//	<tenant name>: You have a secure message. <link> Reply STOP to opt out
//
// It always fits one GSM-7 segment (160 septets). Characters of the tenant name that GSM-7
// cannot encode are replaced by a close equivalent (’ → ', é stays, ó → o) or dropped, and the
// name is shortened to fit. It fails when the name has nothing sendable, or when the link has
// characters outside GSM-7 or is so long that less than 10 characters of the name would fit.
func Compose(tenantName, link string) (string, error) {
	link = strings.TrimSpace(link)
	if link == "" {
		return "", errors.New("compose text: the link is empty")
	}
	if strings.IndexFunc(link, unicode.IsSpace) >= 0 {
		return "", errors.New("compose text: the link contains whitespace")
	}
	if _, ok := GSM7Septets(link); !ok {
		return "", errors.New("compose text: the link has characters outside the GSM-7 alphabet; use a plain ASCII URL")
	}
	name := gsmName(tenantName)
	if name == "" {
		return "", errors.New("compose text: the tenant name has no characters that can be sent in a text; set a display name with letters")
	}
	rest := composeLead + link + composeOptOut
	restN, _ := GSM7Septets(rest)
	nameN, _ := GSM7Septets(name)
	budget := SegmentSeptets - restN
	if budget < min(nameN, minNameSeptets) {
		return "", fmt.Errorf("compose text: the link is %d characters long, which leaves room for only %d characters of the tenant name in one %d-character text; use a shorter public URL",
			len(link), max(budget, 0), SegmentSeptets)
	}
	return truncateSeptets(name, budget) + rest, nil
}

// nameReplacements are GSM-7 stand-ins for common characters outside the alphabet.
var nameReplacements = map[rune]string{
	'‘': "'", '’': "'", '‚': "'", '‛': "'", '′': "'", '`': "'", '´': "'",
	'“': `"`, '”': `"`, '„': `"`, '″': `"`, '«': `"`, '»': `"`,
	'‐': "-", '‑': "-", '‒': "-", '–': "-", '—': "-", '―': "-", '−': "-",
	'…': "...", '•': "-", '·': "-", '©': "(c)", '®': "(R)", '™': "TM",
}

// gsmName rewrites a tenant name into GSM-7 basic characters on one line: whitespace runs become
// one space; extension characters are kept (they cost two septets); others are replaced, reduced
// to their base letter (ó → o), or dropped.
func gsmName(s string) string {
	var b strings.Builder
	space := false
	write := func(r rune) {
		if r == ' ' {
			space = b.Len() > 0
			return
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	for _, r := range norm.NFC.String(s) {
		if unicode.IsSpace(r) || r == '\f' {
			write(' ')
			continue
		}
		if unicode.IsControl(r) {
			continue
		}
		if _, ok := gsm7[r]; ok {
			write(r)
			continue
		}
		if rep, ok := nameReplacements[r]; ok {
			for _, x := range rep {
				write(x)
			}
			continue
		}
		for _, x := range norm.NFD.String(string(r)) {
			if _, ok := gsm7[x]; ok {
				write(x)
			}
		}
	}
	return b.String()
}

// truncateSeptets cuts s to at most budget septets at a character boundary, without leaving a
// trailing space or separator.
func truncateSeptets(s string, budget int) string {
	n := 0
	for i, r := range s {
		w := gsm7[r]
		if n+w > budget {
			if cut := strings.TrimRight(s[:i], " -,;:/&("); cut != "" {
				return cut
			}
			return s[:i]
		}
		n += w
	}
	return s
}
