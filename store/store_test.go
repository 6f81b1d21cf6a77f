package store

import (
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Rate
		wantErr  string
	}{
		{"per second", "5/s", Rate{5, time.Second}, ""},
		{"per minute", "100/m", Rate{100, time.Minute}, ""},
		{"per hour", "1000/h", Rate{1000, time.Hour}, ""},
		{"per day", "10000/d", Rate{10000, 24 * time.Hour}, ""},
		{"a missing slash", "100", Rate{}, "want N/s"},
		{"zero", "0/m", Rate{}, "at least 1"},
		{"a negative count", "-1/m", Rate{}, "positive whole number"},
		{"an empty count", "/m", Rate{}, "positive whole number"},
		{"a fraction", "1.5/m", Rate{}, "positive whole number"},
		{"a count too long to be sane", "1234567890123/m", Rate{}, "positive whole number"},
		{"an unknown unit", "100/w", Rate{}, `unit "w"`},
		{"a spelled-out unit", "100/min", Rate{}, `unit "min"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in) {
					t.Fatalf("ParseRate(%q) err = %v, want one naming the input and %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if s := got.String(); s != tc.in {
				t.Errorf("String() = %q, want %q", s, tc.in)
			}
			var back Rate
			if err := back.UnmarshalText([]byte(tc.in)); err != nil || back != tc.want {
				t.Errorf("UnmarshalText(%q) = %v, %v", tc.in, back, err)
			}
		})
	}
}

func TestParseQuota(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Quota
		wantErr  string
	}{
		{"per day", "1000/d", Quota{1000, Day}, ""},
		{"per month", "50000/mo", Quota{50000, Month}, ""},
		{"a missing slash", "1000", Quota{}, "want N/d or N/mo"},
		{"zero", "0/d", Quota{}, "at least 1"},
		{"an hourly unit", "10/h", Quota{}, `unit "h"`},
		{"a month written m", "10/m", Quota{}, `unit "m"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuota(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in) {
					t.Fatalf("ParseQuota(%q) err = %v, want one naming the input and %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseQuota(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if b, _ := got.MarshalText(); string(b) != tc.in {
				t.Errorf("MarshalText() = %q, want %q", b, tc.in)
			}
		})
	}
}

func TestPeriodBounds(t *testing.T) {
	at := time.Date(2031, 12, 31, 23, 30, 0, 0, time.FixedZone("UTC-2", -2*3600)) // 2032-01-01 01:30 UTC
	for _, tc := range []struct {
		name       string
		p          Period
		start, end time.Time
	}{
		{"a day is the UTC day", Day, time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2032, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"a month is the UTC calendar month", Month, time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2032, 2, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Start(at); !got.Equal(tc.start) {
				t.Errorf("Start = %v, want %v", got, tc.start)
			}
			if got := tc.p.End(at); !got.Equal(tc.end) {
				t.Errorf("End = %v, want %v", got, tc.end)
			}
		})
	}
}

func TestRecordCloneIsDeep(t *testing.T) {
	orig := fullRecord("key_clone", time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("clone %+v differs from %+v", c, orig)
	}
	c.Scopes[0] = "changed"
	c.AllowedIPs[0] = netip.MustParsePrefix("0.0.0.0/0")
	c.SenderDomains[0] = "changed"
	c.Rate.N, c.Quota.N = 1, 1
	*c.ExpiresAt, *c.RevokedAt, *c.LastUsedAt = time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(orig, fullRecord("key_clone", time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))) {
		t.Errorf("changing the clone changed the original: %+v", orig)
	}
}

// FuzzParseRateAndQuota proves ParseRate and ParseQuota read exactly
// "N/unit" with N a whole number from 1 to 12 digits, as that number, and
// that what they read is written back as they read it.
func FuzzParseRateAndQuota(f *testing.F) {
	for _, s := range []string{"100/m", "5/s", "1000/h", "10000/d", "50000/mo", "0/m", "-1/m", "/m", "1/", "007/d", "999999999999/s",
		"1000000000000/s", "1/mo/", "1/M", "١/m", "+1/m", "1 /m", "1/m "} {
		f.Add(s)
	}
	rate := regexp.MustCompile(`^[0-9]{1,12}/[smhd]$`)
	quota := regexp.MustCompile(`^[0-9]{1,12}/(?:d|mo)$`)
	f.Fuzz(func(t *testing.T, s string) {
		count, _, _ := strings.Cut(s, "/")
		n, _ := strconv.ParseInt(count, 10, 64)
		r, err := ParseRate(s)
		if want := rate.MatchString(s) && n > 0; want != (err == nil) {
			t.Fatalf("ParseRate(%q) = %v, %v", s, r, err)
		}
		if err == nil {
			if int64(r.N) != n || r.String() != strconv.FormatInt(n, 10)+s[len(count):] {
				t.Fatalf("ParseRate(%q) = %v", s, r)
			}
			var back Rate
			if b, _ := r.MarshalText(); back.UnmarshalText(b) != nil || back != r {
				t.Fatalf("%q: %v written as %q, read back as %v", s, r, b, back)
			}
		}
		q, err := ParseQuota(s)
		if want := quota.MatchString(s) && n > 0; want != (err == nil) {
			t.Fatalf("ParseQuota(%q) = %v, %v", s, q, err)
		}
		if err == nil {
			if q.N != n || q.String() != strconv.FormatInt(n, 10)+s[len(count):] {
				t.Fatalf("ParseQuota(%q) = %v", s, q)
			}
			var back Quota
			if b, _ := q.MarshalText(); back.UnmarshalText(b) != nil || back != q {
				t.Fatalf("%q: %v written as %q, read back as %v", s, q, b, back)
			}
		}
	})
}

// FuzzParseURI proves ParseURI never panics, that what it accepts is its
// own canonical form (the gateway, the console and the CLI compare the
// canonical forms to share one store) and that Open has an engine for it
// (Open panics on one it has not).
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"sqlite:/var/lib/keygate/keys.db", "keys.db", "sqlite:", "sqlite:rel/keys.db", "",
		"postgres://keygate:secret@db:5432/keygate?sslmode=disable", "postgresql://h/db", "mysql://h/db",
		"host=db password=secret", "C:\\keys.db", "file:keys.db", "./sqlite:x", "sqlite:sqlite:x", "/x/../y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		got, err := ParseURI(uri)
		if err != nil {
			return
		}
		again, err := ParseURI(got)
		if err != nil || again != got {
			t.Fatalf("%q: %q, read again %q, %v", uri, got, again, err)
		}
		known := false
		for _, e := range engines {
			for _, p := range e.prefixes {
				known = known || strings.HasPrefix(got, p)
			}
		}
		if !known {
			t.Fatalf("%q: %q names no engine", uri, got)
		}
	})
}
