package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/sealed"
	"github.com/securetext/securetext/workloads/store"
)

// ManifestSigner signs discovery manifest statements with the tenant's audit key: the keystore
// (keystore.Client over mutual TLS; keystore.InProcess in securetext dev).
type ManifestSigner interface {
	SignManifest(ctx context.Context, statement []byte) (sig []byte, keyID string, err error)
	Health(ctx context.Context) error
}

const (
	// exportPage is how many messages one listing query reads.
	exportPage = 1000
	// exportUnwrapGroup is how many data keys are unwrapped at once: the keystore client
	// coalesces concurrent calls into one request (64 keys by default).
	exportUnwrapGroup = 64
	// exportWriteTimeout bounds the write of each line; the server's WriteTimeout, which
	// counts from the request, would cut a large export off.
	exportWriteTimeout = time.Minute
	// exportPrepareTimeout bounds the work before the first line: listing the held messages
	// and unwrapping their keys.
	exportPrepareTimeout = 10 * time.Minute
	// maxHoldName is the longest Kubernetes object name (a DNS subdomain).
	maxHoldName = 253
)

// validHoldName accepts what a LegalHold can be named (a DNS subdomain, RFC 1123: lowercase
// letters, digits, '-' and '.', starting and ending with a letter or digit). Anything else
// names no hold, and is neither looked up nor logged.
func validHoldName(name string) bool {
	if name == "" || len(name) > maxHoldName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' && c != '.' || i == 0 || i == len(name)-1) {
			return false
		}
	}
	return true
}

// activeHold returns the active legal hold named name.
func (a *API) activeHold(name string) (retention.Hold, bool) {
	if a.cfg.Holds == nil || !validHoldName(name) {
		return retention.Hold{}, false
	}
	for _, h := range a.cfg.Holds().Holds {
		if h.Name == name {
			return h, true
		}
	}
	return retention.Hold{}, false
}

// exportHold serves GET /v1/holds/{name}/export to a compliance account: the messages that the
// active legal hold name keeps, decrypted, with their audit events, as NDJSON (package
// discovery): one line per message in id order, then one line with the manifest of their
// SHA-256 checksums and its signature by the tenant's audit key. A message purged before the
// hold was placed has its line, with its status and events and no content.
//
// Everything that needs a dependency and can fail is done before the first byte: the held
// messages are listed and read, the keystore is asked whether it serves, and every data key is
// unwrapped; so an outage of the keystore or the database answers 503 with Retry-After. What
// fails later (a dependency going down during the stream, the signature, the audit event)
// aborts the response before its last line: the caller sees a broken transfer, never a partial
// export that looks whole, and a file cut short fails verification (the manifest holds the
// count and SHA-256 of messages.ndjson).
//
// The export unwraps with the gateway's own keystore identity, whose Unwrap the notifier and
// the replies of GET /v1/messages/{id}/events already need; it asks the keystore for nothing
// broader than that and the signature of a discovery statement (POST /v1/manifest), which
// the keystore gives the gateway alone. The export itself is audited (discovery-exported):
// the compliance account, the hold, the count and the manifest's SHA-256, never content.
func (a *API) exportHold(w http.ResponseWriter, r *http.Request, account string) {
	ctx := r.Context()
	if r.Method != http.MethodGet {
		// A HEAD would export and audit a body nobody receives.
		methodNotAllowed(http.MethodGet).ServeHTTP(w, r)
		return
	}
	rc := http.NewResponseController(w)
	// The server's timeouts suit short requests: preparing a large hold takes longer, and its
	// read deadline would cancel the request's context meanwhile. The request has no body; a
	// caller that goes away still ends the context.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(exportPrepareTimeout))
	hold, ok := a.activeHold(r.PathValue("name"))
	if !ok {
		detail := "there is no active legal hold of this name: a hold is a LegalHold in the tenant's namespace (kubectl get legalholds), and a released hold can no longer be exported"
		if a.cfg.Holds == nil {
			detail = "this gateway has no retention settings, so no legal holds (the operator mounts them as -retention-file)"
		}
		a.answer(w, newProblem(http.StatusNotFound, reasonNotFound, detail))
		return
	}
	if a.cfg.Manifests == nil || a.cfg.Keys == nil {
		a.log.ErrorContext(ctx, "api discovery export is not configured: the API has no keystore", "hold", hold.Name)
		a.answer(w, internalProblem())
		return
	}
	// Names that no statement can carry fail now, not after the stream.
	if _, err := (discovery.Statement{Tenant: a.intake.Tenant, Hold: hold.Name, HoldUID: hold.UID, ExportedBy: account}).Body(); err != nil {
		a.answer(w, a.exportProblem(ctx, "name the export", hold.Name, err))
		return
	}
	rows, err := a.heldMessages(ctx, hold)
	if err != nil {
		a.answer(w, a.exportProblem(ctx, "list held messages", hold.Name, err))
		return
	}
	if err := a.cfg.Manifests.Health(ctx); err != nil {
		a.answer(w, a.exportProblem(ctx, "reach the keystore", hold.Name, err))
		return
	}
	keys, err := a.unwrapHeld(ctx, rows)
	if err != nil {
		a.answer(w, a.exportProblem(ctx, "unwrap data keys", hold.Name, err))
		return
	}
	defer func() {
		for _, k := range keys {
			envelope.Zero(k)
		}
	}()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	// Each line goes out whole before the next is read: the caller sees progress, the gateway
	// holds one message at a time, and an abort leaves only whole lines and no trailer.
	send := func(line []byte) {
		_ = rc.SetWriteDeadline(time.Now().Add(exportWriteTimeout)) // not every writer has one
		_, err := w.Write(line)
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			a.abortExport(ctx, hold.Name, "send", err)
		}
	}
	b := discovery.NewBuilder()
	for _, row := range rows {
		line, err := a.exportLine(ctx, row.ID, row.recipient, keys[row.ID])
		if err != nil {
			a.abortExport(ctx, hold.Name, "read message "+row.ID, err)
		}
		b.Add(row.ID, line)
		send(line)
		envelope.Zero(line)
	}

	now := time.Now
	if a.intake.Now != nil {
		now = a.intake.Now
	}
	manifest := b.Manifest(a.intake.Tenant, hold.Name, hold.UID, account, now())
	trailer, sum, keyID, err := a.signManifest(ctx, manifest)
	if err != nil {
		a.abortExport(ctx, hold.Name, "sign the manifest", err)
	}
	// Audited before the manifest goes out: an export nobody recorded never completes.
	detail := map[string]string{
		"hold": hold.Name, "messages": strconv.Itoa(manifest.Messages),
		"manifest_sha256": hex.EncodeToString(sum[:]), "key_id": keyID, "channel": string(store.ChannelAPI),
	}
	if hold.UID != "" {
		detail["uid"] = hold.UID
	}
	if err := a.intake.Store.AppendAudit(ctx, audit.Event{Kind: audit.KindDiscoveryExported, Actor: account, Detail: detail}); err != nil {
		a.abortExport(ctx, hold.Name, "audit the export", err)
	}
	send(trailer)
	a.log.InfoContext(ctx, "api discovery exported", "account", account, "hold", hold.Name,
		"messages", manifest.Messages, "manifest_sha256", detail["manifest_sha256"], "key_id", keyID)
}

