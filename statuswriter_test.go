package keygate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// readFromRecorder is a ResponseWriter with its own ReadFrom, as net/http's
// (which uses sendfile for files).
type readFromRecorder struct {
	*httptest.ResponseRecorder
	readFrom int
}

func (w *readFromRecorder) ReadFrom(r io.Reader) (int64, error) {
	w.readFrom++
	return io.Copy(w.ResponseRecorder, r)
}

func TestStatusWriterKeepsWhatTheNextHandlerUses(t *testing.T) {
	under := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	sw := new(request).statusWriter(under)
	var w http.ResponseWriter = sw
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		t.Fatal("the status writer hides io.ReaderFrom")
	}
	if _, ok := w.(http.Pusher); !ok {
		t.Error("the status writer hides http.Pusher")
	}
	if u, ok := w.(interface{ Unwrap() http.ResponseWriter }); !ok || u.Unwrap() != http.ResponseWriter(under) {
		t.Error("the status writer does not unwrap to the writer it wraps")
	}
	w.WriteHeader(http.StatusAccepted)
	if _, err := rf.ReadFrom(strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	if under.readFrom != 1 || under.Body.String() != "{}" || sw.status != http.StatusAccepted {
		t.Errorf("ReadFrom reached the writer's own %d times, body %q, status %d", under.readFrom, under.Body, sw.status)
	}
}
