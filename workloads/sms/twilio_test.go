package sms

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testAccountSID = "AC0123456789abcdef0123456789abcdef"
	testAuthToken  = "0123456789abcdef0123456789abcdef"
	testKeySID     = "SKfedcba9876543210fedcba9876543210"
	testKeySecret  = "s3cr3tK3yS3cr3tK3yS3cr3tK3yS3cr3"
	testServiceSID = "MG00112233445566778899aabbccddeeff"
	testFrom       = "+12025550100"
	testBody       = "Lakeside Clinic: You have a secure message. https://text.example.org/m/8f2Kq9ZrT3xW Reply STOP to opt out"
)

// Numbers the fake Twilio answers with scripted failures.
const (
	toOK          = "+12025550143"
	toOptedOut    = "+12025550101"
	toInvalid     = "+12025550102"
	toRateLimited = "+12025550103"
	toServerError = "+12025550104"
	toHangCreated = "+12025550105" // the message is created, then the answer never comes
	toBadGateway  = "+12025550106" // a proxy's HTML error page
)

var twilioE164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// fakeTwilio follows the documented contract of Twilio's Messages resource
// (https://www.twilio.com/docs/messaging/api/message-resource) strictly: anything a real
// account would refuse is refused, and recorded as a protocol violation that fails the test.
type fakeTwilio struct {
	t       *testing.T
	srv     *httptest.Server
	release chan struct{}

	mu         sync.Mutex
	messages   []fakeMessage // oldest first
	violations []string
	posts      int
	lastQuery  url.Values
}

type fakeMessage struct {
	SID, To, From, ServiceSID, Body, StatusCallback string
	Created                                         time.Time
	Sent                                            *time.Time
}

func newFakeTwilio(t *testing.T) *fakeTwilio {
	f := &fakeTwilio{t: t, release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range f.violations {
			t.Errorf("fake Twilio: protocol violation: %s", v)
		}
	})
	return f
}

func (f *fakeTwilio) violation(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
}

func twilioError(w http.ResponseWriter, status, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code": code, "message": message, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status,
	})
}

