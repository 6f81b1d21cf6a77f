package keygate

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
)

// sharedLimits makes rate limits and quotas global across gateway nodes
// through Redis: leased tokens and recipient blocks (the default) or a Redis
// decision per request (exact), on the same buckets and counters. When Redis is unreachable each decision
// falls back to the node's local buckets and counters (never a 5xx for that
// reason). It lives in sharedPool, so leases survive a reload.
type sharedLimits struct {
	target       string // redisSetup.target
	client       redis.UniversalClient
	exact        *ratelimit.Redis
	leased       *ratelimit.Leased
	exactQuotas  *ratelimit.RedisQuotas
	leasedQuotas *ratelimit.LeasedQuotas
}

var sharedPool = caddy.NewUsagePool()

// heirs are the shared limits alive, by the Redis they name (target): the
// quota counts of limits that close and Redis does not take (an outage)
// go to other limits of the same Redis, when there are: a reload during
// the outage that changed only the timeout or TLS files made those, and
// they add them to Redis when it answers them, rather than lose them.
var heirs = struct {
	sync.Mutex
	of map[string]map[*sharedLimits]struct{}
}{of: map[string]map[*sharedLimits]struct{}{}}

// inheritor is a quota counter that takes over another's outage counts
// (ratelimit.RedisQuotas.Inherit).
type inheritor interface {
	Inherit(spent []ratelimit.Spent, since time.Time)
}

// heir hands spent to the exact or leased quotas (pick) of limits of s's
// Redis still alive, if there are. Held under heirs' lock, the limits
// chosen cannot close meanwhile: they leave heirs first (Destruct).
func (s *sharedLimits) heir(pick func(*sharedLimits) inheritor) ratelimit.Heir {
	return func(spent []ratelimit.Spent, since time.Time) bool {
		heirs.Lock()
		defer heirs.Unlock()
		for h := range heirs.of[s.target] {
			pick(h).Inherit(spent, since)
			return true
		}
		return false
	}
}

// RedisTLS sets up TLS to Redis (a rediss:// URL) beyond the defaults.
type RedisTLS struct {
	// CA is a PEM file of the authorities to trust instead of the system's.
	CA string `json:"ca,omitempty"`
	// Cert and Key are PEM files of a client certificate and its key, for
	// a Redis that asks for one (tls-auth-clients).
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// ServerName is the name the server's certificate must carry, when it
	// is not the URL's host.
	ServerName string `json:"server_name,omitempty"`
}

// redisSetup is what a handler's ratelimit redis names, its files read:
// handlers whose setups have one key share one client and its limits.
type redisSetup struct {
	url      string
	cluster  bool
	sentinel string      // the primary's name, when the URL names a Sentinel
	tls      *tls.Config // nil: the URL's own
	timeout  time.Duration
	key      string
	// target is the Redis the setup names, whatever the timeout or TLS
	// files: a reload that changes only those makes new limits (key) on
	// the same Redis, which take over the old ones' outage counts (heirs).
	target string
}

