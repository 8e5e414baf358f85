package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/smtp"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securetext/securetext/workloads/tenantpki"
)

// console reads what the console SMS provider prints (the gateway's texts with links, the
// viewer's one-time codes) and hands each text to the patient it is for. The provider masks
// numbers to their last two digits (phone.Mask), which tell the demo's patients apart: their
// numbers are 202-555-01xx.
type console struct {
	mu       sync.Mutex
	partial  []byte
	pending  string // the masked number of a text whose body is the next line
	patients map[string]*patient
}

var (
	smsHeader = regexp.MustCompile(`^SMS to (\+[0-9*]+) \(console provider`)
	smsLink   = regexp.MustCompile(`(http://[0-9.:]+/m/[a-z2-7]{26})`)
	smsCode   = regexp.MustCompile(`your code is ([0-9]{6})`)
)

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := string(c.partial[:i])
		c.partial = c.partial[i+1:]
		c.line(line)
	}
	return len(p), nil
}

func (c *console) line(line string) {
	if m := smsHeader.FindStringSubmatch(line); m != nil {
		c.pending = m[1]
		return
	}
	if c.pending == "" || !strings.HasPrefix(line, "  ") {
		return
	}
	masked := c.pending
	c.pending = ""
	pt := c.patients[masked[max(0, len(masked)-2):]]
	if pt == nil {
		return
	}
	if m := smsLink.FindStringSubmatch(line); m != nil {
		select {
		case pt.links <- m[1]:
		default: // the patient is far behind: this text stays unread
		}
	}
	if m := smsCode.FindStringSubmatch(line); m != nil {
		select {
		case pt.codes <- m[1]:
		default:
		}
	}
}

// patient is one demo recipient: a fictional number, the address their phone browses from,
// and the browser on it.
type patient struct {
	number   string // ten digits, as senders address mail to <number>@text-domain
	addr     string // their client address, named in X-Forwarded-For
	password string
	links    chan string
	codes    chan string

	mu       sync.Mutex
	device   []*http.Cookie // the phone browser's device cookie, kept across visits
	lastLink string
}

// driver submits messages as the clinic's sender and opens them as the patients, counting
// what happened.
type driver struct {
	addrs    listenAddrs
	snd      senderCredentials
	roots    *x509.CertPool
	patients []*patient
	caFile   string
	foreign  tls.Certificate // a client certificate from another CA, refused by the keystore
	logf     func(format string, args ...any)

	counts sync.Map // what → *atomic.Int64
}

