package keygate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin is the admin.api.keygate module: key management under /keygate/ on
// Caddy's admin endpoint (localhost by default). It adapts the keys service
// of the running handlers' store, so a revoke made here is enforced on the
// very next request.
//
// When handlers use more than one store, requests name the store with
// ?store=<uri>; with one store (or none configured, which means the default
// SQLite store) the parameter is optional.
//
// Errors have the gateway's shape, {"error":{"code","message"}}: 400
// invalid_input, 404 not_found, 405 method_not_allowed (with Allow), 409
// conflict, 422 invalid_input (an Idempotency-Key used for another
// request), 500 internal_error, 503 store_unavailable (the SQLite file was
// deleted under the gateway).
type Admin struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.keygate",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Provision keeps the admin logger, and registers keygate's metrics with
// the registry the admin endpoint's /metrics serves while keygate runs.
// Caddy puts up a new config's admin endpoint, /metrics with it, before it
// provisions the config's apps, and keeps that endpoint when they fail to
// load: the old config goes on serving, but /metrics reads the refused
// config's registry, where keygate's handlers never registered theirs. A
// rejected POST /load or caddy reload would otherwise take every keygate_
// series off /metrics until the next load that succeeds.
func (a *Admin) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	running := false
	backends.Range(func(any, any) bool {
		running = true
		return false
	})
	if running {
		registerMetrics(ctx.GetMetricsRegistry())
	}
	return nil
}

// Routes serves everything under /keygate/.
func (a *Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/keygate/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// adminCall is one admin API request: what every route handler needs.
type adminCall struct {
	w     http.ResponseWriter
	r     *http.Request
	keys  *keys.Service
	id    string // the {id} segment, if the route has one
	actor string
}

// adminRoutes is the admin API: method, path under /keygate/ ("{id}" is one
// segment), the query parameters it reads besides store, and what serves
// it.
var adminRoutes = []struct {
	method, path string
	params       []string
	serve        func(c *adminCall) error
}{
	{http.MethodPost, "keys", nil, (*adminCall).issue},
	{http.MethodGet, "keys", []string{"owner", "all", "env", "status", "limit", "after"}, (*adminCall).list},
	{http.MethodGet, "keys/{id}", nil, (*adminCall).show},
	{http.MethodPatch, "keys/{id}", nil, (*adminCall).update},
	{http.MethodPost, "keys/{id}/rotate", nil, (*adminCall).rotate},
	{http.MethodPost, "keys/{id}/revoke", nil, (*adminCall).revoke},
	{http.MethodGet, "keys/{id}/usage", []string{"since"}, (*adminCall).usage},
	{http.MethodGet, "keys/{id}/events", []string{"limit", "after"}, (*adminCall).events},
	{http.MethodPost, "revoke", nil, (*adminCall).revoke},
	{http.MethodGet, "events", []string{"key", "limit", "after"}, (*adminCall).events},
	{http.MethodGet, "audit", []string{"unused", "expiring"}, (*adminCall).audit},
	{http.MethodGet, "scopes", nil, (*adminCall).scopes},
}

// queryProblem says what is wrong with a request's query, or "": a
// parameter that is neither store nor one of params, or one given twice.
// Neither is ignored: ?status=revoked answered with every key, ?id=…
// answered with every key's events, or ?status=active&status=revoked
// answered with the active keys only, would have a script act on keys it
// never asked for. So is a query Go's parser would drop a part of (a ';'
// between parameters, a bad %-escape): ?status=revoked;limit=1 would be
// answered with every key.
func queryProblem(r *http.Request, params []string) string {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return fmt.Sprintf("query: %v; separate parameters with &, and escape %% as %%25", err)
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names) // the same one named every time
	for _, name := range names {
		if name != "store" && !slices.Contains(params, name) {
			want := "it takes only ?store="
			if len(params) > 0 {
				want = "it takes " + strings.Join(params, ", ") + " (and store)"
			}
			return fmt.Sprintf("query parameter %q: %s %s does not read it; %s", name, r.Method, verifier.Redact(r.URL.Path), want)
		}
		if len(q[name]) > 1 {
			return fmt.Sprintf("query parameter %q is given %d times; give it once", name, len(q[name]))
		}
	}
	return ""
}

