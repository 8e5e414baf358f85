package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/smtp"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/store"
)

// syncBuffer is a bytes.Buffer safe for the dev stack's writers and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// startDev runs `securetext dev` in the test process and returns what it printed and told. The
// free ports it picks can be taken by another test process before dev binds them, so a start
// that fails on an address in use is tried again with new ports.
func startDev(t *testing.T, dataDir string) (*syncBuffer, devInfo) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, info, err := tryStartDev(t, dataDir)
		if err == nil {
			return out, info
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("dev did not start (%v); again with other ports", err)
	}
}

func tryStartDev(t *testing.T, dataDir string) (*syncBuffer, devInfo, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	started := make(chan devInfo, 1)
	done := make(chan error, 1)
	args := []string{"-data", dataDir, "-smtp-addr", freeAddr(t), "-api-addr", freeAddr(t), "-metrics-addr", freeAddr(t), "-viewer-addr", freeAddr(t)}
	go func() { done <- runDev(ctx, args, stdout, stderr, func(i devInfo) { started <- i }) }()
	select {
	case info := <-started:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("dev stopped with %v", err)
			}
		})
		return stdout, info, nil
	case err := <-done:
		cancel()
		return nil, devInfo{}, fmt.Errorf("dev did not start: %v\n%s", err, stderr.String())
	case <-time.After(time.Minute):
		cancel()
		<-done
		return nil, devInfo{}, fmt.Errorf("dev did not start within a minute\n%s", stderr.String())
	}
}

var smsLine = regexp.MustCompile(`Demo Clinic: You have a secure message\. (http://127\.0\.0\.1:[0-9]+/m/[a-z2-7]{26}) Reply STOP to opt out`)

func waitForTexts(t *testing.T, out *syncBuffer, n int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%d texts on the console", n), func() error {
		if got := len(smsLine.FindAllString(out.String(), -1)); got < n {
			return fmt.Errorf("%d texts so far", got)
		}
		return nil
	})
}

// TestDevSendsFirstMessage does what the banner tells a newcomer: mail (as swaks would) and
// the REST API (as curl would) each get a text with a link on the console.
func TestDevSendsFirstMessage(t *testing.T) {
	dir := t.TempDir()
	out, info := startDev(t, dir)
	banner := out.String()
	for _, want := range []string{"swaks --server", "--to 2025550143@text.demo.localhost", "curl --cacert", info.APIKey, "Do not use it for real patients",
		"\n  Text domain      text.demo.localhost\n"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	// Loopback may submit without AUTH in dev mode, as the first swaks line does.
	msg := "From: clinic@demo.localhost\r\nTo: 2025550143@text.demo.localhost\r\nSubject: Lab results\r\n" +
		"Message-ID: <first@demo.localhost>\r\n\r\nYour results are ready.\r\n"
	if err := sendPlain(info.Addrs.SMTP, msg); err != nil {
		t.Fatalf("SMTP submission: %v", err)
	}
	waitForTexts(t, out, 1)
	if texts := strings.TrimPrefix(out.String(), banner); strings.Contains(texts, "results are ready") || strings.Contains(texts, "Lab results") {
		t.Fatalf("the console text shows the message's content:\n%s", texts)
	}
	// The console is the demo's phone: it names the whole number the text went to.
	if texts := strings.TrimPrefix(out.String(), banner); !strings.Contains(texts, "SMS to +12025550143 (console provider, nothing was sent):\n  Demo Clinic: You have a secure message.") {
		t.Errorf("the console text does not show the whole recipient number:\n%s", texts)
	}

	// The link opens the viewer of the same process: its page for the message, which shows
	// the clinic and the next step but not the content (that takes a password).
	link := smsLine.FindStringSubmatch(out.String())[1]
	if !strings.HasPrefix(link, info.ViewerURL+"/m/") {
		t.Fatalf("the text links to %s, not the viewer at %s", link, info.ViewerURL)
	}
	page, err := http.Get(link)
	if err != nil {
		t.Fatalf("open the link: %v", err)
	}
	html, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !bytes.Contains(html, []byte("Demo Clinic")) ||
		page.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("the link's page: %d, Cache-Control %q:\n%s", page.StatusCode, page.Header.Get("Cache-Control"), html)
	}
	if bytes.Contains(html, []byte("results are ready")) {
		t.Fatal("opening the link shows the message without a password")
	}

	// The REST API with the printed key and CA, as the curl line does.
	caPEM, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "https://"+info.Addrs.API+"/v1/messages",
		strings.NewReader(`{"to": "2025550143", "subject": "Lab results", "body": "Your results are ready."}`))
	req.Header.Set("Authorization", "Bearer "+info.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/messages: %d %s", resp.StatusCode, body)
	}
	waitForTexts(t, out, 2)

	// Metrics are served and carry no phone numbers.
	mresp, err := http.Get("http://" + info.Addrs.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !bytes.Contains(metrics, []byte(`securetext_gateway_messages_accepted_total{channel="smtp"} 1`)) ||
		!bytes.Contains(metrics, []byte(`securetext_gateway_messages_accepted_total{channel="api"} 1`)) {
		t.Errorf("metrics lack the accepted counts:\n%s", metrics)
	}
	if bytes.Contains(metrics, []byte("2025550143")) {
		t.Error("metrics contain the phone number")
	}
}