// newRedisSetup reads the TLS files (so a reload after they change makes a
// new client, and a file that cannot be used refuses the config, naming
// it) and checks the timeout.
func newRedisSetup(url string, cluster bool, sentinel string, t *RedisTLS, timeout time.Duration) (redisSetup, error) {
	s := redisSetup{url: url, cluster: cluster, sentinel: sentinel, timeout: timeout,
		target: fmt.Sprintf("%s\x00%t\x00%s", url, cluster, sentinel)}
	fail := func(format string, args ...any) (redisSetup, error) {
		return s, fmt.Errorf("keygate: ratelimit redis %q: "+format, append([]any{store.RedactURI(url)}, args...)...)
	}
	// As the Caddyfile checks it before its placeholders are replaced: from
	// {env.…} or JSON, redis:PASSWORD@host (its "//" left out) was read by
	// go-redis as a Redis on localhost:6379 without a password, and logged
	// whole as the Redis that did not answer.
	if !strings.HasPrefix(url, "redis://") && !strings.HasPrefix(url, "rediss://") {
		return fail("want redis://host:port[/db] or rediss://…")
	}
	// go-redis reads a password's rest after an unencoded '/' as the
	// database, and its error quoted it.
	if store.UnencodedUserinfo(url) {
		return fail("%v", store.ErrUnencodedUserinfo)
	}
	// As the Caddyfile bounds it: a JSON config gives nanoseconds, and a
	// timeout under a millisecond would have every call fall back.
	if timeout != 0 && (timeout < time.Millisecond || timeout > 10*time.Second) {
		return fail("timeout %v: want a duration between 1ms and 10s", timeout)
	}
	if timeout == 0 {
		timeout = ratelimit.DefaultTimeout // one client whether it is said or not
		s.timeout = timeout
	}
	if t != nil && *t == (RedisTLS{}) {
		t = nil
	}
	h := sha256.New()
	if cluster && sentinel != "" {
		return fail("cluster and sentinel are two kinds of Redis: name one")
	}
	fmt.Fprintf(h, "%s\x00%d\x00%t\x00%s\x00", url, timeout, cluster, sentinel)
	if t != nil {
		if !strings.HasPrefix(url, "rediss://") {
			return fail("tls options need a rediss:// URL")
		}
		if (t.Cert == "") != (t.Key == "") {
			return fail("tls_cert and tls_key go together")
		}
		if strings.Contains(url, "skip_verify") {
			return fail("skip_verify in the URL turns off what the tls options set up: remove one")
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
		if t.CA != "" {
			pem, err := os.ReadFile(t.CA)
			if err != nil {
				return fail("tls_ca: %v", err)
			}
			s.tls.RootCAs = x509.NewCertPool()
			if !s.tls.RootCAs.AppendCertsFromPEM(pem) {
				return fail("tls_ca %s: no PEM certificate in it", t.CA)
			}
			h.Write(pem)
		}
		if t.Cert != "" {
			pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
			if err != nil {
				return fail("tls_cert and tls_key: %v", err)
			}
			s.tls.Certificates = []tls.Certificate{pair}
			for _, der := range pair.Certificate {
				h.Write(der)
			}
		}
		fmt.Fprintf(h, "\x00%s", t.ServerName)
	}
	s.key = string(h.Sum(nil))
	return s, nil
}

// tlsFor is the TLS setup for a connection go-redis would make with own
// (from a rediss:// URL: its host as the name, skip_verify), with the
// tls_* options applied.
func (s redisSetup) tlsFor(own *tls.Config) *tls.Config {
	if s.tls == nil {
		return own
	}
	t := s.tls.Clone()
	if t.ServerName == "" && own != nil {
		t.ServerName = own.ServerName
	}
	if own != nil && own.InsecureSkipVerify {
		t.InsecureSkipVerify = true
	}
	return t
}

// newRedisClient makes the client setup names: of one server; with
// cluster, of a Redis Cluster whose URL names any of its nodes (addr=
// parameters name more); with sentinel, of the primary a Sentinel the URL
// names (addr= more) knows by that name, following it through failovers.
func newRedisClient(setup redisSetup) (redis.UniversalClient, error) {
	fail := func(err error) (redis.UniversalClient, error) {
		return nil, fmt.Errorf("keygate: ratelimit redis %q: %v", store.RedactURI(setup.url), redisURLError(err))
	}
	// go-redis logs every failed dial; keygate logs an outage once.
	redis.SetLogger(quietRedisLogger{})
	// Bounded waits: a slow Redis must not stall requests (the limiter
	// also cuts each call at its own timeout and falls back). One dial a
	// try: go-redis's default of five, 100 ms apart, used up a request's
	// 100 ms budget, so the log said only "did not answer within 100ms" and
	// never why (a certificate, a refused port).
	// Two connections kept open (the pool dials them in the background):
	// a connection made on a request's path costs a Redis far away more
	// round trips than its timeout allows.
	const dialTimeout, retries, dialerRetries, minIdle = 500 * time.Millisecond, 1, 1, 2
	if setup.cluster {
		opts, err := redis.ParseClusterURL(setup.url)
		if err != nil {
			return fail(err)
		}
		opts.TLSConfig = setup.tlsFor(opts.TLSConfig)
		opts.ContextTimeoutEnabled = true
		opts.MaxRetries, opts.DialTimeout, opts.DialerRetries, opts.MinIdleConns = retries, dialTimeout, dialerRetries, minIdle
		return redis.NewClusterClient(opts), nil
	}
	if setup.sentinel != "" {
		opts, err := redis.ParseFailoverURL(setup.url)
		if err != nil {
			return fail(err)
		}
		opts.MasterName = setup.sentinel
		opts.TLSConfig = setup.tlsFor(opts.TLSConfig)
		opts.ContextTimeoutEnabled = true
		opts.MaxRetries, opts.DialTimeout, opts.DialerRetries, opts.MinIdleConns = retries, dialTimeout, dialerRetries, minIdle
		return redis.NewFailoverClient(opts), nil
	}
	opts, err := redis.ParseURL(setup.url)
	if err != nil {
		// go-redis says this only in words.
		if strings.Contains(err.Error(), "unexpected option: addr") {
			err = errors.New("addr= names more nodes: add `cluster` to the ratelimit redis block for a Redis Cluster, " +
				"or `sentinel <the primary's name>` for more Sentinels")
		}
		return fail(err)
	}
	opts.TLSConfig = setup.tlsFor(opts.TLSConfig)
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries, opts.DialTimeout, opts.DialerRetries, opts.MinIdleConns = retries, dialTimeout, dialerRetries, minIdle
	return redis.NewClient(opts), nil
}

// redisPrefix starts every Redis key keygate writes.
const redisPrefix = "keygate:"

// preflightRedis checks, with a client of its own, the Redis a handler's
// setup names (checkRedis), unless a running config already uses it. It
// runs at provisioning, before the handler waits for its store: a refusal
// refuses the config whether the store answers yet or not (checked when
// attaching, it was tried again every second while a store was awaited).
func preflightRedis(setup redisSetup, logger *zap.Logger) error {
	if _, ok := sharedPool.References(setup.key); ok {
		return nil
	}
	client, err := newRedisClient(setup)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := checkRedis(client, setup, redisPrefix, logger.With(zap.String("redis", store.RedactURI(setup.url)))); err != nil {
		return fmt.Errorf("keygate: ratelimit redis %q: %w", store.RedactURI(setup.url), err)
	}
	return nil
}

func acquireShared(setup redisSetup, b *backend, logger *zap.Logger) (*sharedLimits, error) {
	url := setup.url
	v, _, err := sharedPool.LoadOrNew(setup.key, func() (caddy.Destructor, error) {
		client, err := newRedisClient(setup)
		if err != nil {
			return nil, err
		}
		logger := logger.With(zap.String("redis", store.RedactURI(url)))
		ro := ratelimit.RedisOptions{
			Prefix:  redisPrefix,
			Timeout: setup.timeout,
			Logf:    func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...)) },
			Errorf:  func(format string, args ...any) { logger.Error(fmt.Sprintf(format, args...)) },
		}
		// Each quota counter's fallback is its own: it is drained when
		// Redis answers that counter again, for the outage that counter
		// saw, which must not touch the other's counts nor those of this
		// store's routes that count quotas locally (b.quotas).
		sl := &sharedLimits{
			target:       setup.target,
			client:       client,
			exact:        ratelimit.NewRedis(client, b.limits, ro),
			leased:       ratelimit.NewLeased(client, b.limits, ro, 0),
			exactQuotas:  ratelimit.NewRedisQuotas(client, ratelimit.NewLocalQuotas(), ro),
			leasedQuotas: ratelimit.NewLeasedQuotas(client, ratelimit.NewLocalQuotas(), ro, 0),
		}
		countShared(sl)
		heirs.Lock()
		if heirs.of[sl.target] == nil {
			heirs.of[sl.target] = map[*sharedLimits]struct{}{}
		}
		heirs.of[sl.target][sl] = struct{}{}
		heirs.Unlock()
		return sl, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*sharedLimits), nil
}