// nextLink is the Link header (RFC 8288) of a page that may have a next
// one: the request's own address and query, as the caller wrote it, with
// after set to where the next page starts.
func nextLink(u *url.URL, after string) string {
	var kept []string
	for _, pair := range strings.Split(u.RawQuery, "&") {
		name, _, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); pair == "" || err == nil && n == "after" {
			continue
		}
		kept = append(kept, pair)
	}
	kept = append(kept, "after="+url.QueryEscape(after))
	return "<" + u.EscapedPath() + "?" + strings.Join(kept, "&") + `>; rel="next"`
}

func (a *Admin) serve(w http.ResponseWriter, r *http.Request) error {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/keygate/"), "/"), "/")
	var allow []string
	for _, route := range adminRoutes {
		id, ok := matchAdminPath(route.path, segs)
		if !ok {
			continue
		}
		if route.method != r.Method {
			allow = append(allow, route.method)
			continue
		}
		if msg := queryProblem(r, route.params); msg != "" {
			return writeAdminError(w, badRequest("%s", msg))
		}
		ks, closeStore, err := a.resolveStore(r)
		if err != nil {
			return writeAdminError(w, err)
		}
		defer closeStore()
		// A store that takes connections but does not answer (PostgreSQL
		// stopped, a pooler paused) gets 503 after manageTimeout, not a
		// call that hangs with the operator not knowing whether a revoke
		// took.
		ctx, cancel := context.WithTimeout(r.Context(), manageTimeout)
		defer cancel()
		c := &adminCall{w: w, r: r.WithContext(ctx), keys: ks, id: id, actor: adminActor(r)}
		if err := route.serve(c); err != nil {
			return writeAdminError(w, err)
		}
		return nil
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		return writeAdminError(w, adminError{http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, verifier.Redact(r.URL.Path), strings.Join(allow, " or "))})
	}
	return writeAdminError(w, adminError{http.StatusNotFound, "not_found", "no such keygate admin route: " + verifier.Redact(r.URL.Path)})
}

// manageTimeout bounds the store work of each admin API call and console
// page.
var manageTimeout = 10 * time.Second

// matchAdminPath matches path segments against a route path, returning the
// {id} segment.
func matchAdminPath(pattern string, segs []string) (id string, ok bool) {
	want := strings.Split(pattern, "/")
	if len(want) != len(segs) {
		return "", false
	}
	for i, w := range want {
		switch {
		case w == "{id}" && segs[i] != "":
			id = segs[i]
		case w != segs[i]:
			return "", false
		}
	}
	return id, true
}

// adminActor names who made a change in audit events: the client's address,
// and before it its certificate's name when the admin endpoint uses client
// certificates (so an event says from where a certificate was used too).
func adminActor(r *http.Request) string {
	if name := adminCaller(r); name != "" {
		return "admin-api " + name + " from " + r.RemoteAddr
	}
	return "admin-api " + r.RemoteAddr
}

