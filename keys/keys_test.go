package keys

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
)

var ctx = context.Background()

// fixture is a Service on a fresh SQLite store with a settable clock and a
// count of the writes it announced.
type fixture struct {
	*Service
	st     store.Store
	t      time.Time
	writes int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	f.Service = New(st, Options{
		Now:        func() time.Time { return f.t },
		AfterWrite: func(context.Context, []store.Digest) { f.writes++ },
	})
	return f
}

func str(s string) *string       { return &s }
func list(v ...string) *[]string { return &v }
func boolean(b bool) *bool       { return &b }
func spec(name string, scopes ...string) Spec {
	return Spec{Name: str(name), Scopes: list(scopes...)}
}

func (f *fixture) issue(t *testing.T, s Spec) *Result {
	t.Helper()
	res, err := f.Issue(ctx, s, "test")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func isInvalid(err error) bool {
	var e *InvalidError
	return errors.As(err, &e)
}

func isConflict(err error) bool {
	var e *ConflictError
	return errors.As(err, &e)
}

func TestSpecRefusesWhatWouldMisleadLater(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		spec Spec
		want string // "" = accepted
	}{
		{"a future expiry", Spec{Expires: str("2027-01-31T00:00:00Z")}, ""},
		{"a duration", Spec{Expires: str("90d")}, ""},
		{"no expiry", Spec{Expires: str("never")}, ""},
		{"an expiry in the past", Spec{Expires: str("2020-01-01T00:00:00Z")}, "not in the future"},
		{"an expiry of right now", Spec{Expires: str(now.Format(time.RFC3339))}, "not in the future"},
		{"a negative duration", Spec{Expires: str("-5d")}, "want a duration"},
		{"an expiry of 0 (never, or now?)", Spec{Expires: str("0")}, `say "never" for no expiry`},
		{"an expiry after what the store keeps", Spec{Expires: str("9999-01-01T00:00:00Z")}, "later than the store can keep (2262)"},
		{"a duration past what the store keeps", Spec{Expires: str("100000d")}, "later than the store can keep (2262)"},
		{"an expiry the store keeps", Spec{Expires: str("2262-01-01T00:00:00Z")}, ""},
		{"a name with unicode", Spec{Name: str("Bestellbestätigung – shop")}, ""},
		{"a name with an escape sequence", Spec{Name: str("esc\x1b[31mRED")}, "printable"},
		{"a name with a line break", Spec{Name: str("one\ntwo")}, "printable"},
		{"a name that is not UTF-8", Spec{Name: str("bad\xffname")}, "printable"},
		{"a name with a right-to-left override", Spec{Name: str("invoice\u202egpj.exe")}, "printable"},
		{"a name with a zero-width space", Spec{Name: str("a\u200bb")}, "printable"},
		{"an owner with a bidi isolate", Spec{Owner: str("team\u2066evil")}, "printable"},
		{"a name with an emoji joined by ZWJ", Spec{Name: str("team \U0001F469\u200d\U0001F4BB")}, ""},
		{"a name with a soft hyphen", Spec{Name: str("Rech\u00adnungen")}, ""},
		{"a name with a subdivision flag", Spec{Name: str("\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F mail")}, ""},
		{"the refused character is named", Spec{Name: str("a\u200bb")}, "U+200B is an invisible format character"},
		{"an owner with a tab", Spec{Owner: str("team\tops")}, "printable"},
		{"an empty owner clears it", Spec{Owner: str("")}, ""},
		{"a scope with capitals", Spec{Scopes: list("Mail.Send")}, `scope "Mail.Send"`},
		{"a bad CIDR", Spec{AllowedIPs: list("nope")}, `allowed IP "nope"`},
		{"a bad sender domain", Spec{SenderDomains: list("not a domain")}, `sender domain "not a domain"`},
		{"a bad rate", Spec{Rate: str("fast")}, `rate "fast"`},
		{"a negative burst", Spec{Burst: new(int)}, ""},
		{"replace and add in one change", Spec{Scopes: list("mail.send"), AddScopes: []string{"x.y"}}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.apply(&store.Record{}, now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !isInvalid(err)):
				t.Errorf("err = %v, want an InvalidError containing %q", err, tc.want)
			}
		})
	}
}

// An expiry is one instant, kept in UTC: an RFC 3339 time at the offset it
// names (T and Z in either case, as RFC 3339 allows), a date alone at the
// start of that day in UTC (as the console's date field reads it; before,
// the CLI and the admin API refused 2027-01-01), a duration from now.
func TestAnExpiryIsOneInstantKeptInUTC(t *testing.T) {
	now := time.Date(2026, 12, 31, 23, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want string // "" = refused
	}{
		{"2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"2027-01-01T09:00:00+02:00", "2027-01-01T07:00:00Z"},
		{"2026-12-31T20:00:00-08:00", "2027-01-01T04:00:00Z"},
		{"2027-01-01T01:00:00.25+01:00", "2027-01-01T00:00:00.25Z"},
		{"2027-01-01t00:00:00z", "2027-01-01T00:00:00Z"},
		{"2027-01-01", "2027-01-01T00:00:00Z"},
		{"2027-02-29", ""},                // no such day
		{"2026-12-31", ""},                // today: its start has passed
		{"2027-01-01T00:00:00+01:00", ""}, // 23:00 UTC: passed
		{"2026-12-31T23:30:00Z", ""},      // now
		{"2026-12-31T23:30:00.001Z", "2026-12-31T23:30:00.001Z"},
		{"1h", "2027-01-01T00:30:00Z"},
		{"2027-01-01 00:00:00Z", ""}, // RFC 3339's space is the reader's, not the format's
	} {
		at, err := parseExpiry(tc.in, now)
		got := ""
		if err == nil && at != nil {
			got = at.Format(time.RFC3339Nano)
			if at.Location() != time.UTC {
				t.Errorf("%q: kept in %v, want UTC", tc.in, at.Location())
			}
		}
		if got != tc.want || tc.want == "" && !isInvalid(err) {
			t.Errorf("%q at %s: %q (%v), want %q", tc.in, now.Format(time.RFC3339), got, err, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"90d", 90 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"1.5d", 36 * time.Hour, false},
		{"12h", 12 * time.Hour, false},
		{"30m", 30 * time.Minute, false},
		{"-2d", -48 * time.Hour, false},
		{"d", 0, true},
		{"", 0, true},
		{"soon", 0, true},
		{"3x", 0, true},
		{"-", 0, true},
		{"+", 0, true},
		{"1d0", 0, true},
		{"1d-1h", 0, true},
		{"1d+1h", 0, true},
		{"100000d", 100000 * 24 * time.Hour, false},
		{"100001d", 0, true},
		{"100000d100000d", 0, true},
		{"100000d100000d100000d", 0, true},
		{"-2562047h100000d", 0, true},
		{"2562047h47m16.854775807s", math.MaxInt64, false},
		{"2562047h47m16.854775808s", 0, true},
	} {
		got, err := ParseDuration(tc.in)
		if tc.bad != (err != nil) || !tc.bad && got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// FuzzParseDuration proves ParseDuration reads exactly the durations
// written as an optional sign and numbers with units (d beside
// time.ParseDuration's), each a count of days up to 100000, and that what
// it reads is their sum, or an error when the sum does not fit.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90d", "1d12h", "1.5d", "-2d", "+3h", "0", "-0", "1d0", "1d-1h", ".5d", "1.d", "100000d100000d100000d",
		"-2562047h100000d", "1µs2μs3us4ns5ms6s7m8h9d", "2562047h47m16.854775807s", "0.0000000001d", "d", "h1", "1e5d", "-", ".d"} {
		f.Add(s)
	}
	grammar := regexp.MustCompile(`^[-+]?(?:0|(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h|d))+)$`)
	part := regexp.MustCompile(`([0-9.]+)(ns|us|µs|μs|ms|s|m|h|d)`)
	units := map[string]int64{"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9, "d": 86400e9}
	limit := new(big.Rat).SetInt64(math.MaxInt64)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDuration(s)
		// The exact sum, and whether each count of days is in bounds.
		exact, parts, ok := new(big.Rat), 0, grammar.MatchString(s)
		if !ok {
			if err == nil {
				t.Fatalf("%q read as %v", s, got)
			}
			return
		}
		for _, m := range part.FindAllStringSubmatch(s, -1) {
			n, good := new(big.Rat).SetString(m[1])
			if !good {
				t.Fatalf("%q: %q", s, m[1])
			}
			if m[2] == "d" && n.Cmp(big.NewRat(100000, 1)) > 0 {
				ok = false
			}
			exact.Add(exact, n.Mul(n, new(big.Rat).SetInt64(units[m[2]])))
			parts++
		}
		if strings.HasPrefix(s, "-") {
			exact.Neg(exact)
		}
		// Rounding: time.ParseDuration's below a nanosecond a part, the
		// float64 of a count of days.
		slack := new(big.Rat).Abs(exact)
		slack.Mul(slack, big.NewRat(1, 1e15)).Add(slack, big.NewRat(int64(2*parts+1), 1))
		over := new(big.Rat).Sub(new(big.Rat).Abs(exact), limit)
		switch {
		case ok && over.Sign() <= 0 && err != nil && over.Cmp(new(big.Rat).Neg(slack)) < 0:
			t.Fatalf("%q: %v", s, err)
		case err != nil:
		case !ok:
			t.Fatalf("%q read as %v", s, got)
		case over.Cmp(slack) > 0:
			t.Fatalf("%q is too long for a duration, read as %v", s, got)
		default:
			diff := new(big.Rat).Sub(new(big.Rat).SetInt64(int64(got)), exact)
			if diff.Abs(diff).Cmp(slack) > 0 {
				t.Fatalf("%q read as %v, want %s ns", s, got, exact.FloatString(1))
			}
		}
	})
}

// A time the store cannot keep (past 2262) is refused where it is typed,
// not failed by the store (a 500 in the admin API); a rotation of a key
// given centuries keeps its successor as long as the store can.
func TestTimesPastWhatTheStoreKeepsAreRefusedAsInput(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, Spec{Name: str("crm"), Scopes: list("mail.send"), Expires: str("2262-01-01T00:00:00Z")})
	if _, err := f.Rotate(ctx, k.ID, 100000*24*time.Hour, "", "t"); !isInvalid(err) || !strings.Contains(err.Error(), "later than the store can keep") {
		t.Errorf("a grace past 2262: %v", err)
	}
	f.t = f.t.AddDate(10, 0, 0)
	next, err := f.Rotate(ctx, k.ID, time.Hour, "", "t")
	if err != nil || next.ExpiresAt == nil || next.ExpiresAt.After(store.MaxTime) {
		t.Errorf("rotating a key that lives until 2262: %+v, %v", next, err)
	}
}

