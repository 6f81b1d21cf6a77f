package store

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/internal/testservers"
)

// One throwaway server per test binary; each test gets its own database.
var (
	pgOnce   sync.Once
	pgServer *testservers.Postgres
	pgDBs    atomic.Int64
)

func testPostgresURI(t *testing.T) string {
	t.Helper()
	pgOnce.Do(func() { pgServer = testservers.StartPostgres(&onceT{t}) })
	if pgServer == nil {
		t.Fatal("the PostgreSQL test server did not start")
	}
	return pgServer.CreateDatabase(fmt.Sprintf("t%d", pgDBs.Add(1)))
}

// onceT lets the shared server outlive the test that started it; TestMain
// closes it when the test binary is done.
type onceT struct{ *testing.T }

func TestMain(m *testing.M) {
	code := m.Run()
	if pgServer != nil {
		pgServer.Close()
	}
	os.Exit(code)
}

func (onceT) Cleanup(func()) {}

func openTestPostgres(t *testing.T, uri string) *Postgres {
	t.Helper()
	p, err := OpenPostgres(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPostgresConformance(t *testing.T) {
	testStoreConformance(t, func(t *testing.T) Store {
		return openTestPostgres(t, testPostgresURI(t))
	})
}

func TestPostgresNotifiesOtherHandlesOfChanges(t *testing.T) {
	uri := testPostgresURI(t)
	writer, reader := openTestPostgres(t, uri), openTestPostgres(t, uri)
	// Each handle wakes once when its listener connects; drain that.
	select {
	case <-reader.Notify():
	case <-time.After(5 * time.Second):
		t.Fatal("the listener never connected")
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		mustCreate(t, writer, minimalRecord(fmt.Sprintf("key_notify%d", i), time.Now()))
		select {
		case <-reader.Notify():
			if d := time.Since(start); d > time.Second {
				t.Errorf("notification took %v", d)
			}
		case <-time.After(time.Second):
			t.Fatal("no notification within 1s of a committed change")
		}
	}
}

func TestPostgresMigrationsAreIdempotentUnderConcurrentOpens(t *testing.T) {
	uri := testPostgresURI(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			p, err := OpenPostgres(context.Background(), uri)
			if err == nil {
				p.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
		}
	}
	p := openTestPostgres(t, uri)
	var n int
	if err := p.db.QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n != 1 {
		t.Errorf("schema_migrations rows = %d (%v), want 1", n, err)
	}
}

func TestPostgresUsageFromTwoNodesAddsUp(t *testing.T) {
	uri := testPostgresURI(t)
	a, b := openTestPostgres(t, uri), openTestPostgres(t, uri)
	mustCreate(t, a, minimalRecord("key_nodes", time.Now()))
	hour := time.Now().UTC().Truncate(time.Hour)
	var wg sync.WaitGroup
	for _, s := range []*Postgres{a, b} {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				d := UsageDelta{KeyID: "key_nodes", Hour: hour, Counts: map[string]int64{"allowed": 1, "recipients": 2},
					IPs: map[string]int64{"10.0.0.1": 1}, LastUsedAt: time.Now(), LastIP: "10.0.0.1"}
				if err := s.AddUsage(context.Background(), []UsageDelta{d}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	u, err := a.Usage(context.Background(), "key_nodes", hour)
	if err != nil {
		t.Fatal(err)
	}
	if u.Allowed != 400 || u.Recipients != 800 || len(u.TopIPs) != 1 || u.TopIPs[0].Requests != 400 {
		t.Errorf("usage from two nodes: allowed %d recipients %d ips %+v; want 400, 800, one IP with 400", u.Allowed, u.Recipients, u.TopIPs)
	}
}

func TestPostgresErrorsNeverShowThePassword(t *testing.T) {
	_, err := OpenPostgres(context.Background(), "postgres://keygate:s3cret-pw@127.0.0.1:1/keygate?connect_timeout=1")
	if err == nil {
		t.Fatal("connected to port 1")
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("error shows the password: %v", err)
	}
}
