package gctune

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                int64
	}{
		{"cgroup v2 limit", "memory.max", "536870912\n", 536870912},
		{"cgroup v2 no limit", "memory.max", "max\n", 0},
		{"cgroup v1 limit", "memory/memory.limit_in_bytes", "268435456\n", 268435456},
		{"cgroup v1 no limit", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0},
		{"no cgroup files", "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.file != "" {
				path := filepath.Join(root, tc.file)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			defer func(old string) { cgroupRoot = old }(cgroupRoot)
			cgroupRoot = root
			if got := containerMemoryLimit(); got != tc.want {
				t.Errorf("limit %d, want %d", got, tc.want)
			}
		})
	}
}

func TestTune(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(old string) { cgroupRoot = old }(cgroupRoot)
	cgroupRoot = root
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))

	t.Run("defaults", func(t *testing.T) {
		for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
			t.Setenv(v, "") // restored afterwards
			os.Unsetenv(v)
		}
		percent, limit := Tune()
		if percent != GCPercent || debug.SetGCPercent(GCPercent) != GCPercent {
			t.Errorf("GC percent %d, want %d", percent, GCPercent)
		}
		if want := int64(900000000); limit != want || debug.SetMemoryLimit(-1) != want {
			t.Errorf("memory limit %d, want %d", limit, want)
		}
	})
	t.Run("environment wins", func(t *testing.T) {
		t.Setenv("GOGC", "150")
		t.Setenv("GOMEMLIMIT", "100MiB")
		debug.SetGCPercent(150)
		debug.SetMemoryLimit(100 << 20)
		percent, limit := Tune()
		if percent != 0 || limit != 0 {
			t.Errorf("set %d and %d, want both left alone", percent, limit)
		}
		if p := debug.SetGCPercent(150); p != 150 {
			t.Errorf("GC percent %d, want GOGC's 150", p)
		}
		if l := debug.SetMemoryLimit(-1); l != 100<<20 {
			t.Errorf("memory limit %d, want GOMEMLIMIT's", l)
		}
	})
}
