package sms

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The fuzz targets of the SMS providers' callbacks: what a gateway or Twilio POSTs, and the
// signatures that must stand in front of it. A callback is outside input twice over: from the
// network, and from a patient's phone (an inbound text).

// fuzzEvents records what a callback handler hands on. The reply to an inbound text echoes
// the text with characters that need escaping in JSON and XML, so that the targets see that
// no reply can break out of the answer it is written into.
type fuzzEvents struct {
	statuses []StatusUpdate
	inbound  []Inbound
	replyTo  string // the text of the last inbound callback, set by the target
}

func (e *fuzzEvents) Status(_ context.Context, u StatusUpdate) error {
	e.statuses = append(e.statuses, u)
	return nil
}

func (e *fuzzEvents) Inbound(_ context.Context, in Inbound) (string, error) {
	e.inbound = append(e.inbound, in)
	return fuzzReply(e.replyTo), nil
}

func fuzzReply(text string) string {
	if text == "" {
		return ""
	}
	return `<Reply a="&amp;">` + text
}

var fuzzKeywords = map[Keyword]bool{KeywordNone: true, KeywordStop: true, KeywordStart: true, KeywordHelp: true}

var fuzzStatuses = map[DeliveryStatus]bool{StatusSent: true, StatusDelivered: true, StatusUndelivered: true, StatusFailed: true}

// checkEvents checks what a handler passed on: at most one event, and only well-formed values.
// A provider's id is stored and looked up, so it must be printable ASCII (providerID) whatever
// the provider.
func checkEvents(t *testing.T, ev *fuzzEvents, text string) {
	t.Helper()
	if len(ev.statuses)+len(ev.inbound) > 1 {
		t.Fatalf("one callback gave %d status updates and %d inbound texts", len(ev.statuses), len(ev.inbound))
	}
	for _, u := range ev.statuses {
		if !providerID.MatchString(u.ProviderID) {
			t.Fatalf("status update with provider id %q", u.ProviderID)
		}
		if !fuzzStatuses[u.Status] {
			t.Fatalf("status update with status %q", u.Status)
		}
		if u.ErrorCode != "" && !CodePattern.MatchString(u.ErrorCode) {
			t.Fatalf("status update with error code %q, which does not match CodePattern", u.ErrorCode)
		}
	}
	for _, in := range ev.inbound {
		if !e164.MatchString(in.From) {
			t.Fatalf("inbound text from %q, not E.164", in.From)
		}
		if !providerID.MatchString(in.ProviderID) {
			t.Fatalf("inbound text with provider id %q", in.ProviderID)
		}
		if !fuzzKeywords[in.Keyword] || in.Keyword != ParseKeyword(text) {
			t.Fatalf("inbound text %q read as keyword %q, want %q", text, in.Keyword, ParseKeyword(text))
		}
	}
}

// FuzzWebhookCallback posts a JSON callback body to the webhook provider's handler, signed
// correctly, then with one byte of the body changed, then signed too long ago, and checks:
//   - a signed callback is answered 200, 204 or 400, and hands on at most one event, with an
//     id, status and error code of the documented forms, or an E.164 sender and the keyword
//     ParseKeyword reads;
//   - an inbound answer is JSON whose reply is exactly what Events returned;
//   - a changed body or a stale signature is refused with 403 and hands on nothing.
func FuzzWebhookCallback(f *testing.F) {
	seeds := []string{
		`{"type":"status","id":"gw-1","status":"delivered"}`,
		`{"type":"status","id":"gw-2","status":"undelivered","error_code":"carrier_blocked"}`,
		`{"type":"status","id":"gw-3","status":"failed","error_code":"has spaces and more than sixty-four characters of explanation in it"}`,
		`{"type":"status","id":"gw-4","status":"queued"}`,
		`{"type":"inbound","from":"+12025550143","text":"STOP","id":"gw-5"}`,
		`{"type":"inbound","from":"+12025550143","text":" Stop all! ","id":"gw-6"}`,
		`{"type":"inbound","from":"+12025550143","text":"my results? </Message><Message>x","id":"gw-7"}`,
		`{"type":"inbound","from":"2025550143","text":"START","id":"gw-8"}`,
		`{"type":"inbound","from":"+12025550143","text":"help","id":""}`,
		`{"type":"other","id":"gw-9"}`,
		`{"type":"status","id":"gw\u0000","status":"sent"}`,
		`{"type":"status","ID":"gw-10","Status":"sent"}`,
		`[]`, `null`, ``, `{`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint16(7))
	}
	w, err := NewWebhook(WebhookConfig{URL: "https://gw.example/send", Secret: fuzzSecret,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1767225600, 0)
	w.now = func() time.Time { return now }
	f.Fuzz(func(t *testing.T, body []byte, flip uint16) {
		var cb webhookCallback
		_ = json.Unmarshal(body, &cb)
		post := func(b []byte, signedAt time.Time) (*httptest.ResponseRecorder, *fuzzEvents) {
			ev := &fuzzEvents{replyTo: cb.Text}
			r := httptest.NewRequest(http.MethodPost, "/sms/webhook", bytes.NewReader(b))
			r.Header.Set(WebhookSignatureHeader, SignWebhook(fuzzSecret, signedAt, body))
			rec := httptest.NewRecorder()
			w.Handler(ev).ServeHTTP(rec, r)
			return rec, ev
		}

		rec, ev := post(body, now)
		switch rec.Code {
		case http.StatusOK, http.StatusNoContent, http.StatusBadRequest:
		default:
			t.Fatalf("signed callback %q answered %d: %s", body, rec.Code, rec.Body)
		}
		checkEvents(t, ev, cb.Text)
		if rec.Code == http.StatusOK {
			var answer struct{ Reply string }
			if len(ev.inbound) != 1 || json.Unmarshal(rec.Body.Bytes(), &answer) != nil || answer.Reply != fuzzReply(cb.Text) {
				t.Fatalf("inbound callback %q answered %q", body, rec.Body)
			}
		}

		if len(body) > 0 {
			changed := bytes.Clone(body)
			changed[int(flip)%len(changed)] ^= byte(flip>>8) | 1
			if rec, ev := post(changed, now); rec.Code != http.StatusForbidden || len(ev.statuses)+len(ev.inbound) > 0 {
				t.Fatalf("callback changed after signing to %q answered %d", changed, rec.Code)
			}
		}
		if rec, ev := post(body, now.Add(-WebhookTolerance-time.Second)); rec.Code != http.StatusForbidden || len(ev.statuses)+len(ev.inbound) > 0 {
			t.Fatalf("callback signed too long ago answered %d", rec.Code)
		}
	})
}

