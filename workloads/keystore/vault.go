package keystore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securetext/securetext/workloads/internal/batch"
	"github.com/securetext/securetext/workloads/vaultlogin"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
)

// TransitConfig configures the Vault Transit backend of one tenant.
type TransitConfig struct {
	// Client talks to Vault: address, TLS and namespace are set by the caller. Transit sets
	// its token (through Auth) and turns off the client's own retries: a failed call becomes a
	// temporary error at once and the sender retries, which bounds every call by Timeout.
	Client *vaultapi.Client
	// Auth logs in to Vault: KubernetesAuth in a cluster, TokenAuth for development.
	Auth vaultlogin.Auth
	// Mount is the path of the tenant's Transit mount, for example "transit".
	Mount string
	// WrappingKey names the aes256-gcm96 key that wraps data keys.
	WrappingKey string
	// SigningKey names the ed25519 key that signs audit checkpoints.
	SigningKey string
	// Timeout bounds each Vault call, including the wait for a batch slot. Default 5 s.
	Timeout time.Duration
	// Batch controls how concurrent WrapNewKey and Unwrap calls are coalesced. Its default
	// MaxInFlight is TransitMaxInFlight.
	Batch BatchConfig
	// Logger gets login and renewal events; never key material.
	Logger *slog.Logger
}

// TransitMaxInFlight is how many Transit batch calls of one kind (wrap, unwrap) a keystore
// keeps in progress by default. Vault spends most of a call on the request itself, not on its
// items, so fewer and fuller batches cost it less per message; the calls that wait for a slot
// leave together in the next batch. hack/bench/gateway measures Vault's CPU per message.
const TransitMaxInFlight = 2

// Transit is the production Service: data keys are generated here from crypto/rand and
// wrapped with the tenant's Transit key (POST <mount>/encrypt/<key> with batch_input); they
// are unwrapped with <mount>/decrypt/<key>; checkpoints are signed with <mount>/sign/<key>.
// The Transit keys never leave Vault.
type Transit struct {
	cfg    TransitConfig
	client *vaultapi.Client
	log    *slog.Logger

	wrap   *batch.Batcher[[]byte, string]
	unwrap *batch.Batcher[string, []byte]

	login *vaultlogin.Session

	metrics atomic.Pointer[Metrics] // set by Instrument

	mu         sync.Mutex
	publicKeys map[int]ed25519.PublicKey // signing key versions never change once created
	healthAt   time.Time
	healthErr  error
}

// healthCacheFor keeps kubelet probes from turning into a stream of Vault reads.
const healthCacheFor = time.Second

