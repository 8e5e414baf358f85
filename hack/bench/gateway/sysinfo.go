package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

// machine describes this machine for the table's heading.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	return fmt.Sprintf("%d × %s, %s", numCPU(), model, runtime.Version())
}

// postfixVersion is Postfix's mail_version, e.g. 3.7.11.
func postfixVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "/usr/sbin/postconf", "-d", "-h", "mail_version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// waitListening waits until something accepts TCP connections on addr.
func waitListening(ctx context.Context, addr string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nothing listens on %s after %s: %w", addr, bound, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
