package keygate

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/usage"
	"github.com/keygate/caddy-keygate/verifier"
)

// Step 6 of the request path, and every denial: the per-request state behind
// keygate's placeholders, the usage record and log line, and the status
// writer that sees the upstream's answer.

// request is what keygate decided about one request. It answers keygate's
// placeholders for the rest of the request, including Caddy's access log
// (which reads them after ServeHTTP returns), so it is never reused.
type request struct {
	rec       *store.Record
	code      Code
	hasRecips bool
	// partlySent: the provider may have sent part of this send though it
	// answers 400 (mailapi.Message.PartlySent).
	partlySent bool
	scope      string
	recipients int
	// keyInLog is where the request holds a key that Caddy's access log
	// would write as sent ("" if nowhere): the request is left out of that
	// log, and keygate's line for it is written at info.
	keyInLog string

	// Storage the request path would otherwise allocate separately: the
	// RateLimit header value (a longer one, with a quota, is allocated), the
	// RateLimit-Policy slice (a handler after keygate may edit a header's
	// values in place, so the shared policy slices are never handed out)
	// and the status writer. The request is allocated once anyway, so they come
	// free. It is kept small: every request allocates one.
	rateLimit    [1]string
	policy       [1]string // the RateLimit-Policy value, in a slice of the request's own
	rateLimitBuf [40]byte
	sw           statusWriter
}

func (q *request) placeholder(key string) (any, bool) {
	if !strings.HasPrefix(key, "keygate.") && key != "http.auth.user.id" {
		return nil, false
	}
	switch key {
	case "keygate.decision":
		return q.code.String(), true
	case "keygate.scope":
		return q.scope, true
	case "keygate.recipients":
		if !q.hasRecips {
			return nil, false
		}
		return q.recipients, true
	}
	if q.rec == nil {
		// No key passed: the key's placeholders are empty, as a denial's
		// header or log line would show them, not their own text; Caddy's
		// user id stays unknown, as for its own authentication handlers.
		switch key {
		case "keygate.key.id", "keygate.key.name", "keygate.key.owner", "keygate.key.env":
			return "", true
		}
		return nil, false
	}
	switch key {
	case "http.auth.user.id", "keygate.key.id":
		return q.rec.ID, true
	case "keygate.key.name":
		return q.rec.Name, true
	case "keygate.key.owner":
		return q.rec.Owner, true
	case "keygate.key.env":
		return q.rec.Env, true
	}
	return nil, false
}

// linger reads and discards what is left of a denied request's body, up to
// lingerBytes and for at most lingerTime, as nginx's lingering close does. A
// client that writes its whole body before it reads the answer (Ruby's
// Net::HTTP, PHP's streams) would otherwise get a connection reset instead
// of the denial: Go's server reads at most 256 KB of a body a handler left
// unread, then closes the connection on the rest; with Connection: close it
// reads none. Bytes the client sends past the bound still end in a reset.
func linger(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(lingerTime)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	io.CopyN(io.Discard, r.Body, lingerBytes)
}

// lingerBytes and lingerTime bound what a denial reads of a body first.
const (
	lingerBytes = 64 << 20
	lingerTime  = 10 * time.Second
)

// deny answers with the contract's JSON error, logs and counts it.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, q *request, ip string, t time.Time, d denial) error {
	q.code = d.code
	// Body bytes still unread when the server closes the connection make
	// the kernel answer with a reset, which can destroy the response before
	// the client reads it: the denial reads them first (linger). A client
	// waiting for 100 Continue has sent no body: reading would only ask it
	// for one.
	//
	// Such a client (Expect: 100-continue: curl for large uploads, .NET's
	// HttpWebRequest by default) is refused at once with Connection: close.
	// On a kept-alive connection the server would read the body before
	// reusing it, and the client sends it only when its wait for 100 runs
	// out (curl: 1 s), to be refused after uploading it all. Once keygate
	// has begun to read the body (a send past max_body, or one that found
	// no room while it arrived), the 100 went out and the client is
	// sending: it is read like any other's.
	expects := r.ContentLength != 0 && r.Body != nil && !d.bodyAsked && strings.EqualFold(r.Header.Get("Expect"), "100-continue")
	if _, read := r.Body.(*sendBody); r.ContentLength != 0 && r.Body != nil && !expects && !read {
		linger(w, r)
	}
	if b, ok := r.Body.(*sendBody); ok {
		b.Close() // read and refused: nothing reads it again, so its buffer may be reused
	} else if expects && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	d.query = h.queryRequest(r)
	status := d.write(w, h.forms)
	h.record(r, q, ip, status, 0, t)
	switch d.code {
	case RevokedKey, ExpiredKey, DisabledKey:
		h.emit("keygate.key_denied", q, ip)
	case RateLimited, QuotaExceeded:
		h.emit("keygate.rate_limited", q, ip)
	}
	return nil
}

