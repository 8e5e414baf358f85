package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// gatedService holds its first WrapNewKey until released, and counts the keys asked for in each
// keystore request (each HTTP request has its own context).
type gatedService struct {
	Service
	gate    chan struct{}
	first   sync.Once
	entered chan struct{}
	mu      sync.Mutex
	perReq  map[context.Context]int
}

func (g *gatedService) WrapNewKey(ctx context.Context) (DataKey, error) {
	g.mu.Lock()
	g.perReq[ctx]++
	g.mu.Unlock()
	held := false
	g.first.Do(func() { held = true })
	if held {
		close(g.entered)
		<-g.gate
	}
	return g.Service.WrapNewKey(ctx)
}

// TestClientCoalescesWrapNewKey: callers that arrive while the client's only request is in
// flight leave together in the next request, which the keystore serves concurrently.
func TestClientCoalescesWrapNewKey(t *testing.T) {
	local := newTestLocal(t)
	svc := &gatedService{Service: local, gate: make(chan struct{}), entered: make(chan struct{}), perReq: map[context.Context]int{}}
	f := startKeystore(t, svc, nil)
	c, err := NewClient(ClientConfig{URL: f.url, Certificate: f.clientCert(t, testTenant, ComponentGateway),
		RootCAs: f.ca.CertPool(), Batch: BatchConfig{MaxInFlight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

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
	var sizes []int
	for _, n := range svc.perReq {
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 31}) {
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

func TestServerWrapNewCount(t *testing.T) {
	f := startKeystore(t, newTestLocal(t), nil)
	cert := f.clientCert(t, testTenant, ComponentGateway)
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
