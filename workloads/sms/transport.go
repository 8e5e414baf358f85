package sms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxResponseBody bounds what is read from a provider's answer.
const maxResponseBody = 1 << 20

// defaultTimeout bounds one request to a provider.
const defaultTimeout = 10 * time.Second

// sharedTransport is the providers' connection pool when the config gives no HTTP client.
// http.DefaultTransport keeps only 2 idle connections per host, so a notifier sending with 8
// workers would open a new TLS connection for most texts.
var sharedTransport = sync.OnceValue(func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = defaultTimeout
	return t
})

// attempt is the http.RoundTripper of one provider call. It binds the caller's context to the
// requests (twilio-go builds its requests with context.Background), sends them to base instead
// of the host the library chose (tests and regional endpoints), and records what happened on the
// wire, which is what tells a rejected request from one whose outcome is unknown.
type attempt struct {
	ctx  context.Context
	base *url.URL // scheme, host and optional path prefix; nil keeps each request's URL
	next http.RoundTripper

	mu         sync.Mutex
	wrote      bool // a request was written completely: the provider may have acted on it
	status     int  // status of the last response, 0 if none
	retryAfter time.Duration
}

func (a *attempt) RoundTrip(req *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				a.mu.Lock()
				a.wrote = true
				a.mu.Unlock()
			}
		},
	}
	r := req.Clone(httptrace.WithClientTrace(a.ctx, trace))
	if a.base != nil {
		r.URL.Scheme = a.base.Scheme
		r.URL.Host = a.base.Host
		r.URL.Path = strings.TrimSuffix(a.base.Path, "/") + r.URL.Path
		r.URL.RawPath = ""
		r.Host = ""
	}
	resp, err := a.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.status = resp.StatusCode
	a.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	a.mu.Unlock()
	resp.Body = limitedBody{io.LimitReader(resp.Body, maxResponseBody), resp.Body}
	return resp, nil
}

// result returns what the attempt saw.
func (a *attempt) result() (wrote bool, status int, retryAfter time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wrote, a.status, a.retryAfter
}

type limitedBody struct {
	io.Reader
	io.Closer
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// noRedirects keeps a provider's redirect from carrying credentials or a text elsewhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// transportError describes a call that got no HTTP answer. Its words are this package's own:
// the error texts of net/http can hold the request URL, which for a lookup holds the number.
func transportError(provider string, ctx context.Context, err error, wrote bool) *SendError {
	e := &SendError{Provider: provider, Temporary: true, Ambiguous: wrote}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostnameErr x509.HostnameError
	var netErr net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		e.Code, e.Detail, e.cause = "canceled", "the attempt was canceled", context.Canceled
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &netErr) && netErr.Timeout():
		e.Code, e.Detail, e.cause = "timeout", "the provider did not answer in time", context.DeadlineExceeded
	case errors.As(err, &dnsErr):
		e.Code, e.Detail = "network", "could not resolve the provider's host name"
	case errors.As(err, &certErr) || errors.As(err, &unknownAuthority) || errors.As(err, &hostnameErr):
		e.Code, e.Detail = "network", "the provider's TLS certificate was not accepted"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Code, e.Detail = "network", "the provider refused the connection"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		e.Code, e.Detail = "network", "the provider closed the connection"
	case errors.As(err, &opErr):
		e.Code, e.Detail = "network", fmt.Sprintf("network error (%s)", opErr.Op)
	default:
		e.Code, e.Detail = "network", "network error"
	}
	if wrote {
		e.Detail += "; the request was sent, so the provider may have accepted the text"
	}
	return e
}

// checkEndpoint parses a URL that credentials or texts are sent to, or that callbacks are
// verified against: https, or plain http only to a loopback address (tests, local demos).
func checkEndpoint(what, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%s must be an absolute URL such as https://host/path", what)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%s must use https (plain http is allowed only to a loopback address)", what)
		}
	default:
		return nil, fmt.Errorf("%s must be an https:// URL", what)
	}
	return u, nil
}

// Callback handling shared by providers.

// maxCallbackBody bounds a callback request; Twilio's are a few kilobytes.
const maxCallbackBody = 64 << 10

// readCallback reads a POSTed callback body, answering the request itself when it cannot.
func readCallback(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCallbackBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "could not read the request body", http.StatusBadRequest)
		}
		return nil, false
	}
	return body, true
}

// eventsFailed answers a callback whose event could not be recorded: 503 makes the provider
// try again later.
func eventsFailed(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "60")
	http.Error(w, "could not record the event; try again later", http.StatusServiceUnavailable)
}
