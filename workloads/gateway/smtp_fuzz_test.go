package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// The fuzz targets of SMTP command arguments: the address of RCPT TO and the exchange of
// AUTH. Both talk to a real SMTPServer on 127.0.0.1 through go-smtp's command parser, so what
// is fuzzed is what a client can send.

// fuzzSMTP is a server for the fuzz targets, with its own store (SQLite, for the opt-out
// lookup at RCPT) and logs.
type fuzzSMTP struct {
	addr    string // plain listener; 127.0.0.1 is a trusted network
	tlsAddr string // implicit TLS listener, for AUTH
	logs    *smtpLogBuffer
}

// The one sender account of fuzzSMTP, and its password.
const (
	fuzzSMTPUser     = "ehr@clinic.example"
	fuzzSMTPPassword = "correct horse battery"
)

func newFuzzSMTP(f *testing.F) *fuzzSMTP {
	f.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(f.TempDir(), "tenant.db"), testTenant, store.WithLogger(quiet))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(st.Close)
	// A cheap hash, so that a fuzzed login costs microseconds; LoadSenders would refuse it.
	hash, err := password.HashWith(ctx, fuzzSMTPPassword, password.Params{MemoryKiB: 8, Time: 1, Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	snd := &Sender{ID: "ehr", SMTPUsername: fuzzSMTPUser, SMTPPasswordHash: hash}
	senders := &Senders{
		ids:        map[string]bool{"ehr": true, "relay": true},
		byUsername: map[string]*Sender{fuzzSMTPUser: snd},
		byKeyHash:  map[[32]byte]string{},
		dummy:      hash,
	}
	now := time.Now()
	ca, err := tenantpki.NewCA(testTenant, now)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, now, 24*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	s := &fuzzSMTP{logs: &smtpLogBuffer{}}
	// No time or connection id in the records: their digits could match a fuzzed number's.
	logger := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "smtp_conn" {
				return slog.Attr{}
			}
			return a
		},
	}))
	srv, err := NewSMTPServer(SMTPConfig{
		Domain: smtpTestDomain, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		TrustedNetworks: []TrustedNetwork{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Sender: "relay"}},
		// The budgets of failed logins would turn every fuzzed AUTH into 454 after the first few.
		AuthFailuresPerAddress: 1 << 30, AuthFailuresPerUser: 1 << 30,
		MaxConnectionsPerIP: 1000, Logger: logger,
	}, &Intake{Tenant: testTenant, Store: st}, senders)
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	s.addr, s.tlsAddr = ln.Addr().String(), tlsLn.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	go func() { _ = srv.ServeTLS(tlsLn) }()
	f.Cleanup(func() { _ = srv.Close() })
	return s
}

// smtpClient speaks raw SMTP lines and checks the form of every reply.
type smtpClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (s *fuzzSMTP) dial(t *testing.T, implicitTLS bool) *smtpClient {
	t.Helper()
	var conn net.Conn
	var err error
	if implicitTLS {
		conn, err = tls.Dial("tcp", s.tlsAddr, &tls.Config{InsecureSkipVerify: true}) // a test server's own certificate
	} else {
		conn, err = net.Dial("tcp", s.addr)
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &smtpClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { _ = conn.Close() })
	if code, _ := c.reply(); code != 220 {
		t.Fatalf("greeting %d", code)
	}
	if code, _ := c.cmd("EHLO fuzz.clinic.example"); code != 250 {
		t.Fatalf("EHLO answered %d", code)
	}
	return c
}

var smtpReplyLine = regexp.MustCompile(`^([2-5][0-9][0-9])([ -])(.*)$`)

// reply reads one reply and checks that each line is "ddd-text" or "ddd text" with the same
// code, at most 512 octets with CRLF (RFC 5321 §4.5.3.1.5), and printable UTF-8.
func (c *smtpClient) reply() (int, string) {
	c.t.Helper()
	var text []string
	code := ""
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v (after %q)", err, text)
		}
		if len(line) > 512 || !strings.HasSuffix(line, "\r\n") {
			c.t.Fatalf("reply line %q is longer than 512 octets or does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		m := smtpReplyLine.FindStringSubmatch(line)
		if m == nil || (code != "" && m[1] != code) {
			c.t.Fatalf("malformed reply line %q", line)
		}
		if !utf8.ValidString(m[3]) || strings.ContainsFunc(m[3], func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			c.t.Fatalf("reply text %q holds control characters or is not UTF-8", m[3])
		}
		code = m[1]
		text = append(text, m[3])
		if m[2] == " " {
			n, _ := strconv.Atoi(code)
			return n, strings.Join(text, "\n")
		}
	}
}

