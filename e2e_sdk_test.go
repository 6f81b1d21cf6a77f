package keygate_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"iter"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/keygate/caddy-keygate/internal/testservers"
	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/verifier"
)

// TestE2ESDKs is the compatibility suite: each provider's official SDKs,
// configured with nothing but the gateway's base URL and a keygate key,
// send through one gateway (a site per dialect) to a recording fake
// provider. The Node SDKs run from compat/node (npm ci from its lock file),
// the Go SDKs from compat/gosdk, a module of its own so the plugin's go.mod
// never requires them, the AWS SDK for Python from compat/python with
// Debian's python3-boto3, Symfony Mailer's API transports (what Symfony
// and Laravel applications send with) from compat/php with Debian's
// php-symfony-*-mailer, and Postmark's Ruby gem, alone and as Rails'
// ActionMailer delivers with it (through the mail gem), from compat/ruby
// with Debian's ruby-postmark and ruby-mail (no Python, PHP or Ruby package
// index is reachable here).
// Each SDK reaches its site through a tap that records what the SDK sent,
// so the test can count attempts (retries) and compare bodies byte for byte
// with what the provider received.

// sdkSites are the dialects with official SDKs, each a site of the gateway,
// with the scope lines for its sends and for the other calls applications
// make with the same key (sdkOps): reading a message's status or events,
// the suppression list, the sending domains, the stored templates, as the
// examples' Caddyfiles scope them.
var sdkSites = []struct {
	dialect     string
	sendScopes  []string
	otherScopes []string
	injected    string
}{
	{"sendgrid", []string{"POST /v3/mail/send"}, []string{"messages.read GET /v3/messages*", "suppressions.read GET /v3/suppression/*",
		"domains.read GET /v3/whitelabel/domains*", "templates.read GET /v3/templates*"}, `header_up Authorization "Bearer {env.PROVIDER_API_KEY}"`},
	{"postmark", []string{"POST /email*"}, []string{"messages.read GET /messages/outbound*", "suppressions.read GET /message-streams/*/suppressions/dump",
		"domains.read GET /domains*", "templates.read GET /templates*"}, `header_up X-Postmark-Server-Token {env.PROVIDER_API_KEY}`},
	{"mailgun", []string{"POST /v3/*/messages*"}, []string{"messages.read GET /v3/*/events*", "suppressions.read GET /v3/*/bounces*",
		"domains.read GET /v4/domains*", "templates.read GET /v3/*/templates*"}, `header_up Authorization "Basic {env.PROVIDER_BASIC}"`},
	{"resend", []string{"POST /emails*"}, []string{"messages.read GET /emails*", "domains.read GET /domains*", "templates.read GET /templates*"},
		`header_up Authorization "Bearer {env.PROVIDER_API_KEY}"`},
	// SES: a signing relay (aws-sigv4-proxy) would sit where the fake
	// provider is and sign with the real IAM credentials. The v1 API's
	// sends match these lines too, and its other actions as a POST to
	// their names.
	{"ses", []string{"POST /v2/email/outbound-*"}, []string{"messages.read GET /v2/email/insights/*", "suppressions.read GET /v2/email/suppression/*",
		"domains.read GET /v2/email/identities*", "domains.read POST /v2/email/list-identities", "domains.read POST /ListIdentities", "templates.read GET /v2/email/templates*",
		"templates.read POST /ListTemplates"}, ``},
	// Mailjet's v3.1 Send API, and its v3 one at both of its paths.
	{"mailjet", []string{"POST /v3.1/send", "POST /v3/send*"}, []string{"messages.read GET /v3/REST/message*", "domains.read GET /v3/REST/sender*",
		"templates.read GET /v3/REST/template*"}, `header_up Authorization "Basic {env.PROVIDER_BASIC}"`},
	{"brevo", []string{"POST /v3/smtp/email"}, []string{"messages.read GET /v3/smtp/emails*", "suppressions.read GET /v3/smtp/blockedContacts*",
		"domains.read GET /v3/senders/domains*", "templates.read GET /v3/smtp/templates*"}, `header_up Api-Key {env.PROVIDER_API_KEY}`},
}

// sdkOps are the calls other than sends each SDK makes in
// TestE2ESDKsDenials (compat/node/run.mjs's opDrivers, compat/gosdk's
// callOp), by the scope each
// needs on sdkSites' lines: an SDK lacks the calls its provider has no API
// for.
var sdkOps = map[string][]string{
	"sendgrid": {"status", "suppressions", "domains", "templates"}, "postmark": {"status", "suppressions", "domains", "templates"},
	"mailgun": {"status", "suppressions", "domains", "templates"}, "resend": {"status", "domains", "templates"},
	"ses": {"status", "suppressions", "domains", "templates"}, "ses-v1": {"domains", "templates"},
	"mailjet": {"status", "domains", "templates"}, "brevo": {"status", "suppressions", "domains", "templates"},
	"sendgrid-go": {"status", "suppressions", "domains", "templates"}, "postmark-go": {"status", "suppressions", "templates"},
	"mailgun-go": {"status", "suppressions", "domains", "templates"}, "resend-go": {"status", "domains", "templates"},
	"aws-sdk-go-v2": {"status", "suppressions", "domains", "templates"},
}

// sdkOpScope is the scope each op of sdkOps needs.
var sdkOpScope = map[string]string{"status": "messages.read", "suppressions": "suppressions.read", "domains": "domains.read", "templates": "templates.read"}

// injectedCredential is the header and value the fake provider must see
// for each dialect ("" for SES, which a relay signs).
func injectedCredential(dialect string) (string, string) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("api:provider-secret-123"))
	switch dialect {
	case "sendgrid", "resend":
		return "Authorization", "Bearer provider-secret-123"
	case "postmark":
		return "X-Postmark-Server-Token", "provider-secret-123"
	case "mailgun", "mailjet":
		return "Authorization", basic
	case "brevo":
		return "Api-Key", "provider-secret-123"
	}
	return "", ""
}

// sdkDriver is one SDK driven, by the name the drivers know it by, with the
// dialect it speaks and the language it runs in.
type sdkDriver struct{ name, dialect, lang string }

// sdkDrivers are the SDKs driven.
var sdkDrivers = []sdkDriver{
	{"sendgrid", "sendgrid", "node"}, {"postmark", "postmark", "node"}, {"mailgun", "mailgun", "node"},
	{"resend", "resend", "node"}, {"mailjet", "mailjet", "node"}, {"mailjet-v3", "mailjet", "node"},
	{"brevo", "brevo", "node"}, {"ses", "ses", "node"},
	{"nodemailer-ses", "ses", "node"}, {"ses-v1", "ses", "node"},
	{"sendgrid-go", "sendgrid", "go"}, {"mailgun-go", "mailgun", "go"},
	{"resend-go", "resend", "go"}, {"aws-sdk-go-v2", "ses", "go"}, {"mailjet-go", "mailjet", "go"}, {"mailjet-go-v3", "mailjet", "go"},
	{"postmark-go", "postmark", "go"}, {"brevo-go", "brevo", "go"}, {"aws-sdk-go-v2-ses", "ses", "go"},
	{"boto3", "ses", "python"}, {"boto3-ses", "ses", "python"}, {"anymail-amazon-ses", "ses", "python"},
	{"anymail-sendgrid", "sendgrid", "python"}, {"anymail-postmark", "postmark", "python"}, {"anymail-mailgun", "mailgun", "python"},
	{"anymail-mailjet", "mailjet", "python"}, {"anymail-brevo", "brevo", "python"},
	{"symfony-sendgrid", "sendgrid", "php"}, {"symfony-postmark", "postmark", "php"}, {"symfony-mailgun", "mailgun", "php"},
	{"symfony-mailjet", "mailjet", "php"}, {"symfony-brevo", "brevo", "php"},
	{"symfony-ses", "ses", "php"}, {"symfony-ses-raw", "ses", "php"},
	{"postmark-ruby", "postmark", "ruby"}, {"postmark-ruby-mail", "postmark", "ruby"},
}

// sdkEarlierDrivers are previous majors of SDKs whose newest major is set
// up differently (docs/sdks.md, "Earlier majors"): integrations not yet
// moved still run them. TestE2ESDKs drives them beside sdkDrivers.
var sdkEarlierDrivers = []sdkDriver{
	{"resend-5", "resend", "node"}, {"brevo-3", "brevo", "node"},
	{"mailgun-go-v4", "mailgun", "go"}, {"resend-go-v2", "resend", "go"},
}

// scriptDrivers are the drivers that run as a script in an interpreter:
// compat/<lang>/<script>, and what the machine lacks to run it (run from
// the package's directory; Node's also installs its SDKs).
var scriptDrivers = []struct {
	lang, interpreter, script string
	lacks                     func() error
}{
	{"node", "node", "run.mjs", func() error { return npmCI(filepath.Join("compat", "node")) }},
	{"python", debianPython, "run.py", func() error {
		if out, err := exec.Command(debianPython, "-c", "import boto3, anymail").CombinedOutput(); err != nil {
			return fmt.Errorf("the SDK compatibility suite runs boto3 and Django-Anymail with %s (apt-get install python3-boto3 python3-django-anymail): %v\n%s", debianPython, err, out)
		}
		return nil
	}},
	{"php", "php", "run.php", symfonyMailer},
	{"ruby", "ruby", "run.rb", func() error {
		if out, err := exec.Command("ruby", "-e", `require "postmark"; require "mail"`).CombinedOutput(); err != nil {
			return fmt.Errorf("the SDK compatibility suite runs Postmark's Ruby gem (apt-get install ruby ruby-postmark ruby-mail): %v\n%s", err, out)
		}
		return nil
	}},
}

// anymailError is the class Django-Anymail raises for every refusal an
// API answers: its requests-based backends' own, and the base class for its
// SES backend, which sends with boto3. isAnymail tells its drivers.
func anymailError(sdk string) string {
	if sdk == "anymail-amazon-ses" {
		return "AnymailAPIError"
	}
	return "AnymailRequestsAPIError"
}

func isAnymail(sdk string) bool { return strings.HasPrefix(sdk, "anymail-") }

// postmarkRubyError is the class Postmark's Ruby gem raises for a status:
// its own for a 401 and a 422, one class for every other.
func postmarkRubyError(status int) string {
	switch status {
	case 401:
		return "Postmark::InvalidApiKeyError"
	case 422:
		return "Postmark::ApiInputError"
	}
	return "Postmark::UnexpectedHttpResponseError"
}

// symfonyBridges are the Debian packages of the Symfony Mailer transports
// the PHP driver loads, by the directory each installs.
var symfonyBridges = map[string]string{
	"Sendgrid": "php-symfony-sendgrid-mailer", "Postmark": "php-symfony-postmark-mailer",
	"Mailgun": "php-symfony-mailgun-mailer", "Mailjet": "php-symfony-mailjet-mailer",
	"Sendinblue": "php-symfony-sendinblue-mailer", "Amazon": "php-symfony-amazon-mailer",
}

// awsAttempts is how many times each AWS SDK sends a request that is refused
// for its rate by default: the JavaScript and Go SDKs' standard retry mode
// makes three attempts (Nodemailer sends with the JavaScript SDK's client),
// botocore's legacy mode (boto3's default, and Anymail's SES backend's) five.
var awsAttempts = map[string]int{"ses": 3, "nodemailer-ses": 3, "ses-v1": 3, "aws-sdk-go-v2": 3, "aws-sdk-go-v2-ses": 3,
	"boto3": 5, "boto3-ses": 5, "anymail-amazon-ses": 5}

// sdkQuotaStatus is the status of quota_exceeded on each dialect's route:
// what that provider answers for a used-up sending limit.
var sdkQuotaStatus = map[string]int{"sendgrid": 401, "postmark": 422, "mailgun": 429, "resend": 429, "ses": 400, "mailjet": 429, "brevo": 402}

// debianPython is the interpreter that sees Debian's python3-boto3, whatever
// python3 comes first in PATH (pyenv's, here).
const debianPython = "/usr/bin/python3"

const (
	sdkMailgunDomain = "mg.shop.example"
	sdkAllowedFrom   = "orders@shop.example"
)