// An allowed IP is kept as the network the gateway compares a client's
// (unmapped) address with: an IPv4 network in IPv6's mapped form allowed
// no client at all.
func TestAllowedIPsAreKeptAsTheGatewayComparesThem(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8":          "10.0.0.0/8",
		"192.0.2.1":           "192.0.2.1/32",
		"::ffff:192.0.2.1":    "192.0.2.1/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"::ffff:0:0/96":       "0.0.0.0/0",
		"2001:db8::1/32":      "2001:db8::/32",
	} {
		if got, err := parseCIDR(in); err != nil || got != want {
			t.Errorf("parseCIDR(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestUpdateEditsSetsAsAPersonExpects(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, Spec{Name: str("crm"), Scopes: list("mail.send"), SenderDomains: list("example.com"), AllowedIPs: list("10.0.0.0/8")})
	update := func(s Spec) (*Result, error) { return f.Update(ctx, k.ID, s, "test") }

	res, err := update(Spec{AddScopes: []string{"templates.read"}, AddSenderDomains: []string{"shop.example.com"}, AddAllowedIPs: []string{"192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Scopes, []string{"mail.send", "templates.read"}) || len(res.SenderDomains) != 2 || len(res.AllowedIPs) != 2 {
		t.Errorf("after adding: %+v", res.Record)
	}
	if res, err = update(Spec{RemoveScopes: []string{"mail.send"}}); err != nil || !slices.Equal(res.Scopes, []string{"templates.read"}) {
		t.Errorf("after removing mail.send: %v, %v", res, err)
	}
	if _, err := update(Spec{RemoveScopes: []string{"mail.send"}}); !isInvalid(err) || !strings.Contains(err.Error(), "does not have it") {
		t.Errorf("removing a scope the key lacks: %v", err)
	}
	if _, err := update(Spec{RemoveScopes: []string{"templates.read"}}); !isInvalid(err) || !strings.HasPrefix(err.Error(), "a key needs at least one scope") {
		t.Errorf("removing the last scope: %v", err)
	}
	if res, err = update(Spec{Scopes: list("mail.*")}); err != nil || !slices.Equal(res.Scopes, []string{"mail.*"}) {
		t.Errorf("--scope replaces the set: %v, %v", res, err)
	}
	if res, err = update(Spec{RemoveAllowedIPs: []string{"192.0.2.1/32"}}); err != nil || len(res.AllowedIPs) != 1 {
		t.Errorf("removing an allowed IP: %v, %v", res, err)
	}
	if _, err := update(Spec{Env: str("test")}); !isInvalid(err) || !strings.Contains(err.Error(), "env cannot be changed") {
		t.Errorf("changing env: %v", err)
	}
	if _, err := update(Spec{Reason: "only a reason"}); !isInvalid(err) || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("an update that names no field: %v", err)
	}
	// A set holds at most MaxEntries, however they are given: a list of
	// many is refused at once, not compared entry by entry for a minute.
	many := func(n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("s%d", i))
		}
		return s
	}
	if res, err = update(Spec{Scopes: &[]string{strings.Join(many(MaxEntries), ",")}}); err != nil || len(res.Scopes) != MaxEntries {
		t.Errorf("%d scopes: %v", MaxEntries, err)
	}
	for name, s := range map[string]Spec{
		"one more added":     {AddScopes: []string{"mail.send"}},
		"one more in a set":  {Scopes: &[]string{strings.Join(many(MaxEntries+1), ",")}},
		"many in one string": {SenderDomains: &[]string{strings.Join(many(100000), ".example,") + ".example"}},
	} {
		start := time.Now()
		if _, err := update(s); !isInvalid(err) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxEntries)) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: %v after %v, want refused at once", name, err, time.Since(start))
		}
	}
}

// A list given with only empty values ("$CIDR" with CIDR unset) is
// refused, on issue and update alike, never read as no list: an empty
// list ([] in JSON, the console's empty box) is the deliberate way to
// clear one, and a list left out leaves it as it is.
func TestAListOfOnlyEmptyValuesIsRefusedNeverReadAsNone(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, Spec{Name: str("crm"), Scopes: list("mail.send"), SenderDomains: list("example.com"), AllowedIPs: list("10.0.0.0/8")})
	for name, s := range map[string]Spec{
		"allowed IPs":           {AllowedIPs: list("")},
		"sender domains":        {SenderDomains: list(" ", " , ")},
		"scopes":                {Scopes: list("\n")},
		"allowed IPs to add":    {AddAllowedIPs: []string{""}},
		"sender domains to add": {AddSenderDomains: []string{","}},
		"allowed IPs to remove": {RemoveAllowedIPs: []string{" "}},
	} {
		if _, err := f.Update(ctx, k.ID, s, "test"); !isInvalid(err) || !strings.Contains(err.Error(), "every value given is empty") {
			t.Errorf("update, %s: %v", name, err)
		}
		if s.RemoveAllowedIPs != nil {
			continue // a new key has nothing to remove
		}
		s.Name, s.Scopes = str("other"), cmp.Or(s.Scopes, list("mail.send"))
		if _, err := f.Issue(ctx, s, "test"); !isInvalid(err) || !strings.Contains(err.Error(), "every value given is empty") {
			t.Errorf("issue, %s: %v", name, err)
		}
	}
	if got, _ := f.Show(ctx, k.ID); len(got.AllowedIPs) != 1 || len(got.SenderDomains) != 1 {
		t.Errorf("a refused update changed the key: %+v", got)
	}
	// Empty values beside a real one are left out, as ever.
	res, err := f.Update(ctx, k.ID, Spec{AllowedIPs: list("", "192.0.2.0/24", " ")}, "test")
	if err != nil || len(res.AllowedIPs) != 1 || res.AllowedIPs[0].String() != "192.0.2.0/24" {
		t.Errorf("a list with one address among empty values: %v, %v", res, err)
	}
	if res, err = f.Update(ctx, k.ID, Spec{AllowedIPs: list(), SenderDomains: list()}, "test"); err != nil || res.AllowedIPs != nil || res.SenderDomains != nil {
		t.Errorf("an empty list clears: %v, %v", res, err)
	}
}

