package keygate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/usage"
	"github.com/keygate/caddy-keygate/verifier"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// now is the clock; tests replace it.
var now = time.Now

// Handler verifies the bearer key of every request, checks its scope, email
// policy and limits, and passes allowed requests to the next handler
// (normally reverse_proxy to the email provider) with every client
// credential removed.
type Handler struct {
	// Store is where keys live: "sqlite:PATH" or "postgres://…". Default:
	// keygate/keys.db in Caddy's data directory.
	Store string `json:"store,omitempty"`
	// Prefix is the key prefix this route accepts (default "kg").
	Prefix string `json:"prefix,omitempty"`
	// Env is the key environment this route accepts: live, test or any
	// (default any).
	Env string `json:"env,omitempty"`
	// KeyHeaders are extra headers a key may be read from, after
	// Authorization: Bearer.
	KeyHeaders []string `json:"key_headers,omitempty"`
	// Scopes map routes to required scopes; first match wins. A request
	// matching none is allowed only for full-access ("*") keys.
	Scopes []ScopeRule `json:"scopes,omitempty"`
	// Rate is the default per-key request rate, e.g. "100/m". Empty means
	// no rate limit unless the key has its own.
	Rate string `json:"rate,omitempty"`
	// Burst is the default bucket size (default: the rate's count).
	Burst int `json:"burst,omitempty"`
	// CacheTTL is how long a verified key record is cached (default 30s).
	// Changes made by other processes are enforced within a second anyway.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
	// FailedAuthLimit is the rate of failed key attempts allowed per client
	// IP before auth_rate_limited, e.g. "20/m" (the default).
	FailedAuthLimit string `json:"failed_auth_limit,omitempty"`
	// Whoami is a path answered with the presented key's own record.
	Whoami string `json:"whoami,omitempty"`
	// MailAPI names the provider dialect whose send payloads are inspected.
	MailAPI string `json:"mail_api,omitempty"`
	// Quota is the default per-key recipient quota, e.g. "1000/d".
	Quota string `json:"quota,omitempty"`
	// MaxBody is the largest send payload inspected, in bytes (default
	// 10 MB); larger bodies get 413.
	MaxBody int64 `json:"max_body,omitempty"`
	// RateLimitRedis makes limits and quotas global through Redis, e.g.
	// "redis://127.0.0.1:6379/0".
	RateLimitRedis string `json:"ratelimit_redis,omitempty"`
	// PerKeyMetrics adds keygate_key_requests_total, labelled by key id and
	// decision. Off by default: one series per key and decision, so only
	// for deployments with a bounded number of keys.
	PerKeyMetrics bool `json:"per_key_metrics,omitempty"`
	// UsageRetention is how long hourly usage counts are kept: a duration
	// of at least 32d, or "off" to keep them forever (default 400d).
	UsageRetention string `json:"usage_retention,omitempty"`

	backend   *backend
	storeURI  string
	ttl       time.Duration
	rate      *ratelimit.Limit
	policy    []string // precomputed RateLimit-Policy for the default rate
	authLimit ratelimit.Limit
	quota     *store.Quota
	dialect   *mailapi.Dialect
	maxBody   int64
	retention time.Duration // 0: keep usage forever
	shared    *sharedLimits // non-nil with ratelimit redis
	logger    *zap.Logger
	events    *caddyevents.App
	ctx       caddy.Context
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.keygate",
		New: func() caddy.Module { return new(Handler) },
	}
}

var nilContext caddy.Context

