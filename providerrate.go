package keygate

import (
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/ratelimit"
)

// providerRate holds the three rate-limit values of one response in a
// provider's own header names, in one allocation.
type providerRate struct {
	vals [3]string
	buf  [64]byte
}

// providerRateNames are the names, canonical, of each way of reporting
// (mailapi.RateHeaders), in the order limit, remaining, reset.
var providerRateNames = [...][3]string{
	mailapi.XRateLimit:      {"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"},
	mailapi.RateLimitFields: {"Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset"},
}

// setProviderRate reports the key's rate limit the way the route's
// provider reports its own, for SDKs that read it: SendGrid's
// X-RateLimit-* (Mailgun's, on a 429), Resend's
// RateLimit-Limit/-Remaining/-Reset. Limit is the
// rate's count and Remaining what the bucket holds; Reset is when a request
// will pass again on a 429 (Retry-After), otherwise when the bucket is
// full: a Unix time for SendGrid, seconds from now for Resend. On a
// proxied response that carries the provider's own, the status writer
// keeps one side's (keepOneSide). It returns style if it set the headers,
// else mailapi.NoRateHeaders.
func setProviderRate(hdr http.Header, style mailapi.RateHeaders, res ratelimit.Result, t time.Time) mailapi.RateHeaders {
	if style == mailapi.NoRateHeaders || res.Limit.N <= 0 {
		return mailapi.NoRateHeaders
	}
	wait := res.Reset
	if !res.Allowed {
		wait = res.RetryAfter
	}
	// Rounded up, so a client waiting until then is not early.
	reset := retrySecondsOrZero(wait)
	if style == mailapi.XRateLimit {
		reset = (t.Add(wait).UnixNano() + int64(time.Second) - 1) / int64(time.Second)
	}
	x := new(providerRate)
	b := x.buf[:0]
	for i, n := range [3]int64{int64(res.Limit.N), int64(res.Remaining), reset} {
		start := len(b)
		b = strconv.AppendInt(b, n, 10)
		// The buffer is never written again, so the strings may share it.
		x.vals[i] = unsafe.String(&b[start], len(b)-start)
	}
	names := &providerRateNames[style]
	hdr[names[0]] = x.vals[0:1:1]
	hdr[names[1]] = x.vals[1:2:2]
	hdr[names[2]] = x.vals[2:3:3]
	return style
}
