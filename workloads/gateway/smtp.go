package gateway

// The SMTP submission server (RFC 6409 over RFC 5321): a sender's mail system relays
// <phone>@<text domain> mail here, and each recipient becomes one stored message.
//
// Replies (RFC 5321 §4.2, enhanced codes RFC 3463):
//
//	530 5.7.0  MAIL before AUTH from outside the trusted networks
//	523 5.7.10 AUTH before STARTTLS (go-smtp's reply; AUTH is not even advertised before TLS)
//	535 5.7.8  bad credentials; the connection is closed after the third on one connection
//	454 4.7.0  AUTH from an address, or for a user name, that has used its budget of failures
//	           (smtpauth.go), or that could not be checked now: try again later
//	550 5.1.1  a recipient outside the text domain (no such mailbox here)
//	553 5.1.3  a local part that is not a usable phone number: the address is well formed
//	           but the mailbox name is not allowed, and 5.1.3 ("bad destination mailbox
//	           address syntax") tells the sender to fix what they typed, where 5.1.1 would
//	           say the mailbox does not exist
//	550 5.7.1  the recipient replied STOP (policy, permanent until they reply START), or the
//	           number is in a country the tenant does not text (AllowedCountries)
//	452 4.5.3  more than MaxRecipients recipients (RFC 5321 §4.5.3.1.10: send the rest later)
//	552 5.3.4  message larger than MaxMessageBytes
//	554 5.6.0  a message that cannot be read as MIME
//	451 4.3.0  the keystore or database cannot serve now: the sender's MTA retries
//	421 4.7.0  too many connections
//	250 2.0.0  every recipient's message has committed (or was refused for good, see Data)

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/securetext/securetext/workloads/phone"
	"github.com/securetext/securetext/workloads/store"
)

// SMTPConfig configures the SMTP submission server. Zero values take the defaults shown.
type SMTPConfig struct {
	// Domain is the tenant's text domain: recipients are <phone>@Domain (compared without
	// regard to case). Required.
	Domain string
	// Hostname is the name in the greeting (default Domain).
	Hostname string
	// TLSConfig serves STARTTLS and the implicit-TLS listener (ServeTLS). Without it no one
	// can authenticate, so it may be nil only when TrustedNetworks is set. Versions below
	// TLS 1.2 are refused.
	TLSConfig *tls.Config
	// Region reads numbers without a country code (default "US"; ISO 3166).
	Region string
	// AllowedCountries are the countries (ISO 3166-1 alpha-2) whose numbers are texted;
	// empty: those sharing Region's calling code (for US, the NANP countries). See
	// phone.NewPolicy.
	AllowedCountries []string
	// MaxMessageBytes is the largest message accepted, advertised as SIZE (default 10 MiB).
	// A whole message is held in memory while it is stored.
	MaxMessageBytes int64
	// MaxRecipients is the most distinct recipients of one message (default 50).
	MaxRecipients int
	// ReadTimeout is how long the server waits for the client to send anything (default 60 s);
	// WriteTimeout bounds each reply (default 60 s).
	ReadTimeout, WriteTimeout time.Duration
	// MaxConnections bounds open connections (default 200), MaxConnectionsPerIP those from one
	// address (default 20). Over either, a client gets 421 4.7.0 and is disconnected.
	MaxConnections, MaxConnectionsPerIP int
	// AuthFailuresPerAddress failed AUTHs from one client address (an IPv4 address or an
	// IPv6 /64), across its connections, and AuthFailuresPerUser for one user name from
	// anywhere, use up a budget that drains in AuthFailureWindow; past it AUTH gets 454 4.7.0
	// until the count drains (defaults 10, 20, 15 min). An address that logged in as a user
	// name is exempt from that user name's budget. See smtpauth.go.
	AuthFailuresPerAddress, AuthFailuresPerUser int
	AuthFailureWindow                           time.Duration
	// Now reads the clock of the AUTH budgets (default time.Now).
	Now func() time.Time
	// TrustedNetworks may submit without TLS or AUTH, as the named sender, like Postfix's
	// mynetworks: for an in-cluster relay or an EHR that submits by IP.
	//
	// Risk: anyone who can connect from such an address (or spoof it on an unfiltered network)
	// sends as that sender, and the mail crosses the network unencrypted unless the client
	// chooses STARTTLS. List only single hosts or a cluster's pod network behind a
	// NetworkPolicy, never a shared or public range.
	TrustedNetworks []TrustedNetwork
	Logger          *slog.Logger // default slog.Default()
	Metrics         *Metrics     // nil: no metrics
}

// TrustedNetwork is a network whose clients submit as Sender without authenticating.
type TrustedNetwork struct {
	Prefix netip.Prefix
	Sender string // a sender id, as in the senders file
}

