package keygate

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/keys"
)

// reload provisions h as a config reload does — the new handler on a new
// context before the old one is cleaned up — and returns the new handler.
func reload(t *testing.T, old *Handler, next *Handler) *Handler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := next.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	old.Cleanup()
	t.Cleanup(func() { next.Cleanup(); cancel() })
	return next
}

func TestReloadsLeaveNothingBehind(t *testing.T) {
	uri := "sqlite:" + filepath.Join(t.TempDir(), "keys.db")

	t.Run("the admin API and console issue keys with the current prefix", func(t *testing.T) {
		h, _ := testHandler(t, &Handler{Store: uri, Prefix: "aa"})
		for i := 0; i < 50; i++ {
			prefix := "aa"
			if i%2 == 0 {
				prefix = "bb"
			}
			h = reload(t, h, &Handler{Store: uri, Prefix: prefix})
		}
		h = reload(t, h, &Handler{Store: uri, Prefix: "zz"})
		n := 0
		h.backend.handlers.Range(func(_, _ any) bool { n++; return true })
		if n != 1 {
			t.Errorf("%d handlers registered with the store after 51 reloads, want 1", n)
		}
		name, scopes := "after-reload", []string{"*"}
		res, err := h.backend.keys.Issue(context.Background(), keys.Spec{Name: &name, Scopes: &scopes}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(res.Key, "zz_") {
			t.Errorf("issued %s…, want the route's current prefix zz_", res.Key[:3])
		}
	})

	t.Run("limits of a Redis reloaded with another timeout are not kept as heirs", func(t *testing.T) {
		rd := testservers.StartRedis(t)
		url := "redis://" + rd.Addr + "/0"
		h, _ := testHandler(t, &Handler{Store: uri, RateLimitRedis: url})
		for i := range 20 {
			timeout := caddy.Duration(time.Duration(100+i%2) * time.Millisecond)
			h = reload(t, h, &Handler{Store: uri, RateLimitRedis: url, RateLimitRedisTimeout: timeout})
		}
		heirs.Lock()
		n := len(heirs.of[h.shared.target])
		heirs.Unlock()
		if n != 1 {
			t.Errorf("%d limits of one Redis kept to take over outage counts after 20 reloads, want the 1 in use", n)
		}
	})

	t.Run("a config's metrics registry is not kept after the config is gone", func(t *testing.T) {
		keep, _ := testHandler(t, &Handler{Store: uri})
		var regs []weak.Pointer[prometheus.Registry]
		for i := 0; i < 50; i++ {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			regs = append(regs, weak.Make(ctx.GetMetricsRegistry()))
			h := &Handler{Store: uri}
			if err := h.Provision(ctx); err != nil {
				t.Fatal(err)
			}
			h.Cleanup()
			cancel()
		}
		_ = keep
		runtime.GC()
		runtime.GC()
		alive := 0
		for _, w := range regs {
			if w.Value() != nil {
				alive++
			}
		}
		if alive > 1 {
			t.Errorf("%d of 50 unloaded configs' metrics registries are still reachable", alive)
		}
	})
}
