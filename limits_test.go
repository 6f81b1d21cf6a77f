package keygate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/ratelimit"
)

func TestPolicyCacheAnswersEachLimitAndQuotaAndStaysBounded(t *testing.T) {
	c := new(policyCache)
	l := ratelimit.Limit{N: 100, Per: time.Minute, Burst: 100}
	day := &quotaState{QuotaResult: ratelimit.QuotaResult{Limit: 1000}, window: 24 * time.Hour}
	month := &quotaState{QuotaResult: ratelimit.QuotaResult{Limit: 1000}, window: 30 * 24 * time.Hour}
	for range 2 { // the second time from the cache
		for _, tt := range []struct {
			qs   *quotaState
			want string
		}{
			{nil, `"default";q=100;w=60`},
			{day, `"default";q=100;w=60, "quota";q=1000;w=86400`},
			{month, `"default";q=100;w=60, "quota";q=1000;w=2592000`},
		} {
			if got := c.get(l, tt.qs); len(got) != 1 || got[0] != tt.want {
				t.Errorf("get(%v, %+v) = %q, want %q", l, tt.qs, got, tt.want)
			}
		}
	}
	for n := range 2 * maxPolicies {
		l := ratelimit.Limit{N: n + 1, Per: time.Second}
		if got := c.get(l, nil)[0]; got != policyHeader(l, nil) {
			t.Fatalf("limit %d: %q", n+1, got)
		}
	}
	if len(c.m) > maxPolicies {
		t.Errorf("%d policies kept, want at most %d", len(c.m), maxPolicies)
	}
}

