// securetext discovery exports what a legal hold keeps and checks an export offline.
//
//	securetext discovery export -gateway URL -hold NAME -key-file FILE -out DIR [-ca FILE]
//	securetext discovery verify -dir DIR -public-key BASE64|FILE
//
// export asks the tenant's gateway (GET /v1/holds/{name}/export, with a compliance account's
// key) for every message the hold keeps, decrypted, with its audit events, and writes DIR with
// messages.ndjson, manifest.json (the SHA-256 of each message line, the count, and the size and
// SHA-256 of messages.ndjson) and manifest.sig (the manifest's Ed25519 signature by the tenant's
// audit key). It writes into a hidden directory beside DIR and renames it only once the stream
// ended with its manifest and the checksums hold: a transfer that broke off leaves nothing.
// verify checks the three files against the tenant's audit public key and names what was
// altered.

package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// runDiscovery runs "securetext discovery export|verify".
func runDiscovery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "export":
			return discoveryExport(ctx, args[1:], stdout, stderr)
		case "verify":
			return discoveryVerify(args[1:], stdout, stderr)
		}
	}
	fmt.Fprint(stderr, discoveryUsage)
	return errors.New("discovery: give export or verify")
}

const discoveryUsage = `usage:
  securetext discovery export -gateway URL -hold NAME -key-file FILE -out DIR [-ca FILE]
  securetext discovery verify -dir DIR -public-key BASE64|FILE
`

func discoveryExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("discovery export", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var (
		gatewayURL = flags.String("gateway", "", "the tenant's gateway API, e.g. https://api.text.clinic.example")
		hold       = flags.String("hold", "", "name of the active LegalHold to export")
		keyFile    = flags.String("key-file", "", "file holding the compliance key (stc_…, from securetext compliance)")
		out        = flags.String("out", "", "directory to create with messages.ndjson, manifest.json and manifest.sig; must not exist")
		caFile     = flags.String("ca", "", "PEM file of the CA that the gateway's certificate chains to (default: the system's roots)")
		timeout    = flags.Duration("timeout", time.Hour, "bound on the whole export")
	)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *gatewayURL == "" || *hold == "" || *keyFile == "" || *out == "" || flags.NArg() > 0 {
		return fmt.Errorf("discovery export: -gateway, -hold, -key-file and -out are required, and nothing else\n%s", discoveryUsage)
	}
	base, err := url.Parse(*gatewayURL)
	if err != nil || base.Scheme != "https" || base.Host == "" || base.RawQuery != "" || base.User != nil {
		return fmt.Errorf("discovery export: -gateway %q must be https://host[:port]: the export holds patients' messages", *gatewayURL)
	}
	key, err := readSecret(*keyFile)
	if err != nil {
		return fmt.Errorf("discovery export: -key-file: %w", err)
	}
	if !strings.HasPrefix(key, gateway.ComplianceKeyPrefix) {
		return fmt.Errorf("discovery export: -key-file holds no compliance key: it starts with %s (securetext compliance makes one; a sender's stk_ key cannot export)", gateway.ComplianceKeyPrefix)
	}
	if _, err := os.Lstat(*out); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("discovery export: -out %s exists: give a directory that does not exist yet", *out)
	}
	client, err := exportClient(*caFile)
	if err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimSuffix(base.String(), "/")+"/v1/holds/"+url.PathEscape(*hold)+"/export", nil)
	if err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "application/x-ndjson, application/problem+json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("discovery export: reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	if err := exportAnswer(resp); err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}

	// Written beside -out, so that the rename is atomic, and hidden until it is whole.
	tmp, err := os.MkdirTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".partial-")
	if err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	n, trailer, err := saveExport(resp.Body, tmp)
	if err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}
	rep, err := discovery.VerifyDir(tmp, nil)
	if err != nil {
		return fmt.Errorf("discovery export: the gateway's answer does not check out, nothing was kept: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return fmt.Errorf("discovery export: %w", err)
	}
	st := rep.Statement
	fmt.Fprintf(stdout, "exported %d messages of legal hold %s (tenant %s) to %s\n", n, st.Hold, st.Tenant, *out)
	fmt.Fprintf(stdout, "manifest.json SHA-256 %s (the audit event discovery-exported names it)\n", hex.EncodeToString(rep.ManifestSHA256[:]))
	fmt.Fprintf(stdout, "signed by %s; check it with: securetext discovery verify -dir %s -public-key <the tenant's audit key>\n", trailer.Signature.KeyID, *out)
	return nil
}

// exportClient is an HTTPS client that trusts caFile's CAs, or the system's roots.
func exportClient(caFile string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		roots, err := tenantpki.CertPoolFromPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("-ca %s: %w", caFile, err)
		}
		t.TLSClientConfig.RootCAs = roots
	}
	// An export of a large hold takes long to prepare: its keys are unwrapped before the answer.
	t.ResponseHeaderTimeout = 10 * time.Minute
	return &http.Client{Transport: t}, nil
}

