package keygate

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"
)

// The alerting rules in deploy/ name only metrics and decisions keygate
// exposes (an alert on a renamed metric would never fire), every alert has
// a unit test in which it fires, and promtool accepts the rules and passes
// those tests.
func TestAlertRules(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, "deploy/keygate-alerts.yml", &rules)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, "deploy/keygate-alerts.test.yml", &tests)
	fired := map[string]bool{}
	for _, c := range tests.Tests {
		for _, a := range c.AlertRuleTest {
			fired[a.Alertname] = fired[a.Alertname] || len(a.ExpAlerts) > 0
		}
	}

	exposed := exposedMetrics(t)
	metric := regexp.MustCompile(`\bkeygate_[a-z_]+`)
	decision := regexp.MustCompile(`decision=~?"([^"]*)"`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			for _, name := range metric.FindAllString(r.Expr, -1) {
				if !exposed[name] {
					t.Errorf("%s: %s is not a metric keygate exposes", r.Alert, name)
				}
			}
			for _, m := range decision.FindAllStringSubmatch(r.Expr, -1) {
				for _, d := range strings.Split(m[1], "|") {
					if _, ok := parseCode(d); !ok {
						t.Errorf("%s: %q is not a decision of keygate_requests_total", r.Alert, d)
					}
				}
			}
			if !fired[r.Alert] {
				t.Errorf("%s: no test in keygate-alerts.test.yml in which it fires", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerting rules in deploy/keygate-alerts.yml")
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool not found in PATH; install it with: apt-get install prometheus"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, args := range [][]string{{"check", "rules", "keygate-alerts.yml"}, {"test", "rules", "keygate-alerts.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "deploy"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// exposedMetrics returns the names of the series keygate's collectors
// expose, a histogram's _bucket, _sum and _count included.
func exposedMetrics(t *testing.T) map[string]bool {
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for _, c := range metrics.collectors {
		var histogram bool
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			histogram = true
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
			if histogram {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[m[1]+s] = true
				}
			}
		}
	}
	return names
}

// keygate's counters never go down when the handlers of a store go away (a
// reload to a config without them): Prometheus would take the drop for a
// restart, and rate() would show a spike.
func TestCountersDoNotGoDownWhenAStoreCloses(t *testing.T) {
	h := &Handler{Store: "sqlite:" + filepath.Join(t.TempDir(), "keys.db"),
		Scopes: []ScopeRule{{Scope: "mail.send", Method: "POST", Path: "/v3/mail/send"}}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	_, key := issue(t, h.backend.store, "mail.send")
	for range 3 {
		if w := serve(h, "POST", "/v3/mail/send", key); w.Code != http.StatusAccepted {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	names := []string{"keygate_cache_hits_total", "keygate_cache_misses_total", "keygate_store_queries_total"}
	before := map[string]float64{}
	for _, n := range names {
		before[n] = counterValue(t, n)
	}
	if before["keygate_cache_misses_total"] == 0 {
		t.Fatal("no lookup counted")
	}
	h.Cleanup() // the store's last handler: its backend closes
	for _, n := range names {
		if after := counterValue(t, n); after < before[n] {
			t.Errorf("%s went down from %v to %v when the store closed", n, before[n], after)
		}
	}
}

// counterValue reads one of keygate's unlabelled counters.
func counterValue(t *testing.T, name string) float64 {
	t.Helper()
	for _, c := range metrics.collectors {
		ch := make(chan prometheus.Metric, 64)
		go func() { c.Collect(ch); close(ch) }()
		for m := range ch {
			if !strings.Contains(m.Desc().String(), `fqName: "`+name+`"`) {
				continue
			}
			var out dto.Metric
			if err := m.Write(&out); err != nil {
				t.Fatal(err)
			}
			return out.GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// valueOf reads one counter of keygate's (a labelled one's series).
func valueOf(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var out dto.Metric
	if err := c.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}