// A handler after keygate may edit a response header's values in place
// (Caddy's header directive replaces within them): the RateLimit-Policy
// values of one response are not the next one's, for the route's rate and
// for a key's own.
func TestAResponsesRateLimitPolicyIsItsOwn(t *testing.T) {
	h, st := testHandler(t, &Handler{Rate: "100/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	_, routeRate := issue(t, st, "mail.send")
	name, scopes, rate := "own-rate", []string{"mail.send"}, "5/s"
	res, err := keys.New(st, keys.Options{}).Issue(context.Background(), keys.Spec{Name: &name, Scopes: &scopes, Rate: &rate, Force: true}, "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{routeRate, res.Key} {
		first := serve(h, "POST", "/send", key)
		want := first.Header().Get("Ratelimit-Policy")
		if want == "" {
			t.Fatal("no RateLimit-Policy")
		}
		first.Header()["Ratelimit-Policy"][0] = "edited"
		if got := serve(h, "POST", "/send", key).Header().Get("Ratelimit-Policy"); got != want {
			t.Errorf("the next response's RateLimit-Policy = %q, want %q", got, want)
		}
	}
}

// The same for a denial's dialect error-type header (SES).
func TestADenialsErrorTypeHeaderIsItsOwn(t *testing.T) {
	ses, _ := mailapi.Lookup("ses")
	forms := newDenialForms(ses, "x")
	first := httptest.NewRecorder()
	denial{code: SenderNotAllowed}.write(first, forms)
	name, want := ses.ErrorHeader(codes[SenderNotAllowed].refusal)
	if want == "" || first.Header().Get(name) != want {
		t.Fatalf("%s = %q, want %q", name, first.Header().Get(name), want)
	}
	first.Header()[name][0] = "edited"
	next := httptest.NewRecorder()
	denial{code: SenderNotAllowed}.write(next, forms)
	if got := next.Header().Get(name); got != want {
		t.Errorf("the next denial's %s = %q, want %q", name, got, want)
	}
}

// A key's own burst, without a rate of its own, is the size of its bucket
// at the route's rate: issued with --burst 3, it is what the key gets.
func TestAKeysBurstAppliesToTheRoutesRate(t *testing.T) {
	h, st := testHandler(t, &Handler{Rate: "60/m", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/send"}}})
	_, plain := issue(t, st, "mail.send")
	rec, small := issue(t, st, "mail.send")
	burst := 3
	if _, err := keys.New(st, keys.Options{}).Update(context.Background(), rec.ID, keys.Spec{Burst: &burst}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	allowed := func(key string) (n int) {
		for range 12 {
			if serve(h, "POST", "/send", key).Code == 202 {
				n++
			}
		}
		return n
	}
	if n := allowed(small); n != 3 {
		t.Errorf("a key with burst 3 at the route's 60/m: %d of 12 at once allowed, want 3", n)
	}
	if n := allowed(plain); n != 12 {
		t.Errorf("a key with the route's limit: %d of 12 at once allowed, want all (the route's burst is 60)", n)
	}
}

// A quota loaded while this gateway holds counts it has not written yet (a
// key given a quota after it sent, or a Redis counter rebuilt) counts them:
// the store's count alone missed up to a flush interval of sends.
func TestAQuotaCountsWhatTheGatewayHasNotWrittenYet(t *testing.T) {
	defer func(d time.Duration) { usageFlushInterval = d }(usageFlushInterval)
	usageFlushInterval = time.Hour // nothing is written during the test
	// Its sends all in one day's quota, not on both sides of midnight.
	testservers.RoomInPeriod(t, now, testservers.Day, 10*time.Second)
	h, st := testHandler(t, &Handler{
		MailAPI: "sendgrid",
		Scopes:  []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}},
	})
	rec, key := issue(t, st, "mail.send")
	send := func(n int) int {
		t.Helper()
		return sendGridSend(t, h, key, n, okNext)
	}
	for range 2 {
		if c := send(3); c != http.StatusAccepted {
			t.Fatalf("a send before the quota: %d", c)
		}
	}
	quota := "8/d"
	if _, err := keys.New(st, keys.Options{}).Update(context.Background(), rec.ID, keys.Spec{Quota: &quota}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.backend.verifier.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := send(3); c == http.StatusAccepted {
		t.Errorf("3 more recipients after 6 on a quota of 8: %d, want refused", c)
	}
	if c := send(2); c != http.StatusAccepted {
		t.Errorf("2 more recipients after 6 on a quota of 8: %d, want 202", c)
	}
}

// A send the provider refused (any status but 2xx) or never received (the
// connection to it failed) keeps its recipients: not counted in the key's
// usage, given back to its quota, so an SDK retrying through a provider's
// outage does not use the quota up. One whose answer was lost after it may
// have gone is counted.
func TestASendThatDidNotGoKeepsItsRecipients(t *testing.T) {
	// Its sends all in one day's quota, not on both sides of midnight.
	testservers.RoomInPeriod(t, now, testservers.Day, 10*time.Second)
	h, st := testHandler(t, &Handler{
		MailAPI: "sendgrid", Quota: "12/d",
		Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}},
	})
	rec, key := issue(t, st, "mail.send")
	answer := func(status int, err error) caddyhttp.Handler {
		return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			io.Copy(io.Discard, r.Body)
			if err != nil {
				return err
			}
			w.WriteHeader(status)
			return nil
		})
	}
	refused := answer(0, caddyhttp.Error(http.StatusBadGateway, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}))
	send := func(next caddyhttp.Handler) int {
		t.Helper()
		return sendGridSend(t, h, key, 4, next)
	}
	for i, next := range []caddyhttp.Handler{answer(503, nil), answer(400, nil), refused, answer(503, nil), answer(500, nil)} {
		if c := send(next); c == http.StatusUnauthorized {
			t.Fatalf("attempt %d of a send that never went: refused for its quota", i+1)
		}
	}
	for i := range 2 {
		if c := send(answer(202, nil)); c != http.StatusAccepted {
			t.Fatalf("send %d of 4 recipients on a quota of 12: %d", i+1, c)
		}
	}
	lost := answer(0, caddyhttp.Error(http.StatusBadGateway, context.DeadlineExceeded)) // the answer timed out
	if c := send(lost); c != http.StatusBadGateway {
		t.Fatalf("a send whose answer was lost: %d", c)
	}
	h.backend.flushUsage()
	u, err := st.Usage(context.Background(), rec.ID, time.Now().Add(-time.Hour))
	if err != nil || u.Recipients != 12 {
		t.Errorf("usage after 5 sends that did not go, 2 that did and 1 that may have: %+v (%v), want 12 recipients", u, err)
	}
	if c := send(answer(202, nil)); c != http.StatusUnauthorized { // quota_exceeded as SendGrid answers it
		t.Errorf("4 more recipients after 12 counted on a quota of 12: %d, want quota_exceeded", c)
	}
}