// NewTransit starts a Transit backend. It does not wait for Vault: it logs in in the background
// and keeps its token renewed, and until the first login succeeds every call fails with a
// temporary error (and Health says why). Close stops it.
func NewTransit(cfg TransitConfig) (*Transit, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("keystore: TransitConfig.Client is required")
	case cfg.Auth == nil:
		return nil, errors.New("keystore: TransitConfig.Auth is required")
	case cfg.Mount == "" || cfg.WrappingKey == "" || cfg.SigningKey == "":
		return nil, errors.New("keystore: TransitConfig needs Mount, WrappingKey and SigningKey")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Batch.MaxInFlight <= 0 {
		cfg.Batch.MaxInFlight = TransitMaxInFlight
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	client, err := cfg.Client.Clone() // our own token and settings, not the caller's
	if err != nil {
		return nil, fmt.Errorf("keystore: copy Vault client: %w", err)
	}
	client.SetMaxRetries(0)
	client.SetCloneToken(false)
	// The client's own timeout would cancel a raw response before its body is read (the Raw
	// calls return the response after cancelling their context); cfg.Timeout bounds calls.
	client.SetClientTimeout(0)
	t := &Transit{
		cfg:        cfg,
		client:     client,
		log:        cfg.Logger,
		publicKeys: map[int]ed25519.PublicKey{},
	}
	t.wrap = batch.New(cfg.Batch, cfg.Timeout, t.encryptBatch, func(k string) {}, unavailable)
	t.unwrap = batch.New(cfg.Batch, cfg.Timeout, t.decryptBatch, envelope.Zero, unavailable)
	t.login = vaultlogin.Start(client, cfg.Auth, cfg.Logger)
	return t, nil
}

// Close stops logging in and renewing, and answers queued requests with a temporary error.
func (t *Transit) Close() {
	t.login.Stop()
	t.wrap.Close()
	t.unwrap.Close()
}

// WaitReady waits until the first login has succeeded, for start-up and tests.
func (t *Transit) WaitReady(ctx context.Context) error {
	if err := t.login.WaitLoggedIn(ctx); err != nil {
		return unavailable("log in to Vault", err)
	}
	return nil
}

// WrapNewKey implements Service.
func (t *Transit) WrapNewKey(ctx context.Context) (DataKey, error) {
	key := make([]byte, DataKeySize)
	if _, err := rand.Read(key); err != nil { // never fails on Linux since Go 1.24; be explicit anyway
		return DataKey{}, fmt.Errorf("keystore: generate data key: %w", err)
	}
	wrapped, err := t.wrap.Do(ctx, key)
	if err != nil {
		envelope.Zero(key)
		return DataKey{}, fmt.Errorf("wrap new data key: %w", err)
	}
	return DataKey{Plaintext: key, Wrapped: wrapped}, nil
}

// Unwrap implements Service.
func (t *Transit) Unwrap(ctx context.Context, wrapped string) ([]byte, error) {
	if err := checkVaultCiphertext(wrapped); err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	key, err := t.unwrap.Do(ctx, wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	return key, nil
}

// checkVaultCiphertext refuses what Vault would refuse, without a round trip.
func checkVaultCiphertext(wrapped string) error {
	rest, ok := strings.CutPrefix(wrapped, "vault:v")
	version, body, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return fmt.Errorf("%w: not a Vault Transit ciphertext (want vault:v<N>:<base64>)", ErrInvalidWrappedKey)
	}
	if n, err := strconv.Atoi(version); err != nil || n < 1 {
		return fmt.Errorf("%w: bad key version %q", ErrInvalidWrappedKey, version)
	}
	if _, err := base64.StdEncoding.DecodeString(body); err != nil || len(body) == 0 {
		return fmt.Errorf("%w: ciphertext is not base64", ErrInvalidWrappedKey)
	}
	return nil
}

// Sign implements audit.Signer for the keystore's audit.Notary, never for callers:
// POST <mount>/sign/<key>, whose signature is
// "vault:v<N>:<base64>" made with version N of the key.
func (t *Transit) Sign(ctx context.Context, msg []byte) ([]byte, string, error) {
	var out struct {
		Data struct {
			Signature string `json:"signature"`
		} `json:"data"`
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	body := map[string]any{"input": base64.StdEncoding.EncodeToString(msg)}
	if _, err := t.call(ctx, "sign/"+t.cfg.SigningKey, body, &out); err != nil {
		return nil, "", fmt.Errorf("sign with the audit key: %w", err)
	}
	version, sig, err := parseVaultSignature(out.Data.Signature)
	if err != nil {
		return nil, "", unavailable("read Vault's signature", err)
	}
	pub, err := t.publicKey(ctx, version)
	if err != nil {
		return nil, "", fmt.Errorf("sign with the audit key: %w", err)
	}
	// A signature that does not verify is never handed out: it would fail the audit export.
	if !ed25519.Verify(pub, msg, sig) {
		return nil, "", unavailable("sign with the audit key", errors.New("Vault's signature does not verify under the key's public key"))
	}
	return sig, audit.KeyID(pub), nil
}

func parseVaultSignature(s string) (int, []byte, error) {
	rest, ok := strings.CutPrefix(s, "vault:v")
	version, body, ok2 := strings.Cut(rest, ":")
	n, err := strconv.Atoi(version)
	if !ok || !ok2 || err != nil || n < 1 {
		return 0, nil, fmt.Errorf("signature %.20q… is not vault:v<N>:<base64>", s)
	}
	sig, err := base64.StdEncoding.DecodeString(body)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return 0, nil, errors.New("signature is not a base64 ed25519 signature")
	}
	return n, sig, nil
}

// PublicKey implements Service: the latest version of the signing key.
func (t *Transit) PublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	keys, latest, err := t.readSigningKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	return keys[latest], nil
}