// Defaults of SMTPConfig.
const (
	DefaultSMTPMaxMessageBytes     = 10 << 20
	DefaultSMTPMaxRecipients       = 50
	DefaultSMTPTimeout             = 60 * time.Second
	DefaultSMTPMaxConnections      = 200
	DefaultSMTPMaxConnectionsPerIP = 20
)

const (
	// smtpMaxAuthFailures failed AUTHs close a connection.
	smtpMaxAuthFailures = 3
	// smtpLookupTimeout bounds the opt-out lookup at RCPT, smtpLoginTimeout a login (which
	// may wait for a password-hashing slot), smtpStoreTimeout storing one message for all its
	// recipients: the sender's MTA waits 10 minutes for the reply to DATA (RFC 5321
	// §4.5.3.2.6).
	smtpLookupTimeout = 15 * time.Second
	smtpLoginTimeout  = 30 * time.Second
	smtpStoreTimeout  = 2 * time.Minute
	// smtpRefuseTimeout bounds writing the 421 to a refused connection, and
	// smtpMaxRefusing how many such writes run at once; beyond that refused connections are
	// closed without a word.
	smtpRefuseTimeout = 10 * time.Second
	smtpMaxRefusing   = 32
)

// ErrSMTPServerClosed is returned by Serve and ServeTLS after Close or Shutdown.
var ErrSMTPServerClosed = errors.New("smtp server closed")

// SMTPServer is the SMTP submission server. It is safe for concurrent use.
type SMTPServer struct {
	cfg     SMTPConfig
	intake  *Intake
	senders *Senders
	log     *slog.Logger
	srv     *gosmtp.Server

	// ctx is the parent of every store and login call; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners []net.Listener
	conns     map[*smtpConn]struct{}
	perIP     map[netip.Addr]int
	refusing  chan struct{}

	numbers *phone.Policy
	auth    *smtpAuthLimiter
}

// NewSMTPServer checks cfg and returns a server that stores mail through intake and
// authenticates with senders.
func NewSMTPServer(cfg SMTPConfig, intake *Intake, senders *Senders) (*SMTPServer, error) {
	if intake == nil || senders == nil {
		return nil, errors.New("smtp server: need an intake and senders")
	}
	cfg.Domain = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(cfg.Domain)), ".")
	if cfg.Domain == "" || strings.ContainsAny(cfg.Domain, " @<>") {
		return nil, errors.New("smtp server: Domain must be the tenant's text domain, e.g. text.clinic.example")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.Domain
	}
	if cfg.Region == "" {
		cfg.Region = phone.DefaultRegion
	}
	if _, err := phone.NewPolicy(cfg.Region, nil); err != nil {
		return nil, fmt.Errorf("smtp server: Region: %w", err)
	}
	numbers, err := phone.NewPolicy(cfg.Region, cfg.AllowedCountries)
	if err != nil {
		return nil, fmt.Errorf("smtp server: AllowedCountries: %w", err)
	}
	switch {
	case cfg.MaxMessageBytes < 0, cfg.MaxRecipients < 0, cfg.ReadTimeout < 0, cfg.WriteTimeout < 0,
		cfg.MaxConnections < 0, cfg.MaxConnectionsPerIP < 0,
		cfg.AuthFailuresPerAddress < 0, cfg.AuthFailuresPerUser < 0, cfg.AuthFailureWindow < 0:
		return nil, errors.New("smtp server: limits and timeouts must not be negative")
	}
	cfg.MaxMessageBytes = smtpDefault(cfg.MaxMessageBytes, DefaultSMTPMaxMessageBytes)
	cfg.MaxRecipients = smtpDefault(cfg.MaxRecipients, DefaultSMTPMaxRecipients)
	cfg.ReadTimeout = smtpDefault(cfg.ReadTimeout, DefaultSMTPTimeout)
	cfg.WriteTimeout = smtpDefault(cfg.WriteTimeout, DefaultSMTPTimeout)
	cfg.MaxConnections = smtpDefault(cfg.MaxConnections, DefaultSMTPMaxConnections)
	cfg.MaxConnectionsPerIP = smtpDefault(cfg.MaxConnectionsPerIP, DefaultSMTPMaxConnectionsPerIP)
	cfg.AuthFailuresPerAddress = smtpDefault(cfg.AuthFailuresPerAddress, DefaultSMTPAuthFailuresPerAddress)
	cfg.AuthFailuresPerUser = smtpDefault(cfg.AuthFailuresPerUser, DefaultSMTPAuthFailuresPerUser)
	cfg.AuthFailureWindow = smtpDefault(cfg.AuthFailureWindow, DefaultSMTPAuthFailureWindow)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	trusted := make([]TrustedNetwork, 0, len(cfg.TrustedNetworks))
	for i, n := range cfg.TrustedNetworks {
		switch {
		case !n.Prefix.IsValid():
			return nil, fmt.Errorf("smtp server: TrustedNetworks[%d]: prefix is not set", i)
		case n.Prefix.Bits() == 0:
			return nil, fmt.Errorf("smtp server: TrustedNetworks[%d]: %s would trust every address; list the relay's own addresses", i, n.Prefix)
		case n.Sender == "" || strings.ContainsAny(n.Sender, " \t\r\n"):
			return nil, fmt.Errorf("smtp server: TrustedNetworks[%d]: Sender must be a sender id", i)
		case !senders.Has(n.Sender):
			return nil, fmt.Errorf("smtp server: TrustedNetworks[%d]: sender %q is not in the senders file; add it (`securetext sender -id %s`) so that its mail is attributed to a known sender", i, n.Sender, n.Sender)
		}
		trusted = append(trusted, TrustedNetwork{Prefix: n.Prefix.Masked(), Sender: n.Sender})
	}
	cfg.TrustedNetworks = trusted

	if cfg.TLSConfig == nil && len(trusted) == 0 {
		return nil, errors.New("smtp server: TLSConfig is required: without TLS no sender can authenticate")
	}
	if cfg.TLSConfig != nil {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
		cfg.TLSConfig.MinVersion = max(cfg.TLSConfig.MinVersion, tls.VersionTLS12)
	}

	s := &SMTPServer{
		cfg: cfg, intake: intake, senders: senders, log: cfg.Logger,
		conns: map[*smtpConn]struct{}{}, perIP: map[netip.Addr]int{},
		refusing: make(chan struct{}, smtpMaxRefusing),
		numbers:  numbers,
		auth:     newSMTPAuthLimiter(cfg.AuthFailuresPerAddress, cfg.AuthFailuresPerUser, cfg.AuthFailureWindow, cfg.Now),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	srv := gosmtp.NewServer(smtpBackend{s})
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLSConfig
	srv.AllowInsecureAuth = false // AUTH only after TLS: passwords never cross in the clear
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = 0 // counted by the session, where duplicates are folded
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true // ParseMail reads UTF-8 headers (RFC 6532)
	srv.ErrorLog = smtpErrorLog{cfg.Logger}
	s.srv = srv

	for _, n := range trusted {
		s.log.Warn("smtp trusted network: clients submit without authentication", "prefix", n.Prefix.String(), "sender", n.Sender)
	}
	return s, nil
}

func smtpDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Serve answers SMTP on ln with port 587 semantics: plain text until STARTTLS. It returns
// ErrSMTPServerClosed after Close or Shutdown.
func (s *SMTPServer) Serve(ln net.Listener) error {
	return s.serve(ln, nil)
}

// ServeTLS answers SMTP on ln inside TLS from the first byte (port 465, RFC 8314).
func (s *SMTPServer) ServeTLS(ln net.Listener) error {
	if s.cfg.TLSConfig == nil {
		return errors.New("smtp server: ServeTLS needs TLSConfig")
	}
	return s.serve(ln, s.cfg.TLSConfig)
}

func (s *SMTPServer) serve(ln net.Listener, tlsConfig *tls.Config) error {
	l := &smtpListener{Listener: ln, s: s, tlsConfig: tlsConfig}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrSMTPServerClosed
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()

	var served net.Listener = l
	if tlsConfig != nil {
		// TLS above the limiter, so go-smtp sees a *tls.Conn (and allows AUTH) while the
		// limiter counts the TCP connection.
		served = tls.NewListener(l, tlsConfig)
	}
	err := s.srv.Serve(served)
	if s.isClosing() {
		return ErrSMTPServerClosed
	}
	if err == nil {
		err = ErrSMTPServerClosed
	}
	return err
}

// Close closes the listeners and every connection at once, and cancels store calls in
// flight: a message whose 250 was not sent is not acknowledged, so the sender retries.
func (s *SMTPServer) Close() error {
	err := s.beginClose()
	s.cancel()
	if cerr := s.srv.Close(); cerr != nil && !errors.Is(cerr, gosmtp.ErrServerClosed) && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	s.closeConns(false)
	return err
}

// Shutdown stops accepting connections, closes idle ones, lets each transaction in progress
// finish (its connection closes after the reply), and returns when all are closed. When ctx
// ends first it closes the rest as Close does and returns ctx's error.
func (s *SMTPServer) Shutdown(ctx context.Context) error {
	err := s.beginClose()
	s.closeConns(true)
	if serr := s.srv.Shutdown(ctx); serr != nil && !errors.Is(serr, gosmtp.ErrServerClosed) && !errors.Is(serr, net.ErrClosed) {
		err = serr
	}
	if ctx.Err() != nil {
		s.cancel()
		s.closeConns(false)
		return ctx.Err()
	}
	s.cancel()
	return err
}

