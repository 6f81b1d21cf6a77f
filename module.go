package keygate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
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
	// "redis://127.0.0.1:6379/0". Rate limits are decided on each node from
	// tokens it leases from Redis in the background (never more than the
	// limit, no round trip per request); quotas are reserved in Redis per
	// request.
	RateLimitRedis string `json:"ratelimit_redis,omitempty"`
	// RateLimitExact asks Redis for every rate-limit decision instead of
	// leasing tokens: one round trip per request, and no node holds tokens
	// another could use.
	RateLimitExact bool `json:"ratelimit_exact,omitempty"`
	// RateLimitRedisCluster: the URL names a node of a Redis Cluster (more
	// with addr= parameters), and keygate talks to the cluster.
	RateLimitRedisCluster bool `json:"ratelimit_redis_cluster,omitempty"`
	// RateLimitRedisSentinel: the URL names a Sentinel (more with addr=
	// parameters; its user and password are the Sentinel's, the primary's
	// go in username= and password= parameters), and this is the name it
	// knows the primary by; keygate follows the primary through failovers.
	RateLimitRedisSentinel string `json:"ratelimit_redis_sentinel,omitempty"`
	// RateLimitRedisTLS sets up TLS to Redis beyond what a rediss:// URL
	// does (the system's authorities, the URL's host): an authority to
	// trust, a client certificate, the name to verify.
	RateLimitRedisTLS *RedisTLS `json:"ratelimit_redis_tls,omitempty"`
	// RateLimitRedisTimeout bounds each Redis round trip a request waits
	// for; past it the node decides alone for a second (default 100ms).
	RateLimitRedisTimeout caddy.Duration `json:"ratelimit_redis_timeout,omitempty"`
	// PerKeyMetrics adds keygate_key_requests_total, labelled by key id and
	// decision. Off by default: one series per key and decision, so only
	// for deployments with a bounded number of keys.
	PerKeyMetrics bool `json:"per_key_metrics,omitempty"`
	// AccessLogFiltered confirms that every access log of this handler's
	// server deletes the headers keys may arrive in that Caddy writes as
	// sent (each key_header, the mail_api's own header; Authorization under
	// log_credentials), or accepts that they are written. Without it, a
	// server with an access log and such headers is refused at load.
	AccessLogFiltered bool `json:"access_log_filtered,omitempty"`
	// UsageRetention is how long hourly usage counts are kept: a duration
	// of at least 32d, or "off" to keep them forever (default 400d).
	UsageRetention string `json:"usage_retention,omitempty"`

	backend   *backend
	storeURI  string
	ttl       time.Duration
	rate      *ratelimit.Limit
	policy    []string     // precomputed RateLimit-Policy for the default rate
	policies  *policyCache // the others
	authLimit ratelimit.Limit
	quota     *store.Quota
	dialect   *mailapi.Dialect
	maxBody   int64
	retention time.Duration // 0: keep usage forever
	shared    *sharedLimits // non-nil with ratelimit redis
	redis     redisSetup    // what ratelimit redis names, read at provisioning
	// ready is set once the handler is attached to its store's backend
	// (at provision, or by wait when the store did not answer then).
	ready  uint32 // atomic: 1 once attached
	wait   *storeWait
	logger *zap.Logger
	events *caddyevents.App
	ctx    caddy.Context

	errorRoutes *errorRoutes // the server's handle_errors, for answerError

	// keyHeaders are the headers this route reads a key from besides
	// Authorization: the dialect's own, then each key_header.
	keyHeaders []string
	// keyHeaderSet holds keyHeaders and credentialHeaders, for takeKey;
	// keyHeaderNames filters names before a lookup in it.
	keyHeaderSet   map[string]struct{}
	keyHeaderNames nameFilter
	// logCredentials is the server's log_credentials: Caddy's access log
	// then writes Cookie and Proxy-Authorization as sent too.
	logCredentials bool
	forms          *denialForms // this route's denial responses
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
	// By now Caddy has set Go's memory limit (from the container's), which
	// the bound on send bodies held at once follows.
	bodies.limit.Store(defaultBodyLimit())
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
	// A key_header takes placeholders as store does ({env.KEY_HEADER}),
	// replaced here: left as it was, the route would read keys from a
	// header named "{Env.key_header}" that no client sends.
	headerRepl := caddy.NewReplacer()
	for i, given := range h.KeyHeaders {
		name := headerRepl.ReplaceKnown(given, "")
		if given != "" && name == "" {
			return fmt.Errorf("keygate: key_header %q is empty once its placeholders are replaced", given)
		}
		if !httpguts.ValidHeaderFieldName(name) {
			if name != given {
				return fmt.Errorf("keygate: key_header %q (%q once its placeholders are replaced) is not a header name", given, name)
			}
			return fmt.Errorf("keygate: key_header %q is not a header name", name)
		}
		h.KeyHeaders[i] = http.CanonicalHeaderKey(name)
	}
	for i := range h.Scopes {
		if err := h.Scopes[i].provision(); err != nil {
			return err
		}
		if err := shadowed(h.Scopes[:i], &h.Scopes[i]); err != nil {
			return err
		}
	}
	// The Caddyfile refuses these as it reads them; JSON (caddy run
	// --config caddy.json, the admin API's /load) comes here unchecked,
	// where each used to fall back to a default or never match.
	if h.CacheTTL < 0 {
		return fmt.Errorf("keygate: cache_ttl %v: want a positive duration (e.g. 30s)", time.Duration(h.CacheTTL))
	}
	if h.Burst < 0 || h.Burst > 0 && h.Rate == "" {
		return fmt.Errorf("keygate: burst %d: want a positive whole number, with a rate", h.Burst)
	}
	if h.MaxBody < 0 || h.MaxBody > 1<<30 {
		return fmt.Errorf("keygate: max_body %d: want a size in bytes between 1 and 1073741824 (1 GiB)", h.MaxBody)
	}
	h.ttl = time.Duration(h.CacheTTL)
	if h.ttl == 0 {
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
		if err := unreadScopePaths(h.Scopes, d); err != nil {
			return err
		}
		for _, rule := range uninspectedPosts(h.Scopes, d) {
			h.logger.Warn("keygate: this POST route is not one of the mail_api's send endpoints, so its payloads are not inspected (no sender, recipient or quota checks)",
				zap.String("mail_api", d.Name), zap.String("scope", rule.Scope), zap.String("path", rule.Path))
		}
	}
	if err := h.checkWhoami(); err != nil {
		return err
	}
	h.keyHeaders = h.KeyHeaders
	if h.dialect != nil {
		h.keyHeaders = slices.Clone(h.dialect.KeyHeaders())
		for _, name := range h.KeyHeaders {
			if !slices.Contains(h.keyHeaders, name) {
				h.keyHeaders = append(h.keyHeaders, name)
			}
		}
	}
	h.keyHeaderSet = map[string]struct{}{}
	for _, name := range slices.Concat(h.keyHeaders, credentialHeaders) {
		h.keyHeaderSet[name] = struct{}{}
		h.keyHeaderNames.add(name)
	}
	h.forms = newDenialForms(h.dialect, howToSend(h.dialect, h.keyHeaders))
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if err := h.checkAccessLog(srv); err != nil {
		return err
	}
	h.logCredentials = srv != nil && srv.Logs != nil && srv.Logs.ShouldLogCredentials
	h.errorRoutes = new(errorRoutes)
	h.policies = new(policyCache)
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
	storeText := repl.ReplaceAll(h.Store, "")
	redisURL := repl.ReplaceAll(h.RateLimitRedis, "")
	// An unset variable must not turn a cluster node into one with a store
	// or limits of its own: `store {env.KEYGATE_STORE}` would otherwise
	// fall back to the local SQLite file without a word.
	if h.Store != "" && storeText == "" {
		return fmt.Errorf("keygate: store %q is empty once its placeholders are replaced: set it, or remove the option for the default SQLite store", h.Store)
	}
	if h.RateLimitRedis != "" && redisURL == "" {
		return fmt.Errorf("keygate: ratelimit redis %q is empty once its placeholders are replaced: set it, or remove the option for limits per node", h.RateLimitRedis)
	}
	if h.storeURI, err = storeURI(storeText); err != nil {
		return err
	}
	h.RateLimitRedis = redisURL
	if h.RateLimitExact && h.RateLimitRedis == "" {
		return errors.New("keygate: ratelimit_exact needs ratelimit_redis")
	}
	if h.RateLimitRedis != "" {
		// The block's values take placeholders as the URL does.
		h.RateLimitRedisSentinel = repl.ReplaceAll(h.RateLimitRedisSentinel, "")
		if t := h.RateLimitRedisTLS; t != nil {
			h.RateLimitRedisTLS = &RedisTLS{CA: repl.ReplaceAll(t.CA, ""), Cert: repl.ReplaceAll(t.Cert, ""),
				Key: repl.ReplaceAll(t.Key, ""), ServerName: repl.ReplaceAll(t.ServerName, "")}
		}
		if h.redis, err = newRedisSetup(h.RateLimitRedis, h.RateLimitRedisCluster, h.RateLimitRedisSentinel, h.RateLimitRedisTLS, time.Duration(h.RateLimitRedisTimeout)); err != nil {
			return err
		}
		if err := preflightRedis(h.redis, h.logger); err != nil {
			return err
		}
	} else if h.RateLimitRedisTLS != nil || h.RateLimitRedisTimeout != 0 || h.RateLimitRedisCluster || h.RateLimitRedisSentinel != "" {
		return errors.New("keygate: ratelimit_redis_tls, ratelimit_redis_timeout, ratelimit_redis_cluster and ratelimit_redis_sentinel need ratelimit_redis")
	}
	b, wait, err := acquireOrWait(h.storeURI, h.logger, h.attach)
	if err != nil {
		return err
	}
	h.wait = wait
	if b != nil {
		if err := h.attach(b); err != nil {
			releaseBackend(h.storeURI, h.logger)
			return err
		}
	}
	return nil
}

