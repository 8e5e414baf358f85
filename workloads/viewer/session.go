package viewer

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/token"
)

// Cookies. Over HTTPS both carry the __Host- prefix, so the browser takes them only from this
// exact host, over a secure connection, for path /, without Domain: a sibling subdomain
// cannot plant or overwrite them. Both are HttpOnly and SameSite=Strict. Only the loopback
// development listener (plain HTTP, see Run) uses unprefixed names without Secure, because a
// browser refuses Secure cookies over plain HTTP.
const (
	sessionCookie    = "__Host-session"
	csrfCookie       = "__Host-csrf"
	deviceCookie     = "__Host-device"
	devSessionCookie = "securetext-session"
	devCSRFCookie    = "securetext-csrf"
	devDeviceCookie  = "securetext-device"
)

// tokenShape is what token.New makes: 26 characters of lowercase base32.
var tokenShape = regexp.MustCompile(`^[a-z2-7]{26}$`)

type plainLoopbackKey struct{}

// plainLoopback reports whether r came in on the loopback development listener.
func plainLoopback(r *http.Request) bool {
	v, _ := r.Context().Value(plainLoopbackKey{}).(bool)
	return v && r.TLS == nil
}

func cookieNames(r *http.Request) (session, csrf string) {
	if plainLoopback(r) {
		return devSessionCookie, devCSRFCookie
	}
	return sessionCookie, csrfCookie
}

// deviceCookieName is the cookie of the browser's device token: a random token that names
// nothing by itself. The store knows which recipients signed in from the browser holding it
// (those the browser is trusted for, see Policy) and binds one-time codes to it.
func deviceCookieName(r *http.Request) string {
	if plainLoopback(r) {
		return devDeviceCookie
	}
	return deviceCookie
}

// browser returns the hash of the browser's device token, first giving the browser one if it
// has none. Like every cookie of the viewer it ends with the browser session (no Max-Age):
// nothing is kept on the device. The store trusts it for at most the failure window.
func (v *Viewer) browser(w http.ResponseWriter, r *http.Request) [32]byte {
	name := deviceCookieName(r)
	t := cookieToken(r, name)
	if t == "" {
		t = token.New()
		setCookie(w, r, name, t, 0)
		// Later steps of this request see the new token.
		r.AddCookie(&http.Cookie{Name: name, Value: t})
	}
	return token.Hash(t)
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: !plainLoopback(r), HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// cookieToken returns the value of cookie name if it has the shape of a token.
func cookieToken(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil || !tokenShape.MatchString(c.Value) {
		return ""
	}
	return c.Value
}

// csrfToken returns the anti-forgery token for the forms of the page being rendered, setting
// the cookie that pairs with it if the browser has none. Forms post it back in the field
// "csrf", and checkForgery compares the two (double submit). A cross-site page can neither read
// the cookie nor, thanks to __Host- and HSTS, write it.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	_, name := cookieNames(r)
	if t := cookieToken(r, name); t != "" {
		return t
	}
	t := token.New()
	setCookie(w, r, name, t, 0)
	return t
}

// errForged means a POST did not come from one of the viewer's own forms.
var errForged = errors.New("request did not come from this site's form")

// checkForgery refuses a POST that did not come from one of the viewer's forms: a browser
// that says the request is cross-site (Sec-Fetch-Site), an Origin of another host, or a form
// field "csrf" that does not equal the CSRF cookie. SameSite=Strict already keeps the session
// cookie off cross-site posts; this also covers the forms used before there is a session.
// (With Referrer-Policy no-referrer, browsers send "Origin: null" on form posts, so Origin
// alone cannot decide.)
func checkForgery(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return errForged
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return errForged
		}
	}
	_, name := cookieNames(r)
	cookie := cookieToken(r, name)
	field := r.PostFormValue("csrf")
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(field)) != 1 {
		return errForged
	}
	return nil
}

// session is a valid remembered sign-in.
type session struct {
	idHash      [32]byte
	recipientID string
}

// session returns the request's valid session for l's message, if it has one: lookup read
// the session that belongs to the message's recipient, and this checks its timeouts. A
// session past its idle or absolute timeout is deleted. Use is recorded (for the idle
// timeout) at most every touchEvery, so that reading pages does not write to the database on
// every request; the idle timeout can then end up to touchEvery early, never late.
func (v *Viewer) session(ctx context.Context, l link) (session, bool) {
	if l.stored == nil {
		return session{}, false
	}
	s := *l.stored
	now := v.now()
	if !s.Valid(now, v.cfg.Policy.IdleTimeout) {
		if err := v.cfg.Store.DeleteSession(ctx, s.IDHash); err != nil {
			v.log.WarnContext(ctx, "delete expired session failed", "err", err)
		}
		return session{}, false
	}
	if now.Sub(s.LastSeenAt) >= v.touchEvery() {
		if err := v.cfg.Store.TouchSession(ctx, s.IDHash, now); err != nil {
			v.log.WarnContext(ctx, "record session use failed", "err", err)
			return session{}, false
		}
	}
	return session{idHash: s.IDHash, recipientID: s.RecipientID}, true
}

// touchEvery is how stale a session's last-seen time may get: 1/30 of the idle timeout, at
// most 30 s.
func (v *Viewer) touchEvery() time.Duration {
	return min(v.cfg.Policy.IdleTimeout/30, 30*time.Second)
}

// startSession signs recipientID in with a new session id (never one the browser brought),
// ends the session the browser had, and audits the sign-in.
func (v *Viewer) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, recipientID, how string) error {
	name, _ := cookieNames(r)
	if old := cookieToken(r, name); old != "" {
		if err := v.cfg.Store.DeleteSession(ctx, token.Hash(old)); err != nil {
			return err
		}
	}
	now := v.now()
	id := token.New()
	err := v.cfg.Store.CreateSession(ctx, store.Session{
		IDHash: token.Hash(id), RecipientID: recipientID,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(v.cfg.Policy.SessionLifetime),
	})
	if err != nil {
		return err
	}
	if err := v.cfg.Store.AppendAudit(ctx, audit.Event{
		Time: now, Kind: audit.KindLogin, Actor: "patient",
		Detail: map[string]string{"recipient": recipientID, "method": how},
	}); err != nil {
		return err
	}
	// A session cookie (no Max-Age): it also ends when the browser closes. The server's
	// timeouts are what count.
	setCookie(w, r, name, id, 0)
	return nil
}

// endSession deletes the browser's session, if any, and clears the cookie.
func (v *Viewer) endSession(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	name, _ := cookieNames(r)
	setCookie(w, r, name, "", -1)
	id := cookieToken(r, name)
	if id == "" {
		return nil
	}
	hash := token.Hash(id)
	s, err := v.cfg.Store.Session(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := v.cfg.Store.DeleteSession(ctx, hash); err != nil {
		return err
	}
	return v.cfg.Store.AppendAudit(ctx, audit.Event{
		Time: v.now(), Kind: audit.KindLogout, Actor: "patient", Detail: map[string]string{"recipient": s.RecipientID},
	})
}
