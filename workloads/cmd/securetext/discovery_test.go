package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// discoveryGateway is a gateway running in the test process with its real parts: SQLite, the
// local keystore backend, TLS from a tenant CA, a senders file made by `securetext sender` and
// `securetext compliance`, and a legal hold on two numbers.
type discoveryGateway struct {
	API, CAFile              string
	SenderKey, ComplianceKey string
	Store                    *store.Store
	Keys                     keystore.InProcess
	client                   *http.Client
}

const discoveryTenant = "clinic-a"

var discoveryHold = retention.Hold{Name: "matter-117", UID: "5d0c7a51-hold", Reason: "matter 2026-117",
	Matcher: retention.Matcher{Recipients: []string{"+12025550180", "+12025550181"}}}

func startDiscoveryGateway(t *testing.T) *discoveryGateway {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	g := &discoveryGateway{}

	// The senders file, as an operator makes it.
	var senderOut, complianceOut bytes.Buffer
	if err := run(ctx, []string{"sender", "-id", "ehr"}, nil, &senderOut, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"compliance", "-id", "legal-1"}, nil, &complianceOut, io.Discard); err != nil {
		t.Fatal(err)
	}
	g.SenderKey = regexp.MustCompile(`API key: +(stk_[a-z2-7]+)`).FindStringSubmatch(senderOut.String())[1]
	m := regexp.MustCompile(`Compliance key: +(stc_[a-z2-7]{52})\n`).FindStringSubmatch(complianceOut.String())
	if m == nil {
		t.Fatalf("securetext compliance printed no key:\n%s", complianceOut.String())
	}
	g.ComplianceKey = m[1]
	if strings.Contains(complianceOut.String()[strings.Index(complianceOut.String(), "compliance:"):], g.ComplianceKey) {
		t.Fatal("the senders file entry holds the compliance key in clear")
	}
	sendersFile := filepath.Join(dir, "senders.yaml")
	if err := os.WriteFile(sendersFile, append(senderOut.Bytes(), complianceOut.Bytes()...), 0o600); err != nil {
		t.Fatal(err)
	}
	senders, err := gateway.LoadSenders(sendersFile)
	if err != nil {
		t.Fatalf("the printed entries do not load as a senders file: %v", err)
	}

	keyFile := filepath.Join(dir, "local-key.json")
	if err := keystore.GenerateLocalKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if g.Keys, err = keystore.NewLocalInProcess(keyFile, discoveryTenant, log); err != nil {
		t.Fatal(err)
	}
	if g.Store, err = store.Open(ctx, "sqlite:"+filepath.Join(dir, "tenant.db"), discoveryTenant, store.WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Store.Close)
	now := time.Now()
	ca, err := tenantpki.NewCA(discoveryTenant, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g.CAFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(g.CAFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	provider, err := sms.New(sms.Config{Type: sms.TypeConsole, Console: io.Discard})
	if err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	started, done := make(chan gateway.Addrs, 1), make(chan error, 1)
	go func() {
		done <- gateway.Run(runCtx, gateway.Config{
			Tenant: discoveryTenant, TenantName: "Clinic A", TextDomain: "text.clinic.example", Region: "US",
			Store: g.Store, Keys: g.Keys, Senders: senders,
			TLS:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			SMTPAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
			SMS: provider, ProviderName: sms.TypeConsole, ViewerURL: "https://view.clinic.example",
			RetentionSettings: func() retention.Settings { return retention.Settings{Holds: []retention.Hold{discoveryHold}} },
			Logger:            log,
			Started:           func(a gateway.Addrs) { started <- a },
		})
	}()
	select {
	case a := <-started:
		g.API = "https://" + a.API
	case err := <-done:
		cancel()
		t.Fatalf("the gateway did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the gateway stopped with %v", err)
		}
	})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	g.client = &http.Client{Transport: tr, Timeout: time.Minute}
	return g
}

// send submits a message to number with the sender's key and returns its id.
func (g *discoveryGateway) send(t *testing.T, number string) string {
	t.Helper()
	body := fmt.Sprintf(`{"to": %q, "subject": "Lab results", "body": "PHI-body for %s"}`, number, number)
	req, err := http.NewRequest(http.MethodPost, g.API+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+g.SenderKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("send: %d %s", resp.StatusCode, b)
	}
	id := regexp.MustCompile(`"id":"([a-z2-7]+)"`).FindSubmatch(b)
	return string(id[1])
}

