package keygate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/caddy-keygate/store"
)

// stuckStore takes calls and, while stuck, answers none until the caller
// gives up: PostgreSQL stopped with its connections open, a pooler paused.
type stuckStore struct {
	store.Store
	stuck atomic.Bool
}

func (s *stuckStore) wait(ctx context.Context) error {
	if !s.stuck.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *stuckStore) Key(ctx context.Context, id string) (*store.Record, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.Key(ctx, id)
}

func (s *stuckStore) UpdateKey(ctx context.Context, id string, ev *store.Event, fn func(*store.Record) error) (*store.Record, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.UpdateKey(ctx, id, ev, fn)
}

// An admin call to a store that takes connections but does not answer gets
// 503 store_unavailable with Retry-After after manageTimeout, not a call
// that hangs with the operator not knowing whether a revoke took.
func TestAnAdminCallToAStuckStoreIsAnsweredUnavailable(t *testing.T) {
	defer func(d time.Duration) { manageTimeout = d }(manageTimeout)
	manageTimeout = 300 * time.Millisecond
	st := &stuckStore{}
	uri, _ := backendOn(t, st, &st.Store)
	rec, _ := issue(t, st, "mail.send")

	st.stuck.Store(true)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/keygate/keys/" + rec.ID, ""},
		{"POST", "/keygate/keys/" + rec.ID + "/revoke", `{"reason":"leaked"}`},
	} {
		r := httptest.NewRequest(c.method, c.path+"?store="+url.QueryEscape(uri), strings.NewReader(c.body))
		w := httptest.NewRecorder()
		began := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			(&Admin{}).serve(w, r)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s: no answer after 10 s", c.method, c.path)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" ||
			!strings.Contains(w.Body.String(), "store_unavailable") || time.Since(began) > 5*time.Second {
			t.Errorf("%s %s: %d %v %s after %v, want 503 store_unavailable with Retry-After", c.method, c.path,
				w.Code, w.Header(), w.Body, time.Since(began))
		}
	}
	st.stuck.Store(false)
	if got, err := st.Key(context.Background(), rec.ID); err != nil || got.Revoked() {
		t.Errorf("after a revoke answered 503 the key is %+v (%v), want it as it was", got, err)
	}
}

// pollStuckStore stops answering the change log once a key was changed
// through it: PostgreSQL frozen or cut off between a revocation's commit
// and the gateway's read of the change log after it.
type pollStuckStore struct {
	store.Store
	stuck atomic.Bool
}

func (s *pollStuckStore) UpdateKey(ctx context.Context, id string, ev *store.Event, fn func(*store.Record) error) (*store.Record, error) {
	rec, err := s.Store.UpdateKey(ctx, id, ev, fn)
	s.stuck.Store(err == nil)
	return rec, err
}

func (s *pollStuckStore) LastChange(ctx context.Context) (int64, error) {
	for s.stuck.Load() {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond): // until the test ends it
		}
	}
	return s.Store.LastChange(ctx)
}

// A revoke the store committed is answered even if the store stops
// answering before the gateway has read its change log back: within
// afterWriteTimeout, with the key refused from then on (it is read from the
// store again). The read back had no deadline, so the call waited for the
// store as long as the outage lasted, with the verifier's Sync lock held.
func TestARevokeIsAnsweredWhenTheStoreStopsAnsweringRightAfterIt(t *testing.T) {
	defer func(d time.Duration) { afterWriteTimeout = d }(afterWriteTimeout)
	afterWriteTimeout = 300 * time.Millisecond
	st := &pollStuckStore{}
	uri, b := backendOn(t, st, &st.Store)
	rec, _ := issue(t, st, "mail.send")
	if got, err := b.verifier.Lookup(context.Background(), rec.Digest, time.Minute); err != nil || got.Revoked() {
		t.Fatalf("before the revoke: %+v, %v", got, err)
	}

	r := httptest.NewRequest("POST", "/keygate/keys/"+rec.ID+"/revoke?store="+url.QueryEscape(uri), strings.NewReader(`{"reason":"leaked"}`))
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Admin{}).serve(w, r)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		st.stuck.Store(false) // let the test end
		t.Fatal("a revoke the store committed, then the change log did not answer: no answer after 10 s")
	}
	if w.Code != http.StatusOK {
		t.Errorf("revoke: %d %s, want 200: the key is revoked", w.Code, w.Body)
	}
	if got, err := b.verifier.Lookup(context.Background(), rec.Digest, time.Minute); err == nil && !got.Revoked() {
		t.Error("the revoked key is still answered from the cache as valid")
	}
	st.stuck.Store(false)
}

