package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/envelope"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/store/storetest"
)

// The document describes the export's lines as the items of an array; this decoder reads the
// NDJSON that way, so that specTransport checks every line against its schema.
func init() {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson",
		func(body io.Reader, h http.Header, schema *openapi3.SchemaRef, enc openapi3filter.EncodingFn) (any, error) {
			var lines []any
			sc := bufio.NewScanner(body)
			sc.Buffer(nil, 64<<20)
			for sc.Scan() {
				v, err := openapi3filter.JSONBodyDecoder(bytes.NewReader(sc.Bytes()), h, schema, enc)
				if err != nil {
					return nil, err
				}
				lines = append(lines, v)
			}
			return lines, sc.Err()
		})
}

// The hold of the discovery tests: the recipients 202-555-0180 and 0181.
var testHold = retention.Hold{
	Name: "matter-117", UID: "5d0c7a51-hold", Reason: "matter 2026-117",
	Matcher: retention.Matcher{Recipients: []string{"+12025550180", "+12025550181"}},
}

// discoveryEnv is an apiEnv whose senders file also lists the compliance account "legal-1",
// whose API exports holds, and whose responses are not checked for content: the export is
// supposed to hold it. Its logs still are.
type discoveryEnv struct {
	*apiEnv
	ComplianceKey string
	Holds         []retention.Hold
}

func newDiscoveryEnv(t *testing.T, b backend, compliance bool) *discoveryEnv {
	t.Helper()
	f := newFixture(t, b)
	file := SendersFile{Senders: []Sender{f.Sender}}
	e := &discoveryEnv{Holds: []retention.Hold{testHold}}
	if compliance {
		acc, key, err := NewComplianceCredentials("legal-1")
		if err != nil {
			t.Fatal(err)
		}
		file.Compliance, e.ComplianceKey = []ComplianceAccount{acc}, key
	}
	senders, err := NewSendersFile(file)
	if err != nil {
		t.Fatal(err)
	}
	e.apiEnv = &apiEnv{fixture: f, Registry: prometheus.NewRegistry(), logs: &lockedBuffer{}, bodies: &lockedBuffer{}}
	e.API = NewAPI(APIConfig{
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: NewMetrics(e.Registry), Keys: f.Keys, Manifests: f.Keys,
		Holds: func() retention.Settings { return retention.Settings{Holds: e.Holds} },
	}, f.Intake, senders)
	srv := httptest.NewServer(e.API)
	t.Cleanup(srv.Close)
	e.URL = srv.URL
	e.client = &http.Client{Transport: newSpecTransport(t, srv.Client().Transport, nil), Timeout: time.Minute}
	t.Cleanup(func() {
		if m := leakPattern.FindString(e.logs.String()); m != "" {
			t.Errorf("a log line holds a phone number or message content: %q\n%s", m, e.logs.String())
		}
	})
	return e
}

// export is what a GET of the export answered, split as the CLI splits it.
type export struct {
	lines    [][]byte // the lines of messages.ndjson, newlines included
	messages []discovery.Message
	trailer  discovery.Trailer
}

