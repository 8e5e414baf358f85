package keystore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/securetext/securetext/workloads/internal/batch"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
)

const (
	// clientMaxConns is how many keep-alive connections a Client keeps to the keystore: enough
	// for hundreds of concurrent SMTP sessions and page views without new handshakes.
	clientMaxConns = 256
	// maxResponseBody caps what a Client reads from the keystore.
	maxResponseBody = 64 << 10
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Batch coalesces concurrent WrapNewKey calls into one keystore request (wrap-new with a
	// count), and concurrent Unwrap calls likewise (unwrap with wrapped_keys), as the
	// keystore coalesces them into one Vault call. Defaults: 64 keys per request, 2 requests
	// in flight (bigger requests, fewer Vault calls), no window. Batch.Disabled sends one
	// request per key.
	Batch BatchConfig
	// Reserve holds fresh data keys ready for WrapNewKey (ReserveConfig). On by default.
	Reserve ReserveConfig
	// URL is the keystore's base URL, for example "https://keystore.tenant-acme.svc:8443".
	URL string
	// Certificate is this component's client certificate (CA.IssueClient).
	Certificate tls.Certificate
	// RootCAs holds the tenant CA that issued the keystore's server certificate. The system
	// roots are never used.
	RootCAs *x509.CertPool
	// Timeout bounds every call, connecting included. Default 5 s.
	Timeout time.Duration
}

// Client is a Service that calls a keystore Server over mutually authenticated TLS 1.3. It is
// safe for concurrent use; share one per process.
//
// A keystore that cannot be reached, is too slow, or answers 429, 502, 503 or 504 gives an error
// wrapping ErrUnavailable (IsTemporary). 401 and a handshake the keystore refused give
// ErrUnauthenticated, 403 gives ErrForbidden, 422 gives ErrInvalidWrappedKey.
type Client struct {
	wrap      *batch.Batcher[struct{}, DataKey]
	unwrap    *batch.Batcher[string, []byte]
	reserve   *reserve // nil when disabled
	base      string
	http      *http.Client
	transport *http.Transport
	timeout   time.Duration
}

// NewClient returns a Client for cfg. It does not connect.
func NewClient(cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("keystore: new client: URL: %w", err)
	case u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("keystore: new client: URL %q must be https://host[:port][/path] without user, query or fragment", cfg.URL)
	case len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil:
		return nil, errors.New("keystore: new client: ClientConfig.Certificate needs a client certificate and its private key")
	case cfg.RootCAs == nil:
		return nil, errors.New("keystore: new client: ClientConfig.RootCAs (the tenant CA) is required")
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("keystore: new client: Timeout %v is negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	t := &http.Transport{
		Proxy: nil, // the keystore is in the tenant's namespace; never send keys through a proxy
		DialContext: (&net.Dialer{
			Timeout:   cfg.Timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cfg.Certificate},
			RootCAs:      cfg.RootCAs,
		},
		TLSHandshakeTimeout:    cfg.Timeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxIdleConns:           clientMaxConns,
		MaxIdleConnsPerHost:    clientMaxConns,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
	c := &Client{
		base: strings.TrimSuffix(u.String(), "/"),
		http: &http.Client{
			Transport: t,
			// A keystore never redirects; following one would send the request elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		transport: t,
		timeout:   cfg.Timeout,
	}
	bc := cfg.Batch
	if bc.MaxItems <= 0 {
		bc.MaxItems = 64
	}
	bc.MaxItems = min(bc.MaxItems, maxWrapCount)
	if bc.MaxInFlight <= 0 {
		bc.MaxInFlight = 2
	}
	c.wrap = batch.New(bc, cfg.Timeout, c.wrapNewBatch, func(k DataKey) { envelope.Zero(k.Plaintext) }, unavailable)
	c.unwrap = batch.New(bc, cfg.Timeout, c.unwrapBatch, envelope.Zero, unavailable)
	if !cfg.Reserve.Disabled {
		c.reserve = newReserve(cfg.Reserve, cfg.Timeout, func(ctx context.Context, n int) ([]DataKey, error) {
			keys, _, err := c.wrapNewBatch(ctx, make([]struct{}, n))
			return keys, err
		})
	}
	return c, nil
}

// Close stops the Client's batchers: calls waiting in them fail with a temporary error. The
// data keys in the reserve are zeroed.
func (c *Client) Close() {
	if c.reserve != nil {
		c.reserve.close()
	}
	c.wrap.Close()
	c.unwrap.Close()
	c.transport.CloseIdleConnections()
}

// CloseIdleConnections closes the Client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.transport.CloseIdleConnections() }

// WrapNewKey implements Service. It takes a key from the reserve (ClientConfig.Reserve) if one
// is ready, and otherwise asks the keystore: concurrent calls share keystore requests
// (ClientConfig.Batch).
func (c *Client) WrapNewKey(ctx context.Context) (DataKey, error) {
	if c.reserve == nil {
		return c.wrap.Do(ctx, struct{}{})
	}
	if ctx.Err() != nil {
		return DataKey{}, unavailable("wrap-new", context.Cause(ctx)) // as the batcher answers a caller that gave up
	}
	if k, ok := c.reserve.take(); ok {
		return k, nil
	}
	k, err := c.wrap.Do(ctx, struct{}{})
	if err == nil {
		c.reserve.wrapped()
	}
	return k, err
}

type wrappedKeyJSON struct {
	Plaintext []byte `json:"plaintext"`
	Wrapped   string `json:"wrapped"`
}

// wrapNewBatch asks the keystore for len(in) data keys in one request.
func (c *Client) wrapNewBatch(ctx context.Context, in []struct{}) ([]DataKey, []error, error) {
	var resp struct {
		Keys []wrappedKeyJSON `json:"keys"`
	}
	zero := func() {
		for _, k := range resp.Keys {
			envelope.Zero(k.Plaintext)
		}
	}
	body := fmt.Appendf(nil, `{"count":%d}`, len(in))
	if err := c.call(ctx, "wrap-new", http.MethodPost, "/v1/keys/wrap-new", body, &resp); err != nil {
		zero()
		return nil, nil, err
	}
	if len(resp.Keys) != len(in) {
		zero()
		return nil, nil, fmt.Errorf("keystore: wrap-new: keystore answered %d keys for %d: %w", len(resp.Keys), len(in), ErrUnavailable)
	}
	keys := make([]DataKey, len(in))
	for i, k := range resp.Keys {
		if len(k.Plaintext) != DataKeySize || k.Wrapped == "" {
			zero()
			return nil, nil, fmt.Errorf("keystore: wrap-new: keystore answered a %d-byte data key (want %d) and a %d-byte wrapped key",
				len(k.Plaintext), DataKeySize, len(k.Wrapped))
		}
		keys[i] = DataKey{Plaintext: k.Plaintext, Wrapped: k.Wrapped}
	}
	return keys, make([]error, len(in)), nil
}

// Unwrap implements Service. Concurrent calls share keystore requests (ClientConfig.Batch).
func (c *Client) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	return c.unwrap.Do(ctx, wrapped)
}

// unwrapBatch asks the keystore to unwrap the keys in one request. A batch of one goes in
// the single-key form, which every keystore version understands.
func (c *Client) unwrapBatch(ctx context.Context, in []string) ([][]byte, []error, error) {
	type result struct {
		Plaintext []byte `json:"plaintext"`
		Error     string `json:"error"`
	}
	var (
		req  any
		resp struct {
			result
			Results []result `json:"results"`
		}
	)
	if len(in) == 1 {
		req = struct {
			Wrapped string `json:"wrapped"`
		}{in[0]}
	} else {
		req = struct {
			WrappedKeys []string `json:"wrapped_keys"`
		}{in}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, nil, fmt.Errorf("keystore: unwrap: encode request: %w", err)
	}
	zero := func() {
		envelope.Zero(resp.Plaintext)
		for _, r := range resp.Results {
			envelope.Zero(r.Plaintext)
		}
	}
	if err := c.call(ctx, "unwrap", http.MethodPost, "/v1/keys/unwrap", body, &resp); err != nil {
		zero()
		if len(in) == 1 && errors.Is(err, ErrInvalidWrappedKey) {
			return make([][]byte, 1), []error{err}, nil // the caller's key, not the keystore, is at fault
		}
		return nil, nil, err
	}
	if len(in) == 1 {
		resp.Results = []result{resp.result}
	}
	if len(resp.Results) != len(in) {
		zero()
		return nil, nil, fmt.Errorf("keystore: unwrap: keystore answered %d keys for %d: %w", len(resp.Results), len(in), ErrUnavailable)
	}
	keys, errs := make([][]byte, len(in)), make([]error, len(in))
	for i, r := range resp.Results {
		switch {
		case r.Error != "":
			errs[i] = fmt.Errorf("keystore: unwrap: the keystore refused the wrapped key (%s): %w", r.Error, ErrInvalidWrappedKey)
		case len(r.Plaintext) != DataKeySize:
			zero()
			return nil, nil, fmt.Errorf("keystore: unwrap: keystore answered a %d-byte data key, want %d", len(r.Plaintext), DataKeySize)
		default:
			keys[i] = r.Plaintext
		}
	}
	return keys, errs, nil
}

// PublicKey implements Service.
func (c *Client) PublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	var resp struct {
		PublicKey []byte `json:"public_key"`
		KeyID     string `json:"key_id"`
	}
	if err := c.call(ctx, "public-key", http.MethodGet, "/v1/public-key", nil, &resp); err != nil {
		return nil, err
	}
	if len(resp.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("keystore: public-key: keystore answered a %d-byte public key, want %d", len(resp.PublicKey), ed25519.PublicKeySize)
	}
	pub := ed25519.PublicKey(resp.PublicKey)
	if id := audit.KeyID(pub); id != resp.KeyID {
		return nil, fmt.Errorf("keystore: public-key: keystore named the key %q but it is %q", resp.KeyID, id)
	}
	return pub, nil
}

// Health implements Service: the keystore accepts this client and its key holder can serve.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, "health", http.MethodGet, "/v1/health", nil, nil)
}

