package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

const (
	vaultBinary       = "vault-dev"
	vaultMakeTarget   = "test-binaries"
	vaultStartTimeout = 30 * time.Second
	vaultLogLines     = 30
)

// Vault is a running bin/vault-dev: a real Vault server in dev mode (in-memory storage, unsealed,
// transit and kubernetes auth available) on a free loopback port. Its state lives only as long as
// the process: a Vault started again is empty and listens on another port.
type Vault struct {
	Addr      string // http://127.0.0.1:PORT
	RootToken string

	cmd      *exec.Cmd
	stderr   *LogTail
	exited   chan struct{} // closed once cmd.Wait has returned
	waitErr  error         // cmd.Wait's result, set before exited is closed
	stopOnce sync.Once
	stopErr  error
}

// StartVault starts a fresh bin/vault-dev on 127.0.0.1:0 and stops it at t.Cleanup. It fails
// (never skips) when the binary is missing, and logs the server's last lines if the test fails.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	RequireBinary(t, vaultBinary, vaultMakeTarget)
	v, err := StartVaultProcess(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s's log:\n%s", vaultBinary, v.stderr.Last(vaultLogLines))
		}
		if err := v.Stop(); err != nil {
			t.Error(err)
		}
	})
	return v
}

// StartVaultProcess starts a fresh bin/vault-dev on 127.0.0.1:0 and waits until it serves. ctx
// bounds the start only; the server runs until Stop (or until this process dies). It is the
// non-testing form of StartVault, for TestMain, benchmarks and `make run`.
func StartVaultProcess(ctx context.Context) (*Vault, error) {
	path, err := Binary(vaultBinary, vaultMakeTarget)
	if err != nil {
		return nil, err
	}
	ready := make(chan []byte, 1)
	v := &Vault{
		cmd:    exec.Command(path, "-addr", "127.0.0.1:0"),
		stderr: &LogTail{},
		exited: make(chan struct{}),
	}
	v.cmd.Stdout = &vaultReadyLine{ready: ready}
	v.cmd.Stderr = v.stderr
	v.cmd.WaitDelay = 5 * time.Second // in case something the server started still holds its stdout
	// The kernel kills the server when the thread that started it ends. Go ends threads only
	// when a goroutine that locked one returns, so in practice this is when the test binary
	// dies without running its cleanups (a panic in TestMain, SIGKILL, a -timeout).
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, vaultStartTimeout)
	defer cancel()
	fail := func(format string, args ...any) (*Vault, error) {
		_ = v.Stop()
		return nil, fmt.Errorf("%s: %s; its last lines:\n%s", path, fmt.Sprintf(format, args...), v.stderr.Last(vaultLogLines))
	}
	select {
	case line := <-ready:
		var hello struct {
			Addr      string `json:"addr"`
			RootToken string `json:"root_token"`
		}
		if err := json.Unmarshal(line, &hello); err != nil || hello.Addr == "" || hello.RootToken == "" {
			return fail("unexpected first line %q (want {\"addr\":...,\"root_token\":...})", line)
		}
		v.Addr, v.RootToken = hello.Addr, hello.RootToken
		return v, nil
	case <-v.exited:
		return fail("exited before serving (%v)", v.waitErr)
	case <-ctx.Done():
		return fail("not serving after %s (%v)", time.Since(start).Round(time.Millisecond), context.Cause(ctx))
	}
}

// Client returns a Vault API client for v, authenticated with the root token.
func (v *Vault) Client(t testing.TB) *vaultapi.Client {
	t.Helper()
	client, err := v.RootClient()
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// RootClient is Client for TestMain and tools.
func (v *Vault) RootClient() (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig() // reads VAULT_* variables; the ones that matter are overridden
	cfg.Address = v.Addr
	client, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client for %s: %w", v.Addr, err)
	}
	client.SetToken(v.RootToken)
	client.ClearNamespace()
	return client, nil
}

// Stop kills the server and waits for it to exit; its port is free again when Stop returns.
// Stopping twice is fine. The error says whether the server had died on its own before.
func (v *Vault) Stop() error {
	v.stopOnce.Do(func() {
		select {
		case <-v.exited:
			v.stopErr = fmt.Errorf("%s at %s had exited before Stop (%v); its last lines:\n%s",
				vaultBinary, v.Addr, v.waitErr, v.stderr.Last(vaultLogLines))
			return
		default:
		}
		if err := v.cmd.Process.Kill(); err != nil && !errors.Is(err, syscall.ESRCH) {
			v.stopErr = fmt.Errorf("stop %s: %w", vaultBinary, err)
		}
		<-v.exited
	})
	return v.stopErr
}

// vaultReadyLine hands the first line written to it to ready and discards the rest, so the server
// never blocks on a full stdout pipe.
type vaultReadyLine struct {
	buf   []byte
	ready chan<- []byte
	done  bool
}

func (w *vaultReadyLine) Write(p []byte) (int, error) {
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if i := bytes.IndexByte(w.buf, '\n'); i >= 0 {
		w.ready <- w.buf[:i]
		w.done = true
	}
	return len(p), nil
}

// Pause stops the server's process (SIGSTOP) without closing its sockets: connections hang, as
// with a Vault that is overloaded or cut off by the network. Resume continues it.
// Pause returns once the kernel reports the process stopped, so that no request sent after it
// can still be answered.
func (v *Vault) Pause() error {
	if err := v.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", vaultBinary, err)
	}
	stat := fmt.Sprintf("/proc/%d/stat", v.cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return fmt.Errorf("pause %s: %w", vaultBinary, err)
		}
		// The state follows the command name in parentheses: "pid (comm) T ...".
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'T' {
			return nil
		}
	}
	return fmt.Errorf("pause %s: process %d not stopped 5s after SIGSTOP", vaultBinary, v.cmd.Process.Pid)
}

// Resume continues a paused server (SIGCONT).
func (v *Vault) Resume() error { return v.cmd.Process.Signal(syscall.SIGCONT) }