// attach joins the handler to its store's backend (and Redis, with
// ratelimit redis) and lets requests through.
func (h *Handler) attach(b *backend) error {
	if h.RateLimitRedis != "" {
		sl, err := acquireShared(h.redis, b, h.logger)
		if err != nil {
			return err
		}
		h.shared = sl
	}
	h.backend = b
	info := handlerInfo{prefix: h.Prefix, retention: h.retention}
	for _, rule := range h.Scopes {
		info.scopes = append(info.scopes, store.RouteScope{Scope: rule.Scope, Method: rule.Method, Path: rule.Path})
	}
	b.handlers.Store(h, info)
	go b.reportWhenRunning(h.ctx)
	atomic.StoreUint32(&h.ready, 1) // after every field above: a request that sees it sees them
	return nil
}

// Cleanup releases the shared state; the last user closes it.
func (h *Handler) Cleanup() error {
	h.wait.close() // no attach after this
	if h.shared != nil {
		releaseShared(h.redis.key)
	}
	if h.backend != nil {
		h.backend.detach(h)
		releaseBackend(h.storeURI, h.logger)
	}
	return nil
}

// scopeOf is the scope the route requires of scoped (r as its scope lines
// see it); an SES v1 action without a line of its own is scoped as r
// itself (msg.ScopeElse).
func (h *Handler) scopeOf(scoped, r *http.Request, orElse bool) string {
	s := requiredScope(h.Scopes, scoped)
	if s == "" && orElse && scoped != r {
		s = requiredScope(h.Scopes, r)
	}
	return s
}

