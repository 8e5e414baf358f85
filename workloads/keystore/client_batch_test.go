package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/securetext/securetext/workloads/tenantpki"
)

// gatedService holds its first WrapNewKey or Unwrap until released, and counts the keys asked
// for in each keystore request (each HTTP request has its own context).
type gatedService struct {
	Service
	gate    chan struct{}
	first   sync.Once
	entered chan struct{}
	mu      sync.Mutex
	perReq  map[context.Context]int
}

// pass counts a key of ctx's request and holds the very first call until the gate opens.
func (g *gatedService) pass(ctx context.Context) {
	g.mu.Lock()
	g.perReq[ctx]++
	g.mu.Unlock()
	held := false
	g.first.Do(func() { held = true })
	if held {
		close(g.entered)
		<-g.gate
	}
}

func (g *gatedService) WrapNewKey(ctx context.Context) (DataKey, error) {
	g.pass(ctx)
	return g.Service.WrapNewKey(ctx)
}

func (g *gatedService) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	g.pass(ctx)
	return g.Service.Unwrap(ctx, wrapped)
}

func newGatedService(t *testing.T) *gatedService {
	return &gatedService{Service: newTestLocal(t), gate: make(chan struct{}), entered: make(chan struct{}), perReq: map[context.Context]int{}}
}

