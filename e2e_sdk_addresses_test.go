package keygate_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/caddy-keygate/mailapi"
)

// sdkAddressSends are legitimate messages whose addresses are unusual, as
// real applications send them through their SDK: display names in other
// scripts, with emoji, quotes, commas and apostrophes, or in RFC 2047
// encoded words of a charset other than UTF-8 (ISO-2022-JP, as Japanese
// mail software writes names); and sender and recipient domains that are
// internationalized (IDN), written in Unicode and in punycode, against a
// key whose sender domains name them the same way or the other way. A key
// that allows the sender must let each through unchanged, however the SDK
// encodes it (some SDKs punycode a domain or encode a name themselves).
// The last is a control: a domain that only looks like an allowed one.
var sdkAddressSends = []struct {
	name, from, to string
}{
	{"name-cjk", "日本語ショップ <" + sdkAllowedFrom + ">", "山田 太郎 <a@rcpt.example>"},
	{"name-emoji", "🛒 Shop ✓ <" + sdkAllowedFrom + ">", "🎉 Ann <a@rcpt.example>"},
	{"name-quotes", `"The \"Best\" Shop, Inc." <` + sdkAllowedFrom + `>`, `"O'Brien, Seán" <a@rcpt.example>`},
	{"name-iso-2022-jp", "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= <" + sdkAllowedFrom + ">", "=?ISO-2022-JP?B?GyRCOzNFRBsoQg==?= <a@rcpt.example>"},
	// The key names bücher.example in Unicode (kept as punycode).
	{"idn-unicode", "Bücher <orders@bücher.example>", "a@bücher.example"},
	{"idn-punycode", "orders@xn--bcher-kva.example", "a@xn--bcher-kva.example"},
	// The key names café.example in punycode, xn--caf-dma.example.
	{"idn-unicode-key-punycode", "Café <orders@café.example>", "a@rcpt.example"},
	// A subdomain of the key's *.bücher.example, in Unicode.
	{"idn-wildcard", "news@post.bücher.example", "a@rcpt.example"},
	// Local parts as mail systems hand them out: a tag and capitals, a
	// quoted local part, one in UTF-8 (RFC 6531).
	{"local-tag-case", "Orders+EU@Shop.EXAMPLE", "A+b@Rcpt.Example"},
	{"local-quoted", `"order desk"@shop.example`, `"a b"@rcpt.example`},
	{"local-utf8", "José <josé@shop.example>", "zoë@rcpt.example"},
	{"idn-lookalike", "orders@bucher.example", "a@rcpt.example"},
}

// sdkAddressSendsRefused are the sends of sdkAddressSends keygate refuses,
// by scenario id ("*/" for every SDK), with the code: every SDK's
// look-alike domain; and the name with quotes as Symfony Mailer writes it
// where it sends the address as one string (Postmark, Mailgun, SES's v2
// API). Given the address as a string (Address::create), Symfony keeps the
// backslashes of the name's quoted pairs and escapes its quotes again:
// "The \\"Best\\" Shop, Inc." <…>, which no RFC 5322 reader takes for one
// address (docs/sdks.md).
//
// And a quoted local part through the Go drivers that give the SDK the name
// and the address apart: they split with net/mail, whose Address.Address
// is the local part unquoted ("order desk@shop.example"), no address at
// all, as every Go application that splits this way sends it.
var sdkAddressSendsRefused = map[string]string{"*/idn-lookalike": "sender_not_allowed",
	"symfony-postmark/name-quotes": "invalid_payload", "symfony-mailgun/name-quotes": "invalid_payload",
	"symfony-ses/name-quotes":  "invalid_payload",
	"sendgrid-go/local-quoted": "invalid_payload", "mailjet-go/local-quoted": "invalid_payload",
	"mailjet-go-v3/local-quoted": "invalid_payload", "brevo-go/local-quoted": "invalid_payload"}

// sdkAddressSendsUnsupported are the sends an SDK will not make: Symfony's
// address check takes no UTF-8 local part where the transport sends the
// address as it is (its SES transports encode it).
var sdkAddressSendsUnsupported = map[string]bool{"symfony-sendgrid/local-utf8": true, "symfony-postmark/local-utf8": true,
	"symfony-mailgun/local-utf8": true, "symfony-mailjet/local-utf8": true, "symfony-brevo/local-utf8": true}

