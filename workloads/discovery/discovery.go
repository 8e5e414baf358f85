// Package discovery is the format of a discovery export: the messages that a legal hold keeps,
// decrypted, with their audit events, one JSON object a line (messages.ndjson), and a manifest of
// their SHA-256 checksums (manifest.json) signed by the tenant's audit key (manifest.sig).
//
// The signature covers a Statement, a short text naming the tenant, the hold, the compliance
// account that exported it and when, the number of messages, and the size and SHA-256 of
// messages.ndjson. Its first line is the fixed header "securetext discovery manifest v1" and its
// second the origin "securetext.io/discovery/<tenant>". The same key signs audit checkpoints,
// whose bodies start with "securetext.io/audit/<tenant>" (audit.CheckpointOrigin), so a manifest
// signature never verifies as a checkpoint and a checkpoint signature never verifies as a
// manifest. The keystore signs a statement only after parsing it back to exactly the bytes it
// was given (ParseStatement), so it cannot be made to sign anything else for this purpose.
//
// Guarantees, given an export and the tenant's audit public key (Verify): every field of
// manifest.json is signed or checked against what is signed, so changing, adding, removing or
// reordering a line of messages.ndjson, cutting the file short (a download that broke off),
// editing manifest.json or replacing the signature fails the check, which says what is wrong.
package discovery

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"
)

// The files of an export directory.
const (
	MessagesFile  = "messages.ndjson"
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
)

const (
	// ManifestFormat is the format field of manifest.json.
	ManifestFormat = "securetext-discovery/v1"
	// StatementHeader is the first line of every signed statement.
	StatementHeader = "securetext discovery manifest v1"
	// Algorithm is the signature algorithm of manifest.sig: Ed25519 (RFC 8032), the audit key's.
	Algorithm = "ed25519"

	// TimeLayout is how the export writes times: RFC 3339 in UTC with exactly nine fractional
	// digits, one spelling per instant (as audit exports write them).
	TimeLayout = "2006-01-02T15:04:05.000000000Z"

	// maxStatement bounds a statement: eight short lines.
	maxStatement = 2048
	// maxWord bounds one field of a statement (a Kubernetes name is at most 253 characters).
	maxWord = 253
)

// Origin is the second line of every statement of tenant: it names what the signature is for.
func Origin(tenant string) string { return "securetext.io/discovery/" + tenant }

// ErrNotStatement means a body is not a discovery manifest statement in canonical form.
var ErrNotStatement = errors.New("discovery: not a manifest statement")

// Statement is what the tenant's audit key signs for an export.
type Statement struct {
	Tenant     string
	Hold       string // the LegalHold's name
	HoldUID    string // its Kubernetes uid; "" where it has none (securetext dev)
	ExportedBy string // the compliance account
	ExportedAt time.Time
	Messages   int      // lines of messages.ndjson
	Bytes      int64    // size of messages.ndjson
	SHA256     [32]byte // of messages.ndjson
}

// word reports whether v can be one field of a statement line: 1 to 253 printable ASCII
// characters, no space, so that no value can end its line or pose as another.
func word(v string) bool {
	if v == "" || len(v) > maxWord {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

// ValidWord reports whether v can name a tenant, hold or account in a statement.
func ValidWord(v string) bool { return word(v) }

func (s Statement) check() error {
	for _, f := range []struct{ name, v string }{
		{"tenant", s.Tenant}, {"hold", s.Hold}, {"exported-by", s.ExportedBy},
	} {
		if !word(f.v) {
			return fmt.Errorf("%s must be 1 to %d printable ASCII characters without spaces", f.name, maxWord)
		}
	}
	if s.HoldUID != "" && (!word(s.HoldUID) || s.HoldUID == "-") {
		return fmt.Errorf("hold-uid must be empty or 1 to %d printable ASCII characters without spaces, not \"-\"", maxWord)
	}
	if s.Messages < 0 || s.Bytes < 0 {
		return errors.New("counts must not be negative")
	}
	return nil
}

// Body returns the signed text: eight lines, each ending in a newline.
//
//	securetext discovery manifest v1
//	securetext.io/discovery/<tenant>
//	hold <name>
//	hold-uid <uid, or - when none>
//	exported-by <compliance account>
//	exported-at <TimeLayout>
//	messages <count>
//	messages.ndjson <bytes> sha256:<hex>
func (s Statement) Body() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("discovery statement: %w", err)
	}
	uid := s.HoldUID
	if uid == "" {
		uid = "-"
	}
	return []byte(StatementHeader + "\n" +
		Origin(s.Tenant) + "\n" +
		"hold " + s.Hold + "\n" +
		"hold-uid " + uid + "\n" +
		"exported-by " + s.ExportedBy + "\n" +
		"exported-at " + s.ExportedAt.UTC().Format(TimeLayout) + "\n" +
		"messages " + strconv.Itoa(s.Messages) + "\n" +
		MessagesFile + " " + strconv.FormatInt(s.Bytes, 10) + " sha256:" + hex.EncodeToString(s.SHA256[:]) + "\n"), nil
}