func releaseShared(key string) { _, _ = sharedPool.Delete(key) }

// Destruct gives leased tokens and recipients back (those of calls cut at
// their timeout too, when their answers come), adds to Redis what the
// quotas counted on their own during an outage and Redis has not seen yet
// (or, if Redis does not take it, hands it to other limits of this Redis:
// heirs), and closes the Redis client.
func (s *sharedLimits) Destruct() error {
	heirs.Lock()
	delete(heirs.of[s.target], s)
	if len(heirs.of[s.target]) == 0 {
		delete(heirs.of, s.target)
	}
	heirs.Unlock()
	s.leased.Close()
	s.leasedQuotas.CloseTo(s.heir(func(h *sharedLimits) inheritor { return h.leasedQuotas }))
	s.exactQuotas.CloseTo(s.heir(func(h *sharedLimits) inheritor { return h.exactQuotas }))
	uncountShared(s)
	return s.client.Close()
}

// sharedCounts is what a shared limiter counted for keygate's metrics.
type sharedCounts struct {
	// fallbacks are decisions taken locally while Redis was unreachable.
	fallbacks uint64
	// missed are recipients the quotas counted on their own during a
	// Redis outage that Redis did not take: its counters miss them.
	missed uint64
	// lost are quota counters found gone from Redis while this node
	// leased from them.
	lost uint64
}

