package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURLEnv names an existing server to use instead of starting one, e.g.
// postgres://postgres:secret@127.0.0.1:5432/postgres?sslmode=disable. Its user must be allowed
// to create databases; the path names the maintenance database (default postgres).
const PostgresURLEnv = "SECURETEXT_TEST_POSTGRES_URL"

// PostgresBinDirEnv overrides where initdb and postgres are looked up.
const PostgresBinDirEnv = "SECURETEXT_PG_BINDIR"

const pgMissingMsg = "PostgreSQL server binaries not found: run `make test-binaries` (it installs Debian's postgresql package)"

// Postgres is a PostgreSQL server for tests: a throwaway one that we started (a child process
// with a temporary data directory), or the one named by $SECURETEXT_TEST_POSTGRES_URL.
type Postgres struct {
	base *url.URL // connection URL of the maintenance database

	cmd    *exec.Cmd       // nil for an external server
	dir    string          // temporary directory holding the data and the Unix socket
	exited <-chan struct{} // closed once the server process has exited
	log    *LogTail
}

// URL returns the connection URL of database dbname on this server.
func (p *Postgres) URL(dbname string) string {
	u := *p.base
	u.Path = "/" + dbname
	return u.String()
}

// CreateDatabase creates an empty database and returns its connection URL.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	if err := p.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.URL(name), nil
}

// dropDatabase drops a database, closing any connections a test left open (PostgreSQL 13+).
func (p *Postgres) dropDatabase(ctx context.Context, name string) error {
	if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement in the maintenance database. CREATE/DROP DATABASE cannot run in a
// transaction, so this is a plain connection rather than a pool.
func (p *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.base.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop stops a server that StartPostgresProcess started and removes its data directory.
// For an external server it does nothing.
func (p *Postgres) Stop() error {
	if p.cmd == nil {
		return nil
	}
	// SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, as the data is thrown away.
	StopChild(p.cmd, p.exited, syscall.SIGQUIT, 10*time.Second)
	return os.RemoveAll(p.dir)
}

var (
	pgOnce   sync.Once
	pgShared *Postgres
	pgErr    error
)

// PostgresDatabase returns the connection URL of a fresh, empty database (named t_<16 hex>)
// that is dropped at t.Cleanup. The database lives in a server shared by the whole test binary,
// started on first use.
//
// The shared server is never stopped explicitly: nothing runs after the last test of a package
// without a TestMain. It dies with the test process (Pdeathsig), and the next test binary to
// start a server removes the data directories that dead processes left behind.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		pgShared, pgErr = StartPostgresProcess(ctx)
	})
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "t_" + pgRandomHex(8)
	u, err := pgShared.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgShared.dropDatabase(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return u
}

// StartPostgresProcess starts a throwaway server on a free 127.0.0.1 port, with its data in a
// new directory under os.TempDir (for TestMain, benchmarks and `make run`); Stop stops it and
// removes the directory. If $SECURETEXT_TEST_POSTGRES_URL is set it returns that server instead.
//
// The server runs with PostgreSQL's durable defaults (fsync, synchronous_commit) so that
// benchmarks measure real commits; only initdb skips fsync, as it is throwaway setup.
func StartPostgresProcess(ctx context.Context) (*Postgres, error) {
	if s := os.Getenv(PostgresURLEnv); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("$%s: %w", PostgresURLEnv, err)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/postgres"
		}
		return &Postgres{base: u}, nil
	}

	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	pgRemoveStaleDirs()
	dir, err := os.MkdirTemp("", "securetext-pg-")
	if err != nil {
		return nil, err
	}
	// The server runs as another user when we are root; it must own the directory it works in.
	// (This also needs os.TempDir to be searchable by that user, as /tmp is.)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	// The owner file lets pgRemoveStaleDirs tell our directory from an abandoned one.
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	p, err := pgStart(ctx, bin, dir, cred)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