var (
	csrfField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]+)">`)
	codeText  = regexp.MustCompile(`SMS to \+12025550143 \(console provider, nothing was sent\):\n  Demo Clinic: your code is ([0-9]{6})\.`)
)

// TestDevFirstUseProvesPhoneOnConsole walks a newcomer through the first use of a link in dev
// mode with production's default, a texted one-time code: the code arrives on the console
// (dev's phone), and with it the patient chooses a password and reads the message.
func TestDevFirstUseProvesPhoneOnConsole(t *testing.T) {
	out, info := startDev(t, t.TempDir())
	msg := "From: clinic@demo.localhost\r\nTo: 2025550143@text.demo.localhost\r\nSubject: Lab results\r\n" +
		"Message-ID: <code@demo.localhost>\r\n\r\nYour results are ready.\r\n"
	if err := sendPlain(info.Addrs.SMTP, msg); err != nil {
		t.Fatalf("SMTP submission: %v", err)
	}
	waitForTexts(t, out, 1)
	link := smsLine.FindStringSubmatch(out.String())[1]

	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d\n%s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, b)
		}
		return string(b)
	}
	post := func(html string, form url.Values) string {
		t.Helper()
		m := csrfField.FindStringSubmatch(html)
		if m == nil {
			t.Fatalf("the page has no form to post:\n%s", html)
		}
		form.Set("csrf", m[1])
		return page(browser.PostForm(link, form))
	}

	html := page(browser.Get(link))
	html = post(html, url.Values{"step": {"open"}})
	if !strings.Contains(html, "Confirm it is you") {
		t.Fatalf("the first use does not ask to confirm the phone:\n%s", html)
	}
	html = post(html, url.Values{"step": {"send-code"}, "purpose": {"setup"}})
	var code string
	testenv.Eventually(t, "the one-time code on the console", func() error {
		m := codeText.FindStringSubmatch(out.String())
		if m == nil {
			return errors.New("no code yet")
		}
		code = m[1]
		return nil
	})
	const password = "quiet otters borrow seven lanterns"
	html = post(html, url.Values{"step": {"set-password"}, "code": {code}, "password": {password}, "confirm": {password}})
	if !strings.Contains(html, "Your results are ready.") {
		t.Fatalf("after the code and a password, the message is not shown:\n%s", html)
	}
}