type sdkScenario struct {
	ID       string   `json:"id"`
	SDK      string   `json:"sdk"`
	Base     string   `json:"base"`
	Key      string   `json:"key"`
	From     string   `json:"from"`
	To       []string `json:"to"`
	Sends    int      `json:"sends,omitempty"`
	NoRetry  bool     `json:"noRetry,omitempty"`
	Retrying bool     `json:"retrying,omitempty"`
	// HTML, when set, is sent as the message's HTML part beside the text.
	HTML string `json:"html,omitempty"`
	// Batch sends a message per recipient in one request, with the SDK's
	// batch or bulk call; Bcc, when set, is given once for the whole batch,
	// as the SDK takes it (a blind copy of every message), and SecondFrom
	// is the second message's own sender (SendGrid's personalizations[].from).
	Batch      bool     `json:"batch,omitempty"`
	Bcc        []string `json:"bcc,omitempty"`
	SecondFrom string   `json:"secondFrom,omitempty"`
	// Template sends one message with a template stored at the provider.
	Template bool `json:"template,omitempty"`
	// MIME sends a message the application built as MIME itself.
	MIME bool `json:"mime,omitempty"`
	// Attachment sends one message with a 60 KB binary attachment.
	Attachment bool `json:"attachment,omitempty"`
	// Bulk sends one message to every recipient with the provider's bulk
	// (broadcast) API.
	Bulk bool `json:"bulk,omitempty"`
	// Files, on an attachment scenario, are its attachments in place of
	// the invoice; Subject, when set, is the message's subject.
	Files   []sdkFile `json:"files,omitempty"`
	Subject string    `json:"subject,omitempty"`
	// Extras sends one message with what applications add beside the
	// addresses: custom headers (List-Unsubscribe, List-Unsubscribe-Post,
	// X-Entity-Ref-ID), tags, categories and metadata, tracking settings,
	// a send time in the future and reply-to addresses.
	Extras bool `json:"extras,omitempty"`
	// DefaultClient has Symfony's transports make their own HTTP client,
	// as Transport::fromDsn does when given none (plain PHP), not the
	// suite's: the SES transports' client then retries (async-aws).
	DefaultClient bool `json:"defaultClient,omitempty"`
	// Op, when set, makes a call other than a send (sdkOps) in place of
	// the send.
	Op string `json:"op,omitempty"`
}

// sdkFile is an attachment as a scenario gives it to the drivers: a file
// name, a content type, the content in base64, and for an inline one (an
// image the HTML shows) its content id.
type sdkFile struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Content string `json:"content"`
	CID     string `json:"cid,omitempty"`
}