func TestEveryChangeIsAnEventSayingWhatChangedAndWhy(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, Spec{Name: str("crm"), Owner: str("sales"), Scopes: list("mail.send"), Expires: str("90d"), Reason: "CRM launch"})
	steps := []func() error{
		func() error {
			_, err := f.Update(ctx, k.ID, Spec{AddScopes: []string{"templates.read"}, Quota: str("1000/d"), Reason: "needs templates"}, "alice")
			return err
		},
		func() error {
			res, err := f.Update(ctx, k.ID, Spec{Disabled: boolean(true), Reason: "investigating"}, "bob")
			if err == nil && res.Unchanged {
				return errors.New("a change is marked Unchanged")
			}
			return err
		},
		func() error {
			res, err := f.Update(ctx, k.ID, Spec{Disabled: boolean(true)}, "bob") // no change: no event
			if err == nil && !res.Unchanged {
				return errors.New("a no-op update is not marked Unchanged")
			}
			return err
		},
		func() error {
			_, err := f.Revoke(ctx, Revocation{ID: k.ID, Reason: "left"}, "carol")
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	evs, err := f.Events(ctx, k.ID, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s by %s (%s): %s", e.Action, e.Actor, e.Reason, e.Detail))
	}
	want := []string{
		"issued by test (CRM launch): name: crm; owner: sales; env: live; scopes: mail.send; expires: 2027-02-21T12:00:00Z",
		"updated by alice (needs templates): scopes: mail.send → mail.send templates.read; quota: none → 1000/d",
		"disabled by bob (investigating): disabled: no → yes",
		"revoked by carol (left): ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f.writes != 4 {
		t.Errorf("AfterWrite ran %d times for 4 changes (a no-op update is none)", f.writes)
	}
	// A rotation's new key starts its history with the rotation's reason.
	old := f.issue(t, spec("billing", "mail.send"))
	next, err := f.Rotate(ctx, old.ID, time.Hour, "quarterly", "dave")
	if err != nil {
		t.Fatal(err)
	}
	if evs, _ := f.Events(ctx, next.ID, 0, nil); len(evs) != 1 || evs[0].Reason != "quarterly" || evs[0].Actor != "dave" {
		t.Errorf("the new key's events: %+v, want one issued by dave for the rotation's reason", evs)
	}
}

func TestEveryWriteIsAnnouncedToTheGateways(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, spec("a", "mail.send"))
	if f.writes != 1 {
		t.Fatalf("issue: %d writes announced", f.writes)
	}
	if _, err := f.Update(ctx, k.ID, Spec{Name: str("b")}, "t"); err != nil || f.writes != 2 {
		t.Fatalf("update: %v, %d", err, f.writes)
	}
	next, err := f.Rotate(ctx, k.ID, time.Hour, "", "t")
	if err != nil || f.writes != 3 {
		t.Fatalf("rotate: %v, %d", err, f.writes)
	}
	if _, err := f.Revoke(ctx, Revocation{ID: next.ID}, "t"); err != nil || f.writes != 4 {
		t.Fatalf("revoke: %v, %d", err, f.writes)
	}
	// Failed changes announce nothing.
	f.Rotate(ctx, next.ID, time.Hour, "", "t")
	f.Update(ctx, "key_nope", Spec{Name: str("x")}, "t")
	if f.writes != 4 {
		t.Errorf("failed changes announced %d writes", f.writes-4)
	}
}

func TestRevokeAndRotateRefuseWhatCannotBe(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, Spec{Name: str("a"), Scopes: list("mail.send"), Owner: str("sales")})
	if _, err := f.Revoke(ctx, Revocation{Owner: "nobody"}, "t"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `owner "nobody"`) {
		t.Errorf("revoking the keys of an owner with none: %v", err)
	}
	if _, err := f.Revoke(ctx, Revocation{Key: "kg_live_notakey"}, "t"); !isInvalid(err) || strings.Contains(err.Error(), "notakey") {
		t.Errorf("revoking a malformed key: %v (must not quote it)", err)
	}
	if _, err := f.Revoke(ctx, Revocation{ID: k.ID, Owner: "sales"}, "t"); !isInvalid(err) {
		t.Errorf("an id and an owner: %v", err)
	}
	if _, err := f.Revoke(ctx, Revocation{Key: k.Key, Reason: "pastebin"}, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Rotate(ctx, k.ID, 0, "", "t"); !isConflict(err) {
		t.Errorf("rotating a revoked key: %v", err)
	}
	if _, err := f.Update(ctx, k.ID, Spec{Name: str("b")}, "t"); !isConflict(err) {
		t.Errorf("updating a revoked key: %v", err)
	}
	if _, err := f.Show(ctx, "key_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown id: %v", err)
	}
	if _, err := f.Events(ctx, "key_nope", 0, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("events of an unknown id: %v", err)
	}
}

func TestScopesNoRouteUsesAreRefusedUnlessForced(t *testing.T) {
	f := newFixture(t)
	// While no gateway has reported its routes, nothing is known to check.
	if res := f.issue(t, spec("early", "mail.sned")); len(res.Warnings) != 0 {
		t.Errorf("warnings with no known routes: %v", res.Warnings)
	}
	if err := f.st.RecordRouteScopes(ctx, []store.RouteScope{
		{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send", SeenAt: f.t},
		{Scope: "templates.read", Path: "/v3/templates*", SeenAt: f.t.Add(-time.Hour)},
		{Scope: "stats.read", Path: "/v3/stats", SeenAt: f.t.Add(-RouteScopeWindow - time.Hour)}, // gone
	}); err != nil {
		t.Fatal(err)
	}
	for _, ok := range [][]string{{"mail.send"}, {"mail.*"}, {"*"}, {"templates.read", "mail.send"}} {
		if _, err := f.Issue(ctx, spec("ok", ok...), "t"); err != nil {
			t.Errorf("scopes %v: %v", ok, err)
		}
	}
	for _, bad := range []string{"mail.sned", "stats.read", "billing.*"} {
		_, err := f.Issue(ctx, spec("bad", bad), "t")
		if !isInvalid(err) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "mail.send, templates.read") {
			t.Errorf("scope %s: %v", bad, err)
		}
	}
	forced := spec("forced", "mail.sned")
	forced.Force = true
	res := f.issue(t, forced)
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], `"mail.sned"`) {
		t.Errorf("a forced unknown scope warns: %v", res.Warnings)
	}
	// Adding an unknown scope on update is checked too; keeping one is not.
	if _, err := f.Update(ctx, res.ID, Spec{AddScopes: []string{"x.y"}}, "t"); !isInvalid(err) {
		t.Errorf("adding an unknown scope: %v", err)
	}
	if _, err := f.Update(ctx, res.ID, Spec{Name: str("renamed")}, "t"); err != nil {
		t.Errorf("renaming a key that holds an unknown scope: %v", err)
	}
}

func TestDuplicateNamesOfOneOwnerWarn(t *testing.T) {
	f := newFixture(t)
	f.issue(t, Spec{Name: str("crm"), Owner: str("sales"), Scopes: list("mail.send")})
	if res := f.issue(t, Spec{Name: str("CRM"), Owner: str("sales"), Scopes: list("mail.send")}); len(res.Warnings) != 1 {
		t.Errorf("same name, same owner: %v", res.Warnings)
	}
	if res := f.issue(t, Spec{Name: str("crm"), Owner: str("ops"), Scopes: list("mail.send")}); len(res.Warnings) != 0 {
		t.Errorf("same name, another owner: %v", res.Warnings)
	}
}

