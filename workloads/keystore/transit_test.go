package keystore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/vaultlogin"
	"github.com/securetext/securetext/workloads/vaultpolicy"
)

// transitPolicy is what the operator grants a tenant's keystore (vaultpolicy.Keystore); every test
// token carries only it, so the tests prove the policy is enough.
var transitPolicy = vaultpolicy.Keystore("transit", "state", "messages", "audit")

// transitFixture is a real Vault dev server with a tenant's Transit mount and keys, and a
// keystore token limited to transitPolicy.
type transitFixture struct {
	vault *testenv.Vault
	root  *vaultapi.Client
	token string
}

func newTransitFixture(t testing.TB) *transitFixture {
	t.Helper()
	v := testenv.StartVault(t)
	root := v.Client(t)
	ctx := context.Background()
	if err := root.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	if err := root.Sys().MountWithContext(ctx, "state", &vaultapi.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatalf("mount state: %v", err)
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519", "other": "aes256-gcm96"} {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": typ}); err != nil {
			t.Fatalf("create key %s: %v", name, err)
		}
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "keystore", transitPolicy); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	return &transitFixture{vault: v, root: root, token: newToken(t, root, "keystore")}
}

func newToken(t testing.TB, root *vaultapi.Client, policies ...string) string {
	t.Helper()
	secret, err := root.Auth().Token().CreateWithContext(context.Background(), &vaultapi.TokenCreateRequest{
		Policies: policies, NoDefaultPolicy: true, TTL: "1h", Renewable: new(true),
	})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return secret.Auth.ClientToken
}

// callCounter counts Vault requests per path, so tests can see batching.
type callCounter struct {
	callsOnly bool // do not read bodies (benchmarks)
	next      http.RoundTripper
	mu        sync.Mutex
	calls     map[string]int
	items     map[string]int
}

func (c *callCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	items := 1
	if r.Body != nil && !c.callsOnly {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if n := bytes.Count(b, []byte(`"plaintext"`)) + bytes.Count(b, []byte(`"ciphertext"`)); n > 0 {
			items = n
		}
	}
	c.mu.Lock()
	c.calls[r.URL.Path]++
	c.items[r.URL.Path] += items
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *callCounter) get(path string) (calls, items int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[path], c.items[path]
}

type transitOpts struct {
	batch   BatchConfig
	timeout time.Duration
	token   string
	counter *callCounter
}

