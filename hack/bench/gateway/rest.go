package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// restClient submits messages like an EHR: POST /v1/messages with its API key and a fresh
// Idempotency-Key per message.
type restClient struct {
	url    string
	apiKey string
	body   []byte
	http   *http.Client
	seq    *atomic.Int64
	prefix string
}

func newTransport(roots *x509.CertPool, http2 bool) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   http2,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}
}

// messageBody is a REST submission whose body text is size bytes.
func messageBody(size int) []byte {
	const words = "Your lab results are ready; please call the clinic to discuss them with your doctor. "
	text := strings.Repeat(words, size/len(words)+1)[:size]
	b, _ := json.Marshal(map[string]string{"to": "+12025550143", "subject": "Lab results", "body": text})
	return b
}

// submit sends one message and reports whether the gateway answered 201.
func (c *restClient) submit(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", c.prefix, c.seq.Add(1)))
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// loadResult is one load run.
type loadResult struct {
	sent, failed int
	firstErr     error
	elapsed      time.Duration
	latencies    []time.Duration // open loop only: from the scheduled send time to the answer
}

func (r loadResult) rate() float64 { return float64(r.sent) / r.elapsed.Seconds() }

func (r loadResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	l := slices.Clone(r.latencies)
	slices.Sort(l)
	return l[min(len(l)-1, int(float64(len(l))*p))]
}

// restClosedLoop runs clients that each send their next message as soon as the last is
// answered, messages in all, each client on its own connection.
func restClosedLoop(ctx context.Context, s *stack, o options) loadResult {
	var (
		next, seq atomic.Int64
		failed    atomic.Int64
		errOnce   sync.Once
		firstErr  error
		wg        sync.WaitGroup
	)
	body := messageBody(o.size)
	start := time.Now()
	for range o.sessions {
		c := &restClient{url: "https://" + s.addrs.API + "/v1/messages", apiKey: s.apiKey, body: body, seq: &seq, prefix: "closed-" + randomHex(4),
			http: &http.Client{Transport: newTransport(s.roots, o.http2), Timeout: 60 * time.Second}}
		wg.Go(func() {
			defer c.http.CloseIdleConnections()
			for next.Add(1) <= int64(o.messages) {
				if err := c.submit(ctx); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	wg.Wait()
	return loadResult{sent: o.messages - int(failed.Load()), failed: int(failed.Load()), firstErr: firstErr, elapsed: time.Since(start)}
}

// restOpenLoop sends at a fixed rate for d whatever the answers, and measures each answer's
// latency from when it was due to be sent, so that a stall shows in the latency instead of
// slowing the senders down (no coordinated omission). A request that finds every connection
// busy waits for one, and that wait counts.
func restOpenLoop(ctx context.Context, s *stack, o options, perSecond float64, d time.Duration) loadResult {
	var (
		seq      atomic.Int64
		mu       sync.Mutex
		res      loadResult
		wg       sync.WaitGroup
		interval = time.Duration(float64(time.Second) / perSecond)
	)
	// The senders keep o.sessions connections, as the closed loop did: Go's transport would
	// otherwise open a connection for every request that finds them all busy, and the TLS
	// handshakes of a burst of new connections slow everything down and open more.
	tr := newTransport(s.roots, o.http2)
	tr.MaxConnsPerHost = o.sessions
	c := &restClient{url: "https://" + s.addrs.API + "/v1/messages", apiKey: s.apiKey, body: messageBody(o.size), seq: &seq, prefix: "open-" + randomHex(4),
		http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
	defer c.http.CloseIdleConnections()
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			err := c.submit(ctx)
			lat := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.failed++
				if res.firstErr == nil {
					res.firstErr = err
				}
				return
			}
			res.sent++
			res.latencies = append(res.latencies, lat)
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}
