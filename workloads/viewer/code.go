package viewer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/sms"
	"github.com/securetext/securetext/workloads/store"
)

// One-time codes texted to the recipient's phone: they confirm the phone before a first
// password (when the policy asks for it) and replace a forgotten password. A link that does
// not exist answers as a real recipient's would, from its phantom's code state.

var sixDigits = regexp.MustCompile(`^[0-9]{6}$`)

// useCode checks a typed one-time code against the code the request's browser asked for; ok
// false comes with what to tell the patient.
func (v *Viewer) useCode(ctx context.Context, r *http.Request, recipientID string, purpose store.CodePurpose, typed string) (ok bool, msg string, err error) {
	typed = strings.TrimSpace(typed)
	browser := v.loginClient(r).Browser
	if browser == ([32]byte{}) {
		// A browser without a device token asked for no code.
		v.metrics.codes.WithLabelValues(string(purpose), "missing").Inc()
		return false, codeMissing, nil
	}
	res, err := v.cfg.Store.UseOneTimeCode(ctx, recipientID, purpose, browser, v.now(), v.cfg.Policy.CodeMaxAttempts,
		func(salt [16]byte, hash [32]byte) bool {
			h := codeHash(salt, typed)
			return subtle.ConstantTimeCompare(h[:], hash[:]) == 1 && sixDigits.MatchString(typed)
		})
	if err != nil {
		return false, "", err
	}
	switch res {
	case store.CodeAccepted:
		v.metrics.codes.WithLabelValues(string(purpose), "accepted").Inc()
		return true, "", nil
	case store.CodeWrong:
		v.metrics.codes.WithLabelValues(string(purpose), "wrong").Inc()
		return false, codeWrong, nil
	default:
		v.metrics.codes.WithLabelValues(string(purpose), "missing").Inc()
		return false, codeMissing, nil
	}
}

const (
	codeWrong   = "That code is not right. Check the 6 digits in the text message and try again."
	codeMissing = "That code has expired, was already used, or was tried too many times. Send a new code. A code works only in the browser that asked for it."
	codeSent    = "We texted a 6-digit code to the phone this link was sent to. It works for %s."
)

// codeHash is what is stored of a one-time code.
func codeHash(salt [16]byte, code string) [32]byte {
	return sha256.Sum256(append(salt[:], code...))
}

// newCode returns six uniformly random digits.
func newCode() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	// 2^64 mod 10^6 is negligible bias (< 2^-44).
	return fmt.Sprintf("%06d", binary.BigEndian.Uint64(b[:])%1_000_000)
}

// sendCode texts a one-time code to the recipient's phone, for the first password (setup) or
// a forgotten one (reset), and shows the form that takes it. The code is bound to this
// browser (its device token, given now if it has none): no other browser can use it or use
// it up, and codes other browsers ask for do not replace it.
func (v *Viewer) sendCode(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	now := v.now()
	policy := v.cfg.Policy
	purpose := store.CodePurpose(r.PostFormValue("purpose"))
	if v.cfg.SMS == nil || (purpose != store.CodeSetup && purpose != store.CodeReset) {
		v.status(w, r, http.StatusBadRequest, "bad-request", "Please start again",
			"Codes cannot be texted from this page. Contact "+v.brand.DisplayName+" to have your password reset.")
		return
	}
	addr := clientAddr(r, v.cfg.TrustedProxies)
	if v.addrs.blocked(addr, now) {
		v.throttled(w, r)
		return
	}
	v.browser(w, r)
	client := v.loginClient(r)
	limits := store.CodeLimits{Window: policy.CodeWindow, PerClient: policy.CodesPerClient, PerRecipient: policy.CodesPerRecipient,
		TrustWindow: policy.FailureWindow}
	notice := fmt.Sprintf(codeSent, minutes(policy.CodeLifetime))
	resetPage := func(code int, errMsg, notice string) {
		v.render(w, r, code, "reset", "reset", page{Title: "Choose a new password", Error: errMsg, Notice: notice,
			MinLength: policy.MinPasswordLength, Purpose: string(store.CodeReset)})
	}
	limited := func() {
		v.metrics.codes.WithLabelValues(string(purpose), "rate-limited").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(policy.CodeWindow.Seconds())))
		v.status(w, r, http.StatusTooManyRequests, "codes-limited", "Too many codes",
			fmt.Sprintf("Several codes were sent in a short time. Use the last code you received on this device, or wait up to %s and ask for a new one.", minutes(policy.CodeWindow)))
	}

	if l.state == linkUnknown {
		if purpose == store.CodeSetup {
			v.loginPage(w, r, http.StatusOK, "", alreadySet)
			return
		}
		over := false
		v.phantoms.with(l.hash, now, func(p *phantom) {
			// As CreateOneTimeCode counts for a client that is not trusted.
			var byClient, byAll int
			for i := range p.codes {
				c := &p.codes[i]
				if !c.at.After(now.Add(-policy.CodeWindow)) {
					continue
				}
				byAll++
				if c.requester == client.Address {
					byClient++
				}
			}
			if over = byClient >= policy.CodesPerClient || byAll >= policy.CodesPerRecipient; over {
				return
			}
			for i := range p.codes {
				if p.codes[i].browser == client.Browser {
					p.codes[i].used = true
				}
			}
			p.codes = append(p.codes, phantomCode{requester: client.Address, browser: client.Browser, at: now})
		})
		if over {
			limited()
			return
		}
		v.addrs.add(addr, now)
		resetPage(http.StatusOK, "", notice)
		return
	}

	rc, err := v.cfg.Store.Recipient(ctx, l.msg.RecipientID)
	if err != nil {
		v.failed(w, r, l, "read recipient", err)
		return
	}
	switch {
	case purpose == store.CodeSetup && rc.PasswordHash != "":
		v.loginPage(w, r, http.StatusOK, "", alreadySet)
		return
	case purpose == store.CodeSetup && !policy.OneTimeCode:
		v.firstUsePage(w, r, http.StatusOK, "")
		return
	case purpose == store.CodeReset && rc.PasswordHash == "":
		if !policy.OneTimeCode {
			v.firstUsePage(w, r, http.StatusOK, "")
			return
		}
		purpose = store.CodeSetup
	}

	code := newCode()
	c := store.OneTimeCode{RecipientID: rc.ID, Purpose: purpose, Client: client, CreatedAt: now, ExpiresAt: now.Add(policy.CodeLifetime)}
	_, _ = rand.Read(c.Salt[:])
	c.Hash = codeHash(c.Salt, code)
	err = v.cfg.Store.CreateOneTimeCode(ctx, c, limits, audit.Event{
		Time: now, Kind: audit.KindCodeSent, Actor: "viewer", MessageID: l.msg.ID,
		Detail: map[string]string{"recipient": rc.ID, "purpose": string(purpose)},
	})
	if errors.Is(err, store.ErrRateLimited) {
		limited()
		return
	}
	if err != nil {
		v.failed(w, r, l, "store one-time code", err)
		return
	}
	v.addrs.add(addr, now)
	_, err = v.cfg.SMS.Send(ctx, sms.Message{
		To:        rc.Phone,
		Body:      fmt.Sprintf("%s: your code is %s. It expires in %s. Never share it with anyone.", v.brand.DisplayName, code, minutes(policy.CodeLifetime)),
		Reference: l.msg.ID,
	})
	if err != nil {
		// sms errors name no phone number or text.
		v.log.ErrorContext(ctx, "text one-time code failed", "message", l.msg.ID, "recipient", rc.ID, "err", err)
		v.metrics.codes.WithLabelValues(string(purpose), "send-failed").Inc()
		w.Header().Set("Retry-After", "60")
		v.status(w, r, http.StatusServiceUnavailable, "code-failed", "The code could not be sent",
			"We could not send the text message with your code. Wait a minute and try again.")
		return
	}
	v.metrics.codes.WithLabelValues(string(purpose), "sent").Inc()
	if purpose == store.CodeSetup {
		v.render(w, r, http.StatusOK, "setpassword", "set-password", page{Title: "Choose a password", Notice: notice,
			MinLength: policy.MinPasswordLength, NeedCode: true, Purpose: string(store.CodeSetup)})
		return
	}
	resetPage(http.StatusOK, "", notice)
}

