package keygate

import (
	"testing"
	"time"

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
