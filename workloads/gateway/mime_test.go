package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/securetext/securetext/workloads/content"
)

// mimeCRLF writes a test message with the CRLF line ends of the wire.
func mimeCRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

func TestParseMail(t *testing.T) {
	tests := []struct {
		name      string
		raw       string
		want      content.Message
		messageID string
	}{
		{
			name: "plain",
			raw: `From: Front Desk <desk@clinic.example>
To: 2025550143@text.clinic.example
Subject: Lab results
Message-ID: <abc.123@clinic.example>
Content-Type: text/plain; charset=utf-8

Your A1C is 5.4.
Call us with questions.   

`,
			want:      content.Message{Subject: "Lab results", Text: "Your A1C is 5.4.\nCall us with questions."},
			messageID: "abc.123@clinic.example",
		},
		{
			name: "no content type, no message id",
			raw: `Subject: Hi

Plain by default.
`,
			want: content.Message{Subject: "Hi", Text: "Plain by default."},
		},
		{
			name: "RFC 2047 subject, folded",
			raw: `Subject: =?UTF-8?B?UsOpc3VsdGF0cw==?=
 =?ISO-8859-1?Q?_d=27analyse_caf=E9?=
Message-ID: <x@y>

Body
`,
			want:      content.Message{Subject: "Résultats d'analyse café", Text: "Body"},
			messageID: "x@y",
		},
		{
			name: "multipart/alternative prefers the plain part",
			raw: `Subject: Alt
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

Plain version.
--b1
Content-Type: text/html; charset=utf-8

<p>HTML <b>version</b>.</p>
--b1--
`,
			want: content.Message{Subject: "Alt", Text: "Plain version."},
		},
		{
			name: "multipart/alternative with an empty plain part uses the HTML",
			raw: `Content-Type: multipart/alternative; boundary=b1

--b1
Content-Type: text/plain

--b1
Content-Type: text/html

<p>Only here</p>
--b1--
`,
			want: content.Message{Text: "Only here"},
		},
		{
			name: "HTML only",
			raw: `Subject: HTML
Content-Type: text/html; charset=utf-8

<html><head><title>Secret title</title><style>p{color:red}</style></head>
<body><script>alert("x")</script><p>Dear patient,</p><p>Your results are <a href="https://portal.clinic.example/r">ready</a>.<br>Thanks&amp;regards</p></body></html>
`,
			want: content.Message{Subject: "HTML", Text: "Dear patient,\n\nYour results are ready (https://portal.clinic.example/r).\nThanks&regards"},
		},
		{
			name: "attachments",
			raw: `Subject: Files
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain

See attached.
--mix
Content-Type: application/pdf; name="ignored.pdf"
Content-Disposition: attachment; filename="a1c.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--mix
Content-Type: text/csv; charset=iso-8859-1
Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sultats.csv
Content-Transfer-Encoding: quoted-printable

caf=E9
--mix--
`,
			want: content.Message{Subject: "Files", Text: "See attached.", Attachments: []content.Attachment{
				{Name: "a1c.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.4\n")},
				{Name: "résultats.csv", ContentType: "text/csv; charset=utf-8", Data: []byte("café")},
			}},
		},
		{
			name: "quoted-printable",
			raw: `Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 au lait, a very long line that was wrapped by the mail program=
 at seventy-six characters.
`,
			want: content.Message{Text: "Café au lait, a very long line that was wrapped by the mail program at seventy-six characters."},
		},
		{
			name: "base64 text",
			raw: `Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

SGVsbG8sIHdvcmxkIOKclA0KU2Vjb25kIGxp
bmU=
`,
			want: content.Message{Text: "Hello, world ✔\nSecond line"},
		},
		{
			name: "ISO-8859-1 charset",
			raw:  "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nR\xe9sultats pr\xeats\r\n",
			want: content.Message{Text: "Résultats prêts"},
		},
		{
			name: "undeclared 8-bit text is read as Windows-1252",
			raw:  "Content-Type: text/plain\r\n\r\nDon\x92t forget \x96 caf\xe9\r\n",
			want: content.Message{Text: "Don’t forget – café"},
		},
		{
			name: "nested mixed with alternative and related inside",
			raw: `Subject: Nested
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8

Wound photo below.
--alt
Content-Type: multipart/related; boundary=rel

--rel
Content-Type: text/html; charset=utf-8

<p>Wound photo below.</p><img src="cid:img1">
--rel
Content-Type: image/png
Content-ID: <img1>
Content-Disposition: inline; filename=photo.png
Content-Transfer-Encoding: base64

iVBORw0K
--rel--
--alt--
--outer
Content-Type: application/pdf
Content-Disposition: attachment; filename="../../etc/plan.pdf"

%PDF
--outer--
`,
			want: content.Message{Subject: "Nested", Text: "Wound photo below.", Attachments: []content.Attachment{
				{Name: "photo.png", ContentType: "image/png", Data: []byte("\x89PNG\r\n")},
				{Name: "plan.pdf", ContentType: "application/pdf", Data: []byte("%PDF")},
			}},
		},
		{
			name: "several inline text parts are joined; an inline text part with a name is a file",
			raw: `Content-Type: multipart/mixed; boundary=m

--m
Content-Type: text/plain

First.
--m
Content-Type: text/html

<p>Second.</p>
--m
Content-Type: text/plain
Content-Disposition: inline; filename=notes.txt

file text
--m--
`,
			want: content.Message{Text: "First.\n\nSecond.", Attachments: []content.Attachment{
				{Name: "notes.txt", ContentType: "text/plain", Data: []byte("file text")},
			}},
		},
		{
			name: "signed: the signature is dropped",
			raw: `Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=s

--s
Content-Type: text/plain

Signed text.
--s
Content-Type: application/pkcs7-signature; name=smime.p7s
Content-Disposition: attachment; filename=smime.p7s
Content-Transfer-Encoding: base64

MIAGCSqGSIb3DQEHAqCAMIACAQE=
--s--
`,
			want: content.Message{Text: "Signed text."},
		},
		{
			name: "malformed Message-ID is kept as written",
			raw: `Message-ID: not-a-msg-id
Subject: x

y
`,
			want:      content.Message{Subject: "x", Text: "y"},
			messageID: "not-a-msg-id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, id, err := ParseMail(strings.NewReader(mimeCRLF(tt.raw)))
			if err != nil {
				t.Fatal(err)
			}
			if id != tt.messageID {
				t.Errorf("message id %q, want %q", id, tt.messageID)
			}
			if got.Subject != tt.want.Subject || got.Text != tt.want.Text {
				t.Errorf("subject %q text %q\nwant subject %q text %q", got.Subject, got.Text, tt.want.Subject, tt.want.Text)
			}
			if len(got.Attachments) != len(tt.want.Attachments) {
				t.Fatalf("%d attachments %+v, want %d", len(got.Attachments), got.Attachments, len(tt.want.Attachments))
			}
			for i, a := range got.Attachments {
				w := tt.want.Attachments[i]
				if a.Name != w.Name || a.ContentType != w.ContentType || !bytes.Equal(a.Data, w.Data) {
					t.Errorf("attachment %d: %q %q %q, want %q %q %q", i, a.Name, a.ContentType, a.Data, w.Name, w.ContentType, w.Data)
				}
			}
		})
	}
}

