package keygate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
)

// Step 5 of the request path: rate limits, recipient quotas and the
// RateLimit headers that report them.

func limitOf(r store.Rate, burst int) ratelimit.Limit {
	if burst <= 0 {
		burst = r.N
	}
	return ratelimit.Limit{N: r.N, Per: r.Per, Burst: burst}
}

// limitFor returns the key's rate limit (its own or the route's default),
// whether it has one, and the RateLimit-Policy header for it. A key's own
// burst applies to the route's rate when the key has none of its own.
func (h *Handler) limitFor(rec *store.Record) (ratelimit.Limit, bool, []string) {
	if rec.Rate == nil {
		switch {
		case h.rate == nil:
			return ratelimit.Limit{}, false, nil
		case rec.Burst > 0 && rec.Burst != h.rate.Burst:
			l := *h.rate
			l.Burst = rec.Burst
			return l, true, h.policy // the policy names the rate, not the burst
		}
		return *h.rate, true, h.policy
	}
	l := limitOf(*rec.Rate, rec.Burst)
	return l, true, h.policies.get(l, nil)
}

func (h *Handler) limiter() ratelimit.Limiter {
	switch {
	case h.shared == nil:
		return h.backend.limits
	case h.RateLimitExact:
		return h.shared.exact
	}
	return h.shared.leased
}

func (h *Handler) quotaCounter() ratelimit.Quotas {
	switch {
	case h.shared == nil:
		return h.backend.quotas
	case h.RateLimitExact:
		return h.shared.exactQuotas
	}
	return h.shared.leasedQuotas
}

// quotaState is a recipient quota decision and the length of its period,
// for the RateLimit headers.
type quotaState struct {
	ratelimit.QuotaResult
	window time.Duration
	// key, start and end name the count reserved in, to give back a send
	// that did not go (releaseQuota).
	key        string
	start, end time.Time
}

// reserveQuota spends n recipients of the key's quota for this period;
// false if the key has no quota.
func (h *Handler) reserveQuota(ctx context.Context, rec *store.Record, n int64, t time.Time) (quotaState, bool, denial) {
	q := h.quota
	if rec.Quota != nil {
		q = rec.Quota
	}
	if q == nil {
		return quotaState{}, false, denial{}
	}
	start, end := q.Per.Start(t), q.Per.End(t)
	// What the store holds and what this gateway counted and has not
	// written yet (up to a flush interval); other nodes' unwritten counts
	// are not seen (docs/cluster.md).
	// This gateway's first: a flush that writes between the two reads is
	// then counted twice (a send refused a little early), never missed.
	// A rotated key shares one count with the keys of its rotation line
	// (quotalineage.go), every one of whose sends in the period it loads.
	root, err := quotaRoot(ctx, h.backend.store, rec)
	if err != nil {
		return quotaState{}, false, denial{code: StoreUnavailable, retryAfter: time.Second}
	}
	load := func(ctx context.Context) (int64, error) {
		// Counts a stop kept in the data directory (the store refused
		// them) are added first, as the first flush after a start would
		// add them: a quota read before that flush missed them, and the
		// key could send them again in the period. Best effort: a file
		// that cannot be added is said by the flush.
		if h.backend.kept.Load() {
			h.backend.addKept(ctx)
		}
		ids := []string{rec.ID}
		if root != rec.ID || rec.RotatedTo != "" {
			var err error
			if ids, err = lineage(ctx, h.backend.store, root); err != nil {
				return 0, err
			}
		}
		var total int64
		for _, id := range ids {
			pending := h.backend.usage.Pending(id, start)
			n, err := h.backend.store.Recipients(ctx, id, start)
			if err != nil {
				return 0, err
			}
			total += n + pending
		}
		return total, nil
	}
	key := root + "/" + string(q.Per)
	res, err := h.quotaCounter().Reserve(ctx, key, q.N, n, start, end, load, t)
	if err != nil {
		return quotaState{}, false, denial{code: StoreUnavailable, retryAfter: time.Second}
	}
	qs := quotaState{QuotaResult: res, window: end.Sub(start), key: key, start: start, end: end}
	if !res.Allowed {
		return qs, true, denial{code: QuotaExceeded, retryAfter: res.Reset, monthly: q.Per == store.Month,
			message: quotaMessage(n, res.Remaining, q)}
	}
	return qs, true, denial{}
}

// quotaMessage says why a send of n recipients did not fit in quota q, of
// which remaining were left: a send larger than the whole quota never will
// (Retry-After cannot help it), one larger than what is left will once the
// period ends; only when nothing is left is the quota used up.
func quotaMessage(n, remaining int64, q *store.Quota) string {
	quota := fmt.Sprintf("the API key's recipient quota of %d per %s", q.N, periodName(q.Per))
	switch {
	case n > q.N:
		return fmt.Sprintf("the message has %s, more than %s allows; send it in smaller requests", countOf(int(n), "recipient"), quota)
	case remaining > 0 && remaining < n:
		return fmt.Sprintf("the message has %s, more than the %d left of %s", countOf(int(n), "recipient"), remaining, quota)
	}
	return quota + " is used up"
}

