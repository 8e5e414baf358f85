package sms

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// Numbers the fake gateway answers with scripted results.
const (
	gwOK          = "+12025550143"
	gwOptedOut    = "+12025550111"
	gwRefused     = "+12025550112"
	gwRateLimited = "+12025550113"
	gwDown        = "+12025550114"
	gwUnauthorize = "+12025550115"
	gwNoID        = "+12025550116"
	gwHang        = "+12025550117"
	gwWeirdError  = "+12025550118"
	gwNotFound    = "+12025550119"
)

// fakeGateway is the other side of the webhook protocol, built from SignWebhook/VerifyWebhook
// as a gateway's developer would.
type fakeGateway struct {
	srv     *httptest.Server
	release chan struct{}

	mu         sync.Mutex
	received   []webhookRequest
	keys       []string
	violations []string
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{release: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(func() {
		close(g.release)
		g.srv.Close()
		for _, v := range g.violations {
			t.Errorf("fake gateway: protocol violation: %s", v)
		}
	})
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Method != http.MethodPost {
		g.violations = append(g.violations, "method "+r.Method)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		g.violations = append(g.violations, "Content-Type "+r.Header.Get("Content-Type"))
	}
	if err := VerifyWebhook(testSecret, r.Header.Get(WebhookSignatureHeader), body, time.Now()); err != nil {
		g.violations = append(g.violations, "signature: "+err.Error())
		http.Error(w, `{"error":"bad_signature"}`, http.StatusUnauthorized)
		return
	}
	var req webhookRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		g.violations = append(g.violations, "body: "+err.Error())
	}
	g.received = append(g.received, req)
	g.keys = append(g.keys, r.Header.Get("Idempotency-Key"))
	answer := func(status int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	switch req.To {
	case gwOptedOut:
		answer(http.StatusBadRequest, `{"error":"opted_out"}`)
	case gwRefused:
		answer(http.StatusUnprocessableEntity, `{"error":"invalid_number"}`)
	case gwWeirdError:
		answer(http.StatusBadRequest, `{"error":"number +12025550118 is bad"}`)
	case gwRateLimited:
		w.Header().Set("Retry-After", "7")
		answer(http.StatusTooManyRequests, `{"error":"slow_down"}`)
	case gwDown:
		answer(http.StatusServiceUnavailable, `{"error":"maintenance"}`)
	case gwUnauthorize:
		answer(http.StatusUnauthorized, `{"error":"unauthorized"}`)
	case gwNotFound:
		answer(http.StatusNotFound, `not found`)
	case gwNoID:
		answer(http.StatusOK, `{"status":"accepted"}`)
	case gwHang:
		g.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-g.release:
		}
		g.mu.Lock()
	default:
		answer(http.StatusAccepted, fmt.Sprintf(`{"id":"gw-%d"}`, len(g.received)))
	}
}

func newTestWebhook(t *testing.T, g *fakeGateway, timeout time.Duration) *Webhook {
	t.Helper()
	w, err := NewWebhook(WebhookConfig{URL: g.srv.URL + "/send", Secret: testSecret, Timeout: timeout})
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	return w
}

func TestSignWebhook(t *testing.T) {
	body := []byte(`{"to":"+12025550143"}`)
	at := time.Unix(1700000000, 0)
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte("1700000000." + string(body)))
	want := "t=1700000000,v1=" + hex.EncodeToString(mac.Sum(nil))
	if got := SignWebhook(testSecret, at, body); got != want {
		t.Fatalf("SignWebhook = %q, want %q", got, want)
	}
	otherMAC := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", want, body, at, nil},
		{"valid 4m59s later", want, body, at.Add(5*time.Minute - time.Second), nil},
		{"rotated secret: second v1", "t=1700000000,v1=" + otherMAC + ",v1=" + want[len("t=1700000000,v1="):], body, at, nil},
		{"replayed after 5 minutes", want, body, at.Add(5*time.Minute + time.Second), ErrSignatureStale},
		{"from the future", want, body, at.Add(-6 * time.Minute), ErrSignatureStale},
		{"tampered body", want, []byte(`{"to":"+12025550199"}`), at, ErrSignatureInvalid},
		{"other timestamp", "t=1700000001,v1=" + want[len("t=1700000000,v1="):], body, at, ErrSignatureInvalid},
		{"missing", "", body, at, ErrSignatureMissing},
		{"no v1", "t=1700000000", body, at, ErrSignatureMissing},
		{"no t", "v1=" + otherMAC, body, at, ErrSignatureMissing},
		{"short v1", "t=1700000000,v1=abcd", body, at, ErrSignatureMissing},
		{"garbage", "hello", body, at, ErrSignatureMissing},
	}
	for _, tt := range tests {
		if err := VerifyWebhook(testSecret, tt.header, tt.body, tt.now); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: VerifyWebhook = %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := VerifyWebhook([]byte(strings.Repeat("x", 32)), want, body, at); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("other secret: VerifyWebhook = %v, want ErrSignatureInvalid", err)
	}
}