// Provision opens (or joins) the shared state for the handler's store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx = ctx
	h.logger = ctx.Logger()
	if h.Prefix == "" {
		h.Prefix = "kg"
	}
	if !verifier.ValidPrefix(h.Prefix) {
		return fmt.Errorf("keygate: prefix %q: want 2-10 characters, a-z then a-z or 0-9", h.Prefix)
	}
	switch h.Env {
	case "":
		h.Env = "any"
	case "live", "test", "any":
	default:
		return fmt.Errorf("keygate: env %q: want live, test or any", h.Env)
	}
	for i, name := range h.KeyHeaders {
		if name == "" || strings.ContainsAny(name, " :\t") {
			return fmt.Errorf("keygate: key_header %q is not a header name", name)
		}
		h.KeyHeaders[i] = http.CanonicalHeaderKey(name)
		// Caddy's access log redacts Authorization but records other
		// request headers as the client sent them.
		h.logger.Warn("keygate: keys may arrive in a custom header; if this site has an access log, "+
			"filter the header out of it (log { format filter { request>headers>"+h.KeyHeaders[i]+" delete } })",
			zap.String("key_header", h.KeyHeaders[i]))
	}
	for i := range h.Scopes {
		if err := h.Scopes[i].provision(); err != nil {
			return err
		}
	}
	h.ttl = time.Duration(h.CacheTTL)
	if h.ttl <= 0 {
		h.ttl = 30 * time.Second
	}
	if h.Rate != "" {
		r, err := store.ParseRate(h.Rate)
		if err != nil {
			return fmt.Errorf("keygate: %v", err)
		}
		l := limitOf(r, h.Burst)
		h.rate = &l
		h.policy = []string{policyHeader(l, nil)}
	}
	if h.FailedAuthLimit == "" {
		h.FailedAuthLimit = "20/m"
	}
	fa, err := store.ParseRate(h.FailedAuthLimit)
	if err != nil {
		return fmt.Errorf("keygate: failed_auth_limit: %v", err)
	}
	h.authLimit = limitOf(fa, 0)
	if h.Quota != "" {
		q, err := store.ParseQuota(h.Quota)
		if err != nil {
			return fmt.Errorf("keygate: %v", err)
		}
		h.quota = &q
	}
	if h.MailAPI != "" {
		d, ok := mailapi.Lookup(h.MailAPI)
		if !ok {
			return fmt.Errorf("keygate: mail_api %q: want one of %s", h.MailAPI, strings.Join(mailapi.Names(), ", "))
		}
		h.dialect = d
		for _, rule := range uninspectedPosts(h.Scopes, d) {
			h.logger.Warn("keygate: this POST route is not one of the mail_api's send endpoints, so its payloads are not inspected (no sender, recipient or quota checks)",
				zap.String("mail_api", d.Name), zap.String("scope", rule.Scope), zap.String("path", rule.Path))
		}
	}
	h.maxBody = h.MaxBody
	if h.maxBody <= 0 {
		h.maxBody = 10 << 20
	}
	if h.retention, err = parseUsageRetention(h.UsageRetention); err != nil {
		return fmt.Errorf("keygate: %v", err)
	}
	if ev, err := ctx.AppIfConfigured("events"); err == nil {
		h.events, _ = ev.(*caddyevents.App)
	}
	registerMetrics(ctx.GetMetricsRegistry())

	repl := caddy.NewReplacer()
	h.storeURI = normalizeStoreURI(repl.ReplaceAll(h.Store, ""))
	h.RateLimitRedis = repl.ReplaceAll(h.RateLimitRedis, "")
	b, err := acquireBackend(h.storeURI, h.logger)
	if err != nil {
		return err
	}
	h.backend = b
	b.prefixes.Store(h.Prefix, true)
	if h.RateLimitRedis != "" {
		sl, err := acquireShared(h.RateLimitRedis, b, h.logger)
		if err != nil {
			releaseBackend(h.storeURI)
			return err
		}
		h.shared = sl
	}
	b.retention.Store(h, h.retention)
	return nil
}

// Cleanup releases the shared state; the last user closes it.
func (h *Handler) Cleanup() error {
	if h.shared != nil {
		releaseShared(h.RateLimitRedis)
	}
	if h.backend != nil {
		h.backend.retention.Delete(h)
		releaseBackend(h.storeURI)
	}
	return nil
}

func limitOf(r store.Rate, burst int) ratelimit.Limit {
	if burst <= 0 {
		burst = r.N
	}
	return ratelimit.Limit{N: r.N, Per: r.Per, Burst: burst}
}

// request is what keygate decided about one request. It answers keygate's
// placeholders for the rest of the request, including Caddy's access log
// (which reads them after ServeHTTP returns), so it is never reused.
type request struct {
	rec        *store.Record
	code       Code
	scope      string
	recipients int
	hasRecips  bool

	// For the usage log line.
	method, path, ip string
	status           int

	// Storage the request path would otherwise allocate separately: the
	// RateLimit header value and the log field. The request is allocated
	// once anyway, so they come free.
	rateLimit    [1]string
	rateLimitBuf [80]byte
	logField     [1]zap.Field
}

