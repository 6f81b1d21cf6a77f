package keygate

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/console"
	"github.com/keygate/caddy-keygate/store"
)

func init() {
	caddy.RegisterModule(Console{})
	httpcaddyfile.RegisterHandlerDirective("keygate_console", parseConsoleCaddyfile)
	// After both of Caddy's authentication directives (forward_auth comes
	// after basic_auth), so whichever the site uses has named the person
	// before the console reads who it is.
	httpcaddyfile.RegisterDirectiveOrder("keygate_console", httpcaddyfile.After, "forward_auth")
}

// Console is the http.handlers.keygate_console module: the web console
// where people manage keys (see package console). It serves every request
// that reaches it and never calls the next handler.
//
// It does not authenticate anyone: an authentication handler before it
// (basic_auth, forward_auth) names the person, and a request without one is
// refused with 401.
type Console struct {
	// Store is where keys live, as for the keygate handler (default:
	// keygate/keys.db in Caddy's data directory). A console and gateways on
	// the same store in one Caddy share it, so a change made in the console
	// is enforced on the gateways' next request.
	Store string `json:"store,omitempty"`
	// Admins are the people (user ids) who see and manage every key.
	Admins []string `json:"admins,omitempty"`
	// User is the placeholder naming the signed-in person (default
	// {http.auth.user.id}, which basic_auth sets; behind forward_auth, e.g.
	// {http.request.header.Remote-User}).
	User string `json:"user,omitempty"`
	// Owner is the placeholder naming the owner whose keys a person who is
	// not an admin manages (default: the same as User, so each person
	// manages their own keys; e.g. {http.request.header.Remote-Groups} for
	// a team).
	Owner string `json:"owner,omitempty"`
	// GatewayURL is the gateway's public base URL, shown in the snippets
	// with a new key (default: the console's own origin).
	GatewayURL string `json:"gateway_url,omitempty"`
	// SignOutURL is where Sign out sends a person a single sign-on signed
	// in (forward_auth): the SSO's own sign-out, an http(s) URL or a path
	// on this site (e.g. oauth2-proxy's /oauth2/sign_out). Without it the
	// console offers Sign out only to basic_auth sign-ins, which it can end
	// itself.
	SignOutURL string `json:"signout_url,omitempty"`
	// InsecureAnonymousLoopback lets requests without a signed-in person
	// use the console as an admin, but only when they arrive on a loopback
	// listener from a loopback client and were not forwarded by a proxy.
	// For a demo on one's own machine; never in production.
	InsecureAnonymousLoopback bool `json:"insecure_anonymous_loopback,omitempty"`

	backend  *backend
	storeURI string
	handler  *console.Handler
	logger   *zap.Logger
	// gatewayURL and signOutURL are GatewayURL and SignOutURL with their
	// placeholders replaced.
	gatewayURL, signOutURL string
	// ready is set once the console is attached to its store (at
	// provision, or by wait when the store did not answer then).
	ready uint32 // atomic: 1 once attached
	wait  *storeWait
}

// CaddyModule returns the Caddy module information.
func (Console) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.keygate_console",
		New: func() caddy.Module { return new(Console) },
	}
}

// baseURL reports whether v is an http or https URL with a host and
// nothing a snippet would break on (a space).
func baseURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && !strings.ContainsAny(v, " \t")
}

// signOutURL reports whether v is somewhere a sign-out can send a browser:
// an http or https URL with a host, or a path on this site ("/…", not the
// "//host/…" a browser reads as another site's).
func signOutURL(v string) bool {
	if strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "//") && !strings.HasPrefix(v, "/\\") {
		_, err := url.Parse(v)
		return err == nil && !strings.ContainsAny(v, " \t")
	}
	return baseURL(v)
}

// checkUser refuses a user option that names no placeholder: a fixed name
// is never empty, so every request would be signed in as it, with nothing
// in front asking who they are.
func checkUser(v string) error {
	if open := strings.IndexByte(v, '{'); open < 0 || strings.IndexByte(v[open:], '}') < 0 {
		return fmt.Errorf("keygate_console: user %q: want a placeholder that names the signed-in person, "+
			"such as {http.auth.user.id} (basic_auth) or {http.request.header.Remote-User} (forward_auth); "+
			"a fixed name would sign in everyone as it", v)
	}
	return nil
}

// checkAdmin refuses an admin that no sign-in can name: an empty one, or
// one with spaces around it (the signed-in person's id is read trimmed).
func checkAdmin(a string) error {
	switch {
	case strings.TrimSpace(a) == "":
		return fmt.Errorf("keygate_console: admin: an empty user name")
	case strings.TrimSpace(a) != a:
		return fmt.Errorf("keygate_console: admin %q: a user name with spaces around it, which no sign-in names", a)
	}
	return nil
}

