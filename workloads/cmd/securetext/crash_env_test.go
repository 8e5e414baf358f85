package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// What the crash test's gateway is.
const (
	crashTenant     = "clinic-a"
	crashTenantName = "Crash Clinic"
	crashDomain     = "text.crash.example"
	crashViewerURL  = "https://view.example"
	crashAPISender  = "ehr"   // submits with an API key
	crashSMTPSender = "relay" // submits over SMTP from the trusted network 127.0.0.1/32
)

// crashBuildBinary builds the securetext command into dir once per test, with the go tool
// that runs this test, and returns the binary's path.
func crashBuildBinary(t *testing.T, dir string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goTool, err := crashGoTool()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "securetext")
	cmd := exec.Command(goTool, "build", "-o", bin, "./workloads/cmd/securetext")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./workloads/cmd/securetext: %v\n%s", err, out)
	}
	return bin
}

// crashGoTool finds the go tool: the one of $GOROOT (go test sets it for the tests it runs),
// else the one on $PATH.
func crashGoTool() (string, error) {
	name := "go"
	if runtime.GOOS == "windows" {
		name = "go.exe"
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is needed to build the gateway binary: %w", err)
	}
	return p, nil
}

// crashEnv is everything the gateway process needs besides PostgreSQL: a keystore served
// from the test process over mTLS, certificates, the senders file and the SMS receiver.
type crashEnv struct {
	dir       string
	local     *keystore.Local
	ca        *tenantpki.CA
	ksAddr    string
	apiKey    string
	files     map[string]string // flag name → file
	sms       *crashSMSReceiver
	smsSecret []byte
}

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &crashEnv{dir: dir, files: map[string]string{}}

	keyFile := filepath.Join(dir, "local-key.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.local, err = keystore.NewLocal(keyFile, quiet); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if e.ca, err = tenantpki.NewCA(crashTenant, now); err != nil {
		t.Fatal(err)
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	ksCert, err := e.ca.IssueServer([]string{"localhost"}, loopback, now, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	notary, err := audit.NewNotary(crashTenant, e.local, &audit.MemoryNotaryState{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.NewServer(e.local, keystore.ServerConfig{
		Tenant: crashTenant, Certificate: ksCert, ClientCAs: e.ca.CertPool(), Logger: quiet, Checkpoints: notary,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ksAddr = ln.Addr().String()
	ksHTTP := ks.HTTPServer(e.ksAddr)
	go func() {
		if err := ksHTTP.Serve(tls.NewListener(ln, ksHTTP.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("keystore: %v", err)
		}
	}()
	t.Cleanup(func() { _ = ksHTTP.Close() })

	clientCert, err := e.ca.IssueClient(crashTenant, "gateway", now, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gwCert, err := e.ca.IssueServer([]string{"localhost"}, loopback, now, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writePEM := func(flag, name string, data []byte) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		e.files[flag] = path
	}
	writePEM("keystore-ca", "ca.crt", e.ca.CertPEM())
	writePEM("keystore-cert", "gateway-client.crt", tenantpki.CertPEM(clientCert))
	key, err := tenantpki.KeyPEM(clientCert)
	if err != nil {
		t.Fatal(err)
	}
	writePEM("keystore-key", "gateway-client.key", key)
	writePEM("tls-cert", "gateway.crt", tenantpki.CertPEM(gwCert))
	if key, err = tenantpki.KeyPEM(gwCert); err != nil {
		t.Fatal(err)
	}
	writePEM("tls-key", "gateway.key", key)

	// Two senders: the EHR uses the REST API, the clinic's mail relay submits from the trusted
	// network. NewCredentials hashes the SMTP password with argon2id, as production does.
	api, _, apiKey, err := gateway.NewCredentials(ctx, crashAPISender, "ehr@clinic.example")
	if err != nil {
		t.Fatal(err)
	}
	relay, _, _, err := gateway.NewCredentials(ctx, crashSMTPSender, "relay@clinic.example")
	if err != nil {
		t.Fatal(err)
	}
	e.apiKey = apiKey
	senders, err := json.Marshal(gateway.SendersFile{Senders: []gateway.Sender{api, relay}})
	if err != nil {
		t.Fatal(err)
	}
	writePEM("senders-file", "senders.yaml", senders)

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	e.smsSecret = []byte(hex.EncodeToString(secret))
	writePEM("webhook-secret-file", "webhook-secret", e.smsSecret)
	e.sms = newCrashSMSReceiver(t, e.smsSecret)
	return e
}

// gatewayArgs is the command line of `securetext gateway` for this environment.
func (e *crashEnv) gatewayArgs(dsnFile, smtpAddr, apiAddr string) []string {
	args := []string{
		"gateway",
		"-tenant", crashTenant, "-tenant-name", crashTenantName, "-text-domain", crashDomain,
		"-database-url-file", dsnFile,
		"-keystore-url", "https://" + e.ksAddr,
		"-smtp-addr", smtpAddr, "-api-addr", apiAddr, "-metrics-addr", "",
		"-trusted-networks", "127.0.0.1/32=" + crashSMTPSender,
		"-sms-provider", "webhook", "-webhook-url", e.sms.url,
		"-viewer-url", crashViewerURL,
		// The SMS rate limit is the provider's business; here it would only slow the drain.
		"-sms-rate", "2000", "-sms-burst", "200",
		// A killed gateway's claimed SMS go out when their lease ends: short, so the test is.
		"-sms-lease", crashSMSLease.String(),
		// Checkpoints signed through the keystore between kills are verified at the end.
		"-audit-checkpoint-interval", "1s",
	}
	for _, flag := range []string{"keystore-cert", "keystore-key", "keystore-ca", "tls-cert", "tls-key", "senders-file", "webhook-secret-file"} {
		args = append(args, "-"+flag, e.files[flag])
	}
	return args
}

// crashGateway runs `securetext gateway` as a child process that the test can SIGKILL and
// start again with the same command line, so the addresses stay the same.
type crashGateway struct {
	bin, dir string
	args     []string

	mu     sync.Mutex
	cur    *crashGatewayRun
	starts int
	tail   *crashLineTail // the last lines of every run, for failure messages
}

type crashGatewayRun struct {
	cmd    *exec.Cmd
	exited <-chan struct{}
	ready  chan struct{}
	state  *os.ProcessState
}

func newCrashGateway(bin, dir string, args []string) *crashGateway {
	return &crashGateway{bin: bin, dir: dir, args: args, tail: &crashLineTail{max: 80}}
}

// Start starts the gateway and waits until it logs that every listener is open. A start that
// fails because a port is still taken is tried again, as Kubernetes restarts a pod.
func (g *crashGateway) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for attempt := 1; ; attempt++ {
		logFile, err := g.start()
		if err == nil || attempt == 20 {
			return err
		}
		if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte("address already in use")) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// start runs the gateway once and returns its log file.
func (g *crashGateway) start() (string, error) {
	if g.cur != nil {
		select {
		case <-g.cur.exited:
		default:
			return "", errors.New("gateway is already running")
		}
	}
	g.starts++
	logPath := filepath.Join(g.dir, fmt.Sprintf("gateway-%02d.log", g.starts))
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	r := &crashGatewayRun{ready: make(chan struct{})}
	watch := &crashReadyWatcher{ready: r.ready, tail: g.tail}
	out := io.MultiWriter(logFile, watch)
	r.cmd = exec.Command(g.bin, g.args...)
	r.cmd.Env = crashGatewayEnv()
	r.cmd.Stdout, r.cmd.Stderr = out, out
	// The gateway must not outlive a test process that dies without cleaning up.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.exited, err = testenv.StartChild(r.cmd, func() {
		r.state = r.cmd.ProcessState
		_ = logFile.Close()
	})
	if err != nil {
		_ = logFile.Close()
		return logPath, fmt.Errorf("start gateway: %w", err)
	}
	g.cur = r
	select {
	case <-r.ready:
		return logPath, nil
	case <-r.exited:
		return logPath, fmt.Errorf("gateway exited during start-up (%v); its last lines:\n%s", r.state, g.tail.String())
	case <-time.After(time.Minute):
		_ = r.cmd.Process.Kill()
		<-r.exited
		return logPath, fmt.Errorf("gateway did not start within a minute; its last lines:\n%s", g.tail.String())
	}
}

// Kill SIGKILLs the running gateway and waits until it is gone.
func (g *crashGateway) Kill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		return errors.New("no gateway to kill")
	}
	select {
	case <-g.cur.exited:
		return fmt.Errorf("gateway had exited by itself (%v); its last lines:\n%s", g.cur.state, g.tail.String())
	default:
	}
	if err := g.cur.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill gateway: %w", err)
	}
	<-g.cur.exited
	return nil
}

// Stop shuts the gateway down gracefully (SIGTERM), as Kubernetes does.
func (g *crashGateway) Stop() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		return nil
	}
	select {
	case <-g.cur.exited:
		return nil
	default:
	}
	if testenv.StopChild(g.cur.cmd, g.cur.exited, syscall.SIGTERM, 30*time.Second) {
		return fmt.Errorf("gateway did not stop within 30 s of SIGTERM; its last lines:\n%s", g.tail.String())
	}
	if !g.cur.state.Success() {
		return fmt.Errorf("gateway exited with %v after SIGTERM; its last lines:\n%s", g.cur.state, g.tail.String())
	}
	return nil
}

// crashGatewayEnv is this process's environment without SECURETEXT_GATEWAY_* variables, which
// would set flags behind the test's back.
func crashGatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, gatewayEnvPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// crashReadyWatcher passes the gateway's log lines to tail and closes ready at "gateway started",
// which Run logs once every listener is open.
type crashReadyWatcher struct {
	ready chan struct{}
	tail  *crashLineTail
	buf   []byte
	done  bool
}

func (w *crashReadyWatcher) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.tail.add(line)
		if !w.done && strings.Contains(line, `"msg":"gateway started"`) {
			w.done = true
			close(w.ready)
		}
	}
	return len(p), nil
}

// crashLineTail keeps the last max lines written.
type crashLineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (l *crashLineTail) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
}

func (l *crashLineTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return "(nothing logged)"
	}
	return strings.Join(l.lines, "\n")
}

// crashGrepLogs counts the lines of the gateway's log files that contain every one of subs.
func crashGrepLogs(dir string, subs ...string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "gateway-*.log"))
	n := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(sc.Text(), s)
			}
			if all {
				n++
			}
		}
		_ = fh.Close()
	}
	return n
}
