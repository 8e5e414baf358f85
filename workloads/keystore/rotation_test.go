package keystore

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/tenantpki"
)

// Through the keystore's API on a real Vault, as the retention sweeper uses it: a data key
// wrapped by version 1 is rewrapped by version 2 after a rotation and still unwraps to the same
// key; once the operator trims version 1, the old wrapped form (a database backup's copy) no
// longer unwraps anywhere, and KeyVersions shows it. The keystore's own token can neither
// rotate, configure nor trim, and the viewer may not rewrap.
func TestTransitRewrapThenTrim(t *testing.T) {
	ctx := context.Background()
	fx := newTransitFixture(t)
	backend := fx.start(t, transitOpts{})
	if err := backend.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	ks := startKeystore(t, backend, nil)
	gw := ks.gateway(t)

	dk, err := gw.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := WrappedVersion(dk.Wrapped); err != nil || v != 1 {
		t.Fatalf("WrappedVersion(%.12s…) = %d, %v; want 1", dk.Wrapped, v, err)
	}
	if _, err := fx.root.Logical().WriteWithContext(ctx, "transit/keys/messages/rotate", nil); err != nil {
		t.Fatal(err)
	}
	v, err := gw.KeyVersions(ctx)
	if err != nil {
		t.Fatalf("KeyVersions: %v", err)
	}
	if v.Latest != 2 || v.MinDecryption != 1 || v.MinAvailable != 1 || !v.Trims || len(v.Created) != 2 {
		t.Fatalf("KeyVersions after a rotation = %+v", v)
	}
	if got := v.LatestAt(time.Now().Add(time.Minute)); got != 2 {
		t.Errorf("LatestAt(now) = %d, want 2", got)
	}

	out, errs, err := gw.Rewrap(ctx, []string{dk.Wrapped, "vault:v1:" + strings.Repeat("A", 40)})
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if errs[0] != nil || !strings.HasPrefix(out[0], "vault:v2:") {
		t.Fatalf("Rewrap = %.12q…, %v; want a vault:v2: key", out[0], errs[0])
	}
	if !errors.Is(errs[1], ErrInvalidWrappedKey) {
		t.Errorf("Rewrap of a forged key: error %v, want ErrInvalidWrappedKey", errs[1])
	}
	key, err := gw.Unwrap(ctx, out[0])
	if err != nil || !bytes.Equal(key, dk.Plaintext) {
		t.Fatalf("the rewrapped key unwraps to another key (%v)", err)
	}

	// The keystore's policy stops at rewrap: destroying versions is the operator's.
	limited := fx.start(t, transitOpts{})
	if err := limited.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"keys/messages/rotate", "keys/messages/config", "keys/messages/trim"} {
		if status, err := limited.call(ctx, p, map[string]any{"min_decryption_version": 2, "min_available_version": 2}, nil); status != http.StatusForbidden {
			t.Errorf("keystore token on %s: status %d (%v), want 403", p, status, err)
		}
	}

	// As the operator does it (controllers, TrimWrappingKey): Vault trims only above a set
	// minimum decryption and encryption version.
	for _, w := range []struct {
		path string
		body map[string]any
	}{
		{"transit/keys/messages/config", map[string]any{"min_decryption_version": 2, "min_encryption_version": 2}},
		{"transit/keys/messages/trim", map[string]any{"min_available_version": 2}},
	} {
		if _, err := fx.root.Logical().WriteWithContext(ctx, w.path, w.body); err != nil {
			t.Fatalf("%s: %v", w.path, err)
		}
	}
	if _, err := gw.Unwrap(ctx, dk.Wrapped); !errors.Is(err, ErrInvalidWrappedKey) {
		t.Errorf("Unwrap of a key wrapped by a trimmed version: %v, want ErrInvalidWrappedKey", err)
	}
	if _, errs, err := gw.Rewrap(ctx, []string{dk.Wrapped}); err != nil || !errors.Is(errs[0], ErrInvalidWrappedKey) {
		t.Errorf("Rewrap of a key wrapped by a trimmed version: %v, %v; want ErrInvalidWrappedKey", errs, err)
	}
	if key, err := gw.Unwrap(ctx, out[0]); err != nil || !bytes.Equal(key, dk.Plaintext) {
		t.Errorf("the rewrapped key no longer unwraps after the trim: %v", err)
	}
	if v, err := gw.KeyVersions(ctx); err != nil || v.MinAvailable != 2 || v.MinDecryption != 2 || len(v.Created) != 1 {
		t.Errorf("KeyVersions after the trim = %+v, %v", v, err)
	}

	viewer := ks.client(t, ks.clientCert(t, testTenant, tenantpki.ComponentViewer), 0)
	if _, _, err := viewer.Rewrap(ctx, []string{out[0]}); !errors.Is(err, ErrForbidden) {
		t.Errorf("viewer Rewrap: %v, want ErrForbidden", err)
	}
	if _, err := viewer.KeyVersions(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("viewer KeyVersions: %v, want ErrForbidden", err)
	}
}

// A local key file has one version: rewrap hands back keys that unwrap and refuses the rest.
func TestLocalKeyRing(t *testing.T) {
	ctx := context.Background()
	ks := startKeystore(t, newTestLocal(t), nil)
	gw := ks.gateway(t)
	dk, err := gw.WrapNewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := gw.KeyVersions(ctx)
	if err != nil || v.Latest != 1 || v.MinAvailable != 1 || v.Trims {
		t.Fatalf("KeyVersions = %+v, %v", v, err)
	}
	out, errs, err := gw.Rewrap(ctx, []string{dk.Wrapped, "local:v1:nope"})
	if err != nil || errs[0] != nil || out[0] != dk.Wrapped || !errors.Is(errs[1], ErrInvalidWrappedKey) {
		t.Errorf("Rewrap = %q, %v, %v", out, errs, err)
	}
	if _, err := WrappedVersion("vault:3:abc"); !errors.Is(err, ErrInvalidWrappedKey) {
		t.Errorf("WrappedVersion of a key without v<N>: %v", err)
	}
}

func TestKeyVersionsLatestAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	v := KeyVersions{Latest: 3, Created: map[int]time.Time{2: t0, 3: t0.Add(time.Hour)}}
	for at, want := range map[time.Time]int{
		t0.Add(-time.Second): 0, t0: 2, t0.Add(59 * time.Minute): 2, t0.Add(time.Hour): 3, t0.Add(48 * time.Hour): 3,
	} {
		if got := v.LatestAt(at); got != want {
			t.Errorf("LatestAt(%s) = %d, want %d", at, got, want)
		}
	}
}
