package keygate

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/ratelimit"
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
		err := provisionOnce(t, &Handler{RateLimitRedis: url})
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

// A Redis that refuses keygate (a wrong password, none given, an ACL user
// without keygate's keys) refuses the config, as a store that refuses does,
// with what it refused and never the password; one that does not answer is
// waited for with local limits. (Before, each was read as an outage: the
// config loaded, one WARN line said "unreachable", and every node decided
// alone for as long as it ran, two nodes admitting twice a key's rate.)
func TestARedisThatRefusesKeygateRefusesTheConfig(t *testing.T) {
	rd := testservers.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer admin.Close()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "elsewhere", "on", ">other-pw", "~other:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	// The ACL docs/cluster.md gives keygate's own user.
	if err := admin.Do(ctx, "ACL", "SETUSER", "kg", "on", ">kg-pw", "~keygate:*", "~rate:keygate:*",
		"+@connection", "+@scripting", "+@read", "+@write", "+time").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "notime", "on", ">nt-pw", "~keygate:*", "~rate:keygate:*",
		"+@connection", "+@scripting", "+@read", "+@write").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "requirepass", "s3cret-pw").Err(); err != nil {
		t.Fatal(err)
	}
	provision := func(url string) error { return provisionOnce(t, &Handler{RateLimitRedis: url}) }
	for _, c := range []struct{ name, url, want string }{
		{"no password", "redis://" + rd.Addr, "NOAUTH"},
		{"a wrong password", "redis://:wrong-pw@" + rd.Addr, "WRONGPASS"},
		{"a user without keygate's keys", "redis://elsewhere:other-pw@" + rd.Addr, "NOPERM"},
		{"a user whose scripts cannot read the clock", "redis://notime:nt-pw@" + rd.Addr, "refuses a script reading the clock (TIME)"},
	} {
		err := provision(c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal saying %s", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "-pw") {
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
	}
	for _, c := range []struct{ name, url string }{
		{"the password", "redis://:s3cret-pw@" + rd.Addr},
		{"nothing listening yet", "redis://127.0.0.1:1"},
	} {
		if err := provision(c.url); err != nil {
			t.Errorf("%s: %v, want the config to load", c.name, err)
		}
	}
	// keygate's own user does all keygate does, nothing falling back.
	h, _ := testHandler(t, &Handler{RateLimitRedis: "redis://kg:kg-pw@" + rd.Addr, RateLimitRedisTimeout: loadedMachineRedisTimeout})
	sl, now := h.shared, time.Now()
	start := now.Truncate(time.Hour)
	load := func(context.Context) (int64, error) { return 0, nil }
	lim := ratelimit.Limit{N: 100, Per: time.Minute}
	sl.exact.Allow(ctx, "key_acl", lim, now)
	sl.leased.Allow(ctx, "key_acl", lim, now)
	for _, q := range []ratelimit.Quotas{sl.exactQuotas, sl.leasedQuotas} {
		if _, err := q.Reserve(ctx, "key_acl/d", 100, 1, start, start.Add(time.Hour), load, now); err != nil {
			t.Error(err)
		}
	}
	if f := sl.fallbacks(); f != 0 {
		t.Errorf("keygate's own user: %d decisions fell back to local limits, want none", f)
	}
}

// loadedMachineRedisTimeout is the Redis timeout of tests that want no
// decision to fall back: at the default 100 ms, one round trip (a TLS
// handshake, a cluster's) past it on a loaded machine under the race
// detector put that limiter in an outage for a second, and every decision
// of it fell back (red CI runs).
const loadedMachineRedisTimeout = caddy.Duration(2 * time.Second)