// Provision joins (or opens) the backend of the console's store.
func (c *Console) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	if c.User == "" {
		c.User = "{http.auth.user.id}"
	}
	if err := checkUser(c.User); err != nil {
		return err
	}
	if c.Owner == "" {
		c.Owner = c.User
	}
	for _, a := range c.Admins {
		if err := checkAdmin(a); err != nil {
			return err
		}
	}

	if c.InsecureAnonymousLoopback {
		c.logger.Warn("keygate_console: insecure_anonymous_loopback is on: anyone who reaches this console on a loopback listener manages every key; for demos only")
	}
	var err error
	repl := caddy.NewReplacer()
	storeText := repl.ReplaceAll(c.Store, "")
	// As for the gateway: an unset variable must not turn the console to
	// the default SQLite file while the gateways use the store it names
	// (keys made there would never reach them).
	if c.Store != "" && storeText == "" {
		return fmt.Errorf("keygate_console: store %q is empty once its placeholders are replaced: set it, or remove the option for the default SQLite store", c.Store)
	}
	if c.storeURI, err = storeURI(storeText); err != nil {
		return err
	}
	c.gatewayURL = strings.TrimRight(repl.ReplaceAll(c.GatewayURL, ""), "/")
	if c.GatewayURL != "" && !baseURL(c.gatewayURL) {
		return fmt.Errorf("keygate_console: gateway_url %q (%q once its placeholders are replaced): want an http:// or https:// URL with a host",
			c.GatewayURL, c.gatewayURL)
	}
	c.signOutURL = repl.ReplaceAll(c.SignOutURL, "")
	if c.SignOutURL != "" && !signOutURL(c.signOutURL) {
		return fmt.Errorf("keygate_console: signout_url %q (%q once its placeholders are replaced): want an http:// or https:// URL "+
			"with a host, or a path on this site starting with /", c.SignOutURL, c.signOutURL)
	}
	b, wait, err := acquireOrWait(c.storeURI, c.logger, c.attach)
	if err != nil {
		return err
	}
	c.wait = wait
	if b != nil {
		return c.attach(b)
	}
	return nil
}

// attach serves the console from the store's backend.
func (c *Console) attach(b *backend) error {
	c.backend = b
	c.handler = console.New(b.keys, console.Options{
		GatewayURL: c.gatewayURL,
		SignOutURL: c.signOutURL,
		Denials:    denialMessage,
		Logf:       func(format string, args ...any) { c.logger.Error(fmt.Sprintf(format, args...)) },
		HTTPS:      reachedOverHTTPS,
	})
	atomic.StoreUint32(&c.ready, 1) // after the fields above: a request that sees it sees them
	return nil
}

// reachedOverHTTPS reports whether the browser reached the console over
// HTTPS: over TLS to Caddy, or through a proxy that ended TLS and says so in
// X-Forwarded-Proto, believed only from the server's trusted_proxies, as
// Caddy believes its X-Forwarded-For.
func reachedOverHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

// Cleanup releases the backend; the last user closes it.
func (c *Console) Cleanup() error {
	c.wait.close() // no attach after this
	if c.backend != nil {
		releaseBackend(c.storeURI, c.logger)
	}
	return nil
}

// ServeHTTP names the person and where the console is mounted, and lets
// the console answer.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if keyInURL(r) {
		// A key pasted into the search box arrives in the query when the
		// page's script does not run to cut it to its hint: Caddy's access
		// log would write it. The console redirects to the hint; this line
		// stands in for the access log's.
		caddyhttp.SetVar(r.Context(), caddyhttp.LogSkipVar, true)
		c.logger.Info("keygate_console: a request left out of the access log: a key in the URL",
			zap.String("method", r.Method), zap.String("path", loggedPath(r.URL.Path)), zap.String("client_ip", clientIP(r)))
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}
	ctx := console.WithMount(r.Context(), mountOf(r))
	ip := clientIP(r)
	// keygate sets {http.auth.user.id} to the id of the API key it let
	// through: a route that runs the gateway before the console would
	// make every key holder a console user.
	if repl.ReplaceAll("{keygate.key.id}", "") != "" {
		http.Error(w, "keygate_console: an API key is not a console sign-in; serve the console on a route without the keygate handler", http.StatusForbidden)
		return nil
	}
	if id := strings.TrimSpace(repl.ReplaceAll(c.User, "")); id != "" {
		ctx = console.WithUser(ctx, console.User{
			ID:    id,
			Owner: strings.TrimSpace(repl.ReplaceAll(c.Owner, "")),
			Admin: slices.Contains(c.Admins, id),
			Addr:  ip,
		})
	} else if c.InsecureAnonymousLoopback && anonymousAllowed(r, ip) {
		ctx = console.WithUser(ctx, console.User{ID: "anonymous", Admin: true, Addr: ip})
	}
	if atomic.LoadUint32(&c.ready) == 0 { // the store did not answer when the config loaded (storewait.go)
		console.Unavailable(w, r.WithContext(ctx))
		return nil
	}
	// A store that does not answer gets the unavailable page after
	// manageTimeout, not a page that never loads.
	ctx, cancel := context.WithTimeout(ctx, manageTimeout)
	defer cancel()
	c.handler.ServeHTTP(w, r.WithContext(ctx))
	return nil
}

