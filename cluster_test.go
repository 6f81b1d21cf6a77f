package keygate

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

func TestRedisLimitsAndQuotasLeaseUnlessExact(t *testing.T) {
	rd := testservers.StartRedis(t)
	url := "redis://" + rd.Addr + "/0"
	leased, _ := testHandler(t, &Handler{RateLimitRedis: url})
	exact, _ := testHandler(t, &Handler{RateLimitRedis: url, RateLimitExact: true})
	if leased.limiter() != leased.shared.leased {
		t.Error("ratelimit redis without exact does not use leases")
	}
	if exact.limiter() != exact.shared.exact {
		t.Error("ratelimit redis with exact does not ask Redis per request")
	}
	if leased.quotaCounter() != leased.shared.leasedQuotas {
		t.Error("ratelimit redis without exact does not lease quota blocks")
	}
	if exact.quotaCounter() != exact.shared.exactQuotas {
		t.Error("ratelimit redis with exact does not ask Redis per send")
	}
	if exact.shared != leased.shared {
		t.Error("two handlers on one Redis URL do not share its client and leases")
	}
}

// A Redis URL go-redis cannot read is refused without quoting its password,
// whole or in part (net/url's errors quote the URL up to where they stop).
func TestARedisURLThatCannotBeReadKeepsItsPassword(t *testing.T) {
	for _, url := range []string{
		"redis://:Ab%zzSECRET@127.0.0.1:6379/0",
		"rediss://:Ab#SECRET@127.0.0.1:6379",
		"redis://user:Ab cd SECRET@127.0.0.1:6379",
	} {
		h := &Handler{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"), RateLimitRedis: url}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil {
			t.Errorf("%s: provisioned, want an error", url)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "Ab") {
			t.Errorf("%s: the error quotes the password: %v", url, err)
		}
		if !strings.Contains(err.Error(), "percent-encoded") {
			t.Errorf("%s: %v, want it to say how to write the password", url, err)
		}
	}
}
