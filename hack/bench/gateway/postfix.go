package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// Postfix is the baseline: a private, throwaway Postfix instance that accepts mail from
// 127.0.0.0/8 on one loopback port, queues it durably (cleanup fsyncs every queue file before
// smtpd answers 250) and then discards it. It has its own config_directory, queue_directory
// and data_directory under a temporary folder and never touches /etc/postfix or the system's
// mail.

const (
	postfixBin     = "/usr/sbin/postfix"
	smtpSourceBin  = "/usr/sbin/smtp-source"
	postfixPackage = "postfix" // Debian's package ships postfix and smtp-source
)

// ensurePostfix installs Debian's postfix package when postfix or smtp-source is missing.
// The package's own configuration is skipped ("No configuration"), so it neither starts a
// system mail server nor writes /etc/postfix/main.cf.
func ensurePostfix(ctx context.Context, log func(string, ...any)) error {
	if executable(postfixBin) && executable(smtpSourceBin) {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s or %s is missing, and installing the %s package needs root: run `sudo apt-get install postfix`, or run this as root",
			postfixBin, smtpSourceBin, postfixPackage)
	}
	log("postfix is not installed: installing Debian's %s package with apt-get (no configuration, no system mail server)", postfixPackage)
	script := `echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix; }`
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("install postfix: %w", err)
	}
	if !executable(postfixBin) || !executable(smtpSourceBin) {
		return fmt.Errorf("installed %s, but %s or %s is still missing", postfixPackage, postfixBin, smtpSourceBin)
	}
	return nil
}

func executable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}

// postfixInstance is a running private Postfix.
type postfixInstance struct {
	dir  string // holds etc/, queue/, data/ and maillog
	addr string // 127.0.0.1:port
}

// startPostfix configures and starts a private instance listening on addr.
func startPostfix(ctx context.Context, addr string) (*postfixInstance, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("postfix: the private instance must be started as root (its master runs as root and its daemons as the postfix user)")
	}
	for _, name := range []string{"postfix"} {
		if _, err := user.Lookup(name); err != nil {
			return nil, fmt.Errorf("postfix: the %s user is missing (the postfix package creates it): %w", name, err)
		}
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		return nil, fmt.Errorf("postfix: the postdrop group is missing (the postfix package creates it): %w", err)
	}
	dir, err := os.MkdirTemp("", "securetext-bench-postfix-")
	if err != nil {
		return nil, err
	}
	p := &postfixInstance{dir: dir, addr: addr}
	// The daemons run as postfix and must reach data/ and queue/ through dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		p.remove()
		return nil, err
	}
	etc, data := filepath.Join(dir, "etc"), filepath.Join(dir, "data")
	for _, d := range []string{etc, filepath.Join(dir, "queue"), data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			p.remove()
			return nil, err
		}
	}
	pf, _ := user.Lookup("postfix")
	var uid, gid int
	_, _ = fmt.Sscan(pf.Uid, &uid)
	_, _ = fmt.Sscan(pf.Gid, &gid)
	if err := os.Chown(data, uid, gid); err != nil {
		p.remove()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(postfixMainCF(dir)), 0o644); err != nil {
		p.remove()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(postfixMasterCF(addr)), 0o644); err != nil {
		p.remove()
		return nil, err
	}
	if err := p.postfix(ctx, "check"); err != nil {
		p.remove()
		return nil, err
	}
	if err := p.postfix(ctx, "start"); err != nil {
		p.remove()
		return nil, err
	}
	if err := waitListening(ctx, addr, 30*time.Second); err != nil {
		p.Stop(context.Background())
		return nil, fmt.Errorf("postfix: %w; its log:\n%s", err, p.logTail(20))
	}
	return p, nil
}

// postfixMainCF relays mail from 127.0.0.0/8 to the discard transport: every message is
// queued (written and fsynced) before the 250, then "delivered" by discarding it.
func postfixMainCF(dir string) string {
	return fmt.Sprintf(`# A throwaway instance for hack/bench/gateway.
compatibility_level = 3.6
config_directory = %[1]s/etc
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
multi_instance_directories =
myhostname = postfix.bench.localdomain
mydomain = bench.localdomain
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:bench
relay_transport = discard:bench
local_transport = discard:bench
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
smtputf8_enable = no
biff = no
`, dir)
}

// postfixMasterCF runs the daemons the relay path needs, none chrooted (the temporary queue
// has no chroot set-up), and smtpd on addr only.
func postfixMasterCF(addr string) string {
	return addr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
}

// postfix runs `postfix -c <etc> <command>`.
func (p *postfixInstance) postfix(ctx context.Context, command string) error {
	cmd := exec.CommandContext(ctx, postfixBin, "-c", filepath.Join(p.dir, "etc"), command)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("postfix %s: %w\n%s%s", command, err, out.String(), p.logTail(20))
	}
	return nil
}

// Stop stops the instance and removes its folder.
func (p *postfixInstance) Stop(ctx context.Context) {
	_ = p.postfix(ctx, "stop")
	// postfix stop returns once master is told; wait for its pid file to go.
	pid := filepath.Join(p.dir, "queue", "pid", "master.pid")
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(pid); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	p.remove()
}

func (p *postfixInstance) remove() { _ = os.RemoveAll(p.dir) }

// delivered counts the messages the discard transport took, from the instance's log.
func (p *postfixInstance) delivered() int {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return bytes.Count(b, []byte("status=sent (bench)"))
}

func (p *postfixInstance) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(p.dir, "maillog"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n") + "\n"
}

// runSMTPSource runs Postfix's load generator and returns how long it took and the CPU time
// it used.
func runSMTPSource(ctx context.Context, o options, sessions int, to, addr string) (time.Duration, float64, error) {
	args := []string{"-s", fmt.Sprint(sessions), "-m", fmt.Sprint(o.messages), "-l", fmt.Sprint(o.size),
		"-t", to, "-f", "bench@example", addr}
	cmd := exec.CommandContext(ctx, smtpSourceBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	var cpu float64
	if cmd.ProcessState != nil {
		cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		return elapsed, cpu, fmt.Errorf("smtp-source %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return elapsed, cpu, nil
}
