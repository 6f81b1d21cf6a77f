package keygate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/store"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin is the admin.api.keygate module: key management under /keygate/ on
// Caddy's admin endpoint (localhost by default). It uses the same store,
// cache and counters as the running keygate handlers, so a revoke made here
// is enforced on the very next request.
//
// When handlers use more than one store, requests name the store with
// ?store=<uri>; with one store (or none configured, which means the default
// SQLite store) the parameter is optional.
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

// Provision keeps the admin logger.
func (a *Admin) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	return nil
}

// Routes serves everything under /keygate/.
func (a *Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/keygate/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// storeError maps store and input errors to admin API statuses.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apiError(http.StatusNotFound, "%v", err)
	case errors.Is(err, errBadInput):
		return apiError(http.StatusBadRequest, "%s", strings.TrimPrefix(err.Error(), errBadInput.Error()+": "))
	}
	return apiError(http.StatusInternalServerError, "%v", err)
}

// adminStore is the store an admin request works on, and the backend of
// running handlers when there is one (to enforce changes at once).
type adminStore struct {
	store   store.Store
	backend *backend
	close   func()
}

func (a *Admin) resolveStore(r *http.Request) (*adminStore, error) {
	want := r.URL.Query().Get("store")
	if want != "" {
		want = normalizeStoreURI(want)
	}
	var found []*backend
	backends.Range(func(_, v any) bool {
		b := v.(*backend)
		if want == "" || b.uri == want {
			found = append(found, b)
		}
		return true
	})
	switch {
	case len(found) == 1:
		return &adminStore{store: found[0].store, backend: found[0], close: func() {}}, nil
	case len(found) > 1:
		var names []string
		for _, b := range found {
			names = append(names, b.redacted)
		}
		sort.Strings(names)
		return nil, apiError(http.StatusBadRequest, "keygate handlers use several stores (%s); name one with ?store=<uri>", strings.Join(names, ", "))
	}
	// No running handler uses it: open it for this request.
	uri := want
	if uri == "" {
		uri = defaultStoreURI()
	}
	// Only issuing may create the embedded store, as with the CLI: a
	// mistyped ?store= must not look like a store without keys.
	if path, missing := missingSQLite(uri); missing && !(r.Method == http.MethodPost && r.URL.Path == "/keygate/keys") {
		return nil, apiError(http.StatusNotFound, "no keygate store at %s (it is created by a gateway using it or by issuing the first key)", path)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, uri)
	if err != nil {
		return nil, apiError(http.StatusBadRequest, "store %s: %v", store.RedactURI(uri), err)
	}
	return &adminStore{store: st, close: func() { st.Close() }}, nil
}

// changed enforces a write on running handlers at once.
func (s *adminStore) changed(ctx context.Context) {
	if s.backend != nil {
		s.backend.afterWrite(ctx)
	}
}

