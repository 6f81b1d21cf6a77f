package keygate_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// providerRetriers are the SDKs that send again, by default, after a
// provider's 500: the AWS SDKs (awsAttempts) and @getbrevo/brevo; and
// Symfony's SES transports when they make their own client (async-aws).
func providerRetrier(sc sdkScenario) bool {
	return awsAttempts[sc.SDK] != 0 || sc.SDK == "brevo" || sc.DefaultClient
}

// TestE2ESDKsRetries drives every SDK into what it retries beside
// keygate's own limits (TestE2ESDKs): a provider's 500, and Symfony's SES
// transports as plain PHP builds them.
//
// A provider that answers a send with a 500 once: the SDKs that retry a 5xx
// send again and are delivered, the others fail with the provider's error.
// Either way the key (a quota of one recipient a day) is counted for the
// one send the provider took, once: the 500 gave its recipient back, so an
// SDK that does not retry can send again, and one that did has used its
// quota up.
//
// A Mailjet v3.1 batch of two messages that Mailjet answers with its
// partial failure (400: the first message sent, the second refused),
// through every SDK that sends such batches, with a key whose quota is two
// recipients a day: the batch's recipients stay counted (its first message
// went), so the key's next send is quota_exceeded. Before session 33 the
// 400 gave both back, and a key could send without end in batches each
// holding one message Mailjet refuses.
//
// Symfony's SES transports, given no HTTP client (Transport::fromDsn($dsn),
// as plain PHP calls it), send with async-aws's, which retries a 429 three
// times, each after the whole Retry-After: a key limited to one send a
// second is refused the second, waits a second and is delivered.
func TestE2ESDKsRetries(t *testing.T) {
	rig := startSDKRig(t, "")

	type retryKeys struct{ flaky, rate string }
	var plans []sdkScenario
	keys := map[string]*retryKeys{} // by scenario prefix
	for _, d := range sdkDrivers {
		variants := []bool{false}
		if d.name == "symfony-ses" || d.name == "symfony-ses-raw" {
			variants = append(variants, true)
		}
		for _, own := range variants {
			prefix := d.name
			if own {
				prefix += "-default-client"
			}
			k := &retryKeys{}
			keys[prefix] = k
			rig.issueKey(&k.flaky, "--name", prefix+"-flaky", "--quota", "1/d")
			if own {
				rig.issueKey(&k.rate, "--name", prefix+"-rate", "--rate", "1/s")
			}
			sc := func(name, key string) sdkScenario {
				return sdkScenario{ID: prefix + "/" + name, SDK: d.name, Base: rig.base(d.name), Key: key,
					From: sdkAllowedFrom, To: []string{"a@rcpt.example"}, DefaultClient: own}
			}
			plans = append(plans, sc("flaky", ""), sc("after", ""))
			if own {
				plans = append(plans, sc("rate", ""))
			}
		}
	}
	// The Mailjet v3.1 batches, by SDK.
	partlyKeys := map[string]*string{}
	for sdk, p := range sdkKinds[0].sdks {
		if p == "/v3.1/send" {
			partlyKeys[sdk] = new(string)
			rig.issueKey(partlyKeys[sdk], "--name", sdk+"-partly", "--quota", "2/d")
		}
	}
	rig.issuing.Wait()
	for sdk, k := range partlyKeys {
		sc := sdkScenario{ID: sdk + "/partly", SDK: sdk, Base: rig.base(sdk), Key: *k, From: sdkAllowedFrom,
			To: []string{"a@rcpt.example", "b@rcpt.example"}, Batch: true}
		after := sc
		after.ID, after.To, after.Batch = sdk+"/partly-after", []string{"c@rcpt.example"}, false
		plans = append(plans, sc, after)
	}
	for i := range plans {
		prefix, name, _ := strings.Cut(plans[i].ID, "/")
		switch name {
		case "partly", "partly-after":
			continue
		case "flaky", "after":
			plans[i].Key = keys[prefix].flaky
		case "rate":
			plans[i].Key = keys[prefix].rate
			plans[i].Sends = 2
		}
	}

	// The provider fails the first request of each flaky key.
	var mu sync.Mutex
	failed := map[string]bool{}
	rig.provider.mu.Lock()
	rig.provider.fails = func(r *http.Request) bool {
		sent, ok := rig.taps[r.Header.Get("X-Compat-Dialect")].byID(r.Header.Get("X-Compat-Tap-Id"))
		mu.Lock()
		defer mu.Unlock()
		for prefix, k := range keys {
			if ok && sent.carries(k.flaky) && !failed[prefix] {
				failed[prefix] = true
				return true
			}
		}
		return false
	}
	rig.provider.partly = func(r *http.Request) bool {
		sent, ok := rig.taps[r.Header.Get("X-Compat-Dialect")].byID(r.Header.Get("X-Compat-Tap-Id"))
		for _, k := range partlyKeys {
			if ok && sent.carries(*k) && bytes.Contains(sent.Body, []byte("b@rcpt.example")) {
				return true
			}
		}
		return false
	}
	rig.provider.mu.Unlock()

	byLang, flakyOf, dialectOf := map[string][]sdkScenario{}, map[string]sdkScenario{}, map[string]string{}
	for _, sc := range plans {
		for _, d := range sdkDrivers {
			if d.name == sc.SDK {
				byLang[d.lang] = append(byLang[d.lang], sc)
				dialectOf[d.name] = d.dialect
			}
		}
		if prefix, name, _ := strings.Cut(sc.ID, "/"); name == "flaky" {
			flakyOf[prefix] = sc
		}
	}
	results := rig.run(byLang)

	for sdk, k := range partlyKeys {
		if r := results[sdk+"/partly"]; r.OK && !isAnymail(sdk) {
			t.Errorf("%s/partly: the SDK reports Mailjet's partial failure as a send: %+v", sdk, r)
		}
		sdkRefused(t, sdk+"/partly-after", results[sdk+"/partly-after"], "quota_exceeded", sdkQuotaStatus["mailjet"], "")
		if u, ok := rig.usageOf(t, *k, 3*time.Second, func(u usageJSON) bool {
			return u.Recipients == 2 && u.Denied["quota_exceeded"] == 1
		}); !ok {
			t.Errorf("%s: the key counted %d recipients, denied %v; want 2 (the partly sent batch's) and quota_exceeded 1", sdk, u.Recipients, u.Denied)
		}
	}
	for prefix, k := range keys {
		flaky, after := results[prefix+"/flaky"], results[prefix+"/after"]
		sc := flakyOf[prefix]
		dialect := dialectOf[sc.SDK]
		tp := rig.taps[dialect]
		// The sends made with the flaky key. mailjet-apiv3-go's v3 SendMail
		// sends a 500's request again at once, up to five times, with its
		// body already spent: Go's client gives up on it mid-request
		// ("ContentLength=… with Body length 0"), sometimes after the tap
		// has its headers. That is no send.
		sends := func() int {
			tp.mu.Lock()
			defer tp.mu.Unlock()
			n := 0
			for _, r := range tp.reqs {
				if r.carries(k.flaky) && len(r.Body) > 0 {
					n++
				}
			}
			return n
		}
		// mailjet-apiv3-go's v3 SendMail sends a 500's request again with
		// its body spent, which Go's transport sometimes rewinds (the SDK
		// built the body from bytes): that retry is delivered.
		if providerRetrier(sc) || sc.SDK == "mailjet-go-v3" && flaky.OK {
			// Delivered on the second attempt; then the quota is used up.
			if !flaky.OK {
				t.Errorf("%s/flaky: the SDK did not retry the provider's 500: %+v", prefix, flaky)
			}
			sdkRefused(t, prefix+"/after", after, "quota_exceeded", sdkQuotaStatus[dialect], "")
			if got := sends(); got != 3 {
				t.Errorf("%s: %d requests with the flaky key, want 3 (a 500, its retry, the quota's refusal)", prefix, got)
			}
		} else {
			// The provider's error (as the SDK reads a body not in its
			// provider's shape), once; the quota is still there.
			if flaky.OK {
				t.Errorf("%s/flaky: the SDK reports the provider's 500 as a send: %+v", prefix, flaky)
			}
			if !after.OK {
				t.Errorf("%s/after: the provider's 500 kept the recipient in the quota: %+v", prefix, after)
			}
			if got := sends(); got != 2 {
				t.Errorf("%s: %d requests with the flaky key, want 2 (a 500 not retried, a send)", prefix, got)
			}
		}
		// One send taken, one recipient counted, whatever the retries.
		if u, ok := rig.usageOf(t, k.flaky, 3*time.Second, func(u usageJSON) bool {
			return u.Recipients == 1
		}); !ok {
			t.Errorf("%s: the flaky key counted %d recipients, want 1 (the send the provider took): %+v", prefix, u.Recipients, u)
		}

		if k.rate == "" {
			continue
		}
		// Symfony's SES transports with their own client: the second send
		// is refused, waits Retry-After: 1 and is delivered.
		r := results[prefix+"/rate"]
		if !r.OK || r.MS < 900 {
			t.Errorf("%s/rate: async-aws did not wait Retry-After and send again: %+v", prefix, r)
		}
		if got := tp.countKey(k.rate); got != 3 {
			t.Errorf("%s/rate: %d requests, want 3 (a send, a 429, its retry)", prefix, got)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}