func TestParseMailRefusesMalformed(t *testing.T) {
	deep := "Content-Type: multipart/mixed; boundary=b0\n\n"
	for i := 1; i <= mimeMaxDepth+2; i++ {
		deep += fmt.Sprintf("--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i-1, i)
	}
	tests := []struct {
		name, raw, want string
	}{
		{"header line without colon", "Subject Lab results\n\nbody\n", "header"},
		{"missing closing boundary", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\ntext\n", "closing boundary"},
		{"multipart without boundary", "Content-Type: multipart/mixed\n\n--b\n\ntext\n--b--\n", "boundary"},
		{"corrupt base64", "Content-Type: application/pdf\nContent-Disposition: attachment\nContent-Transfer-Encoding: base64\n\n%%%%not base64!!\n", "base64"},
		{"unknown transfer encoding", "Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n", `Content-Transfer-Encoding "x-uuencode" is not supported`},
		{"unknown charset", "Content-Type: text/plain; charset=x-klingon\n\nqapla'\n", `charset "x-klingon" is not supported`},
		{"unreadable content type", "Content-Type: text/plain; charset\n\nbody\n", "Content-Type"},
		{"nested too deep", deep, "nested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseMail(strings.NewReader(mimeCRLF(tt.raw)))
			var refused *RefusedError
			if !errors.As(err, &refused) || refused.Reason != ReasonInvalid {
				t.Fatalf("err %v, want a refusal with reason %s", err, ReasonInvalid)
			}
			if !strings.HasPrefix(err.Error(), "malformed message: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("refusal %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestHTMLToText(t *testing.T) {
	tests := []struct{ name, html, want string }{
		{"paragraphs and entities", `<p>Hello&nbsp;<b>world</b> &amp; &eacute;t&eacute;</p><p>Second</p>`, "Hello world & été\n\nSecond"},
		{"whitespace collapses", "<div>  a\n\n   b\t c </div>", "a b c"},
		{"line breaks", "a<br>b<br/><br>c", "a\nb\n\nc"},
		{"headings and divs", "<h1>Title</h1><div>one</div><div>two</div>", "Title\n\none\ntwo"},
		{"lists", "<ul><li>One</li><li> Two </li></ul><p>after</p>", "- One\n- Two\n\nafter"},
		{"table rows", "<table><tr><td>Glucose</td><td>95</td></tr><tr><th>A1C</th><td>5.4</td></tr></table>", "Glucose 95\nA1C 5.4"},
		{"dropped elements", `<head><title>t</title><style>.x{}</style></head><script>var a = "<p>no</p>";</script><noscript><p>no</p></noscript><template><p>no</p></template>Yes<!-- comment -->`, "Yes"},
		{"unclosed head ends at the body", "<html><head><meta charset=utf-8><title>T</title><body><p>Hi</p>", "Hi"},
		{"unclosed head ends at a body element", "<head><link rel=x><p>Hi</p>", "Hi"},
		{"links", `<a href="https://x.example/a">portal</a>, <a href="https://x.example/b">https://x.example/b</a>, <a href="mailto:desk@clinic.example">desk@clinic.example</a>, <a href="tel:+12025550100">call</a>`,
			"portal (https://x.example/a), https://x.example/b, desk@clinic.example, call (tel:+12025550100)"},
		{"unsafe and relative links are not shown", `<a href="javascript:alert(1)">click</a> <a href="/r">rel</a> <a href="#top">top</a> <a href="data:text/html,x">d</a>`, "click rel top d"},
		{"escaped markup stays text", "&lt;b&gt;not bold&lt;/b&gt;", "<b>not bold</b>"},
		{"pre keeps spaces", "<pre>a   b\n  c</pre>after", "a   b\n  c\n\nafter"},
		{"invisible padding", "Hi\u200b&zwnj;\u00ad there", "Hi there"},
		{"unterminated tag", "text <b", "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := htmlToText(strings.NewReader(tt.html)); got != tt.want {
				t.Errorf("htmlToText(%q)\n = %q\nwant %q", tt.html, got, tt.want)
			}
		})
	}
}

func TestHTMLToTextKeepsNoMarkup(t *testing.T) {
	// Whatever the input, the output has no tag of the input: only text tokens are written.
	inputs := []string{
		`<scr<script>ipt>alert(1)</script>`,
		`<img src=x onerror=alert(1)>`,
		`<svg><script>alert(1)</script></svg><iframe src="https://evil.example"></iframe>`,
		`<style>body{}</style><<b>b</b>>`,
		`<a href="javascript:alert(1)"><img src=x></a>`,
	}
	for _, in := range inputs {
		out := htmlToText(strings.NewReader(in))
		for _, tag := range []string{"<script", "<img", "<svg", "<iframe", "<style", "onerror", "javascript:"} {
			if strings.Contains(out, tag) {
				t.Errorf("htmlToText(%q) = %q keeps %q", in, out, tag)
			}
		}
	}
}

// TestAttachmentNameKeepsExtension: a file name is cut to its last path element, and keeps an
// extension that fits the media type it is served as (content.SafeName): "../../etc/passwd"
// sent as a PDF is stored as "passwd.pdf", not as "passwd".
func TestAttachmentNameKeepsExtension(t *testing.T) {
	raw := "Subject: Files\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
		"--m\r\nContent-Type: text/plain\r\n\r\nSee the files.\r\n" +
		"--m\r\nContent-Type: application/pdf; name=\"../../etc/passwd\"\r\n\r\n%PDF\r\n" +
		"--m\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"C:\\\\Users\\\\dr\\\\scan 1.PNG\"\r\n\r\npng\r\n" +
		"--m\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"bad\x1bname.exe\"\r\n\r\njpg\r\n" +
		"--m--\r\n"
	msg, _, err := ParseMail(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range msg.Attachments {
		names = append(names, a.Name)
	}
	if want := []string{"passwd.pdf", "scan 1.PNG", "badname.exe.jpg"}; !slices.Equal(names, want) {
		t.Errorf("attachment names %q, want %q", names, want)
	}
}

func TestSMTPIdempotency(t *testing.T) {
	raw := []byte("Message-ID: <a@b>\r\n\r\nhi\r\n")
	k1, h1 := smtpIdempotency("a@b", "+12025550143", raw)
	k2, h2 := smtpIdempotency("a@b", "+12025550143", raw)
	if k1 != k2 || h1 != h2 {
		t.Fatal("the same message and recipient give different keys")
	}
	if len(k1) != 64 || strings.Contains(k1, "2025550143") {
		t.Errorf("key %q is not a hex SHA-256", k1)
	}
	k3, h3 := smtpIdempotency("a@b", "+12025550144", raw)
	if k3 == k1 || h3 == h1 {
		t.Error("another recipient gives the same key or hash")
	}
	_, h4 := smtpIdempotency("a@b", "+12025550143", append(raw, 'x'))
	if h4 == h1 {
		t.Error("other bytes give the same request hash")
	}
	if reflect.DeepEqual(h1, [32]byte{}) {
		t.Error("empty request hash")
	}
}
