package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU accounting from /proc, so that the table can say where a run's CPU time went: this
// process (gateway, keystore and, for REST, the load generator), PostgreSQL, Vault, Postfix's
// daemons and smtp-source. Times of processes that exited are counted through their parent's
// cutime/cstime once reaped, which is how PostgreSQL backends and Postfix daemons end.

// userHZ is the unit of /proc/<pid>/stat times: USER_HZ, 100 on Linux.
const userHZ = 100

type procTime struct {
	comm          string
	start         string // starttime: a pid reused by a new process has another
	ticks         int64  // utime+stime
	childrenTicks int64  // cutime+cstime: reaped children, all of their lifetime
}

type cpuSnapshot map[int]procTime

func takeCPU() cpuSnapshot {
	snap := cpuSnapshot{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 20 {
			continue
		}
		// utime stime cutime cstime are fields 14–17; f[0] is field 3.
		var t [4]int64
		for i := range t {
			t[i], _ = strconv.ParseInt(f[11+i], 10, 64)
		}
		snap[pid] = procTime{comm: s[open+1 : closing], start: f[19], ticks: t[0] + t[1], childrenTicks: t[2] + t[3]}
	}
	return snap
}

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
		group := cpuGroup(pid, a.comm)
		d := a.ticks
		if group == "postgres" || group == "postfix" {
			d += a.childrenTicks
		}
		// A kernel worker's comm names its current work queue, so a process is known by its
		// pid and start time.
		if b, ok := before[pid]; ok && b.start == a.start {
			d -= b.ticks
			if group == "postgres" || group == "postfix" {
				d -= b.childrenTicks
			}
		}
		if d > 0 {
			use[group] += float64(d) / userHZ
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