func (t *Transit) publicKey(ctx context.Context, version int) (ed25519.PublicKey, error) {
	t.mu.Lock()
	pub, ok := t.publicKeys[version]
	t.mu.Unlock()
	if ok {
		return pub, nil
	}
	keys, _, err := t.readSigningKey(ctx)
	if err != nil {
		return nil, err
	}
	if pub, ok := keys[version]; ok {
		return pub, nil
	}
	return nil, unavailable("read audit signing key", fmt.Errorf("Vault has no version %d of key %s", version, t.cfg.SigningKey))
}

// readSigningKey reads GET <mount>/keys/<signing key> and caches every version's public key.
func (t *Transit) readSigningKey(ctx context.Context) (map[int]ed25519.PublicKey, int, error) {
	var out struct {
		Data struct {
			Type          string `json:"type"`
			LatestVersion int    `json:"latest_version"`
			Keys          map[string]struct {
				PublicKey string `json:"public_key"`
			} `json:"keys"`
		} `json:"data"`
	}
	if _, err := t.call(ctx, "keys/"+t.cfg.SigningKey, nil, &out); err != nil {
		return nil, 0, err
	}
	if out.Data.Type != "ed25519" {
		return nil, 0, unavailable("read audit signing key", fmt.Errorf("key %s is of type %q, want ed25519", t.cfg.SigningKey, out.Data.Type))
	}
	keys := make(map[int]ed25519.PublicKey, len(out.Data.Keys))
	for v, k := range out.Data.Keys {
		n, err := strconv.Atoi(v)
		pub, err2 := base64.StdEncoding.DecodeString(k.PublicKey)
		if err != nil || err2 != nil || len(pub) != ed25519.PublicKeySize {
			return nil, 0, unavailable("read audit signing key", fmt.Errorf("version %q has no valid ed25519 public key", v))
		}
		keys[n] = pub
	}
	if _, ok := keys[out.Data.LatestVersion]; !ok {
		return nil, 0, unavailable("read audit signing key", fmt.Errorf("latest version %d is missing", out.Data.LatestVersion))
	}
	t.mu.Lock()
	for n, pub := range keys {
		t.publicKeys[n] = pub
	}
	t.mu.Unlock()
	return keys, out.Data.LatestVersion, nil
}

// Health implements Service: logged in, and both Transit keys readable. The answer is cached
// for a second.
func (t *Transit) Health(ctx context.Context) error {
	t.mu.Lock()
	if time.Since(t.healthAt) < healthCacheFor {
		err := t.healthErr
		t.mu.Unlock()
		return err
	}
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	err := t.loginErr()
	if err == nil {
		_, _, err = t.readSigningKey(ctx)
	}
	if err == nil {
		var out struct {
			Data struct {
				Type string `json:"type"`
			} `json:"data"`
		}
		_, err = t.call(ctx, "keys/"+t.cfg.WrappingKey, nil, &out)
		if err == nil && out.Data.Type != "aes256-gcm96" {
			err = unavailable("read wrapping key", fmt.Errorf("key %s is of type %q, want aes256-gcm96", t.cfg.WrappingKey, out.Data.Type))
		}
	}
	if err != nil {
		err = fmt.Errorf("keystore health: %w", err)
	}
	t.mu.Lock()
	t.healthAt, t.healthErr = time.Now(), err
	t.mu.Unlock()
	return err
}