// An owner's view pages forward through the events of its keys alone, as
// the whole log pages: the first limit after the cursor, oldest first.
func TestAnOwnersEventsPageForwardFromACursor(t *testing.T) {
	f := newFixture(t)
	sales := f.ForOwner("sales")
	var want []int64
	for i := range 3 {
		f.issue(t, Spec{Name: str(fmt.Sprintf("theirs-%d", i)), Owner: str("ops"), Scopes: list("mail.send")})
		res, err := sales.Issue(ctx, spec(fmt.Sprintf("mine-%d", i), "mail.send"), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sales.Update(ctx, res.ID, Spec{Name: str(fmt.Sprintf("renamed-%d", i))}, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	all, err := sales.Events(ctx, "", 0, nil)
	if err != nil || len(all) != 6 {
		t.Fatalf("the owner's events: %d, %v; want 6", len(all), err)
	}
	for _, e := range all {
		want = append(want, e.Seq)
	}
	var got []int64
	var after int64
	for pages := 0; ; pages++ {
		page, err := sales.Events(ctx, "", 4, &after)
		if err != nil {
			t.Fatal(err)
		}
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			got = append(got, e.Seq)
		}
		after = page[len(page)-1].Seq
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged forward 4 at a time: %v, want %v", got, want)
	}
}

func TestAViewOfOneOwnerNeverReachesAnothersKeys(t *testing.T) {
	f := newFixture(t)
	theirs := f.issue(t, Spec{Name: str("theirs"), Owner: str("ops"), Scopes: list("mail.send")})
	sales := f.ForOwner("sales")
	mine, err := sales.Issue(ctx, spec("mine", "mail.send"), "alice")
	if err != nil || mine.Owner != "sales" {
		t.Fatalf("issuing on the view: %v, %+v", err, mine)
	}
	if _, err := sales.Issue(ctx, Spec{Name: str("x"), Owner: str("ops"), Scopes: list("mail.send")}, "alice"); !isInvalid(err) {
		t.Errorf("issuing for another owner: %v", err)
	}
	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of another owner's key: %v, want not found", what, err)
		}
	}
	_, err = sales.Show(ctx, theirs.ID)
	notFound("show", err)
	_, err = sales.Update(ctx, theirs.ID, Spec{Name: str("pwned")}, "alice")
	notFound("update", err)
	_, err = sales.Update(ctx, mine.ID, Spec{Owner: str("ops")}, "alice")
	if !isInvalid(err) {
		t.Errorf("giving a key away: %v", err)
	}
	_, err = sales.Rotate(ctx, theirs.ID, 0, "", "alice")
	notFound("rotate", err)
	_, err = sales.Revoke(ctx, Revocation{ID: theirs.ID}, "alice")
	notFound("revoke", err)
	_, err = sales.Revoke(ctx, Revocation{Owner: "ops"}, "alice")
	notFound("revoke by owner", err)
	_, err = sales.Usage(ctx, theirs.ID, 0)
	notFound("usage", err)
	_, err = sales.Events(ctx, theirs.ID, 0, nil)
	notFound("events", err)
	recs, _ := sales.List(ctx, "", true)
	page, _ := sales.Find(ctx, Query{Owner: "ops"})
	evs, _ := sales.Events(ctx, "", 0, nil)
	audit, _ := sales.Audit(ctx, 0, 0)
	if len(recs) != 1 || len(page.Keys) != 1 || recs[0].ID != mine.ID || page.Keys[0].ID != mine.ID {
		t.Errorf("lists hold another owner's keys: %v / %v", ids(recs), ids(page.Keys))
	}
	for _, e := range evs {
		if e.KeyID != mine.ID {
			t.Errorf("events hold another owner's event %+v", e)
		}
	}
	for _, e := range audit.NoExpiry {
		if e.ID != mine.ID {
			t.Errorf("the audit lists another owner's key %s", e.ID)
		}
	}
	act, _ := sales.Activity(ctx, []*store.Record{theirs.Record}, f.t.Add(-time.Hour))
	if len(act) != 0 {
		t.Errorf("activity of another owner's key: %v", act)
	}
	// Whoever holds a key may stop it; the record of another owner's key
	// is not shown, neither when asked what would be revoked nor after.
	targets, err := sales.RevokeTargets(ctx, Revocation{Key: theirs.Key})
	if err != nil || len(targets) != 1 || targets[0].ID != theirs.ID || targets[0].Name != "" || targets[0].Owner != "" {
		t.Errorf("what revoking another owner's leaked key would revoke: %v, %+v", err, targets)
	}
	rev, err := sales.Revoke(ctx, Revocation{Key: theirs.Key}, "alice")
	if err != nil || len(rev) != 1 || rev[0].RevokedAt == nil || rev[0].Name != "" {
		t.Errorf("revoking another owner's leaked key by value: %v, %+v", err, rev)
	}
}