func (f *fakeTwilio) serve(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok || !(user == testAccountSID && pass == testAuthToken || user == testKeySID && pass == testKeySecret) {
		twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if r.URL.Path != "/2010-04-01/Accounts/"+testAccountSID+"/Messages.json" {
		f.violation("%s %s: not the Messages resource of the account", r.Method, r.URL.Path)
		twilioError(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	switch r.Method {
	case http.MethodPost:
		f.create(w, r)
	case http.MethodGet:
		f.list(w, r)
	default:
		f.violation("method %s", r.Method)
		twilioError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
	}
}

func (f *fakeTwilio) create(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.posts++
	f.mu.Unlock()
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		f.violation("Content-Type %q, want form encoding", r.Header.Get("Content-Type"))
		twilioError(w, http.StatusBadRequest, 20001, "Unsupported content type")
		return
	}
	if err := r.ParseForm(); err != nil || len(r.URL.Query()) != 0 {
		f.violation("form %v, query %q", err, r.URL.RawQuery)
		twilioError(w, http.StatusBadRequest, 20001, "Bad request")
		return
	}
	to, from, service, body := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("MessagingServiceSid"), r.PostForm.Get("Body")
	switch {
	case !twilioE164.MatchString(to):
		f.violation("To %q is not E.164", to)
		twilioError(w, http.StatusBadRequest, 21211, "The 'To' number "+to+" is not a valid phone number.")
		return
	case from == "" && service == "":
		f.violation("neither From nor MessagingServiceSid")
		twilioError(w, http.StatusBadRequest, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
		return
	case body == "":
		f.violation("no Body")
		twilioError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	}
	if cb := r.PostForm.Get("StatusCallback"); cb != "" {
		if u, err := url.Parse(cb); err != nil || !u.IsAbs() {
			f.violation("StatusCallback %q is not an absolute URL", cb)
		}
	}
	switch to {
	case toOptedOut:
		twilioError(w, http.StatusBadRequest, 21610, "Attempt to send to unsubscribed recipient")
		return
	case toInvalid:
		twilioError(w, http.StatusBadRequest, 21211, "The 'To' number "+to+" is not a valid phone number.")
		return
	case toRateLimited:
		w.Header().Set("Retry-After", "3")
		twilioError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		return
	case toServerError:
		twilioError(w, http.StatusInternalServerError, 20500, "Internal Server Error")
		return
	case toBadGateway:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "<html><body>502 Bad Gateway</body></html>")
		return
	}
	m := f.add(fakeMessage{To: to, From: from, ServiceSID: service, Body: body, StatusCallback: r.PostForm.Get("StatusCallback"), Created: time.Now().UTC()})
	if to == toHangCreated {
		select {
		case <-r.Context().Done():
		case <-f.release:
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(m.json())
}

func (f *fakeTwilio) add(m fakeMessage) fakeMessage {
	var id [16]byte
	_, _ = rand.Read(id[:])
	m.SID = "SM" + hex.EncodeToString(id[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages = append(f.messages, m)
	return m
}

func (m fakeMessage) json() map[string]any {
	status := "queued"
	var sent any
	if m.Sent != nil {
		status, sent = "sent", m.Sent.Format(time.RFC1123Z)
	}
	var from, service any
	if m.From != "" {
		from = m.From
	}
	if m.ServiceSID != "" {
		service = m.ServiceSID
	}
	return map[string]any{
		"account_sid": testAccountSID, "api_version": "2010-04-01", "body": m.Body,
		"date_created": m.Created.Format(time.RFC1123Z), "date_sent": sent, "date_updated": m.Created.Format(time.RFC1123Z),
		"direction": "outbound-api", "error_code": nil, "error_message": nil, "from": from,
		"messaging_service_sid": service, "num_media": "0", "num_segments": "1", "price": nil, "price_unit": "USD",
		"sid": m.SID, "status": status, "to": m.To,
		"uri": "/2010-04-01/Accounts/" + testAccountSID + "/Messages/" + m.SID + ".json",
	}
}

// list answers GET Messages.json: filters To and DateSent>= (a date or a date-time; messages not
// yet sent have no DateSent and never match it), most recent first, paged with Page/PageSize.
func (f *fakeTwilio) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.lastQuery = q
	msgs := append([]fakeMessage(nil), f.messages...)
	f.mu.Unlock()
	var after *time.Time
	if v, ok := q["DateSent>"]; ok {
		tm, err := time.Parse(time.RFC3339, v[0])
		if err != nil {
			tm, err = time.Parse(time.DateOnly, v[0])
		}
		if err != nil {
			f.violation("DateSent>=%q is not a date", v[0])
			twilioError(w, http.StatusBadRequest, 20001, "Invalid DateSent")
			return
		}
		after = &tm
	}
	if to := q.Get("To"); to != "" && !twilioE164.MatchString(to) {
		f.violation("To=%q is not E.164", to)
	}
	var match []map[string]any
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if to := q.Get("To"); to != "" && m.To != to {
			continue
		}
		if after != nil && (m.Sent == nil || m.Sent.Before(*after)) {
			continue
		}
		match = append(match, m.json())
	}
	size, page := 50, 0
	if v := q.Get("PageSize"); v != "" {
		size, _ = strconv.Atoi(v)
	}
	if v := q.Get("Page"); v != "" {
		page, _ = strconv.Atoi(v)
	}
	if size < 1 || size > 1000 || page < 0 {
		f.violation("PageSize=%q Page=%q", q.Get("PageSize"), q.Get("Page"))
		twilioError(w, http.StatusBadRequest, 20001, "Invalid paging")
		return
	}
	start, end := min(page*size, len(match)), min((page+1)*size, len(match))
	var next any
	if end < len(match) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("Page", strconv.Itoa(page+1))
		nq.Set("PageSize", strconv.Itoa(size))
		next = r.URL.Path + "?" + nq.Encode()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"messages": append([]map[string]any{}, match[start:end]...), "page": page, "page_size": size, "start": start, "end": max(end-1, 0),
		"first_page_uri": r.URL.Path, "next_page_uri": next, "previous_page_uri": nil, "uri": r.URL.RequestURI(),
	})
}

func (f *fakeTwilio) snapshot() ([]fakeMessage, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMessage(nil), f.messages...), f.posts
}

// twilioSignature computes X-Twilio-Signature as Twilio documents it
// (https://www.twilio.com/docs/usage/security#validating-requests), independently of twilio-go:
// the full URL, then each POST parameter sorted by name as name+value, HMAC-SHA1 with the auth
// token, base64.
func twilioSignature(token, fullURL string, params url.Values) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range names {
		b.WriteString(k)
		b.WriteString(params[k][0])
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// callback POSTs params to target as Twilio would, signed for signedURL (normally target).
func callback(t *testing.T, target, signedURL, token string, params url.Values, body string) *http.Response {
	t.Helper()
	if body == "" {
		body = params.Encode()
	}
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("X-Twilio-Signature", twilioSignature(token, signedURL, params))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// twilioEnv is a Twilio provider wired to a fake Twilio, with its callback handler served
// on 127.0.0.1 under /sms/twilio/.
type twilioEnv struct {
	fake   *fakeTwilio
	tw     *Twilio
	events *recorder
	base   string // CallbackBaseURL
}

func newTwilioEnv(t *testing.T, edit func(*TwilioConfig)) *twilioEnv {
	t.Helper()
	mux := http.NewServeMux()
	app := httptest.NewServer(mux)
	t.Cleanup(app.Close)
	env := &twilioEnv{fake: newFakeTwilio(t), events: &recorder{}, base: app.URL + "/sms/twilio"}
	cfg := TwilioConfig{
		AccountSID: testAccountSID, AuthToken: testAuthToken, From: testFrom,
		CallbackBaseURL: env.base, BaseURL: env.fake.srv.URL, Timeout: 2 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	tw, err := NewTwilio(cfg)
	if err != nil {
		t.Fatalf("NewTwilio: %v", err)
	}
	env.tw = tw
	mux.Handle("/sms/twilio/", tw.Handler(env.events))
	return env
}

func TestTwilioSend(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*TwilioConfig)
		from string // From the fake must see
		svc  string // MessagingServiceSid the fake must see
	}{
		{"from number", nil, testFrom, ""},
		{"messaging service", func(c *TwilioConfig) { c.From, c.MessagingServiceSID = "", testServiceSID }, "", testServiceSID},
		{"API key", func(c *TwilioConfig) { c.APIKey, c.APISecret = testKeySID, testKeySecret }, testFrom, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTwilioEnv(t, tt.cfg)
			sent, err := env.tw.Send(context.Background(), Message{To: toOK, Body: testBody, Reference: "msg-1"})
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			msgs, _ := env.fake.snapshot()
			if len(msgs) != 1 {
				t.Fatalf("fake holds %d messages, want 1", len(msgs))
			}
			m := msgs[0]
			if sent.ProviderID != m.SID || !strings.HasPrefix(m.SID, "SM") {
				t.Errorf("ProviderID = %q, want the SID %q", sent.ProviderID, m.SID)
			}
			if m.To != toOK || m.Body != testBody || m.From != tt.from || m.ServiceSID != tt.svc {
				t.Errorf("fake got To=%q From=%q MessagingServiceSid=%q Body=%q", m.To, m.From, m.ServiceSID, m.Body)
			}
			if m.StatusCallback != env.base+"/status" {
				t.Errorf("StatusCallback = %q, want %q", m.StatusCallback, env.base+"/status")
			}
		})
	}
}

func TestTwilioSendErrors(t *testing.T) {
	tests := []struct {
		name       string
		cfg        func(*TwilioConfig)
		to         string
		code       string
		status     int
		temporary  bool
		optedOut   bool
		ambiguous  bool
		detail     string
		retryAfter time.Duration
	}{
		{name: "opted out", to: toOptedOut, code: "twilio:21610", status: 400, optedOut: true, detail: "replied STOP"},
		{name: "invalid To", to: toInvalid, code: "twilio:21211", status: 400, detail: "not a valid phone number"},
		{name: "too many requests", to: toRateLimited, code: "twilio:20429", status: 429, temporary: true, retryAfter: 3 * time.Second},
		{name: "server error", to: toServerError, code: "twilio:20500", status: 500, temporary: true, ambiguous: true},
		{name: "proxy error page", to: toBadGateway, code: "twilio:http-502", status: 502, temporary: true, ambiguous: true},
		{name: "wrong auth token", cfg: func(c *TwilioConfig) { c.AuthToken = strings.Repeat("f", 32) }, to: toOK,
			code: "twilio:20003", status: 401, temporary: true, detail: "check the account SID and auth token"},
		{name: "answer lost after create", cfg: func(c *TwilioConfig) { c.Timeout = 300 * time.Millisecond }, to: toHangCreated,
			code: "timeout", temporary: true, ambiguous: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTwilioEnv(t, tt.cfg)
			m := Message{To: tt.to, Body: testBody}
			_, err := env.tw.Send(context.Background(), m)
			if err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			se := checkSendError(t, err, m)
			if se.Code != tt.code || se.HTTPStatus != tt.status {
				t.Errorf("Code, HTTPStatus = %q, %d; want %q, %d", se.Code, se.HTTPStatus, tt.code, tt.status)
			}
			if errors.Is(err, ErrTemporary) != tt.temporary || errors.Is(err, ErrOptedOut) != tt.optedOut || errors.Is(err, ErrAmbiguous) != tt.ambiguous {
				t.Errorf("error %v: temporary %v, opted out %v, ambiguous %v; want %v, %v, %v", err,
					errors.Is(err, ErrTemporary), errors.Is(err, ErrOptedOut), errors.Is(err, ErrAmbiguous), tt.temporary, tt.optedOut, tt.ambiguous)
			}
			if tt.optedOut && !errors.Is(err, ErrPermanent) {
				t.Errorf("opted out must also be permanent")
			}
			if !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("Detail %q does not say %q", se.Detail, tt.detail)
			}
			if se.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", se.RetryAfter, tt.retryAfter)
			}
		})
	}
}

func TestTwilioSendNoConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := newTwilioEnv(t, func(c *TwilioConfig) { c.BaseURL = "http://" + addr })
	m := Message{To: toOK, Body: testBody}
	_, err = env.tw.Send(context.Background(), m)
	se := checkSendError(t, err, m)
	if se.Code != "network" || !errors.Is(err, ErrTemporary) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("error %v (code %q): want a temporary, unambiguous network error", err, se.Code)
	}
}

func TestTwilioSendCanceled(t *testing.T) {
	env := newTwilioEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := Message{To: toOK, Body: testBody}
	_, err := env.tw.Send(ctx, m)
	se := checkSendError(t, err, m)
	if se.Code != "canceled" || !errors.Is(err, context.Canceled) || !errors.Is(err, ErrTemporary) {
		t.Errorf("error %v (code %q): want canceled, temporary, matching context.Canceled", err, se.Code)
	}
	if _, posts := env.fake.snapshot(); posts != 0 {
		t.Errorf("a canceled Send reached Twilio %d times", posts)
	}
}

func TestTwilioSendRefusesBadMessageLocally(t *testing.T) {
	env := newTwilioEnv(t, nil)
	for _, m := range []Message{{To: "2025550143", Body: testBody}, {To: toOK, Body: ""}} {
		_, err := env.tw.Send(context.Background(), m)
		se := checkSendError(t, err, m)
		if se.Code != "invalid_message" || !errors.Is(err, ErrPermanent) {
			t.Errorf("Send(%+v) = %v, want a permanent invalid_message error", m, err)
		}
	}
	if _, posts := env.fake.snapshot(); posts != 0 {
		t.Errorf("invalid messages reached Twilio %d times", posts)
	}
}

