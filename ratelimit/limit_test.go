package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestParseLimit(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Limit
		wantErr string
	}{
		{name: "per second", in: "5/s", want: Limit{N: 5, Per: time.Second}},
		{name: "per minute", in: "100/m", want: Limit{N: 100, Per: time.Minute}},
		{name: "per hour", in: "1000/h", want: Limit{N: 1000, Per: time.Hour}},
		{name: "per day", in: "50000/d", want: Limit{N: 50000, Per: 24 * time.Hour}},
		{name: "a missing slash names the syntax", in: "100", wantErr: `want <N>/<s|m|h|d>`},
		{name: "an unknown unit is named", in: "100/w", wantErr: `unit "w"`},
		{name: "a zero count is refused", in: "0/m", wantErr: `count "0"`},
		{name: "a non-numeric count is refused", in: "ten/m", wantErr: `count "ten"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLimit(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("ParseLimit(%q) error = %v, want one naming the input and %s", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseLimit(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("String() = %q, want it to round-trip to %q", s, tt.in)
			}
		})
	}
}

func TestParseQuota(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		n       int64
		period  QuotaPeriod
		wantErr string
	}{
		{name: "per day", in: "1000/d", n: 1000, period: Day},
		{name: "per calendar month", in: "20000/mo", n: 20000, period: Month},
		{name: "an hourly quota is not a quota period", in: "10/h", wantErr: `unit "h"`},
		{name: "a negative count is refused", in: "-1/d", wantErr: `count "-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, period, err := ParseQuota(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseQuota(%q) error = %v, want one naming %s", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || n != tt.n || period != tt.period {
				t.Fatalf("ParseQuota(%q) = %d, %v, %v; want %d, %v", tt.in, n, period, err, tt.n, tt.period)
			}
		})
	}
}