func (c *smtpClient) cmd(line string) (int, string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("write %q: %v", line, err)
	}
	return c.reply()
}

// FuzzSMTPRcpt sends any RCPT TO argument, from a trusted network so that no AUTH is needed,
// and checks that:
//   - every reply is well-formed (one SMTP reply, lines of at most 512 octets, no control
//     characters: a refusal quoting the sender's input cannot add reply lines);
//   - the reply is 250 or a permanent refusal: nothing in an address is a temporary problem;
//   - a 250 is only for an address in the text domain, and the same RCPT again is 250 too;
//   - the logs never hold a number of seven or more digits that the address held.
func FuzzSMTPRcpt(f *testing.F) {
	for _, arg := range []string{
		"TO:<2025550143@text.clinic.example>", "TO:<202.555.0143@TEXT.Clinic.Example.>",
		"TO:<1-202-555-0143@text.clinic.example> NOTIFY=NEVER", "TO:<+12025550143@text.clinic.example>",
		"TO:<2114367789@text.clinic.example>", "TO:<2025550143x12@text.clinic.example>",
		"TO:<2025550143@other.example>", "TO:<2025550143@text.clinic.example@text.clinic.example>",
		"TO:<\"2025550143\"@text.clinic.example>", "TO:<\"20255\\\"50143\"@text.clinic.example>",
		"TO:<@relay.example:2025550143@text.clinic.example>", "TO:<postmaster>", "TO:<>",
		"TO: <2025550143@text.clinic.example>", "to:<2025550143@text.clinic.example>",
		"TO:<٢٠٢٥٥٥٠١٤٣@text.clinic.example> SMTPUTF8", "TO:<2025550143@text.clinic.example> ORCPT=rfc822;x@y",
		"TO:2025550143@text.clinic.example", "TO:<" + strings.Repeat("9", 70) + "@text.clinic.example>", "",
	} {
		f.Add(arg)
	}
	s := newFuzzSMTP(f)
	f.Fuzz(func(t *testing.T, arg string) {
		if strings.ContainsAny(arg, "\r\n") || len(arg) > 900 {
			return // another command, or a line over the limit: not one argument
		}
		s.logs.mu.Lock()
		s.logs.b.Reset()
		s.logs.mu.Unlock()
		c := s.dial(t, false)
		if code, text := c.cmd("MAIL FROM:<desk@clinic.example>"); code != 250 {
			t.Fatalf("MAIL answered %d %s", code, text)
		}
		code, text := c.cmd("RCPT " + arg)
		switch {
		case code == 250:
			if !strings.Contains(strings.ToLower(arg), "@"+smtpTestDomain) {
				t.Fatalf("RCPT %s accepted outside the text domain", arg)
			}
			if again, text := c.cmd("RCPT " + arg); again != 250 {
				t.Fatalf("RCPT %s accepted once, then answered %d %s", arg, again, text)
			}
		case code < 500:
			t.Fatalf("RCPT %s answered %d %s: an address is accepted or refused for good", arg, code, text)
		}
		if code, text := c.cmd("RSET"); code != 250 {
			t.Fatalf("RSET after RCPT %s answered %d %s", arg, code, text)
		}
		c.cmd("QUIT")
		logs := s.logs.String()
		for _, number := range regexp.MustCompile(`[0-9]{7,}`).FindAllString(strings.NewReplacer(".", "", "-", "").Replace(arg), -1) {
			if strings.Contains(logs, number) {
				t.Fatalf("the logs hold the number %s of RCPT %s:\n%s", number, arg, logs)
			}
		}
	})
}