func TestTwilioFindAfterLostAnswer(t *testing.T) {
	env := newTwilioEnv(t, func(c *TwilioConfig) { c.Timeout = 300 * time.Millisecond })
	since := time.Now()
	m := Message{To: toHangCreated, Body: testBody}
	if _, err := env.tw.Send(context.Background(), m); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Send = %v, want ErrAmbiguous", err)
	}
	// Another text to the same number must not be taken for this one.
	env.fake.add(fakeMessage{To: toHangCreated, From: testFrom, Body: "something else", Created: time.Now()})

	sent, found, err := env.tw.Find(context.Background(), m, since)
	if err != nil || !found {
		t.Fatalf("Find = %v, %v, want found", found, err)
	}
	msgs, _ := env.fake.snapshot()
	if sent.ProviderID != msgs[0].SID {
		t.Errorf("Find returned %q, want the SID of the lost message %q", sent.ProviderID, msgs[0].SID)
	}

	_, found, err = env.tw.Find(context.Background(), Message{To: toHangCreated, Body: testBody + " (other link)"}, since)
	if err != nil || found {
		t.Errorf("Find of a text never sent = %v, %v; want not found", found, err)
	}
	_, found, err = env.tw.Find(context.Background(), Message{To: toOK, Body: testBody}, since)
	if err != nil || found {
		t.Errorf("Find for another number = %v, %v; want not found", found, err)
	}
}

