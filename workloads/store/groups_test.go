package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// TestAcceptGroupsShareCommits: accepts that arrive while a group commits leave together, so
// 64 concurrent accepts take far fewer transactions than messages; with groups of one, each
// message has its own. PostgreSQL tells: a row's xmin is the transaction that inserted it.
// Either way every message is stored whole, with its recipient (8 patients get 8 messages
// each), parts, idempotency key, outbox row and audit event.
func TestAcceptGroupsShareCommits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []store.Option
		atMost  int64 // transactions for 64 messages
		atLeast int64
	}{
		{"grouped", []store.Option{store.WithAcceptGroups(64, 1)}, 32, 1},
		{"one per commit", []store.Option{store.WithAcceptGroups(1, 1)}, 1 << 20, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := postgresDatabase(t)
			s, err := store.Open(ctx, dsn, storetest.Tenant, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 64 {
				wg.Go(func() {
					<-start
					r := storetest.NewRequest(fmt.Sprintf("+1202555%04d", 100+i%8))
					if _, err := s.AcceptMessage(ctx, r); err != nil {
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var n, rows int64
			if err := conn.QueryRow(ctx, `SELECT count(DISTINCT xmin::text), count(*) FROM messages`).Scan(&n, &rows); err != nil {
				t.Fatal(err)
			}
			if rows != 64 {
				t.Fatalf("%d messages stored, want 64", rows)
			}
			if n > tc.atMost || n < tc.atLeast {
				t.Fatalf("64 accepts took %d accept transactions, want %d to %d", n, tc.atLeast, tc.atMost)
			}
			t.Logf("64 accepts took %d accept transactions", n)
			for _, c := range []struct {
				what, query string
				want        int64
			}{
				{"recipients", `SELECT count(*) FROM recipients`, 8},
				{"patients with messages", `SELECT count(DISTINCT m.recipient_id) FROM messages m`, 8},
				{"parts", `SELECT count(*) FROM message_parts p JOIN messages m ON m.id = p.message_id`, 128},
				{"idempotency keys", `SELECT count(*) FROM idempotency_keys k JOIN messages m ON m.id = k.message_id AND k.key = 'key-' || m.id`, 64},
				{"outbox rows", `SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.message_id`, 64},
				{"accepted events", `SELECT count(*) FROM audit_pending a JOIN messages m ON m.id = a.message_id WHERE a.kind = 'accepted'`, 64},
			} {
				var got int64
				if err := conn.QueryRow(ctx, c.query).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Errorf("%s: %d, want %d", c.what, got, c.want)
				}
			}
		})
	}
}