// adminCaller names the client's certificate, "" without one: who may
// repeat a request under an Idempotency-Key. It is the subject's common
// name, else (a certificate naming its holder only in its alternative
// names, as many now do) the first DNS name, email address or URI there.
func adminCaller(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	c := r.TLS.PeerCertificates[0]
	names := append([]string{c.Subject.CommonName}, c.DNSNames...)
	names = append(names, c.EmailAddresses...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	for _, n := range names {
		if n != "" {
			return strings.Map(func(r rune) rune { // one line in the CLI's table
				if unicode.IsPrint(r) {
					return r
				}
				return '?'
			}, n)
		}
	}
	return "(a certificate naming no one)"
}

// adminError is an admin API error in the gateway's JSON shape.
type adminError struct {
	status        int
	code, message string
}

func (e adminError) Error() string { return e.message }

// classify returns err as an adminError: its code and status say what kind
// of failure it is, for the admin API's answers and the CLI's exit statuses
// alike.
func classify(err error) adminError {
	var ae adminError
	if errors.As(err, &ae) {
		return ae
	}
	ae = adminError{http.StatusInternalServerError, "internal_error", err.Error()}
	var inv *keys.InvalidError
	var conf *keys.ConflictError
	switch {
	case errors.Is(err, keys.ErrIdempotencyKeyReused):
		// Well-formed, but never to be sent again as it is (RFC draft
		// httpapi-idempotency-key-header answers 422 too).
		ae.status, ae.code = http.StatusUnprocessableEntity, "invalid_input"
	case errors.As(err, &inv), errors.As(err, new(*store.FileError)):
		ae.status, ae.code = http.StatusBadRequest, "invalid_input"
	case errors.Is(err, store.ErrNotFound):
		ae.status, ae.code = http.StatusNotFound, "not_found"
	case errors.As(err, &conf), errors.Is(err, store.ErrStoreOpen), errors.Is(err, store.ErrNotEmpty):
		// A key's state, or a store's: in use by a gateway (restore,
		// copy-store), holding keys already (copy-store's target).
		ae.status, ae.code = http.StatusConflict, "conflict"
	case errors.Is(err, store.ErrFileGone): // says itself what to do
		ae.status, ae.code = http.StatusServiceUnavailable, "store_unavailable"
	case store.Unavailable(err):
		ae = storeUnavailable(err)
	case store.Damaged(err):
		ae = adminError{http.StatusServiceUnavailable, "store_unavailable",
			"the key store's file is damaged; stop the gateways using it and restore a backup (" + err.Error() + ")"}
	}
	return ae
}

// writeAdminError answers err as {"error":{"code","message"}} with the
// status its kind calls for.
func writeAdminError(w http.ResponseWriter, err error) error {
	ae := classify(err)
	if ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	// A message may quote what the caller sent; a key pasted there (?limit=kg_live_…)
	// is not repeated: the answer goes to scripts and terminals that log it.
	body.Error.Code, body.Error.Message = ae.code, verifier.Redact(ae.message)
	return writeJSON(w, ae.status, body)
}

// storeUnavailable answers a store that could not be reached or did not
// answer: 503, as the gateway answers a key it cannot look up, with what
// went wrong for the operator.
func storeUnavailable(err error) adminError {
	if said := cancelledAt(err); said != "" {
		return adminError{http.StatusServiceUnavailable, "store_unavailable",
			"the key store is unavailable: " + said + " (" + err.Error() + ")"}
	}
	return adminError{http.StatusServiceUnavailable, "store_unavailable",
		"the key store is unavailable; try again shortly (" + err.Error() + ")"}
}

// cancelledAt says which timeout of the PostgreSQL server cancelled what
// err answers, or "": a DBA may have set it for keygate's role or database
// to a value every try runs past, so the operator is told which setting to
// look at, not only to try again.
func cancelledAt(err error) string {
	setting := store.CancelledBy(err)
	if setting == "" {
		return ""
	}
	said := "the PostgreSQL server cancelled a statement at its " + setting + " (a setting of keygate's role, its database or the server)"
	if setting == "statement_timeout" {
		said += " or an administrator's request"
	}
	return said + "; try again shortly, and if every try fails, raise the setting or reset it"
}

func badRequest(format string, args ...any) error {
	return adminError{http.StatusBadRequest, "invalid_input", fmt.Sprintf(format, args...)}
}

// resolveStore returns the keys service of the store a request names: the
// running handlers' one (whose writes are enforced at once), or one opened
// for this request.
//
// A running handlers' store is also named by the name its log lines and
// errors give it, its password written xxxxx: Caddy logs the URI of every
// admin request, so ?store= with the password would put it in that log.
func (a *Admin) resolveStore(r *http.Request) (*keys.Service, func(), error) {
	want := r.URL.Query().Get("store")
	if want != "" {
		var err error
		if want, err = storeURI(want); err != nil {
			return nil, nil, badRequest("store: %v", err)
		}
	}
	var found []*backend
	backends.Range(func(_, v any) bool {
		b := v.(*backend)
		if want == "" || b.uri == want || b.redacted == want {
			found = append(found, b)
		}
		return true
	})
	switch {
	case len(found) == 1:
		return found[0].keys, func() {}, nil
	case len(found) > 1:
		var names []string
		for _, b := range found {
			names = append(names, b.redacted)
		}
		sort.Strings(names)
		return nil, nil, badRequest("keygate handlers use several stores (%s); name one with ?store=<uri>, as written here", strings.Join(names, ", "))
	}
	// No running handler uses it: open it for this request.
	uri := want
	if uri == "" {
		var err error
		if uri, err = storeURI(""); err != nil {
			return nil, nil, err
		}
	}
	// Only issuing may create the embedded store, as with the CLI: a
	// mistyped ?store= must not look like a store without keys. It is the
	// request's mistake (400, the CLI's exit 2), never 404: an offboarding
	// script takes revoking an owner's keys with a 404 for "none left".
	if path, missing := missingSQLite(uri); missing && !(r.Method == http.MethodPost && r.URL.Path == "/keygate/keys") {
		return nil, nil, badRequest("no keygate store at %s (it is created by a gateway using it or by issuing the first key)", path)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, uri)
	if err != nil {
		if store.Unavailable(err) {
			return nil, nil, storeUnavailable(err)
		}
		return nil, nil, badRequest("%v", err) // it names the store, its password redacted
	}
	return keys.New(st, keys.Options{}), func() { st.Close() }, nil
}

func (c *adminCall) issue() error {
	body, err := readAdminBody(c.r)
	if err != nil {
		return err
	}
	var spec keys.Spec
	if err := decodeBody(body, &spec); err != nil {
		return err
	}
	once, err := c.idempotency(body)
	if err != nil {
		return err
	}
	res, err := c.keys.IssueOnce(c.r.Context(), spec, c.actor, once)
	switch {
	case errors.Is(err, keys.ErrNameRequired):
		return badRequest(`name is required (e.g. "name": "crm-sync")`)
	case errors.Is(err, keys.ErrScopeRequired):
		return badRequest(`at least one scope is required (e.g. "scopes": ["mail.send"]; "*" is full access)`)
	case err != nil:
		return err
	}
	return c.writeMade(res)
}

// idempotency reads the request's Idempotency-Key, if it has one: the
// same request (method, path, body) sent again under it gets the first
// answer again instead of a second key. Callers with client certificates
// each have their own keys; without, whoever reaches the admin endpoint
// may do anything, so the client's address (which changes with each
// connection's port, and behind a proxy) does not part them.
func (c *adminCall) idempotency(body []byte) (*keys.Idempotency, error) {
	values := c.r.Header.Values("Idempotency-Key")
	switch len(values) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, badRequest("Idempotency-Key: give it once, not %d times", len(values))
	}
	if err := keys.CheckIdempotencyKey(values[0]); err != nil {
		return nil, err
	}
	caller := adminCaller(c.r)
	if caller != "" {
		caller = "admin-api " + caller // as the actor was named before it said from where
	}
	request := append([]byte(c.r.Method+" "+c.r.URL.Path+"\n"), body...)
	return &keys.Idempotency{Key: values[0], Caller: caller, Request: request}, nil
}