// sdkNewsletter is about 20 KB of HTML as a shop's newsletter holds it, with
// quotes, backslashes, '<' and '&' (which SDKs escape in JSON as they
// choose) and text that reads like a JSON from field naming from, so a
// reader that lost track of the escapes would see a different sender.
func sdkNewsletter(from string) string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><body>\n")
	for i := 0; b.Len() < 20_000; i++ {
		fmt.Fprintf(&b, `<p class="lead" data-x='{"from":{"email":"%s"}}'>Item %d: "news" \\ <a href="https://shop.example/n/%d?a=1&b=2">more</a></p>`+"\n", from, i, i)
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

type sdkResult struct {
	ID       string `json:"id"`
	OK       bool   `json:"ok"`
	Text     string `json:"text"`
	Name     string `json:"name"`
	Status   int    `json:"status"`
	Attempts int    `json:"attempts"`
	MS       int64  `json:"ms"`
}

func TestE2ESDKs(t *testing.T) {
	rig := startSDKRig(t, "")
	drivers := slices.Concat(sdkDrivers, sdkEarlierDrivers)
	g, provider, taps := rig.g, rig.provider, rig.taps

	// Keys: per SDK one with a sender domain and one recipient per request,
	// one with a rate of one request an hour, one with a quota of one
	// recipient a day, one revoked, and one rotated with a grace period
	// (the old key and its successor); Brevo also one with a rate of one a
	// second.
	type sdkKeys struct{ policy, rate, quota, revoked, rotatedOld, rotatedNew, fastRate, named string }
	keys := map[string]*sdkKeys{}
	for _, d := range drivers {
		k := &sdkKeys{}
		keys[d.name] = k
		rig.issueKey(&k.policy, "--name", d.name+"-policy", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain, "--max-recipients", "1")
		rig.issueKey(&k.rate, "--name", d.name+"-rate", "--rate", "1/h")
		rig.issueKey(&k.quota, "--name", d.name+"-quota", "--quota", "1/d")
		rig.issueKey(&k.revoked, "--name", d.name+"-revoked")
		rig.issueKey(&k.rotatedOld, "--name", d.name+"-rotated")
		rig.issueKey(&k.named, "--name", d.name+"-named", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain, "--max-recipients", "1")
	}
	rig.issueKey(&keys["brevo"].fastRate, "--name", "brevo-fast", "--rate", "1/s")
	rig.issuing.Wait()
	for _, k := range keys {
		if r := g.admin("POST", "/keygate/keys/"+rig.idOf[k.revoked]+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		r := g.admin("POST", "/keygate/keys/"+rig.idOf[k.rotatedOld]+"/rotate", map[string]string{"grace": "1h"})
		var rotated issuedKey
		if err := json.Unmarshal(r.Body, &rotated); r.Status != 201 || err != nil || rotated.Key == "" {
			t.Fatalf("rotate: %d %s", r.Status, r.Body)
		}
		k.rotatedNew = rotated.Key
	}

	// The scenarios. A rate or quota scenario sends twice: the first send
	// uses up the limit, the second is refused. unknownKey is well-formed
	// but was never issued.
	unknownKey, err := verifier.Generate("kg", "live")
	if err != nil {
		t.Fatal(err)
	}
	plans := map[string][]sdkScenario{} // by language
	for _, d := range drivers {
		k, base := keys[d.name], rig.base(d.name)
		sc := func(name, key, from string, to []string) sdkScenario {
			return sdkScenario{ID: d.name + "/" + name, SDK: d.name, Base: base, Key: key, From: from, To: to}
		}
		list := []sdkScenario{
			sc("allowed", k.policy, sdkAllowedFrom, []string{"a@rcpt.example"}),
			sc("sender", k.policy, "ceo@evil.example", []string{"a@rcpt.example"}),
			sc("recipients", k.policy, sdkAllowedFrom, []string{"a@rcpt.example", "b@rcpt.example"}),
		}
		// A 20 KB HTML part: allowed from the key's domain, refused from
		// another whatever the HTML says.
		html := sc("allowed-html", k.policy, sdkAllowedFrom, []string{"a@rcpt.example"})
		html.HTML = sdkNewsletter("ceo@evil.example")
		evil := sc("sender-html", k.policy, "ceo@evil.example", []string{"a@rcpt.example"})
		evil.HTML = sdkNewsletter(sdkAllowedFrom)
		list = append(list, html, evil)
		list = append(list, sc("unknown-key", unknownKey, sdkAllowedFrom, []string{"a@rcpt.example"}),
			sc("revoked", k.revoked, sdkAllowedFrom, []string{"a@rcpt.example"}),
			sc("rotated-old", k.rotatedOld, sdkAllowedFrom, []string{"a@rcpt.example"}),
			sc("rotated-new", k.rotatedNew, sdkAllowedFrom, []string{"a@rcpt.example"}))
		rate := sc("rate", k.rate, sdkAllowedFrom, []string{"a@rcpt.example"})
		rate.Sends = 2
		// Brevo's SDK waits out Retry-After (up to a minute) twice by
		// default; the fast-rate scenario shows that, this one the error.
		rate.NoRetry = d.name == "brevo"
		quota := sc("quota", k.quota, sdkAllowedFrom, []string{"a@rcpt.example"})
		quota.Sends = 2
		// More recipients than the whole quota, refused in any order
		// with the quota scenario's sends: the error says so, not that
		// the quota is used up.
		quotaLarge := sc("quota-large", k.quota, sdkAllowedFrom, []string{"a@rcpt.example", "b@rcpt.example"})
		list = append(list, rate, quota, quotaLarge)
		if d.name == "brevo" {
			fast := sc("rate-retry", k.fastRate, sdkAllowedFrom, []string{"a@rcpt.example"})
			fast.Sends = 2
			list = append(list, fast)
		}
		if d.name == "sendgrid-go" {
			// sendgrid-go's opt-in MakeRequestRetry retries every 429 (the
			// rate limit: seven attempts), so a quota must not be one.
			for _, r := range []sdkScenario{
				sc("rate-retrying", k.rate, sdkAllowedFrom, []string{"a@rcpt.example"}),
				sc("quota-retrying", k.quota, sdkAllowedFrom, []string{"a@rcpt.example"}),
			} {
				r.Retrying = true
				list = append(list, r)
			}
		}
		// Names that are not ASCII, one with a comma and so quoted. PHP and
		// Python escape them in JSON (\u00e4), Node and Go write them as
		// UTF-8, and so does Ruby; Python's email package and Nodemailer
		// write them in MIME as encoded words. The SDKs that take a name and
		// an address apart (SendGrid's Go library, Mailjet's and Brevo's)
		// get them apart, the others "Name <address>" as written.
		list = append(list,
			sc("named", k.named, `"Bäckerei Müller, GmbH" <`+sdkAllowedFrom+`>`, []string{"Zoë Ünal <a@rcpt.example>"}),
			sc("named-sender", k.named, `"Bäckerei Müller, GmbH" <ceo@evil.example>`, []string{"Zoë Ünal <a@rcpt.example>"}))
		plans[d.lang] = append(plans[d.lang], list...)
	}

	results := rig.run(plans)

	// What each SDK must show for each scenario: success, or an error whose
	// text names keygate's code (keygate puts "keygate <code>: <message>"
	// where each SDK reads its provider's error message).
	for _, d := range drivers {
		type expect struct {
			scenario string
			code     string // "" for success
			status   int
			name     string // the SDK's error class or type, where it has one
			text     string // what the error says, if not "keygate <code>"
		}
		// The error's class or name, by scenario: the AWS SDKs take it from
		// x-amzn-ErrorType, Symfony's transports throw one class for every
		// HTTP failure, and a few others have names of their own.
		names := map[string]map[string]string{
			"resend":    {"sender": "invalid_from_address", "unknown-key": "invalid_api_key", "rate": "rate_limit_exceeded", "quota": "daily_quota_exceeded"},
			"postmark":  {"unknown-key": "InvalidAPIKeyError"},
			"resend-go": {"rate": "RateLimitError"},
			// A Mailgun route's quota_exceeded is a 429 too.
			"mailgun-go": {"rate": "RateLimitedError", "quota": "RateLimitedError"},
			// The earlier majors: resend 5 returns the body as resend 6
			// does, resend-go v2 has the RateLimitError, mailgun-go v4 one
			// error type for every status, and @getbrevo/brevo 3.0.4
			// passes on axios's error, the body in its response.data.
			"resend-5":     {"sender": "invalid_from_address", "unknown-key": "invalid_api_key", "rate": "rate_limit_exceeded", "quota": "daily_quota_exceeded"},
			"resend-go-v2": {"rate": "RateLimitError"},
			"brevo-3":      {"sender": "AxiosError", "unknown-key": "AxiosError", "rate": "AxiosError", "quota": "AxiosError"},
		}[d.name]
		switch {
		case d.lang == "php":
			names = map[string]string{"sender": "HttpTransportException", "recipients": "HttpTransportException",
				"unknown-key": "HttpTransportException", "rate": "HttpTransportException", "quota": "HttpTransportException"}
		case d.lang == "ruby":
			names = map[string]string{"sender": postmarkRubyError(403), "recipients": postmarkRubyError(403),
				"unknown-key": postmarkRubyError(401), "rate": postmarkRubyError(429), "quota": postmarkRubyError(422)}
		case isAnymail(d.name):
			e := anymailError(d.name)
			names = map[string]string{"sender": e, "recipients": e, "unknown-key": e, "rate": e, "quota": e}
		case d.dialect == "ses":
			names = map[string]string{"sender": "MessageRejected", "recipients": "BadRequestException",
				"unknown-key": "UnrecognizedClientException", "rate": "TooManyRequestsException", "quota": "SendingPausedException"}
		}
		want := []expect{
			{"allowed", "", 0, "", ""},
			{"sender", "sender_not_allowed", 403, names["sender"], ""},
			{"recipients", "too_many_recipients", 403, names["recipients"], ""},
			{"unknown-key", "invalid_key", 401, names["unknown-key"], ""},
			{"revoked", "revoked_key", 401, names["unknown-key"], ""},
			{"rotated-old", "", 0, "", ""},
			{"rotated-new", "", 0, "", ""},
			{"rate", "rate_limited", 429, names["rate"], ""},
			{"quota", "quota_exceeded", sdkQuotaStatus[d.dialect], names["quota"], ""},
			{"quota-large", "quota_exceeded", sdkQuotaStatus[d.dialect], names["quota"], "keygate quota_exceeded: the message has 2 recipients, more than"},
		}
		want = append(want, expect{scenario: "allowed-html"}, expect{"sender-html", "sender_not_allowed", 403, want[1].name, ""})
		want = append(want, expect{scenario: "named"}, expect{"named-sender", "sender_not_allowed", 403, want[1].name, ""})
		if d.name == "brevo" {
			want = append(want, expect{scenario: "rate-retry"})
		}
		if d.name == "sendgrid-go" {
			want = append(want,
				expect{"rate-retrying", "rate_limited", 0, "", "rate limit retry exceeded"},
				expect{"quota-retrying", "quota_exceeded", 401, "", ""})
		}
		for _, w := range want {
			id := d.name + "/" + w.scenario
			r, ok := results[id]
			text := w.text
			if text == "" {
				text = "keygate " + w.code
			}
			switch {
			case !ok:
				t.Errorf("%s: no result", id)
			case w.code == "" && !r.OK:
				t.Errorf("%s: the SDK failed: %+v", id, r)
			case w.code != "" && (r.OK || !strings.Contains(r.Text, text)):
				t.Errorf("%s: the SDK's error does not say %q: %+v", id, text, r)
			case w.code != "" && r.Status != 0 && r.Status != w.status:
				t.Errorf("%s: the SDK saw status %d, want %d", id, r.Status, w.status)
			case w.name != "" && r.Name != w.name:
				t.Errorf("%s: the SDK's error is a %q, want %q", id, r.Name, w.name)
			}
		}
		// resend-go reads Resend's RateLimit-Limit, -Remaining and -Reset
		// into its RateLimitError: the key's limit, not blanks.
		if r := results[d.name+"/rate"]; (d.name == "resend-go" || d.name == "resend-go-v2") && !resendRateLimit.MatchString(r.Text) {
			t.Errorf("resend-go/rate: the RateLimitError does not carry the key's limit (%s): %+v", resendRateLimit, r)
		}
		// mailgun-go reads X-RateLimit-Reset into its RateLimitedError's
		// ResetAt: when the key may send again, about an hour from now.
		if r := results[d.name+"/rate"]; d.name == "mailgun-go" {
			var reset int64
			if m := mailgunResetAt.FindStringSubmatch(r.Text); m != nil {
				reset, _ = strconv.ParseInt(m[1], 10, 64)
			}
			if in := time.Until(time.Unix(reset, 0)); in < 55*time.Minute || in > time.Hour+time.Minute {
				t.Errorf("mailgun-go/rate: the RateLimitedError's ResetAt is not when the key may send again: %+v", r)
			}
		}
		if r, want := results[d.name+"/rate"], awsAttempts[d.name]; want != 0 && r.Attempts != want {
			t.Errorf("%s/rate: the SDK reports %d attempts, want its default %d", d.name, r.Attempts, want)
		}
	}

	// What each SDK's policy key was counted for, as the admin API reports
	// it (counts land within a second): its two sends of one recipient
	// each, its two sender refusals and its recipients refusal.
	for _, d := range drivers {
		if u, ok := rig.usageOf(t, keys[d.name].policy, 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 2 && u.Recipients == 2 && u.Denied["sender_not_allowed"] == 2 && u.Denied["too_many_recipients"] == 1
		}); !ok {
			t.Errorf("%s: the policy key's usage is %d allowed, %d recipients, denied %v; want 2, 2, sender_not_allowed 2 and too_many_recipients 1",
				d.name, u.Allowed, u.Recipients, u.Denied)
		}
		// The named sends: one allowed with its one recipient, one refused
		// for its sender, whose name did not hide the address.
		if u, ok := rig.usageOf(t, keys[d.name].named, 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == 1 && u.Denied["sender_not_allowed"] == 1
		}); !ok {
			t.Errorf("%s: the named key's usage is %d allowed, %d recipients, denied %v; want 1, 1 and sender_not_allowed 1",
				d.name, u.Allowed, u.Recipients, u.Denied)
		}
	}

	// Attempts, counted at the taps: a refusal is never retried, except a
	// rate limit by the SDKs that retry 429 by default (the AWS SDKs, see
	// awsAttempts; Brevo's waits out Retry-After and then succeeds).
	for _, d := range drivers {
		k, tp := keys[d.name], taps[d.dialect]
		rateAttempts := max(1, awsAttempts[d.name])
		switch d.name {
		case "sendgrid-go":
			rateAttempts = 1 + 7 // Send, then MakeRequestRetry's seven
		}
		quotaSends := 2
		if d.name == "sendgrid-go" {
			quotaSends = 3
		}
		for _, c := range []struct {
			what string
			key  string
			want int
		}{
			{"policy key (allowed, sender, recipients, allowed-html, sender-html)", k.policy, 5},
			{"rate key (allowed, then refused)", k.rate, 1 + rateAttempts},
			{"quota key (allowed, then refused, and a send larger than the quota refused)", k.quota, quotaSends + 1},
			{"revoked key (refused, not retried)", k.revoked, 1},
			{"rotated key, old (allowed in its grace period)", k.rotatedOld, 1},
			{"rotated key, new (allowed)", k.rotatedNew, 1},
			{"named key (named, named-sender)", k.named, 2},
		} {
			if got := tp.countKey(c.key); got != c.want {
				t.Errorf("%s: %s: %d requests reached the gateway, want %d", d.name, c.what, got, c.want)
			}
		}
		// Each attempt of a refused send is counted once, as a denial,
		// and the one send taken once with its recipient: a retrying
		// SDK's attempts are neither lost nor counted twice.
		for _, c := range []struct {
			what, key, code string
			refused         int64
		}{
			{"rate", k.rate, "rate_limited", int64(rateAttempts)},
			{"quota", k.quota, "quota_exceeded", int64(quotaSends)}, // quota-large's refusal too
		} {
			if u, ok := rig.usageOf(t, c.key, 3*time.Second, func(u usageJSON) bool {
				return u.Allowed == 1 && u.Recipients == 1 && u.Denied[c.code] == c.refused && len(u.Denied) == 1
			}); !ok {
				t.Errorf("%s: the %s key's usage is %d allowed, %d recipients, denied %v; want 1, 1 and %s %d",
					d.name, c.what, u.Allowed, u.Recipients, u.Denied, c.code, c.refused)
			}
		}
	}
	sdksOf := map[string]int{} // dialect -> how many SDKs speak it
	for _, d := range drivers {
		sdksOf[d.dialect]++
	}
	for dialect, n := range sdksOf {
		if got := taps[dialect].countKey(unknownKey); got != n {
			t.Errorf("%s: an unknown key: %d requests, want %d (one per SDK, no retry)", dialect, got, n)
		}
	}
	if got := taps["brevo"].countKey(keys["brevo"].fastRate); got != 3 {
		t.Errorf("brevo rate-retry: %d requests, want 3 (allowed, 429, one retry after Retry-After)", got)
	}
	if r := results["brevo/rate-retry"]; r.MS < 900 {
		t.Errorf("brevo rate-retry took %d ms: the SDK did not wait for Retry-After", r.MS)
	}

	// What the provider received: every allowed send, byte for byte as the
	// SDK sent it, with the injected credential and no keygate key.
	var allKeys []string
	for _, k := range keys {
		allKeys = append(allKeys, k.policy, k.rate, k.quota, k.revoked, k.rotatedOld, k.rotatedNew)
		if k.named != "" {
			allKeys = append(allKeys, k.named)
		}
	}
	allKeys = append(allKeys, keys["brevo"].fastRate)
	got := provider.requests()
	perDialect := map[string]int{}
	for _, p := range got {
		dialect, id := p.Header.Get("X-Compat-Dialect"), p.Header.Get("X-Compat-Tap-Id")
		sent, ok := taps[dialect].byID(id)
		if !ok {
			t.Errorf("the provider got a request no SDK sent: %s %s", p.Method, p.Path)
			continue
		}
		perDialect[dialect]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s %s: the provider's body differs from the SDK's:\n%q\n%q", dialect, p.Path, p.Body, sent.Body)
		}
		if name, value := injectedCredential(dialect); name != "" && p.Header.Get(name) != value {
			t.Errorf("%s: the provider got %s %q, want the injected credential", dialect, name, p.Header.Get(name))
		}
		if dialect == "ses" && p.Header.Get("Authorization") != "" {
			t.Errorf("ses: the relay got the client's Authorization %q", p.Header.Get("Authorization"))
		}
		for name, vs := range p.Header {
			for _, v := range vs {
				for _, key := range allKeys {
					if strings.Contains(v, key) || strings.Contains(decodeBasicHeader(v), key) {
						t.Errorf("%s: the provider got a keygate key in %s", dialect, name)
					}
				}
			}
		}
	}
	// Per SDK: the allowed send, the allowed HTML send, the first send of
	// the rate and quota scenarios, the rotated key's two and the named
	// send; Brevo's fast-rate key adds two.
	for dialect, sdks := range sdksOf {
		n := 7 * sdks
		if dialect == "brevo" {
			n += 2
		}
		if perDialect[dialect] != n {
			t.Errorf("%s: the provider got %d sends, want %d", dialect, perDialect[dialect], n)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sdkKinds are the other ways an application sends through its SDK, and
// for each the SDKs that have it with the endpoint their call posts to:
//   - batch: a message per recipient in one request, the SDK's batch or
//     bulk call, as shops send order mails and newsletters;
//   - template: one message to every recipient with a template stored at
//     the provider (the request names the sender);
//   - mime: a message the application built as MIME itself;
//   - attachment: one message with a 60 KB binary attachment (an invoice).
//   - bulk: one message to each recipient through a broadcast API, its
//     content given once;
//   - batch-template: a message per recipient in one request, each with a
//     stored template;
//   - extras: one message with custom headers (List-Unsubscribe,
//     List-Unsubscribe-Post, X-Entity-Ref-ID), tags and metadata, tracking
//     settings, a scheduled send time and reply-to addresses.
var sdkKinds = []struct {
	name string
	sdks map[string]string
	set  func(*sdkScenario)
}{
	{"batch", map[string]string{
		"sendgrid": "/v3/mail/send",                  // sendMultiple: a personalization per recipient
		"postmark": "/email/batch",                   // sendEmailBatch
		"resend":   "/emails/batch",                  // batch.send
		"mailjet":  "/v3.1/send",                     // Messages, one per recipient
		"brevo":    "/v3/smtp/email",                 // messageVersions
		"ses":      "/v2/email/outbound-bulk-emails", // SendBulkEmailCommand
		"mailgun":  "/v3/mg.shop.example/messages",   // recipient-variables

		"sendgrid-go":   "/v3/mail/send",                  // a personalization per recipient
		"postmark-go":   "/email/batch",                   // SendEmailBatch
		"resend-go":     "/emails/batch",                  // Batch.Send
		"mailjet-go":    "/v3.1/send",                     // SendMailV31 with a message per recipient
		"brevo-go":      "/v3/smtp/email",                 // MessageVersions
		"aws-sdk-go-v2": "/v2/email/outbound-bulk-emails", // SendBulkEmail
		"mailgun-go":    "/v3/mg.shop.example/messages",   // AddRecipientAndVariables

		"boto3":           "/v2/email/outbound-bulk-emails", // send_bulk_email
		"postmark-ruby":   "/email/batch",                   // deliver_in_batches
		"symfony-mailgun": "/v3/mg.shop.example/messages",   // a recipient-variables header

		// SES's v1 API: SendBulkTemplatedEmail, a form POSTed to /.
		"ses-v1": "/", "aws-sdk-go-v2-ses": "/", "boto3-ses": "/",
		// Mailjet's v3 Send API: Messages, one per recipient.
		"mailjet-v3": "/v3/send", "mailjet-go-v3": "/v3/send/message",

		// Django-Anymail's merge_data (its Sendinblue backend has no batch).
		"anymail-sendgrid": "/v3/mail/send",
		"anymail-postmark": "/email/batch",
		"anymail-mailgun":  "/v3/mg.shop.example/messages", // recipient-variables
		"anymail-mailjet":  "/v3.1/send",
	}, func(sc *sdkScenario) { sc.Batch = true }},
	{"template", map[string]string{
		"sendgrid": "/v3/mail/send",                // templateId, dynamicTemplateData
		"postmark": "/email/withTemplate",          // sendEmailWithTemplate
		"mailgun":  "/v3/mg.shop.example/messages", // template
		"brevo":    "/v3/smtp/email",               // templateId
		"ses":      "/v2/email/outbound-emails",    // Content.Template

		"sendgrid-go":   "/v3/mail/send",
		"postmark-go":   "/email/withTemplate", // SendTemplatedEmail
		"mailgun-go":    "/v3/mg.shop.example/messages",
		"brevo-go":      "/v3/smtp/email",
		"aws-sdk-go-v2": "/v2/email/outbound-emails",

		"postmark-ruby": "/email/withTemplate",       // deliver_with_template
		"boto3":         "/v2/email/outbound-emails", // send_email with Content.Template

		// SES's v1 SendTemplatedEmail; Anymail's SES backend sends its
		// templates with SendBulkTemplatedEmail.
		"ses-v1": "/", "aws-sdk-go-v2-ses": "/", "boto3-ses": "/", "anymail-amazon-ses": "/",
		// Mailjet's v3 Mj-TemplateID, beside FromEmail.
		"mailjet-v3": "/v3/send", "mailjet-go-v3": "/v3/send/message",

		// Django-Anymail's template_id.
		"anymail-sendgrid": "/v3/mail/send",
		"anymail-postmark": "/email/withTemplate/", // with a slash, which keygate reads as the send path it is
		"anymail-mailgun":  "/v3/mg.shop.example/messages",
		"anymail-mailjet":  "/v3.1/send",
		"anymail-brevo":    "/v3/smtp/email",
	}, func(sc *sdkScenario) { sc.Template = true }},
	{"mime", map[string]string{
		"mailgun":    "/v3/mg.shop.example/messages.mime", // messages.create with message
		"mailgun-go": "/v3/mg.shop.example/messages.mime", // NewMIMEMessage
		// SES's v1 SendRawEmail, with Source and Destinations.
		"ses-v1": "/", "aws-sdk-go-v2-ses": "/", "boto3-ses": "/",
		// SES's v2 Content.Raw, with FromEmailAddress and Destination.
		"boto3": "/v2/email/outbound-emails",
	}, func(sc *sdkScenario) { sc.MIME = true }},
	{"attachment", map[string]string{
		"sendgrid": "/v3/mail/send", "postmark": "/email", "mailgun": "/v3/mg.shop.example/messages", "resend": "/emails",
		"mailjet": "/v3.1/send", "brevo": "/v3/smtp/email", "ses": "/v2/email/outbound-emails", "nodemailer-ses": "/v2/email/outbound-emails",

		"sendgrid-go": "/v3/mail/send", "postmark-go": "/email", "mailgun-go": "/v3/mg.shop.example/messages", "resend-go": "/emails",
		"mailjet-go": "/v3.1/send", "brevo-go": "/v3/smtp/email", "aws-sdk-go-v2": "/v2/email/outbound-emails",

		"postmark-ruby": "/email", "postmark-ruby-mail": "/email",
		"anymail-sendgrid": "/v3/mail/send", "anymail-postmark": "/email", "anymail-mailgun": "/v3/mg.shop.example/messages",
		"anymail-mailjet": "/v3.1/send", "anymail-brevo": "/v3/smtp/email",
		// SES's v1 API takes attachments in raw MIME: SendRawEmail, the
		// recipients from the MIME headers (Anymail: from Destinations).
		"ses-v1": "/", "aws-sdk-go-v2-ses": "/", "boto3-ses": "/", "anymail-amazon-ses": "/",
		"mailjet-v3": "/v3/send", "mailjet-go-v3": "/v3/send/message",
		"boto3": "/v2/email/outbound-emails", // SES's v2 Content.Raw
	}, func(sc *sdkScenario) { sc.Attachment = true }},
	{"bulk", map[string]string{
		"postmark": "/email/bulk", // sendBulkEmail
	}, func(sc *sdkScenario) { sc.Bulk = true }},
	{"batch-template", map[string]string{
		"postmark": "/email/batchWithTemplates", "postmark-go": "/email/batchWithTemplates", // sendEmailBatchWithTemplates, SendTemplatedEmailBatch
		"postmark-ruby": "/email/batchWithTemplates", // deliver_in_batches_with_templates
	}, func(sc *sdkScenario) { sc.Batch, sc.Template = true, true }},
	{"extras", map[string]string{
		"sendgrid": "/v3/mail/send", // headers, categories, customArgs, sendAt, trackingSettings, replyToList, asm
		"postmark": "/email",        // Headers, Tag, Metadata, TrackOpens, TrackLinks, ReplyTo, MessageStream
		"mailgun":  "/v3/mg.shop.example/messages",
		"resend":   "/emails",    // headers, tags, replyTo, scheduledAt
		"mailjet":  "/v3.1/send", // Headers, ReplyTo, CustomID, EventPayload, TrackOpens, …
		"brevo":    "/v3/smtp/email",
		"ses":      "/v2/email/outbound-emails", // ReplyToAddresses, EmailTags, ListManagementOptions, Simple.Headers

		"mailjet-v3": "/v3/send", "ses-v1": "/", "nodemailer-ses": "/v2/email/outbound-emails",

		"sendgrid-go": "/v3/mail/send", "postmark-go": "/email", "mailgun-go": "/v3/mg.shop.example/messages", "resend-go": "/emails",
		"mailjet-go": "/v3.1/send", "brevo-go": "/v3/smtp/email", "aws-sdk-go-v2": "/v2/email/outbound-emails", "aws-sdk-go-v2-ses": "/",

		"boto3": "/v2/email/outbound-emails", "boto3-ses": "/",
		"postmark-ruby": "/email", "postmark-ruby-mail": "/email",
		// Django-Anymail's extra_headers, reply_to, tags, metadata,
		// track_opens, track_clicks, send_at and esp_extra.
		"anymail-sendgrid": "/v3/mail/send", "anymail-postmark": "/email", "anymail-mailgun": "/v3/mg.shop.example/messages",
		"anymail-mailjet": "/v3.1/send", "anymail-brevo": "/v3/smtp/email", "anymail-amazon-ses": "/",
		// Symfony Mailer's headers, reply-to, TagHeader and MetadataHeader.
		"symfony-sendgrid": "/v3/mail/send", "symfony-postmark": "/email", "symfony-mailgun": "/v3/mg.shop.example/messages",
		"symfony-mailjet": "/v3.1/send", "symfony-brevo": "/v3/smtp/email", "symfony-ses": "/v2/email/outbound-emails",
		"symfony-ses-raw": "/v2/email/outbound-emails",
	}, func(sc *sdkScenario) { sc.Extras = true }},
}

// TestE2ESDKsBatchesAndTemplates sends, through each SDK that can, a batch
// of a message for each of two recipients in one request, and a message to
// both with a stored template. keygate must read every message: each
// request is delivered whole and counted once for both recipients, and the
// same request from a sender the key does not allow is refused whole.
func TestE2ESDKsBatchesAndTemplates(t *testing.T) {
	rig := startSDKRig(t, "")
	keys := map[string]*string{} // by scenario id prefix, kind/sdk
	for _, k := range sdkKinds {
		for sdk := range k.sdks {
			keys[k.name+"/"+sdk] = new(string)
			rig.issueKey(keys[k.name+"/"+sdk], "--name", sdk+"-"+k.name, "--sender-domain", "shop.example",
				"--sender-domain", sdkMailgunDomain, "--quota", "100/d")
		}
	}
	rig.issuing.Wait()
	langOf, dialectOf := map[string]string{}, map[string]string{}
	for _, d := range sdkDrivers {
		langOf[d.name], dialectOf[d.name] = d.lang, d.dialect
	}
	plans := map[string][]sdkScenario{}
	for _, k := range sdkKinds {
		for sdk := range k.sdks {
			key, to := *keys[k.name+"/"+sdk], []string{"a@rcpt.example", "b@rcpt.example"}
			allowed := sdkScenario{ID: sdk + "/" + k.name, SDK: sdk, Base: rig.base(sdk), Key: key, From: sdkAllowedFrom, To: to}
			refused := allowed
			refused.ID, refused.From = sdk+"/"+k.name+"-sender", "ceo@evil.example"
			k.set(&allowed)
			k.set(&refused)
			plans[langOf[sdk]] = append(plans[langOf[sdk]], allowed, refused)
		}
	}
	results := rig.run(plans)

	// Which kind and SDK each request the provider got came from, by the
	// key the SDK sent.
	delivered := map[string]int{} // by kind/sdk
	for p, sent := range rig.delivered(keys) {
		id, dialect := sent.by, sent.dialect
		kind, sdk, _ := strings.Cut(id, "/")
		delivered[id]++
		for _, k := range sdkKinds {
			if k.name == kind && p.Path != k.sdks[sdk] {
				t.Errorf("%s: went to %s, want %s", id, p.Path, k.sdks[sdk])
			}
		}
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%s\n%s", id, p.Body, sent.Body)
		}
		if id == "extras/resend" && p.Header.Get("Idempotency-Key") != "order-42" {
			t.Errorf("%s: the provider got Idempotency-Key %q, want the SDK's order-42", id, p.Header.Get("Idempotency-Key"))
		}
		d, _ := mailapi.Lookup(dialect)
		if m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body); err != nil || m.Recipients != 2 {
			t.Errorf("%s: the request reads as %d recipients, %v; want 2", id, m.Recipients, err)
		}
	}
	for _, k := range sdkKinds {
		for sdk := range k.sdks {
			id, key := k.name+"/"+sdk, *keys[k.name+"/"+sdk]
			if r := results[sdk+"/"+k.name]; !r.OK {
				t.Errorf("%s: the SDK failed: %+v", id, r)
			}
			sdkRefused(t, id+"-sender", results[sdk+"/"+k.name+"-sender"], "sender_not_allowed", 403, "")
			if delivered[id] != 1 {
				t.Errorf("%s: the provider got %d requests, want 1", id, delivered[id])
			}
			if got := rig.taps[dialectOf[sdk]].countKey(key); got != 2 {
				t.Errorf("%s: %d requests reached the gateway, want 2 (the allowed one and the refused one, no retry)", id, got)
			}
			if u, ok := rig.usageOf(t, key, 3*time.Second, func(u usageJSON) bool {
				return u.Allowed == 1 && u.Recipients == 2 && u.Denied["sender_not_allowed"] == 1
			}); !ok {
				t.Errorf("%s: the key's usage is %d allowed, %d recipients, denied %v; want 1, 2 and sender_not_allowed 1",
					id, u.Allowed, u.Recipients, u.Denied)
			}
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sdkStoredSenders are the SDK calls that send a stored template naming
// no sender, which the provider then sends as the template's, with the
// endpoint they post to: Django-Anymail's template_id with from_email None
// (its Mailjet backend gives the template in Globals, for every message).
var sdkStoredSenders = map[string]string{
	"anymail-mailjet": "/v3.1/send", "anymail-brevo": "/v3/smtp/email", "anymail-mailgun": "/v3/" + sdkMailgunDomain + "/messages",
}

// TestE2ESDKsTemplateSenderIsStoredAtTheProvider sends, through each SDK of
// sdkStoredSenders, a message to two recipients on a stored template with no
// sender of its own: a key without limits sends it, delivered unchanged and
// counted for both; a key limited to sender domains is refused
// invalid_payload, as keygate cannot see the template's sender, in words the
// SDK's error shows. Before session 35 Anymail's Mailjet template was
// refused for every key, as "Messages[0].From.Email is missing".
func TestE2ESDKsTemplateSenderIsStoredAtTheProvider(t *testing.T) {
	rig := startSDKRig(t, "")
	keys := map[string]*string{} // by sdk, and sdk+"/limited"
	for sdk := range sdkStoredSenders {
		keys[sdk], keys[sdk+"/limited"] = new(string), new(string)
		rig.issueKey(keys[sdk], "--name", sdk+"-stored-sender")
		rig.issueKey(keys[sdk+"/limited"], "--name", sdk+"-stored-sender-limited", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain)
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	for sdk := range sdkStoredSenders {
		sc := sdkScenario{ID: sdk + "/stored-sender", SDK: sdk, Base: rig.base(sdk), Key: *keys[sdk],
			To: []string{"a@rcpt.example", "b@rcpt.example"}, Template: true}
		limited := sc
		limited.ID, limited.Key = sdk+"/stored-sender-limited", *keys[sdk+"/limited"]
		plans["python"] = append(plans["python"], sc, limited)
	}
	results := rig.run(plans)

	delivered := map[string]int{}
	for p, sent := range rig.delivered(keys) {
		delivered[sent.by]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%s\n%s", sent.by, p.Body, sent.Body)
		}
		if want := sdkStoredSenders[sent.by]; p.Path != want {
			t.Errorf("%s: went to %s, want %s", sent.by, p.Path, want)
		}
		d, _ := mailapi.Lookup(sent.dialect)
		if m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body); err != nil || !m.Opaque || m.Recipients != 2 || len(m.Senders) != 0 {
			t.Errorf("%s: the request reads as %d recipients from %q, opaque %v, %v; want 2 from a stored sender", sent.by, m.Recipients, m.Senders, m.Opaque, err)
		}
	}
	for sdk := range sdkStoredSenders {
		if r := results[sdk+"/stored-sender"]; !r.OK {
			t.Errorf("%s: the SDK failed: %+v", sdk, r)
		}
		r := results[sdk+"/stored-sender-limited"]
		sdkRefused(t, sdk+"/stored-sender-limited", r, "invalid_payload", 400, anymailError(sdk))
		if !strings.Contains(r.Text, "template") {
			t.Errorf("%s: the SDK's error does not say the sender is a template's: %s", sdk, r.Text)
		}
		if delivered[sdk] != 1 || delivered[sdk+"/limited"] != 0 {
			t.Errorf("%s: the provider got %d requests with the key without limits and %d with the limited one, want 1 and 0",
				sdk, delivered[sdk], delivered[sdk+"/limited"])
		}
		if u, ok := rig.usageOf(t, *keys[sdk], 3*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == 2
		}); !ok {
			t.Errorf("%s: the key's usage is %d allowed, %d recipients; want 1, 2", sdk, u.Allowed, u.Recipients)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sdkRig is a gateway with a site per dialect, a tap in front of each, the
// fake provider behind them, and the SDK drivers prepared to run plans.
type sdkRig struct {
	t        *testing.T
	root     string
	g        *gateway
	provider *fakeProvider
	taps     map[string]*tap   // by dialect; nil over HTTPS
	sites    map[string]string // the gateway's site for each dialect
	cafile   string            // the certificate the drivers trust
	start    time.Time

	// The Node SDKs and the Go SDKs' test binary are prepared while the
	// gateway starts and the keys are issued.
	prep    sync.WaitGroup
	lacking []error // what the machine lacks to run a driver
	lackMu  sync.Mutex
	goErr   error
	goTest  string

	issuing sync.WaitGroup
	issueMu sync.Mutex
	idOf    map[string]string // key -> its id
	slots   chan struct{}     // CLI runs at once
}

// issueKey issues a key with scope mail.send and args in the background,
// into *dst; issuing.Wait waits for every key.
// usageOf reads the usage of the key whose value is key until ok holds
// (counts land within a second) or within passes: the last usage read, and
// whether ok held.
func (r *sdkRig) usageOf(t *testing.T, key string, within time.Duration, ok func(usageJSON) bool) (usageJSON, bool) {
	t.Helper()
	var u usageJSON
	held := eventually(t, within, func() bool {
		u = usageJSON{}
		_ = json.Unmarshal(r.g.admin("GET", "/keygate/keys/"+r.idOf[key]+"/usage", nil).Body, &u)
		return ok(u)
	}) >= 0
	return u, held
}

func (r *sdkRig) issueKey(dst *string, args ...string) {
	r.issuing.Add(1)
	go func() {
		defer r.issuing.Done()
		r.slots <- struct{}{}
		defer func() { <-r.slots }()
		k := r.g.issue(append([]string{"--scope", "mail.send"}, args...)...)
		r.issueMu.Lock()
		*dst, r.idOf[k.Key] = k.Key, k.ID
		r.issueMu.Unlock()
	}()
}

// startSDKRig starts the gateway on store ("" for SQLite in the test's
// directory), with opts added to each site's keygate block, and begins
// preparing the drivers.
func startSDKRig(t *testing.T, store string, opts ...string) *sdkRig {
	return startSDKRigWith(t, sdkRigConfig{store: store, keygate: opts})
}

// sdkRigConfig is how a rig's gateway runs.
// delivered is each request the provider got, with what the SDK sent (the
// tap's copy) and the name in keys of the key it sent it with (keygate
// stripped the key; the tap saw it). A request no SDK sent is an error.
func (r *sdkRig) delivered(keys map[string]*string) iter.Seq2[recorded, sdkSent] {
	return func(yield func(recorded, sdkSent) bool) {
		for _, p := range r.provider.requests() {
			dialect := p.Header.Get("X-Compat-Dialect")
			sent, ok := r.taps[dialect].byID(p.Header.Get("X-Compat-Tap-Id"))
			if !ok {
				r.t.Errorf("the provider got a request no SDK sent: %s %s", p.Method, p.Path)
				continue
			}
			by := ""
			for name, k := range keys {
				if sent.carries(*k) {
					by = name
				}
			}
			if !yield(p, sdkSent{recorded: sent, dialect: dialect, by: by}) {
				return
			}
		}
	}
}

// sdkSent is a request as an SDK sent it, by the key named by.
type sdkSent struct {
	recorded
	dialect, by string
}

type sdkRigConfig struct {
	store   string   // "" for SQLite in the test's directory
	keygate []string // lines added to each site's keygate block
	// https serves each site over HTTPS with a certificate from Caddy's
	// internal CA, as production does, and the SDKs connect to it
	// directly, trusting that CA: there are no taps, the SDKs speak
	// whatever protocol they negotiate (HTTP/2 where they can), and each
	// site tells the provider the dialect, the key id and the protocol
	// (X-Compat-Dialect, X-Compat-Key-Id, X-Compat-Proto).
	https bool
}

func startSDKRigWith(t *testing.T, c sdkRigConfig) *sdkRig {
	needBinary(t)
	r := &sdkRig{t: t, start: time.Now(), goTest: filepath.Join(t.TempDir(), "gosdk.test"),
		idOf: map[string]string{}, slots: make(chan struct{}, 4), sites: map[string]string{}}
	r.root, _ = os.Getwd()
	lacks := func(check func() error) {
		defer r.prep.Done()
		if err := check(); err != nil {
			r.lackMu.Lock()
			r.lacking = append(r.lacking, err)
			r.lackMu.Unlock()
		}
	}
	r.prep.Add(1 + len(scriptDrivers))
	for _, d := range scriptDrivers {
		go lacks(d.lacks)
	}
	go func() {
		defer r.prep.Done()
		out, err := exec.Command("go", "-C", filepath.Join(r.root, "compat", "gosdk"), "test", "-c", "-o", r.goTest).CombinedOutput()
		if err != nil {
			r.goErr = fmt.Errorf("go -C compat/gosdk test -c: %v\n%s", err, out)
		}
	}()
	t.Cleanup(r.prep.Wait)

	r.provider = newFakeProvider(t)
	ports := map[string]int{}
	scheme, global, tls := "http", "", ""
	if c.https {
		// No root installed into this machine's trust stores, no
		// listener on port 80 for redirects.
		scheme, global, tls = "https", "\tskip_install_trust\n\tauto_https disable_redirects\n", "\ttls internal\n"
	}
	var cf strings.Builder
	cf.WriteString("{\n\tadmin {ADMIN}\n" + global + "}\n")
	for i, s := range sdkSites {
		port := "{PORT}"
		if i > 0 {
			ports[s.dialect] = freePort(t)
			port = strconv.Itoa(ports[s.dialect])
		}
		// Every SDK sends from 127.0.0.1, each an unknown key among its
		// scenarios: the failed-attempt limit is raised so that one
		// address stands for many clients.
		var extra strings.Builder
		for _, sc := range s.sendScopes {
			extra.WriteString("\t\t\tscope mail.send " + sc + "\n")
		}
		for _, sc := range s.otherScopes {
			extra.WriteString("\t\t\tscope " + sc + "\n")
		}
		for _, o := range c.keygate {
			extra.WriteString("\t\t\t" + o + "\n")
		}
		proxy := s.injected
		if c.https {
			proxy += "\n\t\t\theader_up X-Compat-Dialect " + s.dialect +
				"\n\t\t\theader_up X-Compat-Key-Id {http.auth.user.id}\n\t\t\theader_up X-Compat-Proto {http.request.proto}"
		}
		fmt.Fprintf(&cf, "%s://127.0.0.1:%s {\n\tbind 127.0.0.1\n%s\troute {\n\t\tkeygate {\n\t\t\tstore {STORE}\n\t\t\tmail_api %s\n\t\t\tfailed_auth_limit 1000/m\n%s\t\t}\n\t\treverse_proxy {UPSTREAM} {\n\t\t\t%s\n\t\t}\n\t}\n}\n",
			scheme, port, tls, s.dialect, extra.String(), proxy)
	}
	r.g = startGateway(t, gatewayConfig{caddyfile: cf.String(), upstream: r.provider.URL, store: c.store,
		env: []string{"PROVIDER_BASIC=" + base64.StdEncoding.EncodeToString([]byte("api:provider-secret-123"))}})
	sendgridURL, _ := url.Parse(r.g.siteURL)
	ports["sendgrid"], _ = strconv.Atoi(sendgridURL.Port())
	for _, s := range sdkSites {
		r.sites[s.dialect] = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[s.dialect])
	}
	r.cafile = filepath.Join(t.TempDir(), "ca.pem")
	var ca []byte
	if c.https {
		// The internal CA's root, as `caddy trust` would install it.
		ca = r.g.internalRoot(slices.Collect(maps.Values(r.sites))...)
	} else {
		r.taps = map[string]*tap{}
		for _, s := range sdkSites {
			r.taps[s.dialect] = newTap(t, s.dialect, r.sites[s.dialect])
		}
		// The TLS taps' certificate, for the PHP driver.
		ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.taps["sendgrid"].TLS.Certificate().Raw})
	}
	if err := os.WriteFile(r.cafile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// base is the URL the SDK named is given: its dialect's tap, over HTTPS for
// Symfony's API transports, which speak nothing else; or, over HTTPS, its
// dialect's site.
func (r *sdkRig) base(sdk string) string {
	for _, d := range slices.Concat(sdkDrivers, sdkEarlierDrivers) {
		switch {
		case d.name != sdk:
		case r.taps == nil:
			return r.sites[d.dialect]
		case d.lang == "php":
			return r.taps[d.dialect].TLS.URL
		default:
			return r.taps[d.dialect].URL
		}
	}
	r.t.Fatalf("no SDK %q", sdk)
	return ""
}

// run has every driver run its language's plan, all side by side, and
// returns the results by scenario id.
func (r *sdkRig) run(plans map[string][]sdkScenario) map[string]sdkResult {
	t := r.t
	r.prep.Wait()
	for _, err := range r.lacking {
		missingTool(t, err)
	}
	if r.goErr != nil {
		t.Fatal(r.goErr)
	}
	prepared := time.Now()

	dir := t.TempDir()
	writePlan := func(name string, scs []sdkScenario) string {
		b, _ := json.Marshal(map[string]any{"mailgunDomain": sdkMailgunDomain, "scenarios": scs})
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goPlan, goReport := writePlan("go.json", plans["go"]), filepath.Join(dir, "go-report.jsonl")
	outs := make([][]byte, len(scriptDrivers)+1) // the script drivers', then the Go SDKs'
	errs := make([]error, len(outs))
	// Every driver trusts r.cafile: the PHP driver by KEYGATE_COMPAT_CAFILE,
	// and over HTTPS the others as their users would make them trust a
	// private CA (Node's NODE_EXTRA_CA_CERTS, Go's and Ruby's SSL_CERT_FILE,
	// botocore's AWS_CA_BUNDLE, Python requests' REQUESTS_CA_BUNDLE).
	caEnv := []string{"KEYGATE_COMPAT_CAFILE=" + r.cafile}
	if r.taps == nil {
		caEnv = append(caEnv, "NODE_EXTRA_CA_CERTS="+r.cafile, "SSL_CERT_FILE="+r.cafile, "AWS_CA_BUNDLE="+r.cafile,
			"REQUESTS_CA_BUNDLE="+r.cafile)
	}
	var run sync.WaitGroup
	for i, d := range scriptDrivers {
		if len(plans[d.lang]) == 0 {
			continue
		}
		plan := writePlan(d.lang+".json", plans[d.lang])
		run.Add(1)
		go func() {
			defer run.Done()
			// A script driver prints its results on stdout.
			cmd := exec.Command(d.interpreter, d.script)
			cmd.Dir = filepath.Join(r.root, "compat", d.lang)
			cmd.Env = append(append(os.Environ(), caEnv...), "KEYGATE_COMPAT_PLAN="+plan)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if outs[i], errs[i] = cmd.Output(); errs[i] != nil {
				errs[i] = fmt.Errorf("%s %s: %v\n%s", d.interpreter, d.script, errs[i], stderr.Bytes())
			}
		}()
	}
	run.Add(1)
	go func() {
		defer run.Done()
		last := len(outs) - 1
		if len(plans["go"]) == 0 {
			return
		}
		cmd := exec.Command(r.goTest, "-test.run", "^TestSDKs$", "-test.count", "1")
		cmd.Env = append(append(os.Environ(), caEnv...), "KEYGATE_COMPAT_PLAN="+goPlan, "KEYGATE_COMPAT_REPORT="+goReport)
		out, err := cmd.CombinedOutput()
		if err != nil {
			errs[last] = fmt.Errorf("compat/gosdk TestSDKs: %v\n%s", err, out)
			return
		}
		outs[last], errs[last] = os.ReadFile(goReport)
	}()
	run.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	results := map[string]sdkResult{}
	for _, out := range outs {
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var res sdkResult
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				t.Fatalf("a driver's report line: %v: %s", err, sc.Bytes())
			}
			results[res.ID] = res
		}
	}
	ran := time.Now()
	t.Logf("SDK suite: npm ci + compile %v (beside the set-up), SDKs %v, total %v",
		prepared.Sub(r.start).Round(time.Millisecond), ran.Sub(prepared).Round(time.Millisecond), ran.Sub(r.start).Round(time.Millisecond))
	return results
}

// sdkRefused reports how r differs from a refusal whose error says
// "keygate <code>", with the status where the SDK reports one and the class
// or name where it has one.
func sdkRefused(t *testing.T, what string, r sdkResult, code string, status int, name string) {
	t.Helper()
	switch {
	case r.OK || !strings.Contains(r.Text, "keygate "+code):
		t.Errorf("%s: the SDK's error does not say %q: %+v", what, "keygate "+code, r)
	case r.Status != 0 && r.Status != status:
		t.Errorf("%s: the SDK saw status %d, want %d", what, r.Status, status)
	case name != "" && r.Name != name:
		t.Errorf("%s: the SDK's error is a %q, want %q", what, r.Name, name)
	}
}

func sortedKeys(m map[string]sdkResult) []string {
	return slices.Sorted(maps.Keys(m))
}

// symfonyMailer reports what the PHP driver lacks: php-cli, or a Symfony
// Mailer bridge.
func symfonyMailer() error {
	if _, err := exec.LookPath("php"); err != nil {
		return fmt.Errorf("the SDK compatibility suite runs Symfony Mailer with php (apt-get install php-cli): %v", err)
	}
	var missing []string
	for dir, pkg := range symfonyBridges {
		if _, err := os.Stat("/usr/share/php/Symfony/Component/Mailer/Bridge/" + dir + "/autoload.php"); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("the SDK compatibility suite runs Symfony Mailer's API transports: apt-get install %s", strings.Join(missing, " "))
	}
	return nil
}

// missingTool fails the test in CI and skips it elsewhere: CI must run the
// compatibility suite, a developer without Node need not.
func missingTool(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skip(err)
}

// npmCI installs compat/node's SDKs from its lock file, unless the
// installed tree was installed from this very lock file.
func npmCI(dir string) error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("the SDK compatibility suite needs Node.js and npm: %v", err)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return fmt.Errorf("the SDK compatibility suite needs npm: %v", err)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".keygate-lock-sha256")
	if have, err := os.ReadFile(stamp); err == nil && string(have) == want {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in compat/node: %v\n%s", err, out)
	}
	return os.WriteFile(stamp, []byte(want), 0o644)
}