// endpointPath is p as the route's dialect reads it when it is one of the
// dialect's send endpoints (mailapi.Dialect.EndpointPath), else p.
func (h *Handler) endpointPath(p string) string {
	if h.dialect == nil {
		return p
	}
	return h.dialect.EndpointPath(p)
}

// queryRequest reports whether r is a request of the route's Query API
// (mailapi.Dialect.QueryRequest). Only AWS's APIs, signed with SigV4, have
// one: other routes answer without looking at its Content-Type.
//
// A POST with a body and no Content-Type is asked about as a form: Rack
// reads such a body as one (Rack::Request#form_data?), so "POST /x" with
// Action=SendEmail and no Content-Type is a send to a server that reads
// the action whatever the path; read as the Query API, it is refused for
// its Content-Type, as it is at "/".
func (h *Handler) queryRequest(r *http.Request) bool {
	if h.dialect == nil || !h.dialect.KeyInSigV4() {
		return false
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength != 0 {
		ct = "application/x-www-form-urlencoded"
	}
	return h.dialect.QueryRequest(r.Method, r.URL.Path, r.URL.RawQuery, ct)
}

// readPaths is what a server reading paths leniently may read p as
// (mailapi.ReadPaths), for the route's dialect: none for its send
// endpoints, read as endpointPath says.
func (h *Handler) readPaths(p string) (string, string) {
	if h.dialect == nil {
		return mailapi.ReadPaths(p)
	}
	return h.dialect.ReadPaths(p)
}

// lackedAsRead refuses r when a path a server reading paths leniently
// reads its path as (readPaths) needs a scope the key lacks, as r's
// method or as the one its override header names.
func (h *Handler) lackedAsRead(rec *store.Record, r *http.Request, override string) denial {
	read, afterHost := h.readPaths(r.URL.Path)
	for _, p := range [2]string{read, afterHost} {
		if p == "" {
			continue
		}
		for _, m := range [2]string{r.Method, override} {
			if m == "" {
				continue
			}
			if s := requiredScopeAsRead(h.Scopes, withMethod(r, m), p); !keys.Covers(rec.Scopes, s) {
				return denial{code: InsufficientScope, scope: s, message: scopeMessage(s, m, p) +
					" (at " + verifier.Redact(p) + ", as some servers read the path)"}
			}
		}
	}
	return denial{code: Allowed}
}

// lackedAsWritten refuses r, a request scoped as another (at asSent, the
// send endpoint its path is read as; or as an SES v1 action, at a path
// other than "/"), when the key lacks the scope r needs as it is written:
// as its method or the one its override header names, and as a server
// reading paths leniently reads its path (lackedAsRead). A line matching
// asSent decides for r too when it comes first, so that "scope mail.send
// POST /email/withTemplate" covers Django-Anymail's /email/withTemplate/,
// while a line written for the path as a client writes it ("scope
// templates.send POST /email/withTemplate/*") is not passed over.
func (h *Handler) lackedAsWritten(rec *store.Record, r, asSent *http.Request, override string) denial {
	for _, m := range [2]string{r.Method, override} {
		if m == "" {
			continue
		}
		as, at := r, asSent
		if m != r.Method {
			as, at = withMethod(r, m), withMethod(asSent, m)
		}
		if s := requiredScopeOfEither(h.Scopes, as, at); !keys.Covers(rec.Scopes, s) {
			return denial{code: InsufficientScope, scope: s, message: scopeMessage(s, m, r.URL.Path) + " (at the path as it is written, " +
				"as well as where it is read)"}
		}
	}
	return h.lackedAsRead(rec, r, override)
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
	key, fault, inLog := h.takeKey(r)
	if inLog != "" {
		// Caddy's access log would write the key as sent: it is left out,
		// and keygate's own line for the request stands in for it.
		q.keyInLog = inLog
		caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
		if fault == faultKeyInURL {
			redactSpan(r)
		}
	}
	onBehalf := takeOnBehalfOf(r)
	// Trailers (header fields after a chunked body) are neither read for a
	// key nor stripped as the headers are, and Caddy passes request
	// trailers on: none goes upstream, on any route. (Go's server takes
	// the Trailer header out of a chunked request's headers itself, and
	// reverse_proxy drops it from any other as hop-by-hop.)
	r.Trailer = nil
	if key == "" && faults[fault].code == MissingKey {
		return h.deny(w, r, q, ip, t, denial{code: MissingKey, fault: fault})
	}

	// A store that did not answer when the config loaded: nothing to
	// look a key up in yet (storewait.go). A malformed key needs no store
	// to be refused (failed attempts are not counted meanwhile).
	if atomic.LoadUint32(&h.ready) == 0 {
		if _, ok := verifier.Parse(key, h.Prefix); !ok {
			return h.deny(w, r, q, ip, t, denial{code: InvalidKey, keyPresented: true, fault: fault})
		}
		return h.deny(w, r, q, ip, t, denial{code: StoreUnavailable})
	}

	// 2. Shape + checksum, cache, store; then the key's own state. A
	// client over its failed-attempt limit gets no more store queries:
	// only keys already cached are answered.
	rec, code, retryAfter := h.authenticate(r.Context(), key, ip, t)
	q.rec = rec
	if code == AuthRateLimited {
		return h.deny(w, r, q, ip, t, denial{code: code, retryAfter: retryAfter})
	}
	if code != Allowed {
		// Only a key no store knows is a failed attempt: one that was
		// guessed, mistyped or made up. A revoked, expired or disabled key
		// is a real key, answered from the cache; counting it locked the
		// replacement key out of an address whose old workers still retry
		// the revoked one.
		if code == InvalidKey {
			h.backend.authFail.Allow(r.Context(), failingClient(ip), h.authLimit, t)
		}
		d := denial{code: code, keyPresented: true, fault: fault}
		if code == ExpiredKey && rec.RotatedTo != "" {
			d.message = rotatedMessage(rec.RotatedTo)
		}
		return h.deny(w, r, q, ip, t, d)
	}
	if code := checkClient(rec, h.Env, ip); code != Allowed {
		return h.deny(w, r, q, ip, t, denial{code: code})
	}
	if h.Whoami != "" && r.URL.Path == h.Whoami {
		// A use of the key like any other: counted (its last use too) and
		// logged, so a leaked key probed here shows in its usage.
		q.code = Allowed
		err := h.serveWhoami(r.Context(), w, rec, t)
		h.record(r, q, ip, http.StatusOK, 0, t)
		return err
	}

	// 3. Scope for this route. A request of SES's v1 API names its action
	// in its form, so it is read first: a send is scoped as a POST to the
	// SES v2 endpoint that sends the same way, any other action as a POST
	// to "/" and its name, or else as itself (mailapi.Message.ScopePath).
	var body *sendBody
	var msg mailapi.Message
	// A path the dialect reads as one of its send endpoints is scoped as
	// that endpoint, as it is inspected: "/v3/mail/send;x" needs the send
	// line's scope, not a broader line's, since a provider that drops the
	// parameters sends it.
	asSent := atPath(r, h.endpointPath(r.URL.Path))
	read, scoped := false, asSent
	// A send body read below is given back when the chain is done (the
	// handler's part; the reader's is its Close). One defer for the two
	// places that read one keeps it open-coded, as Go's compiler does only
	// while a function's returns times its defers stay at 15 or fewer;
	// past that every return goes through the runtime's defer machinery.
	defer func() {
		if body != nil {
			body.finish()
		}
	}()
	if h.queryRequest(r) {
		var d denial
		body, msg, d = h.readSend(r, true)
		if d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		if rec, d = h.recheck(r.Context(), rec, ip); d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		q.rec = rec
		read, scoped = true, postedTo(asSent, msg.ScopePath)
	}
	scope, override, d := h.authorize(r, rec, asSent, scoped, msg.ScopeElse, onBehalf)
	q.scope = scope
	if d.code != Allowed {
		return h.deny(w, r, q, ip, t, d)
	}
	for name, v := range onBehalf {
		r.Header[name] = v
	}

	// 4. Email policy on send routes: a send as the request's method, or
	// as the method its override header names, for an upstream that
	// honours it (a POST overridden to PUT a campaign's schedule).
	if !read && h.dialect != nil && (h.dialect.IsSend(r.Method, r.URL.Path) || override != "" && h.dialect.IsSend(override, r.URL.Path)) {
		var d denial
		body, msg, d = h.readSend(r, false)
		if d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		read = true
		// The key may have changed while the body arrived: its scopes are
		// applied again to a record that did.
		var fresh *store.Record
		if fresh, d = h.recheck(r.Context(), rec, ip); d.code == Allowed && fresh != rec {
			q.scope, _, d = h.authorize(r, fresh, asSent, scoped, msg.ScopeElse, onBehalf)
		}
		if d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		rec, q.rec = fresh, fresh
	}
	var recipients int64
	if read && !msg.NotSend {
		n, d := h.checkMessage(r, rec, &msg)
		if d.code != Allowed {
			return h.deny(w, r, q, ip, t, d)
		}
		recipients = int64(n)
		q.recipients, q.hasRecips, q.partlySent = n, true, msg.PartlySent
	}

	// 5. Rate limit, then the recipient quota (reserved last, so a request
	// refused for its rate does not spend quota).
	limit, limited, policy := h.limitFor(rec)
	var res ratelimit.Result
	if limited {
		res = h.limiter().Allow(r.Context(), rec.ID, limit, t)
		// In the provider's own headers as well, where the provider would
		// send them: SendGrid's answer to a mail/send it takes has none,
		// Mailgun's SDK reads them only from a 429.
		if h.dialect != nil && (!res.Allowed || h.dialect.RatedAnswer(msg)) {
			q.sw.provider = setProviderRate(w.Header(), h.dialect.RateHeaders(), res, t)
		}
		if !res.Allowed {
			q.setRateHeaders(w.Header(), policy, res, nil)
			return h.deny(w, r, q, ip, t, denial{code: RateLimited, retryAfter: res.RetryAfter})
		}
	}
	var qs *quotaState
	if recipients > 0 {
		st, ok, d := h.reserveQuota(r.Context(), rec, recipients, t)
		if ok {
			qs = &st
			policy = h.policies.get(limit, qs)
		}
		if d.code != Allowed {
			q.setRateHeaders(w.Header(), policy, res, qs)
			return h.deny(w, r, q, ip, t, d)
		}
	}
	q.setRateHeaders(w.Header(), policy, res, qs)
	check := keyCheck{h: h, ctx: r.Context(), rec: rec, ip: ip, r: r, asSent: asSent, scoped: scoped,
		scopeElse: msg.ScopeElse, onBehalf: onBehalf}
	if body != nil {
		// Checked again before a retry's attempt (forward).
		body.keyCheck = check
	} else if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		// Passed on as it arrives: its end waits for the key's check.
		r.Body = &heldBody{ReadCloser: r.Body, keyCheck: check, left: r.ContentLength}
	}

	// 6. Placeholders (set above), one usage record, count, next.
	h.forward(w, r, next, q, ip, t, body, recipients, qs)
	return nil
}

