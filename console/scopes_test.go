package console

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
)

// formValues is what a browser sends when the form whose action ends with
// action is submitted as the page shows it: every named control that is not
// disabled, checkboxes and radio buttons only when checked.
func formValues(t *testing.T, page, action string) url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	attr := func(n *html.Node, name string) (string, bool) {
		for _, a := range n.Attr {
			if a.Key == name {
				return a.Val, true
			}
		}
		return "", false
	}
	text := func(n *html.Node) string {
		var b strings.Builder
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.TextNode {
				b.WriteString(c.Data)
			}
		}
		return b.String()
	}
	var form *html.Node
	var find func(*html.Node)
	find = func(n *html.Node) {
		if a, _ := attr(n, "action"); n.Type == html.ElementNode && n.Data == "form" && strings.HasSuffix(a, action) && form == nil {
			form = n
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if form == nil {
		t.Fatalf("no form to %s on the page:\n%s", action, page)
	}
	vals := url.Values{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		name, named := attr(n, "name")
		_, disabled := attr(n, "disabled")
		if n.Type == html.ElementNode && named && !disabled {
			switch n.Data {
			case "input":
				typ, _ := attr(n, "type")
				v, hasValue := attr(n, "value")
				_, checked := attr(n, "checked")
				switch typ {
				case "checkbox", "radio":
					if !hasValue {
						v = "on"
					}
					if checked {
						vals.Add(name, v)
					}
				case "submit", "button", "reset", "image":
				default:
					vals.Add(name, v)
				}
			case "textarea":
				vals.Add(name, strings.ReplaceAll(text(n), "\n", "\r\n"))
			case "select":
				var first, selected *html.Node
				for o := n.FirstChild; o != nil; o = o.NextSibling {
					if o.Type != html.ElementNode || o.Data != "option" {
						continue
					}
					if first == nil {
						first = o
					}
					if _, ok := attr(o, "selected"); ok {
						selected = o
					}
				}
				if selected == nil {
					selected = first
				}
				if selected != nil {
					v, ok := attr(selected, "value")
					if !ok {
						v = text(selected)
					}
					vals.Add(name, v)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(form)
	return vals
}

// radio finds the radio button of name and value on a page: whether it is
// there and whether it is checked.
func radio(page, name, value string) (shown, checked bool) {
	m := regexp.MustCompile(`<input type="radio"[^>]* name="` + regexp.QuoteMeta(name) + `" value="` + regexp.QuoteMeta(value) + `"([^>]*)>`).FindStringSubmatch(page)
	if m == nil {
		return false, false
	}
	return true, strings.Contains(m[1], " checked")
}

// checkbox finds the scope checkbox of a scope on a page.
func checkbox(page, scope string) (shown, checked bool) {
	m := regexp.MustCompile(`<input type="checkbox" name="scope" value="` + regexp.QuoteMeta(scope) + `"([^>]*)>`).FindStringSubmatch(page)
	if m == nil {
		return false, false
	}
	return true, strings.Contains(m[1], " checked")
}

// createdKey returns the record of the key the create form just made,
// by its name.
func (f *fixture) createdKey(name string) *store.Record {
	f.t.Helper()
	recs, err := f.svc.List(ctx, "", true)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == name {
			return r
		}
	}
	f.t.Fatalf("no key named %q", name)
	return nil
}

func TestAResourceWithReadAndWriteIsOneRow(t *testing.T) {
	f := newFixture(t)
	page := f.get(alice, "/new").Body.String()
	// templates has templates.read and templates.write: one row, None
	// chosen, and no checkbox of either; mail.send and full access stay
	// checkboxes.
	for _, v := range []string{"none", "read", "read-write"} {
		if shown, checked := radio(page, "access.templates", v); !shown || checked != (v == "none") {
			t.Errorf("the templates row's %q: shown %v, checked %v", v, shown, checked)
		}
	}
	if shown, _ := radio(page, "access.templates", "write"); shown {
		t.Error("a new key is offered “Write only”")
	}
	for _, s := range []string{"templates.read", "templates.write"} {
		if shown, _ := checkbox(page, s); shown {
			t.Errorf("%s is a checkbox beside its row", s)
		}
	}
	for _, s := range []string{"mail.send", "*"} {
		if shown, checked := checkbox(page, s); !shown || checked {
			t.Errorf("the %s checkbox: shown %v, checked %v", s, shown, checked)
		}
	}
	// The row is a group with its legend, each choice labelled with the
	// scopes it grants and the routes they open.
	for _, want := range []string{
		`<legend>templates</legend>`, `<legend>mail</legend>`,
		`id="access-templates" name="access.templates" value="none" checked> None</label>`,
		`Read <span class="hint"><code>templates.read</code>: GET /v3/templates*</span>`,
		`Read and write <span class="hint"><code>templates.read</code> and <code>templates.write</code>: GET /v3/templates*, POST /v3/templates*</span>`,
		`<code>mail.send</code> <span class="hint">POST /v3/mail/send</span>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the create form lacks %s", want)
		}
	}
}

func TestTheRowsLevelChoosesItsScopes(t *testing.T) {
	for _, tc := range []struct {
		level  []string
		scope  []string
		want   string // the key's scopes, or the field whose error the form shows
		status int
	}{
		{[]string{"read-write"}, nil, "templates.read templates.write", http.StatusSeeOther},
		{[]string{"read-write"}, []string{"mail.send"}, "mail.send templates.read templates.write", http.StatusSeeOther},
		{[]string{"read"}, nil, "templates.read", http.StatusSeeOther},
		{[]string{"write"}, nil, "templates.write", http.StatusSeeOther},
		{[]string{"none"}, []string{"mail.send"}, "mail.send", http.StatusSeeOther},
		{[]string{"none"}, nil, "scopes", http.StatusUnprocessableEntity},
		{[]string{"full"}, []string{"mail.send"}, "access-templates", http.StatusUnprocessableEntity},
		{[]string{""}, []string{"mail.send"}, "access-templates", http.StatusUnprocessableEntity},
		{[]string{"read", "read-write"}, nil, "access-templates", http.StatusUnprocessableEntity},
		{[]string{"templates.read"}, nil, "access-templates", http.StatusUnprocessableEntity},
	} {
		t.Run(strings.Join(tc.level, ",")+"+"+strings.Join(tc.scope, ","), func(t *testing.T) {
			f := newFixture(t)
			w := f.post(alice, "/new", url.Values{"name": {"crm"}, "access.templates": tc.level, "scope": tc.scope, "expires": {"90d"}})
			wantStatus(t, w, tc.status)
			if tc.status == http.StatusSeeOther {
				if got := strings.Join(f.createdKey("crm").Scopes, " "); got != tc.want {
					t.Errorf("the key's scopes: %q, want %q", got, tc.want)
				}
				return
			}
			body := w.Body.String()
			if !strings.Contains(body, `id="err-`+tc.want+`"`) || !strings.Contains(body, `<a href="#`+tc.want+`">`) {
				t.Errorf("the refusal does not say what is wrong beside %s:\n%s", tc.want, body)
			}
			if recs, _ := f.svc.List(ctx, "", true); len(recs) != 0 {
				t.Errorf("a refused form made a key: %v", recs[0].Scopes)
			}
			// The other choices come back as they were left, a bad level as None.
			for _, s := range tc.scope {
				if _, checked := checkbox(body, s); !checked {
					t.Errorf("%s comes back unchecked", s)
				}
			}
			if tc.want == "access-templates" {
				if _, checked := radio(body, "access.templates", "none"); !checked {
					t.Error("a row sent with a level it does not know does not come back as None")
				}
				if !strings.Contains(body, `name="access.templates" value="none" checked aria-describedby="err-access-templates" aria-invalid="true">`) {
					t.Error("the row's radio buttons do not name its error")
				}
			}
		})
	}
}

func TestARefusedFormKeepsTheRowsChoice(t *testing.T) {
	f := newFixture(t)
	w := f.post(alice, "/new", url.Values{"access.templates": {"read-write"}, "scope": {"mail.send"}, "expires": {"90d"}}) // no name
	wantStatus(t, w, http.StatusUnprocessableEntity)
	body := w.Body.String()
	if _, checked := radio(body, "access.templates", "read-write"); !checked {
		t.Error("a refused form drops “Read and write”")
	}
	if _, checked := checkbox(body, "mail.send"); !checked {
		t.Error("a refused form drops mail.send")
	}
	// Sent again with a name, as the person would, it makes the key.
	vals := formValues(t, body, "/new")
	vals.Set("name", "crm")
	f.follow(alice, f.post(alice, "/new", vals))
	if got := strings.Join(f.createdKey("crm").Scopes, " "); got != "mail.send templates.read templates.write" {
		t.Errorf("the key's scopes: %q", got)
	}
}

// An edit form saved as it is shown keeps the key's scopes to the byte,
// however they were set (the CLI, the admin API), and shows them as they
// are.
func TestAnEditFormSavedAsShownKeepsTheScopes(t *testing.T) {
	for _, tc := range []struct {
		scopes []string
		level  string   // the templates row's level shown checked
		boxes  []string // checkboxes shown checked
	}{
		{[]string{"templates.write"}, "write", nil},
		{[]string{"templates.write", "mail.send"}, "write", []string{"mail.send"}},
		{[]string{"templates.write", "templates.read"}, "read-write", nil},
		{[]string{"templates.read", "mail.send"}, "read", []string{"mail.send"}},
		{[]string{"*"}, "none", []string{"*"}},
		{[]string{"templates.*"}, "none", []string{"templates.*"}},
		{[]string{"mail.*", "templates.read"}, "read", []string{"mail.*"}},
		{[]string{"stats.read", "mail.send"}, "none", []string{"stats.read", "mail.send"}}, // a scope no route uses
	} {
		t.Run(strings.Join(tc.scopes, ","), func(t *testing.T) {
			f := newFixture(t)
			name, owner, scopes := "crm", "sales", slices.Clone(tc.scopes)
			k, err := f.svc.Issue(ctx, keys.Spec{Name: &name, Owner: &owner, Scopes: &scopes, Force: true}, "cli")
			if err != nil {
				t.Fatal(err)
			}
			page := f.get(alice, "/keys/"+k.ID).Body.String()
			for _, v := range []string{"none", "read", "read-write", "write"} {
				shown, checked := radio(page, "access.templates", v)
				if checked != (v == tc.level) || shown != (v != "write" || tc.level == "write") {
					t.Errorf("the templates row's %q: shown %v, checked %v", v, shown, checked)
				}
			}
			for _, s := range tc.boxes {
				if shown, checked := checkbox(page, s); !shown || !checked {
					t.Errorf("the %s checkbox: shown %v, checked %v", s, shown, checked)
				}
			}
			if slices.Contains(tc.scopes, "templates.*") {
				if !strings.Contains(page, `<code>templates.*</code> <span class="hint">every templates. scope: GET /v3/templates*, POST /v3/templates*</span>`) {
					t.Error("templates.* does not say the routes it opens")
				}
				// Beside a checkbox, the row is a group of its own.
				if !regexp.MustCompile(`<legend>templates</legend>\s*<fieldset class="access"><legend>Access</legend>[^/]*<div class="levels">`).MatchString(page) {
					t.Error("the templates row beside a checkbox is not a fieldset of its own")
				}
			}
			if slices.Contains(tc.scopes, "stats.read") && !strings.Contains(page, `<code>stats.read</code> <span class="hint">no route requires it today</span>`) {
				t.Error("a scope no route uses does not say so")
			}

			vals := formValues(t, page, "/keys/"+k.ID+"/settings")
			body := f.follow(alice, f.post(alice, "/keys/"+k.ID+"/settings", vals)).Body.String()
			if !strings.Contains(body, "nothing changed") || strings.Contains(body, "Settings saved") {
				t.Errorf("saving the form as shown changed the key:\n%s", body)
			}
			if got := f.show(k.ID).Scopes; !slices.Equal(got, tc.scopes) {
				t.Errorf("after saving the form as shown the key holds %q, want %q", got, tc.scopes)
			}
			if evs, _ := f.svc.Events(ctx, k.ID, 0, nil); len(evs) != 1 {
				t.Errorf("saving the form as shown made %d events", len(evs)-1)
			}
		})
	}
}

func TestEditingTheRowChangesOnlyItsScopes(t *testing.T) {
	f := newFixture(t)
	name, owner, scopes := "crm", "sales", []string{"templates.write", "mail.send"}
	k, err := f.svc.Issue(ctx, keys.Spec{Name: &name, Owner: &owner, Scopes: &scopes}, "cli")
	if err != nil {
		t.Fatal(err)
	}
	path := "/keys/" + k.ID
	// Write only → Read and write: templates.read is added after what the
	// key holds.
	vals := formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("access.templates", "read-write")
	f.follow(alice, f.post(alice, path+"/settings", vals))
	if got := strings.Join(f.show(k.ID).Scopes, " "); got != "templates.write mail.send templates.read" {
		t.Errorf("after choosing Read and write: %q", got)
	}
	// Once read too, "Write only" is offered no more.
	page := f.get(alice, path).Body.String()
	if shown, _ := radio(page, "access.templates", "write"); shown {
		t.Error("“Write only” is offered for a key that reads and writes")
	}
	// Read: templates.write goes, the rest stays.
	vals = formValues(t, page, path+"/settings")
	vals.Set("access.templates", "read")
	f.follow(alice, f.post(alice, path+"/settings", vals))
	if got := strings.Join(f.show(k.ID).Scopes, " "); got != "mail.send templates.read" {
		t.Errorf("after choosing Read: %q", got)
	}
	// A refused edit shows the row as the person left it.
	vals = formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("access.templates", "write")
	vals.Set("name", "")
	w := f.post(alice, path+"/settings", vals)
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if _, checked := radio(w.Body.String(), "access.templates", "write"); !checked {
		t.Error("a refused edit drops “Write only”")
	}
	// A scope no route uses, typed into Other scopes, is offered to be
	// forced beside the row, and forcing it keeps the row's choice.
	vals = formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("access.templates", "read-write")
	vals.Set("extra_scopes", "mail.sned")
	w = f.post(alice, path+"/settings", vals)
	wantStatus(t, w, http.StatusUnprocessableEntity)
	if !strings.Contains(w.Body.String(), "Use it anyway") {
		t.Fatal("no offer to use an unknown scope anyway")
	}
	vals = formValues(t, w.Body.String(), path+"/settings")
	vals.Set("force", "1")
	f.follow(alice, f.post(alice, path+"/settings", vals))
	if got := strings.Join(f.show(k.ID).Scopes, " "); got != "mail.send templates.read templates.write mail.sned" {
		t.Errorf("after forcing: %q", got)
	}
	// Another team's row is not found, whatever it chooses.
	w = f.post(bob, path+"/settings", url.Values{"version": {keys.Version(f.show(k.ID))}, "name": {"pwned"},
		"access.templates": {"read-write"}, "expires": {"keep"}})
	wantStatus(t, w, http.StatusNotFound)
	// A form without its token changes nothing.
	vals = formValues(t, f.get(alice, path).Body.String(), path+"/settings")
	vals.Set("access.templates", "none")
	vals.Set("csrf", "forged")
	if w := f.post(alice, path+"/settings", vals); w.Code != http.StatusForbidden || !slices.Contains(f.show(k.ID).Scopes, "templates.read") {
		t.Errorf("a forged form: %d, scopes %q", w.Code, f.show(k.ID).Scopes)
	}
}