// writeMade answers a key just issued or rotated: 201, the same answer
// again for a repeat under its Idempotency-Key, said so in a header.
func (c *adminCall) writeMade(res *keys.Result) error {
	if res.Replayed {
		c.w.Header().Set("Idempotent-Replayed", "true")
	}
	return writeJSON(c.w, http.StatusCreated, res)
}

func (c *adminCall) list() error {
	q := c.r.URL.Query()
	all := false
	if v := q.Get("all"); v != "" {
		var err error
		if all, err = strconv.ParseBool(v); err != nil {
			return badRequest("all=%q: want true or false", v)
		}
	}
	sel := keys.Selection{Owner: q.Get("owner"), All: all, Env: q.Get("env"), Status: q.Get("status"), After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		var err error
		if sel.Limit, err = strconv.Atoi(v); err != nil || sel.Limit < 0 {
			return badRequest("limit %q: want how many keys a page holds, or 0 for every key", v)
		}
	}
	recs, err := c.keys.Select(c.r.Context(), sel)
	if err != nil {
		return err
	}
	// A full page may have a next one: say where it starts, so a client
	// need not build the address (RFC 8288). The answer stays an array.
	if sel.Limit > 0 && len(recs) == sel.Limit {
		c.w.Header().Set("Link", nextLink(c.r.URL, recs[len(recs)-1].ID))
	}
	return writeJSON(c.w, http.StatusOK, recs)
}