// batchItem is one entry of Transit's batch_input and batch_results.
type batchItem struct {
	Plaintext  string `json:"plaintext,omitempty"`
	Ciphertext string `json:"ciphertext,omitempty"`
	Error      string `json:"error,omitempty"`
}

// encryptBatch wraps data keys: POST <mount>/encrypt/<key>. With batching off it sends the
// single-item form, exactly what an application calling Vault directly would send.
func (t *Transit) encryptBatch(ctx context.Context, keys [][]byte) ([]string, []error, error) {
	items := make([]batchItem, len(keys))
	for i, k := range keys {
		items[i].Plaintext = base64.StdEncoding.EncodeToString(k)
	}
	results, err := t.transitBatch(ctx, "encrypt/"+t.cfg.WrappingKey, items)
	if err != nil {
		return nil, nil, err
	}
	wrapped := make([]string, len(results))
	errs := make([]error, len(results))
	for i, r := range results {
		switch {
		case r.Error != "":
			// Our plaintext is always valid input, so this is Vault's problem, not the caller's.
			errs[i] = unavailable("wrap data key", errors.New(r.Error))
		case checkVaultCiphertext(r.Ciphertext) != nil:
			errs[i] = unavailable("wrap data key", errors.New("Vault returned no usable ciphertext"))
		default:
			wrapped[i] = r.Ciphertext
		}
	}
	return wrapped, errs, nil
}

// decryptBatch unwraps data keys: POST <mount>/decrypt/<key>. A per-item error means that
// wrapped key is bad (altered, another key, a version below min_decryption_version).
func (t *Transit) decryptBatch(ctx context.Context, wrapped []string) ([][]byte, []error, error) {
	items := make([]batchItem, len(wrapped))
	for i, w := range wrapped {
		items[i].Ciphertext = w
	}
	results, err := t.transitBatch(ctx, "decrypt/"+t.cfg.WrappingKey, items)
	if err != nil {
		return nil, nil, err
	}
	keys := make([][]byte, len(results))
	errs := make([]error, len(results))
	for i, r := range results {
		if r.Error != "" {
			errs[i] = fmt.Errorf("%w: Vault: %s", ErrInvalidWrappedKey, r.Error)
			continue
		}
		key, err := base64.StdEncoding.DecodeString(r.Plaintext)
		if err != nil || len(key) != DataKeySize {
			envelope.Zero(key)
			errs[i] = fmt.Errorf("%w: it does not hold a %d-byte data key", ErrInvalidWrappedKey, DataKeySize)
			continue
		}
		keys[i] = key
	}
	return keys, errs, nil
}

// transitBatch sends items to a Transit encrypt or decrypt endpoint and returns one result per
// item. partial_failure_response_code makes a batch in which only some items fail answer 200
// with per-item errors; a batch in which all fail still answers 400 with batch_results, and
// transitBatch returns those too.
func (t *Transit) transitBatch(ctx context.Context, path string, items []batchItem) ([]batchItem, error) {
	if m := t.metrics.Load(); m != nil {
		op, _, _ := strings.Cut(path, "/")
		defer m.observeVaultBatch(op, len(items), time.Now())
	}
	if t.cfg.Batch.Disabled && len(items) == 1 {
		var out struct {
			Data batchItem `json:"data"`
		}
		status, err := t.call(ctx, path, items[0], &out)
		if status == http.StatusBadRequest && strings.HasPrefix(path, "decrypt/") {
			return []batchItem{{Error: "Vault could not decrypt it"}}, nil
		}
		if err != nil {
			return nil, err
		}
		return []batchItem{out.Data}, nil
	}
	var out struct {
		Data struct {
			BatchResults []batchItem `json:"batch_results"`
		} `json:"data"`
	}
	body := map[string]any{"batch_input": items, "partial_failure_response_code": http.StatusOK}
	status, err := t.call(ctx, path, body, &out)
	if status == http.StatusBadRequest && len(out.Data.BatchResults) == len(items) {
		return out.Data.BatchResults, nil
	}
	if err != nil {
		return nil, err
	}
	if len(out.Data.BatchResults) != len(items) {
		return nil, unavailable("read Vault's batch results", fmt.Errorf("%d results for %d items", len(out.Data.BatchResults), len(items)))
	}
	return out.Data.BatchResults, nil
}