// call sends one request and decodes a 200 answer into out (unless out is nil). Every other
// outcome becomes an error as described on Client. The response body, which may hold a data
// key, is zeroed after decoding.
func (c *Client) call(ctx context.Context, op, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("keystore: %s: build request: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(op, c.base, err)
	}
	defer resp.Body.Close()
	raw, err := readResponse(resp)
	defer envelope.Zero(raw)
	if err != nil {
		return fmt.Errorf("keystore: %s: read answer from %s: %w: %w", op, c.base, ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(op, resp, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// The body may hold a data key: say what failed, never quote it.
		return fmt.Errorf("keystore: %s: answer from %s is not the expected JSON", op, c.base)
	}
	return nil
}

// readResponse reads the whole body into one buffer, so that a body holding a key leaves a
// single copy that the caller zeroes.
func readResponse(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxResponseBody {
		buf := make([]byte, n)
		_, err := io.ReadFull(resp.Body, buf)
		return buf, err
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err == nil && len(buf) > maxResponseBody {
		err = fmt.Errorf("answer is larger than %d bytes", maxResponseBody)
	}
	return buf, err
}

// refusedCertificateAlerts are the TLS alerts (RFC 8446 §6.2) with which a server refuses a
// client certificate. crypto/tls reports a received alert as a *net.OpError with Op
// "remote error" whose unexported error prints as below.
var refusedCertificateAlerts = []string{
	"tls: bad certificate", "tls: unsupported certificate", "tls: revoked certificate",
	"tls: expired certificate", "tls: unknown certificate", "tls: unknown certificate authority",
	"tls: certificate required", "tls: access denied",
}

// transportError classifies a failure to get an answer at all.
func transportError(op, base string, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" && opErr.Err != nil {
		for _, a := range refusedCertificateAlerts {
			if opErr.Err.Error() == a {
				return fmt.Errorf("keystore: %s: %s refused this client's certificate (%v); check that it was issued by the tenant's keystore CA and has not expired: %w",
					op, base, opErr.Err, ErrUnauthenticated)
			}
		}
	}
	var verifyErr *tls.CertificateVerificationError
	if errors.As(err, &verifyErr) {
		// Not temporary: the server is not the tenant's keystore, or our roots are wrong.
		return fmt.Errorf("keystore: %s: the server at %s is not trusted: its certificate does not verify against the tenant CA: %w",
			op, base, verifyErr)
	}
	return fmt.Errorf("keystore: %s: %w: %w", op, ErrUnavailable, err)
}

// statusError turns a non-200 answer into an error, quoting the problem's detail.
func statusError(op string, resp *http.Response, raw []byte) error {
	detail := resp.Status
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		var p problem
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			detail = resp.Status + ": " + p.Detail
		}
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return fmt.Errorf("keystore: %s: %q: %w", op, detail, ErrUnavailable)
	case http.StatusUnauthorized:
		return fmt.Errorf("keystore: %s: %q: %w", op, detail, ErrUnauthenticated)
	case http.StatusForbidden:
		return fmt.Errorf("keystore: %s: %q: %w", op, detail, ErrForbidden)
	case http.StatusUnprocessableEntity:
		return fmt.Errorf("keystore: %s: %q: %w", op, detail, ErrInvalidWrappedKey)
	case http.StatusConflict:
		return fmt.Errorf("keystore: %s: %q: %w", op, detail, audit.ErrNotExtension)
	}
	return fmt.Errorf("keystore: %s: keystore answered %q", op, detail)
}
