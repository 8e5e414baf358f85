// Package gctune sets Go's garbage collector for SecureText's server processes: the
// workloads' commands call Tune first, and so do the benchmarks that host a workload in
// their own process.
package gctune

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// GCPercent is the garbage collector's target for SecureText's servers, unless GOGC is set.
// Their live heap is small (a few megabytes) and their garbage per request large, so with
// Go's default of 100 they collect many times a second under load, each collection with a
// short stop of the world that shows in the tail latency. 400 trades a heap of a few tens of
// megabytes for a quarter as many collections (BenchmarkRevealRemembered measures the
// effect).
const GCPercent = 400

// MemoryLimitShare is the share of the container's memory limit that the Go runtime is told
// to stay within, unless GOMEMLIMIT is set: near it the collector works harder instead of
// letting a heap that GCPercent allows to grow fivefold get the process killed. The rest is
// headroom for what the runtime does not count.
const MemoryLimitShare = 0.9

// cgroupRoot is where the container's control group is mounted.
var cgroupRoot = "/sys/fs/cgroup"

// Tune sets the garbage collector for a server process: GCPercent unless GOGC is set, and
// MemoryLimitShare of the container's memory limit (cgroup v2 or v1) unless GOMEMLIMIT is
// set or the container has no limit. It returns the percent and the limit in bytes it set
// (0 for one it left alone).
func Tune() (percent int, limit int64) {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(GCPercent)
		percent = GCPercent
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		if max := containerMemoryLimit(); max > 0 {
			limit = int64(float64(max) * MemoryLimitShare)
			debug.SetMemoryLimit(limit)
		}
	}
	return percent, limit
}

// containerMemoryLimit returns the memory limit of the process's control group in bytes, or
// 0 if there is none or it cannot be read.
func containerMemoryLimit() int64 {
	for _, f := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(cgroupRoot, f))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(s, 10, 64)
		// cgroup v2 says "max" for no limit; v1 gives a number near the largest page-aligned
		// int64.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}