// An admin error never repeats a key sent where another value belongs (a
// query parameter, a field the service does not check itself): the answer
// goes to scripts and terminals that log it.
func TestAnAdminErrorNeverRepeatsAKey(t *testing.T) {
	dir := t.TempDir()
	uri, err := storeURI("sqlite:" + filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	st := openSQLiteStore(t, filepath.Join(dir, "keys.db"))
	startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	defer releaseBackend(uri, zap.NewNop())
	rec, key := issue(t, st, "mail.send")
	secret := key[len("kg_live_"):][:43]
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/keygate/events?limit=" + key, ""},
		{"GET", "/keygate/keys?all=" + key, ""},
		{"GET", "/keygate/keys?after=" + key, ""},
		{"GET", "/keygate/keys?limit=" + key, ""},
		{"GET", "/keygate/keys/" + rec.ID + "/usage?since=" + key, ""},
		{"POST", "/keygate/keys", `{"name":"crm","scopes":["mail.send"],"` + key + `":1}`},
	} {
		sep := "?"
		if strings.Contains(c.path, "?") {
			sep = "&"
		}
		r := httptest.NewRequest(c.method, c.path+sep+"store="+url.QueryEscape(uri), strings.NewReader(c.body))
		w := httptest.NewRecorder()
		(&Admin{}).serve(w, r)
		if w.Code != http.StatusBadRequest || strings.Contains(w.Body.String(), secret) {
			t.Errorf("%s %s: %d %s, want 400 without the key", c.method, c.path, w.Code, w.Body)
		}
	}
}

