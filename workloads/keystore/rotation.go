package keystore

// Keeping data keys readable across rotations of the wrapping key, so that old versions can be
// destroyed. The operator rotates the tenant's wrapping key and, once the retention sweeper
// reports that no stored message needs an old version any more, raises min_decryption_version
// and trims those versions (controllers/vault.go): a database backup taken before a purge still
// holds the purged message's wrapped data key, and only destroying the key version that wrapped
// it makes that copy unreadable. The keystore serves the two calls the sweeper needs for this,
// to the gateway only: which versions exist (KeyVersions) and rewrapping data keys with the
// latest version (Rewrap, Transit's rewrap: the data keys never leave Vault).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/securetext/securetext/workloads/tenantpki"
)

// RotationSettle is how long after a rotation a data key wrapped by an older version may
// still be stored: a client's reserve holds a key for at most MaxReserveMaxAge, and intake's
// calls time out in seconds. A version that was the latest RotationSettle ago or earlier is
// therefore the oldest a newly stored message can carry.
const RotationSettle = 10 * time.Minute

// KeyVersions describes the versions of the tenant's wrapping key.
type KeyVersions struct {
	// Latest wraps new data keys.
	Latest int `json:"latest"`
	// MinDecryption is the oldest version Vault still unwraps with.
	MinDecryption int `json:"min_decryption"`
	// MinAvailable is the oldest version that still exists: every version below it was
	// destroyed, and so was every data key wrapped only by one of them.
	MinAvailable int `json:"min_available"`
	// Created is when each available version was made.
	Created map[int]time.Time `json:"created"`
	// Trims reports whether old versions can be destroyed at all: false for a local key file,
	// which has one version.
	Trims bool `json:"trims"`
}

// LatestAt is the version that was the latest at t: the newest one created at or before t,
// or 0 if none was.
func (v KeyVersions) LatestAt(t time.Time) int {
	best := 0
	for n, c := range v.Created {
		if !c.After(t) && n > best {
			best = n
		}
	}
	return best
}

// KeyRing is the part of a Service that lets stored data keys follow the wrapping key's
// rotations. Transit, Local and Client implement it.
type KeyRing interface {
	// KeyVersions returns the versions of the wrapping key.
	KeyVersions(ctx context.Context) (KeyVersions, error)
	// Rewrap wraps the data key inside each of wrapped again with the latest version, without
	// the data key leaving the key holder. A key that is not the tenant's (altered, another
	// key, a destroyed version) fails alone with ErrInvalidWrappedKey; a key holder that
	// cannot serve fails the call with a temporary error.
	Rewrap(ctx context.Context, wrapped []string) ([]string, []error, error)
}

// WrappedVersion is the version of the wrapping key that wrapped a data key, read from its
// prefix ("vault:v3:…" is version 3, "local:v1:…" version 1).
func WrappedVersion(wrapped string) (int, error) {
	_, rest, ok := strings.Cut(wrapped, ":v")
	version, _, ok2 := strings.Cut(rest, ":")
	n, err := strconv.Atoi(version)
	if !ok || !ok2 || err != nil || n < 1 {
		return 0, fmt.Errorf("%w: no key version in its prefix (want <holder>:v<N>:…)", ErrInvalidWrappedKey)
	}
	return n, nil
}

