// Package testenv starts the real parts that SecureText's tests run against — a Vault dev server,
// a PostgreSQL server and a Kubernetes API server (envtest) — from the binaries that
// `make test-binaries` builds into bin/. Every server listens on loopback only.
//
// A test that needs a part that is missing fails with a message naming the make target that
// provides it; nothing here skips.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// ModulePath is the project's Go module path; RepoRoot looks for the go.mod that declares it.
const ModulePath = "github.com/securetext/securetext"

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the directory of the project's go.mod, found by walking up from the working
// directory (go test runs each package in its own directory).
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), "module "+ModulePath+"\n") {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = fmt.Errorf("no go.mod for %s above the working directory", ModulePath)
				return
			}
			dir = parent
		}
	})
	return rootDir, rootErr
}

// BinDir is where the test binaries live: $SECURETEXT_BIN if set, else <repo>/bin.
func BinDir() (string, error) {
	if dir := os.Getenv("SECURETEXT_BIN"); dir != "" {
		return filepath.Abs(dir)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// Binary returns the path of bin/<name>, or an error that names the make target that builds it.
func Binary(name, makeTarget string) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	info, err := os.Stat(path)
	if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is missing: run `make %s` to build it", path, makeTarget)
	}
	return path, nil
}

// RequireBinary is Binary for tests: a missing binary fails the test (it never skips).
func RequireBinary(t testing.TB, name, makeTarget string) string {
	t.Helper()
	path, err := Binary(name, makeTarget)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// LogTail keeps the last 64 KiB a process wrote, so that a failure can show what it said
// without holding its whole log. It is safe for concurrent writes.
type LogTail struct {
	mu  sync.Mutex
	buf []byte
}

func (l *LogTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if extra := len(l.buf) - 64<<10; extra > 0 {
		l.buf = append([]byte(nil), l.buf[extra:]...)
	}
	return len(p), nil
}

// String is everything kept.
func (l *LogTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

// Last is the last n lines kept.
func (l *LogTail) Last(n int) string {
	text := strings.TrimRight(l.String(), "\n")
	if strings.TrimSpace(text) == "" {
		return "(nothing written)"
	}
	lines := strings.Split(text, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Eventually polls check until it returns nil, or fails t with what and check's last error
// after 30 s. It waits for something to converge; it asserts nothing about how fast.
func Eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Poll calls check every interval until it returns nil, or returns check's last error once
// timeout has passed or ctx ends: Eventually for TestMain and tools, which have no t.
func Poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}

// StartChild starts cmd from an OS thread that stays locked until cmd exits, and waits for it
// in the background: then it runs after (when not nil) and closes the returned channel. A
// Pdeathsig in cmd.SysProcAttr fires when the thread that forked the child ends, not the
// process, so this is what makes it mean "when the test process dies".
func StartChild(cmd *exec.Cmd, after func()) (exited <-chan struct{}, err error) {
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		if after != nil {
			after()
		}
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// StopChild asks a child started with StartChild to stop with sig and waits until exited is
// closed, or, after grace, kills it and waits for that. It reports whether the child had to
// be killed.
func StopChild(cmd *exec.Cmd, exited <-chan struct{}, sig os.Signal, grace time.Duration) (killed bool) {
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return false
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
		return true
	}
}