// authorize applies the key's scopes to the request (step 3): as scoped,
// with its method override, as written, and acting on behalf of another
// account. It returns the scope the request needs as scoped, and the
// method its override names, if any. It changes nothing, so a request's
// body may call it from the transport's goroutine (heldBody).
func (h *Handler) authorize(r *http.Request, rec *store.Record, asSent, scoped *http.Request, scopeElse bool, onBehalf map[string][]string) (scope, override string, d denial) {
	scope = h.scopeOf(scoped, asSent, scopeElse)
	if !keys.Covers(rec.Scopes, scope) {
		return scope, override, denial{code: InsufficientScope, scope: scope, message: scopeMessage(scope, scoped.Method, scoped.URL.Path)}
	}
	// A POST that names another method in an override header is done as
	// that method by an upstream that honours the header, and as the POST
	// it is by one that does not: the key needs the scopes of both.
	override, single := overriddenMethod(r)
	switch {
	case !single:
		return scope, override, denial{code: InsufficientScope,
			message: "the request names more than one method in its method-override headers (X-HTTP-Method-Override, …); send one"}
	case override != "":
		if as := h.scopeOf(withMethod(scoped, override), withMethod(asSent, override), scopeElse); !keys.Covers(rec.Scopes, as) {
			return scope, override, denial{code: InsufficientScope, scope: as, message: scopeMessage(as, override, asSent.URL.Path) + " (as the " + override + " its method override names)"}
		}
	}
	// A server that reads paths leniently (Java's servlet containers drop
	// ";parameters", Express a trailing slash; a proxy that decodes "%3F"
	// before it splits off the query; a URL parser that reads "//h/x" as
	// a host and a path) serves "/v3/templates;x" as "/v3/templates": the
	// key needs the scope of the path as such a server reads it as well,
	// so a broader line after a narrower one is no way around the
	// narrower (a send endpoint is read so already, by endpointPath).
	// A request scoped as another is also the request it is as written:
	// a send endpoint written otherwise (a line for "/email/withTemplate/*"
	// still decides), and a request of SES's v1 API at another path than
	// "/", scoped as its action above (a v2 DELETE with ?Action=SendEmail
	// is a DELETE to the provider). The key needs that scope too.
	switch {
	case scoped != asSent && h.dialect.QueryEndpoint(asSent.URL.Path):
		// SES's v1 API at "/", where every action is sent: its action's.
	case scoped != asSent || asSent != r:
		if d := h.lackedAsWritten(rec, r, asSent, override); d.code != Allowed {
			return scope, override, d
		}
	default:
		if d := h.lackedAsRead(rec, r, override); d.code != Allowed {
			return scope, override, d
		}
	}
	// Sent on behalf of another account (a SendGrid subuser, a Mailgun
	// subaccount): passed on for a key allowed to, refused for any other,
	// whose send would otherwise go out as the parent account.
	if len(onBehalf) > 0 {
		if !rec.AllowOnBehalfOf {
			return scope, override, denial{code: InsufficientScope, message: "the API key may not act on behalf of " +
				"another account (" + strings.Join(slices.Sorted(maps.Keys(onBehalf)), ", ") + "); it needs allow_on_behalf_of " +
				"(caddy keys update <id> --allow-on-behalf-of)"}
		}
	}
	return scope, override, denial{}
}