func (d *driver) count(what string) {
	v, _ := d.counts.LoadOrStore(what, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// summary is the counts, sorted.
func (d *driver) summary() string {
	var lines []string
	d.counts.Range(func(k, v any) bool {
		lines = append(lines, fmt.Sprintf("  %-34s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	sortStrings(lines)
	return strings.Join(lines, "\n")
}

func newDriver(a listenAddrs, snd senderCredentials, pk *pki, logf func(string, ...any)) (*driver, *console, error) {
	other, err := tenantpki.NewCA("intruder", time.Now())
	if err != nil {
		return nil, nil, err
	}
	foreign, err := other.IssueClient(workloadTenant, tenantpki.ComponentViewer, time.Now(), time.Hour)
	if err != nil {
		return nil, nil, err
	}
	d := &driver{addrs: a, snd: snd, roots: pk.ca.CertPool(), caFile: pk.caFile, foreign: foreign, logf: logf}
	con := &console{patients: map[string]*patient{}}
	passwords := []string{"quiet otters borrow seven lanterns", "copper kettles hum beside the river",
		"eleven paper boats drift toward spring", "the orchard keeps a patient blue door"}
	// 202-555-0140 … 0151: numbers reserved for fiction.
	for i := 0; i < 12; i++ {
		p := &patient{
			number:   fmt.Sprintf("20255501%02d", 40+i),
			addr:     fmt.Sprintf("203.0.113.%d", 10+i), // TEST-NET-3 (RFC 5737)
			password: passwords[i%len(passwords)] + fmt.Sprintf(" %d", i),
			links:    make(chan string, 64),
			codes:    make(chan string, 8),
		}
		d.patients = append(d.patients, p)
		con.patients[p.number[len(p.number)-2:]] = p
	}
	return d, con, nil
}

var subjects = []string{"Lab results", "Appointment reminder", "Visit summary", "Referral letter", "Billing statement"}
var bodies = []string{
	"Your results are ready. Please call us if you have questions.",
	"This is a reminder of your appointment next week.",
	"Here is the summary of your recent visit.",
	"Your referral has been sent; the details are attached in this message.",
}

// run drives load until ctx ends: the clinic's sender submits messages by SMTP and the REST
// API (some of them refused), patients open them in the viewer, and now and then someone
// guesses passwords or presents a certificate the keystore does not trust.
func (d *driver) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range d.patients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.patientLoop(ctx, p)
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		d.guesserLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		d.keystoreProbeLoop(ctx)
	}()

	n := 0
	for ctx.Err() == nil {
		n++
		// A busier minute every so often: a batch of results released at once.
		burst := 1
		if n%40 == 0 {
			burst = 12
		}
		var sends sync.WaitGroup
		for range burst {
			sends.Add(1)
			go func() {
				defer sends.Done()
				d.submitOne(ctx, n)
			}()
		}
		sends.Wait()
		sleep(ctx, time.Duration(600+rand.IntN(1200))*time.Millisecond)
	}
	wg.Wait()
}

// submitOne sends one message to a random patient, alternating SMTP and the API; about one
// in ten is refused (a number that cannot be texted, or the wrong mail domain).
func (d *driver) submitOne(ctx context.Context, n int) {
	p := d.patients[rand.IntN(len(d.patients))]
	to := p.number
	domain := textDomain
	refuse := rand.IntN(10) == 0
	channel := "smtp"
	if rand.IntN(2) == 0 {
		channel = "api"
	}
	if refuse {
		kinds := 2 // the API has no mail domain to get wrong
		if channel == "smtp" {
			kinds = 3
		}
		switch rand.IntN(kinds) {
		case 0:
			to = "2025550" // too short to be a number
		case 1:
			to = "2021234567" // 202-123-…: an exchange cannot start with 1
		default:
			domain = "elsewhere.example"
		}
	}
	subject, body := subjects[rand.IntN(len(subjects))], bodies[rand.IntN(len(bodies))]
	var err error
	if channel == "api" {
		err = d.submitAPI(ctx, to, subject, body)
	} else {
		err = d.submitSMTP(to+"@"+domain, subject, body, n)
	}
	switch {
	case err == nil && refuse:
		d.count("submit " + channel + " accepted (unexpectedly)")
	case err == nil:
		d.count("submit " + channel + " accepted")
	case refuse:
		d.count("submit " + channel + " refused (bad recipient)")
	default:
		d.count("submit " + channel + " failed")
		d.logf("submit by %s: %v", channel, err)
	}
}

func (d *driver) submitSMTP(rcpt, subject, body string, n int) error {
	c, err := smtp.Dial(d.addrs.smtp)
	if err != nil {
		return err
	}
	defer c.Close()
	host, _ := hostPort(d.addrs.smtp)
	if err := c.StartTLS(&tls.Config{RootCAs: d.roots, ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	if err := c.Auth(smtp.PlainAuth("", d.snd.smtpUser, d.snd.smtpPassword, host)); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	if err := c.Mail(d.snd.smtpUser); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d-%d@clinic.demo.example>\r\n\r\n%s\r\n",
		d.snd.smtpUser, rcpt, subject, time.Now().Format(time.RFC1123Z), n, rand.Int64(), body)
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func (d *driver) submitAPI(ctx context.Context, to, subject, body string) error {
	b, _ := json.Marshal(map[string]string{"to": to, "subject": subject, "body": body})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+d.addrs.api+"/v1/messages", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.snd.apiKey)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.roots, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /v1/messages: %d %s", resp.StatusCode, bytes.TrimSpace(out))
	}
	return nil
}

// patientLoop opens each text's link a little while after it arrives.
func (d *driver) patientLoop(ctx context.Context, p *patient) {
	for {
		select {
		case <-ctx.Done():
			return
		case link := <-p.links:
			sleep(ctx, time.Duration(1+rand.IntN(12))*time.Second)
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.lastLink = link
			p.mu.Unlock()
			if err := d.visit(ctx, p, link); err != nil && ctx.Err() == nil {
				d.count("visit error")
				d.logf("patient …%s: %v", p.number[len(p.number)-2:], err)
			}
		}
	}
}

var csrfField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]+)">`)

// browser is one visit's browser: a cookie jar holding the phone's device cookie from earlier
// visits (the browser was closed in between, so no session survives) and the patient's
// address in X-Forwarded-For, as the ingress controller in front of the viewer would send it.
type browser struct {
	c       *http.Client
	link    string
	html    string
	trusted bool // it holds the device cookie of a browser the patient signed in from
}

func (d *driver) newBrowser(p *patient, link string, fresh bool) (*browser, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(link)
	trusted := false
	if !fresh {
		p.mu.Lock()
		jar.SetCookies(u, p.device)
		trusted = len(p.device) > 0
		p.mu.Unlock()
	}
	return &browser{link: link, trusted: trusted, c: &http.Client{Jar: jar, Timeout: 60 * time.Second, Transport: forwardedFor{addr: p.addr}}}, nil
}

// keepDevice remembers the browser's device cookie for the patient's next visit.
func (b *browser) keepDevice(p *patient) {
	u, _ := url.Parse(b.link)
	var keep []*http.Cookie
	for _, c := range b.c.Jar.Cookies(u) {
		if strings.Contains(c.Name, "device") {
			keep = append(keep, c)
		}
	}
	p.mu.Lock()
	p.device = keep
	p.mu.Unlock()
}

type forwardedFor struct{ addr string }

func (f forwardedFor) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.addr)
	return http.DefaultTransport.RoundTrip(r)
}

