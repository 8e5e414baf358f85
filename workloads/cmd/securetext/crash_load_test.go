package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/securetext/securetext/workloads/sms"
)

// crashSMSReceiver is the SMS gateway of the webhook provider: it checks each request's signature
// and records the texts per reference (the message id).
type crashSMSReceiver struct {
	url    string
	secret []byte

	mu      sync.Mutex
	sends   map[string][]crashSMS // by reference
	total   int
	refused []string // why requests were refused; any is a test failure
	changed chan struct{}
}

type crashSMS struct {
	ProviderID string
	To, Body   string
}

func newCrashSMSReceiver(t *testing.T, secret []byte) *crashSMSReceiver {
	r := &crashSMSReceiver{secret: secret, sends: map[string][]crashSMS{}, changed: make(chan struct{}, 1)}
	srv := httptest.NewServer(r) // 127.0.0.1
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/send"
	return r
}

func (r *crashSMSReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	refuse := func(status int, why string) {
		r.mu.Lock()
		r.refused = append(r.refused, why)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error":%q}`, "refused")
	}
	if req.Method != http.MethodPost || req.URL.Path != "/send" {
		refuse(http.StatusNotFound, req.Method+" "+req.URL.Path)
		return
	}
	if err := sms.VerifyWebhook(r.secret, req.Header.Get(sms.WebhookSignatureHeader), body, time.Now()); err != nil {
		refuse(http.StatusForbidden, "signature: "+err.Error())
		return
	}
	var m struct {
		To        string `json:"to"`
		Body      string `json:"body"`
		Reference string `json:"reference"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Reference == "" || m.To == "" || m.Body == "" {
		refuse(http.StatusBadRequest, fmt.Sprintf("request without to, body or reference (%v)", err))
		return
	}
	if key := req.Header.Get("Idempotency-Key"); key != m.Reference {
		refuse(http.StatusBadRequest, "Idempotency-Key "+key+" is not the reference "+m.Reference)
		return
	}
	r.mu.Lock()
	r.total++
	id := fmt.Sprintf("wh-%06d", r.total)
	r.sends[m.Reference] = append(r.sends[m.Reference], crashSMS{ProviderID: id, To: m.To, Body: m.Body})
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"id":%q}`, id)
}

// missing returns the ids that have no text yet.
func (r *crashSMSReceiver) missing(ids []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range ids {
		if len(r.sends[id]) == 0 {
			out = append(out, id)
		}
	}
	return out
}

func (r *crashSMSReceiver) snapshot() (sends map[string][]crashSMS, total int, refused []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sends = make(map[string][]crashSMS, len(r.sends))
	for k, v := range r.sends {
		sends[k] = append([]crashSMS(nil), v...)
	}
	return sends, r.total, append([]string(nil), r.refused...)
}

// crashSubmission is one message a sender wants stored, and what it learnt.
type crashSubmission struct {
	n       int
	channel string // "api" or "smtp"
	marker  string // unique text in the body, found again by decrypting the store
	to      string // E.164
	key     string // the Idempotency-Key, or the Message-ID
	payload []byte // the exact request body or mail, the same on every attempt

	ackedID  string // the id of the 201 or the 250's "queued as"
	attempts int
	replayed bool
}

const crashMarkerPrefix = "CRASHMARK-"

func newCrashSubmissions(n int) []*crashSubmission {
	run := make([]byte, 4)
	_, _ = crand.Read(run)
	subs := make([]*crashSubmission, n)
	for i := range subs {
		s := &crashSubmission{n: i, to: fmt.Sprintf("+120255501%02d", i%100)}
		if i%2 == 0 {
			s.channel = "api"
		} else {
			s.channel = "smtp"
		}
		s.marker = fmt.Sprintf("%s%s-%04d-%s", crashMarkerPrefix, s.channel, i, hex.EncodeToString(run))
		text := "Your results are ready. Reference " + s.marker + "."
		switch s.channel {
		case "api":
			s.key = fmt.Sprintf("crash-%s-%04d", hex.EncodeToString(run), i)
			s.payload, _ = json.Marshal(map[string]string{"to": s.to, "subject": "Lab results", "body": text})
		case "smtp":
			s.key = fmt.Sprintf("<crash-%s-%04d@clinic.example>", hex.EncodeToString(run), i)
			s.payload = []byte("From: Clinic <relay@clinic.example>\r\n" +
				"To: " + strings.TrimPrefix(s.to, "+1") + "@" + crashDomain + "\r\n" +
				"Subject: Lab results\r\n" +
				"Date: Mon, 02 Jun 2025 09:00:00 -0400\r\n" +
				"Message-ID: " + s.key + "\r\n" +
				"MIME-Version: 1.0\r\n" +
				"Content-Type: text/plain; charset=utf-8\r\n" +
				"\r\n" + text + "\r\n")
		}
		subs[i] = s
	}
	return subs
}

// crashStats counts what the senders went through.
type crashStats struct {
	acked      atomic.Int64
	retries    atomic.Int64 // attempts after a failed one
	replays    atomic.Int64 // 201s with Idempotent-Replayed
	connErrors atomic.Int64
	temporary  atomic.Int64 // 5xx, 4yz
}

