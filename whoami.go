package keygate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/ratelimit"
	"github.com/keygate/caddy-keygate/store"
)

// whoamiAnswer is the presented key's own public record, for integrators
// checking a new key. It never names another key, and never the key itself.
type whoamiAnswer struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Owner         string     `json:"owner,omitempty"`
	Env           string     `json:"env"`
	Scopes        []string   `json:"scopes"`
	RateLimit     *rateState `json:"rate_limit,omitempty"`
	Quota         string     `json:"quota,omitempty"`
	SenderDomains []string   `json:"sender_domains,omitempty"`
	MaxRecipients int        `json:"max_recipients,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
}

type rateState struct {
	Limit     string `json:"limit"`
	Burst     int    `json:"burst"`
	Remaining int    `json:"remaining"`
	ResetIn   int64  `json:"reset_seconds"`
}

// checkWhoami refuses a whoami path that is also a route's: a scope line's
// exact path, or one the mail_api dialect sends mail at. Requests to it
// would get the key's record with 200, and an SDK would take a send that
// never left for a sent one.
func (h *Handler) checkWhoami() error {
	if h.Whoami == "" {
		return nil
	}
	// A request path starts with "/": any other whoami matches nothing,
	// and its requests go upstream.
	if !strings.HasPrefix(h.Whoami, "/") {
		return fmt.Errorf("keygate: whoami %q: want a path starting with /", h.Whoami)
	}
	for i := range h.Scopes {
		if r := &h.Scopes[i]; r.kind == exact && strings.EqualFold(r.literal, h.Whoami) {
			return fmt.Errorf("keygate: whoami %s is the path of %s: its requests would be answered by whoami and never proxied; choose a path of its own, such as /keygate/whoami",
				h.Whoami, r.line())
		}
	}
	if h.dialect != nil && (h.dialect.IsSend(http.MethodPost, h.Whoami) || h.dialect.QueryRequest(http.MethodPost, h.Whoami, "", "")) {
		return fmt.Errorf("keygate: whoami %s is a path mail_api %s sends mail at: its requests would be answered by whoami and never proxied; choose a path of its own, such as /keygate/whoami",
			h.Whoami, h.dialect.Name)
	}
	return nil
}

// serveWhoami answers the whoami path; it is never proxied and takes no
// token from the key's bucket.
func (h *Handler) serveWhoami(ctx context.Context, w http.ResponseWriter, rec *store.Record, t time.Time) error {
	a := whoamiAnswer{
		ID: rec.ID, Name: rec.Name, Owner: rec.Owner, Env: rec.Env, Scopes: rec.Scopes,
		SenderDomains: rec.SenderDomains, MaxRecipients: rec.MaxRecipients, ExpiresAt: rec.ExpiresAt,
	}
	if a.Scopes == nil {
		a.Scopes = []string{}
	}
	if q := rec.Quota; q != nil {
		a.Quota = q.String()
	} else if h.quota != nil {
		a.Quota = h.quota.String()
	}
	if l, ok, _ := h.limitFor(rec); ok {
		res := h.peekLimit(ctx, rec.ID, l, t)
		a.RateLimit = &rateState{
			Limit:     store.Rate{N: l.N, Per: l.Per}.String(),
			Burst:     l.Burst,
			Remaining: res.Remaining,
			ResetIn:   retrySecondsOrZero(res.Reset),
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(a)
}

// peekLimit is what remains of the key's rate limit, without taking a
// token: in a cluster, from Redis (a round trip; whoami is not the hot
// path), not from this node's fallback bucket.
func (h *Handler) peekLimit(ctx context.Context, id string, l ratelimit.Limit, t time.Time) ratelimit.Result {
	switch {
	case h.shared == nil:
		return h.backend.limits.Peek(id, l, t)
	case h.RateLimitExact:
		return h.shared.exact.Peek(ctx, id, l, t)
	}
	return h.shared.leased.Peek(ctx, id, l, t)
}
