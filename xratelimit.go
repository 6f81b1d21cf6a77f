package keygate

import (
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/keygate/caddy-keygate/ratelimit"
)

// xRateLimit holds the X-RateLimit-Limit, -Remaining and -Reset values of
// one response, in one allocation.
type xRateLimit struct {
	vals [3]string
	buf  [64]byte
}

// setXRateLimit reports the key's rate limit the way providers such as
// SendGrid report theirs, for SDKs that read it: X-RateLimit-Limit is the
// rate's count, -Remaining what the bucket holds, -Reset the Unix time at
// which a request will pass again (on a 429, Retry-After from now) or,
// otherwise, at which the bucket is full. On a proxied response that
// carries the provider's own, the status writer keeps one side's
// (ownedHeaders). It reports whether it set them.
func setXRateLimit(hdr http.Header, res ratelimit.Result, t time.Time) bool {
	if res.Limit.N <= 0 {
		return false
	}
	wait := res.Reset
	if !res.Allowed {
		wait = res.RetryAfter
	}
	// Rounded up, so a client waiting until then is not early.
	reset := (t.Add(wait).UnixNano() + int64(time.Second) - 1) / int64(time.Second)
	x := new(xRateLimit)
	b := x.buf[:0]
	for i, n := range [3]int64{int64(res.Limit.N), int64(res.Remaining), reset} {
		start := len(b)
		b = strconv.AppendInt(b, n, 10)
		// The buffer is never written again, so the strings may share it.
		x.vals[i] = unsafe.String(&b[start], len(b)-start)
	}
	hdr["X-Ratelimit-Limit"] = x.vals[0:1:1]
	hdr["X-Ratelimit-Remaining"] = x.vals[1:2:2]
	hdr["X-Ratelimit-Reset"] = x.vals[2:3:3]
	return true
}