// exportAnswer checks that resp is an export, and otherwise says what the gateway answered.
func exportAnswer(resp *http.Response) error {
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode == http.StatusOK && mediaType == "application/x-ndjson" {
		return nil
	}
	var p struct {
		Detail string `json:"detail"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	what := "the gateway answered " + resp.Status
	if mediaType == "application/problem+json" && json.Unmarshal(body, &p) == nil && p.Detail != "" {
		what += ": " + p.Detail
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		what += fmt.Sprintf(" (retry in %s seconds)", resp.Header.Get("Retry-After"))
	}
	return errors.New(what)
}

// saveExport writes the stream's message lines to dir's messages.ndjson and its trailer to
// manifest.json and manifest.sig, and returns the number of messages. A stream that ends
// without its trailer, or goes on after it, is refused.
func saveExport(body io.Reader, dir string) (int, discovery.Trailer, error) {
	var trailer discovery.Trailer
	f, err := os.OpenFile(filepath.Join(dir, discovery.MessagesFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, trailer, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	r := bufio.NewReaderSize(body, 64<<10)
	n, done := 0, false
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && done {
			return n, trailer, errors.New("the gateway sent more after the manifest; nothing was kept")
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var members map[string]json.RawMessage
			if jerr := json.Unmarshal(line, &members); jerr != nil {
				return n, trailer, fmt.Errorf("line %d of the answer is not JSON; nothing was kept", n+1)
			}
			if _, ok := members["manifest"]; ok {
				if jerr := json.Unmarshal(line, &trailer); jerr != nil {
					return n, trailer, fmt.Errorf("the manifest line does not read: %v; nothing was kept", jerr)
				}
				done = true
			} else {
				if _, werr := w.Write(line); werr != nil {
					return n, trailer, werr
				}
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || (len(line) > 0 && line[len(line)-1] != '\n') {
			return n, trailer, fmt.Errorf("the export broke off after %d messages, before its manifest (%v): the gateway or the connection failed; nothing was kept, run it again", n, err)
		}
	}
	if !done {
		return n, trailer, fmt.Errorf("the export broke off after %d messages, before its manifest: the gateway or the connection failed; nothing was kept, run it again", n)
	}
	if err := w.Flush(); err != nil {
		return n, trailer, err
	}
	if err := f.Sync(); err != nil {
		return n, trailer, err
	}
	sig, err := trailer.Signature.Encode()
	if err != nil {
		return n, trailer, err
	}
	for name, data := range map[string][]byte{
		discovery.ManifestFile:  append(append([]byte(nil), trailer.Manifest...), '\n'),
		discovery.SignatureFile: sig,
	} {
		if err := writeFileSync(filepath.Join(dir, name), data); err != nil {
			return n, trailer, err
		}
	}
	return n, trailer, nil
}

// writeFileSync writes a new file (mode 0600) and syncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func discoveryVerify(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("discovery verify", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("dir", "", "the export directory (messages.ndjson, manifest.json, manifest.sig)")
	publicKey := flags.String("public-key", "", "the tenant's audit public key: standard base64 of the 32-byte Ed25519 key, or a file holding it")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *publicKey == "" || flags.NArg() > 0 {
		return fmt.Errorf("discovery verify: -dir and -public-key are required, and nothing else\n%s", discoveryUsage)
	}
	pub, err := readPublicKey(*publicKey)
	if err != nil {
		return fmt.Errorf("discovery verify: %w", err)
	}
	rep, err := discovery.VerifyDir(*dir, pub)
	if err != nil {
		return fmt.Errorf("discovery verify: %s: %w", *dir, err)
	}
	st := rep.Statement
	fmt.Fprintf(stdout, "ok: %d messages of legal hold %s (tenant %s), exported by %s at %s\n",
		st.Messages, st.Hold, st.Tenant, st.ExportedBy, st.ExportedAt.Format(time.RFC3339))
	fmt.Fprintf(stdout, "messages.ndjson %d bytes, SHA-256 %s; manifest.json SHA-256 %s\n",
		st.Bytes, hex.EncodeToString(st.SHA256[:]), hex.EncodeToString(rep.ManifestSHA256[:]))
	fmt.Fprintf(stdout, "signed by %s, the key given\n", rep.KeyID)
	return nil
}

// readPublicKey reads an Ed25519 public key given as standard base64, or a file holding that.
func readPublicKey(v string) (ed25519.PublicKey, error) {
	text := v
	if b, err := base64.StdEncoding.DecodeString(v); err != nil || len(b) != ed25519.PublicKeySize {
		data, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("-public-key is neither a base64 Ed25519 public key nor a readable file: %w", err)
		}
		text = strings.TrimSpace(string(data))
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("-public-key must be the tenant's audit key: standard base64 of a 32-byte Ed25519 public key, or a file holding that")
	}
	return b, nil
}
