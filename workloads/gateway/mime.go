package gateway

// Reading a submitted email (RFC 5322 + MIME, RFC 2045–2049) into a content.Message: the
// subject, one plain text and the attachments. The text is what the patient reads, so HTML is
// rendered to plain text here and never stored as markup.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // registers the charsets of message.CharsetReader
	gomail "github.com/emersion/go-message/mail"
	xhtml "golang.org/x/net/html"
	htmlcharset "golang.org/x/net/html/charset"
	"golang.org/x/text/encoding/charmap"

	"github.com/securetext/securetext/workloads/content"
)

const (
	// mimeMaxDepth bounds multipart nesting; real mail nests three or four levels.
	mimeMaxDepth = 16
	// mimeMaxParts bounds the parts of one message, so that a message of many tiny parts
	// cannot cost more than its size suggests.
	mimeMaxParts = 500
	// maxAttachmentName bounds a stored file name, in bytes.
	maxAttachmentName = content.MaxNameBytes
)

// ParseMail reads an email message and returns its content and its Message-ID (without angle
// brackets; "" when the message has none).
//
//   - The subject is RFC 2047 decoded.
//   - The text is the text/plain part; in a multipart/alternative the plain alternative wins
//     and an HTML-only message is rendered to plain text (see htmlToText). Several inline text
//     parts of a multipart/mixed are joined in order with a blank line.
//   - Parts with Content-Disposition: attachment, non-text inline parts (images, PDFs) and text
//     parts other than plain and HTML become attachments, their transfer encoding decoded.
//     Inline images of an HTML alternative are kept even when the plain alternative is the
//     text, so that a pasted picture is not lost. Signature parts of multipart/signed are
//     dropped: they mean nothing to the patient and the signed content is kept.
//   - Text is converted to UTF-8 from its declared charset (text attachments too, and then
//     their Content-Type says charset=utf-8). Undeclared 8-bit text is read as Windows-1252
//     (plain) or by the HTML rules (meta charset).
//
// A message that cannot be read is a *RefusedError with ReasonInvalid whose Detail says what
// is wrong without quoting the content (the SMTP server answers 554 5.6.0).
func ParseMail(r io.Reader) (content.Message, string, error) {
	e, err := gomessage.Read(r)
	if err != nil && e == nil {
		return content.Message{}, "", mimeMalformed("the message header cannot be read: each header line must be \"Name: value\" and a blank line must end the header")
	}
	h := gomail.Header{Header: e.Header}

	var msg content.Message
	subject, _ := h.Subject() // an undecodable encoded word leaves the raw text, which is still the subject
	msg.Subject = mimeLine(subject)

	messageID, idErr := h.MessageID()
	if idErr != nil {
		// A malformed Message-ID still identifies the message for idempotency: it is only hashed.
		messageID = strings.TrimSpace(h.Get("Message-Id"))
	}

	p := &mimeParser{}
	texts, err := p.entity(e, err, 0)
	if err != nil {
		return content.Message{}, "", err
	}
	parts := make([]string, 0, len(texts))
	for _, t := range texts {
		if t.text != "" {
			parts = append(parts, t.text)
		}
	}
	msg.Text = strings.Join(parts, "\n\n")
	msg.Attachments = p.attachments
	return msg, messageID, nil
}

// mimeMalformed is the refusal of a message that cannot be read.
func mimeMalformed(format string, args ...any) error {
	return Refused(ReasonInvalid, "", "malformed message: "+format, args...)
}

// mimeText is one inline text part, already plain.
type mimeText struct {
	text     string
	fromHTML bool
}

type mimeParser struct {
	parts       int
	attachments []content.Attachment
}