// beginClose refuses new connections and closes the listeners.
func (s *SMTPServer) beginClose() error {
	s.mu.Lock()
	s.closing = true
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	var err error
	for _, l := range ls {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	return err
}

func (s *SMTPServer) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// closeConns closes every connection, or with idleOnly those outside a mail transaction.
func (s *SMTPServer) closeConns(idleOnly bool) {
	s.mu.Lock()
	conns := make([]*smtpConn, 0, len(s.conns))
	for c := range s.conns {
		if !idleOnly || !c.busy.Load() {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Connection limits.

// smtpListener admits connections within the limits and refuses the others with 421.
type smtpListener struct {
	net.Listener
	s         *SMTPServer
	tlsConfig *tls.Config // implicit TLS: the refusal is written inside TLS
}

func (l *smtpListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, reason := l.s.admit(c)
		if tc != nil {
			return tc, nil
		}
		l.s.refuse(c, l.tlsConfig, reason)
	}
}

// admit counts c and returns it tracked, or returns why it is refused.
func (s *SMTPServer) admit(c net.Conn) (*smtpConn, string) {
	ip := smtpRemoteIP(c.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, "shutting-down"
	case len(s.conns) >= s.cfg.MaxConnections:
		return nil, "max-connections"
	case s.perIP[ip] >= s.cfg.MaxConnectionsPerIP:
		return nil, "max-connections-per-ip"
	}
	tc := &smtpConn{Conn: c, s: s, ip: ip, id: store.NewID()[14:], readTimeout: s.cfg.ReadTimeout}
	s.conns[tc] = struct{}{}
	s.perIP[ip]++
	return tc, ""
}

func (s *SMTPServer) release(c *smtpConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
}

// refuse answers 421 (RFC 5321 §3.8) and closes c, without holding up Accept.
func (s *SMTPServer) refuse(c net.Conn, tlsConfig *tls.Config, reason string) {
	s.log.Warn("smtp connection refused", "remote", smtpRemoteIP(c.RemoteAddr()).String(), "reply", "421 4.7.0", "reason", reason)
	s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonRateLimited)
	select {
	case s.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-s.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(smtpRefuseTimeout))
		if tlsConfig != nil {
			c = tls.Server(c, tlsConfig)
		}
		_, _ = io.WriteString(c, "421 4.7.0 Too many connections, try again later\r\n")
	}()
}

func smtpRemoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// smtpConn is an admitted TCP connection (below TLS, when there is TLS).
type smtpConn struct {
	net.Conn
	s           *SMTPServer
	ip          netip.Addr
	id          string // for logs
	readTimeout time.Duration

	// busy is set from MAIL to the end of the transaction: Shutdown does not close it then.
	busy atomic.Bool
	// closeAfterWrite closes the connection once the next reply is written (after the third
	// failed AUTH, or during shutdown).
	closeAfterWrite atomic.Bool
	authFailures    int // used by the connection's goroutine only

	closeOnce sync.Once
	closeErr  error

	held []byte // continuation lines of the reply being written (Write)
}

// Read renews the read deadline on every read, so ReadTimeout is an idle timeout: go-smtp
// sets it once per command line, which would also bound a whole DATA transfer.
func (c *smtpConn) Read(b []byte) (int, error) {
	if c.readTimeout > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.readTimeout))
	}
	return c.Conn.Read(b)
}

// Write sends b. go-smtp writes and flushes each line of a reply on its own, so an EHLO
// answer would cost a syscall (and a wake-up of the client) per extension: a continuation line
// ("250-…") is held and sent with the reply's last line, which always follows at once. TLS
// records never look like one (their first byte is 0x14–0x17), so after STARTTLS every write
// goes straight through.
func (c *smtpConn) Write(b []byte) (int, error) {
	if continuationLine(b) && len(c.held)+len(b) <= maxHeldReply {
		c.held = append(c.held, b...)
		return len(b), nil
	}
	out := b
	if len(c.held) > 0 {
		out = append(c.held, b...)
		c.held = c.held[:0]
	}
	n, err := c.Conn.Write(out)
	n = max(0, n-(len(out)-len(b)))
	if c.closeAfterWrite.Load() {
		_ = c.Close()
	}
	return n, err
}

// maxHeldReply bounds the reply lines Write holds back.
const maxHeldReply = 4 << 10

