package testenv

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func pgPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestPostgresDatabase(t *testing.T) {
	start := time.Now()
	url := PostgresDatabase(t)
	t.Logf("PostgresDatabase: %v (first call in this binary starts the server)", time.Since(start))
	if !regexp.MustCompile(`^postgres://.*@127\.0\.0\.1:\d+/t_[0-9a-f]{16}\?sslmode=disable$`).MatchString(url) && os.Getenv(PostgresURLEnv) == "" {
		t.Errorf("URL = %q", url)
	}
	ctx := context.Background()
	pool := pgPool(t, url)

	if _, err := pool.Exec(ctx, `CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO messages (body) VALUES ($1) RETURNING id`, "héllo").Scan(&id); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := tx.QueryRow(ctx, `SELECT body FROM messages WHERE id = $1`, id).Scan(&body); err != nil {
		t.Fatal(err)
	}
	if body != "héllo" {
		t.Errorf("body = %q", body)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// Benchmarks measure durable commits, so the server must keep PostgreSQL's durable defaults.
	for _, setting := range []string{"synchronous_commit", "fsync"} {
		var v string
		if err := pool.QueryRow(ctx, "SHOW "+setting).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "on" {
			t.Errorf("%s = %q, want on", setting, v)
		}
	}
}

func TestPostgresDatabasesAreIsolated(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	urlA := PostgresDatabase(t)
	t.Logf("PostgresDatabase: %v", time.Since(start))
	start = time.Now()
	urlB := PostgresDatabase(t)
	t.Logf("PostgresDatabase: %v", time.Since(start))
	if urlA == urlB {
		t.Fatalf("both databases are %s", urlA)
	}
	a, b := pgPool(t, urlA), pgPool(t, urlB)
	if _, err := a.Exec(ctx, `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatal(err)
	}
	var found bool
	if err := b.QueryRow(ctx, `SELECT to_regclass('only_in_a') IS NOT NULL`).Scan(&found); err != nil {
		t.Fatal(err)
	}
	if found {
		t.Error("a table created in one database is visible in the other")
	}
}

func TestStartPostgresProcessStop(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	p, err := StartPostgresProcess(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartPostgresProcess: %v", time.Since(start))
	if p.cmd == nil { // $SECURETEXT_TEST_POSTGRES_URL: there is no process to stop
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		return
	}
	url, err := p.CreateDatabase(ctx, "make_run")
	if err != nil {
		p.Stop()
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err == nil {
		err = pool.Ping(ctx)
		pool.Close()
	}
	if err != nil {
		p.Stop()
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s still exists after Stop (%v)", p.dir, err)
	}
	if err := p.ping(ctx); err == nil {
		t.Error("server still accepts connections after Stop")
	}
}

func TestPostgresBinariesMissing(t *testing.T) {
	t.Setenv(PostgresURLEnv, "")
	t.Setenv(PostgresBinDirEnv, t.TempDir())
	p, err := StartPostgresProcess(context.Background())
	if err == nil {
		p.Stop()
		t.Fatal("StartPostgresProcess succeeded without binaries")
	}
	if !strings.Contains(err.Error(), "PostgreSQL server binaries not found: run `make test-binaries`") {
		t.Errorf("error = %v", err)
	}
	t.Log(err)
}