var fuzzSecret = []byte("fuzz-secret-fuzz-secret-fuzz-sec")

// FuzzVerifyWebhook checks VerifyWebhook against any header: it accepts a header only when one
// of its v1 values is the HMAC of the body under its timestamp, within the tolerance; and a
// header SignWebhook wrote verifies for its body and no other.
func FuzzVerifyWebhook(f *testing.F) {
	now := time.Unix(1767225600, 0)
	body := []byte(`{"type":"status","id":"gw-1","status":"sent"}`)
	good := SignWebhook(fuzzSecret, now, body)
	f.Add(good, body)
	f.Add("t=1767225600,v1="+strings.Repeat("00", 32)+","+strings.TrimPrefix(good, "t=1767225600,"), body)
	f.Add(strings.ToUpper(good), body)
	f.Add(" t=1767225600 , v1=abc", body)
	f.Add("t=+1767225600,v1="+strings.Repeat("ab", 32), body)
	f.Add("t=1767225600,t=1,v1="+strings.Repeat("ab", 32), body)
	f.Add("v1=,t=", []byte{})
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := VerifyWebhook(fuzzSecret, header, body, now)
		if err == nil {
			var ts string
			var macs [][]byte
			for part := range strings.SplitSeq(header, ",") {
				k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
				switch k {
				case "t":
					ts = v
				case "v1":
					mac, _ := hex.DecodeString(v)
					macs = append(macs, mac)
				}
			}
			want := webhookMAC(fuzzSecret, ts, body)
			signed := false
			for _, mac := range macs {
				signed = signed || hmac.Equal(mac, want)
			}
			if !signed {
				t.Fatalf("header %q verifies for %q without the body's HMAC", header, body)
			}
		}

		sig := SignWebhook(fuzzSecret, now, body)
		if err := VerifyWebhook(fuzzSecret, sig, body, now.Add(WebhookTolerance)); err != nil {
			t.Fatalf("a signature SignWebhook wrote does not verify: %v", err)
		}
		if err := VerifyWebhook(fuzzSecret, sig, append(bytes.Clone(body), '\n'), now); err == nil {
			t.Fatal("a signature verifies for another body")
		}
		if err := VerifyWebhook([]byte("another-secret-another-secret-an"), sig, body, now); err == nil {
			t.Fatal("a signature verifies under another secret")
		}
	})
}

