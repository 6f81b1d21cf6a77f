package keygate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/caddy-keygate/internal/benchbody"
)

// sendTo serves one send request with body through h, handing it to next.
func sendTo(t *testing.T, h *Handler, key string, body benchbody.Body, next caddyhttp.Handler) int {
	t.Helper()
	r := httptest.NewRequest("POST", body.Path, bytes.NewReader(body.Data))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", body.ContentType)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w.Code
}

// The transport that sends a body upstream may still read it, and close it,
// after reverse_proxy has returned: the body's pooled buffer must not be
// handed to the next request before then.
func TestSendBodyBufferIsNotReusedWhileTheUpstreamMayReadIt(t *testing.T) {
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	first, second := benchbody.Get("sendgrid-2k"), benchbody.SendGrid(12)
	if len(first.Data) > 4<<10 || len(second.Data) > 4<<10 {
		t.Fatal("both bodies must fall in the same pool size class")
	}

	var late io.ReadCloser
	keep := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		late = r.Body // read and closed after the handler returned, as a transport may
		w.WriteHeader(http.StatusAccepted)
		return nil
	})
	if code := sendTo(t, h, key, first, keep); code != http.StatusAccepted {
		t.Fatalf("first send: %d", code)
	}
	for range 20 {
		if code := sendTo(t, h, key, second, okNextReading); code != http.StatusAccepted {
			t.Fatalf("second send: %d", code)
		}
	}
	got, err := io.ReadAll(late)
	late.Close()
	if err != nil || !bytes.Equal(got, first.Data) {
		t.Fatalf("the first body read after later requests: %d bytes, %v; want its own %d bytes unchanged", len(got), err, len(first.Data))
	}
}

// okNextReading reads and closes the body, as reverse_proxy's transport does.
var okNextReading = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	w.WriteHeader(http.StatusAccepted)
	return nil
})

// okNextDraining reads the body to its end without closing it.
var okNextDraining = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusAccepted)
	return nil
})

// Once read to the end or closed, a body's buffer is reused: inspecting a
// send allocates nothing in proportion to the body.
func TestSendBodyBufferIsReused(t *testing.T) {
	for name, next := range map[string]caddyhttp.Handler{"read and closed": okNextReading, "read to the end": okNextDraining} {
		t.Run(name, func(t *testing.T) { testBodyReuse(t, next) })
	}
}

func testBodyReuse(t *testing.T, next caddyhttp.Handler) {
	if raceDetector {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	h, st := testHandler(t, &Handler{MailAPI: "sendgrid", Scopes: []ScopeRule{{Scope: "mail.send", Path: "/v3/mail/send"}}})
	_, key := issue(t, st, "mail.send")
	body := benchbody.Get("sendgrid-200k")
	r := httptest.NewRequest("POST", body.Path, nil)
	rd := bytes.NewReader(body.Data)
	w := &benchWriter{h: http.Header{}}
	serve := func() {
		rd.Reset(body.Data)
		r.Body = io.NopCloser(rd)
		r.ContentLength = int64(len(body.Data))
		r.Header = http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {body.ContentType}}
		q := r.WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := h.ServeHTTP(w, q, next); err != nil || w.status != http.StatusAccepted {
			t.Fatalf("send: %d %v", w.status, err)
		}
	}
	serve()
	var before, after runtimeMem
	before.read()
	const n = 50
	for range n {
		serve()
	}
	after.read()
	if per := (after.bytes - before.bytes) / n; per > uint64(len(body.Data))/4 {
		t.Errorf("%d bytes allocated per %d-byte send, want the body's buffer reused", per, len(body.Data))
	}
}

// runtimeMem reads the total bytes allocated so far.
type runtimeMem struct{ bytes uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.bytes = s.TotalAlloc
}