func decodeBasicHeader(v string) string {
	scheme, enc, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return ""
	}
	b, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	return string(b)
}

// tap forwards an SDK's requests to one site of the gateway unchanged,
// recording each one and tagging it (X-Compat-Tap-Id, X-Compat-Dialect)
// so the provider's copy can be matched to what the SDK sent.
type tap struct {
	*httptest.Server
	TLS  *httptest.Server // the same tap over HTTPS
	mu   sync.Mutex
	reqs []recorded
}

func newTap(t *testing.T, dialect, target string) *tap {
	u, _ := url.Parse(target)
	tp := &tap{}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host
	}}
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		tp.mu.Lock()
		id := strconv.Itoa(len(tp.reqs))
		tp.reqs = append(tp.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
		tp.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.Header.Set("X-Compat-Tap-Id", id)
		r.Header.Set("X-Compat-Dialect", dialect)
		proxy.ServeHTTP(w, r)
	})
	tp.Server, tp.TLS = httptest.NewServer(record), httptest.NewTLSServer(record)
	t.Cleanup(tp.Close)
	t.Cleanup(tp.TLS.Close)
	return tp
}

func (tp *tap) byID(id string) (recorded, bool) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	i, err := strconv.Atoi(id)
	if err != nil || i < 0 || i >= len(tp.reqs) {
		return recorded{}, false
	}
	return tp.reqs[i], true
}