// TestDiscoveryCommands: `securetext discovery export` saves a running gateway's export of a
// hold, `securetext discovery verify` checks it offline under the tenant's audit key, and
// fails, naming the fault, once a line, the manifest or the signature is altered.
func TestDiscoveryCommands(t *testing.T) {
	ctx := context.Background()
	g := startDiscoveryGateway(t)
	held := g.send(t, "2025550180")
	purged := g.send(t, "2025550181")
	g.send(t, "2025550182")
	if err := g.Store.Purge(ctx, purged, audit.Event{Kind: audit.KindPurged, Actor: "retention"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "compliance.key")
	if err := os.WriteFile(keyFile, []byte(g.ComplianceKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "matter-117")
	export := func(hold, keyFile, out string) (string, error) {
		var stdout bytes.Buffer
		err := run(ctx, []string{"discovery", "export", "-gateway", g.API, "-hold", hold, "-key-file", keyFile, "-out", out, "-ca", g.CAFile},
			nil, &stdout, io.Discard)
		return stdout.String(), err
	}
	said, err := export(discoveryHold.Name, keyFile, out)
	if err != nil {
		t.Fatalf("discovery export: %v", err)
	}
	if !strings.Contains(said, "exported 2 messages of legal hold matter-117 (tenant clinic-a)") {
		t.Errorf("export said:\n%s", said)
	}
	messages, err := os.ReadFile(filepath.Join(out, discovery.MessagesFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(messages, []byte("PHI-body for 2025550180")) || !bytes.Contains(messages, []byte(`"id":"`+purged+`"`)) ||
		bytes.Contains(messages, []byte("2025550182")) || bytes.Count(messages, []byte("\n")) != 2 {
		t.Errorf("messages.ndjson holds other than the held message %s decrypted and the purged %s:\n%s", held, purged, messages)
	}
	if fi, err := os.Stat(filepath.Join(out, discovery.MessagesFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("messages.ndjson mode %v, %v; want 0600", fi.Mode(), err)
	}

	// The audit trail names the export by the manifest's SHA-256, as the command printed it.
	manifest, err := os.ReadFile(filepath.Join(out, discovery.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(manifest)
	if !strings.Contains(said, "manifest.json SHA-256 "+hex.EncodeToString(sum[:])) {
		t.Errorf("export did not print manifest.json's SHA-256 %x:\n%s", sum, said)
	}
	if _, err := g.Store.SequenceAudit(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	events, err := g.Store.AuditEvents(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	audited := 0
	for _, e := range events {
		if e.Kind == audit.KindDiscoveryExported && e.Actor == "legal-1" && e.Detail["manifest_sha256"] == hex.EncodeToString(sum[:]) && e.Detail["hold"] == "matter-117" {
			audited++
		}
	}
	if audited != 1 {
		t.Errorf("%d discovery-exported events name this export, want 1", audited)
	}

	// Offline, with the key as base64 and as a file.
	pub, err := g.Keys.PublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pubB64 := base64.StdEncoding.EncodeToString(pub)
	pubFile := filepath.Join(dir, "audit.pub")
	if err := os.WriteFile(pubFile, []byte(pubB64+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(dir, key string) (string, error) {
		var stdout bytes.Buffer
		err := run(ctx, []string{"discovery", "verify", "-dir", dir, "-public-key", key}, nil, &stdout, io.Discard)
		return stdout.String(), err
	}
	for _, key := range []string{pubB64, pubFile} {
		said, err := verify(out, key)
		if err != nil || !strings.Contains(said, "ok: 2 messages of legal hold matter-117 (tenant clinic-a), exported by legal-1") {
			t.Errorf("verify -public-key %s: %v\n%s", key, err, said)
		}
	}

	// Altered copies fail, each saying what.
	altered := func(name string, change func([]byte) []byte) string {
		t.Helper()
		d := filepath.Join(t.TempDir(), "copy")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{discovery.MessagesFile, discovery.ManifestFile, discovery.SignatureFile} {
			b, err := os.ReadFile(filepath.Join(out, f))
			if err != nil {
				t.Fatal(err)
			}
			if f == name {
				b = change(b)
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	for _, c := range []struct {
		name, dir, says string
	}{
		{"a line", altered(discovery.MessagesFile, func(b []byte) []byte { return bytes.Replace(b, []byte("PHI-body"), []byte("PHI-BODY"), 1) }), "does not match its checksum"},
		{"a line cut", altered(discovery.MessagesFile, func(b []byte) []byte { return b[:len(b)-20] }), "cut short"},
		{"the manifest", altered(discovery.ManifestFile, func(b []byte) []byte { return bytes.Replace(b, []byte(`"legal-1"`), []byte(`"legal-2"`), 1) }), "signature does not verify"},
		{"the signature", altered(discovery.SignatureFile, func(b []byte) []byte {
			return regexp.MustCompile(`"signature":"[A-Za-z0-9+/]`).ReplaceAllFunc(b, func(m []byte) []byte {
				if m[len(m)-1] == 'A' {
					return append(m[:len(m)-1], 'B')
				}
				return append(m[:len(m)-1], 'A')
			})
		}), "signature does not verify"},
	} {
		if _, err := verify(c.dir, pubB64); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s altered: verify says %v, want %q", c.name, err, c.says)
		}
	}
	other := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	if _, err := verify(out, other); err == nil || !strings.Contains(err.Error(), "names key") {
		t.Errorf("verify under another key: %v", err)
	}

	// What export refuses, leaving nothing behind.
	senderKeyFile := filepath.Join(dir, "sender.key")
	if err := os.WriteFile(senderKeyFile, []byte(g.SenderKey), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, hold, keyFile, out, says string
	}{
		{"an existing directory", discoveryHold.Name, keyFile, out, "exists"},
		{"a sender's key", discoveryHold.Name, senderKeyFile, filepath.Join(dir, "x1"), "holds no compliance key"},
		{"no such hold", "matter-999", keyFile, filepath.Join(dir, "x2"), "404 Not Found: there is no active legal hold"},
	} {
		if _, err := export(c.hold, c.keyFile, c.out); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("export with %s: %v, want an error saying %q", c.name, err, c.says)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range left {
		if base := filepath.Base(p); base != "matter-117" && base != "compliance.key" && base != "audit.pub" && base != "sender.key" {
			t.Errorf("a refused export left %s behind", p)
		}
	}
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(hidden) > 0 {
		t.Errorf("a refused export left %v behind", hidden)
	}
}

// A stream that breaks off before its manifest, or goes on after it, is not saved.
func TestDiscoverySaveRefusesBrokenStreams(t *testing.T) {
	line := `{"id":"m1","events":[]}` + "\n"
	trailer := `{"manifest":{"format":"securetext-discovery/v1"},"signature":{"algorithm":"ed25519","key_id":"k","signature":""}}` + "\n"
	for name, c := range map[string]struct{ stream, says string }{
		"no manifest":         {line + line, "broke off after 2 messages"},
		"cut inside a line":   {line + line[:10], "broke off after 1 messages"},
		"more after manifest": {line + trailer + line, "more after the manifest"},
		"not JSON":            {"nonsense\n", "not JSON"},
	} {
		if _, _, err := saveExport(strings.NewReader(c.stream), t.TempDir()); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.says)
		}
	}
}

// The help lists every command, the discovery ones included.
func TestHelpListsCommands(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"help"}, nil, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"dev", "gateway", "viewer", "keystore", "audit", "discovery", "sender", "compliance", "version"} {
		if !regexp.MustCompile(`(?m)^  ` + cmd + ` +\S`).MatchString(stdout.String()) {
			t.Errorf("help does not list %s:\n%s", cmd, stdout.String())
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"discovery"}, "give export or verify"},
		{[]string{"discovery", "export"}, "-gateway, -hold, -key-file and -out are required"},
		{[]string{"discovery", "verify"}, "-dir and -public-key are required"},
		{[]string{"compliance"}, "-id is required"},
		{[]string{"compliance", "-id", "legal 1"}, "without spaces"},
	} {
		if err := run(context.Background(), c.args, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("securetext %v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}
