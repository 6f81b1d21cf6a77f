package keygate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"golang.org/x/net/http/httpguts"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("keygate", parseCaddyfile)
	// Before basicauth, Caddy's deprecated spelling of basic_auth, which
	// comes right before it: so keygate's place among Caddy's directives
	// is the same whichever spelling a site uses, and renaming one as
	// Caddy's warning asks does not move keygate past basic auth.
	httpcaddyfile.RegisterDirectiveOrder("keygate", httpcaddyfile.Before, "basicauth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	keygate {
//		store      <uri>                     # sqlite:PATH or a file path (default: Caddy's data dir/keygate/keys.db) | postgres://...
//		prefix     <prefix>                  # accepted key prefix (default kg)
//		env        live|test|any             # key environments this route accepts (default any)
//		key_header <Header-Name>             # also read the key from this header (repeatable)
//		access_log_filtered                  # this server's access logs delete the key headers (or I accept the risk)
//		scope      <name> [<METHOD>] <path>  # route -> required scope; first match wins
//		rate       <N>/<s|m|h|d> [burst <M>] # default per-key request rate
//		cache_ttl  <duration>                # how long a verified key is cached (default 30s)
//		failed_auth_limit <N>/<s|m|h|d>      # failed key attempts per client IP, IPv6 per /64 (default 20/m)
//		whoami     <path>                    # answer the presented key's own record here
//		mail_api   <dialect>                 # sendgrid|postmark|mailgun|resend|ses|mailjet|brevo|mailpit
//		quota      <N>/<d|mo>                # default per-key recipients per UTC day / month
//		max_body   <size>                    # largest send payload inspected (default 10MiB)
//		ratelimit  redis <url> [{            # shared limits and quotas across nodes
//			exact                            # a Redis round trip per request instead of leased tokens
//			cluster                          # the URL names a node of a Redis Cluster
//			sentinel   <name>                # the URL names a Sentinel; <name> is the primary's name there
//			timeout    <duration>            # each Redis round trip a request waits for (default 100ms, up to 10s)
//			tls_ca     <file>                # rediss://: PEM authorities to trust instead of the system's
//			tls_cert   <file>                # rediss://: client certificate (with tls_key)
//			tls_key    <file>
//			tls_server_name <name>           # rediss://: the name the server's certificate must carry
//		}]
//		metrics    per_key                   # also count requests per key id (bounded key counts only)
//		usage_retention <duration>|off       # how long hourly usage counts are kept (default 400d, at least 32d)
//	}
//
// Every option is checked here so a mistake names its line and value.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	given := options{directive: "keygate", repeatable: []string{"key_header", "scope"}}
	var probes []ScopeRule // the scope lines so far, provisioned
	for d.NextBlock(0) {
		opt := d.Val()
		if err := given.seen(d); err != nil {
			return err
		}
		switch opt {
		case "store":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			// A placeholder ({env.KEYGATE_STORE}) is checked when it is
			// replaced, at provision.
			if !strings.HasPrefix(v, "{") {
				if _, err := store.ParseURI(v); err != nil {
					return d.Err(err.Error())
				}
			}
			h.Store = v
		case "prefix":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if !verifier.ValidPrefix(v) {
				return d.Errf("keygate: prefix %q: want 2-10 characters, a-z then a-z or 0-9", v)
			}
			h.Prefix = v
		case "env":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if v != "live" && v != "test" && v != "any" {
				return d.Errf("keygate: env %q: want live, test or any", v)
			}
			h.Env = v
		case "key_header":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			// A placeholder ({env.KEY_HEADER}) is checked when it is
			// replaced, at provision.
			if !strings.Contains(v, "{") && !httpguts.ValidHeaderFieldName(v) {
				return d.Errf("keygate: key_header %q is not a header name", v)
			}
			h.KeyHeaders = append(h.KeyHeaders, v)
		case "access_log_filtered":
			if d.NextArg() {
				return d.Errf("keygate: access_log_filtered takes no value, got %q", d.Val())
			}
			h.AccessLogFiltered = true
		case "scope":
			args := d.RemainingArgs()
			rule := ScopeRule{}
			switch len(args) {
			case 2:
				rule.Scope, rule.Path = args[0], args[1]
			case 3:
				// A quoted "" is no method (not any method).
				if args[1] == "" {
					return d.Errf("keygate: scope %q: method %q is not an HTTP method", args[0], args[1])
				}
				if strings.ContainsRune("/*{", rune(args[1][0])) {
					return d.Errf("keygate: scope %q: want <name> [<METHOD>] <path>, got %q after the name", args[0], strings.Join(args[1:], " "))
				}
				rule.Scope, rule.Method, rule.Path = args[0], args[1], args[2]
			default:
				return d.Errf("keygate: scope: want <name> [<METHOD>] <path>, got %d arguments", len(args))
			}
			probe := rule
			if err := probe.provision(); err != nil {
				return d.Err(err.Error())
			}
			if err := shadowed(probes, &probe); err != nil {
				return d.Err(err.Error())
			}
			probes = append(probes, probe)
			if err := whoamiClash(h, probes); err != nil {
				return d.Err(err.Error())
			}
			if rule.Method != "" {
				rule.Method = strings.ToUpper(rule.Method)
			}
			h.Scopes = append(h.Scopes, rule)
		case "rate":
			args := d.RemainingArgs()
			if len(args) != 1 && !(len(args) == 3 && args[1] == "burst") {
				return d.Errf("keygate: rate: want <N>/<s|m|h|d> [burst <M>], got %q", strings.Join(args, " "))
			}
			if _, err := store.ParseRate(args[0]); err != nil {
				return d.Errf("keygate: %v", err)
			}
			h.Rate = args[0]
			if len(args) == 3 {
				b, err := strconv.Atoi(args[2])
				if err != nil || b < 1 {
					return d.Errf("keygate: rate: burst %q is not a positive whole number", args[2])
				}
				h.Burst = b
			}
		case "cache_ttl":
			dur, err := durationArg(d, "keygate", 1, 0, "a positive duration (e.g. 30s)")
			if err != nil {
				return err
			}
			h.CacheTTL = caddy.Duration(dur)
		case "failed_auth_limit":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if _, err := store.ParseRate(v); err != nil {
				return d.Errf("keygate: failed_auth_limit: %v", err)
			}
			h.FailedAuthLimit = v
		case "whoami":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(v, "/") {
				return d.Errf("keygate: whoami %q: want a path starting with /", v)
			}
			h.Whoami = v
			if err := whoamiClash(h, probes); err != nil {
				return d.Err(err.Error())
			}
		case "mail_api":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if _, ok := mailapi.Lookup(v); !ok {
				return d.Errf("keygate: mail_api %q: want one of %s", v, strings.Join(mailapi.Names(), ", "))
			}
			h.MailAPI = v
			if err := whoamiClash(h, probes); err != nil {
				return d.Err(err.Error())
			}
		case "quota":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if _, err := store.ParseQuota(v); err != nil {
				return d.Errf("keygate: %v", err)
			}
			h.Quota = v
		case "max_body":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 || size > 1<<30 {
				return d.Errf("keygate: max_body %q is not a size between 1B and 1GiB (1,073,741,824 bytes; e.g. 10MiB)", v)
			}
			h.MaxBody = int64(size)
		case "ratelimit":
			args := d.RemainingArgs()
			if len(args) != 2 || args[0] != "redis" {
				return d.Errf("keygate: ratelimit: want redis <url>, got %q", strings.Join(args, " "))
			}
			if !strings.HasPrefix(args[1], "redis://") && !strings.HasPrefix(args[1], "rediss://") && !strings.HasPrefix(args[1], "{") {
				return d.Errf("keygate: ratelimit redis %q: want redis://host:port[/db]", store.RedactURI(args[1]))
			}
			h.RateLimitRedis = args[1]
			// Where tls_cert or tls_key was given: one without the other
			// is refused at its line once the block has been read.
			var pairLine struct {
				opt  string
				file string
				line int
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch sub := d.Val(); sub {
				case "exact":
					if d.NextArg() {
						return d.Errf("keygate: ratelimit redis: exact takes no value, got %q", d.Val())
					}
					h.RateLimitExact = true
				case "cluster":
					if d.NextArg() {
						return d.Errf("keygate: ratelimit redis: cluster takes no value, got %q", d.Val())
					}
					h.RateLimitRedisCluster = true
					if h.RateLimitRedisSentinel != "" {
						return d.Err("keygate: ratelimit redis: cluster and sentinel are two kinds of Redis: name one")
					}
				case "sentinel":
					v, err := oneArg(d, "keygate: ratelimit redis")
					if err != nil {
						return err
					}
					h.RateLimitRedisSentinel = v
					if h.RateLimitRedisCluster {
						return d.Err("keygate: ratelimit redis: cluster and sentinel are two kinds of Redis: name one")
					}
				case "timeout":
					dur, err := durationArg(d, "keygate: ratelimit redis", time.Millisecond, 10*time.Second,
						"a duration between 1ms and 10s (e.g. 250ms)")
					if err != nil {
						return err
					}
					h.RateLimitRedisTimeout = caddy.Duration(dur)
				case "tls_ca", "tls_cert", "tls_key", "tls_server_name":
					v, err := oneArg(d, "keygate: ratelimit redis")
					if err != nil {
						return err
					}
					if !strings.HasPrefix(args[1], "rediss://") && !strings.HasPrefix(args[1], "{") {
						return d.Errf("keygate: ratelimit redis: %s needs a rediss:// URL", sub)
					}
					if h.RateLimitRedisTLS == nil {
						h.RateLimitRedisTLS = &RedisTLS{}
					}
					switch t := h.RateLimitRedisTLS; sub {
					case "tls_ca":
						t.CA = v
					case "tls_cert":
						t.Cert = v
					case "tls_key":
						t.Key = v
					default:
						t.ServerName = v
					}
					if sub == "tls_cert" || sub == "tls_key" {
						pairLine.opt, pairLine.file, pairLine.line = sub, d.File(), d.Line()
					}
				default:
					return d.Errf("keygate: ratelimit redis: unknown option %q (want exact, cluster, sentinel, timeout, tls_ca, tls_cert, tls_key or tls_server_name)", sub)
				}
			}
			if t := h.RateLimitRedisTLS; t != nil && (t.Cert == "") != (t.Key == "") {
				missing := "tls_key"
				if t.Cert == "" {
					missing = "tls_cert"
				}
				return fmt.Errorf("keygate: ratelimit redis: %s without %s: tls_cert and tls_key go together, at %s:%d",
					pairLine.opt, missing, pairLine.file, pairLine.line)
			}
		case "metrics":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if v != "per_key" {
				return d.Errf("keygate: metrics %q: want per_key", v)
			}
			h.PerKeyMetrics = true
		case "usage_retention":
			v, err := oneArg(d, "keygate")
			if err != nil {
				return err
			}
			if _, err := parseUsageRetention(v); err != nil {
				return d.Errf("keygate: %v", err)
			}
			h.UsageRetention = v
		default:
			return d.Errf("keygate: unknown option %q", opt)
		}
	}
	return nil
}