func (c sharedCounts) plus(d sharedCounts) sharedCounts {
	return sharedCounts{c.fallbacks + d.fallbacks, c.missed + d.missed, c.lost + d.lost}
}

// fallbacks counts decisions taken locally while Redis was unreachable.
func (s *sharedLimits) fallbacks() uint64 {
	return s.exact.Fallbacks() + s.leased.Fallbacks() + s.exactQuotas.Fallbacks() + s.leasedQuotas.Fallbacks()
}

func (s *sharedLimits) counts() sharedCounts {
	return sharedCounts{
		fallbacks: s.fallbacks(),
		missed:    s.exactQuotas.Missed() + s.leasedQuotas.Missed(),
		lost:      s.leasedQuotas.LostCounters(),
	}
}

// redisCheckTimeout bounds checkRedis: a Redis that does not answer within
// it is waited for as an outage (local limits meanwhile), not refused.
var redisCheckTimeout = 3 * time.Second

// checkRedis asks Redis, once when a config first names it, what keygate
// will ask of it: a ping, a script call and each kind of key keygate
// writes. A refusal no retry mends (a wrong password, an ACL without
// scripting or keygate's keys, a Sentinel's port, a cluster node named
// without cluster: see ratelimit.Refused) is returned, and refuses the
// config as a store that refuses does; a Redis that does not answer is
// logged, and limits are this node's own until it does.
func checkRedis(client redis.UniversalClient, setup redisSetup, prefix string, logger *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisCheckTimeout)
	defer cancel()
	cluster := setup.cluster
	if setup.sentinel != "" {
		if err := checkSentinel(ctx, setup); err != nil {
			return err
		}
	}
	checks := []struct {
		what string
		run  func() error
	}{
		{"PING", func() error { return client.Ping(ctx).Err() }},
		{"to be a single server", func() error {
			if cluster {
				return nil
			}
			// Unanswered (an ACL without INFO): the checks below meet a
			// cluster's MOVED, or a Sentinel's unknown commands, anyway.
			if info, err := client.Info(ctx, "server").Result(); err == nil && strings.Contains(info, "redis_mode:sentinel") {
				return errSentinel
			}
			if info, err := client.Info(ctx, "cluster").Result(); err == nil && strings.Contains(info, "cluster_enabled:1") {
				return errClusterNode
			}
			return nil
		}},
		{"a script (EVALSHA)", func() error {
			err := client.EvalSha(ctx, strings.Repeat("0", 40), nil).Err()
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				return nil // allowed, and no such script: as expected
			}
			return err
		}},
		{"a script reading the clock (TIME)", func() error {
			return client.Eval(ctx, "return redis.call('TIME')[1]", nil).Err()
		}},
		{"a quota key", func() error { return client.Exists(ctx, prefix+"quota:check").Err() }},
		{"a rate-limit key", func() error { return client.Exists(ctx, "rate:"+prefix+"check").Err() }},
		{"keys in every part of a cluster", func() error {
			if cluster {
				return nil
			}
			// Hash tags a to p fall in slots all over the range, so a
			// cluster node that hides INFO answers one of them MOVED.
			for c := 'a'; c <= 'p'; c++ {
				if err := client.Exists(ctx, prefix+"{"+string(c)+"}check").Err(); err != nil {
					return err
				}
			}
			return nil
		}},
		{"a write (a replica refuses it)", func() error {
			return client.Set(ctx, prefix+"check", "1", time.Second).Err()
		}},
	}
	for _, c := range checks {
		err := c.run()
		if err == nil {
			continue
		}
		if errors.Is(err, errClusterNode) || errors.Is(err, errSentinel) {
			return err
		}
		// With an ACL that hides INFO, a cluster or a Sentinel shows
		// itself here.
		if _, moved := redis.IsMovedError(err); (moved || redis.HasErrorPrefix(err, "CROSSSLOT")) && !cluster {
			return errClusterNode
		}
		if redis.HasErrorPrefix(err, "unknown command") && setup.sentinel == "" {
			return fmt.Errorf("refuses %s: %v (a Sentinel? add `sentinel <the primary's name>` to the ratelimit redis block)", c.what, err)
		}
		if ratelimit.Refused(err) {
			return fmt.Errorf("refuses %s: %v", c.what, err)
		}
		if redis.IsReadOnlyError(err) {
			// Not refused: a name that follows the primary may name the
			// old one for a moment during a failover.
			logger.Warn("keygate: redis is a replica (READONLY): limits and quotas are this node's own until the URL names a primary",
				zap.Error(err))
			return nil
		}
		logger.Warn("keygate: redis does not answer: limits and quotas are this node's own until it does",
			zap.Error(err))
		return nil
	}
	// Loading the scripts saves a round trip on the first decisions; an
	// ACL without SCRIPT LOAD only loses that (go-redis sends a script's
	// text when Redis lacks it).
	if err := ratelimit.Warm(ctx, client); err != nil {
		logger.Warn("keygate: loading keygate's scripts into redis failed; the first decisions take a round trip more",
			zap.Error(err))
	}
	return nil
}