// continuationLine reports whether b is one non-final line of a multi-line SMTP reply
// (RFC 5321 §4.2.1): three digits, a hyphen, text, CRLF.
func continuationLine(b []byte) bool {
	return len(b) >= 6 && b[0] >= '2' && b[0] <= '5' && b[1] >= '0' && b[1] <= '9' && b[2] >= '0' && b[2] <= '9' &&
		b[3] == '-' && b[len(b)-2] == '\r' && b[len(b)-1] == '\n'
}

func (c *smtpConn) Close() error {
	c.closeOnce.Do(func() {
		// Released first: once the client sees the connection close, its slot is free.
		c.s.release(c)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// smtpConnOf finds the smtpConn under a go-smtp connection.
func smtpConnOf(c net.Conn) *smtpConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*smtpConn)
	return t
}

// smtpErrorLog sends go-smtp's own errors (network failures, panics) to slog.
type smtpErrorLog struct{ log *slog.Logger }

func (l smtpErrorLog) Printf(format string, v ...any) {
	l.log.Warn("smtp: " + fmt.Sprintf(format, v...))
}
func (l smtpErrorLog) Println(v ...any) { l.log.Warn("smtp: " + fmt.Sprint(v...)) }

// Sessions.

type smtpBackend struct{ s *SMTPServer }

// NewSession starts a session at EHLO/HELO (again after STARTTLS, on the TLS connection).
func (b smtpBackend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	tc := smtpConnOf(c.Conn())
	if tc == nil {
		return nil, &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Internal error"}
	}
	_, isTLS := c.TLSConnectionState()
	sess := &smtpSession{s: b.s, tc: tc, tls: isTLS, log: b.s.log.With("smtp_conn", tc.id)}
	for _, n := range b.s.cfg.TrustedNetworks {
		if n.Prefix.Contains(tc.ip) {
			sess.sender, sess.trusted = n.Sender, true
			break
		}
	}
	return sess, nil
}

// smtpSession is one client's session: go-smtp calls it from the connection's goroutine only.
type smtpSession struct {
	s       *SMTPServer
	tc      *smtpConn
	log     *slog.Logger
	tls     bool
	trusted bool   // connected from a trusted network
	authed  bool   // AUTH succeeded
	sender  string // the sender id from AUTH, else from the trusted network

	rcpts []string // this transaction's recipients, E.164, distinct, in order
}

var _ gosmtp.AuthSession = (*smtpSession)(nil)

func smtpReply(code int, enhanced gosmtp.EnhancedCode, format string, args ...any) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: fmt.Sprintf(format, args...)}
}

func smtpReplyCode(e *gosmtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2])
}

// AuthMechanisms is consulted only on a TLS connection: go-smtp neither advertises nor allows
// AUTH before TLS (AllowInsecureAuth is false).
func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				// Acting for another identity (RFC 4616 authzid) is not supported.
				return ss.loginFailed("authzid", ss.reply535())
			}
			return ss.login(username, password)
		}), nil
	case sasl.Login:
		return &saslLoginServer{authenticate: ss.login}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// login checks the address's and the user name's budgets, waits for the address's
// verification slot, checks them again (other connections of the address may have failed
// meanwhile) and verifies the password.
func (ss *smtpSession) login(username, password string) error {
	ctx, cancel := context.WithTimeout(ss.s.ctx, smtpLoginTimeout)
	defer cancel()
	limits, client := ss.s.auth, smtpClientNetwork(ss.tc.ip)
	if r := limits.check(client, username); r != nil {
		return ss.loginLimited(r)
	}
	release, err := limits.slot(ctx, client)
	if err != nil {
		ss.log.Warn("smtp login deferred", "remote", ss.tc.ip.String(), "reply", "454 4.7.0", "err", err)
		return smtpReply(454, gosmtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure; try again later")
	}
	defer release()
	if r := limits.check(client, username); r != nil {
		return ss.loginLimited(r)
	}
	id, err := ss.s.senders.SMTPLogin(ctx, username, password)
	switch {
	case err == nil:
		limits.succeeded(client, username)
		ss.sender, ss.authed = id, true
		ss.log.Info("smtp login", "sender", id)
		return nil
	case errors.Is(err, ErrBadCredentials):
		limits.failed(client, username)
		return ss.loginFailed("bad-credentials", ss.reply535())
	default:
		ss.log.Error("smtp login failed", "err", err)
		return smtpReply(454, gosmtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure; try again later")
	}
}

func (ss *smtpSession) reply535() *gosmtp.SMTPError {
	return smtpReply(535, gosmtp.EnhancedCode{5, 7, 8}, "Authentication credentials invalid")
}

// loginLimited refuses an AUTH over its address's or user name's budget with 454 4.7.0: a
// temporary failure (RFC 4954 §6), so that a sender's MTA retries once the count has drained.
// It counts against the connection like a failure.
func (ss *smtpSession) loginLimited(r *smtpAuthRefusal) error {
	ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonRateLimited)
	who, why := "from your address", "address-over-budget"
	if r.user {
		who, why = "for this user name", "user-over-budget"
	}
	return ss.loginFailed(why, smtpReply(454, gosmtp.EnhancedCode{4, 7, 0},
		"Too many failed logins %s; try again %s", who, smtpRetryText(r.retryAfter)))
}

// loginFailed counts a failed AUTH against the connection and answers reply; the last allowed
// one closes the connection after its reply. The username is not logged: people type
// passwords into it.
func (ss *smtpSession) loginFailed(why string, reply *gosmtp.SMTPError) error {
	ss.tc.authFailures++
	if reply.Code == 535 {
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonUnauthenticated)
	}
	if ss.tc.authFailures >= smtpMaxAuthFailures {
		reply.Message += "; too many failures, closing the connection"
		ss.tc.closeAfterWrite.Store(true)
	}
	ss.log.Warn("smtp login refused", "remote", ss.tc.ip.String(), "reply", smtpReplyCode(reply), "reason", why, "failures", ss.tc.authFailures)
	return reply
}

