package browser

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// What the console owes the people who read it with a keyboard alone, a
// screen reader, a 200 % zoom or a phone, checked on the page a tab shows.

// accessible checks the page tb shows, as it is: a lang, one h1, a title
// of its own among the pages seen (titles maps each title to its page),
// every control, link, image and table named in Chromium's accessibility
// tree, every table with column headers, no id used twice and none named
// (for, aria-describedby, aria-labelledby) that is missing, the text's
// contrast (WCAG AA: 4.5:1, 3:1 for large text, computed from the styles
// of the text and of what is behind it), and the keyboard: Tab reaches every control
// in the page's order, each with a focus outline of at least 3:1 against
// what is behind it, and leaves the page again (no trap).
func (tb *tab) accessible(t *testing.T, page string, titles map[string]string) {
	t.Helper()
	var doc struct {
		Lang, Title string
		H1          int
		Headless    []string
		Contrast    []string
		Refs, Dup   []string
	}
	raw := run(t, tb.ctx, chromedp.Evaluate[string](a11yPageJS))
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatalf("%s: %v: %s", page, err, raw)
	}
	if doc.Lang == "" {
		t.Errorf("%s: the page has no lang", page)
	}
	if doc.H1 != 1 {
		t.Errorf("%s: %d h1 elements, want 1", page, doc.H1)
	}
	if titles != nil {
		if other, ok := titles[doc.Title]; ok && other != page {
			t.Errorf("%s: its title %q is also the title of %s", page, doc.Title, other)
		}
		titles[doc.Title] = page
	}
	for _, s := range doc.Headless {
		t.Errorf("%s: a table without column headers: %s", page, s)
	}
	for _, s := range doc.Contrast {
		t.Errorf("%s: text below AA contrast: %s", page, s)
	}
	for _, s := range doc.Refs {
		t.Errorf("%s: %s", page, s)
	}
	for _, s := range doc.Dup {
		t.Errorf("%s: an id used more than once: %s", page, s)
	}
	for _, s := range tb.unnamed(t) {
		t.Errorf("%s: no accessible name: %s", page, s)
	}
	for _, s := range tb.tabThrough(t) {
		t.Errorf("%s: keyboard: %s", page, s)
	}
}

// named is the roles that must have an accessible name (a navigation or
// search landmark too: the page has more than one).
var named = map[string]bool{"button": true, "link": true, "textbox": true, "searchbox": true, "checkbox": true,
	"radio": true, "combobox": true, "listbox": true, "spinbutton": true, "image": true, "img": true, "table": true,
	"navigation": true, "search": true}

// unnamed returns the nodes of the page's accessibility tree whose role
// needs a name and that have none.
func (tb *tab) unnamed(t *testing.T) []string {
	t.Helper()
	res, err := chromedp.Call(tb.ctx, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		t.Fatalf("the accessibility tree: %v", err)
	}
	var bad []string
	for _, n := range res.Nodes {
		if n.Ignored || n.Role == nil {
			continue
		}
		role, name := axString(n.Role), axString(n.Name)
		if named[role] && strings.TrimSpace(name) == "" {
			bad = append(bad, fmt.Sprintf("a %s (DOM node %d)", role, n.BackendDOMNodeID))
		}
	}
	return bad
}

// axString is a string property of an accessibility node ("" for none).
func axString(v *accessibility.Value) string {
	if v == nil {
		return ""
	}
	var s string
	json.Unmarshal(v.Value, &s)
	return s
}

// tabThrough presses Tab from the top of the page until focus leaves it,
// and returns what is wrong: a control Tab never reaches (or reaches out of
// the page's order), focus stuck, a focused control without a visible
// outline of 3:1 against what surrounds it, or out of view.
func (tb *tab) tabThrough(t *testing.T) []string {
	t.Helper()
	want := run(t, tb.ctx, chromedp.Evaluate[[]string](a11yJS+`tabbables().map(describe)`))
	// Tab starts where focus was; a stand-in focused before everything
	// else starts it at the top, as on a page just opened.
	run(t, tb.ctx, chromedp.Evaluate[bool](`(() => {
		const top = document.createElement('span');
		top.tabIndex = -1;
		top.id = 'kg-top';
		document.body.prepend(top);
		top.focus();
		window.kgFocused = top;
		return true;
	})()`))
	defer run(t, tb.ctx, chromedp.Evaluate[bool](`(document.getElementById('kg-top').remove(), window.scrollTo(0, 0), true)`))
	var bad, got []string
	for i := 0; ; i++ {
		if i > len(want)+8 { // a date field takes 4
			bad = append(bad, fmt.Sprintf("after %d Tabs focus has not left the page (a trap?): %v", i, got[max(0, len(got)-3):]))
			break
		}
		tb.do(t, chromedp.KeyEvent(kb.Tab))
		var at struct {
			Where, Fault string
			Out, Same    bool
		}
		raw := run(t, tb.ctx, chromedp.Evaluate[string](a11yJS+`JSON.stringify(focusState())`))
		if err := json.Unmarshal([]byte(raw), &at); err != nil {
			t.Fatal(err)
		}
		if at.Out {
			break
		}
		if at.Fault != "" {
			bad = append(bad, at.Where+": "+at.Fault)
		}
		if !at.Same { // a date field's day, month, year and calendar button are one field
			got = append(got, at.Where)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		bad = append(bad, fmt.Sprintf("Tab goes through\n\t%s\nwant, in the page's order,\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t")))
	}
	return bad
}