// KeyVersions implements KeyRing: GET <mount>/keys/<wrapping key>.
func (t *Transit) KeyVersions(ctx context.Context) (KeyVersions, error) {
	var out struct {
		Data struct {
			LatestVersion        int              `json:"latest_version"`
			MinDecryptionVersion int              `json:"min_decryption_version"`
			MinAvailableVersion  int              `json:"min_available_version"`
			Keys                 map[string]int64 `json:"keys"` // version → Unix seconds (symmetric keys)
		} `json:"data"`
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	if _, err := t.call(ctx, "keys/"+t.cfg.WrappingKey, nil, &out); err != nil {
		return KeyVersions{}, fmt.Errorf("read wrapping key versions: %w", err)
	}
	d := out.Data
	v := KeyVersions{Latest: d.LatestVersion, MinDecryption: max(d.MinDecryptionVersion, 1),
		MinAvailable: max(d.MinAvailableVersion, 1), Created: make(map[int]time.Time, len(d.Keys)), Trims: true}
	for s, unix := range d.Keys {
		n, err := strconv.Atoi(s)
		if err != nil {
			return KeyVersions{}, unavailable("read wrapping key versions", fmt.Errorf("version %q is not a number", s))
		}
		v.Created[n] = time.Unix(unix, 0).UTC()
	}
	if _, ok := v.Created[v.Latest]; !ok {
		return KeyVersions{}, unavailable("read wrapping key versions", fmt.Errorf("latest version %d is missing", v.Latest))
	}
	return v, nil
}

// Rewrap implements KeyRing: POST <mount>/rewrap/<wrapping key> with batch_input.
func (t *Transit) Rewrap(ctx context.Context, wrapped []string) ([]string, []error, error) {
	out := make([]string, len(wrapped))
	errs := make([]error, len(wrapped))
	var items []batchItem
	var at []int
	for i, w := range wrapped {
		if err := checkVaultCiphertext(w); err != nil {
			errs[i] = fmt.Errorf("rewrap data key: %w", err)
			continue
		}
		items = append(items, batchItem{Ciphertext: w})
		at = append(at, i)
	}
	if len(items) == 0 {
		return out, errs, nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	results, err := t.transitBatch(ctx, "rewrap/"+t.cfg.WrappingKey, items)
	if err != nil {
		return nil, nil, fmt.Errorf("rewrap data keys: %w", err)
	}
	for j, r := range results {
		i := at[j]
		switch {
		case r.Error != "":
			errs[i] = fmt.Errorf("%w: Vault: %s", ErrInvalidWrappedKey, r.Error)
		case checkVaultCiphertext(r.Ciphertext) != nil:
			return nil, nil, unavailable("rewrap data keys", errors.New("Vault returned no usable ciphertext"))
		default:
			out[i] = r.Ciphertext
		}
	}
	return out, errs, nil
}

// KeyVersions implements KeyRing: a key file has one version, which is never destroyed.
func (l *Local) KeyVersions(context.Context) (KeyVersions, error) {
	return KeyVersions{Latest: 1, MinDecryption: 1, MinAvailable: 1, Created: map[int]time.Time{1: {}}}, nil
}

// Rewrap implements KeyRing: with one version there is nothing to move, so each key that
// unwraps is returned as it is.
func (l *Local) Rewrap(ctx context.Context, wrapped []string) ([]string, []error, error) {
	out := make([]string, len(wrapped))
	errs := make([]error, len(wrapped))
	for i, w := range wrapped {
		key, err := l.Unwrap(ctx, w)
		clear(key)
		if err != nil {
			errs[i] = err
			continue
		}
		out[i] = w
	}
	return out, errs, nil
}

// keyRingComponents may call the key ring operations: the gateway, whose retention sweeper
// moves the stored data keys.
var keyRingComponents = []string{tenantpki.ComponentGateway}

func (s *Server) keyRing(w http.ResponseWriter) (KeyRing, bool) {
	kr, ok := s.svc.(KeyRing)
	if !ok {
		writeProblem(w, http.StatusNotImplemented, "not-implemented", "Not implemented",
			"this keystore's key holder cannot list or rewrap key versions")
	}
	return kr, ok
}

func (s *Server) keyVersions(w http.ResponseWriter, r *http.Request) {
	kr, ok := s.keyRing(w)
	if !ok {
		return
	}
	v, err := kr.KeyVersions(r.Context())
	if err != nil {
		s.fail(w, r, "key-versions", err)
		return
	}
	writeJSONValue(w, v)
}

// rewrap answers {"wrapped_keys": [k, …]} with {"results": [{"wrapped": …} or {"error":
// "invalid-wrapped-key"}, …]} in the same order, like unwrap.
func (s *Server) rewrap(w http.ResponseWriter, r *http.Request) {
	kr, ok := s.keyRing(w)
	if !ok {
		return
	}
	var req struct {
		WrappedKeys []string `json:"wrapped_keys"`
	}
	const example = `{"wrapped_keys": ["<wrapped key>", …]}`
	if !decodeRequest(w, r, &req, false, example) {
		return
	}
	if len(req.WrappedKeys) < 1 || len(req.WrappedKeys) > maxWrapCount {
		badRequest(w, fmt.Sprintf("wrapped_keys must hold 1 to %d keys: send %s", maxWrapCount, example))
		return
	}
	s.metrics.Load().observeKeys("rewrap", len(req.WrappedKeys))
	out, errs, err := kr.Rewrap(r.Context(), req.WrappedKeys)
	if err != nil {
		s.fail(w, r, "rewrap", err)
		return
	}
	type result struct {
		Wrapped string `json:"wrapped,omitempty"`
		Error   string `json:"error,omitempty"`
	}
	results := make([]result, len(out))
	for i := range out {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrInvalidWrappedKey) {
				s.fail(w, r, "rewrap", errs[i])
				return
			}
			s.log.WarnContext(r.Context(), "keystore refused a wrapped key", "operation", "rewrap", "error", errs[i].Error())
			results[i].Error = "invalid-wrapped-key"
			continue
		}
		results[i].Wrapped = out[i]
	}
	writeJSONValue(w, struct {
		Results []result `json:"results"`
	}{results})
}

// KeyVersions implements KeyRing.
func (c *Client) KeyVersions(ctx context.Context) (KeyVersions, error) {
	var v KeyVersions
	if err := c.call(ctx, "key-versions", http.MethodGet, "/v1/keys/versions", nil, &v); err != nil {
		return KeyVersions{}, err
	}
	return v, nil
}

// Rewrap implements KeyRing, in requests of at most 256 keys sent one after another.
func (c *Client) Rewrap(ctx context.Context, wrapped []string) ([]string, []error, error) {
	out := make([]string, 0, len(wrapped))
	errs := make([]error, 0, len(wrapped))
	for chunk := range slices.Chunk(wrapped, maxWrapCount) {
		body, err := json.Marshal(struct {
			WrappedKeys []string `json:"wrapped_keys"`
		}{chunk})
		if err != nil {
			return nil, nil, fmt.Errorf("keystore: rewrap: encode request: %w", err)
		}
		var resp struct {
			Results []struct {
				Wrapped string `json:"wrapped"`
				Error   string `json:"error"`
			} `json:"results"`
		}
		if err := c.call(ctx, "rewrap", http.MethodPost, "/v1/keys/rewrap", body, &resp); err != nil {
			return nil, nil, err
		}
		if len(resp.Results) != len(chunk) {
			return nil, nil, fmt.Errorf("keystore: rewrap: keystore answered %d keys for %d: %w", len(resp.Results), len(chunk), ErrUnavailable)
		}
		for _, r := range resp.Results {
			switch {
			case r.Error != "":
				out, errs = append(out, ""), append(errs, fmt.Errorf("keystore: rewrap: the keystore refused the wrapped key (%s): %w", r.Error, ErrInvalidWrappedKey))
			case r.Wrapped == "":
				return nil, nil, fmt.Errorf("keystore: rewrap: keystore answered no wrapped key: %w", ErrUnavailable)
			default:
				out, errs = append(out, r.Wrapped), append(errs, nil)
			}
		}
	}
	return out, errs, nil
}