func (ss *smtpSession) Mail(_ string, _ *gosmtp.MailOptions) error {
	if ss.s.isClosing() {
		ss.tc.closeAfterWrite.Store(true)
		return smtpReply(421, gosmtp.EnhancedCode{4, 3, 2}, "Server shutting down, try again later")
	}
	if !ss.authed && !ss.trusted {
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonUnauthenticated)
		reply := smtpReply(530, gosmtp.EnhancedCode{5, 7, 0}, "Authentication required: use AUTH PLAIN or LOGIN with your SMTP credentials")
		if !ss.tls {
			reply.Message = "Authentication required: use STARTTLS, then AUTH PLAIN or LOGIN with your SMTP credentials"
		}
		ss.log.Info("smtp mail refused", "reply", smtpReplyCode(reply), "reason", ReasonUnauthenticated)
		return reply
	}
	ss.tc.busy.Store(true)
	ss.rcpts = ss.rcpts[:0]
	return nil
}

// Rcpt checks a recipient now, so that a sender learns of a wrong domain, an unusable number
// or an opt-out from its own MTA instead of from a bounce.
func (ss *smtpSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	// RFC 5321 addresses hold no control characters; the library's 250 quotes the address back,
	// so one would reach the reply (and a lenient number parser would skip it).
	if strings.ContainsFunc(to, unicode.IsControl) {
		return ss.refuseRcpt(ReasonInvalidRecipient, "", smtpReply(553, gosmtp.EnhancedCode{5, 1, 3},
			"The address holds a control character; send to <phone number>@%s, e.g. 2025550143@%s", ss.s.cfg.Domain, ss.s.cfg.Domain))
	}
	local, domain, ok := smtpCutLast(to, "@")
	if !ok || !strings.EqualFold(strings.TrimSuffix(domain, "."), ss.s.cfg.Domain) {
		return ss.refuseRcpt(ReasonWrongDomain, "",
			smtpReply(550, gosmtp.EnhancedCode{5, 1, 1}, "This server accepts only <phone number>@%s, e.g. 2025550143@%s", ss.s.cfg.Domain, ss.s.cfg.Domain))
	}
	e164, err := ss.s.numbers.Normalize(local)
	var invalid *phone.InvalidError
	switch {
	case errors.As(err, &invalid) && invalid.Code == phone.CodeCountry:
		// A well-formed number the tenant does not text: a policy refusal, not a typing error.
		return ss.refuseRcpt(ReasonInvalidRecipient, invalid.Code, smtpReply(550, gosmtp.EnhancedCode{5, 7, 1}, "%s", invalid.Message()))
	case errors.As(err, &invalid):
		// The reply quotes the sender's own input back to them; the log gets only the code.
		return ss.refuseRcpt(ReasonInvalidRecipient, invalid.Code, smtpReply(553, gosmtp.EnhancedCode{5, 1, 3}, "%s", invalid.Message()))
	case err != nil:
		ss.log.Error("smtp rcpt: read phone number", "err", err)
		return smtpReply(451, gosmtp.EnhancedCode{4, 3, 0}, "Temporary local problem; try again later")
	}
	for _, r := range ss.rcpts {
		if r == e164 {
			return nil // a repeated recipient gets one message
		}
	}
	if len(ss.rcpts) >= ss.s.cfg.MaxRecipients {
		reply := smtpReply(452, gosmtp.EnhancedCode{4, 5, 3}, "Too many recipients: at most %d per message; send the rest in another message", ss.s.cfg.MaxRecipients)
		ss.log.Info("smtp rcpt deferred", "reply", smtpReplyCode(reply), "reason", "too-many-recipients")
		return reply
	}

	ctx, cancel := context.WithTimeout(ss.s.ctx, smtpLookupTimeout)
	defer cancel()
	optedOut, err := ss.s.intake.Store.OptedOut(ctx, e164)
	switch {
	case err != nil:
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonUnavailable)
		reply := smtpReply(451, gosmtp.EnhancedCode{4, 3, 0}, "Temporarily unable to check the recipient; try again later")
		ss.log.Warn("smtp rcpt deferred", "reply", smtpReplyCode(reply), "reason", ReasonUnavailable, "err", err)
		return reply
	case optedOut:
		return ss.refuseRcpt(ReasonOptedOut, "", smtpReply(550, gosmtp.EnhancedCode{5, 7, 1},
			"recipient has opted out of text messages (replied STOP); they must reply START to receive messages again"))
	}
	ss.rcpts = append(ss.rcpts, e164)
	return nil
}

