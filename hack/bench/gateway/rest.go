package main

import (
	"bufio"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// restClient submits messages like an EHR: POST /v1/messages with its API key and a fresh
// Idempotency-Key per message, over one keep-alive HTTPS connection (HTTP/1.1). It writes the
// request as bytes and reads the answer with http.ReadResponse: the clients share the two CPUs
// with the gateway, its keystore, Vault and PostgreSQL, and a net/http Transport would hand
// every request to two more goroutines, which is load-generator work the gateway pays for.
type restClient struct {
	addr   string
	roots  *x509.CertPool
	head   []byte // the request up to the Idempotency-Key value
	body   []byte
	seq    *atomic.Int64
	prefix string
	req    []byte
	conn   *tls.Conn
	r      *bufio.Reader
}

func newRESTClient(s *stack, o options, seq *atomic.Int64, prefix string) *restClient {
	body := messageBody(o.size)
	head := "POST /v1/messages HTTP/1.1\r\nHost: " + s.addrs.API + "\r\nAuthorization: Bearer " + s.apiKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nIdempotency-Key: "
	return &restClient{addr: s.addrs.API, roots: s.roots, head: []byte(head), body: body, seq: seq, prefix: prefix}
}

// messageBody is a REST submission whose body text is size bytes.
func messageBody(size int) []byte {
	const words = "Your lab results are ready; please call the clinic to discuss them with your doctor. "
	text := strings.Repeat(words, size/len(words)+1)[:size]
	b, _ := json.Marshal(map[string]string{"to": "+12025550143", "subject": "Lab results", "body": text})
	return b
}

// submit sends one message and reports whether the gateway answered 201. A broken or closed
// connection is replaced on the next call.
func (c *restClient) submit() error {
	if c.conn == nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", c.addr, &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return err
		}
		c.conn, c.r = conn, bufio.NewReader(conn)
	}
	c.req = append(append(c.req[:0], c.head...), c.prefix...)
	c.req = strconv.AppendInt(append(c.req, '-'), c.seq.Add(1), 10)
	c.req = append(append(c.req, "\r\n\r\n"...), c.body...)
	_ = c.conn.SetDeadline(time.Now().Add(time.Minute))
	code, answer, err := c.roundTrip()
	if err != nil {
		c.close()
		return err
	}
	if code != http.StatusCreated {
		return fmt.Errorf("HTTP %d: %s", code, bytes.TrimSpace(answer))
	}
	return nil
}

// roundTrip writes the request and reads the answer. If the gateway says it closes the
// connection, the client closes its end.
func (c *restClient) roundTrip() (int, []byte, error) {
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err == nil && resp.Close {
		c.close()
	}
	return resp.StatusCode, b, err
}

func (c *restClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
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
	prefix := "closed-" + randomHex(4)
	start := time.Now()
	for range o.sessions {
		c := newRESTClient(s, o, &seq, prefix)
		wg.Go(func() {
			defer c.close()
			for next.Add(1) <= int64(o.messages) {
				err := ctx.Err() // interrupted: the rest count as failed
				if err == nil {
					err = c.submit()
				}
				if err != nil {
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
	// The senders keep o.sessions connections, as the closed loop did; a message that finds
	// them all busy waits for one.
	free := make(chan *restClient, o.sessions)
	prefix := "open-" + randomHex(4)
	for range o.sessions {
		c := newRESTClient(s, o, &seq, prefix)
		defer c.close()
		free <- c
	}
	start := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			c := <-free
			err := c.submit()
			lat := time.Since(due)
			free <- c
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