// recheck looks the key of rec up again once a send's body is in, at the
// time it is handed on, and returns the record to apply from then on: the
// body may have taken seconds or minutes to arrive (Caddy sets no read_body
// timeout by default), and a key revoked, disabled, ended or narrowed
// meanwhile must not send it. A record unchanged since the request's
// headers is the one the cache holds still (one cache hit); another was
// changed, and the caller applies its scopes again. An expiry is read
// against the clock now.
func (h *Handler) recheck(ctx context.Context, rec *store.Record, ip string) (*store.Record, denial) {
	t := now()
	fresh, ok := h.backend.verifier.Hit(rec.Digest, h.ttl, t)
	if !ok {
		var err error
		fresh, err = h.backend.verifier.LookupAt(ctx, rec.Digest, h.ttl, t)
		if errors.Is(err, verifier.ErrClosed) {
			// A reload that named the store otherwise closed this
			// handler's cache while the body arrived; its store stays
			// open a while for the requests in flight (countLate).
			sctx, cancel := context.WithTimeout(ctx, recheckTimeout)
			fresh, err = h.backend.store.KeyByDigest(sctx, rec.Digest)
			cancel()
			if errors.Is(err, store.ErrNotFound) {
				err = verifier.ErrUnknown
			}
		}
		switch {
		case errors.Is(err, verifier.ErrUnknown):
			// Removed since (a backup restored that predates it).
			return nil, denial{code: InvalidKey, keyPresented: true}
		case err != nil:
			return nil, denial{code: StoreUnavailable}
		}
	}
	switch {
	case fresh.Revoked():
		return nil, denial{code: RevokedKey, keyPresented: true}
	case fresh.Disabled:
		return nil, denial{code: DisabledKey, keyPresented: true}
	case fresh.Expired(t):
		d := denial{code: ExpiredKey, keyPresented: true}
		if fresh.RotatedTo != "" {
			d.message = rotatedMessage(fresh.RotatedTo)
		}
		return nil, d
	}
	if fresh != rec {
		if code := checkClient(fresh, h.Env, ip); code != Allowed {
			return nil, denial{code: code}
		}
	}
	return fresh, denial{}
}

