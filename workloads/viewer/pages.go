package viewer

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"time"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static/style.css
var styleCSS []byte

// pageNames are the pages, each a template file with a "content" block.
var pageNames = []string{"home", "landing", "login", "setpassword", "confirmphone", "reset", "message", "status"}

func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.ParseFS(templateFiles, "templates/base.html")
	if err != nil {
		return nil, fmt.Errorf("parse viewer templates: %w", err)
	}
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(templateFiles, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse viewer template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// brandView is what every page shows of the tenant.
type brandView struct {
	DisplayName, Language                  string
	SupportPhone, SupportEmail, SupportURL string
	HasLogo                                bool
	// Header and Footer are the pages' header and footer, rendered by html/template from the
	// fields above when the viewer starts (withChrome): they show nothing else, and rendering
	// them on every page took a third of its rendering time.
	Header, Footer template.HTML
}

// withChrome returns b with its header and footer rendered by templates t.
func (b brandView) withChrome(t *template.Template) (brandView, error) {
	for _, part := range []struct {
		name string
		html *template.HTML
	}{{"header", &b.Header}, {"footer", &b.Footer}} {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, part.name, page{Brand: b}); err != nil {
			return b, fmt.Errorf("render viewer %s: %w", part.name, err)
		}
		// html/template wrote it, escaping each value for where it stands.
		*part.html = template.HTML(buf.String())
	}
	return b, nil
}

// page is the data of one rendered page.
type page struct {
	Brand  brandView
	Title  string
	CSRF   string
	Error  string
	Notice string

	Remembered bool   // landing: a session of this link's recipient is present
	CanReset   bool   // login: a code can be texted
	MinLength  int    // set-password, reset
	NeedCode   bool   // set-password: with a one-time code
	Purpose    string // code forms: setup or reset
	Message    *messageView

	Heading    string // status pages
	Paragraphs []string
}

type messageView struct {
	Subject, Text, Sent, Until string
	Attachments                []attachmentView
	Replies                    []replyView
	// ReplyMax is the longest reply the form takes; 0 when replies are off or no more are
	// taken for this message.
	ReplyMax int
	Reply    string // what the patient typed, shown again when it was refused
}

type replyView struct {
	Text, Sent string
}

type attachmentView struct {
	Index      int
	Name, Size string
}

// pageBufferSize is room for a rendered page, so that its buffer does not grow in steps.
const pageBufferSize = 4 << 10

// render writes page name with status code. The metrics count it as view.
func (v *Viewer) render(w http.ResponseWriter, r *http.Request, code int, name, view string, p page) {
	p.Brand = v.brand
	if p.Title == "" {
		p.Title = p.Heading
	}
	p.CSRF = csrfToken(w, r)
	buf := bytes.NewBuffer(make([]byte, 0, pageBufferSize))
	if err := v.pages[name].ExecuteTemplate(buf, "base", p); err != nil {
		v.log.ErrorContext(r.Context(), "render page failed", "page", name, "err", err)
		http.Error(w, "The page could not be shown. Please try again.", http.StatusInternalServerError)
		return
	}
	v.metrics.views.WithLabelValues(view).Inc()
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// status renders a page that only says something: an expired link, an error.
func (v *Viewer) status(w http.ResponseWriter, r *http.Request, code int, view, heading string, paragraphs ...string) {
	v.render(w, r, code, "status", view, page{Heading: heading, Paragraphs: paragraphs})
}

func (v *Viewer) contactLine() string {
	return "If you still need it, contact " + v.brand.DisplayName + " using the details below."
}

func (v *Viewer) notFound(w http.ResponseWriter, r *http.Request) {
	v.status(w, r, http.StatusNotFound, "not-found", "Page not found",
		"This address does not lead to a message. If you followed a link from a text message, check that the whole link was opened; some phones cut long links.")
}

func (v *Viewer) unavailable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "30")
	v.status(w, r, http.StatusServiceUnavailable, "unavailable", "Please try again in a minute",
		"Your message could not be shown right now because of a problem on our side. Nothing is lost: open the link again in a minute.")
}

func (v *Viewer) forged(w http.ResponseWriter, r *http.Request) {
	v.status(w, r, http.StatusForbidden, "forbidden", "Please start again",
		"This form has expired or did not come from this page. Open the link from your text message again.")
}

func (v *Viewer) throttled(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", strconv.Itoa(int(v.cfg.Policy.AddressWindow.Seconds())))
	v.status(w, r, http.StatusTooManyRequests, "throttled", "Too many attempts",
		fmt.Sprintf("There were too many failed attempts from your network. Wait %s and try again.", minutes(v.cfg.Policy.AddressWindow)))
}

// formatTime shows t in the tenant's time zone.
func (v *Viewer) formatTime(t time.Time) string {
	return t.In(v.cfg.Branding.Location).Format("January 2, 2006 at 3:04 PM MST")
}

func minutes(d time.Duration) string {
	m := int(math.Ceil(d.Minutes()))
	if m == 1 {
		return "1 minute"
	}
	return strconv.Itoa(m) + " minutes"
}

func byteSize(n int) string {
	switch {
	case n < 1024:
		return strconv.Itoa(n) + " bytes"
	case n < 1024*1024:
		return strconv.Itoa((n+1023)/1024) + " KB"
	default:
		return strconv.FormatFloat(float64(n)/(1024*1024), 'f', 1, 64) + " MB"
	}
}

// themeCSS is the tenant's colour: the header and main buttons, with whichever of white and
// black text contrasts more with it: the better of the two is always at least √21 ≈ 4.58:1.
func themeCSS(hex string) []byte {
	fg := "#ffffff"
	if contrast(hex, "#000000") > contrast(hex, fg) {
		fg = "#000000"
	}
	return fmt.Appendf(nil, "header.brand { background: %[1]s; color: %[2]s; }\n"+
		"button:not(.secondary) { background: %[1]s; color: %[2]s; border-color: %[1]s; }\n", hex, fg)
}

// contrast is the WCAG 2.2 contrast ratio of two #rrggbb colours.
func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func luminance(hex string) float64 {
	channel := func(s string) float64 {
		n, _ := strconv.ParseUint(s, 16, 8)
		c := float64(n) / 255
		if c <= 0.04045 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	return 0.2126*channel(hex[1:3]) + 0.7152*channel(hex[3:5]) + 0.0722*channel(hex[5:7])
}
