package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

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