func (b *browser) get(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.link, nil)
	if err != nil {
		return err
	}
	return b.do(req)
}

// post submits the page's form with fields and the page's CSRF token.
func (b *browser) post(ctx context.Context, fields url.Values) error {
	m := csrfField.FindStringSubmatch(b.html)
	if m == nil {
		return fmt.Errorf("the page has no form to post (step %s)", fields.Get("step"))
	}
	fields.Set("csrf", m[1])
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.link, strings.NewReader(fields.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) do(req *http.Request) error {
	resp, err := b.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	b.html = string(body)
	if err == nil && resp.StatusCode >= 500 {
		err = fmt.Errorf("%s: %d", req.Method, resp.StatusCode)
	}
	return err
}

// Pages of the viewer, by what is on them.
func (b *browser) asksToConfirmPhone() bool {
	return strings.Contains(b.html, `name="purpose" value="setup"`)
}
func (b *browser) asksForPassword() bool {
	return strings.Contains(b.html, `name="step" value="login"`)
}
func (b *browser) asksForCode() bool {
	return strings.Contains(b.html, `name="step" value="set-password"`) || strings.Contains(b.html, `name="step" value="reset"`)
}
func (b *browser) showsMessage() bool {
	for _, body := range bodies {
		if strings.Contains(b.html, body) {
			return true
		}
	}
	return false
}

// visit opens a link as the patient: on first use the phone is confirmed with a texted code
// and a password chosen; later, the password is entered (sometimes mistyped first, sometimes
// forgotten and reset with a texted code).
func (d *driver) visit(ctx context.Context, p *patient, link string) error {
	b, err := d.newBrowser(p, link, false)
	if err != nil {
		return err
	}
	if err := b.get(ctx); err != nil {
		return err
	}
	if err := b.post(ctx, url.Values{"step": {"open"}}); err != nil {
		return err
	}
	switch {
	case b.showsMessage():
		d.count("visit: shown at once")
	case b.asksToConfirmPhone():
		if err := d.withCode(ctx, p, b, "setup", "set-password"); err != nil {
			return err
		}
	case b.asksForPassword():
		r := rand.IntN(100)
		if r < 8 {
			if err := d.withCode(ctx, p, b, "reset", "reset"); err != nil {
				return err
			}
			break
		}
		if r < 30 && b.trusted {
			if err := b.post(ctx, url.Values{"step": {"login"}, "password": {"not my password at all"}}); err != nil {
				return err
			}
			d.count("sign-in: wrong password")
			if !b.asksForPassword() {
				d.count("visit: paused after a wrong password")
				return nil
			}
		}
		if err := b.post(ctx, url.Values{"step": {"login"}, "password": {p.password}}); err != nil {
			return err
		}
		d.count("sign-in: password")
	default:
		d.count("visit: other page")
		return nil
	}
	if !b.showsMessage() {
		d.count("visit: message not shown")
		return nil
	}
	d.count("visit: message read")
	b.keepDevice(p)
	return nil
}

// withCode asks for a code texted for purpose, waits for it on the console and posts step
// with it and the password (choosing a new one for a reset).
func (d *driver) withCode(ctx context.Context, p *patient, b *browser, purpose, step string) error {
	for len(p.codes) > 0 { // codes of an earlier, abandoned visit
		<-p.codes
	}
	if err := b.post(ctx, url.Values{"step": {"send-code"}, "purpose": {purpose}}); err != nil {
		return err
	}
	if !b.asksForCode() {
		d.count("code " + purpose + ": not sent")
		return nil
	}
	var code string
	select {
	case code = <-p.codes:
	case <-time.After(30 * time.Second):
		return errors.New("no one-time code arrived on the console")
	case <-ctx.Done():
		return ctx.Err()
	}
	sleep(ctx, time.Duration(2+rand.IntN(5))*time.Second) // typing it in
	if purpose == "reset" {
		p.password = strings.Fields(p.password)[0] + " remembered anew " + code[:2] + " times over"
	}
	if err := b.post(ctx, url.Values{"step": {step}, "code": {code}, "password": {p.password}, "confirm": {p.password}}); err != nil {
		return err
	}
	d.count("code " + purpose + ": used")
	return nil
}

// guesserLoop now and then tries passwords on someone's link from an address of its own,
// until the viewer pauses that client (a lockout) or it gives up.
func (d *driver) guesserLoop(ctx context.Context) {
	attack := 0
	for {
		sleep(ctx, 50*time.Second)
		if ctx.Err() != nil || attack >= 4 {
			return
		}
		p := d.patients[(attack*5+3)%len(d.patients)] // a different patient each time
		p.mu.Lock()
		link := p.lastLink
		p.mu.Unlock()
		if link == "" {
			continue
		}
		attack++
		guesser := &patient{addr: fmt.Sprintf("198.51.100.%d", 20+attack)} // TEST-NET-2 (RFC 5737)
		b, err := d.newBrowser(guesser, link, true)
		if err != nil {
			continue
		}
		if b.get(ctx) != nil || b.post(ctx, url.Values{"step": {"open"}}) != nil || !b.asksForPassword() {
			continue
		}
		for i := 0; i < 12 && ctx.Err() == nil; i++ {
			if err := b.post(ctx, url.Values{"step": {"login"}, "password": {fmt.Sprintf("guess number %d of many", i)}}); err != nil {
				break
			}
			d.count("guesser: attempt")
			if !b.asksForPassword() {
				d.count("guesser: paused")
				break
			}
		}
	}
}

// keystoreProbeLoop calls the keystore every half minute with a certificate from another CA,
// as a misconfigured or foreign client would; the keystore refuses it at the handshake.
func (d *driver) keystoreProbeLoop(ctx context.Context) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: d.roots, Certificates: []tls.Certificate{d.foreign}, MinVersion: tls.VersionTLS12,
	}}}
	for {
		sleep(ctx, 30*time.Second)
		if ctx.Err() != nil {
			return
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+d.addrs.keystore+"/v1/health", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			d.count(fmt.Sprintf("keystore probe: answered %d", resp.StatusCode))
		} else {
			d.count("keystore probe: refused")
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
