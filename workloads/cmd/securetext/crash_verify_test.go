package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/content"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
	"github.com/securetext/securetext/workloads/token"
)

// crashResult is what the store check counted, for the summary.
type crashResult struct {
	sms, duplicateSMS, events, checkpoints int
}

// crashProblems collects what is wrong, so that one run reports every kind of damage at once
// without printing a thousand lines.
type crashProblems struct {
	t     *testing.T
	count int
}

func (p *crashProblems) add(format string, args ...any) {
	p.t.Helper()
	p.count++
	if p.count <= 25 {
		p.t.Errorf(format, args...)
	} else if p.count == 26 {
		p.t.Errorf("… and more problems; only the first 25 are shown")
	}
}

var crashMarkerRE = regexp.MustCompile(crashMarkerPrefix + `[a-z]+-[0-9]{4}-[0-9a-f]{8}`)

// verifyCrashStore checks the database the crashed gateway left, through the store and the
// local keystore backend.
func verifyCrashStore(t *testing.T, st *store.Store, dsn string, env *crashEnv, subs []*crashSubmission) crashResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res crashResult
	p := &crashProblems{t: t}
	// The gateway's sequencer chains pending events as they come; what its last run left is
	// chained here, as its next start would do.
	storetest.LinkAll(t, st)

	// The store has no "list every message": read the ids, and what the store API does not
	// show (outbox rows, idempotency keys), with SQL.
	type row struct {
		id             string
		outbox, sent   int
		idempotencyKey int
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	rows, err := db.Query(ctx, `SELECT m.id,
			(SELECT count(*) FROM outbox o WHERE o.message_id = m.id),
			(SELECT count(*) FROM outbox o WHERE o.message_id = m.id AND o.sent_at IS NOT NULL),
			(SELECT count(*) FROM idempotency_keys k WHERE k.message_id = m.id)
		FROM messages m ORDER BY m.id`)
	if err != nil {
		t.Fatal(err)
	}
	var stored []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.outbox, &r.sent, &r.idempotencyKey); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(subs) {
		p.add("the store holds %d messages for %d submissions", len(stored), len(subs))
	}

	sends, totalSMS, refused := env.sms.snapshot()
	res.sms = totalSMS
	for _, why := range refused {
		p.add("the SMS receiver refused a request: %s", why)
	}
	bySub := map[string]*crashSubmission{}
	for _, s := range subs {
		bySub[s.marker] = s
	}
	storedAs := map[string][]string{} // marker → message ids
	isStored := map[string]bool{}
	for _, r := range stored {
		isStored[r.id] = true
		marker, ok := crashCheckMessage(ctx, p, st, env, r.id, sends[r.id])
		if ok {
			storedAs[marker] = append(storedAs[marker], r.id)
			if s := bySub[marker]; s != nil {
				crashCheckMatches(ctx, p, st, s, r.id, sends[r.id])
			}
		}
		switch {
		case r.outbox != 1 || r.sent != 1:
			p.add("message %s has %d outbox rows, %d of them sent; want exactly one, sent", r.id, r.outbox, r.sent)
		case r.idempotencyKey != 1:
			p.add("message %s has %d idempotency keys, want 1 (every submission carried one)", r.id, r.idempotencyKey)
		}
		if n := len(sends[r.id]); n > 1 {
			res.duplicateSMS += n - 1
		}
	}
	for ref, texts := range sends {
		if !isStored[ref] {
			p.add("%d SMS were sent for message %s, which is not stored", len(texts), ref)
		}
	}
	for _, s := range subs {
		ids := storedAs[s.marker]
		switch {
		case len(ids) == 0:
			p.add("%s submission %d was acknowledged as %s (after %d attempts) but is not stored", s.channel, s.n, s.ackedID, s.attempts)
		case len(ids) > 1:
			p.add("%s submission %d is stored %d times: %v", s.channel, s.n, len(ids), ids)
		case ids[0] != s.ackedID:
			p.add("%s submission %d was acknowledged as %s but is stored as %s", s.channel, s.n, s.ackedID, ids[0])
		}
	}
	for marker, ids := range storedAs {
		if bySub[marker] == nil {
			p.add("messages %v hold marker %s, which no sender submitted", ids, marker)
		}
	}

	res.events, res.checkpoints = verifyCrashAudit(ctx, t, p, st, env, len(subs))
	return res
}

