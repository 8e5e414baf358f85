package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/phone"
)

// The fuzz targets of the gateway's parsers of outside input: mail (ParseMail), the REST API's
// JSON (readSubmission), and the senders file (LoadSenders). The SMTP command arguments are
// fuzzed in smtp_fuzz_test.go. Each target checks properties of what the parser returns, and
// its seeds run as ordinary tests.

// fuzzMailSeeds are messages as mail programs and EHRs write them, with the usual damage.
var fuzzMailSeeds = []string{
	"From: Front Desk <desk@clinic.example>\nTo: 2025550143@text.clinic.example\nSubject: Lab results\n" +
		"Message-ID: <abc.123@clinic.example>\nContent-Type: text/plain; charset=utf-8\n\nYour A1C is 5.4.\nCall us.   \n",
	"Subject: =?UTF-8?B?UsOpc3VsdGF0cw==?=\n =?ISO-8859-1?Q?_d=27analyse_caf=E9?=\nMessage-ID: <x@y>\n\nBody\n",
	"Subject: Alt\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\n" +
		"Content-Type: text/plain; charset=us-ascii\n\nPlain version.\n--b1\nContent-Type: text/html; charset=utf-8\n\n" +
		"<p>HTML <b>version</b>.</p>\n--b1--\n",
	"Subject: HTML only\nContent-Type: text/html\n\n<html><head><title>t</title><style>p{}</style></head><body>" +
		"<p>Hello&nbsp;<a href=\"https://clinic.example/portal\">portal</a></p><ul><li>one<li>two</ul>" +
		"<pre>  kept\n  lines</pre><script>alert(1)</script><a href=\"javascript:alert(1)\">x</a></body></html>\n",
	"Subject: Files\nContent-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nSee attached.\n--m\n" +
		"Content-Type: application/pdf; name=\"../../etc/passwd\"\nContent-Disposition: attachment; filename=\"..\\\\lab\\\\result.pdf\"\n" +
		"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--m\nContent-Type: image/png\nContent-Disposition: inline; " +
		"filename*=UTF-8''%E2%80%AEgnp.exe\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--m--\n",
	"Subject: Latin-1\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n" +
		"Caf=E9 =\n au lait=0D=0A\n",
	"Subject: Undeclared 8-bit\n\nCaf\xe9 \x93quoted\x94\r\n",
	"Content-Type: text/plain; charset=x-unknown\n\nbody\n",
	"Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbody\n",
	"Content-Type: multipart/signed; boundary=s; protocol=\"application/pkcs7-signature\"\n\n--s\nContent-Type: text/plain\n\n" +
		"Signed text.\n--s\nContent-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\nMIAGCSqG\n--s--\n",
	"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/alternative; boundary=b\n\n--b\n" +
		"Content-Type: text/html\n\n<p>Nested</p><img src=\"cid:1\">\n--b\nContent-Type: multipart/related; boundary=c\n\n--c\n" +
		"Content-Type: text/html\n\n<b>rel</b>\n--c\nContent-Type: image/gif\nContent-ID: <1>\n\nGIF89a\n--c--\n--b--\n--a--\n",
	"Content-Type: multipart/mixed; boundary=broken\n\n--broken\nContent-Type: text/plain\n\nno closing boundary\n",
	"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not base64!!!\n",
	"Content-Type: text/csv; charset=windows-1252\nContent-Disposition: attachment; filename=\"r\xe9sum\xe9.csv\"\n\na;b\n",
	"Subject: \x00\x1b[31mred\r\n\tfolded\nContent-Type: text/plain; charset=utf-8\n\nline\x00one\x07\r\r\nline two\t \n",
	"no header at all",
	"",
}