func (c *adminCall) show() error {
	rec, err := c.keys.Show(c.r.Context(), c.id)
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", `W/"`+keys.Version(rec)+`"`) // weak: the settings, not the whole record
	return writeJSON(c.w, http.StatusOK, rec)
}

func (c *adminCall) update() error {
	var spec keys.Spec
	if err := decodeJSON(c.r, &spec); err != nil {
		return err
	}
	// If-Match with the ETag of a GET: the change applies only to the
	// settings as read, so two tools editing one key never undo each
	// other's change unknowingly.
	if m := c.r.Header.Get("If-Match"); m != "" && m != "*" {
		spec.IfVersion = strings.Trim(strings.TrimPrefix(m, "W/"), `"`)
	}
	res, err := c.keys.Update(c.r.Context(), c.id, spec, c.actor)
	if errors.Is(err, keys.ErrChanged) {
		return adminError{http.StatusPreconditionFailed, "conflict", err.Error()}
	}
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", `W/"`+keys.Version(res.Record)+`"`)
	return writeJSON(c.w, http.StatusOK, res)
}

func (c *adminCall) rotate() error {
	raw, err := readAdminBody(c.r)
	if err != nil {
		return err
	}
	var body struct {
		Grace  string `json:"grace"`
		Reason string `json:"reason"`
	}
	if err := decodeBody(raw, &body); err != nil {
		return err
	}
	grace, err := keys.ParseGrace(body.Grace)
	if err != nil {
		return err
	}
	once, err := c.idempotency(raw)
	if err != nil {
		return err
	}
	res, err := c.keys.RotateOnce(c.r.Context(), c.id, grace, body.Reason, c.actor, once)
	if err != nil {
		return err
	}
	return c.writeMade(res)
}

// revoke serves both revoke routes: a key by id, and POST /keygate/revoke
// for a leaked key by value or every key of an owner.
func (c *adminCall) revoke() error {
	var rv keys.Revocation
	if err := decodeJSON(c.r, &rv); err != nil {
		return err
	}
	switch {
	case c.id != "":
		rv.ID, rv.Key, rv.Owner = c.id, "", ""
	case rv.ID != "":
		return badRequest(`give "key" (a leaked key) or "owner"; revoke an id at /keygate/keys/{id}/revoke`)
	}
	// Revoking is idempotent (200), but a key revoked before is said to be,
	// as the CLI says it: the new reason was not recorded.
	var before *store.Record
	if rv.Owner == "" {
		if t, err := c.keys.RevokeTargets(c.r.Context(), rv); err == nil && t[0].Revoked() {
			before = t[0]
		}
	}
	recs, err := c.keys.Revoke(c.r.Context(), rv, c.actor)
	if err != nil {
		return err
	}
	if rv.Owner != "" {
		return writeJSON(c.w, http.StatusOK, recs)
	}
	if before != nil {
		return writeJSON(c.w, http.StatusOK, revokedBefore(recs[0]))
	}
	return writeJSON(c.w, http.StatusOK, recs[0])
}

// alreadyRevoked is the answer to revoking a key that was revoked before,
// by the admin API and `caddy keys revoke --json` alike: its record as it
// was (the first time and reason kept) and a warning saying that nothing
// changed, so a script retrying a revoke tells "already done" from "done".
// The warning is in warnings, where issue, rotate and update put theirs,
// and in warning, where scripts written before read it.
type alreadyRevoked struct {
	*store.Record
	Warning  string   `json:"warning"`
	Warnings []string `json:"warnings"`
}