func TestWebhookSend(t *testing.T) {
	g := newFakeGateway(t)
	w := newTestWebhook(t, g, 2*time.Second)
	sent, err := w.Send(context.Background(), Message{To: gwOK, Body: testBody, Reference: "msg-42"})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if sent.ProviderID != "gw-1" {
		t.Errorf("ProviderID = %q, want gw-1", sent.ProviderID)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.received) != 1 || g.received[0] != (webhookRequest{To: gwOK, Body: testBody, Reference: "msg-42"}) || g.keys[0] != "msg-42" {
		t.Errorf("gateway received %+v with Idempotency-Key %q", g.received, g.keys)
	}
}

func TestWebhookSendErrors(t *testing.T) {
	tests := []struct {
		name                           string
		to                             string
		code                           string
		temporary, optedOut, ambiguous bool
		retryAfter                     time.Duration
	}{
		{name: "opted out", to: gwOptedOut, code: "webhook:opted_out", optedOut: true},
		{name: "refused", to: gwRefused, code: "webhook:invalid_number"},
		{name: "error code that is not a code", to: gwWeirdError, code: "webhook:unrecognized"},
		{name: "rate limited", to: gwRateLimited, code: "webhook:http-429", temporary: true, retryAfter: 7 * time.Second},
		{name: "down", to: gwDown, code: "webhook:http-503", temporary: true, ambiguous: true},
		{name: "unauthorized", to: gwUnauthorize, code: "webhook:http-401", temporary: true},
		{name: "wrong URL", to: gwNotFound, code: "webhook:http-404", temporary: true},
		{name: "2xx without id", to: gwNoID, code: "bad_response", temporary: true, ambiguous: true},
		{name: "no answer", to: gwHang, code: "timeout", temporary: true, ambiguous: true},
	}
	g := newFakeGateway(t)
	w := newTestWebhook(t, g, 300*time.Millisecond)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message{To: tt.to, Body: testBody}
			_, err := w.Send(context.Background(), m)
			if err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			se := checkSendError(t, err, m)
			if se.Code != tt.code {
				t.Errorf("Code = %q, want %q", se.Code, tt.code)
			}
			if errors.Is(err, ErrTemporary) != tt.temporary || errors.Is(err, ErrOptedOut) != tt.optedOut || errors.Is(err, ErrAmbiguous) != tt.ambiguous {
				t.Errorf("error %v: temporary %v, opted out %v, ambiguous %v; want %v, %v, %v", err,
					errors.Is(err, ErrTemporary), errors.Is(err, ErrOptedOut), errors.Is(err, ErrAmbiguous), tt.temporary, tt.optedOut, tt.ambiguous)
			}
			if se.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", se.RetryAfter, tt.retryAfter)
			}
		})
	}
}

func TestWebhookSendUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	w, err := NewWebhook(WebhookConfig{URL: url, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	m := Message{To: gwOK, Body: testBody}
	_, err = w.Send(context.Background(), m)
	se := checkSendError(t, err, m)
	if se.Code != "network" || !errors.Is(err, ErrTemporary) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("error %v: want a temporary, unambiguous network error", err)
	}
}

