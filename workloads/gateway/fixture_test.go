package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// Tenant of every fixture.
const testTenant = "clinic-a"

// fixture is a gateway's real dependencies: a store on PostgreSQL or SQLite, and a keystore
// (local backend) served over mTLS on 127.0.0.1 that tests can stop and start, with its
// client as the intake's key wrapper.
type fixture struct {
	Store   *store.Store
	DSN     string
	Local   *keystore.Local
	Keys    *keystore.Client
	Intake  *Intake
	Senders *Senders
	Sender  Sender // "ehr": SMTP user ehr@clinic.example
	// SMTPPassword and APIKey are the secrets of Sender.
	SMTPPassword, APIKey string

	t          testing.TB
	keysConfig keystore.ClientConfig
	ksAddr     string
	ksServer   *keystore.Server
	ksMu       sync.Mutex
	ksHTTP     *http.Server
}

type backend string

const (
	postgresBackend backend = "postgres"
	sqliteBackend   backend = "sqlite"
)

// sharedCredentials are hashed once per test binary: argon2id at OWASP cost is 30 ms a hash.
var sharedCredentials = sync.OnceValues(func() (credentials, error) {
	snd, pass, key, err := NewCredentials(context.Background(), "ehr", "ehr@clinic.example")
	return credentials{snd, pass, key}, err
})

type credentials struct {
	sender        Sender
	password, key string
}

func newFixture(t testing.TB, b backend) *fixture {
	t.Helper()
	return newFixtureWithClock(t, b, time.Now)
}

// newFixtureWithClock is newFixture with the store and the intake reading now, so that a test
// can move the time of the whole path (accept, outbox, claim) by hand.
func newFixtureWithClock(t testing.TB, b backend, now func() time.Time) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t}
	switch b {
	case postgresBackend:
		f.DSN = testenv.PostgresDatabase(t)
	case sqliteBackend:
		f.DSN = "sqlite:" + filepath.Join(t.TempDir(), "tenant.db")
	}
	s, err := store.Open(ctx, f.DSN, testTenant, store.WithClock(now),
		store.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f.Store = s

	keyFile := filepath.Join(t.TempDir(), "local-key.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	f.Local, err = keystore.NewLocal(keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now() // certificates are checked against the wall clock by crypto/tls
	ca, err := tenantpki.NewCA(testTenant, issued)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, issued, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	notary, err := audit.NewNotary(testTenant, f.Local, &audit.MemoryNotaryState{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.ksServer, err = keystore.NewServer(f.Local, keystore.ServerConfig{
		Tenant: testTenant, Certificate: serverCert, ClientCAs: ca.CertPool(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Checkpoints: notary,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.KeystoreUp()
	t.Cleanup(f.KeystoreDown)
	clientCert, err := ca.IssueClient(testTenant, "gateway", issued, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.keysConfig = keystore.ClientConfig{
		URL: "https://" + f.ksAddr, Certificate: clientCert, RootCAs: ca.CertPool(), Timeout: 2 * time.Second,
	}
	f.Keys = f.keysClient(f.keysConfig)

	creds, err := sharedCredentials()
	if err != nil {
		t.Fatal(err)
	}
	f.Sender, f.SMTPPassword, f.APIKey = creds.sender, creds.password, creds.key
	// "relay" submits from trusted networks in the SMTP tests.
	f.Senders, err = NewSenders([]Sender{f.Sender, {ID: "relay"}})
	if err != nil {
		t.Fatal(err)
	}
	f.Intake = &Intake{Tenant: testTenant, Store: f.Store, Keys: f.Keys, Now: now}
	return f
}

func (f *fixture) keysClient(cfg keystore.ClientConfig) *keystore.Client {
	c, err := keystore.NewClient(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Close)
	return c
}

// WithoutKeyReserve makes the intake ask the keystore for every data key, for tests of what a
// keystore outage answers: with the reserve (on, as in production), the first messages of an
// outage get the keys it holds (keystore.TestClientReserveOutage).
func (f *fixture) WithoutKeyReserve() {
	cfg := f.keysConfig
	cfg.Reserve.Disabled = true
	f.Keys = f.keysClient(cfg)
	f.Intake.Keys = f.Keys
}

// KeystoreDown stops the keystore: calls fail as with a keystore pod gone.
func (f *fixture) KeystoreDown() {
	f.ksMu.Lock()
	defer f.ksMu.Unlock()
	if f.ksHTTP == nil {
		return
	}
	_ = f.ksHTTP.Close()
	f.ksHTTP = nil
	if f.Keys != nil {
		f.Keys.CloseIdleConnections()
	}
}

// KeystoreUp starts (or restarts, on the same address) the keystore.
func (f *fixture) KeystoreUp() {
	f.t.Helper()
	f.ksMu.Lock()
	defer f.ksMu.Unlock()
	addr := f.ksAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a just-closed listener can take a moment to free
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("keystore listen: %v", err)
	}
	f.ksAddr = ln.Addr().String()
	srv := f.ksServer.HTTPServer(f.ksAddr)
	f.ksHTTP = srv
	go func() {
		if err := srv.Serve(tls.NewListener(ln, srv.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.t.Errorf("keystore: %v", err)
		}
	}()
}

// DatabaseDown cuts the database off (PostgreSQL only); the returned function restores it.
func (f *fixture) DatabaseDown() (restore func()) {
	f.t.Helper()
	return testenv.CutDatabase(f.t, f.DSN)
}

// messageCount returns how many messages the store holds, for "nothing stored" checks.
func (f *fixture) messageCount() int {
	f.t.Helper()
	depth, _, err := f.Store.OutboxStats(context.Background(), time.Now().Add(time.Hour))
	if err != nil {
		f.t.Fatalf("outbox stats: %v", err)
	}
	return depth
}
