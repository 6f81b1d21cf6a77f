// Command prune measures usage retention on a store holding a long usage
// history: how fast PruneUsage deletes expired hourly rows, and how long the
// gateway's once-a-second usage flushes take while it runs.
//
// It seeds -keys keys with -hours hours of history each (three metrics and
// one client IP per key and hour, so 4 × keys × hours rows), keeps flushing
// one current-hour delta per key every -flush, as a busy gateway does, and
// then prunes every seeded hour.
//
//	go run ./bench/prune                          # 2,000 keys × 125 h = 1,000,000 rows, SQLite
//	go run ./bench/prune -store postgres://…      # the same on PostgreSQL
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/keygate/caddy-keygate/store"
)

func main() {
	keys := flag.Int("keys", 2000, "keys with usage history")
	hours := flag.Int("hours", 125, "hours of history per key, all older than the cutoff")
	flush := flag.Duration("flush", time.Second, "interval of the concurrent usage flushes")
	uri := flag.String("store", "", "store URI (default: SQLite in a new temp dir, removed after)")
	flag.Parse()
	ctx := context.Background()

	if *uri == "" {
		dir, err := os.MkdirTemp("", "keygate-prune-")
		check(err)
		defer os.RemoveAll(dir)
		*uri = "sqlite:" + filepath.Join(dir, "keys.db")
	}
	st, err := store.Open(ctx, *uri)
	check(err)
	defer st.Close()

	now := time.Now().UTC().Truncate(time.Hour)
	cutoff := now.Add(-24 * time.Hour)
	ids := make([]string, *keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_prune%07d", i)
	}
	start := time.Now()
	for h := range *hours {
		hour := cutoff.Add(-time.Duration(h+1) * time.Hour)
		deltas := make([]store.UsageDelta, len(ids))
		for i, id := range ids {
			deltas[i] = store.UsageDelta{KeyID: id, Hour: hour,
				Counts: map[string]int64{"allowed": 10, "status.2xx": 10, "recipients": 12},
				IPs:    map[string]int64{fmt.Sprintf("10.%d.%d.1", i>>8&255, i&255): 10}}
		}
		check(st.AddUsage(ctx, deltas))
	}
	rows := 4 * *keys * *hours
	fmt.Printf("store    %s\nseeded   %d rows (%d keys × %d hours) in %s\n", store.RedactURI(*uri), rows, *keys, *hours, time.Since(start).Round(time.Millisecond))

	// A gateway's flush: one current-hour delta per key.
	current := make([]store.UsageDelta, len(ids))
	for i, id := range ids {
		current[i] = store.UsageDelta{KeyID: id, Hour: now, Counts: map[string]int64{"allowed": 1}, LastUsedAt: now, LastIP: "10.0.0.1"}
	}
	flushes := func(stop <-chan struct{}) []time.Duration {
		var took []time.Duration
		t := time.NewTicker(*flush)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return took
			case <-t.C:
				s := time.Now()
				check(st.AddUsage(ctx, current))
				took = append(took, time.Since(s))
			}
		}
	}
	measure := func(work func()) []time.Duration {
		stop := make(chan struct{})
		var took []time.Duration
		var wg sync.WaitGroup
		wg.Go(func() { took = flushes(stop) })
		work()
		close(stop)
		wg.Wait()
		return took
	}

	quiet := measure(func() { time.Sleep(10 * *flush) })
	var n int64
	var pruneTook time.Duration
	during := measure(func() {
		s := time.Now()
		n, err = st.PruneUsage(ctx, cutoff)
		pruneTook = time.Since(s)
		check(err)
	})
	if n != int64(rows) {
		log.Fatalf("pruned %d rows, want %d", n, rows)
	}
	fmt.Printf("pruned   %d rows in %s (%.0f rows/s)\n", n, pruneTook.Round(time.Millisecond), float64(n)/pruneTook.Seconds())
	fmt.Printf("flushes of %d keys, quiet:        %s\n", *keys, summary(quiet))
	fmt.Printf("flushes of %d keys, during prune: %s\n", *keys, summary(during))
}

func summary(d []time.Duration) string {
	if len(d) == 0 {
		return "none (the prune finished within one flush interval)"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("n=%d  p50 %s  max %s", len(s), s[len(s)/2].Round(100*time.Microsecond), s[len(s)-1].Round(100*time.Microsecond))
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