// entity reads e (whose header had the read error readErr, e.g. an unknown charset) and
// returns its inline texts in order; attachments are collected in p.
func (p *mimeParser) entity(e *gomessage.Entity, readErr error, depth int) ([]mimeText, error) {
	p.parts++
	switch {
	case depth > mimeMaxDepth:
		return nil, mimeMalformed("multipart parts are nested more than %d deep", mimeMaxDepth)
	case p.parts > mimeMaxParts:
		return nil, mimeMalformed("the message has more than %d MIME parts", mimeMaxParts)
	case gomessage.IsUnknownEncoding(readErr):
		return nil, mimeMalformed("Content-Transfer-Encoding %s is not supported: use base64, quoted-printable, 7bit or 8bit",
			mimeToken(e.Header.Get("Content-Transfer-Encoding")))
	}
	mediaType, params, err := e.Header.ContentType()
	if err != nil {
		return nil, mimeMalformed("a Content-Type header cannot be read (it must be type/subtype followed by ; name=value parameters)")
	}
	mediaType = strings.ToLower(mediaType)

	if strings.HasPrefix(mediaType, "multipart/") {
		return p.multipart(e, mediaType, depth)
	}

	disposition, dispParams := "", map[string]string(nil)
	if v := e.Header.Get("Content-Disposition"); v != "" {
		// A disposition that cannot be read is treated as absent (RFC 2183 §2.8: unknown
		// dispositions are treated as attachment, but an unreadable one says nothing).
		disposition, dispParams, _ = e.Header.ContentDisposition()
		disposition = strings.ToLower(disposition)
	}
	name := dispParams["filename"]
	if name == "" {
		name = params["name"]
	}

	switch mediaType {
	case "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature":
		_, _ = io.Copy(io.Discard, e.Body)
		return nil, nil
	}

	isText := mediaType == "text/plain" || mediaType == "text/html"
	charsetParam := strings.ToLower(params["charset"])
	unknownCharset := gomessage.IsUnknownCharset(readErr)
	if isText && disposition != "attachment" && name == "" {
		if unknownCharset {
			return nil, mimeMalformed("charset %s is not supported: send the text as UTF-8", mimeToken(charsetParam))
		}
		data, err := io.ReadAll(e.Body)
		if err != nil {
			return nil, mimeBodyError(err)
		}
		if mediaType == "text/html" {
			if charsetParam == "" && !utf8.Valid(data) {
				data = mimeUndeclaredHTML(data)
			}
			return []mimeText{{text: htmlToText(bytes.NewReader(data)), fromHTML: true}}, nil
		}
		if charsetParam == "" && !utf8.Valid(data) {
			data = mimeWindows1252(data)
		}
		return []mimeText{{text: mimeCleanText(string(data))}}, nil
	}

	data, err := io.ReadAll(e.Body)
	if err != nil {
		return nil, mimeBodyError(err)
	}
	ct := mediaType
	if strings.HasPrefix(mediaType, "text/") && charsetParam != "" {
		cs := "utf-8" // go-message converted it
		if unknownCharset {
			cs = charsetParam // the bytes are as sent
		}
		ct = mime.FormatMediaType(mediaType, map[string]string{"charset": cs})
		if ct == "" {
			ct = mediaType
		}
	}
	p.attachments = append(p.attachments, content.Attachment{Name: content.SafeName(name, ct), ContentType: ct, Data: data})
	return nil, nil
}

// multipart reads the parts of a multipart entity. Of a multipart/alternative it keeps the
// text of the best alternative (plain over HTML, the first of equals) and the attachments
// of all.
func (p *mimeParser) multipart(e *gomessage.Entity, mediaType string, depth int) ([]mimeText, error) {
	mr := e.MultipartReader()
	if mr == nil {
		return nil, mimeMalformed("a multipart part has no boundary parameter")
	}
	var texts, best []mimeText
	bestRank := -1
	for {
		child, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil && child == nil {
			return nil, mimeMalformed("a multipart body is broken: a boundary line is missing, or the closing boundary (--boundary--) is absent")
		}
		t, err := p.entity(child, err, depth+1)
		if err != nil {
			return nil, err
		}
		if mediaType != "multipart/alternative" {
			texts = append(texts, t...)
			continue
		}
		if rank := mimeAlternativeRank(t); rank > bestRank {
			best, bestRank = t, rank
		}
	}
	if mediaType == "multipart/alternative" {
		return best, nil
	}
	return texts, nil
}

// mimeAlternativeRank ranks an alternative by what its text came from: plain text (2), HTML (1),
// nothing (0).
func mimeAlternativeRank(texts []mimeText) int {
	rank := 0
	for _, t := range texts {
		switch {
		case t.text == "":
		case !t.fromHTML:
			return 2
		default:
			rank = 1
		}
	}
	return rank
}