// TLS to Redis with a private authority, and a client certificate for a
// Redis that asks for one: without them the config is refused (the
// certificate is one no retry mends), with them limits are Redis's.
func TestRedisOverTLSWithAPrivateAuthorityAndAClientCertificate(t *testing.T) {
	for _, clientCert := range []bool{false, true} {
		rd := testservers.StartRedisTLS(t, clientCert)
		url := "rediss://" + rd.TLSAddr
		provision := func(tlsOpts *RedisTLS) (*Handler, error) {
			h := &Handler{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"), RateLimitRedis: url, RateLimitRedisTLS: tlsOpts,
				RateLimitRedisTimeout: loadedMachineRedisTimeout}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			t.Cleanup(func() { h.Cleanup(); cancel() })
			return h, h.Provision(ctx)
		}
		// A handshake the check's dial timeout (500 ms) cut short is an
		// outage, not a refusal: the config loads. Under the race detector
		// on a loaded machine a handshake took that long (a flaky CI run);
		// a refusal is certain once one completes.
		refusal := func(tlsOpts *RedisTLS) (err error) {
			for range 5 {
				if _, err = provision(tlsOpts); err != nil {
					break
				}
			}
			return err
		}
		if err := refusal(nil); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("client certificate asked: %v; the system's authorities: %v, want a refusal naming the certificate", clientCert, err)
		}
		withCA := &RedisTLS{CA: rd.TLS.CA}
		if clientCert {
			if err := refusal(withCA); err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("no client certificate for a Redis that asks for one: %v, want a refusal naming it", err)
			}
			withCA.Cert, withCA.Key = rd.TLS.ClientCert, rd.TLS.ClientKey
		}
		if err := provisionOnce(t, &Handler{RateLimitRedis: url + "?skip_verify=true", RateLimitRedisTLS: withCA}); err == nil ||
			!strings.Contains(err.Error(), "skip_verify") {
			t.Errorf("skip_verify with tls options: %v, want it refused", err)
		}
		// Placeholders, as in the URL.
		t.Setenv("KEYGATE_TEST_REDIS_CA", withCA.CA)
		withCA.CA = "{env.KEYGATE_TEST_REDIS_CA}"
		h, err := provision(withCA)
		if err != nil {
			t.Fatalf("client certificate asked: %v; %+v: %v", clientCert, withCA, err)
		}
		q := h.shared.exactQuotas
		start := time.Now().Truncate(time.Hour)
		if _, err := q.Reserve(context.Background(), "key_tls/d", 10, 1, start, start.Add(time.Hour),
			func(context.Context) (int64, error) { return 0, nil }, time.Now()); err != nil || q.Fallbacks() != 0 {
			t.Errorf("client certificate asked: %v; a reservation: %v, %d fallbacks; want Redis's", clientCert, err, q.Fallbacks())
		}
	}
}