func (q *request) placeholder(key string) (any, bool) {
	if !strings.HasPrefix(key, "keygate.") && key != "http.auth.user.id" {
		return nil, false
	}
	switch key {
	case "keygate.decision":
		return q.code.String(), true
	case "keygate.scope":
		return q.scope, true
	case "keygate.recipients":
		if !q.hasRecips {
			return nil, false
		}
		return q.recipients, true
	}
	if q.rec == nil {
		return nil, false
	}
	switch key {
	case "http.auth.user.id", "keygate.key.id":
		return q.rec.ID, true
	case "keygate.key.name":
		return q.rec.Name, true
	case "keygate.key.owner":
		return q.rec.Owner, true
	case "keygate.key.env":
		return q.rec.Env, true
	}
	return nil, false
}

// ServeHTTP is the request path of CONTRACT.md §4, in its order.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	t := now()
	q := &request{}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(q.placeholder)
	}
	ip := clientIP(r)

	// 1. Read the key; strip every credential and impersonation header so
	// nothing the client sent authenticates upstream.
	key := h.takeKey(r)
	onBehalf := takeOnBehalfOf(r)
	if key == "" {
		return h.deny(w, r, q, ip, t, denial{code: MissingKey})
	}

	// 2. Shape + checksum, cache, store; then the key's own state. A
	// client over its failed-attempt limit gets no more store queries:
	// only keys already cached are answered.
	limited := h.backend.authFail.Peek(ip, h.authLimit, t)
	rec, code := h.authenticate(r.Context(), key, t, !limited.Allowed)
	q.rec = rec
	if code == AuthRateLimited {
		return h.deny(w, r, q, ip, t, denial{code: code, retryAfter: limited.RetryAfter})
	}
	if code != Allowed {
		if code != StoreUnavailable {
			h.backend.authFail.Allow(r.Context(), ip, h.authLimit, t)
		}
		return h.deny(w, r, q, ip, t, denial{code: code, keyPresented: true})
	}
	if code := checkClient(rec, h.Env, ip); code != Allowed {
		return h.deny(w, r, q, ip, t, denial{code: code})
	}
	if h.Whoami != "" && r.URL.Path == h.Whoami {
		return h.serveWhoami(w, rec, t)
	}

	// 3. Scope for this route.
	q.scope = requiredScope(h.Scopes, r)
	if !hasScope(rec.Scopes, q.scope) {
		return h.deny(w, r, q, ip, t, denial{code: InsufficientScope, scope: q.scope})
	}
	if len(onBehalf) > 0 && rec.AllowOnBehalfOf {
		for name, v := range onBehalf {
			r.Header[name] = v
		}
	}

	// 4. Email policy on send routes.
	var recipients int64
	if h.dialect != nil && h.dialect.IsSend(r.Method, r.URL.Path) {
		n, d := h.checkPayload(r, rec)
		if d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		recipients = int64(n)
		q.recipients, q.hasRecips = n, true
	}

	// 5. Rate limit, then the recipient quota (reserved last, so a request
	// refused for its rate does not spend quota).
	limit, policy := h.limitFor(rec)
	var res ratelimit.Result
	if limit != nil {
		res = h.limiter().Allow(r.Context(), rec.ID, *limit, t)
		if !res.Allowed {
			q.setRateHeaders(w.Header(), policy, res, nil)
			return h.deny(w, r, q, ip, t, denial{code: RateLimited, retryAfter: res.RetryAfter})
		}
	}
	var qs *quotaState
	if recipients > 0 {
		var d denial
		qs, d = h.reserveQuota(r.Context(), rec, recipients, t)
		if qs != nil {
			policy = []string{policyHeader(limitOrZero(limit), qs)}
		}
		if d.code != Allowed {
			q.setRateHeaders(w.Header(), policy, res, qs)
			return h.deny(w, r, q, ip, t, d)
		}
	}
	q.setRateHeaders(w.Header(), policy, res, qs)

	// 6. Placeholders (set above), one usage record, count, next.
	sw := getStatusWriter(w)
	err := next.ServeHTTP(sw, r)
	status := sw.status
	putStatusWriter(sw)
	if err != nil {
		status = http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	h.record(r, q, ip, status, recipients, t)
	return err
}

func limitOrZero(l *ratelimit.Limit) ratelimit.Limit {
	if l == nil {
		return ratelimit.Limit{}
	}
	return *l
}

