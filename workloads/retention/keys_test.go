package retention_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
	"github.com/securetext/securetext/workloads/vaultlogin"
)

// transit is a real Vault dev server with the tenant's wrapping and signing keys, and the
// keystore's Transit backend on it, which the sweeper uses as its key ring.
type transit struct {
	root *vaultapi.Client
	keys *keystore.Transit
}

func startTransit(t *testing.T) transit {
	t.Helper()
	v := testenv.StartVault(t)
	root := v.Client(t)
	ctx := context.Background()
	if err := root.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]string{"messages": "aes256-gcm96", "audit": "ed25519"} {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{"type": typ}); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := keystore.NewTransit(keystore.TransitConfig{
		Client: root, Auth: vaultlogin.TokenAuth{Token: root.Token()}, Mount: "transit",
		WrappingKey: "messages", SigningKey: "audit", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	if err := ks.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return transit{root: root, keys: ks}
}

// trim does what the operator does once the sweeper reports floor (controllers, VaultProvisioner
// TrimWrappingKey): no decryption below floor, and the versions below it destroyed.
func (tr transit) trim(t *testing.T, floor int) {
	t.Helper()
	ctx := context.Background()
	if _, err := tr.root.Logical().WriteWithContext(ctx, "transit/keys/messages/config",
		map[string]any{"min_decryption_version": floor, "min_encryption_version": floor}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.root.Logical().WriteWithContext(ctx, "transit/keys/messages/trim", map[string]any{"min_available_version": floor}); err != nil {
		t.Fatal(err)
	}
}

// sealedMessage accepts a message whose body is sealed under a data key from the key ring, as
// the gateway stores it.
func sealedMessage(t *testing.T, s *store.Store, clock *storetest.Clock, keys keystore.Service, phone, body string) string {
	t.Helper()
	dk, err := keys.WrapNewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return acceptAt(t, s, clock, func(r *store.AcceptRequest) {
		sealed, err := envelope.Seal(dk.Plaintext, envelope.AssociatedData{Tenant: storetest.Tenant, MessageID: r.MessageID, Part: "body"}, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Phone, r.WrappedKey, r.Parts = phone, dk.Wrapped, []store.Part{{Name: "body", Ciphertext: sealed}}
	})
}

// backupRow is what a database backup holds of a message: its wrapped data key and sealed body.
type backupRow struct {
	id, wrapped string
	body        []byte
}

func backup(t *testing.T, s *store.Store, id string) backupRow {
	t.Helper()
	m, err := s.Message(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := s.MessageParts(context.Background(), id)
	if err != nil || len(parts) != 1 {
		t.Fatalf("parts of %s: %v, %v", id, parts, err)
	}
	return backupRow{id: id, wrapped: m.WrappedKey, body: parts[0].Ciphertext}
}

// open decrypts a backed-up body with the key ring, as someone holding the backup and the
// tenant's Vault access would.
func (b backupRow) open(keys keystore.Service) (string, error) {
	key, err := keys.Unwrap(context.Background(), b.wrapped)
	if err != nil {
		return "", err
	}
	defer envelope.Zero(key)
	plain, err := envelope.Open(key, envelope.AssociatedData{Tenant: storetest.Tenant, MessageID: b.id, Part: "body"}, b.body)
	return string(plain), err
}

// Disposal that reaches backups, on a real Vault: after a rotation, the sweep purges a due
// message and moves the data keys of the messages it keeps (one held, one young) to the new
// version, and reports version 2 as the floor. A database copy taken before the purge still
// decrypts the purged message until the operator destroys version 1, and never after; the kept
// messages still open. The purge event names the version bound, and the next sweep audits the
// destruction. The store's clock starts at the real time only because Vault stamps its key
// versions with its own clock, which RotationSettle is measured against.
func testKeyTrimReachesBackups(t *testing.T, newDatabase func(*testing.T) string) {
	ctx := context.Background()
	tr := startTransit(t)
	clock := storetest.NewClock(time.Now().UTC().Truncate(time.Second))
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	due := sealedMessage(t, s, clock, tr.keys, "+12025550101", "lab results: negative")
	held := sealedMessage(t, s, clock, tr.keys, "+12025550143", "imaging report")
	copyOfDue := backup(t, s, due)
	if _, err := tr.root.Logical().WriteWithContext(ctx, "transit/keys/messages/rotate", nil); err != nil {
		t.Fatal(err)
	}
	clock.Advance(721 * time.Hour)
	young := sealedMessage(t, s, clock, tr.keys, "+12025550102", "see you at 3")

	set := retention.Settings{Policy: policy(), Holds: []retention.Hold{{Name: "matter-7", Reason: "case 7",
		Matcher: retention.Matcher{Recipients: []string{"+12025550143"}}}}}
	sw, err := retention.NewSweeper(retention.SweeperConfig{Store: s, Settings: func() retention.Settings { return set },
		Holder: "gateway-0", Clock: clock.Now, Keys: tr.keys, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	res := sweep(t, sw)
	if res.MessagesPurged != 1 || res.MessagesHeld != 1 || !purged(t, s, due) || purged(t, s, held) {
		t.Fatalf("sweep: %+v", res)
	}
	if k := res.Keys; k == nil || k.Latest != 2 || k.Floor != 2 || k.MinAvailable != 1 || !k.Trims || k.Rewrapped != 1 || k.Unreadable != 0 {
		t.Fatalf("key status after the sweep: %+v, want latest 2, floor 2, 1 rewrapped (the held message)", res.Keys)
	}
	for _, id := range []string{held, young} {
		if v, _ := keystore.WrappedVersion(backup(t, s, id).wrapped); v != 2 {
			t.Errorf("message %s is wrapped by version %d after the sweep, want 2", id, v)
		}
	}
	if got, err := copyOfDue.open(tr.keys); err != nil || got != "lab results: negative" {
		t.Fatalf("before the trim, the backup's copy should still open (the gap this closes): %q, %v", got, err)
	}

	tr.trim(t, res.Keys.Floor)
	if _, err := copyOfDue.open(tr.keys); !errors.Is(err, keystore.ErrInvalidWrappedKey) {
		t.Errorf("after the trim, the backup's copy of the purged message opened (err %v)", err)
	}
	for id, want := range map[string]string{held: "imaging report", young: "see you at 3"} {
		if got, err := backup(t, s, id).open(tr.keys); err != nil || got != want {
			t.Errorf("kept message %s after the trim: %q, %v", id, got, err)
		}
	}

	clock.Advance(time.Hour)
	res = sweep(t, sw)
	if k := res.Keys; k == nil || k.MinAvailable != 2 || k.Floor != 2 || k.Rewrapped != 0 {
		t.Errorf("key status of the next sweep: %+v", res.Keys)
	}
	var destroyed, purgedEv []audit.Event
	for _, e := range storetest.ChainedEvents(t, s) {
		switch e.Kind {
		case audit.KindKeyVersionsDestroyed:
			destroyed = append(destroyed, e)
		case audit.KindPurged:
			purgedEv = append(purgedEv, e)
		}
	}
	if len(purgedEv) != 1 || purgedEv[0].Detail["key_version_max"] != "2" {
		t.Errorf("purge events %+v: want one naming key_version_max 2", purgedEv)
	}
	if len(destroyed) != 1 || destroyed[0].Detail["min_version"] != "2" || destroyed[0].Detail["previous_min_version"] != "1" {
		t.Errorf("key-versions-destroyed events %+v: want one with min_version 2", destroyed)
	}
	vmax, _ := strconv.Atoi(purgedEv[0].Detail["key_version_max"])
	if vmin, _ := strconv.Atoi(destroyed[0].Detail["min_version"]); vmin > vmax {
		t.Errorf("the destruction (versions below %d) does not cover the purged message's bound %d", vmin, vmax)
	}
}

// A version rotated in less than RotationSettle ago is not settled: a reserved key of the
// version before may still be stored, so the sweep moves nothing and the floor stays.
func testKeyFloorWaitsForSettle(t *testing.T, newDatabase func(*testing.T) string) {
	ctx := context.Background()
	tr := startTransit(t)
	clock := storetest.NewClock(time.Now().UTC().Truncate(time.Second))
	s := storetest.OpenWithClock(t, newDatabase(t), clock)
	id := sealedMessage(t, s, clock, tr.keys, "+12025550101", "x")
	sw, err := retention.NewSweeper(retention.SweeperConfig{Store: s, Settings: func() retention.Settings {
		return retention.Settings{Policy: policy()}
	}, Holder: "gateway-0", Clock: clock.Now, Keys: tr.keys, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if res := sweep(t, sw); res.Keys == nil || res.Keys.Floor != 1 || res.Keys.Rewrapped != 0 {
		t.Fatalf("first sweep: %+v", res.Keys)
	}
	if _, err := tr.root.Logical().WriteWithContext(ctx, "transit/keys/messages/rotate", nil); err != nil {
		t.Fatal(err)
	}
	v, err := tr.keys.KeyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(v.Created[2].Add(keystore.RotationSettle - time.Second).Sub(clock.Now()))
	if res := sweep(t, sw); res.Keys.Floor != 1 || res.Keys.Rewrapped != 0 {
		t.Errorf("sweep inside the settle time: %+v, want floor 1 and nothing rewrapped", res.Keys)
	}
	clock.Advance(time.Second)
	if res := sweep(t, sw); res.Keys.Floor != 2 || res.Keys.Rewrapped != 1 {
		t.Errorf("sweep once settled: %+v, want floor 2 and one rewrapped", res.Keys)
	}
	if got, err := backup(t, s, id).open(tr.keys); err != nil || got != "x" {
		t.Errorf("rewrapped message: %q, %v", got, err)
	}
	if !bytes.HasPrefix([]byte(backup(t, s, id).wrapped), []byte("vault:v2:")) {
		t.Error("the message was not rewrapped to version 2")
	}
}