// recheckTimeout bounds recheck's store query on a closed cache, as the
// cache bounds its own (verifier.Options.StoreTimeout).
const recheckTimeout = 2 * time.Second

// rotatedMessage is the message of expired_key for a key that was rotated
// to the key with id to.
func rotatedMessage(to string) string {
	return "the API key has expired: it was rotated, and its grace period has ended; use the key that replaced it (" + to + ")"
}

// forward calls the next handler (normally reverse_proxy) for an allowed
// request, then counts it and writes its usage line. An error goes no
// further than keygate: Caddy's error log would write the request
// headers, keys included (logs.go).
//
// The counting is deferred: a handler may end the request with a panic,
// as reverse_proxy does (http.ErrAbortHandler) when the upstream's answer
// breaks off after its status went out (the provider's connection reset
// mid-body) or the client's connection fails while it is written. The
// provider has answered by then, and may have taken the send: it is
// counted, logged and kept in the quota like any other, by the status
// that went out. Without this, a send the provider took left no trace in
// the key's usage, its log or the metrics.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, q *request, ip string, t time.Time, body *sendBody, recipients int64, qs *quotaState) {
	sw := q.statusWriter(w)
	var err error
	done := false
	// Whether a transport wrote the whole request on any attempt: the
	// error the chain ends with is only its last attempt's (mayHaveSent).
	// Transports without httptrace hooks (HTTP/3, FastCGI) leave it false.
	// A request written before the send's body was read whole is another
	// one on its context (forward_auth's, which runs after keygate).
	// Allocated for sends only: a flag the hook's closure captured would
	// be on the heap for every request.
	var wrote *atomic.Bool
	if recipients > 0 {
		w := new(atomic.Bool)
		attempts := 0
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			// Each attempt of reverse_proxy's asks for a connection. One
			// after the first is a retry, which may come seconds later
			// (lb_try_duration, every upstream down): the key is checked
			// again, and a refusal ends the body before any of it goes.
			GetConn: func(string) {
				if attempts++; attempts > 1 && body != nil && body.h != nil && body.d.Load() == nil {
					if d := body.check(); d.code != Allowed {
						body.d.Store(&d)
					}
				}
			},
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err == nil && (body == nil || body.readOut.Load()) {
					w.Store(true)
				}
			},
		}))
		wrote = w
	}
	// Registered until it ends, so that a last flush that comes first (a
	// stop past Caddy's grace_period) counts it (inflight.go).
	flying := &h.backend.inflight
	flying.add(q, inflight{h, r, ip, t, recipients, body, wrote})
	defer func() {
		if !done && !sw.sent {
			// Ended before any answer: the client's connection is closed
			// with none, as by a proxy whose upstream failed, and the
			// request may have gone out.
			sw.status, err = http.StatusBadGateway, errAborted
		}
		counted := recipients
		if recipients > 0 && !mayHaveSent(sw.status, proxyError(r, sw.status, err), body == nil || body.readOut.Load(), wrote != nil && wrote.Load(), q.partlySent) {
			counted = 0
		}
		// Counted under the registry's lock, so that the last flush, which
		// takes every request still registered first, sees this count.
		sh, mine := flying.claim(q)
		if !mine {
			return // counted by the last flush, which could not wait for it
		}
		h.count(q, ip, sw.status, counted, t)
		sh.mu.Unlock()
		h.logRecorded(r, q, ip, sw.status)
		if counted == 0 && recipients > 0 && qs != nil {
			h.releaseQuota(context.WithoutCancel(r.Context()), qs, recipients, t) // a client gone does not keep them
		}
	}()
	err = next.ServeHTTP(sw, r)
	var refused *refusal
	switch b := r.Body.(type) {
	case *heldBody:
		refused = &b.refusal
	case *sendBody:
		refused = &b.refusal
	}
	if refused != nil && err != nil && !sw.sent {
		if d := refused.refused(); d.code != Allowed {
			// Its end was withheld from the provider: the client is told
			// why, as a request arriving now would be.
			q.code = d.code
			d.query = h.queryRequest(r)
			d.write(sw, h.forms)
			if d.code == RevokedKey || d.code == ExpiredKey || d.code == DisabledKey {
				h.emit("keygate.key_denied", q, ip)
			}
			done = true
			return
		}
	}
	if err != nil {
		h.answerError(sw, r, q, ip, t, err)
	}
	done = true
}