// a11yJS is the helpers of the checks run in the page.
const a11yJS = `
var rgba = s => {
	const m = /rgba?\(([^)]*)\)/.exec(s);
	if (!m) return null;
	const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
	return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
var over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
var lum = c => {
	const f = v => (v /= 255) <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
	return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
var ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
// background is the colour behind el, its own and its ancestors' laid over white.
var background = el => {
	const chain = [];
	for (let e = el; e && e.nodeType === 1; e = e.parentElement) chain.unshift(e);
	return chain.reduce((bg, e) => { const c = rgba(getComputedStyle(e).backgroundColor); return c && c[3] > 0 ? over(c, bg) : bg; }, [255, 255, 255, 1]);
};
var opacity = el => { let o = 1; for (let e = el; e && e.nodeType === 1; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity); return o; };
var shown = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility === 'visible';
var describe = el => {
	let s = el.tagName.toLowerCase();
	if (el.id) s += '#' + el.id;
	for (const a of ['name', 'value', 'href', 'type']) if (el.getAttribute(a) && !(a === 'value' && el.type !== 'radio' && el.type !== 'checkbox')) s += '[' + a + '=' + el.getAttribute(a).slice(0, 40) + ']';
	if (el.tagName === 'A' && el.parentElement.className) s += ' in .' + el.parentElement.className;
	if (!el.id && el.textContent.trim()) s += ' “' + el.textContent.trim().replace(/\s+/g, ' ').slice(0, 30) + '”';
	return s;
};
// tabbables is what Tab should reach, in order: one radio button of a group (the checked one, or the first).
var tabbables = () => {
	const all = Array.from(document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]'))
		.filter(el => el.tabIndex >= 0 && !el.disabled && shown(el) && el.type !== 'hidden' && !el.closest('details:not([open]) > :not(summary)'));
	const groups = {};
	return all.filter(el => {
		if (el.type !== 'radio') return true;
		const g = (el.form ? 'f' : '') + el.name;
		const members = all.filter(o => o.type === 'radio' && o.name === el.name && o.form === el.form);
		const pick = members.find(o => o.checked) || members[0];
		return pick === el;
	});
};
var focusState = () => {
	const el = document.activeElement;
	if (!el || el === document.body || el === document.documentElement) return {out: true};
	const st = getComputedStyle(el);
	const w = parseFloat(st.outlineWidth);
	let fault = '';
	if (st.outlineStyle === 'none' || !(w >= 2)) fault = 'no focus outline (' + st.outlineStyle + ' ' + st.outlineWidth + ')';
	else {
		const c = rgba(st.outlineColor), behind = background(el.parentElement);
		const r = ratio(over(c, behind), behind);
		if (r < 3) fault = 'its focus outline has ' + r.toFixed(2) + ':1 against ' + JSON.stringify(behind.slice(0, 3));
	}
	const r = el.getBoundingClientRect();
	if (r.bottom < 0 || r.top > innerHeight || r.right < 0 || r.left > innerWidth) fault += (fault ? '; ' : '') + 'out of view when focused';
	const same = el === window.kgFocused;
	window.kgFocused = el;
	return {where: describe(el), fault, same};
};
`