// TestE2ESDKsUnusualAddresses sends each of sdkAddressSends through every
// SDK, with a key limited to the shop's sender domains and two IDN
// domains, one given in Unicode and one in punycode: each must reach the
// provider once, byte for byte as the SDK sent it (but
// sdkAddressSendsRefused, which must be refused).
func TestE2ESDKsUnusualAddresses(t *testing.T) {
	rig := startSDKRig(t, "")
	keys := map[string]*string{}
	for _, d := range sdkDrivers {
		keys[d.name] = new(string)
		rig.issueKey(keys[d.name], "--name", d.name+"-addresses", "--sender-domain", "shop.example",
			"--sender-domain", sdkMailgunDomain, "--sender-domain", "bücher.example", "--sender-domain", "xn--caf-dma.example",
			"--sender-domain", "*.bücher.example",
			"--quota", "1000/d")
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	for _, d := range sdkDrivers {
		for _, a := range sdkAddressSends {
			plans[d.lang] = append(plans[d.lang], sdkScenario{ID: d.name + "/" + a.name, SDK: d.name, Base: rig.base(d.name),
				Key: *keys[d.name], From: a.from, To: []string{a.to}})
		}
	}
	results := rig.run(plans)

	delivered := map[string]int{} // by SDK
	for p, sent := range rig.delivered(keys) {
		sdk := sent.by
		delivered[sdk]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%q\n%q", sdk, p.Body, sent.Body)
		}
	}
	for _, d := range sdkDrivers {
		want := 0
		for _, a := range sdkAddressSends {
			id := d.name + "/" + a.name
			r, ok := results[id]
			code, status := sdkAddressSendsRefused["*/"+a.name], 403
			if c, ok := sdkAddressSendsRefused[id]; ok {
				code, status = c, 400
			}
			switch {
			case sdkAddressSendsUnsupported[id]:
				if r.OK {
					t.Errorf("%s: the SDK sent what it refused before; take it out of sdkAddressSendsUnsupported", id)
				}
			case code != "":
				sdkRefused(t, id, r, code, status, "")
			case !ok || !r.OK:
				t.Errorf("%s: the SDK failed: %+v", id, r)
			default:
				want++
			}
		}
		if delivered[d.name] != want {
			t.Errorf("%s: the provider got %d sends, want %d", d.name, delivered[d.name], want)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sdkBatchLimits is how many messages (or recipients) each provider
// documents as its largest batch: SendGrid 1,000 personalizations, Postmark
// 500 messages in a batch or a bulk send, Resend 100 emails, Mailjet 50
// messages, Brevo 2,000 recipients (here 2,000 message versions), SES 50
// bulk entries (v2) or destinations (v1), Mailgun 1,000 recipients with
// recipient-variables.
var sdkBatchLimits = map[string]int{"sendgrid": 1000, "postmark": 500, "resend": 100, "mailjet": 50,
	"brevo": 2000, "ses": 50, "mailgun": 1000}

// TestE2ESDKsBatchesAtTheLimit sends, through each SDK with a batch or
// bulk call, one batch as large as its provider takes, with a key whose
// recipients per request allow it: each must reach the provider whole,
// counted for every recipient.
func TestE2ESDKsBatchesAtTheLimit(t *testing.T) {
	rig := startSDKRig(t, "")
	langOf, dialectOf := map[string]string{}, map[string]string{}
	for _, d := range sdkDrivers {
		langOf[d.name], dialectOf[d.name] = d.lang, d.dialect
	}
	keys := map[string]*string{} // by kind/sdk
	var ids []string
	for _, k := range sdkKinds {
		if k.name != "batch" && k.name != "bulk" {
			continue
		}
		for sdk := range k.sdks {
			id := k.name + "/" + sdk
			ids = append(ids, id)
			keys[id] = new(string)
			rig.issueKey(keys[id], "--name", sdk+"-"+k.name+"-limit", "--sender-domain", "shop.example",
				"--sender-domain", sdkMailgunDomain, "--max-recipients", "2000", "--quota", "2000/d")
		}
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	want := map[string]int{}
	for _, k := range sdkKinds {
		if k.name != "batch" && k.name != "bulk" {
			continue
		}
		for sdk := range k.sdks {
			n := sdkBatchLimits[dialectOf[sdk]]
			to := make([]string, n)
			for i := range to {
				to[i] = fmt.Sprintf("r%04d@rcpt.example", i)
			}
			sc := sdkScenario{ID: sdk + "/" + k.name + "-limit", SDK: sdk, Base: rig.base(sdk), Key: *keys[k.name+"/"+sdk],
				From: sdkAllowedFrom, To: to}
			k.set(&sc)
			plans[langOf[sdk]] = append(plans[langOf[sdk]], sc)
			want[k.name+"/"+sdk] = n
		}
	}
	results := rig.run(plans)

	delivered := map[string]int{}
	for p, sent := range rig.delivered(keys) {
		id, dialect := sent.by, sent.dialect
		delivered[id]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's", id)
		}
		d, _ := mailapi.Lookup(dialect)
		if m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body); err != nil || m.Recipients != want[id] {
			t.Errorf("%s: the request reads as %d recipients, %v; want %d", id, m.Recipients, err, want[id])
		}
	}
	for _, id := range ids {
		kind, sdk, _ := strings.Cut(id, "/")
		if r := results[sdk+"/"+kind+"-limit"]; !r.OK {
			t.Errorf("%s: the SDK failed: %+v", id, r)
		}
		if delivered[id] != 1 {
			t.Errorf("%s: the provider got %d requests, want 1", id, delivered[id])
		}
		if u, ok := rig.usageOf(t, *keys[id], 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == int64(want[id])
		}); !ok {
			t.Errorf("%s: the key's usage is %d allowed, %d recipients; want 1, %d", id, u.Allowed, u.Recipients, want[id])
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sdkBatchCopies are the batch calls that take a blind copy once for the
// whole batch, with the endpoint they post to: @sendgrid/mail's
// sendMultiple puts it in each personalization, Mailjet's v3.1 takes it in
// Globals, Brevo's top-level bcc goes with every message version that
// names none of its own, and Mailgun sends the bcc of a batch send (one
// with recipient-variables) a copy of the message to each to.
var sdkBatchCopies = map[string]string{
	"sendgrid": "/v3/mail/send", "mailjet": "/v3.1/send", "brevo": "/v3/smtp/email", "brevo-go": "/v3/smtp/email",
	"mailgun": "/v3/" + sdkMailgunDomain + "/messages", "mailgun-go": "/v3/" + sdkMailgunDomain + "/messages",
	"anymail-mailgun": "/v3/" + sdkMailgunDomain + "/messages", "symfony-mailgun": "/v3/" + sdkMailgunDomain + "/messages",
}

// TestE2ESDKsBatchCopiesCountForEveryMessage sends, through each SDK of
// sdkBatchCopies, a batch of a message to each of two recipients with one
// blind copy given for the whole batch: the provider sends four messages'
// worth of recipients, so the send counts four (delivered unchanged with a
// key that allows four per request, refused as too_many_recipients with a
// key that allows three). Before session 32 Brevo's top-level bcc counted
// once whatever the versions, and the second key sent it; before session
// 35 so did Mailgun's bcc beside recipient-variables.
func TestE2ESDKsBatchCopiesCountForEveryMessage(t *testing.T) {
	rig := startSDKRig(t, "")
	langOf := map[string]string{}
	for _, d := range sdkDrivers {
		langOf[d.name] = d.lang
	}
	keys := map[string]*string{} // by sdk, and sdk+"/3" for the key allowing three
	for sdk := range sdkBatchCopies {
		keys[sdk], keys[sdk+"/3"] = new(string), new(string)
		rig.issueKey(keys[sdk], "--name", sdk+"-copies", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain, "--max-recipients", "4", "--quota", "100/d")
		rig.issueKey(keys[sdk+"/3"], "--name", sdk+"-copies-3", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain, "--max-recipients", "3", "--quota", "100/d")
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	for sdk := range sdkBatchCopies {
		sc := sdkScenario{ID: sdk + "/copies", SDK: sdk, Base: rig.base(sdk), Key: *keys[sdk], From: sdkAllowedFrom,
			To: []string{"a@rcpt.example", "b@rcpt.example"}, Batch: true, Bcc: []string{"archive@shop.example"}}
		three := sc
		three.ID, three.Key = sdk+"/copies-3", *keys[sdk+"/3"]
		plans[langOf[sdk]] = append(plans[langOf[sdk]], sc, three)
	}
	results := rig.run(plans)

	delivered := map[string]int{}
	for p, sent := range rig.delivered(keys) {
		delivered[sent.by]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%s\n%s", sent.by, p.Body, sent.Body)
		}
		if want := sdkBatchCopies[strings.TrimSuffix(sent.by, "/3")]; p.Path != want {
			t.Errorf("%s: went to %s, want %s", sent.by, p.Path, want)
		}
		if !bytes.Contains(p.Body, []byte("archive@shop.example")) && !bytes.Contains(p.Body, []byte("archive%40shop.example")) { // Anymail's Mailgun form is url-encoded
			t.Errorf("%s: the provider's body has no blind copy: %s", sent.by, p.Body)
		}
		d, _ := mailapi.Lookup(sent.dialect)
		if m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body); err != nil || m.Recipients != 4 {
			t.Errorf("%s: the request reads as %d recipients, %v; want 4", sent.by, m.Recipients, err)
		}
	}
	for sdk := range sdkBatchCopies {
		if r := results[sdk+"/copies"]; !r.OK {
			t.Errorf("%s: the SDK failed: %+v", sdk, r)
		}
		sdkRefused(t, sdk+"/copies-3", results[sdk+"/copies-3"], "too_many_recipients", 403, "")
		if delivered[sdk] != 1 || delivered[sdk+"/3"] != 0 {
			t.Errorf("%s: the provider got %d requests with the key allowing four and %d with the one allowing three, want 1 and 0",
				sdk, delivered[sdk], delivered[sdk+"/3"])
		}
		if u, ok := rig.usageOf(t, *keys[sdk], 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == 4
		}); !ok {
			t.Errorf("%s: the key's usage is %d allowed, %d recipients; want 1, 4", sdk, u.Allowed, u.Recipients)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// TestE2ESDKsPersonalizationSenders sends, through both SendGrid SDKs, a
// batch of two personalizations whose second names a sender of its own
// (personalizations[].from, which SendGrid sends that message from): from
// the key's domain it is delivered unchanged, counted for both recipients;
// from another it is refused whole as sender_not_allowed, though the
// request's own from is allowed.
func TestE2ESDKsPersonalizationSenders(t *testing.T) {
	rig := startSDKRig(t, "")
	sdks := map[string]string{"sendgrid": "node", "sendgrid-go": "go"}
	keys := map[string]*string{}
	for sdk := range sdks {
		keys[sdk] = new(string)
		rig.issueKey(keys[sdk], "--name", sdk+"-pz-from", "--sender-domain", "shop.example", "--quota", "100/d")
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	for sdk, lang := range sdks {
		sc := sdkScenario{ID: sdk + "/pz-from", SDK: sdk, Base: rig.base(sdk), Key: *keys[sdk], From: sdkAllowedFrom,
			To: []string{"a@rcpt.example", "b@rcpt.example"}, Batch: true, SecondFrom: "Billing <billing@shop.example>"}
		refused := sc
		refused.ID, refused.SecondFrom = sdk+"/pz-from-refused", "CEO <ceo@evil.example>"
		plans[lang] = append(plans[lang], sc, refused)
	}
	results := rig.run(plans)

	delivered := map[string]int{}
	for p, sent := range rig.delivered(keys) {
		delivered[sent.by]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%s\n%s", sent.by, p.Body, sent.Body)
		}
		if !bytes.Contains(p.Body, []byte("billing@shop.example")) || bytes.Contains(p.Body, []byte("evil.example")) {
			t.Errorf("%s: the provider got a body without the second sender, or the refused one: %s", sent.by, p.Body)
		}
		d, _ := mailapi.Lookup("sendgrid")
		m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body)
		if err != nil || m.Recipients != 2 || !slices.Contains(m.Senders, "billing@shop.example") {
			t.Errorf("%s: the request reads as %d recipients from %q, %v; want 2, billing@shop.example among them",
				sent.by, m.Recipients, m.Senders, err)
		}
	}
	for sdk := range sdks {
		if r := results[sdk+"/pz-from"]; !r.OK {
			t.Errorf("%s: the SDK failed: %+v", sdk, r)
		}
		sdkRefused(t, sdk+"/pz-from-refused", results[sdk+"/pz-from-refused"], "sender_not_allowed", 403, "")
		if delivered[sdk] != 1 {
			t.Errorf("%s: the provider got %d requests, want 1", sdk, delivered[sdk])
		}
		if u, ok := rig.usageOf(t, *keys[sdk], 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == 2 && u.Denied["sender_not_allowed"] == 1
		}); !ok {
			t.Errorf("%s: the key's usage is %d allowed, %d recipients, denied %v; want 1, 2 and sender_not_allowed 1",
				sdk, u.Allowed, u.Recipients, u.Denied)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}