// FuzzParseMail checks that any message either is refused as malformed, in words that fit an
// SMTP reply, or gives content that is safe to store and show:
//   - the subject is one line, the text has LF line ends, and both are valid UTF-8 without
//     control characters (other than newline and tab in the text);
//   - an attachment name is a label: valid UTF-8, no path separator, no control character,
//     not "." or "..", at most 255 bytes; its media type parses;
//   - the content encodes into parts and decodes back unchanged, as storing and opening it
//     does, and parsing is deterministic.
func FuzzParseMail(f *testing.F) {
	for _, s := range fuzzMailSeeds {
		f.Add([]byte(s))
		if crlf := strings.ReplaceAll(s, "\n", "\r\n"); crlf != s {
			f.Add([]byte(crlf))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msg, messageID, err := ParseMail(bytes.NewReader(raw))
		if err != nil {
			var refused *RefusedError
			if !errors.As(err, &refused) || refused.Reason != ReasonInvalid {
				t.Fatalf("ParseMail error %v is not a refusal with reason %q", err, ReasonInvalid)
			}
			if !utf8.ValidString(refused.Detail) || strings.ContainsAny(refused.Detail, "\r\n") {
				t.Fatalf("refusal %q is not one line of UTF-8; it is the text of an SMTP reply", refused.Detail)
			}
			return
		}
		checkOneLine(t, "subject", msg.Subject)
		if !utf8.ValidString(msg.Text) {
			t.Fatalf("text %q is not valid UTF-8", msg.Text)
		}
		for _, r := range msg.Text {
			if r != '\n' && r != '\t' && unicode.IsControl(r) {
				t.Fatalf("text %q holds the control character %U", msg.Text, r)
			}
		}
		for i, a := range msg.Attachments {
			checkAttachmentName(t, a.Name)
			if _, _, err := mime.ParseMediaType(a.ContentType); err != nil {
				t.Fatalf("attachment %d: media type %q does not parse: %v", i, a.ContentType, err)
			}
		}
		parts, err := msg.Parts()
		if err != nil {
			t.Fatalf("Parts: %v", err)
		}
		back, err := content.Decode(parts)
		if err != nil {
			t.Fatalf("Decode(Parts()): %v", err)
		}
		if !sameMessage(back, msg) {
			t.Fatalf("stored content reads back as %+v, want %+v", back, msg)
		}
		again, againID, err := ParseMail(bytes.NewReader(raw))
		if err != nil || againID != messageID || !sameMessage(again, msg) {
			t.Fatalf("parsing the same message twice gave %+v, %q, %v; then %+v, %q", msg, messageID, nil, again, againID)
		}
	})
}

func checkOneLine(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%s %q is not valid UTF-8", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			t.Fatalf("%s %q holds the control character %U", what, s, r)
		}
	}
}