// A ?store= naming no store is the request's mistake, 400 as the CLI's exit
// 2, never the 404 that revoking an owner with no active key left answers:
// an offboarding script taking that 404 for "nothing left to revoke" must not
// be fooled by a mistyped store. Nothing is created there.
func TestAnAdminCallOnAMissingStoreIsInvalidInput(t *testing.T) {
	typo := filepath.Join(t.TempDir(), "typo", "keys.db")
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/keygate/revoke", `{"owner":"contractor"}`},
		{"GET", "/keygate/keys", ""},
		{"GET", "/keygate/keys/key_abc", ""},
		{"POST", "/keygate/keys/key_abc/revoke", `{}`},
	} {
		r := httptest.NewRequest(c.method, c.path+"?store="+url.QueryEscape("sqlite:"+typo), strings.NewReader(c.body))
		w := httptest.NewRecorder()
		(&Admin{}).serve(w, r)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"invalid_input"`) || !strings.Contains(w.Body.String(), "no keygate store at "+typo) {
			t.Errorf("%s %s on a missing store: %d %s, want 400 invalid_input naming it", c.method, c.path, w.Code, w.Body)
		}
	}
	if _, err := os.Stat(filepath.Dir(typo)); err == nil {
		t.Error("a call on a missing store created it")
	}
}

// FuzzAdminRequests proves the admin API answers any body, query and
// Idempotency-Key with a result or a 4xx in the contract's JSON error
// shape: never a 500, a panic, or a key quoted back.
func FuzzAdminRequests(f *testing.F) {
	h, st := testHandler(f, &Handler{})
	rec, key := issue(f, st, "mail.send")
	for _, c := range []struct {
		route       uint8
		query, body string
	}{
		{0, "", `{"name":"crm","scopes":["mail.send"],"expires":"90d","rate":"10/s","quota":"100/d","allowed_ips":["10.0.0.0/8"],"sender_domains":["example.com"]}`},
		{0, "", `{"name":"crm","scopes":["mail.send"],"expires":"100000d100000d"}`},
		{0, "", `{"nAme":"0","sCopes":["0"],"eXpires":"0100000d"}`}, // past 2262: was a 500 from the store
		{0, "", `{"name":"crm","scopes":["mail.send"],"expires":"9999-01-01T00:00:00Z"}`},
		{2, "", `{"grace":"100000d"}`},
		{0, "", `{"name":"crm","scopes":"mail.send"}`},
		{0, "", `{"name":"crm","scopes":["mail.send"],"rate":"0/s","burst":-1}`},
		{0, "", `{"name":null,"scopes":null}`},
		{0, "", `{"name":"crm","scopes":["mail.send"],"max_recipients":1e30}`},
		{0, "", `{"name":"` + key + `"}`},
		{0, "", `[]`},
		{0, "", `{"name":"crm"} trailing`},
		{1, "", `{"add_scopes":["templates.read"],"disabled":true,"reason":"x"}`},
		{1, "", `{"sender_domains":["*."]}`},
		{2, "", `{"grace":"-"}`},
		{2, "", `{"grace":"1d-1h"}`},
		{3, "", `{"reason":"leaked"}`},
		{4, "", `{"key":"` + key + `x"}`},
		{4, "", `{"owner":""}`},
		{4, "", `{"id":"key_x"}`},
		{5, "since=100000d100000d", ""},
		{6, "limit=-1", ""},
		{7, "unused=0&expiring=-", ""},
		{8, "all=maybe&owner=%ff", ""},
		{8, "limit=2&after=key_x", ""},
	} {
		f.Add(c.route, c.query, c.body, "")
	}
	for _, k := range []string{"3f1c2a9e-5d7b-4e0c-9a61-0d2b8c7e4f15", " ", "a\x7f", strings.Repeat("k", 256), "kg_live_x"} {
		f.Add(uint8(0), "", `{"name":"crm","scopes":["mail.send"]}`, k)
		f.Add(uint8(2), "", `{"grace":"1h"}`, k)
	}
	routes := []struct{ method, path string }{
		{"POST", "/keygate/keys"},
		{"PATCH", "/keygate/keys/" + rec.ID},
		{"POST", "/keygate/keys/" + rec.ID + "/rotate"},
		{"POST", "/keygate/keys/" + rec.ID + "/revoke"},
		{"POST", "/keygate/revoke"},
		{"GET", "/keygate/keys/" + rec.ID + "/usage"},
		{"GET", "/keygate/events"},
		{"GET", "/keygate/audit"},
		{"GET", "/keygate/keys"},
	}
	secret := key[len("kg_live_"):][:43]
	f.Fuzz(func(t *testing.T, route uint8, query, body, idempotencyKey string) {
		rt := routes[int(route)%len(routes)]
		u := &url.URL{Path: rt.path, RawQuery: query}
		q := u.Query()
		q.Set("store", h.backend.uri)
		u.RawQuery = q.Encode()
		r := httptest.NewRequest(rt.method, u.String(), strings.NewReader(body))
		if idempotencyKey != "" {
			r.Header.Set("Idempotency-Key", idempotencyKey)
		}
		w := httptest.NewRecorder()
		if err := (&Admin{}).serve(w, r); err != nil {
			t.Fatalf("%s %s %q: %v", rt.method, u, body, err)
		}
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("%s %s %q: %d %s", rt.method, u, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			var e struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s %s %q: %d %s", rt.method, u, body, w.Code, w.Body)
			}
			if strings.Contains(e.Error.Message, secret) {
				t.Fatalf("%s %s %q: the error quotes a key: %s", rt.method, u, body, w.Body)
			}
		}
	})
}

// backendOn starts the backend of a new SQLite store wrapped in st (inner
// is where st holds the store it wraps), released when the test ends.
func backendOn(t *testing.T, st store.Store, inner *store.Store) (string, *backend) {
	t.Helper()
	dir := t.TempDir()
	uri, err := storeURI("sqlite:" + filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	*inner = openSQLiteStore(t, filepath.Join(dir, "keys.db"))
	b, _ := startTestBackend(t, uri, st, filepath.Join(dir, "unflushed"))
	t.Cleanup(func() { releaseBackend(uri, zap.NewNop()) })
	return uri, b
}

// lateCommitStore commits a new key only once the caller has given up: a
// COMMIT that reached PostgreSQL, which then stopped answering until after
// the admin call's timeout. The caller is told the store did not answer.
type lateCommitStore struct {
	store.Store
	late atomic.Bool
}

func (s *lateCommitStore) CreateKey(ctx context.Context, rec *store.Record, ev store.Event) error {
	if !s.late.Load() {
		return s.Store.CreateKey(ctx, rec, ev)
	}
	<-ctx.Done()
	if err := s.Store.CreateKey(context.WithoutCancel(ctx), rec, ev); err != nil {
		return err
	}
	return ctx.Err()
}

func (s *lateCommitStore) RotateKey(ctx context.Context, id string, graceEnd time.Time, ev *store.Event, next func(*store.Record) (*store.Record, error)) (*store.Record, error) {
	if !s.late.Load() {
		return s.Store.RotateKey(ctx, id, graceEnd, ev, next)
	}
	<-ctx.Done()
	if _, err := s.Store.RotateKey(context.WithoutCancel(ctx), id, graceEnd, ev, next); err != nil {
		return nil, err
	}
	return nil, ctx.Err()
}

// A script whose issue or rotation was answered 503 (the store took the
// change, then stopped answering) sends it again under its Idempotency-Key
// once the store answers: it gets the key the first call made, and no
// second key is made nor the rotation refused as done already.
func TestAChangeCommittedAfterItsCallGaveUpIsAnsweredToItsRepeat(t *testing.T) {
	defer func(d time.Duration) { manageTimeout = d }(manageTimeout)
	manageTimeout = 200 * time.Millisecond
	st := &lateCommitStore{}
	uri, _ := backendOn(t, st, &st.Store)
	old, _ := issue(t, st, "mail.send")
	call := func(path, body, idem string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", path+"?store="+url.QueryEscape(uri), strings.NewReader(body))
		r.Header.Set("Idempotency-Key", idem)
		w := httptest.NewRecorder()
		(&Admin{}).serve(w, r)
		return w
	}
	for _, c := range []struct{ name, path, body string }{
		{"issue", "/keygate/keys", `{"name":"late","scopes":["mail.send"],"force":true}`},
		{"rotate", "/keygate/keys/" + old.ID + "/rotate", `{"grace":"1h"}`},
	} {
		st.late.Store(true)
		if w := call(c.path, c.body, "late-"+c.name); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s while the store hangs: %d %s, want 503", c.name, w.Code, w.Body)
		}
		st.late.Store(false)
		w := call(c.path, c.body, "late-"+c.name)
		var res struct {
			ID, Key string
		}
		json.Unmarshal(w.Body.Bytes(), &res)
		if w.Code != http.StatusCreated || w.Header().Get("Idempotent-Replayed") != "true" || res.Key == "" {
			t.Errorf("%s repeated: %d %v %s, want 201 with the key the first call made, replayed", c.name, w.Code, w.Header(), w.Body)
		}
	}
	all, err := st.ListKeys(context.Background(), store.ListFilter{All: true})
	if err != nil || len(all) != 3 {
		t.Errorf("%d keys (%v), want 3: the first, the one issued late, the late rotation's successor", len(all), err)
	}
}

// damagedStoreError is the error of opening a real SQLite store whose file
// was cut short: "database disk image is malformed".
func damagedStoreError(t *testing.T) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.db")
	st, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(context.Background(), "sqlite:"+path); err == nil {
		st.Close()
		t.Fatal("a store cut to its first two pages opened")
	}
	return err
}

// A store whose file is damaged is answered as the gateway answers it, 503
// store_unavailable with Retry-After, saying it is damaged; not 500.
func TestADamagedStoreIsAnsweredUnavailable(t *testing.T) {
	err := damagedStoreError(t)
	w := httptest.NewRecorder()
	writeAdminError(w, fmt.Errorf("keygate store: list keys: %w", err))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
		!strings.Contains(w.Body.String(), `"store_unavailable"`) || !strings.Contains(w.Body.String(), "damaged") {
		t.Errorf("a damaged store: %d %v %s, want 503 store_unavailable saying it is damaged", w.Code, w.Header(), w.Body)
	}
}

// TestAnAdminChangeNamesItsCallerAndWhereFrom: audit events name the admin
// API's caller by its client certificate (its common name, else its first
// alternative name) and the address it called from, or by that address
// alone without a certificate.
func TestAnAdminChangeNamesItsCallerAndWhereFrom(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/deployer")
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"no client certificate", nil, "admin-api 192.0.2.7:51234"},
		{"a common name", &x509.Certificate{Subject: pkix.Name{CommonName: "terraform"}}, "admin-api terraform from 192.0.2.7:51234"},
		{"a DNS name only", &x509.Certificate{DNSNames: []string{"ci.example.org"}}, "admin-api ci.example.org from 192.0.2.7:51234"},
		{"an email address only", &x509.Certificate{EmailAddresses: []string{"ops@example.org"}}, "admin-api ops@example.org from 192.0.2.7:51234"},
		{"a URI only", &x509.Certificate{URIs: []*url.URL{u}}, "admin-api spiffe://example.org/deployer from 192.0.2.7:51234"},
		{"no name at all", &x509.Certificate{}, "admin-api (a certificate naming no one) from 192.0.2.7:51234"},
		{"a line break in the name", &x509.Certificate{Subject: pkix.Name{CommonName: "a\nb"}}, "admin-api a?b from 192.0.2.7:51234"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/keygate/keys", nil)
			r.RemoteAddr = "192.0.2.7:51234"
			if c.cert != nil {
				r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.cert}}
			}
			if got := adminActor(r); got != c.want {
				t.Errorf("adminActor = %q, want %q", got, c.want)
			}
		})
	}
}
