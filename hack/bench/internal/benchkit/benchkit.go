// Package benchkit holds what the hack/bench tools share: the run wrapper with its exit
// codes, the machine's description for a table's heading, and per-process CPU time from /proc.
package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Main runs run with a context that Ctrl-C or SIGTERM cancels, and exits 1 with the error.
func Main(run func(context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Logf writes a progress line to stderr; the table goes to stdout.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// Machine describes this machine for a table's heading: cores, CPU model, Go version.
func Machine() string {
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
	return fmt.Sprintf("%d × %s, %s", runtime.NumCPU(), model, runtime.Version())
}

// UserHZ is the unit of /proc/<pid>/stat times: USER_HZ, 100 on Linux.
const UserHZ = 100

// Proc is one process's CPU time as /proc/<pid>/stat has it.
type Proc struct {
	PPID          int
	Comm          string
	Start         string // starttime: a pid reused by a new process has another
	Ticks         int64  // utime+stime
	ChildrenTicks int64  // cutime+cstime: reaped children, all of their lifetime
}

// Procs reads every process's CPU time, by pid.
func Procs() map[int]Proc {
	procs := map[int]Proc{}
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
		// "pid (comm) state ppid … utime stime cutime cstime … starttime": comm may hold
		// spaces, so fields are counted after the last ')'.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 20 {
			continue
		}
		// f[0] is field 3 (state); ppid is field 4, utime stime cutime cstime fields 14–17,
		// starttime field 22.
		var t [4]int64
		for i := range t {
			t[i], _ = strconv.ParseInt(f[11+i], 10, 64)
		}
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = Proc{PPID: ppid, Comm: s[open+1 : closing], Start: f[19], Ticks: t[0] + t[1], ChildrenTicks: t[2] + t[3]}
	}
	return procs
}
