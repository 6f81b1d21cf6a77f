package browser

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium for the test.
type browser struct {
	ctx context.Context
}

// newBrowser starts Chromium with the flags this machine's closed network
// needs (no QUIC, no background or component fetches), a profile of its
// own, and extra.
func newBrowser(t *testing.T, path string, extra ...chromedp.ExecAllocatorOption) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting Chromium %s: %v", path, err)
	}
	// A stuck page must fail the test, not hang it.
	watchdog := time.AfterFunc(5*time.Minute, cancelAlloc)
	t.Cleanup(func() { watchdog.Stop(); cancel(); cancelAlloc() })
	return &browser{ctx: ctx}
}

// tab is one person's tab, in a browser context (profile) of its own.
type tab struct {
	ctx  context.Context
	site string
	// stall, while set, keeps the tab's form posts from leaving the
	// browser, as a server that does not answer: the navigation they
	// start hangs until it is stopped.
	stall atomic.Bool
	// away, while set, answers the site's sign-in dialog with Cancel, as a
	// person who has signed out and walked away; asked counts the dialogs.
	away  atomic.Bool
	asked atomic.Int32
}

// signIn opens a tab for user that answers the site's basic_auth
// challenges with the user's password, as a person does in the browser's
// sign-in dialog.
func (b *browser) signIn(t *testing.T, g *gateway, user string) *tab {
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	tb := &tab{ctx: ctx, site: g.url}
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	challenged := chromedp.Events(ctx, fetch.AuthRequired)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			if tb.stall.Load() && ev.Request.Method == http.MethodPost {
				continue
			}
			go chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	go func() {
		for ev, err := range challenged {
			if err != nil {
				return
			}
			tb.asked.Add(1)
			answer := &fetch.AuthChallengeResponse{
				Response: fetch.AuthChallengeResponseResponseProvideCredentials,
				Username: user, Password: password + " " + user,
			}
			if tb.away.Load() {
				answer = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			}
			go chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: answer})
		}
	}()
	handle := true
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{
		HandleAuthRequests: &handle,
		Patterns:           []*fetch.RequestPattern{{URLPattern: g.url + "/*"}},
	}); err != nil {
		t.Fatal(err)
	}
	watchPages(t, ctx)
	return tb
}

// watchPages fails t, once it ends, for every script error and every
// refusal by the Content-Security-Policy (the console's stylesheet or
// script blocked, a style attribute, an image of another origin) on the
// pages of ctx: the pages still work without their script, so a policy
// that breaks them would otherwise pass unseen.
func watchPages(t *testing.T, ctx context.Context) {
	var mu sync.Mutex
	var faults []string
	fault := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		faults = append(faults, s)
	}
	go func() {
		for ev, err := range chromedp.Events(ctx, log.EntryAdded) {
			if err != nil {
				return
			}
			if ev.Entry.Source == log.EntrySourceSecurity {
				fault(ev.Entry.URL + ": " + ev.Entry.Text)
			}
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(ctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil {
				text += " " + d.Exception.Description
			}
			fault(fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, text))
		}
	}()
	for _, enable := range []cdp.Command[cdp.Empty, cdp.Empty]{log.Enable, runtime.Enable} {
		if _, err := chromedp.Call(ctx, enable, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range faults {
			t.Errorf("in the browser: %s", f)
		}
	})
}

// run runs an action with a time limit and fails the test on an error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

func (tb *tab) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	run(t, tb.ctx, chromedp.Steps(steps...))
}

// open loads a console path and checks the page's status.
func (tb *tab) open(t *testing.T, path string, status int64) {
	t.Helper()
	tb.respond(t, status, chromedp.Navigate(tb.site+path))
}

// click clicks what sel finds and checks the status of the page it leads to.
func (tb *tab) click(t *testing.T, sel string, status int64) {
	t.Helper()
	tb.respond(t, status, chromedp.Click(chromedp.CSS(sel)))
}

func (tb *tab) respond(t *testing.T, status int64, step chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, step)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	if resp.Status != status {
		t.Fatalf("%s: status %d, want %d:\n%s", resp.URL, resp.Status, status, tb.text(t, "main"))
	}
}

func (tb *tab) location(t *testing.T) string {
	t.Helper()
	return run(t, tb.ctx, chromedp.Location())
}

func (tb *tab) html(t *testing.T) string {
	t.Helper()
	return run(t, tb.ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
}

func (tb *tab) text(t *testing.T, sel string) string {
	t.Helper()
	return run(t, tb.ctx, chromedp.Text(chromedp.CSS(sel)))
}

func (tb *tab) value(t *testing.T, sel string) string {
	t.Helper()
	return run(t, tb.ctx, chromedp.Value(chromedp.CSS(sel)))
}

func (tb *tab) disabled(t *testing.T, sel string) bool {
	t.Helper()
	return run(t, tb.ctx, chromedp.Evaluate[bool](`document.querySelector(`+quoteJS(sel)+`).disabled`))
}

// wantText checks that the text of what sel finds contains want.
func (tb *tab) wantText(t *testing.T, sel, want string) {
	t.Helper()
	if got := tb.text(t, sel); !strings.Contains(got, want) {
		t.Errorf("%s: %q lacks %q", sel, got, want)
	}
}

// waitText waits until what sel finds contains want.
func (tb *tab) waitText(t *testing.T, sel, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	for {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+quoteJS(sel)+`) || {}).innerText || ""`))
		if err == nil && strings.Contains(got, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed %q (last: %q, %v)", sel, want, got, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shot saves a screenshot of the whole page as dir/name.png.
func (tb *tab) shot(t *testing.T, dir, name string) {
	t.Helper()
	png := run(t, tb.ctx, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func quoteJS(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