func vaultErrorText(err error) string {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && len(re.Errors) > 0 {
		return strings.Join(re.Errors, "; ")
	}
	if err != nil {
		return err.Error()
	}
	return "rejected"
}

// call sends one request to <mount>/<path> (a write when body is non-nil, else a read) and
// decodes the JSON answer into out. It returns the HTTP status, 0 when there was no answer.
// Every failure is temporary; on a 400 out is still decoded when the body holds data, for
// callers that read per-item errors. A 403 also asks for a new login, in case the token was
// revoked or expired early.
func (t *Transit) call(ctx context.Context, path string, body, out any) (int, error) {
	return t.callPath(ctx, t.cfg.Mount+"/"+path, body, out)
}

// callPath is call with a path from Vault's root, for mounts other than Transit's.
func (t *Transit) callPath(ctx context.Context, full string, body, out any) (int, error) {
	if err := t.loginErr(); err != nil {
		return 0, err
	}
	var (
		resp *vaultapi.Response
		err  error
	)
	if body == nil {
		resp, err = t.client.Logical().ReadRawWithContext(ctx, full)
	} else {
		var b []byte
		if b, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("keystore: encode request to %s: %w", full, err)
		}
		resp, err = t.client.Logical().WriteRawWithContext(ctx, full, b)
	}
	if resp == nil || resp.Response == nil {
		if err == nil {
			err = errors.New("no response")
		}
		return 0, unavailable("call Vault "+full, err)
	}
	defer resp.Body.Close()
	status := resp.StatusCode
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if readErr != nil {
		return status, unavailable("read Vault's answer from "+full, readErr)
	}
	if (err == nil || status == http.StatusBadRequest) && len(bytes.TrimSpace(raw)) > 0 {
		if decErr := json.Unmarshal(raw, out); decErr != nil && err == nil {
			return status, unavailable("decode Vault's answer from "+full, decErr)
		}
	}
	switch {
	case err == nil:
		return status, nil
	case status == http.StatusBadRequest:
		// A well-formed request refused: a missing or mistyped key, a policy the operator has
		// not finished. Temporary for senders; the caller may still read per-item errors.
		return status, unavailable("Vault refused "+full, errors.New(vaultErrorText(err)))
	case status == http.StatusForbidden:
		t.login.RequestLogin()
	}
	return status, unavailable("call Vault "+full, err)
}

// tempError is a temporary failure: it matches ErrUnavailable and its cause.
type tempError struct {
	op    string
	cause error
}

func (e *tempError) Error() string {
	return "keystore: " + e.op + ": " + e.cause.Error() + " (temporary: retry later)"
}

func (e *tempError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }

func unavailable(op string, cause error) error {
	if cause == nil {
		cause = errors.New("unknown cause")
	}
	return &tempError{op: op, cause: cause}
}

// loginErr is nil while the keystore is logged in to Vault, and otherwise a temporary error.
func (t *Transit) loginErr() error {
	if err := t.login.Err(); err != nil {
		return unavailable("log in to Vault", err)
	}
	return nil
}

// BatchConfig controls how concurrent requests are coalesced into one Vault call (Transit's
// batch_input), so that Vault round trips grow with the number of batches, not with the
// message rate; and in the Client, into one keystore request.
type BatchConfig = batch.Config
