package retention

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// configMapVolume lays out dir as the kubelet does a ConfigMap volume: the file is a symlink
// into ..data, itself a symlink to a timestamped directory that an update replaces whole.
type configMapVolume struct {
	t   *testing.T
	dir string
	n   int
}

func (v *configMapVolume) write(content string) {
	v.t.Helper()
	v.n++
	ts := filepath.Join(v.dir, "..2026_03_01_09_00_0"+string(rune('0'+v.n)))
	if err := os.Mkdir(ts, 0o755); err != nil {
		v.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, FileName), []byte(content), 0o644); err != nil {
		v.t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
	link := filepath.Join(v.dir, FileName)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", FileName), link); err != nil {
			v.t.Fatal(err)
		}
	}
}

const (
	settingsA = `{"policy": {"name": "a", "unreadLinkExpiry": "72h", "contentPurgeAfter": "720h", "auditRetention": "52608h", "sweepInterval": "1h"}, "holds": []}`
	settingsB = `{"policy": {"name": "b", "unreadLinkExpiry": "72h", "contentPurgeAfter": "720h", "auditRetention": "52608h", "sweepInterval": "1h"},
		"holds": [{"name": "matter-1", "reason": "r", "matcher": {"recipients": ["+12025550143"]}}]}`
	// A bad edit: content purged before its link expires, and a phone number in a matcher.
	settingsBad = `{"policy": {"name": "c", "unreadLinkExpiry": "720h", "contentPurgeAfter": "72h", "auditRetention": "52608h", "sweepInterval": "1h"},
		"holds": [{"name": "matter-1", "reason": "r", "matcher": {"recipients": ["+12025550199"]}}]}`
)

func TestSourceFollowsConfigMapUpdates(t *testing.T) {
	v := &configMapVolume{t: t, dir: t.TempDir()}
	v.write(settingsA)
	path := filepath.Join(v.dir, FileName)
	var logs syncBuffer
	src, err := LoadSource(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if p := src.Settings().Policy; p == nil || p.Name != "a" {
		t.Fatalf("loaded %+v", src.Settings())
	}
	if changed, err := src.Reload(); changed || err != nil {
		t.Errorf("reload of an unchanged file: %v, %v", changed, err)
	}

	v.write(settingsB)
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("reload after the swap: %v, %v", changed, err)
	}
	if s := src.Settings(); s.Policy.Name != "b" || len(s.Holds) != 1 {
		t.Errorf("after the swap: %+v", s)
	}

	// A bad file is refused, and logged once without the phone number; the holds and the
	// policy in force stay. Then Watch takes the next good file.
	v.write(settingsBad)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Watch(ctx, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if s := src.Settings(); s.Policy.Name != "b" || len(s.Holds) != 1 {
		t.Errorf("after a bad file: %+v, want the last good settings", s)
	}
	v.write(settingsA)
	deadline := time.Now().Add(5 * time.Second)
	for src.Settings().Policy.Name != "a" {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not take the good file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	out := logs.String()
	if n := strings.Count(out, "content cannot be purged"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "+1202555") {
		t.Errorf("a phone number was logged:\n%s", out)
	}
	if !strings.Contains(out, "retention settings changed") {
		t.Errorf("the change was not logged:\n%s", out)
	}
}

func TestLoadSourceRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadSource(filepath.Join(dir, "missing.json"), nil); err == nil {
		t.Error("a missing file loaded")
	}
	bad := filepath.Join(dir, FileName)
	if err := os.WriteFile(bad, []byte(settingsBad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSource(bad, nil); err == nil {
		t.Error("an invalid file loaded")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
