package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/retention"
)

// The sweeper's candidate queries read the partial indexes of migration 00005: a query whose
// condition drifts from the index's would scan the whole messages table at every sweep, on
// SQLite without a word.
func TestCandidatesUseTheirIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "tenant.db"), "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.db
	for condition, index := range map[string]string{unreadCondition: "messages_unread_idx", unpurgedCondition: "messages_unpurged_idx"} {
		var plan []string
		s.db = planRecorder{db, &plan}
		if _, err := s.candidates(ctx, "plan", condition, time.Now(), retention.Message{}, 10); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(plan, "; "); !strings.Contains(got, "USING INDEX "+index+" ((created_at,id)>") || strings.Contains(got, "TEMP B-TREE") {
			t.Errorf("candidates with %s: plan %q, want a range of %s without sorting", condition, got, index)
		}
	}
}

// planRecorder reads the query plan of each query instead of its rows.
type planRecorder struct {
	database
	plan *[]string
}

func (p planRecorder) query(ctx context.Context, sql string, args ...any) (rows, error) {
	r, err := p.database.query(ctx, "EXPLAIN QUERY PLAN "+sql, args...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for r.Next() {
		var id, parent, unused int
		var detail string
		if err := r.Scan(&id, &parent, &unused, &detail); err != nil {
			return nil, err
		}
		*p.plan = append(*p.plan, detail)
	}
	return p.database.query(ctx, sql, args...)
}