func (e *discoveryEnv) export(t *testing.T, hold string) export {
	t.Helper()
	resp, body := e.do(t, http.MethodGet, "/v1/holds/"+hold+"/export", nil, asKey(e.ComplianceKey))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("export: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var x export
	for line := range bytes.Lines(body) {
		if bytes.HasPrefix(line, []byte(`{"manifest":`)) {
			if err := json.Unmarshal(line, &x.trailer); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if x.trailer.Manifest != nil {
			t.Fatal("a line follows the trailer")
		}
		var m discovery.Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		x.lines, x.messages = append(x.lines, line), append(x.messages, m)
	}
	if x.trailer.Manifest == nil {
		t.Fatal("the export has no trailer")
	}
	return x
}

// save writes x as `securetext discovery export` does and returns the directory.
func (x export) save(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sig, err := x.trailer.Signature.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		discovery.MessagesFile:  bytes.Join(x.lines, nil),
		discovery.ManifestFile:  append(slices.Clone(x.trailer.Manifest), '\n'),
		discovery.SignatureFile: sig,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// addReply stores a patient's reply to message id, sealed as the viewer seals it.
func (e *discoveryEnv) addReply(t *testing.T, id, text string) {
	t.Helper()
	ctx := context.Background()
	m, err := e.Store.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := e.Local.Unwrap(ctx, m.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	defer envelope.Zero(key)
	replyID := store.NewID()
	sealed, err := envelope.Seal(key, envelope.AssociatedData{Tenant: testTenant, MessageID: id, Part: "reply/" + replyID}, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	err = e.Store.AddReply(ctx, store.Reply{ID: replyID, MessageID: id, Ciphertext: sealed}, 5,
		audit.Event{Kind: audit.KindReplied, Actor: "patient", Detail: map[string]string{"reply": replyID}})
	if err != nil {
		t.Fatal(err)
	}
}

func exportEvents(events []audit.Event) []audit.Event {
	var out []audit.Event
	for _, e := range events {
		if e.Kind == audit.KindDiscoveryExported {
			out = append(out, e)
		}
	}
	return out
}

// TestDiscoveryExport: a hold's export holds exactly the held messages, the live one decrypted
// with its attachment, reply and events, the one purged before the hold with its status and
// events only; it verifies offline under the tenant's audit key, fails when anything is
// altered, and is audited without content.
func TestDiscoveryExport(t *testing.T) {
	for _, b := range []backend{postgresBackend, sqliteBackend} {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			e := newDiscoveryEnv(t, b, true)
			live := message("(202) 555-0180")
			live["attachments"] = []map[string]any{{"filename": "PHI-a1c.pdf", "content_type": "application/pdf", "content_base64": b64("%PDF-1.7 PHI-file")}}
			held := e.send(t, live)
			purged := e.send(t, message("(202) 555-0181"))
			other := e.send(t, message("(202) 555-0182"))
			e.addReply(t, held.ID, "PHI-reply Tuesday works for me.")
			if err := e.Store.Purge(ctx, purged.ID, audit.Event{Kind: audit.KindPurged, Actor: "retention"}); err != nil {
				t.Fatal(err)
			}
			storetest.ChainedEvents(t, e.Store)

			x := e.export(t, testHold.Name)
			ids := []string{held.ID, purged.ID}
			slices.Sort(ids)
			var got []string
			byID := map[string]discovery.Message{}
			for _, m := range x.messages {
				got, byID[m.ID] = append(got, m.ID), m
			}
			if !slices.Equal(got, ids) {
				t.Fatalf("exported %v, want the held messages %v in id order (not %s)", got, ids, other.ID)
			}

			m := byID[held.ID]
			c := m.Content
			if m.Recipient != "+12025550180" || m.Sender != "ehr" || m.Status != "accepted" || c == nil ||
				c.Subject != "PHI-subject Lab results" || c.Body != "PHI-body Your A1C is 5.4." || len(c.Attachments) != 1 ||
				c.Attachments[0].Filename != "PHI-a1c.pdf" || string(c.Attachments[0].ContentBase64) != "%PDF-1.7 PHI-file" {
				t.Errorf("held message exported as %+v, content %+v", m, c)
			}
			kinds := map[string]discovery.Event{}
			for _, ev := range m.Events {
				kinds[ev.Kind] = ev
			}
			if ev := kinds["accepted"]; ev.Seq == 0 || len(ev.Hash) != 64 {
				t.Errorf("accepted event %+v, want it chained with its hash", ev)
			}
			if ev := kinds["replied"]; ev.Reply != "PHI-reply Tuesday works for me." || ev.Actor != "patient" {
				t.Errorf("replied event %+v, want the patient's text", ev)
			}
			p := byID[purged.ID]
			if p.Status != "purged" || p.Content != nil || p.Recipient != "+12025550181" || !slices.ContainsFunc(p.Events, func(ev discovery.Event) bool { return ev.Kind == "purged" }) {
				t.Errorf("purged message exported as %+v, want status purged, its events, no content", p)
			}

			// The export verifies offline under the tenant's audit key, and its manifest is the
			// one the audit trail names.
			dir := x.save(t)
			pub, err := e.Local.PublicKey(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := discovery.VerifyDir(dir, pub)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if rep.Statement.Hold != testHold.Name || rep.Statement.HoldUID != testHold.UID || rep.Statement.ExportedBy != "legal-1" ||
				rep.Statement.Tenant != testTenant || rep.Statement.Messages != 2 || rep.KeyID != audit.KeyID(pub) || !rep.Signed {
				t.Errorf("verified %+v", rep)
			}
			exported := exportEvents(storetest.ChainedEvents(t, e.Store))
			if len(exported) != 1 {
				t.Fatalf("%d discovery-exported events, want 1", len(exported))
			}
			ev := exported[0]
			manifestFile, _ := os.ReadFile(filepath.Join(dir, discovery.ManifestFile))
			sum := sha256.Sum256(manifestFile)
			if ev.Actor != "legal-1" || ev.MessageID != "" || ev.Detail["hold"] != testHold.Name || ev.Detail["uid"] != testHold.UID ||
				ev.Detail["messages"] != "2" || ev.Detail["manifest_sha256"] != hex.EncodeToString(sum[:]) || ev.Detail["key_id"] != audit.KeyID(pub) {
				t.Errorf("export audited as %+v; manifest.json's SHA-256 is %x", ev, sum)
			}
			if detail, _ := json.Marshal(ev); leakPattern.Match(detail) {
				t.Errorf("the audit event holds content or a phone number: %s", detail)
			}

			// Anything altered fails, saying what.
			alter := func(name string, change func([]byte) []byte) string {
				t.Helper()
				d := x.save(t)
				path := filepath.Join(d, name)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, change(b), 0o600); err != nil {
					t.Fatal(err)
				}
				return d
			}
			for _, c := range []struct {
				name string
				dir  string
				want error
			}{
				{"a line", alter(discovery.MessagesFile, func(b []byte) []byte { return bytes.Replace(b, []byte("A1C is 5.4"), []byte("A1C is 9.4"), 1) }), discovery.ErrAltered},
				{"a line dropped", alter(discovery.MessagesFile, func(b []byte) []byte { return x.lines[0] }), discovery.ErrAltered},
				{"the manifest", alter(discovery.ManifestFile, func(b []byte) []byte { return bytes.Replace(b, []byte("legal-1"), []byte("legal-2"), 1) }), discovery.ErrBadSignature},
				{"the signature", alter(discovery.SignatureFile, func(b []byte) []byte {
					var s discovery.Signature
					_ = json.Unmarshal(b, &s)
					s.Signature[0] ^= 1
					out, _ := s.Encode()
					return out
				}), discovery.ErrBadSignature},
			} {
				if _, err := discovery.VerifyDir(c.dir, pub); !errors.Is(err, c.want) {
					t.Errorf("%s altered: verify says %v, want %v", c.name, err, c.want)
				}
			}
			otherKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
			if _, err := discovery.VerifyDir(dir, otherKey); !errors.Is(err, discovery.ErrBadSignature) {
				t.Errorf("verify under another key: %v", err)
			}
		})
	}
}

// TestDiscoveryScopes: only a compliance key exports, and a compliance key does nothing else;
// nothing is open until a compliance account is configured.
func TestDiscoveryScopes(t *testing.T) {
	e := newDiscoveryEnv(t, sqliteBackend, true)
	acc := e.send(t, message("(202) 555-0180"))
	path := "/v1/holds/" + testHold.Name + "/export"

	resp, body := e.do(t, http.MethodGet, path, nil) // the sender's key
	p := wantProblem(t, resp, body, http.StatusForbidden, reasonForbidden)
	if !strings.Contains(p.Detail, "compliance key") || leakPattern.Match(body) {
		t.Errorf("sender key on the export: %s", body)
	}
	for _, r := range []struct {
		method, path string
		body         []byte
	}{
		{http.MethodPost, "/v1/messages", jsonBody(t, message("(202) 555-0183"))},
		{http.MethodGet, "/v1/messages/" + acc.ID, nil},
		{http.MethodGet, "/v1/messages/" + acc.ID + "/events", nil},
		{http.MethodDelete, "/v1/messages/" + acc.ID, nil},
	} {
		resp, body := e.do(t, r.method, r.path, r.body, asKey(e.ComplianceKey))
		p := wantProblem(t, resp, body, http.StatusForbidden, reasonForbidden)
		if !strings.Contains(p.Detail, "cannot send or read messages") {
			t.Errorf("compliance key on %s %s: %s", r.method, r.path, body)
		}
	}
	if n := e.messageCount(); n != 1 {
		t.Errorf("%d messages stored, want only the sender's", n)
	}
	if m, err := e.Store.Message(context.Background(), acc.ID); err != nil || m.Status != store.StatusAccepted {
		t.Errorf("message after a compliance key's DELETE: %+v, %v", m, err)
	}
	if n := e.counter(t, "securetext_gateway_refusals_total", "channel", "api", "reason", reasonForbidden); n != 5 {
		t.Errorf("forbidden refusals counted %v, want 5", n)
	}

	// A compliance key that is not configured, and holds that do not exist.
	resp, body = e.do(t, http.MethodGet, path, nil, asKey(ComplianceKeyPrefix+"guess"))
	wantProblem(t, resp, body, http.StatusUnauthorized, ReasonUnauthenticated)
	resp, body = e.do(t, http.MethodGet, "/v1/holds/matter-118/export", nil, asKey(e.ComplianceKey))
	wantProblem(t, resp, body, http.StatusNotFound, reasonNotFound)
	resp, body = e.do(t, http.MethodGet, "/v1/holds/Matter_117/export", nil, asKey(e.ComplianceKey), expect(specInvalid))
	wantProblem(t, resp, body, http.StatusNotFound, reasonNotFound)
	e.Holds = nil // the hold was released
	resp, body = e.do(t, http.MethodGet, path, nil, asKey(e.ComplianceKey))
	wantProblem(t, resp, body, http.StatusNotFound, reasonNotFound)
	e.Holds = []retention.Hold{testHold}
	for _, method := range []string{http.MethodPost, http.MethodHead} {
		resp, body = e.do(t, method, path, nil, asKey(e.ComplianceKey), expect(specUnlisted))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
			t.Errorf("%s of the export: %d %s, Allow %q; want 405 allowing GET", method, resp.StatusCode, body, resp.Header.Get("Allow"))
		}
	}
	if len(exportEvents(storetest.ChainedEvents(t, e.Store))) != 0 {
		t.Error("a refused export was audited")
	}

	// Without compliance accounts the export is closed, and says how it opens.
	closed := newDiscoveryEnv(t, sqliteBackend, false)
	resp, body = closed.do(t, http.MethodGet, path, nil)
	p = wantProblem(t, resp, body, http.StatusForbidden, reasonForbidden)
	if !strings.Contains(p.Detail, "no compliance accounts") {
		t.Errorf("export without compliance accounts: %s", body)
	}
}

// failingSigner is the keystore with a signature that fails, as when the keystore goes down
// after the export started.
type failingSigner struct{ *keystore.Client }

func (failingSigner) SignManifest(context.Context, []byte) ([]byte, string, error) {
	return nil, "", keystore.ErrUnavailable
}

// TestDiscoveryExportKeystoreDown: a keystore outage answers 503 with Retry-After before any
// line; a failure after the first line breaks the response before its trailer, so that no
// partial export looks whole. Neither is audited.
func TestDiscoveryExportKeystoreDown(t *testing.T) {
	e := newDiscoveryEnv(t, sqliteBackend, true)
	e.send(t, message("(202) 555-0180"))
	path := "/v1/holds/" + testHold.Name + "/export"

	e.KeystoreDown()
	resp, body := e.do(t, http.MethodGet, path, nil, asKey(e.ComplianceKey))
	wantProblem(t, resp, body, http.StatusServiceUnavailable, ReasonUnavailable)
	if resp.Header.Get("Retry-After") == "" || leakPattern.Match(body) {
		t.Errorf("keystore down: Retry-After %q, body %s", resp.Header.Get("Retry-After"), body)
	}
	e.KeystoreUp()

	e.API.cfg.Manifests = failingSigner{e.Keys}
	req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.ComplianceKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || resp.StatusCode != http.StatusOK || bytes.Contains(got, []byte(`"manifest"`)) || !bytes.Contains(got, []byte("PHI-body")) {
		t.Errorf("signature failed mid-export: %d, read error %v, %d bytes; want the lines and then a broken transfer", resp.StatusCode, err, len(got))
	}
	if len(exportEvents(storetest.ChainedEvents(t, e.Store))) != 0 {
		t.Error("a failed export was audited")
	}
	if !strings.Contains(e.logs.String(), "api discovery export aborted") {
		t.Errorf("the aborted export is not logged:\n%s", e.logs.String())
	}
}