// crashBackoff is how long a sender waits before attempt+1: short, as the gateway is back
// within a second, with jitter so retries do not arrive in one wave.
func crashBackoff(attempt int) time.Duration {
	d := min(10*time.Millisecond<<min(attempt, 6), 500*time.Millisecond)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func crashSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// crashRESTSender is an EHR calling the REST API: it retries connection errors and 5xx with the
// same Idempotency-Key until it gets 201; any 4xx is a failure.
type crashRESTSender struct {
	url    string
	apiKey string
	client *http.Client
	stats  *crashStats
}

func newCrashRESTSender(apiAddr, apiKey string, roots *tls.Config, stats *crashStats) *crashRESTSender {
	tr := &http.Transport{
		TLSClientConfig:     roots,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	return &crashRESTSender{
		url: "https://" + apiAddr + "/v1/messages", apiKey: apiKey, stats: stats,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
}

func (s *crashRESTSender) send(ctx context.Context, sub *crashSubmission) error {
	for attempt := 1; ; attempt++ {
		sub.attempts = attempt
		if attempt > 1 {
			s.stats.retries.Add(1)
		}
		id, replayed, retry, err := s.try(ctx, sub)
		switch {
		case err == nil:
			sub.ackedID, sub.replayed = id, replayed
			if replayed {
				s.stats.replays.Add(1)
			}
			return nil
		case !retry:
			return fmt.Errorf("REST submission %d: %w", sub.n, err)
		}
		if err := crashSleep(ctx, crashBackoff(attempt)); err != nil {
			return fmt.Errorf("REST submission %d not acknowledged after %d attempts (last: %v)", sub.n, attempt, err)
		}
	}
}

func (s *crashRESTSender) try(ctx context.Context, sub *crashSubmission) (id string, replayed, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(sub.payload))
	if err != nil {
		return "", false, false, err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", sub.key)
	resp, err := s.client.Do(req)
	if err != nil {
		s.stats.connErrors.Add(1)
		return "", false, true, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil { // the answer did not arrive whole: not an acknowledgement
		s.stats.connErrors.Add(1)
		return "", false, true, err
	}
	switch {
	case resp.StatusCode == http.StatusCreated:
		var acc struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(body, &acc); err != nil || acc.ID == "" || acc.Status != "accepted" {
			return "", false, false, fmt.Errorf("201 without an id and status accepted: %s", body)
		}
		return acc.ID, resp.Header.Get("Idempotent-Replayed") == "true", false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		s.stats.temporary.Add(1)
		return "", false, true, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return "", false, false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
}

// crashSMTPClient is a mail relay on one reused connection: on a connection error or a 4yz reply
// it reconnects and sends the same bytes again (same Message-ID), as an MTA's queue does; a
// 5yz reply is a failure.
type crashSMTPClient struct {
	addr  string
	stats *crashStats
	c     *gosmtp.Client
}

func (s *crashSMTPClient) close() {
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	}
}

func (s *crashSMTPClient) send(ctx context.Context, sub *crashSubmission) error {
	for attempt := 1; ; attempt++ {
		sub.attempts = attempt
		if attempt > 1 {
			s.stats.retries.Add(1)
		}
		id, err := s.try(ctx, sub)
		if err == nil {
			sub.ackedID = id
			return nil
		}
		s.close()
		var reply *gosmtp.SMTPError
		switch {
		case errors.Is(err, errCrashBadAck):
			return fmt.Errorf("SMTP submission %d: %w", sub.n, err)
		case errors.As(err, &reply) && reply.Code >= 500:
			return fmt.Errorf("SMTP submission %d: permanent failure: %w", sub.n, err)
		case errors.As(err, &reply):
			s.stats.temporary.Add(1)
		default:
			s.stats.connErrors.Add(1)
		}
		if err := crashSleep(ctx, crashBackoff(attempt)); err != nil {
			return fmt.Errorf("SMTP submission %d not acknowledged after %d attempts (last: %v)", sub.n, attempt, err)
		}
	}
}

// errCrashBadAck is a 250 that does not name the stored message.
var errCrashBadAck = errors.New("250 without one queued id")

func (s *crashSMTPClient) try(ctx context.Context, sub *crashSubmission) (string, error) {
	if s.c == nil {
		conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return "", err
		}
		c := gosmtp.NewClient(conn)
		c.CommandTimeout = 30 * time.Second
		c.SubmissionTimeout = 60 * time.Second
		if err := c.Hello("relay.clinic.example"); err != nil {
			_ = c.Close()
			return "", err
		}
		s.c = c
	}
	rcpt := strings.TrimPrefix(sub.to, "+1") + "@" + crashDomain
	if err := s.c.Mail("relay@clinic.example", nil); err != nil {
		return "", err
	}
	if err := s.c.Rcpt(rcpt, nil); err != nil {
		return "", err
	}
	w, err := s.c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(sub.payload); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, ids, ok := strings.Cut(resp.StatusText, "queued as ")
	fields := strings.Fields(ids)
	if !ok || len(fields) != 1 {
		return "", fmt.Errorf("%w: %q", errCrashBadAck, resp.StatusText)
	}
	return strings.TrimRight(fields[0], ";,"), nil
}
