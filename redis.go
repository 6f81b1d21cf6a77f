package keygate

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
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
	client       *redis.Client
	exact        *ratelimit.Redis
	leased       *ratelimit.Leased
	exactQuotas  *ratelimit.RedisQuotas
	leasedQuotas *ratelimit.LeasedQuotas
}

var sharedPool = caddy.NewUsagePool()

func acquireShared(url string, b *backend, logger *zap.Logger) (*sharedLimits, error) {
	v, _, err := sharedPool.LoadOrNew(url, func() (caddy.Destructor, error) {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("keygate: ratelimit redis %q: %v", store.RedactURI(url), redisURLError(err))
		}
		// Bounded waits: a slow Redis must not stall requests (the limiter
		// also cuts each call at its own timeout and falls back).
		opts.ContextTimeoutEnabled = true
		opts.MaxRetries = 1
		opts.DialTimeout = 500 * time.Millisecond
		// go-redis logs every failed dial; keygate logs an outage once.
		redis.SetLogger(quietRedisLogger{})
		client := redis.NewClient(opts)
		logger := logger.With(zap.String("redis", store.RedactURI(url)))
		ro := ratelimit.RedisOptions{
			Prefix: "keygate:",
			Logf:   func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...)) },
		}
		// The quotas' fallback is their own: it is drained when Redis
		// answers again, which must not touch the counters of this
		// store's routes that count quotas locally (b.quotas).
		fallback := ratelimit.NewLocalQuotas()
		sl := &sharedLimits{
			client:       client,
			exact:        ratelimit.NewRedis(client, b.limits, ro),
			leased:       ratelimit.NewLeased(client, b.limits, ro, 0),
			exactQuotas:  ratelimit.NewRedisQuotas(client, fallback, ro),
			leasedQuotas: ratelimit.NewLeasedQuotas(client, fallback, ro, 0),
		}
		countShared(sl)
		return sl, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*sharedLimits), nil
}

func releaseShared(url string) { _, _ = sharedPool.Delete(url) }

// Destruct gives leased tokens and recipients back and closes the Redis
// client.
func (s *sharedLimits) Destruct() error {
	s.leased.Close()
	s.leasedQuotas.Close()
	uncountShared(s)
	return s.client.Close()
}

// fallbacks counts decisions taken locally while Redis was unreachable.
func (s *sharedLimits) fallbacks() uint64 {
	return s.exact.Fallbacks() + s.leased.Fallbacks() + s.exactQuotas.Fallbacks() + s.leasedQuotas.Fallbacks()
}

// quietRedisLogger drops go-redis's own log lines.
type quietRedisLogger struct{}

func (quietRedisLogger) Printf(context.Context, string, ...any) {}

// redisURLError is what to say of a URL go-redis could not read. net/url's
// errors quote the URL, password included, or the part of it before a
// character it stopped at: they are not passed on.
func redisURLError(err error) error {
	if ue := (*neturl.Error)(nil); errors.As(err, &ue) {
		return errors.New("not a URL: characters such as % # ? / @ in the user name or password must be percent-encoded (%25 %23 %3F %2F %40)")
	}
	return err
}