func (f *transitFixture) start(t testing.TB, o transitOpts) *Transit {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = f.vault.Addr
	if o.counter != nil {
		o.counter.next = cfg.HttpClient.Transport
		o.counter.calls, o.counter.items = map[string]int{}, map[string]int{}
		cfg.HttpClient.Transport = o.counter
	}
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.ClearNamespace()
	token := o.token
	if token == "" {
		token = f.token
	}
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	ks, err := NewTransit(TransitConfig{
		Client: client, Auth: vaultlogin.TokenAuth{Token: token}, Mount: "transit",
		WrappingKey: "messages", SigningKey: "audit", Timeout: o.timeout, Batch: o.batch,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	return ks
}

func waitReady(t testing.TB, ks *Transit) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ks.WaitReady(ctx); err != nil {
		t.Fatalf("keystore never logged in: %v", err)
	}
}

func TestTransitWrapUnwrap(t *testing.T) {
	f := newTransitFixture(t)
	for name, batch := range map[string]BatchConfig{"batched": {}, "unbatched": {Disabled: true}} {
		t.Run(name, func(t *testing.T) {
			ks := f.start(t, transitOpts{batch: batch})
			waitReady(t, ks)
			ctx := t.Context()
			dk, err := ks.WrapNewKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(dk.Plaintext) != DataKeySize || !strings.HasPrefix(dk.Wrapped, "vault:v1:") {
				t.Fatalf("data key: %d bytes, wrapped %.12q…; want 32 bytes and vault:v1:", len(dk.Plaintext), dk.Wrapped)
			}
			if bytes.Contains([]byte(dk.Wrapped), []byte(base64.StdEncoding.EncodeToString(dk.Plaintext))) {
				t.Fatal("wrapped form contains the data key")
			}
			ad := envelope.AssociatedData{Tenant: "clinic", MessageID: "m1", Part: "body"}
			sealed, err := envelope.Seal(dk.Plaintext, ad, []byte("results are ready"))
			if err != nil {
				t.Fatal(err)
			}
			key, err := ks.Unwrap(ctx, dk.Wrapped)
			if err != nil {
				t.Fatalf("unwrap: %v", err)
			}
			if !bytes.Equal(key, dk.Plaintext) {
				t.Fatal("unwrapped key differs from the data key")
			}
			if got, err := envelope.Open(key, ad, sealed); err != nil || string(got) != "results are ready" {
				t.Fatalf("open with the unwrapped key: %q, %v", got, err)
			}
			other, err := ks.WrapNewKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(other.Plaintext, dk.Plaintext) || other.Wrapped == dk.Wrapped {
				t.Fatal("two WrapNewKey calls returned the same key")
			}
		})
	}
}

// TestTransitBatchesConcurrentCalls: callers released together share Vault calls, and with
// batching off each caller makes its own.
func TestTransitBatchesConcurrentCalls(t *testing.T) {
	f := newTransitFixture(t)
	const callers = 64
	run := func(t *testing.T, batch BatchConfig) (calls, items int) {
		counter := &callCounter{}
		ks := f.start(t, transitOpts{batch: batch, counter: counter})
		waitReady(t, ks)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		wrapped := make(chan string, callers)
		for range callers {
			wg.Go(func() {
				<-start
				dk, err := ks.WrapNewKey(t.Context())
				if err != nil {
					errs <- err
					return
				}
				wrapped <- dk.Wrapped
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		close(wrapped)
		for err := range errs {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for w := range wrapped {
			if seen[w] {
				t.Fatal("two callers got the same wrapped key")
			}
			seen[w] = true
		}
		return counter.get("/v1/transit/encrypt/messages")
	}
	t.Run("batched", func(t *testing.T) {
		calls, items := run(t, BatchConfig{MaxInFlight: 1, Window: 200 * time.Millisecond})
		if items != callers || calls > callers/4 {
			t.Fatalf("%d callers: %d Vault calls carrying %d items; want at most %d calls carrying %d", callers, calls, items, callers/4, callers)
		}
	})
	t.Run("unbatched", func(t *testing.T) {
		calls, items := run(t, BatchConfig{Disabled: true})
		if calls != callers || items != callers {
			t.Fatalf("%d callers: %d Vault calls carrying %d items; want one call each", callers, calls, items)
		}
	})
}

func TestTransitRefusesBadWrappedKeys(t *testing.T) {
	f := newTransitFixture(t)
	ctx := t.Context()
	good := func(ks *Transit) string {
		dk, err := ks.WrapNewKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return dk.Wrapped
	}
	ks := f.start(t, transitOpts{})
	waitReady(t, ks)
	valid := good(ks)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(valid, "vault:v1:"))
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 0x01
	otherKey, err := f.root.Logical().WriteWithContext(ctx, "transit/encrypt/other",
		map[string]any{"plaintext": base64.StdEncoding.EncodeToString(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"bit flipped":          "vault:v1:" + base64.StdEncoding.EncodeToString(flipped),
		"truncated":            "vault:v1:" + base64.StdEncoding.EncodeToString(raw[:len(raw)-4]),
		"other tenant's key":   otherKey.Data["ciphertext"].(string),
		"unknown key version":  "vault:v9:" + strings.TrimPrefix(valid, "vault:v1:"),
		"not vault":            "local:v1:AAAA",
		"not base64":           "vault:v1:%%%",
		"empty":                "",
		"version not a number": "vault:vx:AAAA",
	}
	for _, batch := range []BatchConfig{{}, {Disabled: true}} {
		ks := f.start(t, transitOpts{batch: batch})
		waitReady(t, ks)
		for name, wrapped := range cases {
			key, err := ks.Unwrap(ctx, wrapped)
			if !errors.Is(err, ErrInvalidWrappedKey) || IsTemporary(err) || key != nil {
				t.Errorf("disabled=%v, %s: got key=%v err=%v; want ErrInvalidWrappedKey, permanent", batch.Disabled, name, key != nil, err)
			}
		}
	}

	// Good and bad keys in one batch: each caller gets its own answer.
	ks = f.start(t, transitOpts{batch: BatchConfig{MaxInFlight: 1, Window: 100 * time.Millisecond}})
	waitReady(t, ks)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			w := valid
			if i%2 == 1 {
				w = cases["bit flipped"]
			}
			key, err := ks.Unwrap(ctx, w)
			if i%2 == 0 && (err != nil || len(key) != DataKeySize) {
				t.Errorf("good key in a mixed batch: %v", err)
			}
			if i%2 == 1 && !errors.Is(err, ErrInvalidWrappedKey) {
				t.Errorf("bad key in a mixed batch: %v", err)
			}
		})
	}
	wg.Wait()
}

// The notary's state in Vault KV survives a restart of the keystore, refuses a write on a
// version that is no longer current (two replicas), and the keystore policy is enough for it.
func TestTransitCheckpointState(t *testing.T) {
	f := newTransitFixture(t)
	ks := f.start(t, transitOpts{})
	waitReady(t, ks)
	ctx := t.Context()

	state := ks.CheckpointState("state")
	if _, v, ok, err := state.Load(ctx); err != nil || ok || v != 0 {
		t.Fatalf("Load before the first checkpoint: version %d ok=%v err=%v; want nothing", v, ok, err)
	}
	notary, err := audit.NewNotary("clinic", ks, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	chain := audit.NewChain("clinic", 0, [32]byte{})
	var events []audit.Event
	for range 3 {
		events = append(events, chain.Append(audit.Event{Time: time.Unix(1700000000, 0), Kind: audit.KindAccepted, Actor: "system"}))
	}
	cp, err := notary.ExtendCheckpoint(ctx, events)
	if err != nil {
		t.Fatalf("ExtendCheckpoint: %v", err)
	}
	pub, err := ks.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyCheckpoint(pub, cp); err != nil || cp.Size != 3 || cp.Head != events[2].Hash {
		t.Fatalf("checkpoint size %d (%v), want a valid one at 3", cp.Size, err)
	}

	// A restarted keystore reads what the first one signed, and refuses a chain that does not
	// extend it.
	restarted := f.start(t, transitOpts{})
	waitReady(t, restarted)
	again, err := audit.NewNotary("clinic", restarted, restarted.CheckpointState("state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	last, ok, err := again.LastCheckpoint(ctx)
	if err != nil || !ok || last.Size != 3 || last.Head != cp.Head || !bytes.Equal(last.Signature, cp.Signature) {
		t.Fatalf("LastCheckpoint after a restart: size %d ok=%v err=%v; want the checkpoint at 3", last.Size, ok, err)
	}
	forged := audit.NewChain("clinic", 0, [32]byte{})
	var rewritten []audit.Event
	for range 4 {
		rewritten = append(rewritten, forged.Append(audit.Event{Time: time.Unix(1700000001, 0), Kind: audit.KindAccepted, Actor: "system"}))
	}
	if _, err := again.ExtendCheckpoint(ctx, rewritten[3:]); !errors.Is(err, audit.ErrNotExtension) {
		t.Fatalf("extension of a rewritten chain: %v, want ErrNotExtension", err)
	}

	// Check-and-set: a write on a version that is no longer current is refused.
	_, v, _, err := state.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Save(ctx, cp, v); err != nil {
		t.Fatalf("Save on the current version: %v", err)
	}
	if err := state.Save(ctx, cp, v); !errors.Is(err, audit.ErrStateChanged) {
		t.Fatalf("Save on a stale version: %v, want ErrStateChanged", err)
	}
	if err := state.Save(ctx, cp, 0); !errors.Is(err, audit.ErrStateChanged) {
		t.Fatalf("Save as the first checkpoint over an existing one: %v, want ErrStateChanged", err)
	}
}

func TestTransitSignsCheckpoints(t *testing.T) {
	f := newTransitFixture(t)
	ks := f.start(t, transitOpts{})
	waitReady(t, ks)
	ctx := t.Context()

	pub, err := ks.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var head [32]byte
	head[0] = 7
	cp, err := audit.SignCheckpoint(ctx, ks, "clinic", 42, head, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyCheckpoint(pub, cp); err != nil {
		t.Fatalf("checkpoint signed in Vault: %v", err)
	}
	if cp.KeyID != audit.KeyID(pub) {
		t.Fatalf("key id %s, want %s", cp.KeyID, audit.KeyID(pub))
	}

	// After rotation the new version signs, under a new key id; old checkpoints still verify
	// under the old public key.
	if _, err := f.root.Logical().WriteWithContext(ctx, "transit/keys/audit/rotate", nil); err != nil {
		t.Fatal(err)
	}
	cp2, err := audit.SignCheckpoint(ctx, ks, "clinic", 43, head, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := ks.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(pub, pub2) || cp2.KeyID != audit.KeyID(pub2) || cp2.KeyID == cp.KeyID {
		t.Fatalf("after rotation: key id %s (before %s), public key changed=%v", cp2.KeyID, cp.KeyID, !bytes.Equal(pub, pub2))
	}
	if err := audit.VerifyCheckpoint(pub2, cp2); err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyCheckpoint(pub, cp); err != nil {
		t.Fatal(err)
	}
	if ed25519.Verify(pub, audit.CheckpointBody(cp2.Tenant, cp2.Size, cp2.Head, cp2.Time), cp2.Signature) {
		t.Fatal("a new-version signature verifies under the old key")
	}
}

// assertTemporary checks the contract for a Vault failure: a temporary error and no key.
func assertTemporary(t *testing.T, what string, dk DataKey, err error) {
	t.Helper()
	if !IsTemporary(err) {
		t.Fatalf("%s: %v; want a temporary error", what, err)
	}
	if dk.Plaintext != nil || dk.Wrapped != "" {
		t.Fatalf("%s: a data key came back with the error", what)
	}
}

func TestTransitForbiddenIsTemporary(t *testing.T) {
	f := newTransitFixture(t)
	ctx := t.Context()
	if err := f.root.Sys().PutPolicyWithContext(ctx, "sign-only", `path "transit/sign/audit" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	ks := f.start(t, transitOpts{token: newToken(t, f.root, "sign-only")})
	waitReady(t, ks)
	dk, err := ks.WrapNewKey(ctx)
	assertTemporary(t, "encrypt without permission", dk, err)
	if !strings.Contains(err.Error(), "403") && !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("error does not say Vault refused: %v", err)
	}

	// A revoked token: temporary too, and Health says so.
	ks = f.start(t, transitOpts{})
	waitReady(t, ks)
	if _, err := ks.WrapNewKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.root.Auth().Token().RevokeTreeWithContext(ctx, f.token); err != nil {
		t.Fatal(err)
	}
	dk, err = ks.WrapNewKey(ctx)
	assertTemporary(t, "encrypt with a revoked token", dk, err)
	time.Sleep(healthCacheFor)
	if err := ks.Health(ctx); !IsTemporary(err) {
		t.Fatalf("health with a revoked token: %v", err)
	}
}

func TestTransitBadTokenNeverLogsIn(t *testing.T) {
	f := newTransitFixture(t)
	ks := f.start(t, transitOpts{token: "hvs.not-a-token"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := ks.WaitReady(ctx); !IsTemporary(err) || !strings.Contains(err.Error(), "log in") {
		t.Fatalf("WaitReady with a bad token: %v; want a temporary login error", err)
	}
	dk, err := ks.WrapNewKey(t.Context())
	assertTemporary(t, "wrap before login", dk, err)
	if err := ks.Health(t.Context()); !IsTemporary(err) {
		t.Fatalf("health before login: %v", err)
	}
}

// TestTransitVaultHangs: a Vault that stops answering (SIGSTOP) gives a temporary error after
// the configured timeout, for batched and unbatched calls, and service resumes with Vault.
func TestTransitVaultHangs(t *testing.T) {
	f := newTransitFixture(t)
	batched := f.start(t, transitOpts{timeout: 300 * time.Millisecond})
	unbatched := f.start(t, transitOpts{timeout: 300 * time.Millisecond, batch: BatchConfig{Disabled: true}})
	waitReady(t, batched)
	waitReady(t, unbatched)
	ctx := t.Context()
	wrapped, err := batched.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := f.vault.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.vault.Resume() })
	for name, ks := range map[string]*Transit{"batched": batched, "unbatched": unbatched} {
		dk, err := ks.WrapNewKey(ctx)
		assertTemporary(t, name+" wrap while Vault hangs", dk, err)
		if _, err := ks.Unwrap(ctx, wrapped.Wrapped); !IsTemporary(err) {
			t.Fatalf("%s unwrap while Vault hangs: %v; want temporary", name, err)
		}
	}
	// The caller's own deadline counts too.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := batched.WrapNewKey(short); !IsTemporary(err) {
		t.Fatalf("wrap with an expiring context: %v; want temporary", err)
	}

	if err := f.vault.Resume(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "wrap after Vault resumed", func() error {
		_, err := batched.WrapNewKey(ctx)
		return err
	})
	if _, err := unbatched.Unwrap(ctx, wrapped.Wrapped); err != nil {
		t.Fatalf("unwrap after Vault resumed: %v", err)
	}
}

// TestTransitVaultSealedOrGone: sealed (503) and stopped (connection refused) are temporary.
func TestTransitVaultSealedOrGone(t *testing.T) {
	f := newTransitFixture(t)
	ks := f.start(t, transitOpts{timeout: time.Second})
	waitReady(t, ks)
	ctx := t.Context()
	if err := ks.Health(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	if err := f.root.Sys().SealWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	dk, err := ks.WrapNewKey(ctx)
	assertTemporary(t, "wrap while sealed", dk, err)
	if !strings.Contains(err.Error(), "503") && !strings.Contains(err.Error(), "sealed") {
		t.Fatalf("error does not say Vault is sealed: %v", err)
	}
	if _, _, err := ks.Sign(ctx, []byte("checkpoint")); !IsTemporary(err) {
		t.Fatalf("sign while sealed: %v", err)
	}

	if err := f.vault.Stop(); err != nil {
		t.Fatal(err)
	}
	dk, err = ks.WrapNewKey(ctx)
	assertTemporary(t, "wrap with Vault gone", dk, err)
	time.Sleep(healthCacheFor)
	if err := ks.Health(ctx); !IsTemporary(err) {
		t.Fatalf("health with Vault gone: %v", err)
	}
}

// TestTransitCloseAnswersWaiters: requests queued at Close get a temporary error, not a hang.
func TestTransitCloseAnswersWaiters(t *testing.T) {
	f := newTransitFixture(t)
	ks := f.start(t, transitOpts{timeout: 2 * time.Second, batch: BatchConfig{MaxInFlight: 1}})
	waitReady(t, ks)
	if err := f.vault.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.vault.Resume() })
	var failed atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := ks.WrapNewKey(context.Background()); IsTemporary(err) {
				failed.Add(1)
			} else {
				t.Errorf("queued caller: %v", err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	ks.Close()
	wg.Wait()
	if failed.Load() != 8 {
		t.Fatalf("%d of 8 queued callers got a temporary error", failed.Load())
	}
	if _, err := ks.WrapNewKey(context.Background()); !IsTemporary(err) {
		t.Fatalf("wrap after Close: %v", err)
	}
}