// reset replaces a forgotten password with the texted code, ends the recipient's other
// sessions, signs the patient in and shows the message.
func (v *Viewer) reset(w http.ResponseWriter, r *http.Request, l link) {
	ctx := r.Context()
	now := v.now()
	policy := v.cfg.Policy
	addr := clientAddr(r, v.cfg.TrustedProxies)
	if v.addrs.blocked(addr, now) {
		v.throttled(w, r)
		return
	}
	again := func(code int, msg string) {
		v.render(w, r, code, "reset", "reset", page{Title: "Choose a new password", Error: msg,
			MinLength: policy.MinPasswordLength, Purpose: string(store.CodeReset)})
	}
	pw := r.PostFormValue("password")
	if refusal := v.rules.Check(pw, r.PostFormValue("confirm")); refusal != nil {
		again(http.StatusUnprocessableEntity, refusal.Message)
		return
	}
	if l.state == linkUnknown || v.cfg.SMS == nil {
		// As a real recipient's code would: wrong while this browser's last "sent" code lives
		// and has tries left, then missing.
		msg := codeMissing
		browser := v.loginClient(r).Browser
		v.phantoms.with(l.hash, now, func(p *phantom) {
			for i := len(p.codes) - 1; i >= 0; i-- {
				c := &p.codes[i]
				if browser == ([32]byte{}) || c.browser != browser || c.used {
					continue
				}
				if now.Sub(c.at) < policy.CodeLifetime && c.tries < policy.CodeMaxAttempts {
					c.tries++
					msg = codeWrong
				}
				break
			}
		})
		v.addrs.add(addr, now)
		result := "missing"
		if msg == codeWrong {
			result = "wrong"
		}
		v.metrics.codes.WithLabelValues(string(store.CodeReset), result).Inc()
		again(http.StatusUnauthorized, msg)
		return
	}
	rc, err := v.cfg.Store.Recipient(ctx, l.msg.RecipientID)
	if err != nil {
		v.failed(w, r, l, "read recipient", err)
		return
	}
	hash, ok := v.newPasswordHash(w, r, l, rc.ID, store.CodeReset, true, addr, pw, again)
	if !ok {
		return
	}
	if err := v.cfg.Store.ResetPassword(ctx, rc.ID, hash, audit.Event{Time: now, Kind: audit.KindPasswordReset, Actor: "patient",
		MessageID: l.msg.ID, Detail: map[string]string{"recipient": rc.ID}}); err != nil {
		v.failed(w, r, l, "reset password", err)
		return
	}
	if err := v.cfg.Store.TrustBrowser(ctx, rc.ID, v.browser(w, r), now); err != nil {
		v.failed(w, r, l, "trust browser", err)
		return
	}
	v.signInAndReveal(w, r, l, rc.ID, "reset")
}