func (h *Handler) emit(name string, q *request, ip string) {
	if h.events == nil {
		return
	}
	data := map[string]any{"decision": q.code.String(), "client_ip": ip}
	if q.rec != nil {
		data["key_id"], data["key_name"], data["owner"] = q.rec.ID, q.rec.Name, q.rec.Owner
	}
	h.events.Emit(h.ctx, name, data)
}

// record writes the usage log entry and counts the request.
func (h *Handler) record(r *http.Request, q *request, ip string, status int, recipients int64, t time.Time) {
	h.count(q, ip, status, recipients, t)
	h.logRecorded(r, q, ip, status)
}

// count counts the request in the metrics and the key's usage.
func (h *Handler) count(q *request, ip string, status int, recipients int64, t time.Time) {
	metrics.requests[q.code].Inc()
	if h.PerKeyMetrics && q.rec != nil {
		metrics.keyRequests.WithLabelValues(q.rec.ID, q.code.String()).Inc()
	}
	if q.rec != nil {
		metric := usage.MetricAllowed
		if q.code != Allowed {
			metric = deniedMetrics[q.code]
		}
		h.backend.usage.Record(q.rec.ID, metric, status, recipients, ip, t)
	}
}

// logRecorded writes the usage log entry of a request count counted.
func (h *Handler) logRecorded(r *http.Request, q *request, ip string, status int) {
	// Denials log at info: they are what an operator looks for. Allowed
	// requests log at debug, as Caddy's own modules log per-request detail
	// (the access log already names the key as user_id, and the usage
	// counters count every request); so do requests already refused as a
	// flood (auth_rate_limited), so a client spraying keys cannot fill the
	// logs.
	level := zap.InfoLevel
	if (q.code == Allowed || q.code == AuthRateLimited) && q.keyInLog == "" {
		level = zap.DebugLevel
	}
	h.logRequest(level, r, q, ip, status)
}

// logRequest writes the request's usage log line at level. A request left
// out of Caddy's access log (keyInLog) is always written at info: this line
// is all the logs have of it.
func (h *Handler) logRequest(level zapcore.Level, r *http.Request, q *request, ip string, status int) {
	if ce := h.logger.Check(level, "keygate request"); ce != nil {
		ce.Write(zap.Inline(&logLine{q: q, method: r.Method, path: sentPath(r), ip: ip, status: status}))
	}
}

// sentPath is the request's path as the client sent it, as Caddy's access
// log writes it: before a rewrite (handle_path, uri strip_prefix) changed
// what the handlers see.
func sentPath(r *http.Request) string {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.URL.Path
	}
	return r.URL.Path
}

// logLine is one request's usage log line, made only when it is written
// (allowed requests log at debug).
type logLine struct {
	q                *request
	method, path, ip string
	status           int
}

// loggedPath is a request's path for keygate's log line, with the secret of
// a key in it cut, one percent-encoded more often than the path is decoded
// (kg%5Flive%5F…, sent as kg%255Flive%255F…) included.
func loggedPath(p string) string {
	if d, escaped := verifier.EscapedSecret(p); escaped {
		return verifier.Redact(d)
	}
	return verifier.Redact(p)
}