func revokedBefore(rec *store.Record) alreadyRevoked {
	w := fmt.Sprintf("key %s was already revoked on %s; nothing changed", rec.ID, rec.RevokedAt.UTC().Format(time.RFC3339))
	return alreadyRevoked{rec, w, []string{w}}
}

func (c *adminCall) usage() error {
	window, err := keys.ParseWindow("since", c.r.URL.Query().Get("since"))
	if err != nil {
		return err
	}
	rep, err := c.keys.Usage(c.r.Context(), c.id, window)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, rep)
}

func (c *adminCall) events() error {
	q := c.r.URL.Query()
	id := c.id
	if q.Has("key") {
		// ?key=$ID with ID unset is not every key's events.
		if id = q.Get("key"); id == "" {
			return keys.CheckID(id)
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return badRequest("limit %q: want how many events, or 0 for all", v)
		}
		limit = n
	}
	var after *int64
	if q.Has("after") {
		v := q.Get("after")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("after %q: want the seq of the last event read, or 0 for the first", v)
		}
		after = &n
	}
	evs, err := c.keys.Events(c.r.Context(), id, limit, after)
	if err != nil {
		return err
	}
	// Read forward, a full page may have a next one (as for keys).
	if after != nil && limit > 0 && len(evs) == limit {
		c.w.Header().Set("Link", nextLink(c.r.URL, strconv.FormatInt(evs[len(evs)-1].Seq, 10)))
	}
	return writeJSON(c.w, http.StatusOK, evs)
}

func (c *adminCall) audit() error {
	q := c.r.URL.Query()
	unused, err := keys.ParseWindow("unused", q.Get("unused"))
	if err != nil {
		return err
	}
	expiring, err := keys.ParseWindow("expiring", q.Get("expiring"))
	if err != nil {
		return err
	}
	rep, err := c.keys.Audit(c.r.Context(), unused, expiring)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, rep)
}

func (c *adminCall) scopes() error {
	lines, err := c.keys.RouteScopes(c.r.Context())
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, lines)
}

func decodeJSON(r *http.Request, v any) error {
	body, err := readAdminBody(r)
	if err != nil {
		return err
	}
	return decodeBody(body, v)
}

// maxAdminBody bounds an admin API request's body: far more than any
// key's settings.
const maxAdminBody = 1 << 20

func readAdminBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return nil, badRequest("reading body: %v", err)
	}
	if len(body) > maxAdminBody {
		return nil, badRequest("body: larger than %d bytes, far more than any key's settings", maxAdminBody)
	}
	return body, nil
}

// decodeBody decodes a JSON body into v; an empty one leaves v as it is.
// The body is one JSON value: what follows it ({"key":"…"} {"owner":"…"},
// or a line of a log pasted after it) is refused, not ignored, as a field
// the request does not read is.
func decodeBody(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			// Go's own words name Go types the caller never saw
			// (`Go struct field Spec.burst of type int`).
			if typ.Field == "" {
				return badRequest("invalid JSON body: want a JSON object, got %s", jsonGot(typ.Value))
			}
			return badRequest("invalid JSON body: %q: want %s, got %s", typ.Field, jsonWant(typ.Type), jsonGot(typ.Value))
		}
		return badRequest("invalid JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid JSON body: it holds more after its first value; send one JSON object")
	}
	return nil
}

// jsonWant says in JSON's words what a field of type t takes.
func jsonWant(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if e := jsonWant(t.Elem()); e == "a string" {
			return "an array of strings"
		}
		return "an array"
	}
	return "an object"
}

// jsonGot says in JSON's words what json.UnmarshalTypeError's Value names:
// a kind of value ("string", "array"), or a number as sent ("number 1.5").
func jsonGot(v string) string {
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return n
	}
	switch v {
	case "bool":
		return "true or false"
	case "array", "object":
		return "an " + v
	case "string", "number":
		return "a " + v
	}
	return v
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // JSON for programs: "<id>", not "\u003cid\u003e"
	return enc.Encode(v)
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)