// ParseStatement reads a statement and accepts it only if Body gives back exactly body. Every
// refusal wraps ErrNotStatement; it quotes nothing of body but its line count.
func ParseStatement(body []byte) (Statement, error) {
	refuse := func(format string, args ...any) (Statement, error) {
		return Statement{}, fmt.Errorf("%w: %s", ErrNotStatement, fmt.Sprintf(format, args...))
	}
	if len(body) > maxStatement {
		return refuse("it is longer than %d bytes", maxStatement)
	}
	text, ok := strings.CutSuffix(string(body), "\n")
	if !ok {
		return refuse("it does not end with a newline")
	}
	lines := strings.Split(text, "\n")
	if len(lines) != 8 {
		return refuse("it has %d lines, not 8", len(lines))
	}
	if lines[0] != StatementHeader {
		return refuse("its first line is not %q", StatementHeader)
	}
	var st Statement
	if st.Tenant, ok = strings.CutPrefix(lines[1], Origin("")); !ok {
		return refuse("its second line is not the origin %s", Origin("<tenant>"))
	}
	values := make([]string, 0, 6)
	for i, key := range []string{"hold", "hold-uid", "exported-by", "exported-at", "messages", MessagesFile} {
		v, ok := strings.CutPrefix(lines[2+i], key+" ")
		if !ok {
			return refuse("line %d does not start with %q", 3+i, key+" ")
		}
		values = append(values, v)
	}
	st.Hold, st.HoldUID, st.ExportedBy = values[0], values[1], values[2]
	if st.HoldUID == "-" {
		st.HoldUID = ""
	}
	var err error
	if st.ExportedAt, err = time.Parse(TimeLayout, values[3]); err != nil {
		return refuse("exported-at is not a time in the layout %s", TimeLayout)
	}
	if st.Messages, err = strconv.Atoi(values[4]); err != nil {
		return refuse("messages is not a count")
	}
	size, sum, ok := strings.Cut(values[5], " sha256:")
	raw, herr := hex.DecodeString(sum)
	if st.Bytes, err = strconv.ParseInt(size, 10, 64); !ok || err != nil || herr != nil || len(raw) != sha256.Size {
		return refuse("the %s line is not <bytes> sha256:<64 hex digits>", MessagesFile)
	}
	copy(st.SHA256[:], raw)
	canonical, err := st.Body()
	if err != nil {
		return refuse("%v", err)
	}
	if !bytes.Equal(canonical, body) {
		return refuse("it is not in canonical form")
	}
	return st, nil
}

// Manifest is manifest.json: the statement's fields, and the SHA-256 of each line of
// messages.ndjson in order, which Verify checks line by line to say which one was altered.
type Manifest struct {
	Format     string     `json:"format"`
	Tenant     string     `json:"tenant"`
	Hold       string     `json:"hold"`
	HoldUID    string     `json:"hold_uid,omitempty"`
	ExportedBy string     `json:"exported_by"`
	ExportedAt string     `json:"exported_at"`
	Messages   int        `json:"messages"`
	File       FileSum    `json:"messages_ndjson"`
	Checksums  []Checksum `json:"checksums"`
}

// FileSum is the size and SHA-256 (hex) of messages.ndjson.
type FileSum struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Checksum is the SHA-256 (hex) of one line of messages.ndjson, newline included, and the id of
// the message on it.
type Checksum struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
}

// Statement returns what m's signature covers, after checking that m is whole: its format, a
// checksum per message, each a SHA-256 in hex.
func (m Manifest) Statement() (Statement, error) {
	if m.Format != ManifestFormat {
		return Statement{}, fmt.Errorf("format is %q, want %q", m.Format, ManifestFormat)
	}
	at, err := time.Parse(TimeLayout, m.ExportedAt)
	if err != nil {
		return Statement{}, fmt.Errorf("exported_at %q is not a time in the layout %s", m.ExportedAt, TimeLayout)
	}
	if len(m.Checksums) != m.Messages {
		return Statement{}, fmt.Errorf("it lists %d checksums for %d messages", len(m.Checksums), m.Messages)
	}
	for i, c := range m.Checksums {
		if _, err := decodeSum(c.SHA256); err != nil || c.ID == "" {
			return Statement{}, fmt.Errorf("checksums[%d] needs a message id and a SHA-256 of 64 hex digits", i)
		}
	}
	sum, err := decodeSum(m.File.SHA256)
	if err != nil {
		return Statement{}, fmt.Errorf("messages_ndjson.sha256 is not 64 hex digits")
	}
	st := Statement{Tenant: m.Tenant, Hold: m.Hold, HoldUID: m.HoldUID, ExportedBy: m.ExportedBy,
		ExportedAt: at, Messages: m.Messages, Bytes: m.File.Bytes, SHA256: sum}
	if err := st.check(); err != nil {
		return Statement{}, err
	}
	return st, nil
}