// checkSentinel asks the Sentinel the URL names for the primary it knows
// by setup.sentinel: go-redis says "all sentinels specified in
// configuration are unreachable" of a wrong name or of a server that is no
// Sentinel, which would read as an outage for as long as the node ran.
func checkSentinel(ctx context.Context, setup redisSetup) error {
	opts, err := redis.ParseFailoverURL(setup.url)
	if err != nil || len(opts.SentinelAddrs) == 0 {
		return nil // newRedisClient has said what is wrong with it
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: opts.SentinelAddrs[0], Username: opts.SentinelUsername,
		Password: opts.SentinelPassword, TLSConfig: setup.tlsFor(opts.TLSConfig), DialTimeout: 500 * time.Millisecond,
		DialerRetries: 1, MaxRetries: 1, ContextTimeoutEnabled: true})
	defer sc.Close()
	_, err = sc.GetMasterAddrByName(ctx, setup.sentinel).Result()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("the Sentinel at %s knows no primary named %q", opts.SentinelAddrs[0], setup.sentinel)
	case redis.HasErrorPrefix(err, "unknown command"):
		return fmt.Errorf("%s is not a Sentinel (%v): remove `sentinel`, or name a Sentinel", opts.SentinelAddrs[0], err)
	case ratelimit.Refused(err):
		return fmt.Errorf("the Sentinel refuses: %v", err)
	}
	return nil // not answering: waited for as an outage
}

var (
	errClusterNode = errors.New("is a Redis Cluster node: add `cluster` to the ratelimit redis block (docs/cluster.md)")
	errSentinel    = errors.New("is a Sentinel: add `sentinel <the primary's name>` to the ratelimit redis block (docs/cluster.md)")
)

// quietRedisLogger drops go-redis's own log lines.
type quietRedisLogger struct{}

func (quietRedisLogger) Printf(context.Context, string, ...any) {}

// redisURLError is what to say of a URL go-redis could not read. net/url's
// errors quote the URL, password included, or the part of it before a
// character it stopped at: they are not passed on.
func redisURLError(err error) error {
	if ue := (*neturl.Error)(nil); errors.As(err, &ue) {
		return store.ErrUnencodedUserinfo
	}
	return err
}