// MarshalLogObject writes the usage log line's fields: never the key, not
// even one a client put in the path.
func (l *logLine) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	q := l.q
	var id, name string
	if q.rec != nil {
		id, name = q.rec.ID, q.rec.Name
	}
	enc.AddString("key_id", id)
	enc.AddString("key_name", name)
	enc.AddString("scope", q.scope)
	enc.AddString("decision", q.code.String())
	enc.AddString("method", l.method)
	enc.AddString("path", loggedPath(l.path))
	enc.AddInt("status", l.status)
	enc.AddString("client_ip", l.ip)
	if q.hasRecips {
		enc.AddInt("recipients", q.recipients)
	}
	if q.keyInLog != "" {
		enc.AddString("access_log_skipped", "a key in "+q.keyInLog)
	}
	return nil
}

// deniedMetrics are the usage metric names of the denial codes, built once.
var deniedMetrics = func() [numCodes]string {
	var m [numCodes]string
	for i := range codes {
		m[i] = usage.DeniedPrefix + codes[i].name
	}
	return m
}()

// statusWriter remembers the response status for the usage counts. It
// embeds Caddy's wrapper so that what the next handler may use of the
// writer stays reachable: Unwrap for http.ResponseController (flushing,
// hijacking), ReadFrom (sendfile for file_server) and Push.
type statusWriter struct {
	caddyhttp.ResponseWriterWrapper
	status int
	// The rate headers keygate set: the draft's RateLimit pair, and the
	// provider's own names (providerRateNames), if any. Bytes, so that
	// the request stays in its allocation size class.
	rateSet  bool
	provider mailapi.RateHeaders
	// sent is set once a final status went through WriteHeader.
	sent bool
}

// rateNames are the IETF draft headers keygate sets (setRateHeaders).
var rateNames = [...]string{"Ratelimit", "Ratelimit-Policy"}

// statusWriter wraps w in the request's own status writer: the request is
// allocated anyway, and unlike a pooled writer it cannot be reused while a
// handler still holds it.
func (q *request) statusWriter(w http.ResponseWriter) *statusWriter {
	q.sw.ResponseWriter, q.sw.status = w, http.StatusOK
	return &q.sw
}

func (sw *statusWriter) WriteHeader(code int) {
	if (code >= 200 || code == http.StatusSwitchingProtocols) && !sw.sent {
		sw.status, sw.sent = code, true
		if sw.rateSet || sw.provider != mailapi.NoRateHeaders {
			sw.keepOneSide(code)
		}
	}
	sw.ResponseWriter.WriteHeader(code)
}

// A handler may send the header without WriteHeader: by writing the body
// (an implicit 200), by ReadFrom, or by flushing. Each goes through
// WriteHeader first, so keepOneSide sees every answer.

func (sw *statusWriter) Write(p []byte) (int, error) {
	if !sw.sent {
		sw.WriteHeader(http.StatusOK)
	}
	return sw.ResponseWriter.Write(p)
}

func (sw *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if !sw.sent {
		sw.WriteHeader(http.StatusOK)
	}
	return sw.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError is what http.ResponseController calls to flush.
func (sw *statusWriter) FlushError() error {
	if !sw.sent {
		sw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// keepOneSide leaves one side's values in each header keygate set that the
// next handler added values to. An upstream that reports its own limits
// under the names keygate writes (SendGrid's X-RateLimit-*, Resend's
// RateLimit-Limit, -Remaining and -Reset, an API that sends the IETF
// draft's RateLimit) would otherwise make two values of each, since the
// proxy adds the upstream's headers to the response's: a client would read
// two numbers, where most of these fields allow one. keygate's values come
// first and stay, as they describe the key the client holds, except on the
// upstream's own 429, where the limit that refused the request is the
// upstream's.
func (sw *statusWriter) keepOneSide(code int) {
	hdr := sw.Header()
	keep := func(names []string) {
		for _, name := range names {
			if v := hdr[name]; len(v) > 1 {
				if code == http.StatusTooManyRequests {
					hdr[name] = v[1:]
				} else {
					hdr[name] = v[:1]
				}
			}
		}
	}
	if sw.rateSet {
		keep(rateNames[:])
	}
	if sw.provider != mailapi.NoRateHeaders {
		keep(providerRateNames[sw.provider][:])
	}
}