// mimeBodyError explains a part whose transfer encoding does not decode.
func mimeBodyError(err error) error {
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &b64):
		return mimeMalformed("a base64-encoded part is corrupt")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return mimeMalformed("a part ends early: the closing boundary (--boundary--) is missing or an encoded part is cut short")
	case strings.Contains(err.Error(), "quotedprintable"):
		return mimeMalformed("a quoted-printable part is corrupt")
	case strings.HasPrefix(err.Error(), "multipart"):
		return mimeMalformed("a multipart body is broken: a boundary line is missing, or the closing boundary (--boundary--) is absent")
	}
	return mimeMalformed("a part cannot be decoded")
}

// mimeToken quotes a short header token (a charset or transfer encoding name) for a refusal,
// or says it is unreadable.
func mimeToken(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 40 {
		return "(unreadable)"
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return "(unreadable)"
		}
	}
	return `"` + s + `"`
}

func mimeWindows1252(b []byte) []byte {
	out, err := charmap.Windows1252.NewDecoder().Bytes(b)
	if err != nil {
		return b
	}
	return out
}

// mimeUndeclaredHTML decodes HTML whose MIME header names no charset by the HTML rules: a
// byte order mark, a meta charset, else Windows-1252.
func mimeUndeclaredHTML(b []byte) []byte {
	enc, _, _ := htmlcharset.DetermineEncoding(b, "text/html")
	out, err := enc.NewDecoder().Bytes(b)
	if err != nil {
		return b
	}
	return out
}

// mimeLine makes a header value one line: whitespace runs (folding included) become one
// space, control characters go.
func mimeLine(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "\uFFFD"), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
}

// mimeCleanText normalises a plain text body: valid UTF-8, LF line ends, no control characters
// other than tab and newline, no trailing whitespace at line ends or at the end.
func mimeCleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n")
}

// HTML rendering.

// htmlSkipped are elements whose content is not text for the reader: scripts, styles and
// raw-text elements whose content the tokenizer returns unparsed (it would be markup).
var htmlSkipped = map[string]bool{
	"script": true, "style": true, "template": true, "noscript": true, "iframe": true,
	"noembed": true, "noframes": true, "object": true, "svg": true, "math": true, "title": true,
	"xmp": true, "plaintext": true,
}

// htmlInHead are the elements that may stay in <head>; any other start tag ends it, as in a
// browser, so a missing </head> does not hide the body.
var htmlInHead = map[string]bool{
	"title": true, "meta": true, "link": true, "style": true, "script": true, "base": true,
	"noscript": true, "template": true, "head": true,
}

// htmlBreaks is how many line breaks an element's start and end make: 2 leaves a blank line.
var htmlBreaks = map[string]int{
	"p": 2, "h1": 2, "h2": 2, "h3": 2, "h4": 2, "h5": 2, "h6": 2, "blockquote": 2, "pre": 2, "hr": 2,
	"table": 2, "ul": 1, "ol": 1, "dl": 1,
	"div": 1, "li": 1, "tr": 1, "dt": 1, "dd": 1, "section": 1, "article": 1, "header": 1,
	"footer": 1, "nav": 1, "aside": 1, "main": 1, "address": 1, "figure": 1, "figcaption": 1,
	"form": 1, "fieldset": 1, "center": 1, "caption": 1,
}