// FuzzTwilioCallback posts a form body to the Twilio provider's handler, at /status or
// /inbound, signed as Twilio signs it, and checks:
//   - a signed callback is answered 200, 204 or 400; a body that is not a form is refused with
//     403, and a repeated parameter (which the signature covers only once) is never accepted;
//   - what is handed on has the documented forms (see checkEvents);
//   - the TwiML answer to an inbound text is well-formed XML whose Message is exactly the
//     reply Events returned, with characters XML cannot hold replaced;
//   - a body changed after signing is refused, unless it reads as the same parameters.
func FuzzTwilioCallback(f *testing.F) {
	seeds := []struct {
		form    string
		inbound bool
	}{
		{"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=delivered&AccountSid=AC0123", false},
		{"MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003", false},
		{"MessageSid=SM1&MessageStatus=canceled", false},
		{"MessageSid=SM1&MessageStatus=failed&ErrorCode=%3Cscript%3E", false},
		{"MessageSid=SM1&MessageStatus=sending", false},
		{"MessageStatus=sent", false},
		{"MessageSid=SM1&MessageSid=SM2&MessageStatus=sent", false},
		{"From=%2B12025550143&Body=STOP&MessageSid=SM3&To=%2B12025550100", true},
		{"From=%2B12025550143&Body=+stop+all!+&MessageSid=SM3", true},
		{"From=%2B12025550143&Body=%3C%2FMessage%3E%3CRedirect%3Ehttps%3A%2F%2Fevil%3C%2FRedirect%3E%00%EF%BF%BE&MessageSid=SM4", true},
		{"From=2025550143&Body=hi&MessageSid=SM5", true},
		{"From=%2B12025550143&Body=%ZZ&MessageSid=SM6", true},
		{"From=%2B12025550143;Body=x", true},
		{"", true},
	}
	for _, s := range seeds {
		f.Add(s.form, s.inbound, uint16(3))
	}
	const base = "https://text.example.org/sms/twilio"
	tw, err := NewTwilio(TwilioConfig{
		AccountSID: "AC0123456789abcdef0123456789abcdef", AuthToken: "0123456789abcdef0123456789abcdef",
		From: "+12025550100", CallbackBaseURL: base, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, form string, inbound bool, flip uint16) {
		path := "/sms/twilio/status"
		if inbound {
			path = "/sms/twilio/inbound"
		}
		params, parseErr := url.ParseQuery(form)
		post := func(body string, signed url.Values) (*httptest.ResponseRecorder, *fuzzEvents) {
			ev := &fuzzEvents{replyTo: params.Get("Body")}
			r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("X-Twilio-Signature", fuzzTwilioSignature(tw.cfg.AuthToken, base+path[len("/sms/twilio"):], signed))
			rec := httptest.NewRecorder()
			tw.Handler(ev).ServeHTTP(rec, r)
			return rec, ev
		}

		rec, ev := post(form, params)
		switch {
		case parseErr != nil:
			if rec.Code != http.StatusForbidden {
				t.Fatalf("body %q, which is not a form, answered %d", form, rec.Code)
			}
			return
		case rec.Code != http.StatusOK && rec.Code != http.StatusNoContent && rec.Code != http.StatusBadRequest:
			t.Fatalf("signed callback %q answered %d: %s", form, rec.Code, rec.Body)
		}
		for name, values := range params {
			if len(values) > 1 && rec.Code != http.StatusBadRequest {
				t.Fatalf("callback %q repeats %s and answered %d", form, name, rec.Code)
			}
		}
		checkEvents(t, ev, params.Get("Body"))
		if rec.Code == http.StatusOK {
			if !inbound || len(ev.inbound) != 1 {
				t.Fatalf("callback %q answered 200 without an inbound text", form)
			}
			got, err := twimlMessage(rec.Body.Bytes())
			if want := xmlText(fuzzReply(params.Get("Body"))); err != nil || got != want {
				t.Fatalf("TwiML answer %q reads as %q, %v; want the reply %q", rec.Body, got, err, want)
			}
		}

		if len(form) > 0 {
			b := []byte(form)
			b[int(flip)%len(b)] ^= byte(flip>>8) | 1
			changed := string(b)
			rec, ev := post(changed, params)
			if rec.Code == http.StatusForbidden {
				return
			}
			same, err := url.ParseQuery(changed)
			if err != nil || fuzzTwilioSignature("k", base, same) != fuzzTwilioSignature("k", base, params) {
				t.Fatalf("callback changed after signing to %q answered %d and handed on %+v %+v", changed, rec.Code, ev.statuses, ev.inbound)
			}
		}
	})
}

// fuzzTwilioSignature is twilioSignature for a form that may have no values for a name.
func fuzzTwilioSignature(token, fullURL string, params url.Values) string {
	first := url.Values{}
	for k, v := range params {
		first[k] = v[:1]
	}
	return twilioSignature(token, fullURL, first)
}

// twimlMessage returns the text of the Message element of a TwiML answer ("" for an empty
// Response), reading the whole document so that any markup error shows.
func twimlMessage(doc []byte) (string, error) {
	d := xml.NewDecoder(bytes.NewReader(doc))
	var text strings.Builder
	inMessage := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return text.String(), nil
		}
		if err != nil {
			return "", err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Local != "Response" && tok.Name.Local != "Message" {
				return "", &xml.SyntaxError{Msg: "unexpected element " + tok.Name.Local}
			}
			inMessage = tok.Name.Local == "Message"
		case xml.EndElement:
			inMessage = false
		case xml.CharData:
			if inMessage {
				text.Write(tok)
			}
		}
	}
}

// xmlText is s as an XML document can carry it: runes XML 1.0 does not allow (and invalid
// UTF-8) become U+FFFD, as xml.EscapeText writes them.
func xmlText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == utf8.RuneError && size == 1 || !(r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
			r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			r = '\uFFFD'
		}
		b.WriteRune(r)
	}
	return b.String()
}
