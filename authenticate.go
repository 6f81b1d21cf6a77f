package keygate

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// Step 1 and 2 of the request path: where a key arrives, and what it is.

// takeKey returns the presented key, or why there is none to verify, and
// removes every header a key may come in, whether or not it held one. It
// also returns where Caddy's access log would write a key as the client
// sent it, if anywhere ("" if not). A URL that holds a key is refused
// whatever else the request presents: the URL goes upstream as it is, and
// into the logs on the way (reverse_proxy's debug log, the provider's own).
// Where keys are read from is described in credential.go.
func (h *Handler) takeKey(r *http.Request) (key string, f fault, inLog string) {
	p := presented{prefix: h.Prefix, sigV4: h.dialect != nil && h.dialect.KeyInSigV4()}
	inLog = h.takeHeaders(r, &p)
	key, f = p.result()
	if keyInURL(r) {
		return "", faultKeyInURL, "the URL"
	}
	return key, f, inLog
}

// keyInURL reports whether the request's URL holds anything shaped like a
// key, as sent or percent-encoded, once (kg%5Flive%5F…) or more times
// (kg%255Flive%255F…: an upstream or its logs may decode it again).
func keyInURL(r *http.Request) bool {
	if verifier.HasSecret(r.RequestURI) || verifier.HasSecret(r.URL.Path) {
		return true
	}
	_, escaped := verifier.EscapedSecret(r.RequestURI)
	return escaped
}

// takeHeaders reads and removes the request's credential headers, and any
// other header holding something shaped like a key, and returns the first
// that holds a key Caddy's access log would write as sent ("" if none).
func (h *Handler) takeHeaders(r *http.Request, p *presented) (inLog string) {
	// Header keys arrive canonical from net/http; direct map access skips
	// re-canonicalising on every request.
	for _, v := range r.Header["Authorization"] {
		if v != "" {
			p.authorization(v)
		}
	}
	delete(r.Header, "Authorization")
	cred, stray := h.scanHeaders(r.Header)
	if stray {
		inLog = h.takeStray(r.Header, p)
	}
	if !cred {
		return inLog
	}
	for _, name := range h.keyHeaders {
		for _, v := range r.Header[name] {
			if v = strings.TrimSpace(v); v != "" {
				p.take(v)
			}
		}
		delete(r.Header, name)
	}
	for _, name := range credentialHeaders {
		for _, v := range r.Header[name] {
			v = strings.TrimSpace(v)
			if p.wellFormed(v) {
				p.misplace(v, faultOtherHeader)
			}
			if inLog == "" && h.loggedAsSent(name) && holdsSecret(v) {
				inLog = name
			}
		}
		delete(r.Header, name)
	}
	return inLog
}

// loggedAsSent reports whether Caddy's access log writes a credential
// header this route does not read as the client sent it. The route's own
// key headers are not asked about: a server with an access log refuses to
// load until its log block deletes them (checkAccessLog).
func (h *Handler) loggedAsSent(name string) bool {
	switch name {
	case "Proxy-Authorization", "Cookie":
		return h.logCredentials // redacted by Caddy unless log_credentials
	}
	return !slices.Contains(h.keyHeaders, name)
}

// scanHeaders is one pass over the request's few headers besides
// Authorization. cred reports a header a key may arrive in or that is
// stripped as a credential (by its name), so the usual request (a key in
// Authorization) does not look up and delete every such name; stray
// reports any other header holding something shaped like a key (by its
// value).
func (h *Handler) scanHeaders(hdr http.Header) (cred, stray bool) {
	for name, values := range hdr {
		if h.keyHeaderNames.mayHold(name) { // most of an SDK's headers: no map lookup
			if _, ok := h.keyHeaderSet[name]; ok {
				cred = true
				continue
			}
		}
		for _, v := range values {
			stray = stray || holdsSecret(v)
		}
	}
	return cred, stray
}

// takeStray removes every header that holds something shaped like a key
// and is not one keygate reads or strips as a credential: a key in
// X-Auth-Token, or in a Referer's query, reaches neither the upstream nor
// Caddy's access log. A well-formed key found there is misplaced, as in a
// credential header the route does not read. It returns the first such
// header's name by sort order.
func (h *Handler) takeStray(hdr http.Header, p *presented) (inLog string) {
	for name, values := range hdr {
		if _, ok := h.keyHeaderSet[name]; ok || !slices.ContainsFunc(values, holdsSecret) {
			continue
		}
		for _, v := range values {
			for _, k := range verifier.Find(v) {
				if p.wellFormed(k) {
					p.misplace(k, faultOtherHeader)
				}
			}
		}
		delete(hdr, name)
		if inLog == "" || name < inLog {
			inLog = name
		}
	}
	return inLog
}