// made issues a mail.send key, changes its record with mod (if set) and
// moves the clock a minute on, so keys made one after another sort by age.
func (f *fixture) made(t *testing.T, name, owner, env string, mod func(*store.Record)) string {
	t.Helper()
	res := f.issue(t, Spec{Name: str(name), Owner: str(owner), Env: str(env), Scopes: list("mail.send")})
	if mod != nil {
		if _, err := f.st.UpdateKey(ctx, res.ID, nil, func(r *store.Record) error { mod(r); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	f.t = f.t.Add(time.Minute)
	return res.ID
}

func TestFindSearchesFiltersSortsAndPages(t *testing.T) {
	f := newFixture(t)
	used := func(ago time.Duration) func(*store.Record) {
		return func(r *store.Record) { at := f.t.Add(-ago); r.LastUsedAt = &at }
	}
	crm := f.made(t, "crm-sync", "sales", "live", used(time.Hour))
	shop := f.made(t, "shop-orders", "web", "live", used(time.Minute))
	staging := f.made(t, "staging", "web", "test", nil)
	off := f.made(t, "paused", "web", "live", func(r *store.Record) { r.Disabled = true })
	soon := f.made(t, "temp", "ops", "live", func(r *store.Record) { at := f.t.Add(24 * time.Hour); r.ExpiresAt = &at })
	gone := f.made(t, "old", "ops", "live", func(r *store.Record) { at := f.t; r.RevokedAt = &at })
	for _, tc := range []struct {
		name string
		q    Query
		want []string
	}{
		{"every live key, most recently used first, never used last (newest first)", Query{}, []string{shop, crm, soon, off, staging}},
		{"search matches name, owner or id, any case", Query{Search: "WEB"}, []string{shop, off, staging}},
		{"search by id", Query{Search: crm}, []string{crm}},
		{"env", Query{Env: "test"}, []string{staging}},
		{"active includes expiring", Query{Status: StatusActive}, []string{shop, crm, soon, staging}},
		{"expiring", Query{Status: StatusExpiring}, []string{soon}},
		{"disabled", Query{Status: StatusDisabled}, []string{off}},
		{"revoked", Query{Status: StatusRevoked}, []string{gone}},
		{"owner", Query{Owner: "ops", Status: StatusRevoked}, []string{gone}},
		{"by name", Query{Sort: "name"}, []string{crm, off, shop, staging, soon}},
		{"newest first", Query{Sort: "created"}, []string{soon, off, staging, shop, crm}},
		{"soonest expiry first", Query{Sort: "expires"}, []string{soon, off, staging, shop, crm}},
		{"expired", Query{Status: StatusExpired}, nil},
		{"second page of two", Query{PerPage: 2, Page: 2}, []string{soon, off}},
		{"a page past the end is the last", Query{PerPage: 2, Page: 9}, []string{staging}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := f.Find(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p.Keys); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, q := range []Query{{Status: "sleeping"}, {Env: "prod"}, {Sort: "random"}} {
		if _, err := f.Find(ctx, q); !isInvalid(err) {
			t.Errorf("Find(%+v): %v, want an InvalidError", q, err)
		}
	}
}

func TestSelectFiltersAWholeListOldestFirst(t *testing.T) {
	f := newFixture(t)
	crm := f.made(t, "crm-sync", "sales", "live", nil)
	staging := f.made(t, "staging", "web", "test", nil)
	off := f.made(t, "paused", "web", "live", func(r *store.Record) { r.Disabled = true })
	soon := f.made(t, "temp", "ops", "live", func(r *store.Record) { at := f.t.Add(24 * time.Hour); r.ExpiresAt = &at })
	gone := f.made(t, "old", "ops", "live", func(r *store.Record) { at := f.t; r.RevokedAt = &at })
	ended := f.made(t, "ended", "web", "test", func(r *store.Record) { at := f.t; r.ExpiresAt = &at })
	f.t = f.t.Add(time.Minute)
	for _, tc := range []struct {
		name string
		sel  Selection
		want []string
	}{
		{"every key not revoked or expired", Selection{}, []string{crm, staging, off, soon}},
		{"all", Selection{All: true}, []string{crm, staging, off, soon, gone, ended}},
		{"env", Selection{Env: "test", All: true}, []string{staging, ended}},
		{"active includes expiring", Selection{Status: StatusActive}, []string{crm, staging, soon}},
		{"revoked, without all", Selection{Status: StatusRevoked}, []string{gone}},
		{"expired", Selection{Status: StatusExpired}, []string{ended}},
		{"disabled", Selection{Status: StatusDisabled}, []string{off}},
		{"owner and status", Selection{Owner: "web", Status: StatusDisabled}, []string{off}},
		{"owner, env and all", Selection{Owner: "web", Env: "test", All: true}, []string{staging, ended}},
		{"a page", Selection{All: true, Limit: 2}, []string{crm, staging}},
		{"the page after a key", Selection{All: true, After: staging, Limit: 2}, []string{off, soon}},
		{"after a key the filter leaves out", Selection{Status: StatusActive, After: off}, []string{soon}},
		{"after the last key", Selection{All: true, After: ended}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := f.Select(ctx, tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(recs); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// A page after a key nobody may see is refused, not empty: a typo
	// must not read as the end of the list, nor a team learn another's ids.
	for _, sel := range []Selection{{Status: "sleeping"}, {Status: "Revoked"}, {Env: "prod"}, {Limit: -1}, {After: "key_nosuchkey"}} {
		if recs, err := f.Select(ctx, sel); !isInvalid(err) {
			t.Errorf("Select(%+v): %d keys, %v; want an InvalidError, never every key", sel, len(recs), err)
		}
	}
	if recs, err := f.ForOwner("web").Select(ctx, Selection{After: crm}); !isInvalid(err) {
		t.Errorf("a team's Select after another team's key: %d keys, %v; want an InvalidError", len(recs), err)
	}
}

func ids(recs []*store.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func TestAuditCountsInWords(t *testing.T) {
	if times(1) != "once" || times(2) != "twice" || times(7) != "7 times" {
		t.Error("times")
	}
	if plural(1, "request") != "1 request" || plural(3, "request") != "3 requests" {
		t.Error("plural")
	}
}

func TestFindShowsUseStillCountedInMemory(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, spec("crm", "mail.send"))
	// BeforeUsage stands for the gateway's flush of counts it holds.
	svc := New(f.st, Options{Now: func() time.Time { return f.t }, BeforeUsage: func() {
		f.st.AddUsage(ctx, []store.UsageDelta{{KeyID: k.ID, Hour: f.t.Truncate(time.Hour),
			Counts: map[string]int64{"allowed": 1}, LastUsedAt: f.t}})
	}})
	p, err := svc.Find(ctx, Query{})
	if err != nil || len(p.Keys) != 1 || p.Keys[0].LastUsedAt == nil {
		t.Errorf("Find does not show a use the gateway has not written yet: %v %+v", err, p)
	}
}

func TestRelativeRoundsToTheNearestUnit(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for at, want := range map[time.Time]string{
		now.Add(90*24*time.Hour - 3*time.Second):     "in 90 days",
		now.Add(time.Hour - time.Second):             "in 60 minutes",
		now.Add(-(36*time.Hour + time.Minute)):       "36 hours ago",
		now.Add(-(3*24*time.Hour + 13*time.Hour)):    "4 days ago",
		now.Add(30 * time.Second):                    "in 30 seconds",
		now.Add(3*time.Second - 40*time.Millisecond): "in 3 seconds", // rotate --grace 3s, printed a moment later
	} {
		if got := Relative(now, at); got != want {
			t.Errorf("Relative(now, now%+v) = %q, want %q", at.Sub(now), got, want)
		}
	}
}

// A key pasted where an id or free text belongs is refused, and the error
// never repeats it: errors go to terminals, CI logs and admin API clients.
func TestAKeyWhereAnIDOrTextBelongsIsRefusedUnrepeated(t *testing.T) {
	f := newFixture(t)
	res := f.issue(t, spec("crm", "mail.send"))
	key, secret := res.Key, res.Key[len("kg_live_"):][:43]
	refused := func(what string, err error) {
		t.Helper()
		if !isInvalid(err) {
			t.Errorf("%s: %v, want it refused as invalid", what, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error repeats the key: %v", what, err)
		}
	}
	_, err := f.Show(ctx, key)
	refused("show", err)
	_, err = f.Update(ctx, key, Spec{Name: str("x")}, "test")
	refused("update", err)
	_, err = f.Rotate(ctx, key, 0, "", "test")
	refused("rotate", err)
	_, err = f.Usage(ctx, key, 0)
	refused("usage", err)
	_, err = f.Events(ctx, key, 10, nil)
	refused("events", err)
	_, err = f.Revoke(ctx, Revocation{ID: key, Reason: "leaked"}, "test")
	refused("revoke by id", err)
	_, err = f.Revoke(ctx, Revocation{Owner: key, Reason: "leaked"}, "test")
	refused("revoke by owner", err)
	_, err = f.Issue(ctx, spec("crm "+key, "mail.send"), "test")
	refused("a name", err)
	_, err = f.Issue(ctx, Spec{Name: str("crm"), Owner: str(key), Scopes: list("mail.send")}, "test")
	refused("an owner", err)
	_, err = f.Update(ctx, res.ID, Spec{Disabled: boolean(true), Reason: "pasted " + key + " in chat"}, "test")
	refused("a reason", err)
	_, err = f.Revoke(ctx, Revocation{ID: res.ID, Reason: "pasted " + key[:len(key)-3] + " in chat"}, "test")
	refused("a reason with a key cut short", err)
	// A key in a field whose refusal quotes the value: quoted cut.
	_, err = f.Issue(ctx, spec("crm", key), "test")
	refused("a scope", err)
	for field, sp := range map[string]Spec{
		"a sender domain": {SenderDomains: list(key)},
		"an allowed IP":   {AllowedIPs: list(key)},
		"an expiry":       {Expires: str(key)},
		"a rate":          {Rate: str(key)},
		"a quota":         {Quota: str(key)},
		"an env":          {Env: str(key)},
		"a prefix":        {Prefix: str(key)},
	} {
		sp.Name, sp.Scopes = str("crm"), list("mail.send")
		_, err = f.Issue(ctx, sp, "test")
		refused(field, err)
	}

	if recs, err := f.Revoke(ctx, Revocation{Key: key, Reason: "leaked"}, "test"); err != nil || len(recs) != 1 || !recs[0].Revoked() {
		t.Errorf("revoke by value: %v %v", recs, err)
	}
}

// A full-access key that never expires is issued with a warning (the
// console shows it on the key's reveal page, the CLI on stderr); one with
// an expiry or narrower scopes is not.
func TestAFullAccessKeyThatNeverExpiresIsWarnedAbout(t *testing.T) {
	f := newFixture(t)
	warned := func(s Spec) bool {
		t.Helper()
		s.Force = true
		res, err := f.Issue(ctx, s, "test")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range res.Warnings {
			if strings.Contains(w, "full access (*) and never expires") {
				return true
			}
		}
		return false
	}
	if !warned(spec("ops", "*")) {
		t.Error("a full-access key that never expires: no warning")
	}
	if warned(Spec{Name: str("ops2"), Scopes: list("*"), Expires: str("90d")}) || warned(spec("crm", "mail.send")) {
		t.Error("a warning for a key with an expiry or narrow scopes")
	}
	// An update that makes a key so warns too.
	k := f.issue(t, spec("shop", "mail.send"))
	res, err := f.Update(ctx, k.ID, Spec{Scopes: list("*"), Force: true}, "test")
	if err != nil || !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "never expires") }) {
		t.Errorf("an update to full access without expiry: %v, %v; want the warning", res, err)
	}
}

// A rotation's new key lives as long as the old one was given, from the
// rotation on; the old key stops at the grace period's end or its own
// expiry, whichever comes first, and the event and the result say which.
func TestARotatedKeyGetsItsLifetimeAgain(t *testing.T) {
	f := newFixture(t)
	s := spec("a", "mail.send")
	s.Expires = str("90d")
	k := f.issue(t, s)
	f.t = f.t.Add(85 * 24 * time.Hour)
	res, err := f.Rotate(ctx, k.ID, 7*24*time.Hour, "", "t")
	if err != nil {
		t.Fatal(err)
	}
	if want := f.t.Add(90 * 24 * time.Hour); res.ExpiresAt == nil || !res.ExpiresAt.Equal(want) {
		t.Errorf("the new key of a 90-day key rotated on day 85 expires %v, want %v", res.ExpiresAt, want)
	}
	oldEnd := f.t.Add(5 * 24 * time.Hour) // its own expiry, before the 7 days of grace
	if res.OldKeyEnds == nil || !res.OldKeyEnds.Equal(oldEnd) || !res.Replaced.ExpiresAt.Equal(oldEnd) {
		t.Errorf("the old key ends %v (record %v), want %v", res.OldKeyEnds, res.Replaced.ExpiresAt, oldEnd)
	}
	evs, err := f.Events(ctx, k.ID, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := evs[len(evs)-1].Detail; !strings.Contains(d, "old key valid until "+oldEnd.Format(time.RFC3339)) {
		t.Errorf("the rotation's event says %q, want the old key's real end %s", d, oldEnd.Format(time.RFC3339))
	}
	// A key that never expires gives a new key that never expires.
	forever := f.issue(t, spec("b", "mail.send"))
	if res, err := f.Rotate(ctx, forever.ID, time.Hour, "", "t"); err != nil || res.ExpiresAt != nil {
		t.Errorf("rotating a key without expiry: %v, expires %v", err, res.ExpiresAt)
	}
}

// A leaked key is revoked from the line it was found in, as pasted: the
// one key in it is taken, and the text is never quoted back.
func TestALeakedKeyIsFoundInTheLineItWasPastedWith(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, spec("a", "mail.send"))
	other := f.issue(t, spec("b", "mail.send"))
	for _, text := range []string{
		"Authorization: Bearer " + k.Key,
		"SENDGRID_API_KEY=" + k.Key + "\n",
		`{"key":"` + k.Key + `"} and again ` + k.Key,
		"GET /v3/mail/send?api_key%3D" + k.Key + "%26x=1",
		`{"log":"retrying\n` + k.Key + `\tnow"}`,
	} {
		recs, err := f.RevokeTargets(ctx, Revocation{Key: text})
		if err != nil || len(recs) != 1 || recs[0].ID != k.ID {
			t.Errorf("%q: %v, %v", text, recs, err)
		}
	}
	// The key with its last character changed (to "y" for a key that ends
	// in "x" already: one in 62 did, and the test failed).
	last := "x"
	if strings.HasSuffix(k.Key, last) {
		last = "y"
	}
	for _, text := range []string{k.Key + " " + other.Key, "Bearer kg_live_not-a-key", k.Key[:len(k.Key)-1] + last} {
		_, err := f.RevokeTargets(ctx, Revocation{Key: text})
		if !isInvalid(err) || strings.Contains(err.Error(), k.Key[8:20]) || strings.Contains(err.Error(), "not-a-key") {
			t.Errorf("%q: %v, want a refusal that does not quote it", text, err)
		}
	}
	// Adapters tell the two refusals apart by errors.Is.
	if _, err := f.RevokeTargets(ctx, Revocation{Key: "Bearer kg_live_not-a-key"}); !errors.Is(err, ErrNoKeyFound) {
		t.Errorf("no key in the text: %v, want ErrNoKeyFound", err)
	}
	if _, err := f.RevokeTargets(ctx, Revocation{Key: k.Key + " " + other.Key}); !errors.Is(err, ErrSeveralKeys) {
		t.Errorf("two keys in the text: %v, want ErrSeveralKeys", err)
	}
}

// "none", as the history writes an unset setting, gives a key back the
// route's rate (and burst) or quota.
func TestNoneGivesBackTheRoutesRateAndQuota(t *testing.T) {
	f := newFixture(t)
	s := spec("a", "mail.send")
	s.Rate, s.Quota = str("5/m"), str("100/d")
	burst := 3
	s.Burst = &burst
	k := f.issue(t, s)
	res, err := f.Update(ctx, k.ID, Spec{Rate: str("none"), Quota: str("none")}, "t")
	if err != nil || res.Rate != nil || res.Burst != 0 || res.Quota != nil {
		t.Errorf("after --rate none --quota none: %v, rate %v burst %d quota %v", err, res.Rate, res.Burst, res.Quota)
	}
}

// A name's runs of spaces are kept as one, as a page shows them: the name
// is typed back to confirm a revocation.
func TestANamesRunsOfSpacesAreOne(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, spec("  Newsletter   tool ", "mail.send"))
	if k.Name != "Newsletter tool" {
		t.Errorf("name %q, want %q", k.Name, "Newsletter tool")
	}
	if _, err := f.Issue(ctx, spec("two\tparts", "mail.send"), "t"); !isInvalid(err) {
		t.Errorf("a name with a tab: %v, want refused", err)
	}
	long := strings.Repeat("x", 5000)
	if _, err := f.Issue(ctx, spec(long, "mail.send"), "t"); !isInvalid(err) || strings.Contains(err.Error(), long[:100]) {
		t.Errorf("a 5,000-character name: the refusal repeats it: %v", err)
	}
}

// An old key in a rotation's grace period is not "expiring soon": it stops
// on purpose. Its new key is listed if it expires soon.
func TestAuditLeavesARotationsOldKeyOutOfExpiring(t *testing.T) {
	f := newFixture(t)
	s := spec("a", "mail.send")
	s.Expires = str("90d")
	k := f.issue(t, s)
	if _, err := f.Rotate(ctx, k.ID, 24*time.Hour, "", "t"); err != nil {
		t.Fatal(err)
	}
	rep, err := f.Audit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Expiring {
		if e.ID == k.ID {
			t.Errorf("the old key of a rotation is listed as expiring: %+v", e)
		}
	}
}

// An owner spelled almost as another key's is warned of: the key would be
// hidden from that team's console. A new team is not.
func TestAnOwnerSpelledAlmostAsAnotherWarns(t *testing.T) {
	for owner, warn := range map[string]bool{"Raj": true, "raaj": true, "rj": false, "sales": false, "raj": false} {
		f := newFixture(t)
		f.issue(t, Spec{Name: str("a"), Owner: str("raj"), Scopes: list("mail.send")})
		res := f.issue(t, Spec{Name: str("k-" + owner), Owner: str(owner), Scopes: list("mail.send")})
		if got := len(res.Warnings) == 1 && strings.Contains(res.Warnings[0], `but "raj" does`); got != warn {
			t.Errorf("owner %q beside raj: warnings %q, want a warning: %v", owner, res.Warnings, warn)
		}
	}
	if got := oneEditApart("ops", "opss") && oneEditApart("sales", "sales2") && !oneEditApart("web", "ops"); !got {
		t.Error("oneEditApart")
	}
}

// A sender domain given in Unicode is kept in its ASCII form, wildcard
// included, as the gateway compares a sender's.
func TestASenderDomainInUnicodeIsKeptAsASCII(t *testing.T) {
	f := newFixture(t)
	s := spec("a", "mail.send")
	s.SenderDomains = list("Bäckerei.example", "*.café.example")
	k := f.issue(t, s)
	if want := []string{"xn--bckerei-5wa.example", "*.xn--caf-dma.example"}; !slices.Equal(k.SenderDomains, want) {
		t.Errorf("sender domains %q, want %q", k.SenderDomains, want)
	}
}

// A list is typed with commas, line breaks or spaces between its entries,
// in the CLI's flags, the admin API's strings and the console's boxes alike;
// a refused entry is named as typed between commas or lines, not by the
// first of its words.
func TestAListEntryIsRefusedWhole(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		s    Spec
		want string
	}{
		{"a sender domain with spaces", Spec{SenderDomains: list("shop.example.com\nnot a domain")}, `sender domain "not a domain": `},
		{"one added", Spec{AddSenderDomains: []string{"not a domain"}}, `sender domain "not a domain": `},
		{"a scope with a space", Spec{Scopes: list("mail.send, Bad Scope")}, `scope "Bad Scope": `},
		{"an address with a word", Spec{AllowedIPs: list("10.0.0.1 office")}, `allowed IP "10.0.0.1 office": `},
	} {
		s := tc.s
		if s.Scopes == nil {
			s.Scopes = list("mail.send")
		}
		s.Name = str("crm")
		_, err := f.Issue(ctx, s, "t")
		if tc.s.AddSenderDomains != nil {
			k := f.issue(t, spec("crm", "mail.send"))
			_, err = f.Update(ctx, k.ID, Spec{AddSenderDomains: tc.s.AddSenderDomains}, "t")
		}
		if !isInvalid(err) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to start %s", tc.name, err, tc.want)
		}
	}
	s := spec("crm", "mail.send templates.read")
	s.SenderDomains, s.AllowedIPs = list("a.example b.example,\r\nc.example"), list("10.0.0.1 10.0.0.2")
	k := f.issue(t, s)
	if !slices.Equal(k.SenderDomains, []string{"a.example", "b.example", "c.example"}) || len(k.AllowedIPs) != 2 ||
		!slices.Equal(k.Scopes, []string{"mail.send", "templates.read"}) {
		t.Errorf("lists separated by spaces, commas and lines: %q %v %q", k.SenderDomains, k.AllowedIPs, k.Scopes)
	}
}

// FieldErrors names every field that is wrong on its own, one error each,
// where Issue refuses with the first.
func TestFieldErrorsNamesEveryWrongField(t *testing.T) {
	name, rate, quota, bad := "", "lots/m", "10/w", -1
	domains, ips, scopes := []string{"ok.example.com", "not a domain!"}, []string{"nope"}, []string{"mail.send", "Bad Scope"}
	errs := FieldErrors(Spec{Name: &name, Rate: &rate, Quota: &quota, MaxRecipients: &bad, SenderDomains: &domains,
		AllowedIPs: &ips, Scopes: &scopes}, time.Now())
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	want := []string{"allowed IP", "max recipients", "name", "quota", "rate", "scope", "sender domain"}
	if slices.Sort(fields); !slices.Equal(fields, want) {
		t.Errorf("FieldErrors named %q, want %q", fields, want)
	}
	ok := "crm"
	if errs := FieldErrors(Spec{Name: &ok, Scopes: &[]string{"mail.send"}}, time.Now()); len(errs) != 0 {
		t.Errorf("a right spec: %v", errs)
	}
}

// A rotation racing a revocation, a disable or another rotation (two nodes,
// or the console and the CLI) never leaves a live successor of a key stopped
// first, nor two successors: the successor is made from the key as the
// rotation's own transaction reads it.
func TestARotationRacingARevocationLeavesNoLiveSuccessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	var services [2]*Service
	for i := range services {
		st, err := store.Open(ctx, "sqlite:"+path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		services[i] = New(st, Options{})
	}
	a, b := services[0], services[1]
	for i := range 30 {
		res, err := a.Issue(ctx, Spec{Name: str(fmt.Sprint("race-", i)), Scopes: list("mail.send"), Force: true}, "test")
		if err != nil {
			t.Fatal(err)
		}
		id := res.Record.ID
		var wg sync.WaitGroup
		var rotations atomic.Int32
		race := []func(){
			func() {
				if _, err := a.Rotate(ctx, id, time.Hour, "", "a"); err == nil {
					rotations.Add(1)
				} else if !isConflict(err) {
					t.Error(err)
				}
			},
			func() {
				if _, err := b.Rotate(ctx, id, time.Hour, "", "b"); err == nil {
					rotations.Add(1)
				} else if !isConflict(err) {
					t.Error(err)
				}
			},
		}
		switch i % 2 {
		case 0:
			race = append(race, func() { b.Revoke(ctx, Revocation{ID: id, Reason: "leaked"}, "b") })
		case 1:
			race = append(race, func() { b.Update(ctx, id, Spec{Disabled: boolean(true)}, "b") })
		}
		for _, f := range race {
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
		wg.Wait()

		if n := rotations.Load(); n > 1 {
			t.Errorf("round %d: %d rotations of one key succeeded", i, n)
		}
		evs, err := a.Events(ctx, id, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, ev := range evs {
			order = append(order, ev.Action)
		}
		stopped := slices.IndexFunc(order, func(a string) bool { return a == "revoked" || a == "disabled" })
		rotated := slices.Index(order, "rotated")
		if stopped >= 0 && rotated > stopped {
			old, _ := a.Show(ctx, id)
			succ, _ := a.Show(ctx, old.RotatedTo)
			if succ != nil && !succ.Revoked() && !succ.Disabled {
				t.Errorf("round %d: the key was %s before it was rotated (%v), and its successor is live", i, order[stopped], order)
			}
		}
	}
}

// ownerChangingStore gives the key to another owner just before a rotation's
// transaction reads it, as an admin's change racing a team's rotation would.
type ownerChangingStore struct {
	store.Store
	to string
}

func (s ownerChangingStore) RotateKey(ctx context.Context, id string, graceEnd time.Time, ev *store.Event, next func(*store.Record) (*store.Record, error)) (*store.Record, error) {
	if _, err := s.Store.UpdateKey(ctx, id, &store.Event{Action: "updated", KeyID: id, Actor: "admin"}, func(r *store.Record) error {
		r.Owner = s.to
		return nil
	}); err != nil {
		return nil, err
	}
	return s.Store.RotateKey(ctx, id, graceEnd, ev, next)
}

func TestARotationRacingAnOwnerChangeGivesTheOldOwnerNothing(t *testing.T) {
	f := newFixture(t)
	mine := f.issue(t, Spec{Name: str("crm"), Owner: str("sales"), Scopes: list("mail.send")})
	sales := New(ownerChangingStore{Store: f.st, to: "ops"}, Options{}).ForOwner("sales")
	res, err := sales.Rotate(ctx, mine.ID, time.Hour, "", "alice")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotating a key given away meanwhile: %v, %+v; want not found", err, res)
	}
	recs, err := f.List(ctx, "", true)
	if err != nil || len(recs) != 1 || recs[0].RotatedTo != "" {
		t.Errorf("the store after the refused rotation: %v, %+v", err, recs)
	}
}

// ownerChangingUpdates gives a key to another owner just before each
// update's transaction reads it, as an admin's change racing a team's
// revocation would.
type ownerChangingUpdates struct {
	store.Store
	to string
}

func (s ownerChangingUpdates) UpdateKey(ctx context.Context, id string, ev *store.Event, fn func(*store.Record) error) (*store.Record, error) {
	if _, err := s.Store.UpdateKey(ctx, id, &store.Event{Action: "updated", KeyID: id, Actor: "admin"}, func(r *store.Record) error {
		r.Owner = s.to
		return nil
	}); err != nil {
		return nil, err
	}
	return s.Store.UpdateKey(ctx, id, ev, fn)
}

// A revocation by id or by owner revokes only what is still the team's, or
// the owner's, when its transaction reads the key; a leaked key is stopped
// whoever owns it.
func TestARevocationRacingAnOwnerChangeRevokesOnlyWhatIsStillTheirs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rv     func(id, key string) Revocation
		sales  bool // on the view of the sales team
		revoke bool
		// notFound: refused as a key the team cannot see; otherwise the
		// key given away is left out of what was revoked.
		notFound bool
	}{
		{"by id, on the team's view", func(id, _ string) Revocation { return Revocation{ID: id} }, true, false, true},
		{"by owner", func(string, string) Revocation { return Revocation{Owner: "sales"} }, false, false, false},
		{"by owner, on the team's view", func(string, string) Revocation { return Revocation{Owner: "sales"} }, true, false, false},
		{"by its value, on the team's view", func(_, key string) Revocation { return Revocation{Key: key} }, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			mine := f.issue(t, Spec{Name: str("crm"), Owner: str("sales"), Scopes: list("mail.send")})
			svc := New(ownerChangingUpdates{Store: f.st, to: "ops"}, Options{})
			if tc.sales {
				svc = svc.ForOwner("sales")
			}
			recs, err := svc.Revoke(ctx, tc.rv(mine.ID, mine.Key), "alice")
			rec, _ := f.Show(ctx, mine.ID)
			if revoked := rec.RevokedAt != nil; revoked != tc.revoke {
				t.Errorf("revoked = %v (returned %v, %+v); want %v", revoked, err, recs, tc.revoke)
			}
			if errors.Is(err, store.ErrNotFound) != tc.notFound || !tc.notFound && err != nil {
				t.Errorf("Revoke answered %v, want not found: %v", err, tc.notFound)
			}
			if n := len(recs); n != 0 && !tc.revoke || n != 1 && tc.revoke {
				t.Errorf("Revoke returned %d records: %+v", n, recs)
			}
		})
	}
}

// A key pasted into a field that is not for it (the scopes, the sender
// domains, the expiry) is refused without being quoted: the message is
// shown on the console's form and printed to terminals and CI logs, and a
// key is shown only once.
func TestARefusalNeverQuotesAKeyGivenForAnotherField(t *testing.T) {
	f := newFixture(t)
	k := f.issue(t, spec("a", "mail.send"))
	owned := New(f.st, Options{Now: func() time.Time { return f.t }}).ForOwner("sales")
	for name, try := range map[string]func(v string) error{
		"scope": func(v string) error { _, err := f.Issue(ctx, spec("b", v), "t"); return err },
		"sender domain": func(v string) error {
			_, err := f.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), SenderDomains: list(v)}, "t")
			return err
		},
		"allowed IP": func(v string) error {
			_, err := f.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), AllowedIPs: list(v)}, "t")
			return err
		},
		"env": func(v string) error {
			_, err := f.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), Env: &v}, "t")
			return err
		},
		"prefix": func(v string) error {
			_, err := f.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), Prefix: &v}, "t")
			return err
		},
		"expires": func(v string) error {
			_, err := f.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), Expires: &v}, "t")
			return err
		},
		"another owner": func(v string) error {
			_, err := owned.Issue(ctx, Spec{Name: str("b"), Scopes: list("mail.send"), Owner: &v}, "t")
			return err
		},
		"an update":       func(v string) error { _, err := f.Update(ctx, k.ID, Spec{AddScopes: []string{v}}, "t"); return err },
		"grace":           func(v string) error { _, err := ParseGrace(v); return err },
		"a list's status": func(v string) error { _, err := f.Find(ctx, Query{Status: v}); return err },
		"a list's sort":   func(v string) error { _, err := f.Find(ctx, Query{Sort: v}); return err },
	} {
		for _, v := range []string{k.Key, "x " + k.Key} {
			err := try(v)
			if !isInvalid(err) {
				t.Errorf("%s %q: %v, want refused", name, v, err)
				continue
			}
			if strings.Contains(err.Error(), k.Key[8:30]) {
				t.Errorf("%s: the refusal quotes the key: %v", name, err)
			}
		}
	}
}

