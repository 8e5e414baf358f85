package discovery

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))

func testStatement() Statement {
	return Statement{
		Tenant: "clinic-a", Hold: "matter-117", HoldUID: "5d0c7a51", ExportedBy: "legal-1",
		ExportedAt: time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC), Messages: 2, Bytes: 180,
		SHA256: [32]byte{0xab, 0xcd},
	}
}

// The signed text, written out: its layout is part of every signature made, and verifiers
// rebuild it byte for byte.
func TestStatementBody(t *testing.T) {
	body, err := testStatement().Body()
	if err != nil {
		t.Fatal(err)
	}
	want := "securetext discovery manifest v1\n" +
		"securetext.io/discovery/clinic-a\n" +
		"hold matter-117\n" +
		"hold-uid 5d0c7a51\n" +
		"exported-by legal-1\n" +
		"exported-at 2026-03-01T09:30:00.123456000Z\n" +
		"messages 2\n" +
		"messages.ndjson 180 sha256:abcd000000000000000000000000000000000000000000000000000000000000\n"
	if string(body) != want {
		t.Fatalf("body:\n%s\nwant:\n%s", body, want)
	}
	got, err := ParseStatement(body)
	if err != nil || !reflect.DeepEqual(got, testStatement()) {
		t.Fatalf("ParseStatement = %+v, %v; want %+v", got, err, testStatement())
	}
	noUID := testStatement()
	noUID.HoldUID = ""
	body, _ = noUID.Body()
	if got, err := ParseStatement(body); err != nil || got.HoldUID != "" || !strings.Contains(string(body), "\nhold-uid -\n") {
		t.Errorf("a hold without uid: %q, %+v, %v", body, got, err)
	}
}

// Only a statement in canonical form parses; a value cannot add or end a line.
func TestParseStatementRefuses(t *testing.T) {
	good, _ := testStatement().Body()
	replace := func(old, new string) []byte { return bytes.Replace(good, []byte(old), []byte(new), 1) }
	for name, body := range map[string][]byte{
		"a checkpoint body":      audit.CheckpointBody("clinic-a", 2, [32]byte{}, time.Now()),
		"another header":         replace("manifest v1", "manifest v2"),
		"another origin":         replace("securetext.io/discovery/", "securetext.io/audit/"),
		"no final newline":       bytes.TrimSuffix(good, []byte("\n")),
		"a line more":            append(append([]byte(nil), good...), "messages 3\n"...),
		"lines swapped":          replace("hold matter-117\nhold-uid 5d0c7a51\n", "hold-uid 5d0c7a51\nhold matter-117\n"),
		"a leading zero":         replace("messages 2\n", "messages 02\n"),
		"a plus sign":            replace("messages 2\n", "messages +2\n"),
		"a negative count":       replace("messages 2\n", "messages -2\n"),
		"upper-case hex":         replace("sha256:abcd", "sha256:ABCD"),
		"a short hash":           replace("sha256:abcd00", "sha256:abcd"),
		"a space in the hold":    replace("hold matter-117", "hold matter 117"),
		"a local time":           replace("09:30:00.123456000Z", "09:30:00.123456000+01:00"),
		"fewer digits of a time": replace(".123456000Z", ".123456Z"),
		"empty":                  nil,
	} {
		if _, err := ParseStatement(body); !errors.Is(err, ErrNotStatement) {
			t.Errorf("%s: %v, want ErrNotStatement", name, err)
		}
	}
	for name, change := range map[string]func(*Statement){
		"a newline in the hold":   func(s *Statement) { s.Hold = "matter\nmessages 9" },
		"an empty tenant":         func(s *Statement) { s.Tenant = "" },
		"a uid of -":              func(s *Statement) { s.HoldUID = "-" },
		"a non-ASCII account":     func(s *Statement) { s.ExportedBy = "légal" },
		"a negative byte count":   func(s *Statement) { s.Bytes = -1 },
		"a space in the exporter": func(s *Statement) { s.ExportedBy = "legal 1" },
	} {
		st := testStatement()
		change(&st)
		if _, err := st.Body(); err == nil {
			t.Errorf("%s: Body accepted it", name)
		}
	}
}

