package viewer

import "net/http"

// contentSecurityPolicy allows nothing but the viewer's own stylesheet and images and forms
// posting back to it. There is no script at all, so no nonce is needed.
const contentSecurityPolicy = "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; " +
	"form-action 'self'; style-src 'self'; img-src 'self' data:"

// securityHeaders is the one place the viewer's response headers for security are set: every
// response, including errors, 404s, health checks and downloads, goes through it. Nothing the
// viewer serves may stay on the device (no-store), leak the link token (no-referrer), run or
// load anything foreign (CSP), be framed, sniffed or opened into a shared browsing context.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache") // HTTP/1.0 caches
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains") // 2 years
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY") // for browsers without frame-ancestors
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
		next.ServeHTTP(w, r)
	})
}

// downloadHeaders are added to an attachment download: it is a file to save, never a page to
// render, and if a browser renders it anyway it runs in a sandbox with no origin.
func downloadHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy+"; sandbox")
}