// takeKey returns the presented key and removes every header a key may
// come in, whether or not it held one.
func (h *Handler) takeKey(r *http.Request) string {
	var key string
	// Header keys arrive canonical from net/http; direct map access skips
	// re-canonicalising on every request.
	if vs := r.Header["Authorization"]; len(vs) > 0 && vs[0] != "" {
		v := vs[0]
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			key = strings.TrimSpace(v[7:])
		} else {
			// Some other scheme: still a credential, still stripped,
			// never a keygate key.
			key = "\x00"
		}
	}
	for _, name := range h.KeyHeaders {
		if vs := r.Header[name]; key == "" && len(vs) > 0 && vs[0] != "" {
			key = strings.TrimSpace(vs[0])
		}
		delete(r.Header, name)
	}
	for _, name := range credentialHeaders {
		delete(r.Header, name)
	}
	return key
}

// credentialHeaders are removed from every request: whatever the client
// sent, the upstream only sees the credential the Caddyfile injects.
var credentialHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie",
	"X-Api-Key", "Api-Key", "X-Postmark-Server-Token", "X-Postmark-Account-Token",
	"X-Amz-Security-Token", // an AWS session credential (SES)
}

// impersonationHeaders let a client act for another account at the
// provider; only keys allowed to may send them.
var impersonationHeaders = []string{"On-Behalf-Of", "X-Mailgun-On-Behalf-Of"}

func takeOnBehalfOf(r *http.Request) map[string][]string {
	var taken map[string][]string
	for _, name := range impersonationHeaders {
		if v, ok := r.Header[name]; ok {
			if taken == nil {
				taken = map[string][]string{}
			}
			taken[name] = v
			delete(r.Header, name)
		}
	}
	return taken
}

// authenticate checks shape and checksum before any cache or store work,
// then looks the digest up and checks the record's state. A limited client
// (over failed_auth_limit) is answered from the cache alone: a key that
// would need the store, or is not a key at all, is AuthRateLimited.
func (h *Handler) authenticate(ctx context.Context, key string, t time.Time, limited bool) (*store.Record, Code) {
	if _, ok := verifier.Parse(key, h.Prefix); !ok {
		if limited {
			return nil, AuthRateLimited
		}
		return nil, InvalidKey
	}
	d := verifier.DigestOf(key)
	var rec *store.Record
	var err error
	if limited {
		rec, err = h.backend.verifier.Cached(d, h.ttl, t)
	} else {
		rec, err = h.backend.verifier.LookupAt(ctx, d, h.ttl, t)
	}
	switch {
	case limited && err != nil:
		return nil, AuthRateLimited
	case errors.Is(err, verifier.ErrUnknown):
		return nil, InvalidKey
	case err != nil:
		return nil, StoreUnavailable
	case rec.Revoked():
		return rec, RevokedKey
	case rec.Disabled:
		return rec, DisabledKey
	case rec.Expired(t):
		return rec, ExpiredKey
	}
	return rec, Allowed
}

// checkClient applies the key's IP allowlist and the route's env.
func checkClient(rec *store.Record, env, ip string) Code {
	if len(rec.AllowedIPs) > 0 {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return IPNotAllowed
		}
		addr = addr.Unmap()
		ok := false
		for _, p := range rec.AllowedIPs {
			if p.Contains(addr) {
				ok = true
				break
			}
		}
		if !ok {
			return IPNotAllowed
		}
	}
	if env != "any" && rec.Env != env {
		return EnvNotAllowed
	}
	return Allowed
}

// clientIP is the client address as Caddy determined it, so
// trusted_proxies is respected.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host
}