// holdsSecret reports whether a header value holds anything shaped like a
// key in a form Caddy's access log would write legibly: as sent,
// percent-encoded (a Cookie or a Referer from an encoder that escapes '_'),
// or inside the base64 of HTTP Basic credentials in a header other than
// Authorization (Proxy-Authorization under log_credentials,
// X-Authorization), which decodes at a glance. Values too short to hold a
// secret, nearly every header, cost one length check.
func holdsSecret(v string) bool {
	if verifier.HasSecret(v) {
		return true
	}
	if len(v) < len("_live_")+43 {
		return false
	}
	if strings.IndexByte(v, '%') >= 0 {
		if _, escaped := verifier.EscapedSecret(v); escaped {
			return true
		}
	}
	scheme, cred, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return false
	}
	dec, ok := basicCredentials(strings.TrimSpace(cred))
	return ok && verifier.HasSecret(dec)
}

// nameFilter tells, by length and first byte, the header names that may be
// in a set from those that cannot: two loads instead of hashing the name.
type nameFilter [32]uint64

func (f *nameFilter) add(name string) {
	if name != "" {
		f[min(len(name), len(f)-1)] |= 1 << (name[0] & 63)
	}
}

func (f *nameFilter) mayHold(name string) bool {
	return name != "" && f[min(len(name), len(f)-1)]&(1<<(name[0]&63)) != 0
}

