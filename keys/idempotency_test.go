package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

func once(key string, request string) *Idempotency {
	return &Idempotency{Key: key, Request: []byte(request)}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func countKeys(t *testing.T, f *fixture) int {
	t.Helper()
	n, err := f.st.CountKeys(ctx, store.ListFilter{All: true})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAnIssueWithAnIdempotencyKey(t *testing.T) {
	t.Run("repeated, it makes one key and answers the first answer again", func(t *testing.T) {
		f := newFixture(t)
		first, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "POST /keys {crm}"))
		if err != nil {
			t.Fatal(err)
		}
		f.t = f.t.Add(time.Hour)
		again, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "POST /keys {crm}"))
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || !again.Replayed {
			t.Errorf("Replayed = %v, then %v; want false, then true", first.Replayed, again.Replayed)
		}
		if a, b := mustJSON(t, first), mustJSON(t, again); a != b || again.Key == "" {
			t.Errorf("answers differ:\n first %s\n again %s", a, b)
		}
		if n := countKeys(t, f); n != 1 {
			t.Errorf("%d keys, want 1", n)
		}
	})

	t.Run("with another request, it is refused and makes nothing", func(t *testing.T) {
		f := newFixture(t)
		if _, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "POST /keys {crm}")); err != nil {
			t.Fatal(err)
		}
		_, err := f.IssueOnce(ctx, spec("billing", "*"), "test", once("k1", "POST /keys {billing}"))
		if !isInvalid(err) || !errors.Is(err, ErrIdempotencyKeyReused) || !strings.Contains(err.Error(), "Idempotency-Key") {
			t.Errorf("err = %v, want an InvalidError matching ErrIdempotencyKeyReused, naming the header", err)
		}
		if n := countKeys(t, f); n != 1 {
			t.Errorf("%d keys, want 1", n)
		}
	})

	t.Run("from another caller, it is another request", func(t *testing.T) {
		f := newFixture(t)
		a := &Idempotency{Key: "k1", Caller: "ci", Request: []byte("r")}
		b := &Idempotency{Key: "k1", Caller: "terraform", Request: []byte("r")}
		ra, err := f.IssueOnce(ctx, spec("crm", "*"), "test", a)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := f.IssueOnce(ctx, spec("crm", "*"), "test", b)
		if err != nil || rb.Replayed || rb.Key == ra.Key {
			t.Errorf("the other caller's issue = %+v, %v; want a key of its own", rb, err)
		}
	})

	t.Run("after a day, it makes a new key", func(t *testing.T) {
		f := newFixture(t)
		first, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
		if err != nil {
			t.Fatal(err)
		}
		f.t = f.t.Add(AnswerTTL)
		later, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
		if err != nil || later.Replayed || later.Key == first.Key {
			t.Errorf("a day later = %+v, %v; want a new key", later, err)
		}
	})

	t.Run("refused when not 1 to 255 visible ASCII characters", func(t *testing.T) {
		f := newFixture(t)
		for _, k := range []string{"", strings.Repeat("a", 256), "a b", "tab\there", "clé", "nl\n"} {
			_, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once(k, "r"))
			if !isInvalid(err) || !strings.Contains(err.Error(), "Idempotency-Key") {
				t.Errorf("key %q: err = %v, want an InvalidError naming Idempotency-Key", k, err)
			}
		}
		if n := countKeys(t, f); n != 0 {
			t.Errorf("%d keys, want none", n)
		}
		if _, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once(strings.Repeat("~", 255), "r")); err != nil {
			t.Errorf("255 visible characters: %v", err)
		}
	})

	t.Run("repeated while the first is under way, it is a conflict", func(t *testing.T) {
		f := newFixture(t)
		st := &blockingStore{Store: f.st, entered: make(chan struct{}), release: make(chan struct{})}
		svc := New(st, Options{})
		done := make(chan error)
		go func() {
			_, err := svc.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
			done <- err
		}()
		<-st.entered
		repeat := make(chan error, 1)
		go func() {
			_, err := svc.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
			repeat <- err
		}()
		select {
		case err := <-repeat:
			if !isConflict(err) {
				t.Errorf("the repeat under way: err = %v, want a ConflictError", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("the repeat waited for the first, want a ConflictError at once")
		}
		close(st.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := countKeys(t, f); n != 1 {
			t.Errorf("%d keys, want 1", n)
		}
	})

	t.Run("answered by another gateway after the look, it makes nothing and answers that", func(t *testing.T) {
		f := newFixture(t)
		first, err := f.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
		if err != nil {
			t.Fatal(err)
		}
		// The other gateway looked before the first committed.
		late := New(&blindStore{Store: f.st}, Options{Now: func() time.Time { return f.t }})
		again, err := late.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
		if err != nil || !again.Replayed || again.Key != first.Key {
			t.Errorf("late repeat = %+v, %v; want the first answer, replayed", again, err)
		}
		if n := countKeys(t, f); n != 1 {
			t.Errorf("%d keys, want 1", n)
		}
	})
}

func TestARotationWithAnIdempotencyKey(t *testing.T) {
	f := newFixture(t)
	old := f.issue(t, spec("crm", "*"))
	first, err := f.RotateOnce(ctx, old.ID, time.Hour, "", "test", once("r1", "rotate "+old.ID))
	if err != nil {
		t.Fatal(err)
	}
	ends := mustKey(t, f, old.ID).ExpiresAt
	f.t = f.t.Add(30 * time.Minute)
	again, err := f.RotateOnce(ctx, old.ID, time.Hour, "", "test", once("r1", "rotate "+old.ID))
	if err != nil {
		t.Fatalf("the repeated rotation: %v", err)
	}
	if !again.Replayed || mustJSON(t, again) != mustJSON(t, first) || again.Key != first.Key {
		t.Errorf("the repeat answered %s, want the first answer %s again", mustJSON(t, again), mustJSON(t, first))
	}
	if now := mustKey(t, f, old.ID).ExpiresAt; !now.Equal(*ends) {
		t.Errorf("the old key now ends at %v, want %v as the rotation left it", now, ends)
	}
	if n := countKeys(t, f); n != 2 {
		t.Errorf("%d keys, want 2", n)
	}
	// Without the key, a second rotation is still refused.
	if _, err := f.Rotate(ctx, old.ID, time.Hour, "", "test"); !isConflict(err) {
		t.Errorf("a rotation without the key = %v, want a conflict", err)
	}
}

func TestAnIdempotentAnswerHoldsNoKeyInTheClear(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := New(st, Options{})
	issued, err := svc.IssueOnce(ctx, spec("crm", "*"), "test", once("k1", "r"))
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := svc.RotateOnce(ctx, issued.ID, time.Hour, "", "test", once("k2", "r2"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "keys.db*"))
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{issued.Key, rotated.Key} {
			if bytes.Contains(b, []byte(key)) || bytes.Contains(b, []byte(key[len(key)-20:])) {
				t.Errorf("%s holds a key (or its end)", filepath.Base(path))
			}
		}
	}
}

func mustKey(t *testing.T, f *fixture, id string) *store.Record {
	t.Helper()
	rec, err := f.st.Key(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// blockingStore holds CreateKey until release, as a store that hangs.
type blockingStore struct {
	store.Store
	entered, release chan struct{}
	once             sync.Once
}

func (s *blockingStore) CreateKey(ctx context.Context, rec *store.Record, ev store.Event) error {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return s.Store.CreateKey(ctx, rec, ev)
}

// blindStore finds no answer the first time it is asked, as a gateway that
// looked just before another committed one.
type blindStore struct {
	store.Store
	looked bool
}

func (s *blindStore) Answer(ctx context.Context, id string, now time.Time) (*store.Answer, error) {
	if !s.looked {
		s.looked = true
		return nil, store.ErrNotFound
	}
	return s.Store.Answer(ctx, id, now)
}