// crashCheckMessage checks that message id is whole: its parts decrypt with its wrapped data key,
// its accepted and notified events are audited once each, it is notified with the id the SMS
// gateway gave, and its SMS links to it. It returns the marker in its body.
func crashCheckMessage(ctx context.Context, p *crashProblems, st *store.Store, env *crashEnv, id string, texts []crashSMS) (string, bool) {
	p.t.Helper()
	m, err := st.Message(ctx, id)
	if err != nil {
		p.add("read message %s: %v", id, err)
		return "", false
	}
	parts, err := st.MessageParts(ctx, id)
	if err != nil {
		p.add("read parts of message %s: %v", id, err)
		return "", false
	}
	key, err := env.local.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		p.add("unwrap the data key of message %s: %v", id, err)
		return "", false
	}
	defer envelope.Zero(key)
	plain := make([]content.Part, 0, len(parts))
	for _, part := range parts {
		b, err := envelope.Open(key, envelope.AssociatedData{Tenant: crashTenant, MessageID: id, Part: part.Name}, part.Ciphertext)
		if err != nil {
			p.add("message %s: part %s does not decrypt: %v", id, part.Name, err)
			return "", false
		}
		plain = append(plain, content.Part{Name: part.Name, Plaintext: b})
	}
	msg, err := content.Decode(plain)
	if err != nil {
		p.add("message %s: parts do not decode: %v", id, err)
		return "", false
	}
	markers := crashMarkerRE.FindAllString(msg.Text, -1)
	if len(markers) != 1 || msg.Subject != "Lab results" {
		p.add("message %s: subject %q, markers %v in its body; want Lab results and one marker", id, msg.Subject, markers)
		return "", false
	}

	events, err := st.MessageEvents(ctx, id)
	if err != nil {
		p.add("read events of message %s: %v", id, err)
	}
	kinds := map[audit.Kind]int{}
	for _, e := range events {
		kinds[e.Kind]++
		if e.Seq == 0 {
			p.add("message %s: %s event is not chained", id, e.Kind)
		}
	}
	if kinds[audit.KindAccepted] != 1 || kinds[audit.KindNotified] != 1 || len(events) != 2 {
		p.add("message %s has events %v; want one accepted and one notified", id, kinds)
	}

	if m.Status != store.StatusNotified {
		p.add("message %s is %s, want notified", id, m.Status)
	}
	if len(texts) == 0 {
		p.add("message %s is stored but its SMS never reached the SMS gateway", id)
		return markers[0], true
	}
	known := false
	for _, sms := range texts {
		known = known || sms.ProviderID == m.ProviderMessageID
		_, link, ok := strings.Cut(sms.Body, crashViewerURL+"/m/")
		if tok := strings.Fields(link); !ok || len(tok) == 0 || token.Hash(tok[0]) != m.LinkTokenHash {
			p.add("message %s: its SMS does not carry its link", id)
		}
	}
	if !known {
		p.add("message %s records provider id %q, which the SMS gateway never returned for it", id, m.ProviderMessageID)
	}
	return markers[0], true
}

// crashCheckMatches checks that message id is what crashSubmission s asked for.
func crashCheckMatches(ctx context.Context, p *crashProblems, st *store.Store, s *crashSubmission, id string, texts []crashSMS) {
	p.t.Helper()
	m, err := st.Message(ctx, id)
	if err != nil {
		return // reported by crashCheckMessage
	}
	wantSender, wantChannel := crashAPISender, store.ChannelAPI
	if s.channel == "smtp" {
		wantSender, wantChannel = crashSMTPSender, store.ChannelSMTP
	}
	if m.Sender != wantSender || m.Channel != wantChannel {
		p.add("message %s is from %s over %s, want %s over %s", id, m.Sender, m.Channel, wantSender, wantChannel)
	}
	for _, sms := range texts {
		if sms.To != s.to {
			p.add("message %s was texted to another number than submission %d's", id, s.n)
		}
	}
}

// verifyCrashAudit checks the whole audit chain as the store's tests do (contiguous, linked,
// re-hashing, one tenant, ending at the head), that it holds an accepted and a notified event
// per message, and that an export with the gateway's checkpoints and one signed now verifies
// under the keystore's public key.
func verifyCrashAudit(ctx context.Context, t *testing.T, p *crashProblems, st *store.Store, env *crashEnv, messages int) (events, gatewayCheckpoints int) {
	t.Helper()
	var chain []audit.Event
	for {
		var after uint64
		if len(chain) > 0 {
			after = chain[len(chain)-1].Seq
		}
		page, err := st.AuditEvents(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		chain = append(chain, page...)
	}
	var prev [32]byte
	kinds := map[audit.Kind]int{}
	for i, e := range chain {
		switch {
		case e.Seq != uint64(i+1):
			t.Fatalf("audit event %d has seq %d: the chain is not contiguous", i+1, e.Seq)
		case e.PrevHash != prev:
			t.Fatalf("audit event %d does not link to event %d: the chain forked", e.Seq, e.Seq-1)
		case e.LeafHash() != e.Hash:
			t.Fatalf("audit event %d does not re-hash to its stored hash", e.Seq)
		case e.Tenant != crashTenant:
			t.Fatalf("audit event %d has tenant %q", e.Seq, e.Tenant)
		}
		prev = e.Hash
		kinds[e.Kind]++
	}
	seq, head, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seq != uint64(len(chain)) || head != prev {
		t.Fatalf("audit head = %d %x, want %d %x", seq, head[:4], len(chain), prev[:4])
	}
	if kinds[audit.KindAccepted] != messages || kinds[audit.KindNotified] != messages {
		p.add("the audit chain has %d accepted and %d notified events for %d messages (all kinds: %v)",
			kinds[audit.KindAccepted], kinds[audit.KindNotified], messages, kinds)
	}

	before, err := st.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := audit.SignCheckpoint(ctx, env.local, crashTenant, seq, head, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCheckpoint(ctx, cp); err != nil {
		t.Fatal(err)
	}
	cps, err := st.Checkpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := env.local.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := audit.Export(&buf, pub, chain, cps); err != nil {
		t.Fatalf("export the audit chain: %v", err)
	}
	rep, err := audit.VerifyWithKey(&buf, pub)
	if err != nil {
		t.Fatalf("the audit export does not verify: %v", err)
	}
	if rep.Events != len(chain) || rep.Head != head || rep.Checkpoints != len(cps) {
		t.Fatalf("verified %d events and %d checkpoints up to %x, want %d and %d up to %x",
			rep.Events, rep.Checkpoints, rep.Head[:4], len(chain), len(cps), head[:4])
	}
	return len(chain), len(before)
}
