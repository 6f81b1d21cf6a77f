// Command copystore times `caddy keys copy-store` (store.Copy, which the
// subcommand runs) from an SQLite store holding -n keys, each with an audit
// event and -hours hours of usage, into an empty PostgreSQL database.
//
//	go run ./bench/copystore -to 'postgres://…/empty_db'              # 100,000 keys
//	go run ./bench/copystore -to 'postgres://…/empty_db' -n 20000     # quicker
//
// The SQLite store is seeded in a temporary directory (-from names a file
// to keep, or one seeded before, which is then copied as it is). Keys are
// issued with CreateKey, one transaction each, as `caddy keys issue` does;
// usage is added with AddUsage in batches, as a gateway's flush does: for
// each key and hour, allowed, recipients and status.2xx, and one client
// address. The target must hold no keys (Copy refuses one that does).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

func main() {
	n := flag.Int("n", 100000, "keys to seed")
	hours := flag.Int("hours", 2, "hours of usage per key")
	from := flag.String("from", "", "the SQLite file to copy from (seeded when it does not exist; default a temporary file)")
	to := flag.String("to", "", "the store to copy into: postgres://… (required; an empty database)")
	flag.Parse()
	if *to == "" {
		log.Fatal("copystore: -to postgres://… is required")
	}
	ctx := context.Background()
	path := *from
	if path == "" {
		dir, err := os.MkdirTemp("", "keygate-copystore-")
		check(err)
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "keys.db")
	}
	if _, err := os.Stat(path); os.IsNotExist(err) {
		seed(ctx, path, *n, *hours)
	}

	src, err := store.Open(ctx, "sqlite:"+path)
	check(err)
	defer src.Close()
	dst, err := store.Open(ctx, *to)
	check(err)
	defer dst.Close()
	start := time.Now()
	rep, err := store.Copy(ctx, src, dst)
	took := time.Since(start)
	check(err)
	fmt.Printf("copy: %d keys, %d events, %d usage rows, %d usage_ips rows in %s (%.0f keys/s; 1,000,000 keys at this rate: %s)\n",
		rep.Keys, rep.Events, rep.Usage, rep.UsageIPs, took.Round(time.Millisecond),
		float64(rep.Keys)/took.Seconds(), time.Duration(float64(took)*1e6/float64(max(rep.Keys, 1))).Round(time.Second))
}

// seed issues n keys into a new SQLite store at path and gives each hours
// hours of usage.
func seed(ctx context.Context, path string, n, hours int) {
	start := time.Now()
	st, err := store.OpenSQLite(ctx, path)
	check(err)
	defer st.Close()
	ids := make([]string, n)
	for i := range n {
		key, err := verifier.Generate("kg", "live")
		check(err)
		rec := &store.Record{ID: verifier.NewID(), Digest: verifier.DigestOf(key), Hint: verifier.Hint(key),
			Name: fmt.Sprintf("integration-%d", i), Owner: fmt.Sprintf("team-%d", i%50), Env: "live",
			Scopes: []string{"mail.send"}, SenderDomains: []string{"example.com"}}
		check(st.CreateKey(ctx, rec, store.Event{Action: "issued", Actor: "bench/copystore"}))
		ids[i] = rec.ID
	}
	issued := time.Since(start)
	hour := time.Now().UTC().Truncate(time.Hour)
	var batch []store.UsageDelta
	for h := range hours {
		for i, id := range ids {
			batch = append(batch, store.UsageDelta{KeyID: id, Hour: hour.Add(-time.Duration(h) * time.Hour),
				Counts: map[string]int64{"allowed": 3, "recipients": 7, "status.2xx": 3},
				IPs:    map[string]int64{fmt.Sprintf("10.0.%d.%d", i/250%250, i%250+1): 3}})
			if len(batch) == 1000 {
				check(st.AddUsage(ctx, batch))
				batch = batch[:0]
			}
		}
	}
	if len(batch) > 0 {
		check(st.AddUsage(ctx, batch))
	}
	fmt.Printf("seed: %d keys in %s, usage for %d hours in %s more\n", n, issued.Round(time.Millisecond), hours,
		(time.Since(start) - issued).Round(time.Millisecond))
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