// FuzzParseDomainAndCIDR proves a sender domain or an allowed IP is kept
// in a canonical form that reads back as itself and still allows what the
// person wrote: the domain (a subdomain, for *.), the address or the
// network's first address, as the gateway compares a client's.
func FuzzParseDomainAndCIDR(f *testing.F) {
	for _, s := range []string{"example.com", "*.Example.COM", "bäckerei.de", "xn--bckerei-5wa.de", "*.", "a..b", "EXAMPLE.com.", "\u212aelvin.example",
		"10.0.0.0/8", "10.1.2.3/8", "192.0.2.1", "::ffff:10.0.0.1", "::ffff:10.0.0.0/104", "::ffff:0:0/96", "2001:db8::/32", "fe80::1%eth0", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseDomain(s); err == nil {
			if again, err := parseDomain(d); err != nil || again != d {
				t.Fatalf("domain %q kept as %q, which reads back as %q, %v", s, d, again, err)
			}
			wrote := strings.TrimSuffix(s, ".")
			if rest, ok := strings.CutPrefix(s, "*."); ok {
				wrote = "mail." + rest
			}
			if !mailapi.DomainAllowed(wrote, []string{d}) {
				t.Fatalf("domain %q kept as %q, which does not allow %q", s, d, wrote)
			}
		}
		if c, err := parseCIDR(s); err == nil {
			p, err := netip.ParsePrefix(c)
			if err != nil || p.Masked().String() != c {
				t.Fatalf("allowed IP %q kept as %q, not a canonical CIDR: %v", s, c, err)
			}
			if again, err := parseCIDR(c); err != nil || again != c {
				t.Fatalf("allowed IP %q kept as %q, which reads back as %q, %v", s, c, again, err)
			}
			first := netip.MustParsePrefix(c).Addr()
			if w, err := netip.ParsePrefix(s); err == nil {
				first = w.Masked().Addr()
			} else if a, err := netip.ParseAddr(s); err == nil {
				first = a
			}
			if !p.Contains(first.WithZone("").Unmap()) {
				t.Fatalf("allowed IP %q kept as %q, which does not allow %s", s, c, first.Unmap())
			}
		}
	})
}