// checkPayload reads a send request's body (restoring it byte for byte for
// the upstream) and applies the key's sender and recipient rules.
func (h *Handler) checkPayload(r *http.Request, rec *store.Record) (int, denial) {
	if r.ContentLength > h.maxBody {
		return 0, denial{code: PayloadTooLarge}
	}
	body, err := readBody(r, h.maxBody)
	r.Body.Close()
	if err != nil {
		return 0, denial{code: InvalidPayload, message: "the request body could not be read"}
	}
	if int64(len(body)) > h.maxBody {
		return 0, denial{code: PayloadTooLarge}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	msg, err := h.dialect.Inspect(r.URL.Path, r.Header.Get("Content-Type"), body)
	if err != nil {
		return 0, denial{code: InvalidPayload, message: h.dialect.Name + " payload: " + err.Error()}
	}
	// A body keygate cannot read fully (raw MIME, senders by id) could hide
	// senders or recipients, so keys with any limit on them may not send one.
	restricted := len(rec.SenderDomains) > 0 || rec.MaxRecipients > 0 || rec.Quota != nil || h.quota != nil
	if msg.Opaque && restricted {
		return 0, denial{code: InvalidPayload, message: "senders or recipients keygate cannot read (raw MIME it cannot parse, a sender by id or template) are refused for keys with sender, recipient or quota limits"}
	}
	// Form APIs (Mailgun) may read fields from the query string as well as
	// the body; keygate reads the body only.
	if restricted && r.URL.RawQuery != "" && isForm(r.Header.Get("Content-Type")) {
		return 0, denial{code: InvalidPayload, message: "query parameters on a form send are refused for keys with sender, recipient or quota limits"}
	}
	if len(rec.SenderDomains) > 0 {
		for _, s := range msg.Senders {
			if !mailapi.SenderAllowed(s, rec.SenderDomains) {
				return 0, denial{code: SenderNotAllowed}
			}
		}
		for _, d := range msg.SendingDomains {
			if !mailapi.DomainAllowed(d, rec.SenderDomains) {
				return 0, denial{code: SenderNotAllowed, message: "the sending domain in the path is outside the API key's sender domains"}
			}
		}
	}
	if rec.MaxRecipients > 0 && msg.Recipients > rec.MaxRecipients {
		return 0, denial{code: TooManyRecipients, message: fmt.Sprintf("the message has %d recipients; this API key allows %d per request", msg.Recipients, rec.MaxRecipients)}
	}
	return msg.Recipients, denial{}
}

// isForm reports whether a content type is one of the HTML form encodings.
func isForm(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data"
}

// readBody reads at most limit+1 bytes, in one allocation when the client
// declared the length.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= limit {
		body := make([]byte, n, n+1)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		// A body longer than declared is cut by net/http; read one more
		// byte anyway so nothing is silently dropped.
		var one [1]byte
		if m, _ := r.Body.Read(one[:]); m > 0 {
			return nil, errors.New("the body is longer than its Content-Length")
		}
		return body, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, limit+1))
}

// limitFor returns the key's rate limit (its own or the route's default)
// and the RateLimit-Policy header for it.
func (h *Handler) limitFor(rec *store.Record) (*ratelimit.Limit, []string) {
	if rec.Rate == nil {
		return h.rate, h.policy
	}
	l := limitOf(*rec.Rate, rec.Burst)
	return &l, []string{policyHeader(l, nil)}
}

func (h *Handler) limiter() ratelimit.Limiter {
	if h.shared != nil {
		return h.shared.limiter
	}
	return h.backend.limits
}

// quotaState is a recipient quota decision and the length of its period,
// for the RateLimit headers.
type quotaState struct {
	ratelimit.QuotaResult
	window time.Duration
}

// reserveQuota spends n recipients of the key's quota for this period.
func (h *Handler) reserveQuota(ctx context.Context, rec *store.Record, n int64, t time.Time) (*quotaState, denial) {
	q := h.quota
	if rec.Quota != nil {
		q = rec.Quota
	}
	if q == nil {
		return nil, denial{}
	}
	start, end := q.Per.Start(t), q.Per.End(t)
	load := func(ctx context.Context) (int64, error) {
		return h.backend.store.Recipients(ctx, rec.ID, start)
	}
	var quotas ratelimit.Quotas = h.backend.quotas
	if h.shared != nil {
		quotas = h.shared.quotas
	}
	res, err := quotas.Reserve(ctx, rec.ID+"/"+string(q.Per), q.N, n, start, end, load, t)
	if err != nil {
		return nil, denial{code: StoreUnavailable, retryAfter: time.Second}
	}
	qs := &quotaState{QuotaResult: res, window: end.Sub(start)}
	if !res.Allowed {
		return qs, denial{code: QuotaExceeded, retryAfter: res.Reset,
			message: fmt.Sprintf("the API key's recipient quota of %d per %s is used up", q.N, periodName(q.Per))}
	}
	return qs, denial{}
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
	hdr["Ratelimit-Policy"] = policy
	if &b[0] == &q.rateLimitBuf[0] {
		// The buffer is never written again, so the string may share it.
		q.rateLimit[0] = unsafe.String(&b[0], len(b))
	} else {
		q.rateLimit[0] = string(b)
	}
	hdr["Ratelimit"] = q.rateLimit[:]
}

