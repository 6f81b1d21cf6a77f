package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testStoreConformance checks the Store contract. Every implementation runs
// it; it depends only on the interface. open returns a new, empty store that
// the test may close.
func testStoreConformance(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t0 := time.Date(2031, 3, 4, 5, 6, 7, 891011121, time.UTC)

	t.Run("a created key reads back field for field by id and by digest", func(t *testing.T) {
		s := open(t)
		want := fullRecord("key_full", t0)
		mustCreate(t, s, want)
		byID, err := s.Key(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		byDigest, err := s.KeyByDigest(ctx, want.Digest)
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string]*Record{"Key": byID, "KeyByDigest": byDigest} {
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
			}
		}
	})

	t.Run("times read back in UTC whatever zone they were written in", func(t *testing.T) {
		s := open(t)
		zone := time.FixedZone("UTC+5", 5*3600)
		rec := minimalRecord("key_zone", t0.In(zone))
		exp := t0.Add(time.Hour).In(zone)
		rec.ExpiresAt = &exp
		mustCreate(t, s, rec)
		got := mustKey(t, s, rec.ID)
		if got.CreatedAt.Location() != time.UTC || !got.CreatedAt.Equal(t0) {
			t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, t0)
		}
		if got.ExpiresAt.Location() != time.UTC || !got.ExpiresAt.Equal(exp) {
			t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, exp.UTC())
		}
	})

	t.Run("empty optional fields read back empty", func(t *testing.T) {
		s := open(t)
		rec := minimalRecord("key_min", t0)
		mustCreate(t, s, rec)
		got := mustKey(t, s, rec.ID)
		if len(got.Scopes) != 0 || len(got.AllowedIPs) != 0 || len(got.SenderDomains) != 0 ||
			got.Rate != nil || got.Quota != nil || got.ExpiresAt != nil || got.RevokedAt != nil ||
			got.LastUsedAt != nil || got.Disabled || got.AllowOnBehalfOf {
			t.Errorf("got %+v, want every optional field empty", got)
		}
	})

	t.Run("a zero created_at is filled in with the current time", func(t *testing.T) {
		s := open(t)
		rec := minimalRecord("key_now", time.Time{})
		before := time.Now()
		mustCreate(t, s, rec)
		got := mustKey(t, s, rec.ID)
		if got.CreatedAt.Before(before.Add(-time.Second)) || got.CreatedAt.After(time.Now()) {
			t.Errorf("CreatedAt = %v, want about %v", got.CreatedAt, before)
		}
	})

	t.Run("a second key with the same id or digest is refused", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_a", t0))
		sameID := minimalRecord("key_a", t0)
		sameID.Digest = fakeDigest("other")
		sameDigest := minimalRecord("key_b", t0)
		sameDigest.Digest = fakeDigest("key_a")
		for _, rec := range []*Record{sameID, sameDigest} {
			if err := s.CreateKey(ctx, rec, Event{Action: "issued"}); err == nil {
				t.Errorf("CreateKey(%s) succeeded, want an error", rec.ID)
			}
		}
	})

	t.Run("unknown ids and digests are ErrNotFound", func(t *testing.T) {
		s := open(t)
		calls := map[string]func() error{
			"Key": func() error { _, err := s.Key(ctx, "key_none"); return err },
			"KeyByDigest": func() error {
				_, err := s.KeyByDigest(ctx, fakeDigest("none"))
				return err
			},
			"UpdateKey": func() error {
				_, err := s.UpdateKey(ctx, "key_none", nil, func(*Record) error { return nil })
				return err
			},
			"RotateKey": func() error {
				_, err := rotate(s, "key_none", minimalRecord("key_next", t0), t0, Event{Action: "rotated"})
				return err
			},
			"Usage": func() error { _, err := s.Usage(ctx, "key_none", t0); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: err = %v, want ErrNotFound", name, err)
			}
		}
	})

	t.Run("errors name the key id", func(t *testing.T) {
		s := open(t)
		_, err := s.UpdateKey(ctx, "key_named", nil, func(*Record) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "key_named") {
			t.Errorf("err = %v, want it to name key_named", err)
		}
	})

	t.Run("issuing records an event with the key id and time filled in", func(t *testing.T) {
		s := open(t)
		before := time.Now().UTC()
		mustCreate(t, s, minimalRecord("key_ev", t0))
		evs := mustEvents(t, s, EventFilter{})
		if len(evs) != 1 || evs[0].KeyID != "key_ev" || evs[0].Action != "issued" || evs[0].Actor != "test" {
			t.Fatalf("events = %+v, want one issued event for key_ev", evs)
		}
		if evs[0].At.Before(before.Add(-time.Second)) || evs[0].At.Location() != time.UTC {
			t.Errorf("event At = %v, want about %v in UTC", evs[0].At, before)
		}
	})

	t.Run("list filters", func(t *testing.T) {
		s := open(t)
		now := t0.Add(10 * time.Hour)
		past, future := now.Add(-time.Minute), now.Add(time.Minute)
		for i, r := range []struct {
			id, owner string
			expires   *time.Time
			revoked   bool
		}{
			{"key_1", "alice", nil, false},
			{"key_2", "bob", &future, false},
			{"key_3", "alice", &past, false},
			{"key_4", "alice", nil, true},
			{"key_5", "bob", &now, false}, // expires at exactly now: expired
		} {
			rec := minimalRecord(r.id, t0.Add(time.Duration(i)*time.Hour))
			rec.Owner, rec.ExpiresAt = r.owner, r.expires
			if r.revoked {
				rec.RevokedAt = &t0
			}
			mustCreate(t, s, rec)
		}
		for _, tc := range []struct {
			name   string
			filter ListFilter
			want   []string
		}{
			{"live keys of everyone, oldest first", ListFilter{Now: now}, []string{"key_1", "key_2"}},
			{"all keys include revoked and expired", ListFilter{All: true, Now: now}, []string{"key_1", "key_2", "key_3", "key_4", "key_5"}},
			{"owner selects that owner's keys", ListFilter{Owner: "alice", Now: now}, []string{"key_1"}},
			{"owner and all", ListFilter{Owner: "alice", All: true}, []string{"key_1", "key_3", "key_4"}},
			{"expiry is judged at Now", ListFilter{Now: t0}, []string{"key_1", "key_2", "key_3", "key_5"}},
			{"unknown owner has none", ListFilter{Owner: "carol", All: true}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				recs, err := s.ListKeys(ctx, tc.filter)
				if err != nil {
					t.Fatal(err)
				}
				if got := ids(recs); !slices.Equal(got, tc.want) {
					t.Errorf("ListKeys(%+v) = %v, want %v", tc.filter, got, tc.want)
				}
			})
		}
	})

	t.Run("states, env, search, orders and pages", func(t *testing.T) {
		s := open(t)
		now := t0.Add(100 * time.Hour)
		at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
		for i, r := range []struct {
			id, name, owner, env string
			expires, used        *time.Time
			revoked, disabled    bool
		}{
			{"key_a", "CRM sync", "sales", "live", nil, at(-time.Hour), false, false},
			{"key_b", "crm backfill", "sales", "test", at(24 * time.Hour), at(-time.Minute), false, false},
			{"key_c", "Newsletter", "marketing", "live", at(30 * 24 * time.Hour), nil, false, false},
			{"key_d", "old_export", "marketing", "live", at(-time.Hour), at(-50 * time.Hour), false, true},
			{"key_e", "50%_off", "ops", "live", nil, nil, true, false},
			{"key_f", "paused", "ops", "test", at(24 * time.Hour), at(-2 * time.Hour), false, true},
			{"key_g", "Ärger", "Müller", "live", nil, nil, false, false},
		} {
			rec := minimalRecord(r.id, t0.Add(time.Duration(i)*time.Hour))
			rec.Name, rec.Owner, rec.Env, rec.ExpiresAt, rec.LastUsedAt, rec.Disabled = r.name, r.owner, r.env, r.expires, r.used, r.disabled
			rec.Hint = "kg_" + r.env + "_Hint" + r.id[len(r.id)-1:] + "xyz…"
			if r.revoked {
				rec.RevokedAt = &t0
			}
			mustCreate(t, s, rec)
		}
		soon := now.Add(48 * time.Hour)
		for _, tc := range []struct {
			name   string
			filter ListFilter
			want   []string
		}{
			{"revoked", ListFilter{State: StateRevoked}, []string{"key_e"}},
			{"expired, disabled or not", ListFilter{State: StateExpired, Now: now}, []string{"key_d"}},
			{"disabled and neither revoked nor expired", ListFilter{State: StateDisabled, Now: now}, []string{"key_f"}},
			{"usable", ListFilter{State: StateUsable, Now: now}, []string{"key_a", "key_b", "key_c", "key_g"}},
			{"expiring: usable and expiring by the bound", ListFilter{State: StateExpiring, Now: now, ExpiringBefore: soon}, []string{"key_b"}},
			{"state overrides All", ListFilter{State: StateRevoked, All: false}, []string{"key_e"}},
			{"env", ListFilter{All: true, Env: "test"}, []string{"key_b", "key_f"}},
			{"search ignores ASCII case in names", ListFilter{All: true, Search: "crm"}, []string{"key_a", "key_b"}},
			{"search matches owners and ids", ListFilter{All: true, Search: "MARKET"}, []string{"key_c", "key_d"}},
			{"search matches ids", ListFilter{All: true, Search: "key_g"}, []string{"key_g"}},
			{"search matches the hint a list shows", ListFilter{All: true, Search: "kg_live_Hintc"}, []string{"key_c"}},
			{"search takes % and _ literally", ListFilter{All: true, Search: "50%_"}, []string{"key_e"}},
			{"search finds non-ASCII as typed", ListFilter{All: true, Search: "Ärg"}, []string{"key_g"}},
			{"search ignores the case of non-ASCII letters", ListFilter{All: true, Search: "ärg"}, []string{"key_g"}},
			{"search ignores the case of non-ASCII letters in owners", ListFilter{All: true, Search: "MÜLLER"}, []string{"key_g"}},
			{"filters combine", ListFilter{State: StateUsable, Now: now, Env: "live", Owner: "sales"}, []string{"key_a"}},
			{"newest first", ListFilter{All: true, Order: OrderNewest}, []string{"key_g", "key_f", "key_e", "key_d", "key_c", "key_b", "key_a"}},
			{"last used first, never used last (newest first among them)", ListFilter{All: true, Order: OrderLastUsed},
				[]string{"key_b", "key_a", "key_f", "key_d", "key_g", "key_e", "key_c"}},
			{"by name ignoring case", ListFilter{All: true, Order: OrderName, Search: "crm"}, []string{"key_b", "key_a"}},
			{"soonest expiry first, never last", ListFilter{All: true, Order: OrderExpires},
				[]string{"key_d", "key_f", "key_b", "key_c", "key_g", "key_e", "key_a"}},
			{"a page", ListFilter{All: true, Order: OrderNewest, Limit: 2, Offset: 2}, []string{"key_e", "key_d"}},
			{"the last page is short", ListFilter{All: true, Order: OrderNewest, Limit: 5, Offset: 5}, []string{"key_b", "key_a"}},
			{"past the end is empty", ListFilter{All: true, Limit: 5, Offset: 10}, nil},
			{"after a key, oldest first", ListFilter{All: true, After: "key_b", Limit: 2}, []string{"key_c", "key_d"}},
			{"after a key the filter leaves out", ListFilter{State: StateUsable, Now: now, After: "key_d"}, []string{"key_g"}},
			{"after the last key is empty", ListFilter{All: true, After: "key_g"}, nil},
			{"after an unknown key is empty", ListFilter{All: true, After: "key_zz"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				recs, err := s.ListKeys(ctx, tc.filter)
				if err != nil {
					t.Fatal(err)
				}
				if got := ids(recs); !slices.Equal(got, tc.want) {
					t.Errorf("ListKeys(%+v) = %v, want %v", tc.filter, got, tc.want)
				}
				whole := tc.filter
				whole.Limit, whole.Offset, whole.Order, whole.After = 0, 0, "", ""
				all, err := s.ListKeys(ctx, whole)
				if err != nil {
					t.Fatal(err)
				}
				n, err := s.CountKeys(ctx, tc.filter)
				if err != nil || n != len(all) {
					t.Errorf("CountKeys(%+v) = %d, %v; want %d, whatever the order and page", tc.filter, n, err, len(all))
				}
			})
		}
		for _, bad := range []ListFilter{{State: "gone"}, {Env: "prod"}, {Order: "random"}, {After: "key_a", Order: OrderNewest}} {
			if _, err := s.ListKeys(ctx, bad); err == nil {
				t.Errorf("ListKeys(%+v) succeeded, want an error naming the value", bad)
			}
		}
	})

	t.Run("paging after a key walks every key once, keys created together included", func(t *testing.T) {
		s := open(t)
		t0 := time.Unix(1700000000, 0).UTC()
		var want []string
		for i := range 7 {
			// Three keys share each creation time: the id orders them.
			id := fmt.Sprintf("key_%c", 'g'-i)
			mustCreate(t, s, minimalRecord(id, t0.Add(time.Duration(i/3)*time.Second)))
		}
		all, err := s.ListKeys(ctx, ListFilter{All: true})
		if err != nil {
			t.Fatal(err)
		}
		want = ids(all)
		var got []string
		after := ""
		for range 10 {
			page, err := s.ListKeys(ctx, ListFilter{All: true, After: after, Limit: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, ids(page)...)
			after = page[len(page)-1].ID
		}
		if !slices.Equal(got, want) || len(want) != 7 {
			t.Errorf("pages of 2 walked %v, want %v", got, want)
		}
	})

	t.Run("update", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			ev         *Event
			fn         func(r *Record, ev *Event) error
			wantErr    bool
			wantEvents []string
			wantChange bool
		}{
			{"writes the change, a change row and the event",
				&Event{Action: "updated", Actor: "cli"},
				func(r *Record, _ *Event) error { r.Scopes = []string{"mail.read"}; r.Disabled = true; return nil },
				false, []string{"issued", "updated"}, true},
			{"lets fn choose the action",
				&Event{Actor: "cli"},
				func(r *Record, ev *Event) error { r.Disabled = true; ev.Action = "disabled"; return nil },
				false, []string{"issued", "disabled"}, true},
			{"with an empty action records no event but still a change row",
				&Event{Actor: "cli"},
				func(r *Record, _ *Event) error { r.Name = "renamed"; return nil },
				false, []string{"issued"}, true},
			{"accepts a nil event",
				nil,
				func(r *Record, _ *Event) error { r.Name = "renamed"; return nil },
				false, []string{"issued"}, true},
			{"changes nothing when fn fails",
				&Event{Action: "updated"},
				func(r *Record, _ *Event) error { r.Name = "lost"; return errors.New("refused") },
				true, []string{"issued"}, false},
			{"refuses to change the id",
				&Event{Action: "updated"},
				func(r *Record, _ *Event) error { r.ID = "key_other"; return nil },
				true, []string{"issued"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := open(t)
				orig := fullRecord("key_up", t0)
				mustCreate(t, s, orig)
				seq := mustLastChange(t, s)
				want := orig.Clone()
				_ = tc.fn(want, &Event{})
				got, err := s.UpdateKey(ctx, orig.ID, tc.ev, func(r *Record) error {
					ev := tc.ev
					if ev == nil {
						ev = &Event{}
					}
					return tc.fn(r, ev)
				})
				if (err != nil) != tc.wantErr {
					t.Fatalf("UpdateKey err = %v, want error %v", err, tc.wantErr)
				}
				stored := mustKey(t, s, orig.ID)
				if tc.wantErr {
					want = orig
				} else if !reflect.DeepEqual(got, want) {
					t.Errorf("returned %+v\nwant %+v", got, want)
				}
				if !reflect.DeepEqual(stored, want) {
					t.Errorf("stored %+v\nwant %+v", stored, want)
				}
				if got := actions(mustEvents(t, s, EventFilter{})); !slices.Equal(got, tc.wantEvents) {
					t.Errorf("events = %v, want %v", got, tc.wantEvents)
				}
				changes := mustChanges(t, s, seq)
				if tc.wantChange != (len(changes) == 1 && changes[0].Digest == orig.Digest) {
					t.Errorf("changes after update = %+v, want a change of the key's digest: %v", changes, tc.wantChange)
				}
			})
		}
	})

	t.Run("rotate", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			oldExpires *time.Time
			graceEnd   time.Time
			wantExpiry time.Time
		}{
			{"ends a key without expiry at the grace end", nil, t0.Add(time.Hour), t0.Add(time.Hour)},
			{"brings a later expiry forward to the grace end", ptr(t0.Add(48 * time.Hour)), t0.Add(time.Hour), t0.Add(time.Hour)},
			{"keeps an expiry earlier than the grace end", ptr(t0.Add(time.Minute)), t0.Add(time.Hour), t0.Add(time.Minute)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := open(t)
				old := fullRecord("key_old", t0)
				old.ExpiresAt = tc.oldExpires
				mustCreate(t, s, old)
				seq := mustLastChange(t, s)
				next := fullRecord("key_new", t0.Add(time.Second))
				next.Digest = fakeDigest("key_new")
				next.ExpiresAt = nil

				got, err := rotate(s, old.ID, next, tc.graceEnd, Event{Action: "rotated", Actor: "cli"})
				if err != nil {
					t.Fatal(err)
				}
				want := old.Clone()
				want.RotatedTo, want.ExpiresAt = next.ID, &tc.wantExpiry
				if stored := mustKey(t, s, old.ID); !reflect.DeepEqual(got, want) || !reflect.DeepEqual(stored, want) {
					t.Errorf("old key: returned %+v\nstored %+v\nwant %+v", got, stored, want)
				}
				wantNext := next.Clone()
				wantNext.RotatedFrom = old.ID
				if stored := mustKey(t, s, next.ID); !reflect.DeepEqual(stored, wantNext) {
					t.Errorf("new key: stored %+v\nwant %+v", stored, wantNext)
				}
				changed := digests(mustChanges(t, s, seq))
				if len(changed) != 2 || !slices.Contains(changed, old.Digest) || !slices.Contains(changed, next.Digest) {
					t.Errorf("changes = %x, want the old and the new digest", changed)
				}
				evs := mustEvents(t, s, EventFilter{Limit: 2})
				if len(evs) != 2 || evs[0].Action != "rotated" || evs[0].KeyID != old.ID ||
					evs[1].Action != "issued" || evs[1].KeyID != next.ID || evs[1].Detail != "by rotating "+old.ID || evs[1].Actor != "cli" {
					t.Errorf("last events = %+v, want rotated for %s, then issued for %s by rotating it", evs, old.ID, next.ID)
				}
			})
		}
	})

	t.Run("rotating into an existing digest changes nothing", func(t *testing.T) {
		s := open(t)
		old := minimalRecord("key_old", t0)
		mustCreate(t, s, old)
		seq := mustLastChange(t, s)
		next := minimalRecord("key_new", t0)
		next.Digest = old.Digest
		if _, err := rotate(s, old.ID, next, t0, Event{Action: "rotated"}); err == nil {
			t.Fatal("RotateKey succeeded, want an error")
		}
		if got := mustKey(t, s, old.ID); got.RotatedTo != "" || got.ExpiresAt != nil {
			t.Errorf("old key = %+v, want it untouched", got)
		}
		if c := mustChanges(t, s, seq); len(c) != 0 {
			t.Errorf("changes = %+v, want none", c)
		}
	})

	t.Run("an answer is kept with the key an issue made, until it expires", func(t *testing.T) {
		s := open(t)
		a := &Answer{ID: "idem_1", Request: "req_1", Data: "sealed", ExpiresAt: t0.Add(24 * time.Hour)}
		if err := s.CreateKey(ctx, minimalRecord("key_idem", t0), Event{At: t0, Action: "issued", Answer: a}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Answer(ctx, a.ID, t0.Add(time.Hour))
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("Answer = %+v, %v; want %+v", got, err, a)
		}
		if got, err := s.Answer(ctx, a.ID, a.ExpiresAt); !errors.Is(err, ErrNotFound) {
			t.Errorf("Answer once expired = %+v, %v; want ErrNotFound", got, err)
		}
		if got, err := s.Answer(ctx, "idem_other", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("Answer of an unknown id = %+v, %v; want ErrNotFound", got, err)
		}
	})

	t.Run("an issue under an id whose answer is kept makes nothing", func(t *testing.T) {
		s := open(t)
		a := &Answer{ID: "idem_1", Request: "req_1", Data: "first", ExpiresAt: t0.Add(24 * time.Hour)}
		mustCreateAnswered(t, s, minimalRecord("key_first", t0), a)
		seq := mustLastChange(t, s)
		second := &Answer{ID: "idem_1", Request: "req_1", Data: "second", ExpiresAt: t0.Add(25 * time.Hour)}
		err := s.CreateKey(ctx, minimalRecord("key_second", t0), Event{At: t0.Add(time.Minute), Action: "issued", Answer: second})
		if !errors.Is(err, ErrAnswered) {
			t.Fatalf("second CreateKey = %v, want ErrAnswered", err)
		}
		if _, err := s.Key(ctx, "key_second"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the second key was made (%v)", err)
		}
		if c := mustChanges(t, s, seq); len(c) != 0 {
			t.Errorf("changes = %+v, want none", c)
		}
		if got, err := s.Answer(ctx, a.ID, t0); err != nil || got.Data != "first" {
			t.Errorf("Answer = %+v, %v; want the first one", got, err)
		}
	})

	t.Run("a rotation keeps the answer its successor fills in, and one under a kept id changes nothing", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_a", t0))
		mustCreate(t, s, minimalRecord("key_b", t0))
		answer := func(data string) func(*Event) { // what keys.Rotate does: seal the answer once the successor is made
			return func(ev *Event) {
				ev.Answer = &Answer{ID: "idem_r", Request: "req_r", Data: data, ExpiresAt: t0.Add(24 * time.Hour)}
			}
		}
		rotateAnswered := func(id, next string, fill func(*Event)) error {
			ev := Event{At: t0, Action: "rotated"}
			_, err := s.RotateKey(ctx, id, t0.Add(time.Hour), &ev, func(*Record) (*Record, error) {
				fill(&ev)
				return minimalRecord(next, t0), nil
			})
			return err
		}
		if err := rotateAnswered("key_a", "key_a2", answer("a2")); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Answer(ctx, "idem_r", t0); err != nil || got.Data != "a2" {
			t.Fatalf("Answer = %+v, %v; want the rotation's", got, err)
		}
		seq := mustLastChange(t, s)
		if err := rotateAnswered("key_b", "key_b2", answer("b2")); !errors.Is(err, ErrAnswered) {
			t.Fatalf("second RotateKey = %v, want ErrAnswered", err)
		}
		if got := mustKey(t, s, "key_b"); got.RotatedTo != "" || got.ExpiresAt != nil {
			t.Errorf("key_b = %+v, want it untouched", got)
		}
		if _, err := s.Key(ctx, "key_b2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the second successor was made (%v)", err)
		}
		if c := mustChanges(t, s, seq); len(c) != 0 {
			t.Errorf("changes = %+v, want none", c)
		}
	})

	t.Run("expired answers give way to a new one and are pruned", func(t *testing.T) {
		s := open(t)
		mustCreateAnswered(t, s, minimalRecord("key_1", t0), &Answer{ID: "idem_1", Request: "r", Data: "d1", ExpiresAt: t0.Add(time.Hour)})
		mustCreateAnswered(t, s, minimalRecord("key_2", t0), &Answer{ID: "idem_2", Request: "r", Data: "d2", ExpiresAt: t0.Add(2 * time.Hour)})
		if n, err := s.PruneAnswers(ctx, t0.Add(time.Hour-time.Nanosecond)); err != nil || n != 0 {
			t.Errorf("PruneAnswers before any expired = %d, %v; want 0", n, err)
		}
		// Issued after idem_1 expired: it is replaced, not in the way.
		again := &Answer{ID: "idem_1", Request: "r", Data: "d1 again", ExpiresAt: t0.Add(25 * time.Hour)}
		if err := s.CreateKey(ctx, minimalRecord("key_3", t0), Event{At: t0.Add(time.Hour), Action: "issued", Answer: again}); err != nil {
			t.Fatalf("CreateKey under an expired answer's id: %v", err)
		}
		if got, err := s.Answer(ctx, "idem_1", t0.Add(time.Hour)); err != nil || got.Data != "d1 again" {
			t.Errorf("Answer = %+v, %v; want the new one", got, err)
		}
		if n, err := s.PruneAnswers(ctx, t0.Add(2*time.Hour)); err != nil || n != 1 {
			t.Errorf("PruneAnswers = %d, %v; want 1 (idem_2)", n, err)
		}
		if _, err := s.Answer(ctx, "idem_2", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("idem_2 after pruning: %v, want ErrNotFound", err)
		}
	})

	t.Run("of concurrent issues under one id, exactly one makes a key", func(t *testing.T) {
		s := open(t)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				a := &Answer{ID: "idem_race", Request: "r", Data: strconv.Itoa(i), ExpiresAt: t0.Add(24 * time.Hour)}
				errs[i] = s.CreateKey(ctx, minimalRecord("key_race_"+strconv.Itoa(i), t0), Event{At: t0, Action: "issued", Answer: a})
			})
		}
		wg.Wait()
		made := 0
		for i, err := range errs {
			switch {
			case err == nil:
				made++
				if got, err := s.Answer(ctx, "idem_race", t0); err != nil || got.Data != strconv.Itoa(i) {
					t.Errorf("Answer = %+v, %v; want the one of key_race_%d, the key made", got, err, i)
				}
			case !errors.Is(err, ErrAnswered):
				t.Errorf("issue %d: %v, want nil or ErrAnswered", i, err)
			}
		}
		if n, err := s.CountKeys(ctx, ListFilter{All: true}); made != 1 || err != nil || n != 1 {
			t.Errorf("%d issues succeeded and %d keys (%v) were made, want 1 and 1", made, n, err)
		}
	})

	t.Run("the change log is monotonic and names each changed digest", func(t *testing.T) {
		s := open(t)
		if seq := mustLastChange(t, s); seq != 0 {
			t.Fatalf("LastChange on an empty store = %d, want 0", seq)
		}
		var want []Digest
		for i := range 5 {
			rec := minimalRecord(fmt.Sprintf("key_%d", i), t0)
			mustCreate(t, s, rec)
			want = append(want, rec.Digest)
		}
		if _, err := s.UpdateKey(ctx, "key_1", nil, func(r *Record) error { r.RevokedAt = &t0; return nil }); err != nil {
			t.Fatal(err)
		}
		want = append(want, fakeDigest("key_1"))

		all := mustChanges(t, s, 0)
		if got := digests(all); !slices.Equal(got, want) {
			t.Fatalf("changes = %x, want %x", got, want)
		}
		for i := 1; i < len(all); i++ {
			if all[i].Seq <= all[i-1].Seq {
				t.Errorf("seq %d follows %d, want increasing", all[i].Seq, all[i-1].Seq)
			}
		}
		if last := mustLastChange(t, s); last != all[len(all)-1].Seq {
			t.Errorf("LastChange = %d, want %d", last, all[len(all)-1].Seq)
		}
		if tail := mustChanges(t, s, all[2].Seq); !reflect.DeepEqual(tail, all[3:]) {
			t.Errorf("Changes(%d) = %+v, want %+v", all[2].Seq, tail, all[3:])
		}
		if none := mustChanges(t, s, all[len(all)-1].Seq); len(none) != 0 {
			t.Errorf("Changes(last) = %+v, want none", none)
		}
	})

	t.Run("every key's digest is listed, revoked, expired and rotated ones too", func(t *testing.T) {
		s := open(t)
		lister, ok := s.(DigestLister)
		if !ok {
			t.Fatalf("%T does not list digests", s)
		}
		list := func() []Digest {
			var got []Digest
			if err := lister.EachDigest(ctx, func(d Digest) { got = append(got, d) }); err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
			return got
		}
		if got := list(); len(got) != 0 {
			t.Fatalf("an empty store lists %x", got)
		}
		var want []Digest
		for i := range 4 {
			rec := minimalRecord(fmt.Sprintf("key_%d", i), t0)
			if i == 2 {
				rec.ExpiresAt = ptr(t0.Add(-time.Hour))
			}
			mustCreate(t, s, rec)
			want = append(want, rec.Digest)
		}
		if _, err := s.UpdateKey(ctx, "key_1", nil, func(r *Record) error { r.RevokedAt = &t0; return nil }); err != nil {
			t.Fatal(err)
		}
		next := minimalRecord("key_next", t0)
		if _, err := rotate(s, "key_3", next, t0.Add(time.Hour), Event{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, next.Digest)
		slices.SortFunc(want, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
		if got := list(); !slices.Equal(got, want) {
			t.Errorf("EachDigest listed %x, want %x", got, want)
		}
	})

	t.Run("every key is walked, as ListKeys lists them all", func(t *testing.T) {
		s := open(t)
		walker, ok := s.(KeyWalker)
		if !ok {
			t.Fatalf("%T does not walk its keys", s)
		}
		for i := range 5 {
			rec := minimalRecord(fmt.Sprintf("key_%d", i), t0.Add(time.Duration(i)*time.Second))
			if i == 2 {
				rec.ExpiresAt = ptr(t0.Add(-time.Hour))
			}
			mustCreate(t, s, rec)
		}
		if _, err := s.UpdateKey(ctx, "key_1", nil, func(r *Record) error { r.RevokedAt = &t0; return nil }); err != nil {
			t.Fatal(err)
		}
		var walked []*Record
		if err := walker.EachKey(ctx, func(r *Record) error { walked = append(walked, r); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(walked, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
		listed, err := s.ListKeys(ctx, ListFilter{All: true})
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(listed, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
		if !reflect.DeepEqual(walked, listed) {
			t.Errorf("EachKey walked %+v, want what ListKeys(All) lists: %+v", walked, listed)
		}
		stop := errors.New("enough")
		n := 0
		if err := walker.EachKey(ctx, func(*Record) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("EachKey after fn's error: %v, %d calls; want fn's error after one", err, n)
		}
	})

	t.Run("usage from concurrent writers adds up", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_u", t0))
		const writers, calls = 2, 200
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range calls {
					err := s.AddUsage(ctx, []UsageDelta{{
						KeyID: "key_u", Hour: t0,
						Counts:     map[string]int64{"allowed": 1, "recipients": 2, "denied.rate_limited": 1},
						IPs:        map[string]int64{fmt.Sprintf("192.0.2.%d", w): 1},
						LastUsedAt: t0.Add(time.Duration(i) * time.Millisecond),
						LastIP:     fmt.Sprintf("192.0.2.%d", w),
					}})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		rep, err := s.Usage(ctx, "key_u", t0)
		if err != nil {
			t.Fatal(err)
		}
		const n = writers * calls
		if rep.Allowed != n || rep.Recipients != 2*n || rep.Denied["rate_limited"] != n {
			t.Errorf("allowed %d, recipients %d, denied %v; want %d, %d, %d", rep.Allowed, rep.Recipients, rep.Denied, n, 2*n, n)
		}
		if len(rep.TopIPs) != writers || rep.TopIPs[0].Requests != calls || rep.TopIPs[1].Requests != calls {
			t.Errorf("top IPs = %+v, want %d requests from each of %d", rep.TopIPs, calls, writers)
		}
		if r, err := s.Recipients(ctx, "key_u", t0); err != nil || r != 2*n {
			t.Errorf("Recipients = %d, %v; want %d", r, err, 2*n)
		}
		if want := t0.Add((calls - 1) * time.Millisecond); rep.LastUsedAt == nil || !rep.LastUsedAt.Equal(want) {
			t.Errorf("LastUsedAt = %v, want %v", rep.LastUsedAt, want)
		}
	})

	t.Run("batches over many keys from concurrent writers never deadlock and add up", func(t *testing.T) {
		s := open(t)
		const keys, writers, rounds = 40, 4, 15
		for k := range keys {
			mustCreate(t, s, minimalRecord(fmt.Sprintf("key_b%02d", k), t0))
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		repeats := map[string]int64{} // the key whose first delta a batch repeats
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for i := range rounds {
					// Every key in two hours, in a different order each
					// batch, and one key-hour twice (merged before writing).
					var deltas []UsageDelta
					for _, k := range rng.Perm(keys) {
						for h := range 2 {
							deltas = append(deltas, UsageDelta{KeyID: fmt.Sprintf("key_b%02d", k), Hour: t0.Add(time.Duration(h) * time.Hour),
								Counts: map[string]int64{"allowed": 1}, IPs: map[string]int64{"192.0.2.1": 1},
								LastUsedAt: t0.Add(time.Duration(i) * time.Second), LastIP: "192.0.2.1"})
						}
					}
					deltas = append(deltas, deltas[0])
					if err := s.AddUsage(ctx, deltas); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					repeats[deltas[0].KeyID]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for k := range keys {
			id := fmt.Sprintf("key_b%02d", k)
			rep, err := s.Usage(ctx, id, t0)
			if err != nil {
				t.Fatal(err)
			}
			want := 2*writers*rounds + repeats[id]
			if rep.Allowed != want || len(rep.TopIPs) != 1 || rep.TopIPs[0].Requests != want {
				t.Errorf("%s: allowed %d, IPs %+v; want %d", id, rep.Allowed, rep.TopIPs, want)
			}
			if w := t0.Add((rounds - 1) * time.Second); rep.LastUsedAt == nil || !rep.LastUsedAt.Equal(w) {
				t.Errorf("%s: last used %v, want %v", id, rep.LastUsedAt, w)
			}
		}
	})

	t.Run("usage report", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_r", t0))
		mustCreate(t, s, minimalRecord("key_other", t0))
		h := t0.Truncate(time.Hour)
		err := s.AddUsage(ctx, []UsageDelta{
			{KeyID: "key_r", Hour: h, IPs: map[string]int64{"198.51.100.1": 1},
				Counts: map[string]int64{"allowed": 1, "recipients": 5}, LastUsedAt: h.Add(time.Minute), LastIP: "198.51.100.1"},
			{KeyID: "key_r", Hour: h.Add(2 * time.Hour), IPs: map[string]int64{"198.51.100.1": 2, "198.51.100.2": 7, "2001:db8::1": 3},
				Counts:     map[string]int64{"allowed": 2, "denied.quota_exceeded": 1, "status.2xx": 2, "status.5xx": 0},
				LastUsedAt: h.Add(2*time.Hour + time.Minute), LastIP: "198.51.100.2"},
			{KeyID: "key_r", Hour: h.Add(3 * time.Hour), Counts: map[string]int64{"status.4xx": 1, "recipients": 1}},
			// Older than what is stored: must not move last_used_at back.
			{KeyID: "key_r", Hour: h, Counts: map[string]int64{"allowed": 1}, LastUsedAt: h.Add(2 * time.Minute), LastIP: "203.0.113.9"},
			{KeyID: "key_other", Hour: h.Add(2 * time.Hour), Counts: map[string]int64{"allowed": 100}, IPs: map[string]int64{"198.51.100.2": 100}},
		})
		if err != nil {
			t.Fatal(err)
		}
		lastUsed := h.Add(2*time.Hour + time.Minute)
		for _, tc := range []struct {
			name  string
			since time.Time
			want  UsageReport
		}{
			{"sums every hour since the start", h.Add(-time.Hour), UsageReport{
				KeyID: "key_r", Since: h.Add(-time.Hour), Allowed: 4, Recipients: 6,
				Denied: map[string]int64{"quota_exceeded": 1}, Statuses: map[string]int64{"2xx": 2, "4xx": 1},
				LastUsedAt: &lastUsed, LastIP: "198.51.100.2",
				Hours: []HourUsage{
					{Hour: h, Allowed: 2, Recipients: 5},
					{Hour: h.Add(2 * time.Hour), Allowed: 2, Denied: map[string]int64{"quota_exceeded": 1}},
					{Hour: h.Add(3 * time.Hour), Recipients: 1},
				},
				TopIPs: []IPUsage{
					{IP: "198.51.100.2", Requests: 7, First: h.Add(2 * time.Hour)},
					{IP: "198.51.100.1", Requests: 3, First: h},
					{IP: "2001:db8::1", Requests: 3, First: h.Add(2 * time.Hour)},
				},
			}},
			{"since inside an hour counts that whole hour; first seen looks further back", h.Add(2*time.Hour + 30*time.Minute), UsageReport{
				KeyID: "key_r", Since: h.Add(2 * time.Hour), Allowed: 2, Recipients: 1,
				Denied: map[string]int64{"quota_exceeded": 1}, Statuses: map[string]int64{"2xx": 2, "4xx": 1},
				LastUsedAt: &lastUsed, LastIP: "198.51.100.2",
				Hours: []HourUsage{
					{Hour: h.Add(2 * time.Hour), Allowed: 2, Denied: map[string]int64{"quota_exceeded": 1}},
					{Hour: h.Add(3 * time.Hour), Recipients: 1},
				},
				TopIPs: []IPUsage{
					{IP: "198.51.100.2", Requests: 7, First: h.Add(2 * time.Hour)},
					{IP: "198.51.100.1", Requests: 2, First: h},
					{IP: "2001:db8::1", Requests: 3, First: h.Add(2 * time.Hour)},
				},
			}},
			{"nothing since a later time still has empty maps and lists", h.Add(5 * time.Hour), UsageReport{
				KeyID: "key_r", Since: h.Add(5 * time.Hour),
				Denied: map[string]int64{}, Statuses: map[string]int64{},
				LastUsedAt: &lastUsed, LastIP: "198.51.100.2",
				Hours: []HourUsage{}, TopIPs: []IPUsage{},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.Usage(ctx, "key_r", tc.since)
				if err != nil {
					t.Fatal(err)
				}
				// Ties in TopIPs have no defined order.
				sortIPs := func(u []IPUsage) {
					slices.SortFunc(u, func(a, b IPUsage) int {
						if a.Requests != b.Requests {
							return int(b.Requests - a.Requests)
						}
						return strings.Compare(a.IP, b.IP)
					})
				}
				sortIPs(got.TopIPs)
				sortIPs(tc.want.TopIPs)
				if !reflect.DeepEqual(*got, tc.want) {
					t.Errorf("Usage:\n got %+v\nwant %+v", *got, tc.want)
				}
			})
		}
		if n, err := s.Recipients(ctx, "key_r", h.Add(time.Hour)); err != nil || n != 1 {
			t.Errorf("Recipients since the second hour = %d, %v; want 1", n, err)
		}
		if n, err := s.Recipients(ctx, "key_none", h); err != nil || n != 0 {
			t.Errorf("Recipients of an unknown key = %d, %v; want 0", n, err)
		}
	})

	t.Run("an unused key reports zero counts and empty maps", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_idle", t0))
		rep, err := s.Usage(ctx, "key_idle", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.LastUsedAt != nil || rep.Allowed != 0 || rep.Denied == nil || rep.Statuses == nil {
			t.Errorf("report = %+v, want zero counts, non-nil maps and no last use", rep)
		}
	})

	t.Run("usage moves last_used_at on the key record", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_lu", t0))
		at := t0.Add(time.Minute)
		if err := s.AddUsage(ctx, []UsageDelta{{KeyID: "key_lu", Hour: t0, Counts: map[string]int64{"allowed": 1}, LastUsedAt: at, LastIP: "192.0.2.7"}}); err != nil {
			t.Fatal(err)
		}
		if got := mustKey(t, s, "key_lu"); got.LastUsedAt == nil || !got.LastUsedAt.Equal(at) || got.LastIP != "192.0.2.7" {
			t.Errorf("record last used %v from %q, want %v from 192.0.2.7", got.LastUsedAt, got.LastIP, at)
		}
	})

	t.Run("a key's hour holds at most MaxHourIPs client IPs, however many flushes bring new ones", func(t *testing.T) {
		// A leaked key used from a botnet: each flush brings up to
		// usage.MaxIPs new addresses, hour after hour of flushes.
		s := open(t)
		mustCreate(t, s, minimalRecord("key_botnet", t0))
		h := t0.Truncate(time.Hour)
		batch := func(from, n int, each int64) []UsageDelta {
			ips := map[string]int64{}
			for i := from; i < from+n; i++ {
				ips[fmt.Sprintf("10.%d.%d.1", i/256, i%256)] = each
			}
			return []UsageDelta{{KeyID: "key_botnet", Hour: h, IPs: ips}}
		}
		for i := range 3 { // 1,800 distinct addresses in three flushes
			if err := s.AddUsage(ctx, batch(i*600, 600, 1)); err != nil {
				t.Fatal(err)
			}
		}
		// Addresses already counted go on counting once the hour is full.
		if err := s.AddUsage(ctx, batch(0, 2, 50)); err != nil {
			t.Fatal(err)
		}
		// The next hour starts again.
		if err := s.AddUsage(ctx, []UsageDelta{{KeyID: "key_botnet", Hour: h.Add(time.Hour), IPs: map[string]int64{"192.0.2.1": 1}}}); err != nil {
			t.Fatal(err)
		}
		db := engineDB(t, s)
		count := func(hour time.Time) (n int) {
			if err := db.db.QueryRowContext(ctx, db.d.rebind("SELECT COUNT(*) FROM usage_ips WHERE key_id = $1 AND hour = $2"),
				"key_botnet", hour.UnixNano()).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if got := count(h); got != MaxHourIPs {
			t.Errorf("%d client IP rows in the key's hour after 1,800 addresses, want %d", got, MaxHourIPs)
		}
		if got := count(h.Add(time.Hour)); got != 1 {
			t.Errorf("%d client IP rows in the next hour, want 1", got)
		}
		rep, err := s.Usage(ctx, "key_botnet", h.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.TopIPs) < 2 || rep.TopIPs[0].Requests != 51 || rep.TopIPs[1].Requests != 51 {
			t.Errorf("top IPs %+v, want the two first addresses with 51 requests each", rep.TopIPs[:min(2, len(rep.TopIPs))])
		}
	})

	t.Run("pruning deletes the hours before the cutoff, in batches, and keeps the rest", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, minimalRecord("key_old", t0))
		mustCreate(t, s, minimalRecord("key_new", t0))
		h := t0.Truncate(time.Hour)
		var deltas []UsageDelta
		for i := range 4 {
			deltas = append(deltas, UsageDelta{KeyID: "key_old", Hour: h.Add(time.Duration(i-10) * time.Hour),
				Counts: map[string]int64{"allowed": 1, "recipients": 2}, IPs: map[string]int64{"192.0.2.1": 1}})
		}
		deltas = append(deltas, UsageDelta{KeyID: "key_new", Hour: h, LastUsedAt: t0, LastIP: "192.0.2.9",
			Counts: map[string]int64{"allowed": 3, "recipients": 4}, IPs: map[string]int64{"192.0.2.9": 3}})
		if err := s.AddUsage(ctx, deltas); err != nil {
			t.Fatal(err)
		}
		// Batches of 3 make the 8 metric rows and 4 IP rows take several
		// transactions each.
		db := engineDB(t, s)
		n, err := db.pruneUsage(ctx, h.Add(-time.Hour), 3)
		if err != nil {
			t.Fatal(err)
		}
		if n != 12 {
			t.Errorf("pruned %d rows, want 12", n)
		}
		old, err := s.Usage(ctx, "key_old", h.Add(-100*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if old.Allowed != 0 || old.Recipients != 0 || len(old.Hours) != 0 || len(old.TopIPs) != 0 {
			t.Errorf("key_old after pruning: %+v", old)
		}
		kept, err := s.Usage(ctx, "key_new", h.Add(-100*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if kept.Allowed != 3 || kept.Recipients != 4 || len(kept.TopIPs) != 1 || kept.LastUsedAt == nil {
			t.Errorf("key_new after pruning: %+v", kept)
		}
		if got, err := s.Recipients(ctx, "key_new", h); err != nil || got != 4 {
			t.Errorf("Recipients = %d, %v; want 4", got, err)
		}
		if n, err := s.PruneUsage(ctx, h.Add(-time.Hour)); err != nil || n != 0 {
			t.Errorf("second prune: %d rows, %v; want 0", n, err)
		}
	})

	t.Run("events", func(t *testing.T) {
		s := open(t)
		for i := range 3 {
			id := fmt.Sprintf("key_%d", i)
			mustCreate(t, s, minimalRecord(id, t0))
			if _, err := s.UpdateKey(ctx, id, &Event{Action: "revoked", Reason: "left"}, func(r *Record) error { r.RevokedAt = &t0; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			name   string
			filter EventFilter
			want   []string
		}{
			{"every event, oldest first", EventFilter{}, []string{"key_0 issued", "key_0 revoked", "key_1 issued", "key_1 revoked", "key_2 issued", "key_2 revoked"}},
			{"limit keeps the newest, oldest first", EventFilter{Limit: 3}, []string{"key_1 revoked", "key_2 issued", "key_2 revoked"}},
			{"key id selects that key's events", EventFilter{KeyID: "key_1"}, []string{"key_1 issued", "key_1 revoked"}},
			{"key id and limit", EventFilter{KeyID: "key_1", Limit: 1}, []string{"key_1 revoked"}},
			{"a limit above the count returns all", EventFilter{KeyID: "key_2", Limit: 10}, []string{"key_2 issued", "key_2 revoked"}},
			{"unknown key has none", EventFilter{KeyID: "key_none"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				evs := mustEvents(t, s, tc.filter)
				var got []string
				for _, ev := range evs {
					got = append(got, ev.KeyID+" "+ev.Action)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("Events(%+v) = %v, want %v", tc.filter, got, tc.want)
				}
				for i := 1; i < len(evs); i++ {
					if evs[i].Seq <= evs[i-1].Seq {
						t.Errorf("event seq %d follows %d", evs[i].Seq, evs[i-1].Seq)
					}
				}
			})
		}
		for action, want := range map[string][]string{"revoked": {"key_0", "key_1", "key_2"}, "issued": nil} {
			got, err := KeysLastEventIs(ctx, s, action)
			if slices.Sort(got); err != nil || !slices.Equal(got, want) {
				t.Errorf("KeysLastEventIs(%s) = %v, %v; want %v", action, got, err, want)
			}
		}
		all := mustEvents(t, s, EventFilter{})
		at := func(i int) *int64 { return &all[i].Seq }
		zero := int64(0)
		for _, tc := range []struct {
			name   string
			filter EventFilter
			want   []string
		}{
			{"after zero is every event", EventFilter{After: &zero}, []string{"key_0 issued", "key_0 revoked", "key_1 issued", "key_1 revoked", "key_2 issued", "key_2 revoked"}},
			{"after a seq, the events that follow it", EventFilter{After: at(3)}, []string{"key_2 issued", "key_2 revoked"}},
			{"after with a limit keeps the oldest", EventFilter{After: at(0), Limit: 2}, []string{"key_0 revoked", "key_1 issued"}},
			{"after and a key id", EventFilter{KeyID: "key_1", After: at(2)}, []string{"key_1 revoked"}},
			{"after the last, none", EventFilter{After: at(len(all) - 1)}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var got []string
				for _, ev := range mustEvents(t, s, tc.filter) {
					got = append(got, ev.KeyID+" "+ev.Action)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("Events(after %d, %+v) = %v, want %v", *tc.filter.After, tc.filter, got, tc.want)
				}
			})
		}
	})

	// A reader that pages forward from the last seq it saw while keys change
	// at once (an audit shipper) sees every event once: seq order is commit
	// order, or it would move past an event that commits late. Events
	// appended on their own (a restore's of the keys it leaves out) too.
	t.Run("events read forward while keys change miss none", func(t *testing.T) {
		s := open(t)
		const writers, changes = 4, 25
		for w := range writers {
			mustCreate(t, s, minimalRecord(fmt.Sprintf("key_w%d", w), t0))
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range changes {
				evs := []*Event{{Action: "removed", KeyID: "key_gone1", Detail: strconv.Itoa(i)}, {Action: "removed", KeyID: "key_gone2", Detail: strconv.Itoa(i)}}
				if err := AppendEvents(ctx, s, evs); err != nil {
					t.Error(err)
					return
				}
				if evs[0].Seq == 0 || evs[1].Seq != evs[0].Seq+1 {
					t.Errorf("appended events numbered %d, %d: want them numbered, one after the other", evs[0].Seq, evs[1].Seq)
				}
			}
		}()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("key_w%d", w)
				for i := range changes {
					if _, err := s.UpdateKey(ctx, id, &Event{Action: "updated", Detail: strconv.Itoa(i)}, func(r *Record) error { r.Name = strconv.Itoa(i); return nil }); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		seen := map[int64]int{}
		var after int64
		for finished := false; !finished; {
			select {
			case <-done:
				finished = true // one more read after the last write
			default:
			}
			for _, ev := range mustEvents(t, s, EventFilter{After: &after, Limit: 7}) {
				seen[ev.Seq]++
				after = ev.Seq
			}
		}
		for _, ev := range mustEvents(t, s, EventFilter{After: &after}) {
			seen[ev.Seq]++
		}
		all := mustEvents(t, s, EventFilter{})
		if want := writers*(1+changes) + 2*changes; len(all) != want {
			t.Fatalf("%d events, want %d", len(all), want)
		}
		for _, ev := range all {
			if seen[ev.Seq] != 1 {
				t.Errorf("event %d (%s %s) read %d times going forward, want once", ev.Seq, ev.KeyID, ev.Action, seen[ev.Seq])
			}
		}
	})

	t.Run("route scopes are recorded once per line and their last sighting only moves forward", func(t *testing.T) {
		s := open(t)
		day := 24 * time.Hour
		lines := []RouteScope{
			{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send", SeenAt: t0},
			{Scope: "templates.read", Path: "/v3/templates*", SeenAt: t0.Add(-3 * day)},
		}
		for _, batch := range [][]RouteScope{lines, lines[:1]} {
			if err := s.RecordRouteScopes(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		// An older sighting (another node with a stale config) does not
		// move the line back.
		if err := s.RecordRouteScopes(ctx, []RouteScope{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send", SeenAt: t0.Add(-day)}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.RouteScopes(ctx, t0.Add(-7*day))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, lines) {
			t.Errorf("RouteScopes = %+v, want %+v", got, lines)
		}
		recent, err := s.RouteScopes(ctx, t0.Add(-day))
		if err != nil {
			t.Fatal(err)
		}
		if len(recent) != 1 || recent[0].Scope != "mail.send" {
			t.Errorf("lines seen in the last day = %+v, want only mail.send", recent)
		}
	})

	t.Run("owners are listed once each, sorted, up to a limit", func(t *testing.T) {
		s := open(t)
		for i, owner := range []string{"sales", "", "ops", "sales", "web", "ops"} {
			rec := minimalRecord(fmt.Sprintf("key_owner%d", i), t0)
			rec.Owner = owner
			mustCreate(t, s, rec)
		}
		if got, err := s.Owners(ctx, 10); err != nil || !reflect.DeepEqual(got, []string{"ops", "sales", "web"}) {
			t.Errorf("Owners(10) = %q, %v", got, err)
		}
		if got, err := s.Owners(ctx, 2); err != nil || !reflect.DeepEqual(got, []string{"ops", "sales"}) {
			t.Errorf("Owners(2) = %q, %v", got, err)
		}
	})

	t.Run("route prefixes are recorded once and their last sighting only moves forward", func(t *testing.T) {
		s := open(t)
		day := 24 * time.Hour
		if err := s.RecordRoutePrefixes(ctx, []string{"kg", "acme"}, t0.Add(-3*day)); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordRoutePrefixes(ctx, []string{"acme"}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordRoutePrefixes(ctx, []string{"acme"}, t0.Add(-5*day)); err != nil { // a stale node
			t.Fatal(err)
		}
		for _, c := range []struct {
			since time.Time
			want  []string
		}{{t0.Add(-7 * day), []string{"acme", "kg"}}, {t0.Add(-day), []string{"acme"}}, {t0.Add(day), []string{}}} {
			if got, err := s.RoutePrefixes(ctx, c.since); err != nil || !reflect.DeepEqual(got, c.want) {
				t.Errorf("RoutePrefixes(%v) = %q, %v; want %q", c.since, got, err, c.want)
			}
		}
	})

	t.Run("the console secret is the first one stored", func(t *testing.T) {
		s := open(t)
		first, err := s.ConsoleSecret(ctx, "form", "aaa")
		if err != nil || first != "aaa" {
			t.Fatalf("first ConsoleSecret = %q, %v; want aaa", first, err)
		}
		for _, candidate := range []string{"bbb", "aaa"} {
			if got, err := s.ConsoleSecret(ctx, "form", candidate); err != nil || got != "aaa" {
				t.Errorf("ConsoleSecret(%q) = %q, %v; want the stored aaa", candidate, got, err)
			}
		}
		if got, err := s.ConsoleSecret(ctx, "other", "ccc"); err != nil || got != "ccc" {
			t.Errorf("another name = %q, %v; want its own ccc", got, err)
		}
	})

	t.Run("a flash is taken once, and not after its time", func(t *testing.T) {
		s := open(t)
		if err := s.PutFlash(ctx, "f1", "sealed-1", t0.Add(time.Minute), t0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutFlash(ctx, "f2", "sealed-2", t0.Add(time.Minute), t0); err != nil {
			t.Fatal(err)
		}
		if got, err := s.TakeFlash(ctx, "f1", t0.Add(time.Second)); err != nil || got != "sealed-1" {
			t.Fatalf("TakeFlash = %q, %v; want sealed-1", got, err)
		}
		if _, err := s.TakeFlash(ctx, "f1", t0.Add(time.Second)); !errors.Is(err, ErrNotFound) {
			t.Errorf("second TakeFlash: %v, want ErrNotFound", err)
		}
		if _, err := s.TakeFlash(ctx, "f2", t0.Add(time.Minute)); !errors.Is(err, ErrNotFound) {
			t.Errorf("TakeFlash at its expiry: %v, want ErrNotFound", err)
		}
		// Putting prunes what is expired: f2 is gone even for a taker
		// whose clock is behind.
		if err := s.PutFlash(ctx, "f3", "sealed-3", t0.Add(3*time.Minute), t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TakeFlash(ctx, "f2", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("an expired flash after a put: %v, want ErrNotFound (pruned)", err)
		}
		if _, err := s.TakeFlash(ctx, "nope", t0); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown flash: %v, want ErrNotFound", err)
		}
	})

	t.Run("of two takers of one flash, one gets it", func(t *testing.T) {
		s := open(t)
		if err := s.PutFlash(ctx, "race", "sealed", t0.Add(time.Minute), t0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := 0
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data, err := s.TakeFlash(ctx, "race", t0)
				switch {
				case err == nil && data == "sealed":
					mu.Lock()
					got++
					mu.Unlock()
				case !errors.Is(err, ErrNotFound):
					t.Errorf("TakeFlash: %v", err)
				}
			}()
		}
		wg.Wait()
		if got != 1 {
			t.Errorf("%d takers got the flash, want 1", got)
		}
	})

	t.Run("activity sums allowed and denied per key and hour since a time", func(t *testing.T) {
		s := open(t)
		h0 := t0.Truncate(time.Hour)
		for _, id := range []string{"key_a", "key_b", "key_quiet"} {
			mustCreate(t, s, minimalRecord(id, t0))
		}
		deltas := []UsageDelta{
			{KeyID: "key_a", Hour: h0.Add(-2 * time.Hour), Counts: map[string]int64{"allowed": 1}},
			{KeyID: "key_a", Hour: h0, Counts: map[string]int64{"allowed": 5, "denied.rate_limited": 2, "recipients": 40, "status.2xx": 5}},
			{KeyID: "key_a", Hour: h0.Add(time.Hour), Counts: map[string]int64{"denied.revoked_key": 1}},
			{KeyID: "key_b", Hour: h0, Counts: map[string]int64{"allowed": 7}},
		}
		if err := s.AddUsage(ctx, deltas); err != nil {
			t.Fatal(err)
		}
		got, err := s.Activity(ctx, []string{"key_a", "key_b", "key_quiet", "key_unknown"}, t0)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]HourUsage{
			"key_a": {
				{Hour: h0, Allowed: 5, Denied: map[string]int64{"rate_limited": 2}},
				{Hour: h0.Add(time.Hour), Denied: map[string]int64{"revoked_key": 1}},
			},
			"key_b": {{Hour: h0, Allowed: 7}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Activity = %+v, want %+v", got, want)
		}
		many := make([]string, 1200)
		for i := range many {
			many[i] = fmt.Sprintf("key_%04d", i)
		}
		many[1100] = "key_b"
		if got, err := s.Activity(ctx, many, t0); err != nil || len(got["key_b"]) != 1 {
			t.Errorf("Activity over more ids than one batch: %+v, %v", got, err)
		}
	})

	t.Run("events never contain a digest", func(t *testing.T) {
		s := open(t)
		rec := fullRecord("key_d", t0)
		mustCreate(t, s, rec)
		next := minimalRecord("key_d2", t0)
		if _, err := rotate(s, rec.ID, next, t0, Event{Action: "rotated"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateKey(ctx, next.ID, &Event{Action: "revoked"}, func(r *Record) error { r.RevokedAt = &t0; return nil }); err != nil {
			t.Fatal(err)
		}
		for _, ev := range mustEvents(t, s, EventFilter{}) {
			text := fmt.Sprintf("%+v", ev)
			for _, d := range []Digest{rec.Digest, next.Digest} {
				for _, enc := range []string{hex.EncodeToString(d[:]), base64.StdEncoding.EncodeToString(d[:]), base64.RawURLEncoding.EncodeToString(d[:])} {
					if strings.Contains(strings.ToLower(text), strings.ToLower(enc)) {
						t.Errorf("event %s contains a digest", text)
					}
				}
				if bytes.Contains([]byte(text), d[:]) {
					t.Errorf("event %s contains a raw digest", text)
				}
			}
		}
	})
}

// fakeDigest stands for the digest of a key; the store never sees a key.
func fakeDigest(name string) Digest {
	return sha256.Sum256([]byte("conformance " + name))
}

// fullRecord sets every field, so a round trip checks every column.
func fullRecord(id string, created time.Time) *Record {
	exp, rev, used := created.Add(720*time.Hour), created.Add(time.Hour), created.Add(time.Minute)
	return &Record{
		ID: id, Digest: fakeDigest(id), Hint: "kg_live_Ab12Cd34…", Name: "billing " + id,
		Owner: "alice@example.com", Env: "live", Scopes: []string{"mail.send", "templates.*"},
		Rate: &Rate{N: 100, Per: time.Minute}, Burst: 20,
		AllowedIPs:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.7/32")},
		SenderDomains: []string{"example.com", "*.mail.example.com"},
		Quota:         &Quota{N: 50000, Per: Month}, MaxRecipients: 50, AllowOnBehalfOf: true,
		CreatedAt: created, ExpiresAt: &exp, RevokedAt: &rev, RevokeReason: "leaked in CI log",
		Disabled: true, LastUsedAt: &used, LastIP: "192.0.2.7",
		RotatedFrom: "key_before", RotatedTo: "key_after",
	}
}

func minimalRecord(id string, created time.Time) *Record {
	return &Record{ID: id, Digest: fakeDigest(id), Name: id, Env: "test", Scopes: []string{}, CreatedAt: created}
}

func ptr[T any](v T) *T { return &v }

func mustCreate(t testing.TB, s Store, rec *Record) {
	t.Helper()
	if err := s.CreateKey(context.Background(), rec, Event{Action: "issued", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
}

func mustKey(t *testing.T, s Store, id string) *Record {
	t.Helper()
	rec, err := s.Key(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func mustEvents(t *testing.T, s Store, f EventFilter) []Event {
	t.Helper()
	evs, err := s.Events(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func mustLastChange(t *testing.T, s Store) int64 {
	t.Helper()
	seq, err := s.LastChange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func mustChanges(t *testing.T, s Store, after int64) []Change {
	t.Helper()
	c, err := s.Changes(context.Background(), after)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ids(recs []*Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func actions(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Action)
	}
	return out
}

func digests(changes []Change) []Digest {
	var out []Digest
	for _, c := range changes {
		out = append(out, c.Digest)
	}
	return out
}

func mustCreateAnswered(t *testing.T, s Store, rec *Record, a *Answer) {
	t.Helper()
	if err := s.CreateKey(context.Background(), rec, Event{At: rec.CreatedAt, Action: "issued", Answer: a}); err != nil {
		t.Fatal(err)
	}
}

// rotate is RotateKey with a successor made beforehand.
func rotate(s Store, id string, next *Record, graceEnd time.Time, ev Event) (*Record, error) {
	return s.RotateKey(context.Background(), id, graceEnd, &ev, func(*Record) (*Record, error) { return next, nil })
}

// engineDB is the SQL engine under a store the conformance suite opened, for
// a test that reads its tables directly.
func engineDB(t *testing.T, s Store) *DB {
	t.Helper()
	switch s := s.(type) {
	case *DB:
		return s
	case *Postgres:
		return s.DB
	case *sqliteFile:
		return s.db
	}
	t.Fatalf("%T is neither engine", s)
	return nil
}