func TestNewWebhookRefuses(t *testing.T) {
	tests := []struct {
		name string
		cfg  WebhookConfig
		want string
	}{
		{"short secret", WebhookConfig{URL: "https://gw.example/send", Secret: []byte("short")}, "at least 32 bytes"},
		{"plain http", WebhookConfig{URL: "http://gw.example/send", Secret: testSecret}, "https"},
		{"no URL", WebhookConfig{Secret: testSecret}, "absolute URL"},
		{"credentials in URL", WebhookConfig{URL: "https://user:pw@gw.example/send", Secret: testSecret}, "absolute URL"},
	}
	for _, tt := range tests {
		if _, err := NewWebhook(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewWebhook = %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}

// postCallback POSTs body to the handler, signed at signedAt with secret (nil: unsigned).
func postCallback(t *testing.T, target string, secret []byte, signedAt time.Time, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != nil {
		req.Header.Set(WebhookSignatureHeader, SignWebhook(secret, signedAt, []byte(body)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp, string(answer)
}

func newWebhookCallbackEnv(t *testing.T) (*recorder, string) {
	t.Helper()
	w, err := NewWebhook(WebhookConfig{URL: "https://gw.example/send", Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	ev := &recorder{}
	srv := httptest.NewServer(w.Handler(ev))
	t.Cleanup(srv.Close)
	return ev, srv.URL + "/sms/webhook"
}

func TestWebhookCallbacks(t *testing.T) {
	ev, target := newWebhookCallbackEnv(t)
	now := time.Now()

	resp, _ := postCallback(t, target, testSecret, now, `{"type":"status","id":"gw-1","status":"undelivered","error_code":"carrier_blocked"}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status callback: %d, want 204", resp.StatusCode)
	}
	resp, _ = postCallback(t, target, testSecret, now, `{"type":"status","id":"gw-1","status":"queued"}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("ignored status: %d, want 204", resp.StatusCode)
	}
	ev.mu.Lock()
	ev.reply = "Lakeside Clinic: call 202-555-0100."
	ev.mu.Unlock()
	resp, answer := postCallback(t, target, testSecret, now, `{"type":"inbound","from":"+12025550143","text":" Help! ","id":"gw-in-1"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("inbound: %d, want 200", resp.StatusCode)
	}
	var reply struct{ Reply string }
	if err := json.Unmarshal([]byte(answer), &reply); err != nil || reply.Reply != "Lakeside Clinic: call 202-555-0100." {
		t.Errorf("inbound answer %q (%v), want the reply", answer, err)
	}

	ev.mu.Lock()
	defer ev.mu.Unlock()
	wantStatus := []StatusUpdate{{ProviderID: "gw-1", Status: StatusUndelivered, ErrorCode: "webhook:carrier_blocked"}}
	if len(ev.statuses) != 1 || ev.statuses[0] != wantStatus[0] {
		t.Errorf("statuses = %+v, want %+v", ev.statuses, wantStatus)
	}
	wantIn := Inbound{From: "+12025550143", Keyword: KeywordHelp, ProviderID: "gw-in-1"}
	if len(ev.inbound) != 1 || ev.inbound[0] != wantIn {
		t.Errorf("inbound = %+v, want [%+v]", ev.inbound, wantIn)
	}
}

func TestWebhookCallbackRefusals(t *testing.T) {
	ev, target := newWebhookCallbackEnv(t)
	now := time.Now()
	valid := `{"type":"status","id":"gw-1","status":"delivered"}`
	tests := []struct {
		name     string
		secret   []byte
		signedAt time.Time
		body     string
		tamper   func(string) string
		want     int
	}{
		{"unsigned", nil, now, valid, nil, http.StatusForbidden},
		{"wrong secret", []byte(strings.Repeat("z", 32)), now, valid, nil, http.StatusForbidden},
		{"replayed after 6 minutes", testSecret, now.Add(-6 * time.Minute), valid, nil, http.StatusForbidden},
		{"dated in the future", testSecret, now.Add(6 * time.Minute), valid, nil, http.StatusForbidden},
		{"tampered", testSecret, now, valid, func(s string) string { return strings.Replace(s, "delivered", "failed", 1) }, http.StatusForbidden},
		{"unknown type", testSecret, now, `{"type":"other","id":"x"}`, nil, http.StatusBadRequest},
		{"not JSON", testSecret, now, `type=status`, nil, http.StatusBadRequest},
		{"no id", testSecret, now, `{"type":"status","status":"delivered"}`, nil, http.StatusBadRequest},
		{"inbound from not E.164", testSecret, now, `{"type":"inbound","from":"2025550143","text":"STOP","id":"x"}`, nil, http.StatusBadRequest},
		{"too large", testSecret, now, `{"type":"status","id":"gw-1","status":"delivered","x":"` + strings.Repeat("a", 70<<10) + `"}`, nil, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, target, nil)
			body := tt.body
			if tt.secret != nil {
				req.Header.Set(WebhookSignatureHeader, SignWebhook(tt.secret, tt.signedAt, []byte(body)))
			}
			if tt.tamper != nil {
				body = tt.tamper(body)
			}
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = int64(len(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if ev.calls() != 0 {
				t.Errorf("Events was called")
			}
		})
	}
}

func TestWebhookCallbackEventsError(t *testing.T) {
	ev, target := newWebhookCallbackEnv(t)
	ev.err = errors.New("database unavailable")
	for _, body := range []string{
		`{"type":"status","id":"gw-1","status":"delivered"}`,
		`{"type":"inbound","from":"+12025550143","text":"STOP","id":"gw-in-1"}`,
	} {
		resp, _ := postCallback(t, target, testSecret, time.Now(), body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", body, resp.StatusCode)
		}
	}
}