func pgStart(ctx context.Context, bin, dir string, cred *syscall.Credential) (*Postgres, error) {
	data := filepath.Join(dir, "data")
	initLog := &LogTail{}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir // initdb fails if it cannot read the working directory, e.g. /root/...
	initdb.Stdout, initdb.Stderr = initLog, initLog
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, initLog)
	}

	// FreePort can race with another process taking the port; retry with a new one.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var p *Postgres
		p, err = pgRun(ctx, bin, dir, cred)
		if err == nil {
			return p, nil
		}
		if !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "could not create any TCP/IP sockets") {
			break
		}
	}
	return nil, err
}

// pgRun starts postgres on a free port and waits until it accepts connections.
func pgRun(ctx context.Context, bin, dir string, cred *syscall.Credential) (*Postgres, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		base: &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: "/postgres", RawQuery: "sslmode=disable"},
		dir:  dir,
		log:  &LogTail{},
	}
	p.cmd = exec.Command(filepath.Join(bin, "postgres"),
		"-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "max_connections=200")
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// PostgreSQL refuses to run as root; Credential (rather than su or runuser) keeps the server
	// our direct child, so Pdeathsig and Stop reach it. SIGQUIT is an immediate shutdown.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}

	if p.exited, err = StartChild(p.cmd, nil); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := p.ping(ctx)
		if err == nil {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("postgres exited during startup: %v\n%s", p.cmd.ProcessState, p.log)
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			<-p.exited
			return nil, fmt.Errorf("postgres did not accept connections on %s: %v\n%s", p.base.Host, err, p.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Postgres) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.base.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// pgBinDir finds the directory holding initdb and postgres: $SECURETEXT_PG_BINDIR, else the
// newest /usr/lib/postgresql/<version>/bin (Debian's layout), else `pg_config --bindir`.
func pgBinDir() (string, error) {
	var candidates []string
	if dir := os.Getenv(PostgresBinDirEnv); dir != "" {
		candidates = []string{dir}
	} else {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		major := func(dir string) float64 {
			v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
			return v
		}
		sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
		candidates = dirs
		if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
	}
	for _, dir := range candidates {
		if pgExecutable(filepath.Join(dir, "initdb")) && pgExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	if len(candidates) == 0 {
		candidates = []string{"/usr/lib/postgresql/*/bin"}
	}
	return "", fmt.Errorf("%s; looked for initdb and postgres in %s", pgMissingMsg, strings.Join(candidates, ", "))
}

func pgExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}

// pgCredential returns the user to run the server as: nil (ourselves) unless we are root, which
// PostgreSQL refuses; then the postgres user that Debian's package creates.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root: need the postgres system user to run it as (%v); %s", err, pgMissingMsg)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// pgRemoveStaleDirs removes the data directories of test processes that have exited: the shared
// server of PostgresDatabase is never stopped, so its directory is left behind. Best effort; it
// assumes that the processes sharing os.TempDir share a PID namespace (not true of containers
// that share a host /tmp, which should set TMPDIR).
func pgRemoveStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "securetext-pg-*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue // being set up, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

func pgRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CutDatabase makes the database of dsn (from PostgresDatabase) refuse connections and closes
// the open ones, as an outage would; the returned function restores it. The server itself
// keeps running, so other tests are not disturbed.
func CutDatabase(t testing.TB, dsn string) (restore func()) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || pgShared == nil {
		t.Fatalf("cut database: %q is not a database from PostgresDatabase (%v)", dsn, err)
	}
	name := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()
	lit := "'" + strings.TrimPrefix(u.Path, "/") + "'"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sql := range []string{
		"ALTER DATABASE " + name + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = " + lit + " AND pid <> pg_backend_pid()",
	} {
		if err := pgShared.exec(ctx, sql); err != nil {
			t.Fatalf("cut database: %v", err)
		}
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pgShared.exec(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
				t.Errorf("restore database: %v", err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}
