package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// The engines a copy goes between; PostgreSQL fails in CI when it is
// missing, as the conformance suite does.
var copyEngines = map[string]func(t *testing.T) Store{
	"sqlite": func(t *testing.T) Store {
		return openFollowing(t, filepath.Join(t.TempDir(), "keys.db"))
	},
	"postgres": func(t *testing.T) Store {
		return openTestPostgres(t, testPostgresURI(t))
	},
}

func TestCopy(t *testing.T) {
	for _, pair := range [][2]string{{"sqlite", "sqlite"}, {"sqlite", "postgres"}, {"postgres", "sqlite"}} {
		t.Run(pair[0]+" to "+pair[1], func(t *testing.T) {
			from, to := copyEngines[pair[0]](t), copyEngines[pair[1]](t)
			testCopyKeepsEverything(t, from, to)
		})
	}
}

// fillForCopy gives a store what a copy must carry: keys in every state (a
// full record, a revoked one, a rotation in its grace), audit events, usage
// counters from several addresses, and routes' scopes and prefixes.
func fillForCopy(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	created := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Microsecond)
	mustCreate(t, s, fullRecord("key_full", created))
	mustCreate(t, s, minimalRecord("key_plain", created.Add(time.Second)))
	old := minimalRecord("key_old", created.Add(2*time.Second))
	old.Quota = &Quota{N: 100, Per: Day}
	mustCreate(t, s, old)
	next := minimalRecord("key_new", time.Time{})
	next.Quota = old.Quota
	if _, err := rotate(s, "key_old", next, time.Now().Add(24*time.Hour), Event{Action: "rotated", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(ctx, "key_plain", &Event{Action: "revoked", Reason: "leaked"}, func(r *Record) error {
		at := time.Now().UTC()
		r.RevokedAt, r.RevokeReason = &at, "leaked"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	if err := s.AddUsage(ctx, []UsageDelta{
		{KeyID: "key_new", Hour: hour, Counts: map[string]int64{"allowed": 7, "recipients": 40, "status.2xx": 7},
			IPs: map[string]int64{"192.0.2.1": 4, "192.0.2.2": 2, "2001:db8::1": 1}, LastUsedAt: hour.Add(time.Minute), LastIP: "192.0.2.1"},
		{KeyID: "key_new", Hour: hour.Add(-time.Hour), Counts: map[string]int64{"allowed": 1, "denied.quota_exceeded": 3, "recipients": 2},
			IPs: map[string]int64{"192.0.2.1": 4}},
		{KeyID: "key_old", Hour: hour.Add(-30 * time.Hour), Counts: map[string]int64{"allowed": 5}, IPs: map[string]int64{"198.51.100.9": 5}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRouteScopes(ctx, []RouteScope{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send", SeenAt: hour}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRoutePrefixes(ctx, []string{"kg", "acme"}, hour); err != nil {
		t.Fatal(err)
	}
}

func testCopyKeepsEverything(t *testing.T, from, to Store) {
	ctx := context.Background()
	fillForCopy(t, from)
	rep, err := Copy(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents := mustEvents(t, from, EventFilter{})
	want := CopyReport{Keys: 4, Events: len(wantEvents), Usage: 7, UsageIPs: 5, RouteScopes: 1, RoutePrefixes: 2,
		LastEvent: wantEvents[len(wantEvents)-1].Seq}
	if rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}

	all := ListFilter{All: true}
	fromKeys, err := from.ListKeys(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	toKeys, err := to.ListKeys(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromKeys, toKeys) {
		t.Errorf("keys differ:\nfrom %+v\nto   %+v", fromKeys, toKeys)
	}
	for _, rec := range fromKeys {
		got, err := to.KeyByDigest(ctx, rec.Digest)
		if err != nil || got.ID != rec.ID {
			t.Errorf("key %s by digest in the copy: %v, %v", rec.ID, got, err)
		}
		for _, since := range []time.Time{{}, time.Now().Add(-time.Hour)} {
			a, err := from.Usage(ctx, rec.ID, since)
			if err != nil {
				t.Fatal(err)
			}
			b, err := to.Usage(ctx, rec.ID, since)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("usage of %s since %v:\nfrom %+v\nto   %+v", rec.ID, since, a, b)
			}
		}
	}
	// What a quota reads.
	day := time.Now().UTC().Truncate(24 * time.Hour)
	a, _ := from.Recipients(ctx, "key_new", day)
	if b, err := to.Recipients(ctx, "key_new", day); err != nil || b != a || b < 40 {
		t.Errorf("recipients of key_new today: %d in the copy (%v), %d in the source", b, err, a)
	}
	if a, b := mustEvents(t, to, EventFilter{}), wantEvents; !reflect.DeepEqual(a, b) {
		t.Errorf("events differ:\nfrom %+v\nto   %+v", b, a)
	}
	if a, err := to.RouteScopes(ctx, time.Time{}); err != nil || len(a) != 1 || a[0].Scope != "mail.send" {
		t.Errorf("route scopes in the copy: %+v, %v", a, err)
	}
	if a, err := to.RoutePrefixes(ctx, time.Time{}); err != nil || !slices.Equal(a, []string{"acme", "kg"}) {
		t.Errorf("route prefixes in the copy: %v, %v", a, err)
	}

	// A reader of the events goes on where it was: the next event is
	// numbered after the last one copied.
	if _, err := to.UpdateKey(ctx, "key_full", &Event{Action: "updated"}, func(r *Record) error {
		r.Name = "renamed"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after := rep.LastEvent
	if evs := mustEvents(t, to, EventFilter{After: &after}); len(evs) != 1 || evs[0].Seq <= rep.LastEvent || evs[0].Action != "updated" {
		t.Errorf("events after %d in the copy: %+v", after, evs)
	}
	// Each key copied is a change, so a gateway already on the target
	// learns of it.
	var changed []Digest
	for _, c := range mustChanges(t, to, 0) {
		changed = append(changed, c.Digest)
	}
	for _, rec := range fromKeys {
		if !slices.Contains(changed, rec.Digest) {
			t.Errorf("key %s is not in the copy's change log", rec.ID)
		}
	}
}

func TestCopyRefusesATargetWithKeys(t *testing.T) {
	ctx := context.Background()
	from, to := copyEngines["sqlite"](t), copyEngines["sqlite"](t)
	fillForCopy(t, from)
	mustCreate(t, to, minimalRecord("key_there", time.Now()))
	_, err := Copy(ctx, from, to)
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("copy into a store with a key: %v, want ErrNotEmpty", err)
	}
	if want := "holds keys already: 1 key "; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if n, _ := to.CountKeys(ctx, ListFilter{All: true}); n != 1 {
		t.Errorf("the target holds %d keys after a refused copy, want its 1", n)
	}
}

// A copy that fails part way leaves nothing in the target: here the target
// holds a usage row (of no key) that the copy's own would collide with.
func TestCopyThatFailsLeavesTheTargetEmpty(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			from, to := copyEngines["sqlite"](t), copyEngines[engine](t)
			fillForCopy(t, from)
			hour := time.Now().UTC().Truncate(time.Hour)
			if err := to.AddUsage(ctx, []UsageDelta{{KeyID: "key_new", Hour: hour, Counts: map[string]int64{"allowed": 1}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := Copy(ctx, from, to); err == nil {
				t.Fatal("the copy succeeded over a colliding row")
			}
			if n, err := to.CountKeys(ctx, ListFilter{All: true}); err != nil || n != 0 {
				t.Errorf("the target holds %d keys after a failed copy (%v), want none", n, err)
			}
			if evs := mustEvents(t, to, EventFilter{}); len(evs) != 0 {
				t.Errorf("the target holds %d events after a failed copy, want none", len(evs))
			}
			if seq := mustLastChange(t, to); seq != 0 {
				t.Errorf("the target's change log is at %d after a failed copy, want 0", seq)
			}
		})
	}
}

func TestCopyRefusesOneStoreIntoItself(t *testing.T) {
	s := copyEngines["sqlite"](t)
	if _, err := Copy(context.Background(), s, s); !errors.Is(err, ErrSameStore) {
		t.Fatalf("a store copied into itself: %v, want ErrSameStore", err)
	}
}

// One SQLite file under two names (a symbolic link, as a data directory
// reached by two paths) is one store: refused at once, not after the busy
// timeout as a store that did not answer (the copy's write waited for its
// own read's lock), which `caddy keys` would call unavailable (exit 5).
func TestCopyRefusesOneSQLiteFileUnderTwoNames(t *testing.T) {
	dir := t.TempDir()
	from := openFollowing(t, filepath.Join(dir, "keys.db"))
	mustCreate(t, from, minimalRecord("key_one", time.Now()))
	if err := os.Symlink(filepath.Join(dir, "keys.db"), filepath.Join(dir, "link.db")); err != nil {
		t.Fatal(err)
	}
	to := openFollowing(t, filepath.Join(dir, "link.db"))
	start := time.Now()
	if _, err := Copy(context.Background(), from, to); !errors.Is(err, ErrSameStore) {
		t.Fatalf("a file copied into itself through a link: %v, want ErrSameStore", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refused after %v, want at once", d)
	}
}

// TestCopiedTablesNameEveryColumn: a column a later migration adds to a
// table Copy copies (or to keys) must be copied too, or a move would drop
// it without a word. Each engine's own catalogue is read after its
// migrations.
func TestCopiedTablesNameEveryColumn(t *testing.T) {
	tables := map[string]string{"keys": keyColumns}
	for _, c := range copiedTables {
		tables[c.table] = c.cols
	}
	for engine, open := range copyEngines {
		t.Run(engine, func(t *testing.T) {
			s := open(t)
			err := onDB(s, func(db *DB) error {
				for table, cols := range tables {
					q := "SELECT name FROM pragma_table_info('" + table + "') ORDER BY name"
					if db.d == postgresDialect {
						q = "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '" + table + "' ORDER BY column_name"
					}
					rows, err := db.db.Query(q)
					if err != nil {
						return err
					}
					var have []string
					for rows.Next() {
						var name string
						if err := rows.Scan(&name); err != nil {
							return err
						}
						have = append(have, name)
					}
					rows.Close()
					copied := strings.Split(cols, ", ")
					slices.Sort(copied)
					if !slices.Equal(have, copied) {
						t.Errorf("%s: the schema has columns %v, Copy copies %v", table, have, copied)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCopyNamesEveryTable: a table a later migration adds is copied, or
// named here as one a copy leaves behind on purpose; else a move would drop
// what it holds without a word (TestCopiedTablesNameEveryColumn holds the
// columns of the tables copied).
func TestCopyNamesEveryTable(t *testing.T) {
	known := map[string]bool{"keys": true}
	for _, c := range copiedTables {
		known[c.table] = true
	}
	// The target keeps its own: its change log (each copied key is one
	// change in it), the console's secret and flashes, the schema version,
	// and the answers kept a day for Idempotency-Key repeats (a move is
	// made with the gateways stopped, not in the middle of a script's
	// retries).
	for _, table := range []string{"changes", "console_secrets", "console_flashes", "schema_migrations", "sqlite_sequence", "idempotent_answers"} {
		known[table] = true
	}
	for engine, open := range copyEngines {
		t.Run(engine, func(t *testing.T) {
			s := open(t)
			err := onDB(s, func(db *DB) error {
				q := "SELECT name FROM sqlite_master WHERE type = 'table'"
				if db.d == postgresDialect {
					q = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
				}
				rows, err := db.db.Query(q)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var name string
					if err := rows.Scan(&name); err != nil {
						return err
					}
					if !known[name] {
						t.Errorf("table %s is neither copied by Copy nor named as one it leaves behind", name)
					}
				}
				return rows.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A copy whose target does not read a key back as the source holds it is
// refused and leaves the target without any of it, whichever of the check's
// batches of keys that key is in: one changed on its way in (a trigger
// here), or found no more by its digest.
func TestCopyChecksEveryKeyItCopied(t *testing.T) {
	defer func(n int) { checkBatch = n }(checkBatch)
	checkBatch = 3 // fillForCopy's 4 keys: 2 batches
	triggers := map[string]func(id, set string) string{
		"sqlite": func(id, set string) string {
			return `CREATE TRIGGER alter_copy AFTER INSERT ON keys WHEN NEW.id = '` + id + `'
				BEGIN UPDATE keys SET ` + set + ` WHERE id = NEW.id; END`
		},
		"postgres": func(id, set string) string {
			return `CREATE FUNCTION alter_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
					UPDATE keys SET ` + set + ` WHERE id = NEW.id; RETURN NULL; END $$;
				CREATE TRIGGER alter_copy AFTER INSERT ON keys FOR EACH ROW WHEN (NEW.id = '` + id + `')
				EXECUTE FUNCTION alter_copy()`
		},
	}
	for _, engine := range []string{"sqlite", "postgres"} {
		for _, c := range []struct {
			id, set, want string
		}{
			{"key_full", "name = 'altered'", "key key_full reads back otherwise than it was"},
			{"key_new", "name = 'altered'", "key key_new reads back otherwise than it was"},
			{"key_plain", map[string]string{"sqlite": "digest = randomblob(32)", "postgres": "digest = sha256(digest)"}[engine],
				"key key_plain by its digest: key not found"},
		} {
			t.Run(engine+" "+c.id+" "+c.set, func(t *testing.T) {
				ctx := context.Background()
				from, to := copyEngines["sqlite"](t), copyEngines[engine](t)
				fillForCopy(t, from)
				if err := onDB(to, func(db *DB) error {
					_, err := db.db.ExecContext(ctx, triggers[engine](c.id, c.set))
					return err
				}); err != nil {
					t.Fatal(err)
				}
				_, err := Copy(ctx, from, to)
				if err == nil || !strings.Contains(err.Error(), "checking the copy: "+c.want) {
					t.Fatalf("copy: %v, want it refused: %s", err, c.want)
				}
				if n, err := to.CountKeys(ctx, ListFilter{All: true}); err != nil || n != 0 {
					t.Errorf("the target holds %d keys after a refused copy (%v), want none", n, err)
				}
			})
		}
	}
}

// oddText is text a COPY could get wrong were it written in COPY's text
// format, or a statement built by hand: its delimiters and escapes (tab,
// newline, carriage return, backslash, \N, a lone period line), quotes,
// and characters beyond ASCII.
const oddText = "tab\there\nnew line\r\\N back\\slash \\. '\"quoted\"', café 日本語 🚀\n.\n"

// fillWithOddValues gives s keys and events whose every text column holds
// oddText, digests with the bytes of COPY's delimiters and escapes, NULLs
// beside values, times before 1970 and in nanoseconds from a zone east of
// UTC, and one event far larger than a COPY's 64 KB message; then usage
// rows beyond one COPY's worth at the default size.
func fillWithOddValues(t *testing.T, s Store, usageRows int) {
	t.Helper()
	ctx := context.Background()
	zone := time.FixedZone("UTC+5:45", 5*3600+45*60)
	created := time.Date(1969, 7, 20, 20, 17, 40, 123456789, zone)
	full := fullRecord("key_odd\tid", created)
	full.Digest = Digest{0: 0, 1: '\t', 2: '\n', 3: '\\', 4: 'N', 5: 0xff, 6: '\r', 7: ',', 31: 0}
	full.Name, full.Owner, full.RevokeReason, full.Hint = oddText, "ödön\\owner\t", oddText, "kg_live_\\N…"
	far := time.Date(2261, 12, 31, 23, 59, 59, 999999999, zone)
	full.ExpiresAt = &far
	mustCreate(t, s, full)
	plain := minimalRecord("key_nulls", time.Date(2026, 12, 2, 4, 0, 0, 1, zone))
	plain.Digest = Digest{} // all zero bytes
	plain.Name = ""         // empty text, not NULL
	mustCreate(t, s, plain)
	if _, err := s.UpdateKey(ctx, "key_nulls", &Event{Action: "updated", Actor: oddText, Reason: oddText, Detail: strings.Repeat(oddText, 10000)},
		func(r *Record) error { r.Owner = "\\"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRouteScopes(ctx, []RouteScope{{Scope: "mail.send", Method: "", Path: "/a\\b\t/*", SeenAt: created}}); err != nil {
		t.Fatal(err)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	var batch []UsageDelta
	for i := range usageRows {
		batch = append(batch, UsageDelta{KeyID: "key_nulls", Hour: hour.Add(-time.Duration(i) * time.Hour),
			Counts: map[string]int64{"allowed": int64(i) + 1}, IPs: map[string]int64{"2001:db8::" + strconv.Itoa(i%7): 1}})
		if len(batch) == 1000 {
			if err := s.AddUsage(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.AddUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
}

// TestCopyWritesEveryValueAsItWas: what PostgreSQL takes through COPY (and
// either engine through INSERTs) reads back as the source holds it, every
// row of every table copied, whether a table is one COPY or many.
func TestCopyWritesEveryValueAsItWas(t *testing.T) {
	pairs := [][2]string{{"sqlite", "postgres"}, {"postgres", "postgres"}, {"postgres", "sqlite"}, {"sqlite", "sqlite"}}
	for _, c := range []struct {
		name      string
		limit     int // values a COPY at most
		usageRows int
	}{
		// The usage tables streamed in one COPY each, over many of its
		// 64 KB messages; the keys in one.
		{"default batches", copyValues, 3000},
		// The keys and their changes one row a COPY.
		{"a row a batch", 1, 40},
	} {
		for _, pair := range pairs {
			t.Run(c.name+" "+pair[0]+" to "+pair[1], func(t *testing.T) {
				defer func(n int) { copyValues = n }(copyValues)
				copyValues = c.limit
				ctx := context.Background()
				from, to := copyEngines[pair[0]](t), copyEngines[pair[1]](t)
				fillWithOddValues(t, from, c.usageRows)
				rep, err := Copy(ctx, from, to)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Keys != 2 || rep.Usage != c.usageRows || rep.UsageIPs != c.usageRows {
					t.Errorf("report %+v, want 2 keys and %d usage and usage_ips rows", rep, c.usageRows)
				}
				all := ListFilter{All: true}
				a, err := from.ListKeys(ctx, all)
				if err != nil {
					t.Fatal(err)
				}
				b, err := to.ListKeys(ctx, all)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(a, b) {
					t.Errorf("keys differ:\nfrom %+v\nto   %+v", a, b)
				}
				for _, rec := range a {
					if got, err := to.KeyByDigest(ctx, rec.Digest); err != nil || got.ID != rec.ID {
						t.Errorf("key %q by digest %x in the copy: %v, %v", rec.ID, rec.Digest, got, err)
					}
				}
				if got := mustKey(t, to, "key_odd\tid"); got.Name != oddText || got.RevokeReason != oddText ||
					got.CreatedAt.UnixNano() != time.Date(1969, 7, 20, 14, 32, 40, 123456789, time.UTC).UnixNano() {
					t.Errorf("key_odd in the copy: name %q, reason %q, created %v", got.Name, got.RevokeReason, got.CreatedAt)
				}
				if got := mustKey(t, to, "key_nulls"); got.Rate != nil || got.Quota != nil || got.ExpiresAt != nil || got.RevokedAt != nil || got.LastUsedAt != nil {
					t.Errorf("key_nulls in the copy has values where the source has none: %+v", got)
				}
				for _, table := range copiedTables {
					if a, b := tableRows(t, from, table.table, table.cols), tableRows(t, to, table.table, table.cols); !reflect.DeepEqual(a, b) {
						t.Errorf("%s: %d rows in the source, %d in the copy, or they differ", table.table, len(a), len(b))
					}
				}
			})
		}
	}
}

// tableRows reads every row of table's columns cols, ordered by their
// values as Go prints them (the engines order text otherwise).
func tableRows(t *testing.T, s Store, table, cols string) [][]any {
	t.Helper()
	var all [][]any
	err := onDB(s, func(db *DB) error {
		rows, err := db.db.Query("SELECT " + cols + " FROM " + table)
		if err != nil {
			return err
		}
		defer rows.Close()
		n := len(strings.Split(cols, ","))
		for rows.Next() {
			values, dest := make([]any, n), make([]any, n)
			for i := range dest {
				dest[i] = &values[i]
			}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			all = append(all, values)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(all, func(a, b []any) int { return strings.Compare(fmt.Sprintf("%#v", a), fmt.Sprintf("%#v", b)) })
	return all
}

// A statement of many parameters costs SQLite no more a row than one of a
// few: binding ?N found each one's name by walking the names before it, so
// a copy into SQLite at 8,000 parameters a statement spent 90 % of its time
// there (100,000 keys from PostgreSQL in 3 minutes; bench/copystore).
// Timed here against the same copy 400 parameters a statement, the best of
// three each, so that a loaded machine slows both alike.
func TestCopyIntoSQLiteBindsManyParametersInLinearTime(t *testing.T) {
	ctx := context.Background()
	from := copyEngines["sqlite"](t)
	fillWithOddValues(t, from, 12000) // 12,000 usage and usage_ips rows of 4 values
	timed := func(params int) time.Duration {
		defer func(n int) { maxParams = n }(maxParams)
		maxParams = params
		best := time.Duration(math.MaxInt64)
		for range 3 {
			to := copyEngines["sqlite"](t)
			start := time.Now()
			if _, err := Copy(ctx, from, to); err != nil {
				t.Fatal(err)
			}
			best = min(best, time.Since(start))
			to.Close()
		}
		return best
	}
	few, many := timed(400), timed(8000)
	if many > 2*few {
		t.Errorf("a copy into SQLite took %v at 8,000 parameters a statement, %v at 400", many, few)
	}
	t.Logf("a copy into SQLite: %v at 8,000 parameters a statement, %v at 400", many, few)
}

// Behind a transaction pooler (PgBouncer pool_mode=transaction, as a managed
// service's pooled endpoint is) a copy's COPYs, its check and its commit are
// one transaction on one server connection: into PostgreSQL, and out of it.
func TestCopyThroughATransactionPooler(t *testing.T) {
	testPostgresURI(t) // the server
	bouncer := testservers.StartPgBouncer(t, pgServer, "transaction")
	pooled := func(t *testing.T) Store {
		direct := testPostgresURI(t)
		db := direct[strings.LastIndex(direct, "/")+1 : strings.Index(direct, "?")]
		return openTestPostgres(t, strings.Replace(bouncer.URI, "/keygate?", "/"+db+"?", 1))
	}
	t.Run("sqlite to postgres", func(t *testing.T) {
		testCopyKeepsEverything(t, copyEngines["sqlite"](t), pooled(t))
	})
	t.Run("postgres to postgres", func(t *testing.T) {
		testCopyKeepsEverything(t, pooled(t), pooled(t))
	})
}
