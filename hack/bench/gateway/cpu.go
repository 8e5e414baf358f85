package main

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/securetext/securetext/hack/bench/internal/benchkit"
)

// CPU accounting from /proc, so that the table can say where a run's CPU time went: this
// process (gateway, keystore and, for REST, the load generator), PostgreSQL, Vault, Postfix's
// daemons and smtp-source. Times of processes that exited are counted through their parent's
// cutime/cstime once reaped, which is how PostgreSQL backends and Postfix daemons end.

type cpuSnapshot = map[int]benchkit.Proc

func takeCPU() cpuSnapshot { return benchkit.Procs() }

// cpuUse is CPU seconds per group of processes.
type cpuUse map[string]float64

func cpuGroup(pid int, comm string) string {
	switch {
	case pid == os.Getpid():
		return "securetext"
	case comm == "postgres":
		return "postgres"
	case strings.HasPrefix(comm, "vault"):
		return "vault"
	case comm == "smtp-source":
		return "smtp-source"
	case strings.HasPrefix(comm, "kworker") || strings.HasPrefix(comm, "ksoftirqd") || strings.HasPrefix(comm, "jbd2"):
		return "kernel"
	}
	switch comm {
	case "master", "smtpd", "cleanup", "qmgr", "trivial-rewrite", "discard", "anvil", "postlogd",
		"pickup", "bounce", "proxymap", "scache", "tlsmgr", "verify", "flush", "showq":
		return "postfix"
	}
	return "other"
}

// cpuSince returns the CPU used since before. Reaped children count only for PostgreSQL's
// postmaster and Postfix's master, whose children (backends, daemons) live and die within a
// run; another parent's cutime can jump by a child's whole lifetime when it is reaped. Our own
// children (smtp-source) are counted by the caller.
func cpuSince(before cpuSnapshot) cpuUse {
	after := takeCPU()
	use := cpuUse{}
	for pid, a := range after {
		group := cpuGroup(pid, a.Comm)
		d := a.Ticks
		if group == "postgres" || group == "postfix" {
			d += a.ChildrenTicks
		}
		// A kernel worker's comm names its current work queue, so a process is known by its
		// pid and start time.
		if b, ok := before[pid]; ok && b.Start == a.Start {
			d -= b.Ticks
			if group == "postgres" || group == "postfix" {
				d -= b.ChildrenTicks
			}
		}
		if d > 0 {
			use[group] += float64(d) / benchkit.UserHZ
		}
	}
	return use
}

// phase is one measured run with the CPU it used.
type phase struct {
	name    string
	elapsed time.Duration
	cpu     cpuUse
}

// timeWaits counts the TCP connections in TIME-WAIT whose remote or local port is port: each
// is a connection closed in the last minute, so a count near the number of requests means
// connections are not reused.
func timeWaits(port int) int {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "06" {
				continue
			}
			for _, addr := range fields[1:3] {
				if _, hexPort, ok := strings.Cut(addr, ":"); ok {
					if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
						n++
						break
					}
				}
			}
		}
	}
	return n
}