// A Redis Cluster (as AWS MemoryDB and ElastiCache Serverless are) with
// `cluster`: every decision through it, keys spread over its masters, one
// key's limit held across the cluster. Without `cluster` the config is
// refused and says what to add.
func TestRedisClusterMode(t *testing.T) {
	rc := testservers.StartRedisCluster(t, 3)
	// keygate's own user, with the ACL docs/cluster.md gives for a cluster
	// (which also keeps INFO from it: the cluster shows itself otherwise).
	for _, addr := range rc.Addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := c.Do(context.Background(), "ACL", "SETUSER", "kg", "on", ">kg-pw", "~keygate:*", "~rate:keygate:*",
			"+@connection", "+@scripting", "+@read", "+@write", "+time", "+cluster|slots").Err()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	url := "redis://kg:kg-pw@" + rc.Addrs[0] + "?addr=" + rc.Addrs[1]
	for _, u := range []string{url, "redis://" + rc.Addrs[0], "redis://kg:kg-pw@" + rc.Addrs[0]} {
		err := provisionOnce(t, &Handler{RateLimitRedis: u})
		if err == nil || !strings.Contains(err.Error(), "add `cluster`") {
			t.Errorf("%s without cluster: %v, want a refusal saying to add cluster", u, err)
		}
	}

	h, _ := testHandler(t, &Handler{RateLimitRedis: url, RateLimitRedisCluster: true, RateLimitRedisTimeout: loadedMachineRedisTimeout})
	sl, ctx, now := h.shared, context.Background(), time.Now()
	start := now.Truncate(time.Hour)
	load := func(context.Context) (int64, error) { return 0, nil }
	lim := ratelimit.Limit{N: 10, Per: time.Minute}
	for i := range 60 { // over every master's slots
		key := fmt.Sprintf("key_cluster%d", i)
		sl.exact.Allow(ctx, key, lim, now)
		sl.leased.Allow(ctx, key, lim, now)
		for _, q := range []ratelimit.Quotas{sl.exactQuotas, sl.leasedQuotas} {
			if _, err := q.Reserve(ctx, key+"/d", 100, 1, start, start.Add(time.Hour), load, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	if f := sl.fallbacks(); f != 0 {
		t.Errorf("%d decisions fell back to local limits on a Redis Cluster, want none", f)
	}
	allowed := 0
	for range 30 {
		if sl.exact.Allow(ctx, "key_cluster_limit", lim, now).Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("a 10/m key on the cluster: %d of 30 allowed, want 10", allowed)
	}
}

// A primary watched by Sentinel, with `sentinel <name>`: decisions through
// the primary, and through the replica Sentinel promotes when the primary
// stops, with nothing failing meanwhile. Naming the Sentinel without
// `sentinel` refuses the config and says to add it.
func TestRedisSentinelMode(t *testing.T) {
	rs := testservers.StartRedisSentinel(t)
	url := "redis://" + rs.Addr
	err := provisionOnce(t, &Handler{RateLimitRedis: url})
	if err == nil || !strings.Contains(err.Error(), "add `sentinel") {
		t.Errorf("a Sentinel without sentinel: %v, want a refusal saying to add sentinel", err)
	}
	for _, c := range []struct{ url, name, want string }{
		{url, "nosuch", `knows no primary named "nosuch"`},
		{"redis://" + rs.Primary.Addr, "keygate", "is not a Sentinel"},
	} {
		err := provisionOnce(t, &Handler{RateLimitRedis: c.url, RateLimitRedisSentinel: c.name})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sentinel %s at %s: %v, want a refusal saying %s", c.name, c.url, err, c.want)
		}
	}

	h, _ := testHandler(t, &Handler{RateLimitRedis: url, RateLimitRedisSentinel: "keygate", RateLimitRedisTimeout: loadedMachineRedisTimeout})
	sl, ctx := h.shared, context.Background()
	lim := ratelimit.Limit{N: 10, Per: time.Minute}
	allowed := 0
	for range 30 {
		if sl.exact.Allow(ctx, "key_sentinel", lim, time.Now()).Allowed {
			allowed++
		}
	}
	if allowed != 10 || sl.fallbacks() != 0 {
		t.Errorf("a 10/m key through Sentinel's primary: %d of 30 allowed, %d fell back; want 10 and none", allowed, sl.fallbacks())
	}
	rs.Primary.Stop()
	promoted := func() bool {
		before := sl.fallbacks()
		sl.exact.Allow(ctx, "key_after_failover", lim, time.Now().Add(2*time.Second)) // past the outage's retry
		return sl.fallbacks() == before
	}
	for deadline := time.Now().Add(30 * time.Second); !promoted(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("decisions still fall back 30 s after the primary stopped: %d", sl.fallbacks())
		}
	}
	replica := redis.NewClient(&redis.Options{Addr: rs.Replica.Addr})
	defer replica.Close()
	if n, _ := replica.Exists(ctx, "rate:keygate:key_after_failover").Result(); n != 1 {
		t.Errorf("the promoted replica holds no bucket for a decision after the failover")
	}
}

// provisionOnce provisions h on a store of its own and cleans it up at
// once: whether a config with it would load.
func provisionOnce(t *testing.T, h *Handler) error {
	h.Store = "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	h.Cleanup()
	return err
}

// A URL that names a replica (the old primary, for a moment, after a
// failover) loads with a warning, not a refusal, and the node decides on
// its own until it names a primary, saying why once.
func TestARedisReplicaIsWarnedAboutNotRefused(t *testing.T) {
	primary, replica := testservers.StartRedis(t), testservers.StartRedis(t)
	host, port, _ := strings.Cut(primary.Addr, ":")
	admin := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer admin.Close()
	ctx := context.Background()
	if err := admin.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	setup, err := newRedisSetup("redis://"+replica.Addr, false, "", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	if err := preflightRedis(setup, zap.New(core)); err != nil {
		t.Fatalf("a replica refused the config: %v", err)
	}
	if w := logs.FilterMessageSnippet("replica (READONLY)").All(); len(w) != 1 || w[0].Level != zapcore.WarnLevel {
		t.Errorf("the check logged %+v, want one WARN about a replica", logs.All())
	}

	var said []string
	client, err := newRedisClient(setup) // as a node's
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lim := ratelimit.NewRedis(client, ratelimit.NewLocal(), ratelimit.RedisOptions{Logf: func(f string, args ...any) {
		said = append(said, fmt.Sprintf(f, args...))
	}})
	l, now := ratelimit.Limit{N: 2, Per: time.Minute}, time.Now()
	for i, want := range []bool{true, true, false} {
		if got := lim.Allow(ctx, "key_replica", l, now.Add(time.Duration(i)*time.Millisecond)).Allowed; got != want {
			t.Errorf("request %d on a replica: allowed %v, want %v (the local fallback's bucket)", i+1, got, want)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "redis is a replica (READONLY)") {
		t.Errorf("the limiter said %q, want one line about a replica", said)
	}
}

// A Redis that refuses refuses the config even while the store does not
// answer yet (the handler would wait for the store, then attach): before,
// the config loaded and the refusal came again every second.
func TestARefusingRedisRefusesTheConfigWhileTheStoreIsDown(t *testing.T) {
	pg := testservers.StartPostgres(t)
	pg.Stop()
	rd := testservers.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer admin.Close()
	if err := admin.ConfigSet(context.Background(), "requirepass", "s3cret-pw").Err(); err != nil {
		t.Fatal(err)
	}
	h := &Handler{Store: pg.URI, RateLimitRedis: "redis://:wrong-pw@" + rd.Addr}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	h.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("a wrong Redis password with the store down: %v, want the config refused for it", err)
	}
}

// Quota counts Redis does not hold are counted, for KeygateRedisLostQuotaCounters
// and KeygateRedisMissedQuotaCounts to alert on: a counter Redis lost while
// this node leased from it (the key may pass its quota by what the store's
// count misses), and recipients counted during an outage that Redis did not
// take when the node stopped using it (the key may send as many again).
// Before, only log lines said either.
func TestQuotaCountsRedisMissesAreCounted(t *testing.T) {
	rd := testservers.StartRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer admin.Close()
	ctx := context.Background()
	// The node reaches Redis as a user of its own, cut off for its outage
	// (testservers.Redis.Reach).
	rd.Reach("node", true)
	h := &Handler{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"), RateLimitRedis: "redis://node:pw@" + rd.Addr + "/0"}
	hctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(hctx); err != nil {
		t.Fatal(err)
	}
	cleaned := false
	defer func() {
		if !cleaned {
			h.Cleanup()
		}
	}()
	lost0 := counterValue(t, "keygate_ratelimit_redis_lost_quota_counters_total")
	missed0 := counterValue(t, "keygate_ratelimit_redis_missed_recipients_total")
	now := time.Now()
	start := now.Truncate(time.Hour)
	end := start.Add(time.Hour)
	load := func(context.Context) (int64, error) { return 0, nil }
	reserve := func(q ratelimit.Quotas, key string, n int64) {
		t.Helper()
		if _, err := q.Reserve(ctx, key, 6400, n, start, end, load, now); err != nil {
			t.Fatal(err)
		}
	}

	// Redis evicts a counter the node holds a block of.
	reserve(h.shared.leasedQuotas, "key_lost/h", 1)
	if err := admin.Del(ctx, fmt.Sprintf("%squota:key_lost/h:%d", redisPrefix, start.Unix())).Err(); err != nil {
		t.Fatal(err)
	}
	reserve(h.shared.leasedQuotas, "key_lost/h", 50) // more than the block: Redis is asked
	if got := counterValue(t, "keygate_ratelimit_redis_lost_quota_counters_total") - lost0; got != 1 {
		t.Errorf("keygate_ratelimit_redis_lost_quota_counters_total rose by %v after Redis lost a counter, want 1", got)
	}

	// The node counts 4 recipients on its own and stops using Redis
	// while Redis still refuses it.
	rd.Reach("node", false)
	reserve(h.shared.exactQuotas, "key_missed/h", 4)
	if h.shared.fallbacks() == 0 {
		t.Fatal("the send was not counted by the fallback: the test proves nothing")
	}
	cleaned = true
	h.Cleanup() // the last handler on this Redis: its limits close
	if got := counterValue(t, "keygate_ratelimit_redis_missed_recipients_total") - missed0; got != 4 {
		t.Errorf("keygate_ratelimit_redis_missed_recipients_total rose by %v after Redis did not take 4 recipients, want 4", got)
	}
	if got := counterValue(t, "keygate_ratelimit_redis_lost_quota_counters_total") - lost0; got != 1 {
		t.Errorf("keygate_ratelimit_redis_lost_quota_counters_total is %v above where it was once the limits closed, want 1", got)
	}
}
