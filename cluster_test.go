package keygate

import (
	"testing"

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