// a11yPageJS returns, as JSON, the page's lang, title, number of h1, its
// tables without column headers and its text below AA contrast.
const a11yPageJS = a11yJS + `JSON.stringify((() => {
	const headless = Array.from(document.querySelectorAll('table')).filter(tb => !tb.querySelector('th[scope=col], thead th')).map(describe);
	const contrast = [], seen = new Set();
	const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
	for (let n; (n = walk.nextNode());) {
		const el = n.parentElement;
		if (!n.textContent.trim() || seen.has(el) || !shown(el) || el.closest('.visually-hidden, svg, [disabled], option, select')) continue;
		seen.add(el);
		const st = getComputedStyle(el);
		if (st.clip === 'rect(0px, 0px, 0px, 0px)') continue;
		const bg = background(el), c = rgba(st.color);
		c[3] *= opacity(el);
		const r = ratio(over(c, bg), bg);
		const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight) >= 700;
		const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
		if (r < need) contrast.push(describe(el) + ' “' + n.textContent.trim().slice(0, 30) + '”: ' + r.toFixed(2) + ':1 (' + st.color + ' on ' + JSON.stringify(bg.slice(0, 3)) + ')');
	}
	const ids = {}, refs = [];
	for (const el of document.querySelectorAll('[id]')) ids[el.id] = (ids[el.id] || 0) + 1;
	for (const el of document.querySelectorAll('[aria-describedby], [aria-labelledby], label[for]'))
		for (const a of ['aria-describedby', 'aria-labelledby', 'for'])
			for (const id of (el.getAttribute(a) || '').split(/\s+/).filter(Boolean))
				if (!ids[id]) refs.push(describe(el) + ' ' + a + ' names #' + id + ', which is not on the page');
	const dup = Object.keys(ids).filter(id => ids[id] > 1 && id !== 'kg-top').map(id => '#' + id + ' ×' + ids[id]);
	return {lang: document.documentElement.lang, title: document.title, h1: document.querySelectorAll('h1').length, headless, contrast, refs, dup};
})())`

// fits checks the page tb shows at a window width (in CSS pixels) and
// zoom: nothing wider than the window, and every control and link on
// screen where it can be pressed, not cut off by a box or covered by
// another.
func (tb *tab) fits(t *testing.T, page string, width int64, zoom float64) {
	t.Helper()
	tb.do(t, chromedp.EmulateViewport(width, 800, chromedp.EmulateScale(zoom)))
	defer tb.do(t, chromedp.EmulateViewport(1280, 900))
	bad := run(t, tb.ctx, chromedp.Evaluate[[]string](a11yJS+`(() => {
		const bad = [];
		const wide = document.documentElement.scrollWidth;
		if (wide > innerWidth + 1) bad.push('the page is ' + wide + ' px wide');
		for (const el of document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')) {
			if (!shown(el) || el.closest('details:not([open]) > :not(summary)') || el.matches('.skip')) continue; // the skip link, until focused
			el.scrollIntoView({block: 'center', inline: 'center'});
			const r = el.getBoundingClientRect();
			if (r.left < -1 || r.right > innerWidth + 1) { bad.push(describe(el) + ' is cut off (' + Math.round(r.left) + '..' + Math.round(r.right) + ')'); continue; }
			const x = r.left + Math.min(r.width / 2, 6), y = r.top + r.height / 2;
			const hit = document.elementFromPoint(x, y);
			if (hit && hit !== el && !el.contains(hit) && !(el.labels && Array.from(el.labels).some(l => l.contains(hit))) && !hit.contains(el))
				bad.push(describe(el) + ' is covered by ' + describe(hit));
		}
		window.scrollTo(0, 0);
		return bad;
	})()`))
	if width <= 720 { // where a table's rows become cards, each cell labelled by its column
		bad = append(bad, tb.cellsSayTheirColumn(t)...)
	}
	for _, s := range bad {
		t.Errorf("%s at %d px, %.0f%%: %s", page, width, zoom*100, s)
	}
}

// cellsSayTheirColumn returns the table cells that start with their
// column's name as text: a screen reader names a cell's column before the
// cell already, and would say it twice ("Created, Created just now").
func (tb *tab) cellsSayTheirColumn(t *testing.T) []string {
	t.Helper()
	res, err := chromedp.Call(tb.ctx, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		t.Fatalf("the accessibility tree: %v", err)
	}
	byID, headers := map[accessibility.NodeID]*accessibility.Node{}, map[string]bool{}
	for _, n := range res.Nodes {
		byID[n.NodeID] = n
		if !n.Ignored && axString(n.Role) == "columnheader" {
			headers[axString(n.Name)] = true
		}
	}
	var bad []string
	for _, n := range res.Nodes {
		if n.Ignored || axString(n.Role) != "cell" || len(n.ChildIDs) == 0 {
			continue
		}
		first := byID[n.ChildIDs[0]]
		for first != nil && axString(first.Role) == "generic" && len(first.ChildIDs) > 0 { // a block of the cell's own
			first = byID[first.ChildIDs[0]]
		}
		if first != nil && axString(first.Role) == "StaticText" && headers[axString(first.Name)] {
			bad = append(bad, fmt.Sprintf("a cell says its column's name: %q", axString(n.Name)))
		}
	}
	return bad
}

// tabTo presses Tab until what sel finds has focus, as a person with a
// keyboard does, and fails t if it never does.
func (tb *tab) tabTo(t *testing.T, sel string) {
	t.Helper()
	for range 80 {
		tb.do(t, chromedp.KeyEvent(kb.Tab))
		if run(t, tb.ctx, chromedp.Evaluate[bool](`!!document.activeElement && document.activeElement.matches(`+quoteJS(sel)+`)`)) {
			return
		}
	}
	t.Fatalf("80 Tabs never reached %s", sel)
}