func retrySecondsOrZero(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// maxDrain is how much of an unread request body a denial reads first: as
// much as net/http itself drains to keep a connection alive.
const maxDrain = 256 << 10

// deny answers with the contract's JSON error, logs and counts it.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, q *request, ip string, t time.Time, d denial) error {
	q.code = d.code
	// A client that sent Connection: close gets its denial after the
	// server closes the connection. Body bytes still unread then make the
	// kernel answer with a reset, which can destroy the response before
	// the client reads it; net/http drains only kept-alive requests. A
	// client waiting for 100 Continue has sent no body: reading would only
	// ask it for one.
	if r.Close && r.ContentLength != 0 && r.Body != nil && !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		io.CopyN(io.Discard, r.Body, maxDrain)
	}
	d.write(w)
	h.record(r, q, ip, codes[d.code].status, 0, t)
	switch d.code {
	case RevokedKey, ExpiredKey, DisabledKey:
		h.emit("keygate.key_denied", q, ip)
	case RateLimited, QuotaExceeded:
		h.emit("keygate.rate_limited", q, ip)
	}
	return nil
}

func (h *Handler) emit(name string, q *request, ip string) {
	if h.events == nil {
		return
	}
	data := map[string]any{"decision": q.code.String(), "client_ip": ip}
	if q.rec != nil {
		data["key_id"], data["key_name"], data["owner"] = q.rec.ID, q.rec.Name, q.rec.Owner
	}
	h.events.Emit(h.ctx, name, data)
}

// record writes the usage log entry and counts the request.
func (h *Handler) record(r *http.Request, q *request, ip string, status int, recipients int64, t time.Time) {
	metrics.requests[q.code].Inc()
	if h.PerKeyMetrics && q.rec != nil {
		metrics.keyRequests.WithLabelValues(q.rec.ID, q.code.String()).Inc()
	}
	if q.rec != nil {
		metric := usage.MetricAllowed
		if q.code != Allowed {
			metric = deniedMetrics[q.code]
		}
		h.backend.usage.Record(q.rec.ID, metric, status, recipients, ip, t)
	}
	// Denials log at info: they are what an operator looks for. Allowed
	// requests log at debug, as Caddy's own modules log per-request detail
	// (the access log already names the key as user_id, and the usage
	// counters count every request); so do requests already refused as a
	// flood (auth_rate_limited), so a client spraying keys cannot fill the
	// logs.
	level := zap.InfoLevel
	if q.code == Allowed || q.code == AuthRateLimited {
		level = zap.DebugLevel
	}
	if ce := h.logger.Check(level, "keygate request"); ce != nil {
		q.method, q.path, q.ip, q.status = r.Method, r.URL.Path, ip, status
		q.logField[0] = zap.Inline(q)
		ce.Write(q.logField[:]...)
	}
}

// MarshalLogObject writes the usage log line's fields: never the key.
func (q *request) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	var id, name string
	if q.rec != nil {
		id, name = q.rec.ID, q.rec.Name
	}
	enc.AddString("key_id", id)
	enc.AddString("key_name", name)
	enc.AddString("scope", q.scope)
	enc.AddString("decision", q.code.String())
	enc.AddString("method", q.method)
	enc.AddString("path", q.path)
	enc.AddInt("status", q.status)
	enc.AddString("client_ip", q.ip)
	if q.hasRecips {
		enc.AddInt("recipients", q.recipients)
	}
	return nil
}

// deniedMetrics are the usage metric names of the denial codes, built once.
var deniedMetrics = func() [numCodes]string {
	var m [numCodes]string
	for i := range codes {
		m[i] = usage.DeniedPrefix + codes[i].name
	}
	return m
}()

// statusWriter remembers the response status for the usage counts.
type statusWriter struct {
	http.ResponseWriter
	status int
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func getStatusWriter(w http.ResponseWriter) *statusWriter {
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter, sw.status = w, http.StatusOK
	return sw
}

func putStatusWriter(sw *statusWriter) {
	sw.ResponseWriter = nil
	statusWriters.Put(sw)
}

func (sw *statusWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		sw.status = code
	}
	sw.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer
// (reverse_proxy flushes through it).
func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
