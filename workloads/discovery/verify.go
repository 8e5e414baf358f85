package discovery

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/securetext/securetext/workloads/audit"
)

// ErrBadSignature means the manifest's signature does not verify under the key given.
var ErrBadSignature = errors.New("discovery: the manifest signature does not verify")

// ErrAltered means messages.ndjson is not the file the manifest describes.
var ErrAltered = errors.New("discovery: messages.ndjson does not match the manifest")

// maxLine bounds one line of messages.ndjson: a message of the gateway's largest size (14 MiB
// of JSON with base64 attachments) with its events fits well within it.
const maxLine = 64 << 20

// Report is what Verify found.
type Report struct {
	Manifest  Manifest
	Statement Statement
	// KeyID names the key that signed (manifest.sig); Signed is false when Verify was given no
	// key, and the signature was not checked.
	KeyID  string
	Signed bool
	// ManifestSHA256 is the SHA-256 of manifest.json, as the export's audit event names it.
	ManifestSHA256 [32]byte
}

// Verify checks an export: manifest.json's bytes, manifest.sig's bytes and messages.ndjson.
// With pub, the signature must verify under it; without (nil), only the checksums are checked,
// which proves that the files agree, not who made them. It names the first thing that does not
// hold: the signature, a line whose checksum differs, a line too many or too few, the file's
// size or SHA-256.
func Verify(manifestJSON, signatureJSON []byte, messages io.Reader, pub ed25519.PublicKey) (Report, error) {
	var rep Report
	if err := decodeStrict(manifestJSON, &rep.Manifest); err != nil {
		return rep, fmt.Errorf("%s is not a discovery manifest: %w", ManifestFile, err)
	}
	st, err := rep.Manifest.Statement()
	if err != nil {
		return rep, fmt.Errorf("%s is not a discovery manifest: %w", ManifestFile, err)
	}
	rep.Statement = st
	rep.ManifestSHA256 = sha256.Sum256(manifestJSON)
	var sig Signature
	if err := decodeStrict(signatureJSON, &sig); err != nil {
		return rep, fmt.Errorf("%s is not a discovery signature: %w", SignatureFile, err)
	}
	if sig.Algorithm != Algorithm || len(sig.Signature) != ed25519.SignatureSize {
		return rep, fmt.Errorf("%s is not an %s signature of %d bytes", SignatureFile, Algorithm, ed25519.SignatureSize)
	}
	rep.KeyID = sig.KeyID
	if pub != nil {
		if len(pub) != ed25519.PublicKeySize {
			return rep, fmt.Errorf("the public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		}
		body, err := st.Body()
		if err != nil {
			return rep, fmt.Errorf("%s is not a discovery manifest: %w", ManifestFile, err)
		}
		if !ed25519.Verify(pub, body, sig.Signature) {
			why := "manifest.json or manifest.sig was altered"
			if id := audit.KeyID(pub); sig.KeyID != id {
				why = fmt.Sprintf("it names key %s, and the key given is %s: check that it is the tenant's audit key; or %s", sig.KeyID, id, why)
			}
			return rep, fmt.Errorf("%w under the key given: %s", ErrBadSignature, why)
		}
		rep.Signed = true
	}
	return rep, checkMessages(rep.Manifest, st, messages)
}

// checkMessages checks messages.ndjson line by line against m's checksums, then as a whole
// against the statement.
func checkMessages(m Manifest, st Statement, messages io.Reader) error {
	r := bufio.NewReaderSize(messages, 64<<10)
	h := sha256.New()
	var size int64
	n := 0
	for {
		line, err := readLine(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s line %d: %w", MessagesFile, n+1, err)
		}
		n++
		h.Write(line)
		size += int64(len(line))
		if n > len(m.Checksums) {
			return fmt.Errorf("%w: it has more lines than the %d the manifest lists", ErrAltered, len(m.Checksums))
		}
		want := m.Checksums[n-1]
		if line[len(line)-1] != '\n' {
			return fmt.Errorf("%w: line %d (message %s) has no newline: the file is cut short", ErrAltered, n, want.ID)
		}
		sum := sha256.Sum256(line)
		if hex.EncodeToString(sum[:]) != want.SHA256 {
			return fmt.Errorf("%w: line %d (message %s) does not match its checksum: it was altered", ErrAltered, n, want.ID)
		}
		var rec struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(line, &rec); err != nil || rec.ID != want.ID {
			return fmt.Errorf("%w: line %d does not hold message %s, which the manifest lists there", ErrAltered, n, want.ID)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	switch {
	case n < st.Messages:
		return fmt.Errorf("%w: it has %d lines and the manifest lists %d: the file is cut short", ErrAltered, n, st.Messages)
	case size != st.Bytes || sum != st.SHA256:
		return fmt.Errorf("%w: its size or SHA-256 is not the signed one: it was altered", ErrAltered)
	}
	return nil
}

// readLine returns the next line with its newline, or without one at the end of the file; at
// most maxLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLine)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		}
		return nil, err
	}
}

// VerifyDir is Verify on the files of an export directory.
func VerifyDir(dir string, pub ed25519.PublicKey) (Report, error) {
	manifest, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return Report{}, fmt.Errorf("read the manifest: %w", err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil {
		return Report{}, fmt.Errorf("read the signature: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, MessagesFile))
	if err != nil {
		return Report{}, fmt.Errorf("read the messages: %w", err)
	}
	defer f.Close()
	return Verify(manifest, sig, f, pub)
}