// heldRow is a held message's row, with the recipient the listing read.
type heldRow struct {
	store.Message
	recipient string
}

// heldMessages lists the messages that hold matches, purged ones included, in id order, and
// reads their rows (for their wrapped keys).
func (a *API) heldMessages(ctx context.Context, hold retention.Hold) ([]heldRow, error) {
	var rows []heldRow
	after := ""
	for {
		page, err := a.intake.Store.ListMessages(ctx, after, exportPage)
		if err != nil {
			return nil, err
		}
		for _, m := range page {
			if !hold.Matcher.Matches(m) {
				continue
			}
			row, err := a.intake.Store.Message(ctx, m.ID)
			if err != nil {
				return nil, err
			}
			rows = append(rows, heldRow{Message: row, recipient: m.Recipient})
		}
		if len(page) < exportPage {
			return rows, nil
		}
		after = page[len(page)-1].ID
	}
}

// unwrapHeld unwraps the data key of every held message that has one, a group at a time; the
// caller zeroes them. On an error none is kept.
func (a *API) unwrapHeld(ctx context.Context, rows []heldRow) (map[string][]byte, error) {
	keys := make(map[string][]byte, len(rows))
	fail := func(err error) (map[string][]byte, error) {
		for _, k := range keys {
			envelope.Zero(k)
		}
		return nil, err
	}
	for start := 0; start < len(rows); start += exportUnwrapGroup {
		group := rows[start:min(len(rows), start+exportUnwrapGroup)]
		got := make([][]byte, len(group))
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, row := range group {
			if row.WrappedKey != "" {
				wg.Go(func() { got[i], errs[i] = a.cfg.Keys.Unwrap(ctx, row.WrappedKey) })
			}
		}
		wg.Wait()
		for i, row := range group {
			if got[i] != nil {
				keys[row.ID] = got[i]
			}
		}
		for i, err := range errs {
			if err != nil {
				return fail(fmt.Errorf("unwrap the data key of message %s: %w", group[i].ID, err))
			}
		}
	}
	return keys, nil
}

