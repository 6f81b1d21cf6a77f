package keygate

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/caddy-keygate/verifier"
)

// Keeping keys out of Caddy's logs. Before any handler runs, Caddy's server
// copies the request for its access log and its error log, and both write
// the request headers as the client sent them, redacting only
// Authorization, Proxy-Authorization and Cookie (and not even those with
// log_credentials). Removing a key header from the request, as keygate
// does, does not touch that copy. So:
//   - a server with an access log and keys arriving in headers it writes is
//     refused at load, with the filter that removes them, unless the keygate
//     block says access_log_filtered (checkAccessLog);
//   - an error from the handlers after keygate never reaches Caddy's error
//     log: keygate answers it as Caddy would, handle_errors routes included,
//     and logs it without headers (answerError).

// loggedKeyHeader is a header keys arrive in that Caddy's logs write as
// sent, and the configuration that makes keygate read keys from it.
type loggedKeyHeader struct {
	name, source string
}

// loggedKeyHeaders lists this handler's key headers that srv's logs write
// verbatim, in the order the configuration names them.
func (h *Handler) loggedKeyHeaders(srv *caddyhttp.Server) []loggedKeyHeader {
	var out []loggedKeyHeader
	add := func(name, source string) {
		name = http.CanonicalHeaderKey(name)
		for _, o := range out {
			if o.name == name {
				return
			}
		}
		out = append(out, loggedKeyHeader{name, source})
	}
	if srv != nil && srv.Logs != nil && srv.Logs.ShouldLogCredentials {
		add("Authorization", "log_credentials")
	}
	for _, name := range h.KeyHeaders {
		add(name, "key_header")
	}
	if h.dialect != nil {
		for _, name := range h.dialect.KeyHeaders() {
			add(name, "mail_api "+h.dialect.Name)
		}
	}
	return out
}

// checkAccessLog refuses a server that writes access logs when keys may
// arrive in headers those logs write as sent, unless the operator confirmed
// with access_log_filtered. keygate cannot see the log's encoder (Caddy
// does not expose it to handlers), so it takes the operator's word.
func (h *Handler) checkAccessLog(srv *caddyhttp.Server) error {
	if srv == nil || srv.Logs == nil || h.AccessLogFiltered {
		return nil
	}
	headers := h.loggedKeyHeaders(srv)
	if len(headers) == 0 {
		return nil
	}
	var names, lines strings.Builder
	for i, lh := range headers {
		if i > 0 {
			names.WriteString(", ")
		}
		fmt.Fprintf(&names, "%s (%s)", lh.name, lh.source)
		fmt.Fprintf(&lines, "\t\t\trequest>headers>%s delete\n", lh.name)
	}
	return fmt.Errorf("keygate: keys may arrive in request headers that Caddy's access log writes as the client sent them: %s; "+
		"this server has an access log, so those keys would be written to it. "+
		"Delete the headers in the log block of every site on this address:\n\n"+
		"\tlog {\n\t\tformat filter {\n%s\t\t}\n\t}\n\n"+
		"(a log block that already sets \"format <name>\" keeps it as \"wrap <name>\" inside the filter), "+
		"then confirm it in this keygate block (JSON: \"access_log_filtered\": true):\n\n"+
		"\taccess_log_filtered\n\n"+
		"The same line accepts the risk without the filter. Other keygate blocks on this address are checked the same way, one at a time.",
		names.String(), lines.String())
}

// errorRoutes is the server's handle_errors chain, compiled on first use:
// when keygate is provisioned the server has not yet provisioned it.
type errorRoutes struct {
	once  sync.Once
	chain caddyhttp.Handler // nil: the server has no error routes
}

func (e *errorRoutes) get(srv *caddyhttp.Server) caddyhttp.Handler {
	e.once.Do(func() {
		if srv != nil && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
			e.chain = srv.Errors.Routes.Compile(answerErrorStatus)
		}
	})
	return e.chain
}

// answerErrorStatus ends the error routes as Caddy's own chain does: with
// the error's status, when no route wrote a response.
var answerErrorStatus caddyhttp.Handler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	if he, ok := r.Context().Value(caddyhttp.ErrorCtxKey).(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
		w.WriteHeader(he.StatusCode)
	} else {
		w.WriteHeader(http.StatusInternalServerError)
	}
	return nil
})

// answerError handles an error returned by the handlers after keygate the
// way Caddy's server would — the server's handle_errors routes, or else the
// error's status — and logs it at the level Caddy would, from keygate's
// logger, without the request headers Caddy's error log would write.
func (h *Handler) answerError(w http.ResponseWriter, r *http.Request, q *request, ip string, start time.Time, err error) {
	status, msg := http.StatusInternalServerError, err.Error()
	fields := []zap.Field{zap.String("key_id", keyID(q))}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		if he.StatusCode != 0 {
			status = he.StatusCode
		}
		if he.Err != nil {
			msg = he.Err.Error()
		}
	}

	// Like Caddy: the error routes see the request as it arrived (before
	// rewrites), and the error in its context and placeholders.
	inErrorRoute := r.Context().Value(caddyhttp.ErrorCtxKey) != nil
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		r2 := *r
		r2.Method, r2.RemoteAddr, r2.RequestURI = orig.Method, orig.RemoteAddr, orig.RequestURI
		u := *orig.URL
		r2.URL = &u
		r = &r2
	}
	if _, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		r = (*caddyhttp.HTTPErrorConfig)(nil).WithError(r, err)
	}
	fields = append(fields, zap.Object("request", errorRequest{r, ip}), zap.Duration("duration", now().Sub(start)),
		zap.Int("status", status), zap.String("err_id", he.ID), zap.String("err_trace", he.Trace))

	level := zapcore.DebugLevel
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	var chain caddyhttp.Handler
	if h.errorRoutes != nil && !inErrorRoute { // an error inside handle_errors is not handled twice
		chain = h.errorRoutes.get(srv)
	}
	if chain == nil {
		if status >= 500 {
			level = zapcore.ErrorLevel
		}
		w.WriteHeader(status)
	} else if err2 := chain.ServeHTTP(w, r); err2 != nil {
		level = zapcore.ErrorLevel
		fields = append([]zap.Field{zap.String("error", err2.Error()), zap.Namespace("first_error"), zap.String("msg", msg)}, fields...)
		msg = "error handling handler error"
		w.WriteHeader(status)
	}
	if ce := h.logger.Check(level, msg); ce != nil {
		ce.Write(fields...)
	}
}

func keyID(q *request) string {
	if q.rec == nil {
		return ""
	}
	return q.rec.ID
}

// errorRequest is the request in keygate's error log line: what Caddy's
// error log shows of it, less the headers and TLS details.
type errorRequest struct {
	r  *http.Request
	ip string
}

// MarshalLogObject writes the request's fields: never a header, and no key
// a client put in the URL.
func (e errorRequest) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("client_ip", e.ip)
	enc.AddString("proto", e.r.Proto)
	enc.AddString("method", e.r.Method)
	enc.AddString("host", e.r.Host)
	enc.AddString("uri", verifier.Redact(e.r.RequestURI))
	return nil
}
