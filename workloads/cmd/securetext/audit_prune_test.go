package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
)

// TestAuditExportVerifiesAfterPruning: once the oldest audit events are pruned (and while the
// deleting is still under way), `audit export` starts at the signed anchor and `audit verify`
// accepts the export with the tenant's key, also as extending an export taken before the
// pruning; it refuses the export with an event after the anchor changed or removed, or with
// the anchor changed.
func TestAuditExportVerifiesAfterPruning(t *testing.T) {
	ctx := context.Background()
	dir, dsn, keyFile, st := auditTenant(t)
	old := time.Date(2020, 1, 6, 9, 0, 0, 0, time.UTC)
	appendEvents := func(at time.Time, from, n int) {
		t.Helper()
		for i := range n {
			ev := audit.Event{Time: at, Kind: audit.KindAdminAction, Actor: "operator", Detail: map[string]string{"n": string(rune('a' + from + i))}}
			if err := st.AppendAudit(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.SequenceAudit(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	export := func(name string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		if err := runAudit(ctx, []string{"export", "-dsn", dsn, "-tenant", "clinic-a", "-local-key-file", keyFile, "-o", out}, io.Discard, io.Discard); err != nil {
			t.Fatalf("export: %v", err)
		}
		return out
	}

	appendEvents(old, 0, 5)
	before := export("before.ndjson") // signs a checkpoint at 5
	appendEvents(old.Add(24*time.Hour), 5, 3)

	// Prune through the checkpoint at 5, and stop after the first batch.
	res, err := st.PruneAudit(ctx, old.Add(time.Hour), 6, audit.Event{Kind: audit.KindAuditPruned, Actor: "retention",
		Detail: map[string]string{"rule": "hipaa-standard"}}, 2)
	if err != nil || !res.Cut || res.Anchor != 5 || res.Deleted != 2 {
		t.Fatalf("prune: %+v, %v; want the cut at 5 and 2 events deleted", res, err)
	}
	st.Close()
	pruned := export("pruned.ndjson")

	local, err := keystore.NewLocal(keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString(pub)
	var out bytes.Buffer
	if err := runAudit(ctx, []string{"verify", "-key", key, pruned}, &out, io.Discard); err != nil {
		t.Fatalf("verify the export of the pruned trail: %v", err)
	}
	if !strings.Contains(out.String(), "ok: 4 events") || !strings.Contains(out.String(), "from event 6") {
		t.Errorf("verify says\n%s\nwant 4 events (6 to 8 and the record of the pruning) from event 6", out.String())
	}
	if err := runAudit(ctx, []string{"verify", "-key", key, "-trusted", before, pruned}, io.Discard, io.Discard); err != nil {
		t.Errorf("verify the pruned export as extending the one before: %v", err)
	}

	raw, err := os.ReadFile(pruned)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	if !strings.Contains(lines[0], `"first":6`) || !strings.Contains(lines[1], `"checkpoint"`) || !strings.Contains(lines[1], `"size":5,`) {
		t.Fatalf("the export starts with\n%s%swant the header of a segment from 6, then the anchor at 5", lines[0], lines[1])
	}
	without := func(i int) string {
		return strings.Join(append(append([]string(nil), lines[:i]...), lines[i+1:]...), "")
	}
	for _, tc := range []struct{ name, file, says string }{
		{"an event after the anchor changed", strings.Replace(string(raw), `"n":"g"`, `"n":"z"`, 1), "event 7"},
		{"an event after the anchor removed", without(3), "event 7 is missing"},
		{"the anchor changed", strings.Replace(string(raw), lines[1], strings.Replace(lines[1], `"size":5,`, `"size":4,`, 1), 1), "segment starts at event 6"},
		{"the anchor's signature changed", strings.Replace(string(raw), lines[1], flipAfter(t, lines[1], `"signature":"`), 1), "signature does not verify"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".ndjson")
		if tc.file == string(raw) {
			t.Fatalf("%s: the edit changed nothing", tc.name)
		}
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		err := runAudit(ctx, []string{"verify", "-key", key, path}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("verify with %s: %v; want a failure saying %q", tc.name, err, tc.says)
		}
	}
}

// flipAfter returns line with the character after marker replaced by another base64 digit.
func flipAfter(t *testing.T, line, marker string) string {
	t.Helper()
	i := strings.Index(line, marker)
	if i < 0 {
		t.Fatalf("no %s in %s", marker, line)
	}
	i += len(marker)
	c := byte('A')
	if line[i] == 'A' {
		c = 'B'
	}
	return line[:i] + string(c) + line[i+1:]
}