func (a *Admin) serve(w http.ResponseWriter, r *http.Request) error {
	s, err := a.resolveStore(r)
	if err != nil {
		return err
	}
	defer s.close()
	actor := "admin-api " + r.RemoteAddr
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		actor = "admin-api " + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	ctx := r.Context()
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/keygate/"), "/"), "/")
	route := r.Method + " " + parts[0]
	if len(parts) > 1 {
		route += "/{id}"
	}
	if len(parts) > 2 {
		route += "/" + parts[2]
	}
	if len(parts) > 3 {
		return apiError(http.StatusNotFound, "no such keygate admin route: %s", r.URL.Path)
	}
	id := ""
	if len(parts) > 1 {
		id = parts[1]
	}

	switch route {
	case "POST keys":
		var spec KeySpec
		if err := decodeJSON(r, &spec); err != nil {
			return err
		}
		if spec.Prefix == nil && s.backend != nil {
			if p := s.backend.onlyPrefix(); p != "" {
				spec.Prefix = &p
			}
		}
		rec, key, err := issueKey(ctx, s.store, spec, actor)
		if err != nil {
			return storeError(err)
		}
		s.changed(ctx)
		return writeJSON(w, http.StatusCreated, issued{Record: rec, Key: key})
	case "GET keys":
		all := false
		if v := r.URL.Query().Get("all"); v != "" {
			var err error
			if all, err = strconv.ParseBool(v); err != nil {
				return apiError(http.StatusBadRequest, "all=%q: want true or false", v)
			}
		}
		f := store.ListFilter{Owner: r.URL.Query().Get("owner"), All: all}
		recs, err := s.store.ListKeys(ctx, f)
		if err != nil {
			return storeError(err)
		}
		if recs == nil {
			recs = []*store.Record{}
		}
		return writeJSON(w, http.StatusOK, recs)
	case "GET keys/{id}":
		rec, err := s.store.Key(ctx, id)
		if err != nil {
			return storeError(err)
		}
		return writeJSON(w, http.StatusOK, rec)
	case "PATCH keys/{id}":
		var spec KeySpec
		if err := decodeJSON(r, &spec); err != nil {
			return err
		}
		rec, err := updateKey(ctx, s.store, id, spec, actor)
		if err != nil {
			return storeError(err)
		}
		s.changed(ctx)
		return writeJSON(w, http.StatusOK, rec)
	case "POST keys/{id}/rotate":
		var body struct {
			Grace string `json:"grace"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		grace, err := parseGrace(body.Grace)
		if err != nil {
			return storeError(err)
		}
		rec, key, err := rotateKey(ctx, s.store, id, grace, actor)
		if err != nil {
			return storeError(err)
		}
		s.changed(ctx)
		return writeJSON(w, http.StatusCreated, issued{Record: rec, Key: key})
	case "POST keys/{id}/revoke", "POST revoke":
		var rv revocation
		if err := decodeJSON(r, &rv); err != nil {
			return err
		}
		if id != "" {
			rv.ID, rv.Key, rv.Owner = id, "", ""
		} else if rv.ID != "" {
			return apiError(http.StatusBadRequest, `give "key" (a leaked key) or "owner"; revoke an id at /keygate/keys/{id}/revoke`)
		}
		targets, action, err := rv.targets(ctx, s.store)
		if err != nil {
			return storeError(err)
		}
		recs, err := rv.revoke(ctx, s.store, targets, action, actor)
		s.changed(ctx)
		if err != nil {
			return storeError(err)
		}
		if rv.Owner != "" {
			return writeJSON(w, http.StatusOK, recs)
		}
		return writeJSON(w, http.StatusOK, recs[0])
	case "GET keys/{id}/usage":
		since, err := parseSince(r.URL.Query().Get("since"))
		if err != nil {
			return storeError(err)
		}
		if s.backend != nil {
			s.backend.flushUsage()
		}
		rep, err := usageReport(ctx, s.store, id, since)
		if err != nil {
			return storeError(err)
		}
		return writeJSON(w, http.StatusOK, rep)
	case "GET events":
		evs, err := keyEvents(ctx, s.store, r.URL.Query().Get("key"))
		if err != nil {
			return storeError(err)
		}
		if evs == nil {
			evs = []store.Event{}
		}
		return writeJSON(w, http.StatusOK, evs)
	case "GET audit":
		rep, err := auditReport(ctx, s.store, r.URL.Query().Get("unused"), r.URL.Query().Get("expiring"))
		if err != nil {
			return storeError(err)
		}
		return writeJSON(w, http.StatusOK, rep)
	}
	return apiError(http.StatusNotFound, "no such keygate admin route: %s %s", r.Method, r.URL.Path)
}

// issued is the answer to issue and rotate: the record and, this once, the
// key.
type issued struct {
	*store.Record
	Key string `json:"key"`
}

// onlyPrefix returns the prefix of this store's handlers when they agree.
func (b *backend) onlyPrefix() string {
	var prefixes []string
	b.prefixes.Range(func(k, _ any) bool { prefixes = append(prefixes, k.(string)); return true })
	if len(prefixes) == 1 {
		return prefixes[0]
	}
	return ""
}

func parseGrace(s string) (time.Duration, error) {
	if s == "" {
		return 24 * time.Hour, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badInput("grace %q: want a duration such as 24h, 7d or 0", s)
	}
	return d, nil
}

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return now().Add(-7 * 24 * time.Hour), nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, badInput("since %q: want a duration such as 24h or 7d", s)
	}
	return now().Add(-d), nil
}

func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return apiError(http.StatusBadRequest, "reading body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)