// anonymousAllowed reports whether a request reached a loopback listener
// from a loopback client, directly (a proxy on the same machine would make
// remote people look local), for a loopback name (loopbackHost).
func anonymousAllowed(r *http.Request, ip string) bool {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	tcp, ok := local.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return false
	}
	client, err := netip.ParseAddr(ip)
	if err != nil || !client.Unmap().IsLoopback() {
		return false
	}
	return r.Header.Get("X-Forwarded-For") == "" && r.Header.Get("Forwarded") == "" && loopbackHost(r.Host)
}

// loopbackHost reports whether host (the request's Host, with or without a
// port) names this machine: localhost, a name under .localhost or a
// loopback address. A page of another name that a DNS rebinding pointed at
// 127.0.0.1 sends its own name, and gets no anonymous console.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}

// mountOf returns the path prefix a handle_path (or uri strip_prefix) took
// off the request, so the console's links keep it: "/console" for
// /console/keys/x served as /keys/x. It is "" when nothing was stripped or
// the prefix is not a plain path.
func mountOf(r *http.Request) string {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil {
		return ""
	}
	full, rest := orig.URL.Path, r.URL.Path
	var mount string
	switch {
	case strings.HasSuffix(full, rest):
		mount = strings.TrimSuffix(full, rest)
	case rest == "/" || rest == "":
		mount = full // "/console" stripped to nothing
	}
	mount = strings.TrimRight(mount, "/")
	if !mountPath(mount) {
		return ""
	}
	return mount
}

// mountPath accepts "" and paths like /console or /admin/keys: segments of
// letters, digits, '-', '_', '.' and '~', so a link built on it can never
// leave the site (no "//host").
func mountPath(p string) bool {
	if p == "" {
		return true
	}
	for _, seg := range strings.Split(p, "/")[1:] {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.~", c)) {
				return false
			}
		}
	}
	return strings.HasPrefix(p, "/")
}

// denialMessage says in words what a denial code means, from the one table
// of codes.
func denialMessage(code string) string {
	c, ok := parseCode(code)
	if !ok {
		return ""
	}
	return codes[c].message
}

func parseConsoleCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(Console)
	err := c.UnmarshalCaddyfile(h.Dispenser)
	return c, err
}

// UnmarshalCaddyfile sets up the console from Caddyfile tokens. Syntax:
//
//	keygate_console {
//		store       <uri>          # as the keygate handler's (default: Caddy's data dir/keygate/keys.db)
//		admin       <user>...      # people who see and manage every key (repeatable)
//		user        <placeholder>  # who is signed in (default {http.auth.user.id})
//		owner       <placeholder>  # whose keys everyone else manages (default: the user)
//		gateway_url <url>          # the gateway's public base URL, for snippets
//		signout_url <url|path>     # the SSO's sign-out, where Sign out sends a forward_auth sign-in
//		insecure_anonymous_loopback # no sign-in needed on a loopback listener: demos only
//	}
func (c *Console) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	given := options{directive: "keygate_console", repeatable: []string{"admin"}}
	for d.NextBlock(0) {
		if err := given.seen(d); err != nil {
			return err
		}
		switch opt := d.Val(); opt {
		case "store":
			v, err := oneArg(d, "keygate_console")
			if err != nil {
				return err
			}
			if _, err := store.ParseURI(v); err != nil && !strings.HasPrefix(v, "{") {
				return d.Errf("keygate_console: %v", err)
			}
			c.Store = v
		case "admin":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("keygate_console: admin: name at least one user")
			}
			for _, a := range args {
				if err := checkAdmin(a); err != nil {
					return d.Err(err.Error())
				}
			}
			c.Admins = append(c.Admins, args...)
		case "user", "owner":
			v, err := oneArg(d, "keygate_console")
			if err != nil {
				return err
			}
			if opt == "user" {
				if err := checkUser(v); err != nil {
					return d.Err(err.Error())
				}
				c.User = v
			} else {
				c.Owner = v
			}
		case "gateway_url":
			v, err := oneArg(d, "keygate_console")
			if err != nil {
				return err
			}
			if !strings.Contains(v, "{") && !baseURL(v) { // placeholders: checked once replaced, at provision
				return d.Errf("keygate_console: gateway_url %q: want an http:// or https:// URL with a host", v)
			}
			c.GatewayURL = v
		case "signout_url":
			v, err := oneArg(d, "keygate_console")
			if err != nil {
				return err
			}
			if !strings.Contains(v, "{") && !signOutURL(v) {
				return d.Errf("keygate_console: signout_url %q: want an http:// or https:// URL with a host, or a path on this site starting with /", v)
			}
			c.SignOutURL = v
		case "insecure_anonymous_loopback":
			if d.NextArg() {
				return d.Errf("keygate_console: insecure_anonymous_loopback takes no value, got %q", d.Val())
			}
			c.InsecureAnonymousLoopback = true
		default:
			return d.Errf("keygate_console: unknown option %q", opt)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Console)(nil)
	_ caddy.CleanerUpper          = (*Console)(nil)
	_ caddyhttp.MiddlewareHandler = (*Console)(nil)
	_ caddyfile.Unmarshaler       = (*Console)(nil)
)