func TestTwilioFindSentBehindNewerTexts(t *testing.T) {
	env := newTwilioEnv(t, nil)
	now := time.Now().UTC()
	since := now.Add(-time.Hour)
	target := env.fake.add(fakeMessage{To: toOK, From: testFrom, Body: testBody, Created: now, Sent: &now})
	// Older than the day of since: the DateSent filter leaves it out, so it cannot be matched.
	old := now.Add(-72 * time.Hour)
	env.fake.add(fakeMessage{To: toOK, From: testFrom, Body: testBody + "old", Created: old, Sent: &old})
	// More newer texts to the same number than the first lookup reads (still queued).
	for i := range 60 {
		env.fake.add(fakeMessage{To: toOK, From: testFrom, Body: fmt.Sprintf("newer %d", i), Created: now})
	}
	sent, found, err := env.tw.Find(context.Background(), Message{To: toOK, Body: testBody}, since)
	if err != nil || !found || sent.ProviderID != target.SID {
		t.Fatalf("Find = %+v, %v, %v; want %s", sent, found, err, target.SID)
	}
	env.fake.mu.Lock()
	q := env.fake.lastQuery
	env.fake.mu.Unlock()
	day := since.UTC().Format(time.DateOnly)
	if q.Get("To") != toOK || !strings.HasPrefix(q.Get("DateSent>"), day) {
		t.Errorf("last lookup %v: want To=%s and DateSent>=%s", q, toOK, day)
	}
	_, found, err = env.tw.Find(context.Background(), Message{To: toOK, Body: testBody + "old"}, since)
	if err != nil || found {
		t.Errorf("Find of a text sent before since's day = %v, %v; want not found", found, err)
	}
}

func TestTwilioFindErrors(t *testing.T) {
	env := newTwilioEnv(t, func(c *TwilioConfig) { c.AuthToken = strings.Repeat("f", 32) })
	m := Message{To: toOK, Body: testBody}
	_, found, err := env.tw.Find(context.Background(), m, time.Now())
	if found || err == nil {
		t.Fatalf("Find with a wrong token = %v, %v; want an error", found, err)
	}
	se := checkSendError(t, err, m)
	if se.Code != "twilio:20003" || !errors.Is(err, ErrTemporary) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("Find error %v: want temporary twilio:20003, not ambiguous", err)
	}
}