// sendPlain submits msg without STARTTLS or AUTH, as swaks does without -tls and -a.
func sendPlain(addr, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("clinic@demo.localhost"); err != nil {
		return err
	}
	if err := c.Rcpt("2025550143@text.demo.localhost"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TestDevKeepsItsData: a restart reuses the data folder: the same credentials, and the
// messages stored before.
func TestDevKeepsItsData(t *testing.T) {
	dir := t.TempDir()
	first := func() devInfo {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		started := make(chan devInfo, 1)
		done := make(chan error, 1)
		go func() {
			done <- runDev(ctx, []string{"-data", dir, "-smtp-addr", freeAddr(t), "-api-addr", freeAddr(t), "-metrics-addr", "", "-viewer-addr", freeAddr(t)},
				io.Discard, io.Discard, func(i devInfo) { started <- i })
		}()
		var info devInfo
		select {
		case info = <-started:
		case err := <-done:
			t.Fatalf("first start: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("first run: %v", err)
		}
		return info
	}()
	_, second := startDev(t, dir)
	if second.APIKey != first.APIKey || second.SMTPPassword != first.SMTPPassword {
		t.Fatal("a restart made new demo credentials")
	}
	for _, f := range []string{"tenant.db", "local-key.json", "ca.crt", "tls.key", "demo-sender.yaml"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("data folder lacks %s: %v", f, err)
		}
		if strings.HasSuffix(f, ".key") || f == "demo-sender.yaml" || f == "local-key.json" {
			if st.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is readable by others: %v", f, st.Mode())
			}
		}
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	err := runDev(context.Background(), []string{"-data", t.TempDir(), "-smtp-addr", "0.0.0.0:2525"}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("dev on 0.0.0.0: %v, want a refusal naming loopback", err)
	}
}

func TestSenderCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"sender", "-id", "ehr", "-smtp-username", "ehr@clinic.example"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	key := regexp.MustCompile(`API key: +(stk_[a-z2-7]+)`).FindStringSubmatch(out.String())
	pass := regexp.MustCompile(`SMTP password: +([a-z2-7]+)`).FindStringSubmatch(out.String())
	if key == nil || pass == nil {
		t.Fatalf("output lacks the secrets:\n%s", out.String())
	}
	var f gateway.SendersFile
	if err := yaml.UnmarshalStrict(out.Bytes(), &f); err != nil {
		t.Fatalf("output is not a senders file: %v", err)
	}
	if strings.Contains(out.String()[strings.Index(out.String(), "senders:"):], pass[1]) {
		t.Fatal("the senders file entry holds the password in clear")
	}
	s, err := gateway.NewSenders(f.Senders)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s.APIKeyLogin(key[1]); err != nil || id != "ehr" {
		t.Fatalf("printed API key: %q, %v", id, err)
	}
	if id, err := s.SMTPLogin(context.Background(), "ehr@clinic.example", pass[1]); err != nil || id != "ehr" {
		t.Fatalf("printed SMTP password: %q, %v", id, err)
	}
	if err := run(context.Background(), []string{"sender"}, nil, io.Discard, io.Discard); err == nil {
		t.Fatal("sender without -id succeeded")
	}
}

func TestGatewayFlags(t *testing.T) {
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	_, err := parseGatewayFlags(nil, lookup, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SECURETEXT_GATEWAY_TENANT") {
		t.Fatalf("no flags: %v, want a message naming the variable", err)
	}
	for k, v := range map[string]string{
		"TENANT": "acme", "TENANT_NAME": "Acme Clinic", "TEXT_DOMAIN": "text.acme.example",
		"KEYSTORE_URL": "https://keystore:8443", "KEYSTORE_CERT": "c", "KEYSTORE_KEY": "k", "KEYSTORE_CA": "ca",
		"TLS_CERT": "t", "TLS_KEY": "tk", "SENDERS_FILE": "s", "SMS_PROVIDER": "console", "VIEWER_URL": "https://v",
		"DATABASE_URL_FILE": "/secrets/db",
	} {
		env[gatewayEnvPrefix+k] = v
	}
	f, err := parseGatewayFlags([]string{"-tenant-name", "Acme Health"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.tenant != "acme" || f.tenantName != "Acme Health" || f.smtpAddr != ":2587" || f.database.maxConns != store.DefaultMaxConnections {
		t.Fatalf("flags %+v", f)
	}
	env[gatewayEnvPrefix+"DATABASE_MAX_CONNECTIONS"] = "0"
	if _, err := parseGatewayFlags(nil, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "-database-max-connections") {
		t.Errorf("no database connections: %v, want a message naming the flag", err)
	}
	delete(env, gatewayEnvPrefix+"DATABASE_MAX_CONNECTIONS")
	if r := f.keystore.reserveConfig(); r.Size != 128 || r.Disabled {
		t.Errorf("keystore reserve %+v by default, want 128 keys", r)
	}
	f, err = parseGatewayFlags([]string{"-keystore-reserve", "0"}, lookup, io.Discard)
	if err != nil || !f.keystore.reserveConfig().Disabled {
		t.Errorf("-keystore-reserve 0: %v, want no reserve", err)
	}
	for _, n := range []string{"-1", "257"} {
		if _, err := parseGatewayFlags([]string{"-keystore-reserve", n}, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "-keystore-reserve") {
			t.Errorf("-keystore-reserve %s: %v, want a message naming the flag", n, err)
		}
	}
	if len(f.allowedCountries) != 0 {
		t.Errorf("allowed countries %q by default, want none (the NANP countries of -region US)", f.allowedCountries)
	}
	f, err = parseGatewayFlags([]string{"-allowed-countries", "US, CA"}, lookup, io.Discard)
	if err != nil || strings.Join(f.allowedCountries, ",") != "US,CA" {
		t.Errorf("-allowed-countries US, CA: %q, %v", f.allowedCountries, err)
	}
	if _, err := parseGatewayFlags([]string{"-allowed-countries", "US,USA"}, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "-allowed-countries") || !strings.Contains(err.Error(), `"USA"`) {
		t.Errorf("-allowed-countries US,USA: %v, want a message naming the flag and the code", err)
	}
	if _, err := parseTrusted("10.0.0.0/8=relay, 192.168.1.7/32=ehr"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"10.0.0.0/8", "nonsense=relay", "10.0.0.0/8="} {
		if _, err := parseTrusted(bad); err == nil {
			t.Errorf("trusted networks %q accepted", bad)
		}
	}
}