// pagedStore fails a test that asks it for every key at once.
type pagedStore struct {
	store.Store
	t       *testing.T
	largest int
}

func (s *pagedStore) ListKeys(ctx context.Context, f store.ListFilter) ([]*store.Record, error) {
	if f.Limit <= 0 {
		s.t.Errorf("ListKeys(%+v): every key at once, want a page", f)
	}
	recs, err := s.Store.ListKeys(ctx, f)
	s.largest = max(s.largest, len(recs))
	return recs, err
}

// TestAuditReadsTheKeysAPageAtATime: the audit (caddy keys audit, the
// console's review) of a store of 100,000 keys held a record of every key
// at once; it walks them a page at a time, and the review keeps only the
// rows it shows, whatever the store holds.
func TestAuditReadsTheKeysAPageAtATime(t *testing.T) {
	f := newFixture(t)
	const n = 2*auditPage + 7
	var want []string
	for i := range n {
		rec := &store.Record{ID: fmt.Sprintf("key_audit%05d", i), Name: "svc", Env: "live", Scopes: []string{"mail.send"},
			CreatedAt: f.t.Add(-time.Duration(n-i) * time.Minute), Hint: "kg_live_AbCdEfGh…"}
		if i%3 == 0 {
			rec.Scopes = []string{"*"}
		}
		rec.Digest[0], rec.Digest[1] = byte(i), byte(i>>8)
		if err := f.st.CreateKey(ctx, rec, store.Event{Action: "issued"}); err != nil {
			t.Fatal(err)
		}
		want = append(want, rec.ID)
	}
	paged := &pagedStore{Store: f.st, t: t}
	svc := New(paged, Options{Now: func() time.Time { return f.t }})
	rep, err := svc.Audit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rep.NoExpiry {
		got = append(got, e.ID)
	}
	if !slices.Equal(got, want) || len(rep.FullAccess) != (n+2)/3 {
		t.Errorf("audit over pages: %d keys that never expire (want %d, oldest first), %d with full access (want %d)",
			len(got), n, len(rep.FullAccess), (n+2)/3)
	}
	if paged.largest > auditPage {
		t.Errorf("the audit read %d keys at once, want at most %d", paged.largest, auditPage)
	}

	short, err := svc.AuditShown(ctx, 0, 0, 50, "full_access")
	if err != nil {
		t.Fatal(err)
	}
	if len(short.NoExpiry) != 50 || short.NoExpiry[0].ID != want[0] || short.Totals["no_expiry"] != n {
		t.Errorf("a list cut at 50: %d rows, total %d; want the oldest 50 of %d", len(short.NoExpiry), short.Totals["no_expiry"], n)
	}
	if len(short.FullAccess) != (n+2)/3 || short.Totals["full_access"] != (n+2)/3 {
		t.Errorf("the list asked for in full: %d rows, total %d; want %d", len(short.FullAccess), short.Totals["full_access"], (n+2)/3)
	}
}