// countKey counts the requests that presented key anywhere: in a header
// value or in Basic credentials.
func (tp *tap) countKey(key string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := 0
	for _, r := range tp.reqs {
		if r.carries(key) {
			n++
		}
	}
	return n
}

// carries reports whether a header of r holds key, as it is or in HTTP
// Basic credentials.
func (r recorded) carries(key string) bool {
	for _, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, key) || strings.Contains(decodeBasicHeader(v), key) {
				return true
			}
		}
	}
	return false
}

// sesV1Answer answers a send of SES's v1 API (the Query API) as SES does,
// in XML named after the form's Action; a bulk send gets a status for each
// destination.
func sesV1Answer(w http.ResponseWriter, body []byte) {
	form, _ := url.ParseQuery(string(body))
	action := form.Get("Action")
	result := "<MessageId>ses-1</MessageId>"
	if action == "SendBulkTemplatedEmail" {
		result = "<Status>"
		for i := 1; form.Has(fmt.Sprintf("Destinations.member.%d.Destination.ToAddresses.member.1", i)); i++ {
			result += fmt.Sprintf("<member><Status>Success</Status><MessageId>ses-%d</MessageId></member>", i)
		}
		result += "</Status>"
	}
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<%[1]sResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><%[1]sResult>%[2]s</%[1]sResult>`+
		`<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></%[1]sResponse>`, action, result)
}

// fakeProvider answers each send endpoint as its provider would, so the
// SDKs accept the response, and records what it received.
type fakeProvider struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
	// fails, when set, picks the requests answered with a 500, as a
	// provider's hiccup (after it has recorded them).
	fails func(r *http.Request) bool
	// partly, when set, picks the Mailjet v3.1 batches of two messages
	// answered as Mailjet answers one whose first message it sent and
	// whose second it refused: 400, a status for each message.
	partly func(r *http.Request) bool
}

// mailjetPartialFailure is Mailjet's answer to a v3.1 send of two messages
// whose second it refused: it sent the first ("In case of errors on one or
// several of the messages, the API will not stop the processing of other
// successful messages"), and the whole answer is a 400.
const mailjetPartialFailure = `{"Messages":[{"Status":"success","CustomID":"","To":[{"Email":"a@rcpt.example","MessageUUID":"u-1","MessageID":1,"MessageHref":"h"}],"Cc":[],"Bcc":[]},` +
	`{"Errors":[{"ErrorIdentifier":"e-1","ErrorCode":"mj-0013","StatusCode":400,"ErrorMessage":"the recipient is blocked","ErrorRelatedTo":["Messages[1].To[0].Email"]}],"Status":"error"}]}`

func newFakeProvider(t *testing.T) *fakeProvider {
	f := &fakeProvider{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
		fails, partly := f.fails, f.partly
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if partly != nil && partly(r) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, mailjetPartialFailure)
			return
		}
		if fails != nil && fails(r) {
			answer := `{"message":"provider hiccup"}`
			if r.URL.Path == "/" { // SES's v1 API answers in XML
				w.Header().Set("Content-Type", "text/xml")
				answer = `<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>provider hiccup</Message></Error></ErrorResponse>`
			}
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, answer)
			return
		}
		switch p := r.URL.Path; {
		case r.Method == http.MethodGet && p != "/", p == sesListIdentities:
			io.WriteString(w, readAnswer(p))
		case p == "/v3/mail/send":
			w.Header().Set("X-Message-Id", "sg-1") // Symfony's transport reads it
			w.WriteHeader(http.StatusAccepted)
		case p == "/email/bulk":
			io.WriteString(w, `{"Id":"pm-bulk-1","Status":"Accepted","SubmittedAt":"2026-11-29T00:00:00Z"}`)
		case p == "/email/batch", p == "/email/batchWithTemplates":
			io.WriteString(w, `[{"To":"a@rcpt.example","MessageID":"pm-1","ErrorCode":0,"Message":"OK"},{"To":"b@rcpt.example","MessageID":"pm-2","ErrorCode":0,"Message":"OK"}]`)
		case p == "/emails/batch":
			io.WriteString(w, `{"data":[{"id":"re-1"},{"id":"re-2"}]}`)
		case p == "/v2/email/outbound-bulk-emails":
			io.WriteString(w, `{"BulkEmailEntryResults":[{"Status":"SUCCESS","MessageId":"ses-1"},{"Status":"SUCCESS","MessageId":"ses-2"}]}`)
		case strings.HasPrefix(p, "/email"):
			io.WriteString(w, `{"To":"a@rcpt.example","SubmittedAt":"2026-11-29T00:00:00Z","MessageID":"pm-1","ErrorCode":0,"Message":"OK"}`)
		case strings.HasSuffix(p, "/messages"), strings.HasSuffix(p, "/messages.mime"):
			io.WriteString(w, `{"id":"<mg-1@mg.shop.example>","message":"Queued. Thank you."}`)
		case p == "/emails":
			io.WriteString(w, `{"id":"re-1"}`)
		case p == "/v2/email/outbound-emails":
			io.WriteString(w, `{"MessageId":"ses-1"}`)
		case p == "/v3/send", p == "/v3/send/message":
			io.WriteString(w, `{"Sent":[{"Email":"a@rcpt.example","MessageID":1,"MessageUUID":"u-1"}]}`)
		case p == "/v3.1/send":
			io.WriteString(w, `{"Messages":[{"Status":"success","To":[{"Email":"a@rcpt.example","MessageUUID":"u","MessageID":1,"MessageHref":"h"}]}]}`)
		case p == "/v3/smtp/email":
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"messageId":"<brevo-1@shop.example>"}`)
		case p == "/":
			sesV1Answer(w, body)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"not found"}`)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// sesListIdentities is where the AWS SDKs for JavaScript and Go post
// ListEmailIdentities (since 2025; boto3 1.26 gets /v2/email/identities).
const sesListIdentities = "/v2/email/list-identities"

// readAnswer is the fake provider's answer to a call other than a send
// (sdkOps): an empty list or record in the shape the SDK parses.
func readAnswer(p string) string {
	switch {
	case strings.HasSuffix(p, "/events"):
		return `{"items":[],"paging":{}}`
	case strings.HasSuffix(p, "/bounces") && strings.HasPrefix(p, "/v3/mg."), p == "/v4/domains":
		return `{"items":[],"total_count":0}`
	case strings.HasPrefix(p, "/v3/mg.") && strings.HasSuffix(p, "/templates"):
		return `{"items":[],"paging":{}}`
	case strings.HasPrefix(p, "/v3/REST/"):
		return `{"Count":0,"Data":[],"Total":0}`
	case p == "/emails", p == "/domains", p == "/templates":
		return `{"object":"list","data":[],"has_more":false}`
	}
	return `{}`
}

func (f *fakeProvider) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// mailgunResetAt is the ResetAt of mailgun-go's RateLimitedError, as the
// Go driver adds it to the error's text.
var mailgunResetAt = regexp.MustCompile(`\(ResetAt (\d+)\)`)

// resendRateLimit is what resend-go's RateLimitError says for a key limited
// to one request an hour, once it is used.
var resendRateLimit = regexp.MustCompile(`limit: 1, remaining: 0, reset: 3[56]\d\d, retry after: 3[56]\d\d\)`)

// TestE2ESDKsStoreOutage drives every SDK through a cluster node (PostgreSQL
// and Redis) that has lost both. A key the gateway has in its cache keeps
// sending, its rate limited on the node alone; a key that used up its rate
// before the outage stays refused; any other key is refused with 503
// store_unavailable, which each SDK shows in its own error, retrying as it
// retries its provider's 503; and the sends made during the outage are
// counted once the store is back.
func TestE2ESDKsStoreOutage(t *testing.T) {
	needBinary(t)
	pg := testservers.StartPostgres(t)
	redis := testservers.StartRedis(t)
	// Cached keys are answered for cache_ttl into an outage: long enough
	// here for every driver to start on a slow machine.
	rig := startSDKRig(t, pg.URI, "cache_ttl 10m", "ratelimit redis redis://"+redis.Addr)
	g := rig.g
	type outageKeys struct{ cached, uncached, limited string }
	keys := map[string]*outageKeys{}
	for _, d := range sdkDrivers {
		k := &outageKeys{}
		keys[d.name] = k
		rig.issueKey(&k.cached, "--name", d.name+"-cached")
		rig.issueKey(&k.uncached, "--name", d.name+"-uncached")
		rig.issueKey(&k.limited, "--name", d.name+"-limited", "--rate", "1/h")
	}
	rig.issuing.Wait()

	// Each cached key authenticates once, outside the send scope (403),
	// until a round costs no store query: the entries are filled and
	// current. The keys' own change-log entries void entries cached before
	// the gateway reads them, within a second (CONTRACT.md §7).
	time.Sleep(1200 * time.Millisecond)
	warm := func() bool {
		q := g.metric("keygate_store_queries_total")
		for _, k := range keys {
			for _, key := range []string{k.cached, k.limited} {
				if r := g.call("GET", "/outage-warm-up", key, nil); r.Status != 403 {
					t.Fatalf("a cached key's warm-up: %d %s", r.Status, r.Body)
				}
			}
		}
		return g.metric("keygate_store_queries_total") == q
	}
	if eventually(t, 15*time.Second, warm) < 0 {
		t.Fatalf("the gateway never answered the keys from its cache:\n%s", g.logs())
	}
	// Each limited key spends its one request an hour through Redis.
	for _, k := range keys {
		if r := g.call("POST", "/v3/mail/send", k.limited, sgBody(sdkAllowedFrom, "a@rcpt.example")); r.Status != 202 {
			t.Fatalf("a limited key's one send: %d %s", r.Status, r.Body)
		}
	}

	pg.Stop()
	redis.Stop()
	plans := map[string][]sdkScenario{}
	for _, d := range sdkDrivers {
		k := keys[d.name]
		for _, sc := range []sdkScenario{{ID: d.name + "/cached", Key: k.cached}, {ID: d.name + "/uncached", Key: k.uncached},
			// Brevo's SDK would wait out Retry-After (an hour, capped
			// at a minute) twice.
			{ID: d.name + "/limited", Key: k.limited, NoRetry: d.name == "brevo"}} {
			sc.SDK, sc.Base, sc.From, sc.To = d.name, rig.base(d.name), sdkAllowedFrom, []string{"a@rcpt.example"}
			plans[d.lang] = append(plans[d.lang], sc)
		}
	}
	results := rig.run(plans)

	// The error's class or name, where the SDK has one: the AWS SDKs' from
	// x-amzn-ErrorType (a 5xx they retry), Symfony's one class, and
	// postmark.js's class for a 503, spelled as it spells it.
	names := map[string]string{"resend": "application_error", "postmark": "ServiceUnavailablerError", "brevo": "BrevoError"}
	// The SDKs that retry a 503 by default: the AWS SDKs as they retry a
	// 429 (awsAttempts), Brevo's Node SDK twice after Retry-After.
	attempts := map[string]int{"brevo": 3}
	for _, d := range sdkDrivers {
		name, tries := names[d.name], max(1, attempts[d.name], awsAttempts[d.name])
		switch {
		case d.lang == "php":
			name = "HttpTransportException"
		case d.lang == "ruby":
			name = postmarkRubyError(503)
		case isAnymail(d.name):
			name = anymailError(d.name)
		case d.dialect == "ses":
			name = "InternalServiceErrorException"
		}
		k, tp := keys[d.name], rig.taps[d.dialect]
		if r := results[d.name+"/cached"]; !r.OK {
			t.Errorf("%s: a cached key during the outage: %+v", d.name, r)
		}
		sdkRefused(t, d.name+": an uncached key during the outage", results[d.name+"/uncached"], "store_unavailable", 503, name)
		if got := tp.countKey(k.cached); got != 1 {
			t.Errorf("%s: the cached key: %d requests, want 1", d.name, got)
		}
		if got := tp.countKey(k.uncached); got != tries {
			t.Errorf("%s: the uncached key: %d requests, want %d", d.name, got, tries)
		}
		// The limited key stays refused on the node alone: its bucket
		// continues from what Redis last reported (docs/cluster.md). An
		// SDK whose limited send comes more than 10 s into the outage
		// (boto3, after its retries of the uncached key) meets a node
		// that has given up the key's idle lease: that failed in CI
		// until the forgotten lease's state went to the fallback too
		// (TestLeasedOutageAfterTheLeaseIsForgotten).
		rateName := map[string]string{"resend": "rate_limit_exceeded", "resend-go": "RateLimitError", "mailgun-go": "RateLimitedError"}[d.name]
		switch {
		case d.lang == "php":
			rateName = "HttpTransportException"
		case d.lang == "ruby":
			rateName = postmarkRubyError(429)
		case isAnymail(d.name):
			rateName = anymailError(d.name)
		case d.dialect == "ses":
			rateName = "TooManyRequestsException"
		}
		sdkRefused(t, d.name+": a key whose rate was used up before the outage", results[d.name+"/limited"], "rate_limited", 429, rateName)
		if got, want := tp.countKey(k.limited), max(1, awsAttempts[d.name]); got != want {
			t.Errorf("%s: the limited key: %d requests, want %d", d.name, got, want)
		}
	}
	if r := results["brevo/uncached"]; r.MS < 1900 {
		t.Errorf("brevo: an uncached key during the outage took %d ms: the SDK did not wait Retry-After (1 s) twice", r.MS)
	}
	sent := 0 // by the SDKs, through the taps
	for _, p := range rig.provider.requests() {
		if p.Header.Get("X-Compat-Tap-Id") != "" {
			sent++
		}
	}
	if sent != len(sdkDrivers) {
		t.Errorf("the provider got %d sends from the SDKs during the outage, want %d (one per SDK, with its cached key)", sent, len(sdkDrivers))
	}

	// The store back: the sends made during the outage are counted, and
	// the keys refused meanwhile authenticate again.
	pg.Start()
	for _, d := range sdkDrivers {
		k := keys[d.name]
		if u, ok := rig.usageOf(t, k.cached, 15*time.Second, func(u usageJSON) bool {
			return u.Allowed == 1 && u.Recipients == 1
		}); !ok {
			t.Errorf("%s: the cached key's usage after the outage: %d allowed, %d recipients; want 1 and 1", d.name, u.Allowed, u.Recipients)
		}
		if eventually(t, 5*time.Second, func() bool { return g.call("GET", "/outage-warm-up", k.uncached, nil).Status == 403 }) < 0 {
			t.Errorf("%s: the uncached key is still refused after the outage", d.name)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// TestE2ESDKsOverHTTPS runs every SDK against the gateway as production
// serves it: over HTTPS, with a certificate from Caddy's internal CA that
// each SDK trusts the way its users make it trust a private CA. Nothing
// stands between the SDK and keygate, so each SDK speaks the protocol it
// negotiates: the Go SDKs HTTP/2, the others HTTP/1.1 (Symfony's HTTP
// client HTTP/2 when PHP has curl). Each SDK sends with a policy key (a
// plain send, a 20 KB HTML send, an HTML send from a sender the key does
// not allow) and a revoked key; a Go client also sends over HTTP/3, which
// Caddy offers on every HTTPS site. The provider must get every allowed send
// whole (keygate's own reader parses what arrived) and nothing else, with
// the protocol the SDK spoke.
func TestE2ESDKsOverHTTPS(t *testing.T) {
	rig := startSDKRigWith(t, sdkRigConfig{https: true})
	type httpsKeys struct{ policy, revoked string }
	keys := map[string]*httpsKeys{}
	for _, d := range sdkDrivers {
		k := &httpsKeys{}
		keys[d.name] = k
		rig.issueKey(&k.policy, "--name", d.name+"-policy", "--sender-domain", "shop.example", "--sender-domain", sdkMailgunDomain, "--max-recipients", "1")
		rig.issueKey(&k.revoked, "--name", d.name+"-revoked")
	}
	var h3Key, h3Revoked string
	rig.issueKey(&h3Key, "--name", "http3-policy", "--sender-domain", "shop.example")
	rig.issueKey(&h3Revoked, "--name", "http3-revoked")
	rig.issuing.Wait()
	for _, k := range append(slices.Collect(maps.Values(keys)), &httpsKeys{revoked: h3Revoked}) {
		if r := rig.g.admin("POST", "/keygate/keys/"+rig.idOf[k.revoked]+"/revoke", map[string]string{"reason": "leaked"}); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
	}

	plans := map[string][]sdkScenario{}
	for _, d := range sdkDrivers {
		k := keys[d.name]
		sc := func(name, key, from string) sdkScenario {
			return sdkScenario{ID: d.name + "/" + name, SDK: d.name, Base: rig.base(d.name), Key: key, From: from, To: []string{"a@rcpt.example"}}
		}
		html := sc("allowed-html", k.policy, sdkAllowedFrom)
		html.HTML = sdkNewsletter("ceo@evil.example")
		evil := sc("sender-html", k.policy, "ceo@evil.example")
		evil.HTML = sdkNewsletter(sdkAllowedFrom)
		plans[d.lang] = append(plans[d.lang], sc("allowed", k.policy, sdkAllowedFrom), html, evil, sc("revoked", k.revoked, sdkAllowedFrom))
	}
	h3Done := make(chan struct{})
	go func() { defer close(h3Done); sendOverHTTP3(t, rig, h3Key, h3Revoked) }()
	results := rig.run(plans)
	<-h3Done

	phpProto := "HTTP/1.1" // Symfony's native client; with curl it negotiates HTTP/2
	if out, _ := exec.Command("php", "-m").Output(); slices.Contains(strings.Fields(string(out)), "curl") {
		phpProto = "HTTP/2.0"
	}
	wantProto := map[string]string{"go": "HTTP/2.0", "node": "HTTP/1.1", "python": "HTTP/1.1", "php": phpProto, "ruby": "HTTP/1.1"}
	for _, d := range sdkDrivers {
		for _, ok := range []string{"allowed", "allowed-html"} {
			if r := results[d.name+"/"+ok]; !r.OK {
				t.Errorf("%s/%s over HTTPS: the SDK failed: %+v", d.name, ok, r)
			}
		}
		sender, revoked := "", ""
		switch {
		case d.lang == "php":
			sender, revoked = "HttpTransportException", "HttpTransportException"
		case d.lang == "ruby":
			sender, revoked = postmarkRubyError(403), postmarkRubyError(401)
		case isAnymail(d.name):
			sender, revoked = anymailError(d.name), anymailError(d.name)
		case d.dialect == "ses":
			sender, revoked = "MessageRejected", "UnrecognizedClientException"
		case d.name == "postmark":
			revoked = "InvalidAPIKeyError"
		case d.name == "resend":
			sender, revoked = "invalid_from_address", "invalid_api_key"
		}
		sdkRefused(t, d.name+"/sender-html over HTTPS", results[d.name+"/sender-html"], "sender_not_allowed", 403, sender)
		sdkRefused(t, d.name+"/revoked over HTTPS", results[d.name+"/revoked"], "revoked_key", 401, revoked)
	}

	// What the provider got: per key, the protocol its SDK spoke, and
	// every send whole.
	sdkOf := map[string]string{rig.idOf[h3Key]: "http3"} // key id -> SDK
	for _, d := range sdkDrivers {
		sdkOf[rig.idOf[keys[d.name].policy]] = d.name
	}
	sends := map[string]int{}
	for _, p := range rig.provider.requests() {
		dialect, sdk := p.Header.Get("X-Compat-Dialect"), sdkOf[p.Header.Get("X-Compat-Key-Id")]
		if sdk == "" {
			t.Errorf("the provider got a send from no policy key: %s %s (key id %q)", p.Method, p.Path, p.Header.Get("X-Compat-Key-Id"))
			continue
		}
		sends[sdk]++
		want := "HTTP/3.0"
		for _, d := range sdkDrivers {
			if d.name == sdk {
				want = wantProto[d.lang]
			}
		}
		if got := p.Header.Get("X-Compat-Proto"); got != want {
			t.Errorf("%s: keygate saw %s, want %s", sdk, got, want)
		}
		d, _ := mailapi.Lookup(dialect)
		if m, err := d.Inspect(p.Path, p.Header.Get("Content-Type"), p.Body); err != nil || m.Recipients != 1 {
			t.Errorf("%s: the provider's body (%d bytes, Content-Length %s) does not read as one message: %d recipients, %v",
				sdk, len(p.Body), p.Header.Get("Content-Length"), m.Recipients, err)
		}
		if name, value := injectedCredential(dialect); name != "" && p.Header.Get(name) != value {
			t.Errorf("%s: the provider got %s %q, want the injected credential", sdk, name, p.Header.Get(name))
		}
		for name, vs := range p.Header {
			for _, v := range vs {
				if strings.Contains(v, "kg_live_") || strings.Contains(decodeBasicHeader(v), "kg_live_") {
					t.Errorf("%s: the provider got a keygate key in %s", sdk, name)
				}
			}
		}
	}
	for sdk, n := range map[string]int{"http3": 1} {
		if sends[sdk] != n {
			t.Errorf("%s: the provider got %d sends, want %d", sdk, sends[sdk], n)
		}
	}
	for _, d := range sdkDrivers {
		if sends[d.name] != 2 {
			t.Errorf("%s over HTTPS: the provider got %d sends, want 2 (the plain and the HTML send)", d.name, sends[d.name])
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}

// sendOverHTTP3 sends a SendGrid message over HTTP/3 with key, and then
// with the revoked key, which must get keygate's JSON refusal.
func sendOverHTTP3(t *testing.T, rig *sdkRig, key, revoked string) {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(rig.cafile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Errorf("HTTP/3: the internal CA: %v", err)
		return
	}
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := `{"personalizations":[{"to":[{"email":"a@rcpt.example"}]}],"from":{"email":"` + sdkAllowedFrom +
		`"},"subject":"over HTTP/3","content":[{"type":"text/html","value":` + strconv.Quote(sdkNewsletter("ceo@evil.example")) + `}]}`
	for _, c2 := range []struct {
		key    string
		status int
		code   string
	}{{key, http.StatusAccepted, ""}, {revoked, http.StatusUnauthorized, "revoked_key"}} {
		req, _ := http.NewRequest("POST", rig.sites["sendgrid"]+"/v3/mail/send", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c2.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("HTTP/3: %v", err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var denial struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(b, &denial)
		if resp.Proto != "HTTP/3.0" || resp.StatusCode != c2.status || denial.Error.Code != c2.code {
			t.Errorf("HTTP/3 send: %s %d %s; want HTTP/3.0 %d %q", resp.Proto, resp.StatusCode, b, c2.status, c2.code)
		}
	}
}

// sesV1Script makes one call of boto3's SES v1 client (the Query API), a
// send or a bounce, and prints what the developer sees.
const sesV1Script = `
import json, sys, boto3, botocore.exceptions
c = boto3.client("ses", region_name="us-east-1", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
    aws_secret_access_key="unused", config=botocore.config.Config(retries={"max_attempts": 1}))
try:
    if sys.argv[3] == "bounce":
        c.send_bounce(OriginalMessageId="m-1", BounceSender="ceo@evil.example",
            BouncedRecipientInfoList=[{"Recipient": "a@rcpt.example", "BounceType": "DoesNotExist"}])
    elif sys.argv[3] == "delete":
        c.delete_identity(Identity="shop.example")
    else:
        c.send_email(Source="orders@shop.example", Destination={"ToAddresses": ["a@rcpt.example"]},
            Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}})
    print(json.dumps({"ok": True}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({"ok": False, "name": e.response["Error"]["Code"], "text": str(e),
        "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}))
`

// resendBroadcastScript creates a Resend broadcast through the official SDK
// (argv: gateway, key, "send" or "draft") and prints what the SDK returned.
const resendBroadcastScript = `
import { Resend } from "resend";
const [base, key, how] = process.argv.slice(1);
const resend = new Resend(key, { baseUrl: base });
const { data, error } = await resend.broadcasts.create({
  segmentId: "78261eea-8f8b-4381-83c6-79fa7120f1cf", from: "News <ceo@evil.example>",
  subject: "compat", html: "<p>hello</p>", ...(how === "send" ? { send: true } : {}),
});
console.log(JSON.stringify({ ok: !error, name: error?.name ?? "", text: error?.message ?? "", status: error?.statusCode ?? 0 }));
`

// Resend's broadcasts.create with send: true sends at once, to a segment
// stored at Resend, from any sender: a key limited to sender domains is
// refused, and the SDK returns keygate's reason; without send it only
// creates a draft, which passes (sending it later is a request of its own).
func TestResendBroadcastCreatedWithSendIsRefused(t *testing.T) {
	dir := filepath.Join("compat", "node")
	if err := npmCI(dir); err != nil {
		missingTool(t, err)
	}
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api resend
		scope mail.send POST /emails*
		scope broadcasts.write POST /broadcasts*
	}
	reverse_proxy {UPSTREAM}
`)})
	limited := g.issue("--name", "newsletter", "--scope", "broadcasts.write", "--sender-domain", "shop.example")
	run := func(how string) sdkResult {
		cmd := exec.Command("node", "--input-type=module", "-e", resendBroadcastScript, g.siteURL, limited.Key, how)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var r sdkResult
		if err != nil || json.Unmarshal(out, &r) != nil {
			t.Fatalf("%s: %v\n%s", how, err, out)
		}
		return r
	}
	if r := run("send"); r.OK || r.Status != 400 || !strings.Contains(r.Text, "keygate invalid_payload: a request of Resend's broadcast created with send") {
		t.Errorf("broadcasts.create with send: the SDK returned %+v; want keygate's invalid_payload naming the request", r)
	}
	if n := up.count(); n != 0 {
		t.Errorf("the provider got %d requests, want none", n)
	}
	if r := run("draft"); !r.OK || up.count() != 1 {
		t.Errorf("broadcasts.create as a draft: the SDK returned %+v, %d requests upstream; want it passed on", r, up.count())
	}
}

// SES's v1 clients read refusals only as XML (they got keygate's JSON as
// a parser error). The SDK suite drives their sends; this covers what it
// does not: a key whose scope lines do not cover sends or an action, and
// the one send action keygate does not read (SendBounce), refused for a
// restricted key and passed on for a key without limits.
func TestSESv1ClientsReadTheRefusal(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import boto3").CombinedOutput(); err != nil {
		missingTool(t, fmt.Errorf("the SES v1 test runs boto3 with %s (apt-get install python3-boto3): %v\n%s", debianPython, err, out))
	}
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api ses
		scope mail.send POST /v2/email/outbound-emails
		scope ses.read POST /Get*
		scope ses.read POST /List*
		scope ses.admin POST /
	}
	reverse_proxy {UPSTREAM}
`)})
	limited := g.issue("--name", "full-but-limited", "--scope", "*", "--sender-domain", "shop.example")
	reader := g.issue("--name", "read-only", "--scope", "ses.read")
	for _, c := range []struct {
		what, key, call, name, text string
		status                      int
	}{
		{"a bounce with a full-access key limited to shop.example", limited.Key, "bounce", "BadRequestException",
			"keygate invalid_payload: a request of SES's v1 SendBounce action, which keygate does not read, is refused", 400},
		{"a send with a key for reading", reader.Key, "send", "AccessDeniedException",
			"keygate insufficient_scope: the API key lacks the scope this route requires: mail.send", 403},
		{"a deletion with a key for reading", reader.Key, "delete", "AccessDeniedException",
			"keygate insufficient_scope: the API key lacks the scope this route requires: ses.admin", 403},
		{"an unknown key", "kg_live_" + strings.Repeat("0", 49), "send", "UnrecognizedClientException", "keygate invalid_key", 401},
	} {
		out, err := exec.Command(debianPython, "-c", sesV1Script, g.siteURL, c.key, c.call).CombinedOutput()
		var r sdkResult
		if err != nil || json.Unmarshal(out, &r) != nil {
			t.Fatalf("%s: %v\n%s", c.what, err, out)
		}
		if r.OK || r.Name != c.name || r.Status != c.status || !strings.Contains(r.Text, c.text) {
			t.Errorf("%s: boto3 saw %+v; want a %s (%d) saying %q", c.what, r, c.name, c.status, c.text)
		}
	}
	if n := up.count(); n != 0 {
		t.Errorf("the provider got %d requests, want none", n)
	}
	// The reading key's own actions pass, by POST or GET.
	quota := []byte("Action=GetSendQuota&Version=2010-12-01")
	if r := g.call("POST", "/", reader.Key, quota, "Content-Type", "application/x-www-form-urlencoded"); r.Status != 202 || up.count() != 1 {
		t.Errorf("GetSendQuota with a key for reading: %d %s; want it passed on", r.Status, r.Body)
	}
	if r := g.call("GET", "/?Action=ListIdentities&Version=2010-12-01", reader.Key, nil); r.Status != 202 || up.count() != 2 {
		t.Errorf("ListIdentities by GET with a key for reading: %d %s; want it passed on", r.Status, r.Body)
	}

	// The Query API also takes its parameters in a GET's query string: such
	// a send is read as a POSTed one is, not passed on unread.
	send := "/?Action=SendEmail&Version=2010-12-01&Destination.ToAddresses.member.1=a%40rcpt.example&Source="
	r := g.call("GET", send+"ceo%40evil.example", limited.Key, nil)
	if r.Status != 403 || !strings.Contains(string(r.Body), "<Code>MessageRejected</Code>") ||
		!strings.Contains(string(r.Body), "keygate sender_not_allowed") {
		t.Errorf("a GET send from outside the key's domains: %d %s; want 403 and SES's XML MessageRejected", r.Status, r.Body)
	}
	if r := g.call("GET", send+"orders%40shop.example", limited.Key, nil); r.Status != 202 || up.count() != 3 || up.last().Method != "GET" {
		t.Errorf("a GET send from the key's domain: %d %s, %d requests upstream; want it passed on", r.Status, r.Body, up.count())
	}
}