// whoamiClash is Provision's check that the whoami path is no route's
// own, made with the options read so far, so the line that makes the
// clash (whoami, mail_api or a scope line, whichever comes last) is named.
func whoamiClash(h *Handler, scopes []ScopeRule) error {
	probe := Handler{Whoami: h.Whoami, Scopes: scopes}
	if h.MailAPI != "" {
		probe.dialect, _ = mailapi.Lookup(h.MailAPI)
	}
	return probe.checkWhoami()
}

// oneArg returns the single value of the option at d, of the directive
// named.
func oneArg(d *caddyfile.Dispenser, directive string) (string, error) {
	opt := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return "", d.Errf("%s: %s: want exactly one value, got %d", directive, opt, len(args))
	}
	return args[0], nil
}

// durationArg reads an option's one value as a duration of at least least
// and, unless most is 0, at most most; else an error naming the line, the
// option, the value and want.
func durationArg(d *caddyfile.Dispenser, directive string, least, most time.Duration, want string) (time.Duration, error) {
	opt := d.Val()
	v, err := oneArg(d, directive)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < least || most > 0 && dur > most {
		return 0, d.Errf("%s: %s %q is not %s", directive, opt, v, want)
	}
	return dur, nil
}

// options notes the lines a directive's options are on, so an option
// given twice is refused rather than the last one silently winning (a
// second store or mail_api line is a mistake, not a choice).
type options struct {
	directive  string
	repeatable []string
	lines      map[string]int
	last       string // the option before
}

// seen refuses the option at d if it was given before and is not
// repeatable, and a block opened after an option that takes none (which
// the loop over options would read as an option named "{").
func (o *options) seen(d *caddyfile.Dispenser) error {
	opt := d.Val()
	if opt == "{" {
		if o.last == "" {
			return d.Errf("%s: a block where an option belongs", o.directive)
		}
		return d.Errf("%s: %s takes no block", o.directive, o.last)
	}
	o.last = opt
	if slices.Contains(o.repeatable, opt) {
		return nil
	}
	if o.lines == nil {
		o.lines = map[string]int{}
	}
	if first, ok := o.lines[opt]; ok {
		return d.Errf("%s: %s is given twice (first on line %d); give it once", o.directive, opt, first)
	}
	o.lines[opt] = d.Line()
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