// FuzzEntryLists proves a list as people type it (a flag's value, a JSON
// string, a form's box: entries between commas, line breaks or spaces) is
// read into a set that reads back as itself however it is joined again,
// each entry canonical, none twice; that removing what was read leaves
// nothing and adding it back gives it again; and that a list refused is
// refused with an InvalidError that quotes at most a bounded, key-free
// part of it.
func FuzzEntryLists(f *testing.F) {
	for _, s := range []string{"mail.send, templates.read", "mail.*\n*", "a.example b.example,\r\nc.example", "*.Example.COM,example.com",
		"10.0.0.0/8, 10.1.2.3/8 ::ffff:10.0.0.0/104", "2001:db8::1\n2001:DB8::1/128", ",,\n, ,", "not a domain", "mail.send,,mail.send",
		"bäckerei.de, xn--bckerei-5wa.de", "\u00a0mail.send\u2028x", "kg_live_" + strings.Repeat("a", 49) + ", mail.send"} {
		f.Add(s)
	}
	kinds := []struct {
		field string
		parse func(string) (string, error)
	}{{"scope", parseScope}, {"sender domain", parseDomain}, {"allowed IP", parseCIDR}}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range kinds {
			set := []string{s}
			got, err := editSet(k.field, nil, &set, nil, nil, k.parse)
			if err != nil {
				var inv *InvalidError
				if !errors.As(err, &inv) {
					t.Fatalf("%s list %q: %T %v, want an InvalidError", k.field, s, err, err)
				}
				if len(err.Error()) > 600 {
					t.Fatalf("%s list of %d bytes: the error repeats it (%d bytes)", k.field, len(s), len(err.Error()))
				}
				continue
			}
			for _, e := range got {
				if p, err := k.parse(e); err != nil || p != e {
					t.Fatalf("%s list %q: entry %q is not canonical: it reads as %q, %v", k.field, s, e, p, err)
				}
			}
			if c := slices.Compact(slices.Sorted(slices.Values(got))); len(c) != len(got) {
				t.Fatalf("%s list %q: %q holds an entry twice", k.field, s, got)
			}
			for _, sep := range []string{",", "\n", " ", ", ", "\r\n"} {
				again := []string{strings.Join(got, sep)}
				if back, err := editSet(k.field, nil, &again, nil, nil, k.parse); err != nil || !slices.Equal(back, got) {
					t.Fatalf("%s list %q read as %q; joined with %q it reads as %q, %v", k.field, s, got, sep, back, err)
				}
			}
			if left, err := editSet(k.field, got, nil, nil, set, k.parse); err != nil || len(left) != 0 {
				t.Fatalf("%s list %q read as %q; removing it from that leaves %q, %v", k.field, s, got, left, err)
			}
			if added, err := editSet(k.field, nil, nil, set, nil, k.parse); err != nil || !slices.Equal(added, got) {
				t.Fatalf("%s list %q read as %q; adding it to none gives %q, %v", k.field, s, got, added, err)
			}
		}
	})
}
