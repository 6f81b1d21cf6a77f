package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// assetVersion changes whenever an embedded asset does, so browsers may
// cache them and still never run an old script with a new page.
var assetVersion = func() string {
	h := sha256.New()
	fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := staticFS.ReadFile(p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}()

// serveStatic serves the embedded stylesheet, script and icon.
func serveStatic(w http.ResponseWriter, r *http.Request) {
	name := path.Clean(r.URL.Path)
	b, err := staticFS.ReadFile(strings.TrimPrefix(name, "/"))
	if err != nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	switch path.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	if r.URL.Query().Get("v") == assetVersion {
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	w.Write(b)
}

// pages holds one parsed template set per page, each the layout plus the
// page's own "content".
type pages struct {
	set map[string]*template.Template
}

func loadPages() *pages {
	base := template.Must(template.New("").ParseFS(templateFS, "templates/layout.html", "templates/parts.html"))
	p := &pages{set: map[string]*template.Template{}}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" || name == "parts" {
			continue
		}
		p.set[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, n))
	}
	return p
}

// view is what every page shows around its content.
type view struct {
	Title   string
	Nav     string // which main navigation entry is this page
	User    User
	Mount   string
	CSRF    string
	Asset   string
	Notices []notice
	Now     time.Time
	// Fresh marks a page that answers a GET: one the browser brings back
	// from its back-forward cache is loaded again (console.js), so it does
	// not show a key as it was before a change made since.
	Fresh bool
	// SignOut offers to sign out: the person signed in with HTTP Basic
	// authentication (basic_auth), which the browser keeps until it closes
	// unless told to forget it (signOut), or the console knows where their
	// single sign-on signs them out (Options.SignOutURL).
	SignOut bool
	// NoTeam marks the page of a person the console found no team for:
	// it links none of the console's pages, which would all refuse them.
	NoTeam bool
}

func (v *view) base() *view { return v }

// page is the data of one page: its own fields and the view.
type page interface{ base() *view }

// render answers with a page.
func (c *call) render(status int, name string, data page) {
	v := data.base()
	v.User, v.Mount, v.Now = c.user, c.mount, c.now
	v.CSRF = c.h.formToken(c.r.Context(), c.user.ID)
	v.Fresh = c.r.Method == http.MethodGet
	v.SignOut = basicSignIn(c.r) || c.h.opts.SignOutURL != ""
	v.NoTeam = c.teamless
	if v.Notices == nil && c.r.Method == http.MethodGet {
		v.Notices = c.notices()
	}
	c.h.pages.renderTo(c.w, status, name, data)
}