func (ss *smtpSession) refuseRcpt(reason, phoneCode string, reply *gosmtp.SMTPError) error {
	ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, reason)
	args := []any{"reply", smtpReplyCode(reply), "reason", reason}
	if phoneCode != "" {
		args = append(args, "phone_code", phoneCode)
	}
	ss.log.Info("smtp rcpt refused", args...)
	return reply
}

func smtpCutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// Data reads the message, parses it, and stores one message per recipient. The reply is 250
// only after every recipient's Accept has returned: nil (committed) or a permanent refusal.
//
// A temporary failure for any recipient answers 451 4.3.0: the sender's MTA retries the whole
// message, and the recipients already stored are replayed, not stored twice, when the message
// has a Message-ID (the idempotency key). Without a Message-ID there is no key, and such a
// retry stores those recipients again; MTAs and mail programs add a Message-ID, so this is
// rare.
//
// A permanent refusal for some recipients (one opted out between RCPT and DATA) while others
// were stored cannot be told apart in one SMTP reply (only LMTP has per-recipient replies):
// refusing the message would make the sender's retry or bounce handling confusing for the
// stored ones, so the reply is 250 naming the refused count and their reason codes, and the
// refusals are logged and counted. If no recipient was stored the reply is the refusal.
func (ss *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return ss.dataReadError(err)
	}
	if len(ss.rcpts) == 0 { // go-smtp asks for RCPT first; kept for safety
		return smtpReply(503, gosmtp.EnhancedCode{5, 5, 1}, "No valid recipients")
	}
	msg, messageID, err := ParseMail(bytes.NewReader(raw))
	if err == nil && msg.Text == "" && len(msg.Attachments) == 0 {
		err = Refused(ReasonInvalid, "", "the message has no text and no attachments")
	}
	if err != nil {
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, Reason(err))
		reply := smtpReply(554, gosmtp.EnhancedCode{5, 6, 0}, "%s", err.Error())
		ss.log.Info("smtp message refused", "reply", smtpReplyCode(reply), "reason", Reason(err))
		return reply
	}

	ctx, cancel := context.WithTimeout(ss.s.ctx, smtpStoreTimeout)
	defer cancel()
	var (
		stored  []string
		refused []error
	)
	for _, to := range ss.rcpts {
		sub := Submission{Sender: ss.sender, Channel: store.ChannelSMTP, To: to, Content: msg}
		if messageID != "" {
			sub.IdempotencyKey, sub.RequestHash = smtpIdempotency(messageID, to, raw)
		}
		start := time.Now()
		acc, err := ss.s.intake.Accept(ctx, sub)
		if !acc.Replayed { // a replay was counted when it was first stored
			ss.s.cfg.Metrics.Observe(store.ChannelSMTP, start, err)
		}
		var refusal *RefusedError
		switch {
		case err == nil:
			stored = append(stored, acc.MessageID)
			ss.log.Info("smtp message stored", "message_id", acc.MessageID, "sender", ss.sender, "replayed", acc.Replayed)
		case errors.As(err, &refusal):
			refused = append(refused, err)
			ss.log.Info("smtp recipient refused at data", "reason", refusal.Reason, "sender", ss.sender)
		default:
			// Temporary, or unexpected: neither is the sender's fault, and a retry is safe.
			reply := smtpReply(451, gosmtp.EnhancedCode{4, 3, 0}, "Temporarily unable to store the message; try again later")
			level := slog.LevelWarn
			if !Temporary(err) {
				level = slog.LevelError
			}
			ss.log.Log(ctx, level, "smtp message deferred", "reply", smtpReplyCode(reply), "reason", Reason(err),
				"stored_before", strings.Join(stored, ","), "err", err)
			return reply
		}
	}
	if len(stored) == 0 {
		reply := smtpDataRefusal(refused[0])
		ss.log.Info("smtp message refused", "reply", smtpReplyCode(reply), "reason", Reason(refused[0]))
		return reply
	}
	// A 250 with its own text: go-smtp writes an *SMTPError's code and message whatever the
	// code, and the sender's logs then show which messages were stored ("queued as").
	text := "OK: queued as " + strings.Join(stored, " ")
	if len(text) > 400 { // RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets
		text = fmt.Sprintf("OK: queued %d messages", len(stored))
	}
	if len(refused) > 0 {
		codes := make([]string, 0, len(refused))
		for _, e := range refused {
			codes = append(codes, Reason(e))
		}
		text += fmt.Sprintf("; %d recipient(s) refused (%s)", len(refused), strings.Join(codes, ", "))
	}
	return smtpReply(250, gosmtp.EnhancedCode{2, 0, 0}, "%s", text)
}