// errAborted stands for the error of a next handler that ended the
// request with a panic before it answered.
var errAborted = errors.New("the handler aborted the request")

// proxyError is the next handler's error as mayHaveSent reads it. Since
// Caddy 2.11, reverse_proxy answers a client that went away while it
// waited for the provider (the request's context canceled) with a 499 and
// no error: that is the client's cancel, after the provider may have had
// the whole send, not a provider's refusal. Before, such a send gave its
// recipients back, and a client timing out on a slow provider sent past
// its quota.
func proxyError(r *http.Request, status int, err error) error {
	if err == nil && status == 499 && r.Context().Err() != nil {
		return context.Cause(r.Context())
	}
	return err
}

// redactSpan takes a key the URL holds out of the request's span, when
// Caddy's tracing records one: the span is exported when the request ends,
// with the path as url.path and, when its name is built from
// {http.request.uri}, in its name, as Caddy's access log would write them
// (the request is left out of that). Only spans of OpenTelemetry's SDK
// tell their name; the others keep theirs.
func redactSpan(r *http.Request) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("url.path", loggedPath(sentPath(r))))
	if named, ok := span.(interface{ Name() string }); ok {
		if name := loggedPath(named.Name()); name != named.Name() {
			span.SetName(name)
		}
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// keyCheck is what checking a request's key again needs (recheck, then
// authorize for a record that changed): a body that outlasts the request's
// first check carries one.
type keyCheck struct {
	h        *Handler
	ctx      context.Context
	rec      *store.Record
	ip       string
	r        *http.Request
	asSent   *http.Request
	scoped   *http.Request
	onBehalf map[string][]string
	// scopeElse is the request's mailapi.Message.ScopeElse.
	scopeElse bool
}

// check applies the key as it is now to the request.
func (c *keyCheck) check() denial {
	fresh, d := c.h.recheck(c.ctx, c.rec, c.ip)
	if d.code == Allowed && fresh != c.rec {
		_, _, d = c.h.authorize(c.r, fresh, c.asSent, c.scoped, c.scopeElse, c.onBehalf)
	}
	return d
}

// refusal is why a body's key was refused after the body was passed on; nil
// while it was not. The transport reads the body on its own goroutine.
type refusal struct{ d atomic.Pointer[denial] }

// refused returns why the body was refused, if it was.
func (f *refusal) refused() denial {
	if d := f.d.Load(); d != nil {
		return *d
	}
	return denial{}
}

// errKeyChangedMidBody ends a body whose key was refused after it was
// passed on.
var errKeyChangedMidBody = errors.New("keygate: the API key was revoked, disabled, ended or narrowed while the " +
	"request was on its way; the rest of its body was not passed on")

// heldBody is the body of a request keygate passes on as it arrives (any
// but a send, whose body is read whole and checked again once it is in:
// recheck). Its end is withheld until the key has been checked again: a key
// revoked, disabled, ended or narrowed while the body arrived (a template
// or a contact list uploaded slowly) never completes the request at the
// provider, which gets it cut short, as from a client that went away, and
// the client gets the denial. Only requests with a body on such routes
// have one.
type heldBody struct {
	io.ReadCloser
	keyCheck
	refusal
	left int64 // bytes still to come, -1 when the length is not known
}

func (b *heldBody) Read(p []byte) (int, error) {
	if b.d.Load() != nil {
		return 0, errKeyChangedMidBody
	}
	n, err := b.ReadCloser.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	// The body's last bytes (of a length given), or its end (chunked):
	// the provider acts on neither until it has them.
	if b.left == 0 || b.left == -1 && err == io.EOF {
		if d := b.check(); d.code != Allowed {
			b.d.Store(&d)
			if b.left == 0 {
				return 0, errKeyChangedMidBody
			}
			return n, errKeyChangedMidBody
		}
		b.left = -2 // checked: what follows (an EOF) is read as it comes
	}
	return n, err
}
