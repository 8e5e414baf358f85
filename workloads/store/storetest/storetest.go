// Package storetest is the conformance suite of package store: every behaviour the gateway,
// the viewer and the notifier rely on, run against each database the store supports.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/store"
)

// Tenant is the tenant the suite opens stores for.
const Tenant = "clinic-a"

// Run runs the suite. newDatabase returns the DSN of a new, empty database (store.Open
// applies the schema); the suite opens it, sometimes twice, as replicas would.
func Run(t *testing.T, newDatabase func(t *testing.T) string) {
	h := harness{newDatabase: newDatabase}
	for _, tc := range []struct {
		name string
		test func(*testing.T, harness)
	}{
		{"AcceptAndRead", testAcceptAndRead},
		{"AcceptReusesRecipient", testAcceptReusesRecipient},
		{"AcceptIsOneTransaction", testAcceptIsOneTransaction},
		{"AcceptRefusesInvalid", testAcceptRefusesInvalid},
		{"AcceptGroups", testAcceptGroups},
		{"IdempotencyReplay", testIdempotencyReplay},
		{"IdempotencyConflict", testIdempotencyConflict},
		{"IdempotencyPurge", testIdempotencyPurge},
		{"OptedOut", testOptedOut},
		{"OptedOutLookups", testOptedOutLookups},
		{"MessageEvents", testMessageEvents},
		{"Transitions", testTransitions},
		{"FinalStatusRefusesChange", testFinalStatusRefusesChange},
		{"Purge", testPurge},
		{"RetentionCandidates", testRetentionCandidates},
		{"ExpireAndPurgeMessages", testExpireAndPurgeMessages},
		{"ConcurrentPurge", testConcurrentPurge},
		{"ListMessages", testListMessages},
		{"Leases", testLeases},
		{"SweepRecord", testSweepRecord},
		{"ReadsNotFound", testReadsNotFound},
		{"LoginFailures", testLoginFailures},
		{"LoginBurst", testLoginBurst},
		{"LoginFailureAudited", testLoginFailureAudited},
		{"Sessions", testSessions},
		{"VisitLink", testVisitLink},
		{"Replies", testReplies},
		{"FirstPassword", testFirstPassword},
		{"FirstPasswordRace", testFirstPasswordRace},
		{"ResetPassword", testResetPassword},
		{"OneTimeCodes", testOneTimeCodes},
		{"OneTimeCodeRateLimit", testOneTimeCodeRateLimit},
		{"OneTimeCodeSingleUse", testOneTimeCodeSingleUse},
		{"OneTimeCodeBoundToBrowser", testOneTimeCodeBoundToBrowser},
		{"OutboxClaimAndLease", testOutboxClaimAndLease},
		{"OutboxConcurrentClaimers", testOutboxConcurrentClaimers},
		{"OutboxRetryFailSent", testOutboxRetryFailSent},
		{"MarkSentGroups", testMarkSentGroups},
		{"MarkSentRace", testMarkSentRace},
		{"OutboxStats", testOutboxStats},
		{"AuditChainVerifies", testAuditChainVerifies},
		{"AuditRefusesInvalid", testAuditRefusesInvalid},
		{"AppendAuditGroups", testAppendAuditGroups},
		{"AuditConcurrentSequencers", testAuditConcurrentSequencers},
		{"AuditCheckpoints", testAuditCheckpoints},
		{"AuditCheckpointHead", testAuditCheckpointHead},
		{"AuditRewriteRefused", testAuditRewriteRefused},
		{"AuditCheckpointBacklog", testAuditCheckpointBacklog},
		{"AuditPruneAtCheckpoint", testAuditPruneAtCheckpoint},
		{"AuditPruneNeedsOldCheckpoint", testAuditPruneNeedsOldCheckpoint},
		{"AuditPruneKeepsHeld", testAuditPruneKeepsHeld},
		{"AuditPruneStoppedMidway", testAuditPruneStoppedMidway},
		{"ReopenIsNoOp", testReopenIsNoOp},
		{"OtherTenantRefused", testOtherTenantRefused},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, h) })
	}
}

type harness struct {
	newDatabase func(t *testing.T) string
}

// open opens a store on a new database.
func (h harness) open(t *testing.T) (*store.Store, string) {
	t.Helper()
	dsn := h.newDatabase(t)
	return Open(t, dsn), dsn
}

// Open opens a store for Tenant on dsn, closed at the end of the test.
func Open(t testing.TB, dsn string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn, Tenant)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewRequest returns a realistic request for a message to phone: a body and an attachment,
// random ids and link token, an idempotency key.
func NewRequest(phone string) store.AcceptRequest {
	id := store.NewID()
	return store.AcceptRequest{
		MessageID:     id,
		Sender:        "sender-1",
		Phone:         phone,
		Channel:       store.ChannelAPI,
		WrappedKey:    "vault:v1:" + store.NewID(),
		LinkTokenHash: sha256.Sum256([]byte(store.NewID())),
		Parts: []store.Part{
			{Name: "body", Ciphertext: randomBytes(1024)},
			{Name: "attachment/0", Ciphertext: randomBytes(300)},
		},
		ExpiresAt:      time.Now().Add(72 * time.Hour),
		NotifyPayload:  randomBytes(48),
		IdempotencyKey: "key-" + id,
		RequestHash:    sha256.Sum256([]byte("request " + id)),
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var phoneCounter atomic.Int64

// newPhone returns a phone number that is new to the test (numbers repeat after 10,000).
func newPhone() string {
	return fmt.Sprintf("+1202555%04d", phoneCounter.Add(1)%10000)
}

func accept(t *testing.T, s *store.Store, r store.AcceptRequest) store.AcceptResult {
	t.Helper()
	res, err := s.AcceptMessage(context.Background(), r)
	if err != nil {
		t.Fatalf("accept message: %v", err)
	}
	return res
}

// wantErr fails unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