// dataReadError answers a DATA that could not be read whole.
func (ss *smtpSession) dataReadError(err error) error {
	var reply *gosmtp.SMTPError
	switch {
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		reply = smtpReply(552, gosmtp.EnhancedCode{5, 3, 4}, "Message too large: the limit is %s; send fewer or smaller attachments", smtpByteSize(ss.s.cfg.MaxMessageBytes))
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonTooLarge)
		ss.log.Info("smtp message refused", "reply", smtpReplyCode(reply), "reason", ReasonTooLarge)
	case errors.Is(err, gosmtp.ErrTooLongLine):
		reply = smtpReply(554, gosmtp.EnhancedCode{5, 6, 0}, "Malformed message: a line is too long (RFC 5322 allows 998 characters)")
		ss.s.cfg.Metrics.Refuse(store.ChannelSMTP, ReasonInvalid)
		ss.log.Info("smtp message refused", "reply", smtpReplyCode(reply), "reason", ReasonInvalid)
	default:
		// The client went away, timed out or reset a BDAT transfer: nothing was stored, and it
		// will most likely not read this.
		reply = smtpReply(451, gosmtp.EnhancedCode{4, 3, 0}, "Message not received whole; try again")
		ss.log.Info("smtp message not received whole", "reply", smtpReplyCode(reply), "err", err)
	}
	return reply
}

// smtpDataRefusal is the reply to a message every recipient of which was refused.
func smtpDataRefusal(err error) *gosmtp.SMTPError {
	switch Reason(err) {
	case ReasonOptedOut:
		return smtpReply(550, gosmtp.EnhancedCode{5, 7, 1}, "recipient has opted out of text messages (replied STOP); they must reply START to receive messages again")
	case ReasonIdempotencyConflict:
		return smtpReply(554, gosmtp.EnhancedCode{5, 7, 1}, "This Message-ID was already used for a different message to this recipient; give each new message its own Message-ID")
	case ReasonInvalid:
		return smtpReply(554, gosmtp.EnhancedCode{5, 6, 0}, "%s", err.Error())
	}
	return smtpReply(554, gosmtp.EnhancedCode{5, 7, 1}, "%s", err.Error())
}

// smtpIdempotency returns the idempotency key and request hash of a message to one
// recipient. The key hashes the Message-ID with the recipient, so that the stored key holds
// no phone number; the store scopes it to the sender. The request hash covers the exact DATA
// bytes, so only a true retry replays, and a new message reusing a Message-ID is refused.
func smtpIdempotency(messageID, to string, raw []byte) (key string, requestHash [32]byte) {
	k := sha256.Sum256([]byte(messageID + "\x00" + to))
	h := sha256.New()
	h.Write(raw)
	h.Write([]byte{0})
	h.Write([]byte(to))
	h.Sum(requestHash[:0])
	return hex.EncodeToString(k[:]), requestHash
}

func smtpByteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Reset ends a transaction (after DATA, RSET or a new EHLO). During shutdown the connection
// closes here, once its transaction is answered.
func (ss *smtpSession) Reset() {
	ss.rcpts = ss.rcpts[:0]
	ss.tc.busy.Store(false)
	if ss.s.isClosing() {
		_ = ss.tc.Close()
	}
}

func (ss *smtpSession) Logout() error {
	ss.tc.busy.Store(false)
	return nil
}

// saslLoginServer is the server side of the LOGIN mechanism (draft-murchison-sasl-login),
// which go-sasl no longer provides: "Username:" and "Password:" challenges, and a username
// given as the initial response skips the first.
type saslLoginServer struct {
	step         int
	username     string
	authenticate func(username, password string) error
}

func (a *saslLoginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch a.step {
	case 0:
		if response == nil {
			a.step = 1
			return []byte("Username:"), false, nil
		}
		a.username, a.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		a.username, a.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		a.step = 3
		return nil, true, a.authenticate(a.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
