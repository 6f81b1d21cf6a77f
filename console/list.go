package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/caddy-keygate/keys"
	"github.com/keygate/caddy-keygate/store"
	"github.com/keygate/caddy-keygate/verifier"
)

// keysView is the keys page: a searchable, filtered page of keys with a
// 24-hour sparkline each.
type keysView struct {
	view
	Query    keys.Query
	Result   *keys.Page
	Rows     []keyRow
	Filtered bool
	// Revoked counts the revoked keys when no current key is left, so an
	// empty list does not read as "no keys yet".
	Revoked  int
	Prev     string
	Next     string
	Statuses []option
	Sorts    []option
}

// keyRow is one key in the list.
type keyRow struct {
	*store.Record
	Status string
	Spark  bars
}

// option is one choice of a select.
type option struct {
	Value, Label string
}

var statusOptions = []option{
	{"", "All current keys"},
	{keys.StatusActive, "Active"},
	{keys.StatusExpiring, "Expiring soon"},
	{keys.StatusDisabled, "Disabled"},
	{keys.StatusExpired, "Expired"},
	{keys.StatusRevoked, "Revoked"},
}

var sortOptions = []option{
	{"last_used", "Last used"},
	{"created", "Newest"},
	{"name", "Name"},
	{"expires", "Expiring first"},
}

func (c *call) keysPage() error {
	q := c.r.URL.Query()
	if s := q.Get("q"); verifier.HasSecret(s) {
		// A whole key in the search (console.js cuts it to its hint;
		// without script it arrives whole): searched by its hint, and
		// the key taken out of the address bar, history and links.
		q.Set("q", strings.TrimSuffix(verifier.Hint(strings.TrimSpace(s)), "…"))
		http.Redirect(c.w, c.r, c.url("/")+"?"+q.Encode(), http.StatusSeeOther)
		return nil
	}
	query := keys.Query{
		Search: q.Get("q"),
		Env:    q.Get("env"),
		Status: q.Get("status"),
		Sort:   q.Get("sort"),
	}
	query.Page, _ = strconv.Atoi(q.Get("page"))
	res, err := c.keys.Find(c.r.Context(), query)
	if err != nil {
		return err
	}
	v := &keysView{
		view:     view{Title: "Keys", Nav: "keys"},
		Query:    query,
		Result:   res,
		Filtered: query.Search != "" || query.Env != "" || query.Status != "",
		Statuses: statusOptions,
		Sorts:    sortOptions,
	}
	if res.Total == 0 && !v.Filtered {
		revoked, err := c.keys.Find(c.r.Context(), keys.Query{Status: keys.StatusRevoked})
		if err != nil {
			return err
		}
		v.Revoked = revoked.Total
	}
	since := c.now.Truncate(time.Hour).Add(-23 * time.Hour)
	activity, err := c.keys.Activity(c.r.Context(), res.Keys, since)
	if err != nil {
		return err
	}
	for _, rec := range res.Keys {
		allowed, denied, _ := hourly(activity[rec.ID], c.now, 24)
		sp := barChart([][]int64{allowed, denied}, 20, 3, 1)
		sp.Label = "Last 24 hours: " + count(sum(allowed)) + " allowed, " + count(sum(denied)) + " refused"
		v.Rows = append(v.Rows, keyRow{Record: rec, Status: keys.Status(rec, c.now), Spark: sp})
	}
	pageURL := func(n int) string {
		p := url.Values{}
		for _, kv := range [][2]string{{"q", query.Search}, {"env", query.Env}, {"status", query.Status}, {"sort", query.Sort}} {
			if kv[1] != "" {
				p.Set(kv[0], kv[1])
			}
		}
		if n > 1 {
			p.Set("page", strconv.Itoa(n))
		}
		if len(p) == 0 {
			return c.url("/")
		}
		return c.url("/?" + p.Encode())
	}
	if res.Page > 1 {
		v.Prev = pageURL(res.Page - 1)
	}
	if res.Page < res.Pages {
		v.Next = pageURL(res.Page + 1)
	}
	c.render(http.StatusOK, "keys", v)
	return nil
}