func checkAttachmentName(t *testing.T, name string) {
	t.Helper()
	checkOneLine(t, "attachment name", name)
	switch {
	case strings.ContainsAny(name, `/\`):
		t.Fatalf("attachment name %q holds a path separator", name)
	case name == "." || name == "..":
		t.Fatalf("attachment name %q names a directory", name)
	case len(name) > maxAttachmentName:
		t.Fatalf("attachment name is %d bytes, more than %d", len(name), maxAttachmentName)
	}
}

// sameMessage compares messages, taking nil and empty byte slices and lists as equal.
func sameMessage(a, b content.Message) bool {
	if a.Subject != b.Subject || a.Text != b.Text || len(a.Attachments) != len(b.Attachments) {
		return false
	}
	for i := range a.Attachments {
		x, y := a.Attachments[i], b.Attachments[i]
		if x.Name != y.Name || x.ContentType != y.ContentType || !bytes.Equal(x.Data, y.Data) {
			return false
		}
	}
	return true
}

// fuzzDigitRun finds digit sequences in an API refusal: a reason may name an area code or a
// digit count, never four digits in a row of anyone's number.
var fuzzDigitRun = regexp.MustCompile(`[0-9]{4,}`)

// FuzzAPIRequest checks how the REST API reads a POST /v1/messages request (its Content-Type,
// Idempotency-Key and JSON body):
//   - a refusal is a problem document of status 400, 413, 415 or 422 that encodes as JSON, and
//     a problem with the recipient never repeats the number;
//   - an accepted request has an E.164 recipient that normalises to itself, text that is valid
//     UTF-8, a body or an attachment, attachments with bytes and a media type that parses, an
//     expiry within the limits, and a request hash when it has an idempotency key;
//   - the accepted submission, written again as canonical JSON, reads back the same with the
//     same request hash, so a retry written differently replays instead of conflicting.
func FuzzAPIRequest(f *testing.F) {
	seeds := []struct{ body, contentType, key string }{
		{`{"to":"+1 (202) 555-0143","subject":"Lab results","body":"Your results are ready."}`, "application/json", ""},
		{`{"to":"2025550143","body":"Hi","expires_in_seconds":3600}`, "application/json; charset=utf-8", "4b8f3c1e-7d2a-4a51-9d0e-3f6b2c8a9e10"},
		{`{"to":"+442079460958","attachments":[{"filename":"lab.pdf","content_type":"application/pdf","content_base64":"JVBERi0xLjQK"}]}`, "application/json", "k1"},
		{`{"to":"202-555-0143","body":"x","attachments":[{"filename":"../a\\b.txt","content_type":"text/plain; charset=\"UTF-8\"","content_base64":"aGVsbG8="}]}`, "application/json", ""},
		{`{"to":"2114367789","body":"service code"}`, "application/json", ""},
		{`{"TO":"2025550143","body":"case"}`, "application/json", ""},
		{`{"to":"2025550143","body":"a"} {"to":"2025550143"}`, "application/json", ""},
		{`{"to":"2025550143","body":"\ud800 lone surrogate \u0000"}`, "application/json", ""},
		{`{"to":"2025550143","body":"x","expires_in_seconds":9223372036854775807}`, "application/json", ""},
		{`{"to":"2025550143","body":"x","expires_in_seconds":-1}`, "application/json", ""},
		{`{"to":"2025550143","body":"x","expires_in_seconds":1.5}`, "application/json", ""},
		{`{"to":"2025550143","attachments":[{"content_type":"","content_base64":""}]}`, "application/json", ""},
		{`{"to":"2025550143","attachments":[{"content_type":"image/png","content_base64":"not base64"}]}`, "application/json", ""},
		{`{"to":"2025550143","attachments":{}}`, "application/json", ""},
		{`[1,2,3]`, "application/json", ""},
		{`{"to":`, "application/json", ""},
		{``, "application/json", ""},
		{`{"to":"2025550143","body":"x"}`, "text/plain", ""},
		{`{"to":"2025550143","body":"x"}`, "application/json; charset=latin1", ""},
		{`{"to":"2025550143","body":"x"}`, "application/json", "bad\x7fkey"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.contentType, s.key)
	}
	a := NewAPI(APIConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &Intake{}, nil)
	f.Fuzz(func(t *testing.T, body []byte, contentType, key string) {
		sub, p := fuzzReadSubmission(a, body, contentType, key)
		if p != nil {
			checkProblem(t, p)
			return
		}
		checkSubmission(t, a, sub, key)

		// The same submission, written as canonical JSON.
		type att struct {
			Filename      string `json:"filename"`
			ContentType   string `json:"content_type"`
			ContentBase64 string `json:"content_base64"`
		}
		canonical := struct {
			To          string `json:"to"`
			Subject     string `json:"subject,omitempty"`
			Body        string `json:"body"`
			Attachments []att  `json:"attachments,omitempty"`
			ExpiresIn   *int64 `json:"expires_in_seconds,omitempty"`
		}{To: sub.To, Subject: sub.Content.Subject, Body: sub.Content.Text}
		for _, at := range sub.Content.Attachments {
			canonical.Attachments = append(canonical.Attachments, att{at.Name, at.ContentType, base64.StdEncoding.EncodeToString(at.Data)})
		}
		if sub.ExpiresIn != 0 {
			s := int64(sub.ExpiresIn / time.Second)
			canonical.ExpiresIn = &s
		}
		again, err := json.Marshal(canonical)
		if err != nil {
			t.Fatal(err)
		}
		sub2, p := fuzzReadSubmission(a, again, "application/json", key)
		if p != nil {
			t.Fatalf("the accepted request written as %s is refused: %d %s %+v", again, p.Status, p.Detail, p.Errors)
		}
		if !reflect.DeepEqual(sub2, sub) {
			t.Fatalf("the accepted request written as %s reads as %+v, want %+v", again, sub2, sub)
		}
	})
}

func fuzzReadSubmission(a *API, body []byte, contentType, key string) (Submission, *problem) {
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	return a.readSubmission(httptest.NewRecorder(), r, "ehr")
}

func checkProblem(t *testing.T, p *problem) {
	t.Helper()
	switch p.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
	default:
		t.Fatalf("a request is refused with status %d: %+v", p.Status, p)
	}
	if !strings.HasPrefix(p.Type, problemTypeBase) || p.Detail == "" || !utf8.ValidString(p.Detail) {
		t.Fatalf("problem %+v lacks a type or a detail", p)
	}
	w := httptest.NewRecorder()
	writeProblem(w, p)
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || w.Code != p.Status {
		t.Fatalf("problem document %q (status %d) does not decode: %v", w.Body.String(), w.Code, err)
	}
	for _, fp := range p.Errors {
		if fp.Field != "to" {
			continue
		}
		for _, run := range fuzzDigitRun.FindAllString(fp.Reason+" "+p.Detail, -1) {
			if run != exampleRecipient {
				t.Fatalf("the problem with the recipient %q / %q holds the digits %s; it must not repeat the number", p.Detail, fp.Reason, run)
			}
		}
	}
}

// exampleRecipient is the fiction-range number refusals give as an example.
const exampleRecipient = "2025550143"

func checkSubmission(t *testing.T, a *API, sub Submission, key string) {
	t.Helper()
	if again, err := phone.NormalizeAPI(sub.To, a.cfg.Region); err != nil || again != sub.To || !strings.HasPrefix(sub.To, "+") {
		t.Fatalf("accepted recipient %q normalises to %q, %v", sub.To, again, err)
	}
	if !utf8.ValidString(sub.Content.Subject) || !utf8.ValidString(sub.Content.Text) {
		t.Fatalf("accepted text is not valid UTF-8: %q, %q", sub.Content.Subject, sub.Content.Text)
	}
	if strings.TrimSpace(sub.Content.Text) == "" && len(sub.Content.Attachments) == 0 {
		t.Fatal("accepted a message with neither text nor attachments")
	}
	for i, at := range sub.Content.Attachments {
		if len(at.Data) == 0 {
			t.Fatalf("accepted attachment %d without bytes", i)
		}
		if _, _, err := mime.ParseMediaType(at.ContentType); err != nil || at.ContentType == "" {
			t.Fatalf("accepted attachment %d with media type %q: %v", i, at.ContentType, err)
		}
		if !utf8.ValidString(at.Name) {
			t.Fatalf("accepted attachment %d with a name that is not UTF-8: %q", i, at.Name)
		}
	}
	if sub.ExpiresIn != 0 && (sub.ExpiresIn < time.Minute || sub.ExpiresIn > a.maxExpiry()) {
		t.Fatalf("accepted expiry %s", sub.ExpiresIn)
	}
	switch {
	case sub.IdempotencyKey != key:
		t.Fatalf("idempotency key %q became %q", key, sub.IdempotencyKey)
	case key != "" && sub.RequestHash != requestHash(sub):
		t.Fatal("the request hash does not cover the submission")
	case key == "" && sub.RequestHash != [32]byte{}:
		t.Fatal("a request hash without an idempotency key")
	}
}

// fuzzPasswordHash is an argon2id PHC string at the minimum cost LoadSenders accepts; it is
// only parsed, never verified, here.
const fuzzPasswordHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// FuzzLoadSenders checks that any senders file either loads or is refused with an error
// naming the file, and that a loaded one holds exactly the senders it lists, each with a valid
// id, and loads the same when written back as JSON (the operator renders it that way).
func FuzzLoadSenders(f *testing.F) {
	keyHash := "sha256:" + strings.Repeat("ab", 32)
	seeds := []string{
		"senders:\n- id: ehr\n  smtpUsername: ehr@clinic.example\n  smtpPasswordHash: " + fuzzPasswordHash +
			"\n  apiKeyHashes:\n  - " + keyHash + "\n- id: relay\n",
		`{"senders":[{"id":"ehr","apiKeyHashes":["` + keyHash + `"]},{"id":"script"}]}`,
		"senders: []\n",
		"senders:\n- id: a\n- id: a\n",
		"senders:\n- id: \"with space\"\n",
		"senders:\n- id: ehr\n  smtpUsername: u\n",
		"senders:\n- id: ehr\n  smtpUsername: u\n  smtpPasswordHash: $argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA\n",
		"senders:\n- id: ehr\n  apiKeyHashes: [\"sha256:zz\", \"md5:00\"]\n",
		"senders:\n- id: ehr\n  apiKeyHashes: [\"" + keyHash + "\"]\n- id: other\n  apiKeyHashes: [\"" + keyHash + "\"]\n",
		"senders:\n- id: ehr\n  unknown: field\n",
		"senders: &a [*a]\n",
		"senders:\n- id: 12\n- id: true\n- id: ~\n",
		"- not a mapping\n",
		"senders:\n\t- id: tab\n",
		"senders: []\ncompliance:\n- id: legal-1\n  apiKeyHashes: [\"" + keyHash + "\"]\n",
		"senders:\n- id: ehr\n  apiKeyHashes: [\"" + keyHash + "\"]\ncompliance:\n- id: legal-1\n  apiKeyHashes: [\"" + keyHash + "\"]\n",
		"senders:\n- id: ehr\ncompliance:\n- id: ehr\n  apiKeyHashes: [\"" + keyHash + "\"]\n",
		"senders: []\ncompliance:\n- id: legal-1\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "senders.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := LoadSenders(path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "senders file ") {
				t.Fatalf("LoadSenders error %q does not name the senders file", err)
			}
			return
		}
		var file SendersFile
		if err := yaml.Unmarshal(data, &file); err != nil {
			t.Fatalf("LoadSenders accepted a file that does not unmarshal: %v", err)
		}
		for _, snd := range file.Senders {
			if snd.ID == "" || strings.ContainsAny(snd.ID, " \t\r\n") || !s.Has(snd.ID) {
				t.Fatalf("loaded sender id %q is not a usable id", snd.ID)
			}
		}
		if s.Has("") || s.Has("not-a-listed-sender\x00") {
			t.Fatal("Has reports a sender the file does not list")
		}
		if _, err := s.APIKeyLogin(APIKeyPrefix + "guess"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("an unknown API key logs in: %v", err)
		}
		if _, err := s.ComplianceKeyLogin(ComplianceKeyPrefix + "guess"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("an unknown compliance key logs in: %v", err)
		}
		for _, acc := range file.Compliance {
			if !discovery.ValidWord(acc.ID) || s.Has(acc.ID) || len(acc.APIKeyHashes) == 0 {
				t.Fatalf("loaded compliance account %q is not a usable account apart from the senders", acc.ID)
			}
		}
		asJSON, err := json.Marshal(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, asJSON, 0o600); err != nil {
			t.Fatal(err)
		}
		s2, err := LoadSenders(path)
		if err != nil {
			t.Fatalf("the loaded senders written back as %s do not load: %v", asJSON, err)
		}
		for _, snd := range file.Senders {
			if !s2.Has(snd.ID) {
				t.Fatalf("sender %q is lost when written back as JSON", snd.ID)
			}
		}
	})
}