func TestTwilioStatusCallbacks(t *testing.T) {
	env := newTwilioEnv(t, nil)
	if _, err := env.tw.Send(context.Background(), Message{To: toOK, Body: testBody}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := env.fake.snapshot()
	statusURL, sid := msgs[0].StatusCallback, msgs[0].SID

	tests := []struct {
		status, errorCode string
		want              *StatusUpdate
	}{
		{"queued", "", nil},
		{"sending", "", nil},
		{"sent", "", &StatusUpdate{ProviderID: sid, Status: StatusSent}},
		{"delivered", "", &StatusUpdate{ProviderID: sid, Status: StatusDelivered}},
		{"read", "", &StatusUpdate{ProviderID: sid, Status: StatusDelivered}},
		{"undelivered", "30003", &StatusUpdate{ProviderID: sid, Status: StatusUndelivered, ErrorCode: "twilio:30003"}},
		{"failed", "30008", &StatusUpdate{ProviderID: sid, Status: StatusFailed, ErrorCode: "twilio:30008"}},
		{"canceled", "", &StatusUpdate{ProviderID: sid, Status: StatusFailed, ErrorCode: "twilio:canceled"}},
		{"something-new", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.status, func(t *testing.T) {
			before := env.events.calls()
			params := url.Values{
				"AccountSid": {testAccountSID}, "ApiVersion": {"2010-04-01"}, "From": {testFrom}, "To": {toOK},
				"MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {tt.status}, "SmsStatus": {tt.status},
			}
			if tt.errorCode != "" {
				params.Set("ErrorCode", tt.errorCode)
			}
			resp := callback(t, statusURL, statusURL, testAuthToken, params, "")
			if resp.StatusCode/100 != 2 {
				t.Fatalf("status %d, want 2xx", resp.StatusCode)
			}
			env.events.mu.Lock()
			defer env.events.mu.Unlock()
			if tt.want == nil {
				if len(env.events.statuses)+len(env.events.inbound) != before {
					t.Errorf("status %q was reported; want it ignored", tt.status)
				}
				return
			}
			if len(env.events.statuses) == 0 || env.events.statuses[len(env.events.statuses)-1] != *tt.want || len(env.events.statuses) != before+1 {
				t.Errorf("reported %+v, want last %+v", env.events.statuses, *tt.want)
			}
		})
	}
}

func TestTwilioInbound(t *testing.T) {
	env := newTwilioEnv(t, nil)
	inboundURL := env.base + "/inbound"
	params := func(body string) url.Values {
		return url.Values{
			"AccountSid": {testAccountSID}, "MessageSid": {"SM" + strings.Repeat("1", 32)}, "SmsSid": {"SM" + strings.Repeat("1", 32)},
			"From": {toOK}, "To": {testFrom}, "Body": {body}, "NumMedia": {"0"}, "SmsStatus": {"received"},
		}
	}

	resp := callback(t, inboundURL, inboundURL, testAuthToken, params("Stop."), "")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/xml") {
		t.Fatalf("status %d, Content-Type %q; want 200 text/xml", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var twiml struct {
		XMLName  xml.Name `xml:"Response"`
		Messages []string `xml:"Message"`
	}
	if err := xml.Unmarshal(body, &twiml); err != nil || len(twiml.Messages) != 0 {
		t.Errorf("TwiML %q (%v): want an empty <Response/>", body, err)
	}
	env.events.mu.Lock()
	got := append([]Inbound(nil), env.events.inbound...)
	env.events.reply = "Lakeside <Clinic> & co: call 202-555-0100. Reply STOP to opt out."
	env.events.mu.Unlock()
	want := Inbound{From: toOK, Keyword: KeywordStop, ProviderID: "SM" + strings.Repeat("1", 32)}
	if len(got) != 1 || got[0] != want {
		t.Errorf("inbound = %+v, want [%+v]", got, want)
	}

	resp = callback(t, inboundURL, inboundURL, testAuthToken, params("help"), "")
	body, _ = io.ReadAll(resp.Body)
	if err := xml.Unmarshal(body, &twiml); err != nil || len(twiml.Messages) != 1 || twiml.Messages[0] != "Lakeside <Clinic> & co: call 202-555-0100. Reply STOP to opt out." {
		t.Errorf("TwiML %q (%v): want the reply in one <Message>", body, err)
	}

	// A reply with words is reported without them.
	resp = callback(t, inboundURL, inboundURL, testAuthToken, params("my test results came back"), "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	env.events.mu.Lock()
	last := env.events.inbound[len(env.events.inbound)-1]
	env.events.mu.Unlock()
	if last.Keyword != KeywordNone {
		t.Errorf("keyword %q, want none", last.Keyword)
	}
}

func TestTwilioCallbackRefusals(t *testing.T) {
	env := newTwilioEnv(t, nil)
	statusURL := env.base + "/status"
	valid := url.Values{"MessageSid": {"SM" + strings.Repeat("2", 32)}, "MessageStatus": {"delivered"}, "AccountSid": {testAccountSID}}

	tests := []struct {
		name      string
		target    string
		signedFor string
		token     string
		params    url.Values
		body      string // raw body instead of params.Encode()
		want      int
	}{
		{"forged signature", statusURL, statusURL, strings.Repeat("e", 32), valid, "", http.StatusForbidden},
		{"missing signature", statusURL, statusURL, "", valid, "", http.StatusForbidden},
		{"signed for another URL", statusURL, env.base + "/inbound", testAuthToken, valid, "", http.StatusForbidden},
		{"signed for another host", statusURL, "https://evil.example/sms/twilio/status", testAuthToken, valid, "", http.StatusForbidden},
		{"tampered parameter", statusURL, statusURL, testAuthToken, valid,
			strings.Replace(valid.Encode(), "delivered", "failed", 1), http.StatusForbidden},
		{"added parameter", statusURL, statusURL, testAuthToken, valid, valid.Encode() + "&ErrorCode=30003", http.StatusForbidden},
		{"repeated parameter", statusURL, statusURL, testAuthToken, valid, valid.Encode() + "&MessageStatus=failed", http.StatusBadRequest},
		{"query not signed", statusURL + "?x=1", statusURL, testAuthToken, valid, "", http.StatusForbidden},
		{"unknown path", env.base + "/other", env.base + "/other", testAuthToken, valid, "", http.StatusNotFound},
		{"body too large", statusURL, statusURL, testAuthToken, url.Values{"Body": {strings.Repeat("a", 70<<10)}}, "", http.StatusRequestEntityTooLarge},
		// The SID becomes the text's provider id in the store: printable ASCII only.
		{"SID not printable ASCII", statusURL, statusURL, testAuthToken,
			url.Values{"MessageSid": {"SM\xcc"}, "MessageStatus": {"delivered"}, "AccountSid": {testAccountSID}}, "", http.StatusBadRequest},
		{"inbound SID not printable ASCII", env.base + "/inbound", env.base + "/inbound", testAuthToken,
			url.Values{"MessageSid": {"SM 1"}, "From": {"+12025550143"}, "Body": {"STOP"}, "AccountSid": {testAccountSID}}, "", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.events.calls()
			resp := callback(t, tt.target, tt.signedFor, tt.token, tt.params, tt.body)
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if n := env.events.calls() - before; n != 0 {
				t.Errorf("Events was called %d times", n)
			}
		})
	}

	// A signed URL with a query string (Twilio signs the URL it requested) is accepted.
	resp := callback(t, statusURL+"?tenant=lakeside", statusURL+"?tenant=lakeside", testAuthToken, valid, "")
	if resp.StatusCode != http.StatusNoContent || env.events.calls() != 1 || env.events.statuses[0].Status != StatusDelivered {
		t.Errorf("signed callback with a query: status %d, %d events; want 204 and 1", resp.StatusCode, env.events.calls())
	}

	req, _ := http.NewRequest(http.MethodGet, statusURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", resp.StatusCode)
	}
}

func TestTwilioCallbackEventsError(t *testing.T) {
	env := newTwilioEnv(t, nil)
	env.events.err = errors.New("database unavailable")
	statusURL, inboundURL := env.base+"/status", env.base+"/inbound"
	resp := callback(t, statusURL, statusURL, testAuthToken,
		url.Values{"MessageSid": {"SM" + strings.Repeat("3", 32)}, "MessageStatus": {"delivered"}}, "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status callback: status %d, want 503", resp.StatusCode)
	}
	resp = callback(t, inboundURL, inboundURL, testAuthToken,
		url.Values{"MessageSid": {"SM" + strings.Repeat("4", 32)}, "From": {toOK}, "Body": {"STOP"}}, "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("inbound: status %d, want 503", resp.StatusCode)
	}
}

func TestTwilioCallbacksNotConfigured(t *testing.T) {
	env := newTwilioEnv(t, func(c *TwilioConfig) { c.CallbackBaseURL = "" })
	if _, err := env.tw.Send(context.Background(), Message{To: toOK, Body: testBody}); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := env.fake.snapshot(); msgs[0].StatusCallback != "" {
		t.Errorf("StatusCallback %q sent without a callback URL", msgs[0].StatusCallback)
	}
	statusURL := env.base + "/status"
	resp := callback(t, statusURL, statusURL, testAuthToken, url.Values{"MessageSid": {"SM1"}, "MessageStatus": {"delivered"}}, "")
	if resp.StatusCode != http.StatusForbidden || env.events.calls() != 0 {
		t.Errorf("status %d with %d events, want 403 and none", resp.StatusCode, env.events.calls())
	}
}

func TestNewTwilioRefuses(t *testing.T) {
	valid := TwilioConfig{AccountSID: testAccountSID, AuthToken: testAuthToken, From: testFrom}
	tests := []struct {
		name string
		edit func(*TwilioConfig)
		want string
	}{
		{"account SID", func(c *TwilioConfig) { c.AccountSID = "AC123" }, "account SID"},
		{"no credentials", func(c *TwilioConfig) { c.AuthToken = "" }, "auth token"},
		{"token with symbols", func(c *TwilioConfig) { c.AuthToken = "abc def" }, "auth token"},
		{"API key without secret", func(c *TwilioConfig) { c.APIKey = testKeySID }, "API key"},
		{"no sender", func(c *TwilioConfig) { c.From = "" }, "From"},
		{"From not E.164", func(c *TwilioConfig) { c.From = "2025550100" }, "E.164"},
		{"service SID", func(c *TwilioConfig) { c.From, c.MessagingServiceSID = "", "MG1" }, "Messaging Service SID"},
		{"plain http base URL", func(c *TwilioConfig) { c.BaseURL = "http://api.twilio.example" }, "https"},
		{"plain http callback URL", func(c *TwilioConfig) { c.CallbackBaseURL = "http://text.example.org/sms/twilio" }, "https"},
		{"relative callback URL", func(c *TwilioConfig) { c.CallbackBaseURL = "/sms/twilio" }, "absolute URL"},
		{"callbacks with API key only", func(c *TwilioConfig) {
			c.AuthToken, c.APIKey, c.APISecret, c.CallbackBaseURL = "", testKeySID, testKeySecret, "https://text.example.org/sms/twilio"
		}, "auth token"},
		{"status URL path", func(c *TwilioConfig) { c.StatusCallbackURL = "https://text.example.org/cb" }, "/status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.edit(&cfg)
			tw, err := NewTwilio(cfg)
			if err == nil {
				t.Fatalf("NewTwilio = %v, want an error", tw)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	if _, err := NewTwilio(valid); err != nil {
		t.Errorf("NewTwilio(valid) = %v", err)
	}
}

func TestClassifyTwilioCodes(t *testing.T) {
	for code := range twilioErrors {
		e := classifyTwilio(code, 400)
		if !CodePattern.MatchString(e.Code) || e.Detail == "" {
			t.Errorf("code %d: Code %q, Detail %q", code, e.Code, e.Detail)
		}
	}
	for _, status := range []int{401, 403, 404} {
		if e := classifyTwilio(0, status); !errors.Is(e, ErrTemporary) || !strings.Contains(e.Detail, "check") {
			t.Errorf("HTTP %d: %v, want a temporary error that says what to check", status, e)
		}
	}
	if e := classifyTwilio(21999, 400); !errors.Is(e, ErrPermanent) || e.Code != "twilio:21999" {
		t.Errorf("unknown 4xx: %v, want permanent twilio:21999", e)
	}
}