// buildExport makes an export of lines signed with testKey, as the gateway does.
func buildExport(t *testing.T, lines ...string) (messages, manifest, signature []byte) {
	t.Helper()
	b := NewBuilder()
	for _, l := range lines {
		var m Message
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		b.Add(m.ID, []byte(l))
		messages = append(messages, l...)
	}
	m := b.Manifest("clinic-a", "matter-117", "", "legal-1", time.Unix(1700000000, 0))
	st, err := m.Statement()
	if err != nil {
		t.Fatal(err)
	}
	body, err := st.Body()
	if err != nil {
		t.Fatal(err)
	}
	sig, _, _ := audit.NewEd25519Signer(testKey).Sign(context.Background(), body)
	if manifest, err = m.Encode(); err != nil {
		t.Fatal(err)
	}
	signature, err = Signature{Algorithm: Algorithm, KeyID: audit.KeyID(testKey.Public().(ed25519.PublicKey)), Signature: sig}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return messages, manifest, signature
}

func TestVerify(t *testing.T) {
	pub := testKey.Public().(ed25519.PublicKey)
	lines := []string{
		`{"id":"m1","recipient":"+12025550180","status":"read","content":{"subject":"Lab","body":"A1C 5.4","attachments":[]},"events":[]}` + "\n",
		`{"id":"m2","recipient":"+12025550181","status":"purged","events":[{"seq":4,"kind":"purged"}]}` + "\n",
		`{"id":"m3","recipient":"+12025550180","status":"accepted","events":[]}` + "\n",
	}
	messages, manifest, signature := buildExport(t, lines...)
	rep, err := Verify(manifest, signature, bytes.NewReader(messages), pub)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !rep.Signed || rep.Statement.Messages != 3 || rep.Manifest.Checksums[1].ID != "m2" || rep.KeyID != audit.KeyID(pub) {
		t.Errorf("report %+v", rep)
	}
	if rep, err := Verify(manifest, signature, bytes.NewReader(messages), nil); err != nil || rep.Signed {
		t.Errorf("without a key: %+v, %v; want the checksums checked and Signed false", rep, err)
	}
	empty, emptyManifest, emptySig := buildExport(t)
	if _, err := Verify(emptyManifest, emptySig, bytes.NewReader(empty), pub); err != nil {
		t.Errorf("an export of no messages: %v", err)
	}

	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	resigned := func(change func(*Manifest)) []byte {
		var m Manifest
		if err := json.Unmarshal(manifest, &m); err != nil {
			t.Fatal(err)
		}
		change(&m)
		b, _ := m.Encode()
		return b
	}
	for _, c := range []struct {
		name                string
		manifest, signature []byte
		messages            string
		key                 ed25519.PublicKey
		want                error
		says                string
	}{
		{"a line altered", nil, nil, strings.Replace(string(messages), "A1C 5.4", "A1C 9.4", 1), pub, ErrAltered, "line 1 (message m1) does not match its checksum"},
		{"a line removed", nil, nil, lines[0] + lines[2], pub, ErrAltered, "line 2 (message m2) does not match"},
		{"the last line removed", nil, nil, lines[0] + lines[1], pub, ErrAltered, "cut short"},
		{"cut inside a line", nil, nil, string(messages[:len(messages)-10]), pub, ErrAltered, "line 3 (message m3)"},
		{"the last newline cut", nil, nil, string(messages[:len(messages)-1]), pub, ErrAltered, "has no newline"},
		{"a line added", nil, nil, string(messages) + lines[0], pub, ErrAltered, "more lines"},
		{"lines swapped", nil, nil, lines[1] + lines[0] + lines[2], pub, ErrAltered, "line 1 (message m1)"},
		{"the hold renamed", resigned(func(m *Manifest) { m.Hold = "matter-118" }), nil, "", pub, ErrBadSignature, "altered"},
		{"the count lowered", resigned(func(m *Manifest) { m.Messages, m.Checksums = 2, m.Checksums[:2] }), nil, "", pub, ErrBadSignature, ""},
		{"a checksum replaced with a line's", resigned(func(m *Manifest) { m.Checksums[0].SHA256 = m.Checksums[1].SHA256 }), nil, "", pub, ErrAltered, "line 1"},
		{"the signature altered", nil, bytes.Replace(signature, []byte(`"signature":"`), []byte(`"signature":"A`), 1), "", pub, nil, "manifest.sig"},
		{"another key", nil, nil, "", other, ErrBadSignature, "names key"},
	} {
		m, s, msgs := manifest, signature, string(messages)
		if c.manifest != nil {
			m = c.manifest
		}
		if c.signature != nil {
			s = c.signature
		}
		if c.messages != "" {
			msgs = c.messages
		}
		_, err := Verify(m, s, strings.NewReader(msgs), c.key)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
	// A signature that is well formed but of something else.
	var sig Signature
	_ = json.Unmarshal(signature, &sig)
	sig.Signature[10] ^= 1
	flipped, _ := sig.Encode()
	if _, err := Verify(manifest, flipped, bytes.NewReader(messages), pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a flipped signature bit: %v", err)
	}
}