// releaseQuota gives back the n recipients qs reserved, for a send that
// did not go.
func (h *Handler) releaseQuota(ctx context.Context, qs *quotaState, n int64, t time.Time) {
	h.quotaCounter().Release(ctx, qs.key, n, qs.start, qs.end, t)
}

// mayHaveSent reports whether a send's request may have reached the
// provider and been taken: its answer was 2xx, or the proxy failed after
// the whole request may have gone out (an answer that timed out). A
// provider's refusal (any other status), a connection never made, or one
// that failed before the upstream's transport had read the whole body
// (bodyOut false: the provider's connection reset mid-upload, the client
// gone before the request was passed on) sends nothing, and its recipients
// are neither counted in the key's usage nor kept from its quota: an SDK
// retrying through a provider's outage does not use the quota up. status
// is what the client was answered: after an error that sent nothing, a 2xx
// says the site's handle_errors sent it elsewhere (a fallback provider's
// reverse_proxy there), and it counts. wrote says a transport wrote the
// whole request on some attempt (reverse_proxy's retries, handle_errors'
// fallback): the error that ends the request is the last attempt's, and a
// dial error after an upstream had the send whole does not unsend it.
// partly says the provider may send part of the request and refuse the
// rest with a 400 (a Mailjet batch, mailapi.Message.PartlySent): that 400
// is taken as a 2xx is, its recipients kept whole, as a batch a provider
// takes in part with a 2xx is (Postmark's, SES's bulk).
func mayHaveSent(status int, err error, bodyOut, wrote, partly bool) bool {
	if err == nil || !bodyOut || neverSent(err) && !wrote {
		return status >= 200 && status < 300 || partly && status == http.StatusBadRequest
	}
	return true
}

// neverSent reports whether the next handler's error says the request went
// to no provider: no connection made to any (reverse_proxy wraps its
// dialer's errors, the DNS lookup's among them, in a DialError, which
// errors.As does not see through), or none to try (every upstream marked
// down by its health checks or fail_duration; its error is unexported, so
// it is known by its text).
func neverSent(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	if errors.As(err, new(reverseproxy.DialError)) || errors.As(err, &op) && op.Op == "dial" || errors.As(err, &dns) {
		return true
	}
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == "no upstreams available" {
			return true
		}
	}
	return false
}

// policyCache keeps the RateLimit-Policy values of limits and quotas other
// than the route's default, which keys with their own rate or a quota
// would otherwise format on every request. It keeps at most maxPolicies.
type policyCache struct {
	mu sync.RWMutex
	m  map[policyKey][]string
}

type policyKey struct {
	n      int
	per    time.Duration
	quota  int64
	window time.Duration
}

const maxPolicies = 1024

func (c *policyCache) get(l ratelimit.Limit, qs *quotaState) []string {
	k := policyKey{n: l.N, per: l.Per}
	if qs != nil {
		k.quota, k.window = qs.Limit, qs.window
	}
	c.mu.RLock()
	p, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return p
	}
	p = []string{policyHeader(l, qs)}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[policyKey][]string)
	}
	if len(c.m) < maxPolicies {
		c.m[k] = p
	}
	c.mu.Unlock()
	return p
}

func periodName(p store.Period) string {
	if p == store.Month {
		return "month"
	}
	return "day"
}

// policyHeader formats RateLimit-Policy for a limit and, optionally, a
// quota: `"default";q=100;w=60, "quota";q=1000;w=86400`.
func policyHeader(l ratelimit.Limit, qs *quotaState) string {
	var b []byte
	if l.N > 0 {
		b = append(b, `"default";q=`...)
		b = strconv.AppendInt(b, int64(l.N), 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(l.Per/time.Second), 10)
	}
	if qs != nil {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, `"quota";q=`...)
		b = strconv.AppendInt(b, qs.Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(qs.window/time.Second), 10)
	}
	return string(b)
}

// setRateHeaders sets the IETF draft RateLimit-Policy and RateLimit
// headers. The RateLimit value is built in the request's own buffer.
func (q *request) setRateHeaders(hdr http.Header, policy []string, res ratelimit.Result, qr *quotaState) {
	b := q.rateLimitBuf[:0]
	if res.Limit.N > 0 {
		b = append(b, `"default";r=`...)
		b = strconv.AppendInt(b, int64(res.Remaining), 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, retrySecondsOrZero(res.Reset), 10)
	}
	if qr != nil {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, `"quota";r=`...)
		b = strconv.AppendInt(b, qr.Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, retrySecondsOrZero(qr.Reset), 10)
	}
	if len(b) == 0 {
		return
	}
	q.sw.rateSet = true
	q.policy[0] = policy[0]
	hdr[rateNames[1]] = q.policy[:]
	if &b[0] == &q.rateLimitBuf[0] {
		// The buffer is never written again, so the string may share it.
		q.rateLimit[0] = unsafe.String(&b[0], len(b))
	} else {
		q.rateLimit[0] = string(b)
	}
	hdr[rateNames[0]] = q.rateLimit[:]
}

func retrySecondsOrZero(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