// FuzzSMTPAuth sends AUTH with any mechanism and initial response, then any responses to
// the server's challenges, over TLS, and checks that every reply is well-formed and that AUTH
// succeeds exactly when the exchange carries the account's user name and password (PLAIN
// without another authorization identity, or LOGIN), however it was split into lines.
func FuzzSMTPAuth(f *testing.F) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, seed := range [][2]string{
		{"PLAIN " + b64("\x00"+fuzzSMTPUser+"\x00"+fuzzSMTPPassword), ""},
		{"PLAIN", b64(fuzzSMTPUser + "\x00" + fuzzSMTPUser + "\x00" + fuzzSMTPPassword)},
		{"plain " + b64("admin\x00"+fuzzSMTPUser+"\x00"+fuzzSMTPPassword), ""},
		{"PLAIN " + b64("\x00"+fuzzSMTPUser+"\x00wrong"), ""},
		{"PLAIN " + b64("\x00"+fuzzSMTPUser+"\x00"+fuzzSMTPPassword+"\x00extra"), ""},
		{"LOGIN", b64(fuzzSMTPUser) + "\n" + b64(fuzzSMTPPassword)},
		{"LOGIN " + b64(fuzzSMTPUser), b64(fuzzSMTPPassword)},
		{"LOGIN =", "="},
		{"LOGIN", "*"},
		{"LOGIN", "not base64!\n" + b64(fuzzSMTPPassword)},
		{"PLAIN =", ""},
		{"CRAM-MD5", ""},
		{"XOAUTH2 " + b64("user="+fuzzSMTPUser+"\x01auth=Bearer x\x01\x01"), ""},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	s := newFuzzSMTP(f)
	f.Fuzz(func(t *testing.T, auth, responses string) {
		if strings.ContainsAny(auth, "\r\n") || len(auth) > 900 {
			return // not one AUTH command
		}
		lines := strings.Split(responses, "\n")
		for i, l := range lines {
			lines[i] = strings.TrimSuffix(l, "\r")
			if strings.ContainsRune(lines[i], '\r') || len(lines[i]) > 900 {
				return
			}
		}
		want := smtpAuthValid(auth, lines)

		c := s.dial(t, true)
		code, text := c.cmd(strings.TrimRight("AUTH "+auth, " "))
		sent := 0
		for code == 334 {
			next := "*"
			if sent < len(lines) && sent < 4 {
				next = lines[sent]
			}
			sent++
			code, text = c.cmd(next)
		}
		switch {
		case code == 235 && !want:
			t.Fatalf("AUTH %s with responses %q succeeded without the account's credentials", auth, lines[:min(sent, len(lines))])
		case code != 235 && want:
			t.Fatalf("AUTH %s with responses %q, the account's credentials, answered %d %s", auth, lines[:min(sent, len(lines))], code, text)
		}
	})
}

// smtpAuthValid reports whether an AUTH command and the responses that follow it carry the
// fuzz account's credentials, decoding them as RFC 4954 says: base64, "=" for an empty
// initial response, "*" to cancel.
func smtpAuthValid(auth string, lines []string) bool {
	decode := func(s string) ([]byte, bool) {
		if s == "=" {
			return []byte{}, true
		}
		b, err := base64.StdEncoding.DecodeString(s)
		return b, err == nil
	}
	// go-smtp reads the mechanism and the initial response, and ignores further words.
	fields := strings.Fields(auth)
	if len(fields) == 0 {
		return false
	}
	var responses [][]byte
	if len(fields) > 1 {
		ir, ok := decode(fields[1])
		if !ok {
			return false
		}
		responses = append(responses, ir)
	}
	for _, l := range lines {
		if l == "*" {
			break
		}
		b, ok := decode(l)
		if !ok {
			break
		}
		responses = append(responses, b)
	}
	passwordOK := func(p []byte) bool {
		return norm.NFKC.String(string(p)) == norm.NFKC.String(fuzzSMTPPassword)
	}
	switch strings.ToUpper(fields[0]) {
	case "PLAIN":
		// Without an initial response the server sends an empty challenge first.
		if len(responses) == 0 {
			return false
		}
		parts := strings.Split(string(responses[0]), "\x00")
		return len(parts) == 3 && (parts[0] == "" || parts[0] == parts[1]) && parts[1] == fuzzSMTPUser && passwordOK([]byte(parts[2]))
	case "LOGIN":
		return len(responses) >= 2 && string(responses[0]) == fuzzSMTPUser && passwordOK(responses[1])
	}
	return false
}