func decodeSum(s string) ([32]byte, error) {
	var sum [32]byte
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != sha256.Size || s != strings.ToLower(s) {
		return sum, errors.New("not a SHA-256 in lowercase hex")
	}
	copy(sum[:], raw)
	return sum, nil
}

// Encode returns manifest.json's bytes: m as JSON and a newline. The audit event of the export
// names their SHA-256, so `sha256sum manifest.json` matches it.
func (m Manifest) Encode() ([]byte, error) {
	if m.Checksums == nil {
		m.Checksums = []Checksum{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode discovery manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Signature is manifest.sig: the Ed25519 signature of the manifest's statement and the id of
// the key that made it (audit.KeyID).
type Signature struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"` // standard base64 in JSON
}

// Encode returns manifest.sig's bytes: s as JSON and a newline.
func (s Signature) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode discovery signature: %w", err)
	}
	return append(b, '\n'), nil
}

// decodeStrict reads exactly one JSON object with no unknown fields into v.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// Builder hashes the lines of messages.ndjson as they are written, and makes their manifest.
type Builder struct {
	file  hash.Hash
	bytes int64
	sums  []Checksum
}

// NewBuilder returns a Builder of an empty messages.ndjson.
func NewBuilder() *Builder { return &Builder{file: sha256.New(), sums: []Checksum{}} }

// Add records line, the message id's line with its newline, as the next line of the file.
func (b *Builder) Add(id string, line []byte) {
	sum := sha256.Sum256(line)
	b.file.Write(line)
	b.bytes += int64(len(line))
	b.sums = append(b.sums, Checksum{ID: id, SHA256: hex.EncodeToString(sum[:])})
}

// Manifest returns the manifest of the lines added so far.
func (b *Builder) Manifest(tenant, hold, holdUID, exportedBy string, at time.Time) Manifest {
	return Manifest{
		Format: ManifestFormat, Tenant: tenant, Hold: hold, HoldUID: holdUID, ExportedBy: exportedBy,
		ExportedAt: at.UTC().Format(TimeLayout), Messages: len(b.sums),
		File:      FileSum{Bytes: b.bytes, SHA256: hex.EncodeToString(b.file.Sum(nil))},
		Checksums: b.sums,
	}
}

// Message is one line of messages.ndjson: a held message, its content while it is kept (none
// once it is purged), and its audit events, oldest first.
type Message struct {
	ID              string   `json:"id"`
	Recipient       string   `json:"recipient"` // E.164
	Sender          string   `json:"sender"`
	Channel         string   `json:"channel"`
	Status          string   `json:"status"`
	CreatedAt       string   `json:"created_at"`
	ExpiresAt       string   `json:"expires_at"`
	StatusChangedAt string   `json:"status_changed_at"`
	Content         *Content `json:"content,omitempty"`
	Events          []Event  `json:"events"`
}

// Content is what the sender wrote.
type Content struct {
	Subject     string       `json:"subject"`
	Body        string       `json:"body"`
	Attachments []Attachment `json:"attachments"`
}

// Attachment is one file, its bytes in standard base64.
type Attachment struct {
	Filename      string `json:"filename"`
	ContentType   string `json:"content_type"`
	ContentBase64 []byte `json:"content_base64"`
}

// Event is one audit event of the message, as the audit trail holds it: Hash (hex, as in an
// audit export) once the event is chained, Seq 0 before. Reply is the patient's text on a
// replied event while the message is kept.
type Event struct {
	Seq    uint64            `json:"seq"`
	Time   string            `json:"time"`
	Kind   string            `json:"kind"`
	Actor  string            `json:"actor"`
	Detail map[string]string `json:"detail"`
	Hash   string            `json:"hash,omitempty"`
	Reply  string            `json:"reply,omitempty"`
}

// Trailer is the last line of the export as the gateway streams it: after the lines of
// messages.ndjson, the manifest (exactly manifest.json's bytes without the newline) and its
// signature. A stream without it was cut off and is not an export.
type Trailer struct {
	Manifest  json.RawMessage `json:"manifest"`
	Signature Signature       `json:"signature"`
}
