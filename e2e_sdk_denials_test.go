package keygate_test

import (
	"strings"
	"testing"
	"time"
)

// TestE2ESDKsDenials drives every SDK into the refusals TestE2ESDKs does not
// reach, as a developer meets them: an expired key, a disabled key, a key
// without the send scope, a payload keygate cannot read (a From that is no
// address) and a body above the route's max_body (a 20 KB HTML part on
// sites inspecting 8 KB). Each must show keygate's code through the SDK's
// own error, and none may be retried: the SDK sends each once.
//
// The same run makes the calls other than sends that applications make
// with the SDK and the key they send with (sdkOps: a message's status, the
// suppression list, the domains, the templates), with a key that may send
// only (each refused as insufficient_scope, naming the scope it needs), a
// key holding messages.read and templates.read (those two reach the
// provider, the others are refused) and a full-access key (each reaches
// the provider, once).
func TestE2ESDKsDenials(t *testing.T) {
	rig := startSDKRig(t, "", "max_body 8KB")
	g := rig.g

	type denialKeys struct{ expired, disabled, scope, payload, policy, sender, reader, full string }
	keys := map[string]*denialKeys{}
	for _, d := range sdkDrivers {
		k := &denialKeys{}
		keys[d.name] = k
		rig.issueKey(&k.expired, "--name", d.name+"-expired", "--expires", "2s")
		rig.issueKey(&k.disabled, "--name", d.name+"-disabled")
		rig.issueKey(&k.payload, "--name", d.name+"-payload", "--sender-domain", "shop.example")
		rig.issueKey(&k.policy, "--name", d.name+"-policy", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain)
		// A key for another route's scope only (issueKey adds mail.send).
		issueWithout := func(dst *string, args ...string) {
			rig.issuing.Add(1)
			go func() {
				defer rig.issuing.Done()
				rig.slots <- struct{}{}
				defer func() { <-rig.slots }()
				ik := g.issue(args...)
				rig.issueMu.Lock()
				*dst, rig.idOf[ik.Key] = ik.Key, ik.ID
				rig.issueMu.Unlock()
			}()
		}
		issueWithout(&k.scope, "--scope", "templates.read", "--name", d.name+"-scope")
		if sdkOps[d.name] != nil {
			rig.issueKey(&k.sender, "--name", d.name+"-sender")
			issueWithout(&k.reader, "--scope", "messages.read", "--scope", "templates.read", "--name", d.name+"-reader")
			issueWithout(&k.full, "--scope", "*", "--name", d.name+"-full")
		}
	}
	rig.issuing.Wait()
	issued := time.Now() // every key is issued, the expiring ones since at most now
	for _, k := range keys {
		rig.issuing.Add(1)
		go func() {
			defer rig.issuing.Done()
			rig.slots <- struct{}{}
			defer func() { <-rig.slots }()
			g.keys("update", rig.idOf[k.disabled], "--disable")
		}()
	}
	rig.issuing.Wait()
	if wait := 2500*time.Millisecond - time.Since(issued); wait > 0 {
		time.Sleep(wait) // the expired keys have expired
	}

	plans := map[string][]sdkScenario{}
	for _, d := range sdkDrivers {
		k, base := keys[d.name], rig.base(d.name)
		sc := func(name, key, from string) sdkScenario {
			return sdkScenario{ID: d.name + "/" + name, SDK: d.name, Base: base, Key: key, From: from, To: []string{"a@rcpt.example"}}
		}
		large := sc("too-large", k.policy, sdkAllowedFrom)
		large.HTML = sdkNewsletter(sdkAllowedFrom)
		plans[d.lang] = append(plans[d.lang],
			sc("expired", k.expired, sdkAllowedFrom),
			sc("disabled", k.disabled, sdkAllowedFrom),
			sc("scope", k.scope, sdkAllowedFrom),
			sc("invalid-payload", k.payload, "orders.shop.example"),
			large)
		for _, op := range sdkOps[d.name] {
			for who, key := range map[string]string{"sender": k.sender, "reader": k.reader, "full": k.full} {
				s := sc(op+"/"+who, key, "")
				s.To, s.Op = nil, op
				plans[d.lang] = append(plans[d.lang], s)
			}
		}
	}
	results := rig.run(plans)

	for _, d := range sdkDrivers {
		k, tp := keys[d.name], rig.taps[d.dialect]
		for _, c := range []struct {
			scenario, code string
			sesName        string // the AWS SDKs' exception
			key            string
			sent           int // requests of the key
		}{
			{"expired", "expired_key", "UnrecognizedClientException", k.expired, 1},
			{"disabled", "disabled_key", "UnrecognizedClientException", k.disabled, 1},
			{"scope", "insufficient_scope", "AccessDeniedException", k.scope, 1},
			{"invalid-payload", "invalid_payload", "BadRequestException", k.payload, 1},
			{"too-large", "payload_too_large", "BadRequestException", k.policy, 1},
		} {
			id := d.name + "/" + c.scenario
			r, ok := results[id]
			sent := tp.countKey(c.key)
			switch {
			case c.scenario == "invalid-payload" && sent == 0 && !r.OK:
				// Django-Anymail and Symfony check the address themselves
				// and send nothing.
			case !ok:
				t.Errorf("%s: no result", id)
			case r.OK:
				t.Errorf("%s: the SDK sent", id)
			case !strings.Contains(r.Text, "keygate "+c.code):
				t.Errorf("%s: the SDK's error does not say %q: %+v", id, "keygate "+c.code, r)
			case strings.Contains(r.Text, "[object Object]") || strings.Contains(r.Text, "undefined"):
				t.Errorf("%s: the SDK's error is garbled: %+v", id, r)
			case d.dialect == "ses" && d.lang != "php" && !isAnymail(d.name) && r.Name != c.sesName:
				t.Errorf("%s: the SDK's error is a %q, want %q", id, r.Name, c.sesName)
			}
			if sent > c.sent {
				t.Errorf("%s: %d requests reached the gateway, want at most %d (no retry)", id, sent, c.sent)
			}
		}
	}
	opsReached := map[string]int{} // by key
	for p, sent := range rig.delivered(map[string]*string{}) {
		for _, k := range keys {
			for _, key := range []string{k.reader, k.full} {
				if key != "" && sent.carries(key) {
					opsReached[key]++
				}
				if key != "" && p.carries(key) {
					t.Errorf("the provider got a keygate key: %s %s", p.Method, p.Path)
				}
			}
		}
		if p.Method != "GET" && p.Path != "/" && p.Path != sesListIdentities { // SES's v1 API: a POST to /
			t.Errorf("the provider got %s %s, which no call other than a send made", p.Method, p.Path)
		}
	}
	for _, d := range sdkDrivers {
		k := keys[d.name]
		want := map[string]int{}
		for _, op := range sdkOps[d.name] {
			calls := 1
			if (d.name == "resend" || d.name == "resend-go") && op == "status" {
				calls = 2 // emails.get and emails.list
			}
			want[k.full] += calls
			for who, key := range map[string]string{"sender": k.sender, "reader": k.reader, "full": k.full} {
				id := d.name + "/" + op + "/" + who
				r, ok := results[id]
				allowed := who == "full" || who == "reader" && (op == "status" || op == "templates")
				if allowed && who == "reader" {
					want[key] += calls
				}
				switch {
				case !ok:
					t.Errorf("%s: no result", id)
				case allowed && !r.OK:
					t.Errorf("%s: refused, want the call made: %+v", id, r)
				case allowed:
				case r.OK:
					t.Errorf("%s: the call was made, want insufficient_scope", id)
				case !strings.Contains(r.Text, "keygate insufficient_scope") || !strings.Contains(r.Text, sdkOpScope[op]):
					t.Errorf("%s: the SDK's error does not say %q naming %s: %+v", id, "keygate insufficient_scope", sdkOpScope[op], r)
				case r.Status != 0 && r.Status != 403:
					t.Errorf("%s: the SDK saw status %d, want 403", id, r.Status)
				}
			}
		}
		// Each refused call is sent once: resend's status op stops at
		// emails.get.
		if got := rig.taps[d.dialect].countKey(k.sender); k.sender != "" && got != len(sdkOps[d.name]) {
			t.Errorf("%s: %d calls of the key that may only send reached the gateway, want %d (no retry)", d.name, got, len(sdkOps[d.name]))
		}
		for _, key := range []string{k.reader, k.full} {
			if key != "" && opsReached[key] != want[key] {
				t.Errorf("%s: the provider got %d calls of the key %s, want %d", d.name, opsReached[key], rig.idOf[key], want[key])
			}
		}
	}
	for _, id := range sortedKeys(results) {
		if !t.Failed() && !testing.Verbose() {
			break
		}
		r := results[id]
		t.Logf("%s: status=%d name=%q attempts=%d ms=%d text=%.300q", id, r.Status, r.Name, r.Attempts, r.MS, r.Text)
	}
}