// credentialHeaders are removed from every request: whatever the client
// sent, the upstream only sees the credential the Caddyfile injects. They
// include every dialect's key headers, so a key sent in another
// provider's header is stripped (and named in the denial) too.
var credentialHeaders = append([]string{
	"Proxy-Authorization", "Cookie", "X-Api-Key",
	"X-Amz-Security-Token", // an AWS session credential (SES)
}, mailapi.AllKeyHeaders()...)

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
// then looks the digest up and checks the record's state. A key the cache
// answers for is served without looking at its client's failed attempts.
// Otherwise a client over failed_auth_limit costs a store query only for a
// key the cache knew until recently (verifier.Cached), so a busy key behind
// its address is not refused at every cache_ttl; any other key, or no key
// at all, is AuthRateLimited, with when to retry.
func (h *Handler) authenticate(ctx context.Context, key, ip string, t time.Time) (*store.Record, Code, time.Duration) {
	if _, ok := verifier.Parse(key, h.Prefix); !ok {
		if l := h.backend.authFail.Peek(failingClient(ip), h.authLimit, t); !l.Allowed {
			return nil, AuthRateLimited, l.RetryAfter
		}
		return nil, InvalidKey, 0
	}
	d := verifier.DigestOf(key)
	rec, ok := h.backend.verifier.Hit(d, h.ttl, t)
	if !ok {
		var err error
		if l := h.backend.authFail.Peek(failingClient(ip), h.authLimit, t); !l.Allowed {
			if rec, err = h.backend.verifier.Cached(ctx, d, h.ttl, t); err != nil {
				return nil, AuthRateLimited, l.RetryAfter
			}
		} else {
			rec, err = h.backend.verifier.LookupAt(ctx, d, h.ttl, t)
			switch {
			case err == nil:
				h.backend.lookupFault.Observe(t, nil) // the store answered
			case !errors.Is(err, verifier.ErrUnknown) && ctx.Err() == nil:
				h.backend.lookupFault.Observe(t, err)
			}
		}
		switch {
		case errors.Is(err, verifier.ErrUnknown):
			return nil, InvalidKey, 0
		case err != nil:
			return nil, StoreUnavailable, 0
		}
	}
	switch {
	case rec.Revoked():
		return rec, RevokedKey, 0
	case rec.Disabled:
		return rec, DisabledKey, 0
	case rec.Expired(t):
		return rec, ExpiredKey, 0
	}
	return rec, Allowed, 0
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

// failingClient names the client whose failed key attempts failed_auth_limit
// counts: its IPv4 address, or the /64 of its IPv6 address. An IPv6 host is
// routinely given a whole /64 (SLAAC, privacy addresses), so counting each
// address alone would give one attacker 2^64 fresh limits.
func failingClient(ip string) string {
	addr, err := netip.ParseAddr(ip)
	switch {
	case err != nil, addr.Is4():
		return ip
	case addr.Is4In6():
		return addr.Unmap().String()
	}
	p, _ := addr.WithZone("").Prefix(64)
	return p.String()
}

// clientIP is the client address as Caddy determined it, so
// trusted_proxies is respected, except where Caddy took it from what the
// client wrote itself (forwardedByPeer).
func clientIP(r *http.Request) string {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if ip, ok := vars[caddyhttp.ClientIPVarKey].(string); ok && ip != "" {
		if trusted, _ := vars[caddyhttp.TrustedProxyVarKey].(bool); trusted {
			if srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); srv != nil {
				if srv.TrustedProxiesStrict > 0 {
					return strictByPeer(r.Header, srv.ClientIPHeaders, ip)
				}
				if peer, ok := forwardedByPeer(r.Header, srv.ClientIPHeaders); ok {
					return peer
				}
			}
		}
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

// forwardedByPeer returns the right-most address of the first of the client
// IP headers (Caddy's client_ip_headers, in their order, as Caddy reads
// them) that holds one: the one the trusted proxy that connected to Caddy
// added itself. Without trusted_proxies_strict
// Caddy takes the left-most instead, which a proxy that appends to
// X-Forwarded-For (as load balancers and CDNs do) passes on as its client
// wrote it: "X-Forwarded-For: 10.0.0.1" would then satisfy a key's
// allow_ip, and a fresh value on every request escape failed_auth_limit,
// or make another client's address reach it. Strict mode walks the chain
// right to left past the trusted proxies, so keygate takes Caddy's answer
// there; without it the right-most address is the one nobody but a trusted
// proxy wrote. Parsed as Caddy parses it: a port or a zone is dropped, and
// what is no address is skipped; and an IPv6 address in brackets without a
// port is read too, which Caddy skips: skipped, the proxy's own entry would
// leave the one the client wrote before it to decide.
func forwardedByPeer(hdr http.Header, names []string) (string, bool) {
	for _, name := range names {
		values := hdr.Values(name)
		for j := len(values) - 1; j >= 0; j-- {
			parts := strings.Split(values[j], ",")
			for k := len(parts) - 1; k >= 0; k-- {
				if addr, ok := forwardedAddr(parts[k]); ok {
					return addr.String(), true
				}
			}
		}
	}
	return "", false
}

// forwardedAddr reads one entry of a client IP header: an address, with or
// without a port, an IPv6 one in brackets or not, with or without a zone.
func forwardedAddr(part string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(strings.TrimSpace(part))
	if err != nil {
		host = part
	}
	host = strings.TrimSpace(host)
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	host, _, _ = strings.Cut(host, "%")
	addr, err := netip.ParseAddr(host)
	return addr, err == nil
}

// caddyReadsAddr reports whether Caddy's strict reading takes the entry as
// an address (strictUntrustedClientIp): it splits off a port before it
// trims spaces, so ", [2001:db8::7]:55000" (a space before the bracket), and
// an IPv6 address in brackets without a port, are no address to it.
func caddyReadsAddr(part string) bool {
	host, _, err := net.SplitHostPort(part)
	if err != nil {
		host = part
	}
	host, _, _ = strings.Cut(strings.TrimSpace(host), "%")
	_, err = netip.ParseAddr(host)
	return err == nil
}

// strictByPeer is the client address under trusted_proxies_strict: Caddy's
// answer (caddyIP), which it found walking the client IP headers right to
// left past the trusted proxies, unless on its way there it skipped an
// entry it could not read and keygate can: the proxy that wrote it (an
// IPv6 client's address with a port, after ", ") saw that client, and the
// entries left of it are what the client wrote itself. Caddy's answer is
// the first untrusted address from the right, so every entry it read before
// it was a trusted proxy's.
func strictByPeer(hdr http.Header, names []string, caddyIP string) string {
	for _, name := range names {
		values := hdr.Values(name)
		for j := len(values) - 1; j >= 0; j-- {
			parts := strings.Split(values[j], ",")
			for k := len(parts) - 1; k >= 0; k-- {
				addr, ok := forwardedAddr(parts[k])
				switch {
				case !ok:
				case !caddyReadsAddr(parts[k]):
					return addr.String()
				case addr.String() == caddyIP:
					return caddyIP
				}
			}
		}
	}
	return caddyIP
}