// oneSlotClient is a client of component whose batches go one at a time, so that callers
// arriving while one is in flight queue for the next. It holds no reserve, whose refills
// would be requests of their own.
func (f *keystoreFixture) oneSlotClient(t *testing.T, component string) *Client {
	c, err := NewClient(ClientConfig{URL: f.url, Certificate: f.clientCert(t, testTenant, component),
		RootCAs: f.ca.CertPool(), Batch: BatchConfig{MaxInFlight: 1}, Reserve: ReserveConfig{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// requestSizes returns the keys per keystore request, smallest first.
func (g *gatedService) requestSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var sizes []int
	for _, n := range g.perReq {
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return sizes
}

// TestClientCoalescesWrapNewKey: callers that arrive while the client's only request is in
// flight leave together in the next request, which the keystore serves concurrently.
func TestClientCoalescesWrapNewKey(t *testing.T) {
	svc := newGatedService(t)
	local := svc.Service
	f := startKeystore(t, svc, nil)
	c := f.oneSlotClient(t, tenantpki.ComponentGateway)

	ctx := context.Background()
	keys := make(chan DataKey, 32)
	var wg sync.WaitGroup
	wg.Go(func() {
		k, err := c.WrapNewKey(ctx)
		if err != nil {
			t.Error(err)
		}
		keys <- k
	})
	<-svc.entered // the first request is in flight and holds the client's only slot
	for range 31 {
		wg.Go(func() {
			k, err := c.WrapNewKey(ctx)
			if err != nil {
				t.Error(err)
			}
			keys <- k
		})
	}
	// Let the 31 queue behind the held request before releasing it: the batcher holds the
	// first of them while it waits for the slot, the other 30 wait in its queue.
	for c.wrap.Queued() < 30 {
		runtime.Gosched()
	}
	close(svc.gate)
	wg.Wait()
	close(keys)
	if sizes := svc.requestSizes(); !slices.Equal(sizes, []int{1, 31}) {
		t.Fatalf("keys per keystore request %v, want [1 31]: the 31 callers queued behind the first were not coalesced", sizes)
	}
	seen := map[string]bool{}
	for k := range keys {
		if seen[k.Wrapped] || len(k.Plaintext) != DataKeySize {
			t.Fatalf("bad or repeated key %q", k.Wrapped)
		}
		seen[k.Wrapped] = true
		got, err := local.Unwrap(ctx, k.Wrapped)
		if err != nil || !bytes.Equal(got, k.Plaintext) {
			t.Fatalf("key does not unwrap to its plaintext: %v", err)
		}
	}
	if len(seen) != 32 {
		t.Fatalf("%d keys for 32 callers", len(seen))
	}
}

// TestClientCoalescesUnwrap: concurrent Unwrap calls share keystore requests, each caller
// gets its own key back, and a caller whose wrapped key is refused fails alone.
func TestClientCoalescesUnwrap(t *testing.T) {
	svc := newGatedService(t)
	f := startKeystore(t, svc, nil)
	c := f.oneSlotClient(t, tenantpki.ComponentViewer)
	var err error

	ctx := context.Background()
	keys := make([]DataKey, 32)
	for i := range keys {
		if keys[i], err = svc.Service.WrapNewKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const altered = 7
	keys[altered].Wrapped = badWrappedKeys(t, keys[altered].Wrapped, newTestLocal(t))["flipped middle char"]
	got := make([][]byte, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	wg.Go(func() { got[0], errs[0] = c.Unwrap(ctx, keys[0].Wrapped) })
	<-svc.entered // the first request is in flight and holds the client's only slot
	for i := 1; i < len(keys); i++ {
		wg.Go(func() { got[i], errs[i] = c.Unwrap(ctx, keys[i].Wrapped) })
	}
	for c.unwrap.Queued() < 30 {
		runtime.Gosched()
	}
	close(svc.gate)
	wg.Wait()
	if sizes := svc.requestSizes(); !slices.Equal(sizes, []int{1, 31}) {
		t.Fatalf("keys per keystore request %v, want [1 31]: the 31 callers queued behind the first were not coalesced", sizes)
	}
	for i, k := range keys {
		switch {
		case i == altered:
			if !errors.Is(errs[i], ErrInvalidWrappedKey) || IsTemporary(errs[i]) {
				t.Errorf("altered key: %v, want ErrInvalidWrappedKey and not temporary", errs[i])
			}
		case errs[i] != nil:
			t.Errorf("key %d: %v", i, errs[i])
		case !bytes.Equal(got[i], k.Plaintext):
			t.Errorf("key %d unwrapped to another key's plaintext", i)
		}
	}
}

func TestServerUnwrapMany(t *testing.T) {
	local := newTestLocal(t)
	f := startKeystore(t, local, nil)
	cert := f.clientCert(t, testTenant, tenantpki.ComponentViewer)
	hc := f.httpClient(t, &cert)
	ctx := context.Background()
	good, err := local.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := badWrappedKeys(t, good.Wrapped, newTestLocal(t))["flipped middle char"]
	a := f.do(t, hc, "POST", "/v1/keys/unwrap", fmt.Sprintf(`{"wrapped_keys": [%q, %q]}`, good.Wrapped, bad))
	var many struct {
		Results []struct {
			Plaintext []byte `json:"plaintext"`
			Error     string `json:"error"`
		} `json:"results"`
	}
	if a.status != http.StatusOK || json.Unmarshal(a.body, &many) != nil || len(many.Results) != 2 ||
		!bytes.Equal(many.Results[0].Plaintext, good.Plaintext) || many.Results[1].Error != "invalid-wrapped-key" ||
		many.Results[1].Plaintext != nil {
		t.Fatalf("a good and an altered key: %d %s", a.status, a.body)
	}
	tooMany := `{"wrapped_keys": [` + strings.TrimSuffix(strings.Repeat(strconv.Quote(good.Wrapped)+",", 257), ",") + `]}`
	for _, body := range []string{`{}`, `{"wrapped_keys": []}`, tooMany,
		fmt.Sprintf(`{"wrapped": %q, "wrapped_keys": [%q]}`, good.Wrapped, good.Wrapped)} {
		if a := f.do(t, hc, "POST", "/v1/keys/unwrap", body); a.status != http.StatusBadRequest {
			t.Errorf("%.60s: %d, want 400", body, a.status)
		}
	}

	down := startKeystore(t, &faultyService{Service: local, err: fmt.Errorf("vault sealed: %w", ErrUnavailable)}, nil)
	a = down.do(t, down.httpClient(t, new(down.clientCert(t, testTenant, tenantpki.ComponentViewer))), "POST", "/v1/keys/unwrap",
		fmt.Sprintf(`{"wrapped_keys": [%q, %q]}`, good.Wrapped, good.Wrapped))
	if a.status != http.StatusServiceUnavailable || bytes.Contains(a.body, []byte("plaintext")) {
		t.Errorf("key holder down: %d %s, want 503 for the whole batch", a.status, a.body)
	}
}

func TestServerWrapNewCount(t *testing.T) {
	f := startKeystore(t, newTestLocal(t), nil)
	cert := f.clientCert(t, testTenant, tenantpki.ComponentGateway)
	hc := f.httpClient(t, &cert)
	post := func(body string) (int, []byte) {
		resp, err := hc.Post(f.url+"/v1/keys/wrap-new", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, body := post(`{"count": 3}`)
	var many struct {
		Keys []struct {
			Plaintext []byte `json:"plaintext"`
			Wrapped   string `json:"wrapped"`
		} `json:"keys"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &many) != nil || len(many.Keys) != 3 ||
		many.Keys[0].Wrapped == many.Keys[1].Wrapped || len(many.Keys[2].Plaintext) != DataKeySize {
		t.Fatalf("count 3: %d %d keys", status, len(many.Keys))
	}
	for _, bad := range []string{`{"count": 0}`, `{"count": 257}`, `{"count": "3"}`, `{"count": -1}`} {
		if status, _ := post(bad); status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, status)
		}
	}
	if status, body := post(`{}`); status != http.StatusOK || !bytes.HasPrefix(body, []byte(`{"plaintext":`)) {
		t.Errorf("no count: %d %.20s…, want one key object", status, body)
	}
}