// htmlToText renders HTML as plain text with golang.org/x/net/html's tokenizer: the text of
// the document, entities decoded and whitespace collapsed, with line breaks for br and block
// elements, "- " before list items, and a link's address in parentheses after its text
// (http, https, mailto and tel only). Head, scripts, styles and the like are dropped, and no
// markup survives: only text tokens are written.
func htmlToText(r io.Reader) string {
	z := xhtml.NewTokenizer(r)
	var (
		out    htmlPlainText
		skip   int  // depth inside htmlSkipped elements
		inHead bool // inside <head>
		links  []htmlLink
	)
	for {
		tt := z.Next()
		switch tt {
		case xhtml.ErrorToken:
			return strings.TrimSpace(out.String())
		case xhtml.TextToken:
			if skip > 0 {
				continue
			}
			text := string(z.Text())
			if inHead {
				if strings.TrimSpace(text) == "" {
					continue
				}
				inHead = false // text ends an unclosed head, as in a browser
			}
			out.text(text)
		case xhtml.StartTagToken, xhtml.SelfClosingTagToken, xhtml.EndTagToken:
			nameBytes, hasAttr := z.TagName()
			name := string(nameBytes)
			start := tt != xhtml.EndTagToken
			if start && inHead && !htmlInHead[name] {
				inHead = false
			}
			if htmlSkipped[name] {
				switch {
				case tt == xhtml.StartTagToken:
					skip++
				case tt == xhtml.EndTagToken && skip > 0:
					skip--
				}
				continue
			}
			if skip > 0 {
				continue
			}
			switch {
			case name == "head":
				inHead = tt == xhtml.StartTagToken
			case name == "body":
				inHead = false
			case name == "br" && start:
				out.lineBreak()
			case name == "li" && start:
				out.breakLines(1)
				out.literal("- ")
			case name == "td" || name == "th":
				out.space = true
			case name == "pre":
				out.breakLines(2)
				if tt == xhtml.StartTagToken {
					out.pre++
				} else if tt == xhtml.EndTagToken && out.pre > 0 {
					out.pre--
				}
			case name == "a" && tt == xhtml.StartTagToken:
				href := ""
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					if string(k) == "href" {
						href = htmlLinkTarget(string(v))
					}
				}
				links = append(links, htmlLink{href: href, start: out.b.Len()})
			case name == "a" && tt == xhtml.EndTagToken && len(links) > 0:
				l := links[len(links)-1]
				links = links[:len(links)-1]
				if l.href != "" {
					text := strings.TrimSpace(out.b.String()[min(l.start, out.b.Len()):])
					if text != l.href && text != strings.TrimPrefix(strings.TrimPrefix(l.href, "mailto:"), "tel:") {
						out.literal(" (" + l.href + ")")
					}
				}
			default:
				if n := htmlBreaks[name]; n > 0 {
					out.breakLines(n)
				}
			}
		}
	}
}

type htmlLink struct {
	href  string
	start int // length of the output when the link opened
}

// htmlLinkTarget returns the address of a link worth showing, or "": only http, https, mailto
// and tel, which cannot run anything when the reader copies them.
func htmlLinkTarget(href string) string {
	href = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return -1
		}
		return r
	}, href)
	if len(href) > 2048 {
		return ""
	}
	lower := strings.ToLower(href)
	for _, scheme := range []string{"https://", "http://", "mailto:", "tel:"} {
		if strings.HasPrefix(lower, scheme) && len(href) > len(scheme) {
			return href
		}
	}
	return ""
}

// htmlPlainText accumulates rendered text. Whitespace and line breaks are pending until the next
// visible character, so runs collapse and nothing trails a line.
type htmlPlainText struct {
	b      strings.Builder
	space  bool // a space is pending
	breaks int  // line breaks pending (at most 2 are written)
	pre    int  // inside <pre>: whitespace is kept
}

// htmlInvisible are format characters that mail templates use as padding.
func htmlInvisible(r rune) bool {
	switch r {
	case '\u200b', '\u200c', '\ufeff', '\u00ad', '\u034f', '\u2060':
		return true
	}
	return false
}

func (p *htmlPlainText) text(s string) {
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\r' || htmlInvisible(r):
		case p.pre > 0 && r == '\n':
			p.breaks++
		case p.pre > 0 && (r == ' ' || r == '\t'):
			p.flush()
			p.b.WriteRune(r)
		case unicode.IsSpace(r):
			p.space = true
		case unicode.IsControl(r):
		default:
			p.flush()
			p.b.WriteRune(r)
		}
	}
}

// literal writes s as is, after any pending whitespace.
func (p *htmlPlainText) literal(s string) {
	p.flush()
	p.b.WriteString(s)
}

func (p *htmlPlainText) lineBreak() { p.breaks++ }

func (p *htmlPlainText) breakLines(n int) { p.breaks = max(p.breaks, n) }

func (p *htmlPlainText) flush() {
	if p.b.Len() > 0 {
		switch {
		case p.breaks > 0:
			p.b.WriteString("\n\n"[:min(p.breaks, 2)])
		case p.space && !strings.HasSuffix(p.b.String(), " "):
			p.b.WriteByte(' ')
		}
	}
	p.breaks, p.space = 0, false
}

func (p *htmlPlainText) String() string { return p.b.String() }