func (p *pages) renderTo(w http.ResponseWriter, status int, name string, data page) {
	data.base().Asset = assetVersion
	var buf bytes.Buffer
	if err := p.set[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		// A template fault is a bug; say so plainly rather than send half
		// a page.
		http.Error(w, "keygate console: page "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// errorView is a page that only says what went wrong.
type errorView struct {
	view
	Message string
}

// timeView is a time as pages show it: relative, with the exact time for
// a tooltip and machines.
type timeView struct {
	Set             bool
	ISO, Exact, Rel string
}

// When shows t relative to the page's time ("3 hours ago"); nil or zero
// shows as unset.
func (v *view) When(t any) timeView {
	var at time.Time
	switch t := t.(type) {
	case time.Time:
		at = t
	case *time.Time:
		if t != nil {
			at = *t
		}
	}
	if at.IsZero() {
		return timeView{}
	}
	at = at.UTC()
	rel := keys.Relative(v.Now, at)
	if d := v.Now.Sub(at); d >= 0 && d < time.Minute {
		rel = "just now"
	}
	return timeView{Set: true, ISO: at.Format(time.RFC3339), Exact: at.Format("2 Jan 2006 15:04 UTC"), Rel: rel}
}

// rfc3339 finds the UTC times audit events' details carry, as the store
// writes them.
var rfc3339 = regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b`)

// Detail is an audit event's detail with its times as the console shows
// times elsewhere ("1 Dec 2026 01:31 UTC").
func (v *view) Detail(s string) string {
	return rfc3339.ReplaceAllStringFunc(s, func(t string) string {
		at, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return t
		}
		return at.UTC().Format("2 Jan 2006 15:04 UTC")
	})
}

// Status is a key's status at the page's time.
func (v *view) Status(r *store.Record) string { return keys.Status(r, v.Now) }

// statusLabels say what each status means in a list.
var statusLabels = map[string]string{
	keys.StatusActive:   "Active",
	keys.StatusExpiring: "Expiring soon",
	keys.StatusDisabled: "Disabled",
	keys.StatusExpired:  "Expired",
	keys.StatusRevoked:  "Revoked",
}

// actionLabels say what an audit event's action was.
var actionLabels = map[string]string{
	"issued": "Issued", "updated": "Changed", "rotated": "Rotated", "disabled": "Disabled",
	"enabled": "Enabled", "revoked": "Revoked", "leak_reported": "Revoked as leaked", "removed": "Removed by a restore",
	"restored": "Back with a restore",
}

// ActionLabel is an audit event's action in words.
func (v *view) ActionLabel(action string) string {
	if l, ok := actionLabels[action]; ok {
		return l
	}
	return action
}

// Hour shows an hour-long bucket: "this hour", or when it began.
func (v *view) Hour(t time.Time) timeView {
	tv := v.When(t)
	if tv.Set && !t.Before(v.Now.Truncate(time.Hour)) {
		tv.Rel = "this hour"
	}
	return tv
}

// StatusLabel is a status in words.
func (v *view) StatusLabel(status string) string { return statusLabels[status] }

// count writes a whole number with thousands separators: 12,345.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// Count is count for templates.
func (v *view) Count(n any) string {
	switch n := n.(type) {
	case int:
		return count(int64(n))
	case int64:
		return count(n)
	}
	return ""
}

// bars is an SVG bar chart of hourly counts: one path per series, bars of
// later series stacked on earlier ones.
type bars struct {
	Width, Height int
	Paths         []string // path data per series
	Max           int64
	Label         string // what a screen reader hears
	Empty         bool
}

// barChart draws series (each with one value per hour) stacked, scaled to
// the highest stack. barW is a bar's width in user units, gap the space
// after it.
func barChart(series [][]int64, height, barW, gap int) bars {
	n := 0
	if len(series) > 0 {
		n = len(series[0])
	}
	var top int64
	for i := 0; i < n; i++ {
		var sum int64
		for _, s := range series {
			sum += s[i]
		}
		top = max(top, sum)
	}
	b := bars{Width: n * (barW + gap), Height: height, Max: top, Empty: top == 0}
	if top == 0 {
		b.Paths = make([]string, len(series))
		return b
	}
	base := make([]float64, n)
	for _, s := range series {
		var p strings.Builder
		for i, val := range s {
			if val == 0 {
				continue
			}
			h := float64(val) / float64(top) * float64(height)
			if h < 1 {
				h = 1 // a single request stays visible
			}
			y := float64(height) - base[i] - h
			base[i] += h
			p.WriteString("M")
			p.WriteString(strconv.Itoa(i * (barW + gap)))
			p.WriteByte(' ')
			p.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
			p.WriteString("h")
			p.WriteString(strconv.Itoa(barW))
			p.WriteString("v")
			p.WriteString(strconv.FormatFloat(h, 'f', 1, 64))
			p.WriteString("h-")
			p.WriteString(strconv.Itoa(barW))
			p.WriteString("z")
		}
		b.Paths = append(b.Paths, p.String())
	}
	return b
}

// hourly spreads hourly usage over the n hours that end with the one
// holding t: allowed, denied and recipients per hour, oldest first.
func hourly(hours []store.HourUsage, t time.Time, n int) (allowed, denied, recips []int64) {
	allowed, denied, recips = make([]int64, n), make([]int64, n), make([]int64, n)
	first := t.UTC().Truncate(time.Hour).Add(-time.Duration(n-1) * time.Hour)
	for _, h := range hours {
		i := int(h.Hour.Sub(first) / time.Hour)
		if i < 0 || i >= n {
			continue
		}
		allowed[i] += h.Allowed
		for _, c := range h.Denied {
			denied[i] += c
		}
		recips[i] += h.Recipients
	}
	return allowed, denied, recips
}

func sum(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

// codeCount is a denial code, what it means and how often it was given.
type codeCount struct {
	Code, Meaning string
	N             int64
}

func (c *call) denials(m map[string]int64) []codeCount {
	out := make([]codeCount, 0, len(m))
	for code, n := range m {
		out = append(out, codeCount{Code: code, Meaning: c.h.opts.Denials(code), N: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].Code < out[j].Code
	})
	return out
}
