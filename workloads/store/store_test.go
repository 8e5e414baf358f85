package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

func sqliteDatabase(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "tenant.db")
}

func postgresDatabase(t *testing.T) string { return testenv.PostgresDatabase(t) }

func TestSQLite(t *testing.T) { storetest.Run(t, sqliteDatabase) }

func TestPostgres(t *testing.T) { storetest.Run(t, postgresDatabase) }

// Replicas start together: each applies the migrations under the advisory lock, once.
func TestPostgresConcurrentOpen(t *testing.T) {
	dsn := testenv.PostgresDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := store.Open(context.Background(), dsn, storetest.Tenant)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("concurrent open: %v", err)
		}
	}
	s := storetest.Open(t, dsn)
	if _, err := s.AcceptMessage(context.Background(), storetest.NewRequest("+12025550143")); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresUnreachableIsTemporary(t *testing.T) {
	// A port nothing listens on: take a free one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = store.Open(ctx, fmt.Sprintf("postgres://postgres@%s/x?sslmode=disable&connect_timeout=2", addr), storetest.Tenant)
	if err == nil {
		t.Fatal("open against a closed port succeeded")
	}
	if !store.IsTemporary(err) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("open against a closed port: %v; want a temporary error", err)
	}
}

// The store's connection is terminated by the server while an accept runs: the accept fails
// with a temporary error, and the next one succeeds on a new connection.
func TestPostgresTerminatedConnectionIsTemporary(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresDatabase(t)
	s := storetest.Open(t, dsn)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	// Hold the recipient's phone in an open transaction, so the accept waits for it.
	r := storetest.NewRequest("+12025550143")
	blocker, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, `INSERT INTO recipients (id, phone, created_at) VALUES ('blocker', $1, now())`, r.Phone); err != nil {
		t.Fatal(err)
	}

	result := make(chan error, 1)
	go func() {
		_, err := s.AcceptMessage(ctx, r)
		result <- err
	}()

	// Wait until the accept waits on the lock, then terminate its backend.
	observer, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(ctx)
	for {
		var terminated bool
		err := observer.QueryRow(ctx,
			`SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&terminated)
		if err != nil {
			t.Fatal(err)
		}
		if terminated {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	err = <-result
	if err == nil {
		t.Fatal("accept on a terminated connection succeeded")
	}
	if !store.IsTemporary(err) {
		t.Errorf("accept on a terminated connection: %v; want a temporary error", err)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcceptMessage(ctx, r); err != nil {
		t.Errorf("accept after the connection was replaced: %v", err)
	}
}

func TestOpenRefusesBadDSN(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{"mysql://x", "sqlite:", "sqlite:/tmp/x.db?mode=ro", "postgres://%zz"} {
		if _, err := store.Open(ctx, dsn, storetest.Tenant); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("open %q: %v, want ErrInvalid", dsn, err)
		}
	}
	if _, err := store.Open(ctx, sqliteDatabase(t), "two\nlines"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("open with a two-line tenant: %v, want ErrInvalid", err)
	}
}

// TestPostgresRefusingConnectionsIsTemporary: while the database refuses connections (an
// outage, a failover), every call is temporary, not only the first one that finds its pooled
// connection killed.
func TestPostgresRefusingConnectionsIsTemporary(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresDatabase(t)
	s := storetest.Open(t, dsn)
	restore := testenv.CutDatabase(t, dsn)
	for i := range 3 {
		_, err := s.AcceptMessage(ctx, storetest.NewRequest("+12025550143"))
		if !store.IsTemporary(err) {
			t.Fatalf("accept %d while the database refuses connections: %v, want a temporary error", i+1, err)
		}
	}
	restore()
	if _, err := s.AcceptMessage(ctx, storetest.NewRequest("+12025550143")); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}