// A send decided in a day's last millisecond and answered in the next day
// counts in the day it was decided: its quota and its usage hour, which a
// restart loads the day's count from. The next day's quota is whole, the
// month's too at a month's end. (It passed as it was; it pins that the
// request's one clock reading decides all three.)
func TestASendInFlightAtMidnightCountsInTheDayItWasDecided(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	midnight := time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC) // a month's end too
	var clock atomic.Int64
	now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	clock.Store(midnight.Add(-time.Millisecond).UnixNano())
	h, st := testHandler(t, &Handler{
		MailAPI: "sendgrid", Quota: "3/d",
		Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}},
	})
	rec, key := issue(t, st, "mail.send")
	monthly := "4/mo"
	other, otherKey := issue(t, st, "mail.send")
	if _, err := keys.New(st, keys.Options{}).Update(context.Background(), other.ID, keys.Spec{Quota: &monthly}, "test"); err != nil {
		t.Fatal(err)
	}
	inFlight := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		io.Copy(io.Discard, r.Body)
		clock.Store(midnight.Add(500 * time.Millisecond).UnixNano()) // the provider answers after midnight
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	if c := sendGridSend(t, h, key, 2, inFlight); c != http.StatusAccepted {
		t.Fatalf("2 recipients of 3 a millisecond before midnight: %d", c)
	}
	clock.Store(midnight.Add(-time.Millisecond).UnixNano())
	if c := sendGridSend(t, h, otherKey, 3, inFlight); c != http.StatusAccepted {
		t.Fatalf("3 recipients of 4 a month a millisecond before the month's end: %d", c)
	}
	for i, c := range []struct {
		key  string
		n    int
		want int
	}{
		{key, 3, http.StatusAccepted},     // a new day: 3 of 3
		{key, 1, http.StatusUnauthorized}, // quota_exceeded as SendGrid answers it
		{otherKey, 4, http.StatusAccepted},
		{otherKey, 1, http.StatusUnauthorized},
	} {
		if got := sendGridSend(t, h, c.key, c.n, okNext); got != c.want {
			t.Errorf("send %d after midnight, %d recipients: %d, want %d", i+1, c.n, got, c.want)
		}
	}
	h.backend.flushUsage()
	for _, c := range []struct {
		id    string
		since time.Time
		want  int64
		what  string
	}{
		{rec.ID, midnight.Add(-time.Hour), 5, "since the day's last hour"},
		{rec.ID, midnight, 3, "since midnight (what a restart loads the new day's quota from)"},
		{other.ID, midnight.AddDate(0, -1, 0), 7, "since the month began"},
		{other.ID, midnight, 4, "since the next month began"},
	} {
		if n, err := st.Recipients(context.Background(), c.id, c.since); err != nil || n != c.want {
			t.Errorf("recipients %s: %d (%v), want %d", c.what, n, err, c.want)
		}
	}
}

// sendGridSend sends a SendGrid send to n recipients with key through h to
// next, and returns the status.
func sendGridSend(t *testing.T, h *Handler, key string, n int, next caddyhttp.Handler) int {
	t.Helper()
	var to []string
	for i := range n {
		to = append(to, fmt.Sprintf(`{"email":"r%d@example.org"}`, i))
	}
	body := `{"personalizations":[{"to":[` + strings.Join(to, ",") + `]}],"from":{"email":"a@example.com"}}`
	r := httptest.NewRequest("POST", "/v3/mail/send", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w.Code
}