// exportLine returns message id's line of messages.ndjson, newline included: its row as it is
// now, its content and replies opened with key (none once it is purged), and its audit events.
func (a *API) exportLine(ctx context.Context, id, recipient string, key []byte) ([]byte, error) {
	st := a.intake.Store
	m, err := st.Message(ctx, id)
	if err != nil {
		return nil, err
	}
	events, err := st.MessageEvents(ctx, id)
	if err != nil {
		return nil, err
	}
	rec := discovery.Message{
		ID: m.ID, Recipient: recipient, Sender: m.Sender, Channel: string(m.Channel), Status: string(m.Status),
		CreatedAt: exportTime(m.CreatedAt), ExpiresAt: exportTime(m.ExpiresAt), StatusChangedAt: exportTime(m.StatusChangedAt),
		Events: make([]discovery.Event, 0, len(events)),
	}
	var replies map[string]string
	if m.WrappedKey != "" && key != nil {
		parts, err := st.MessageParts(ctx, id)
		if err != nil {
			return nil, err
		}
		sm := sealed.Message{Tenant: a.intake.Tenant, ID: id, Key: key}
		if len(parts) > 0 {
			msg, err := sm.OpenParts(parts)
			if err != nil {
				return nil, err
			}
			rec.Content = &discovery.Content{Subject: msg.Subject, Body: msg.Text, Attachments: make([]discovery.Attachment, 0, len(msg.Attachments))}
			for _, att := range msg.Attachments {
				rec.Content.Attachments = append(rec.Content.Attachments,
					discovery.Attachment{Filename: att.Name, ContentType: att.ContentType, ContentBase64: att.Data})
			}
			defer func() {
				for _, att := range msg.Attachments {
					envelope.Zero(att.Data)
				}
			}()
		}
		rps, err := st.Replies(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(rps) > 0 {
			texts, err := sm.OpenReplies(rps)
			if err != nil {
				return nil, err
			}
			replies = make(map[string]string, len(rps))
			for i, rp := range rps {
				replies[rp.ID] = texts[i]
			}
		}
	}
	for _, e := range events {
		ev := discovery.Event{Seq: e.Seq, Time: exportTime(e.Time), Kind: string(e.Kind), Actor: e.Actor, Detail: e.Detail}
		if ev.Detail == nil {
			ev.Detail = map[string]string{}
		}
		if e.Seq > 0 {
			ev.Hash = hex.EncodeToString(e.Hash[:])
		}
		if e.Kind == audit.KindReplied {
			ev.Reply = replies[e.Detail["reply"]]
		}
		rec.Events = append(rec.Events, ev)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil { // cannot happen: strings, numbers and bytes
		return nil, fmt.Errorf("encode message %s: %w", id, err)
	}
	return buf.Bytes(), nil
}

func exportTime(t time.Time) string { return t.UTC().Format(discovery.TimeLayout) }

// signManifest has the keystore sign manifest's statement and returns the export's last line
// (the manifest and its signature, with a newline), the SHA-256 of manifest.json and the key id.
func (a *API) signManifest(ctx context.Context, manifest discovery.Manifest) (line []byte, sum [32]byte, keyID string, err error) {
	st, err := manifest.Statement()
	if err != nil {
		return nil, sum, "", err
	}
	body, err := st.Body()
	if err != nil {
		return nil, sum, "", err
	}
	sig, keyID, err := a.cfg.Manifests.SignManifest(ctx, body)
	if err != nil {
		return nil, sum, "", err
	}
	file, err := manifest.Encode()
	if err != nil {
		return nil, sum, "", err
	}
	line, err = json.Marshal(discovery.Trailer{
		Manifest:  bytes.TrimSuffix(file, []byte("\n")),
		Signature: discovery.Signature{Algorithm: discovery.Algorithm, KeyID: keyID, Signature: sig},
	})
	if err != nil {
		return nil, sum, "", err
	}
	return append(line, '\n'), sha256.Sum256(file), keyID, nil
}

// exportProblem is the answer to a failure before the export's first byte.
func (a *API) exportProblem(ctx context.Context, step, hold string, err error) *problem {
	if store.IsTemporary(err) || keystore.IsTemporary(err) || errors.Is(err, context.DeadlineExceeded) {
		a.log.WarnContext(ctx, "api discovery export deferred", "hold", hold, "step", step, "reason", ReasonUnavailable, "err", err)
		return a.unavailable()
	}
	a.log.ErrorContext(ctx, "api discovery export failed", "hold", hold, "step", step, "reason", ReasonInternal, "err", err)
	return internalProblem()
}

// abortExport ends an export already under way without its last line: net/http then breaks
// the connection (a chunked body without its last chunk, or a reset HTTP/2 stream), so the
// caller cannot take what it got for a whole export.
func (a *API) abortExport(ctx context.Context, hold, step string, err error) {
	a.log.ErrorContext(ctx, "api discovery export aborted", "hold", hold, "step", step, "err", err)
	panic(http.ErrAbortHandler)
}
