package keygate_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unreadSendScript makes, through the newest official Node SDK, a call that
// has the provider send mail keygate does not read (argv: call, gateway,
// key) and prints what the SDK returned or threw.
const unreadSendScript = `
import Mailgun from "mailgun.js";
import postmark from "postmark";
import FormData from "form-data";
import { BrevoClient } from "@getbrevo/brevo";
const [call, base, key] = process.argv.slice(1);
try {
  switch (call) {
  case "brevo-sms-report": // a report of an SMS campaign, mailed with the client's text
    await new BrevoClient({ apiKey: key, baseUrl: base + "/v3", maxRetries: 0 }).smsCampaigns.sendSmsReport({
      campaignId: 7, body: { email: { to: ["a@rcpt.example", "b@rcpt.example"], body: "text of the client's own" } },
    });
    break;
  case "mailgun-sandbox-recipient": // Mailgun mails the address an invitation
    await new Mailgun(FormData).client({ username: "api", key, url: base }).accountManagement.addSandboxAuthorizedRecipient("a@rcpt.example");
    break;
  case "brevo-sender": // Brevo mails the address a verification code
    await new BrevoClient({ apiKey: key, baseUrl: base + "/v3", maxRetries: 0 }).senders.createSender({ email: "a@rcpt.example", name: "A" });
    break;
  case "postmark-sender-signature": // Postmark mails the address a confirmation link
    await new postmark.AccountClient(key, { useHttps: false, requestHost: new URL(base).host }).createSenderSignature({ FromEmail: "a@rcpt.example", Name: "A" });
    break;
  }
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  const text = call.startsWith("mailgun") ? String(err.details) : String(err.message);
  console.log(JSON.stringify({ ok: false, name: err.name ?? "", text, status: err.statusCode ?? err.status ?? 0 }));
}
`

// Calls of the newest SDKs that have the provider send mail whose
// recipients keygate does not read are sends it does not read, as the
// campaign sends of docs/providers.md: refused for a key limited to sender
// domains (which could otherwise mail any address through them, however
// the route's scope lines are drawn), passed on for a key without limits.
// Until session 37 none was a send endpoint, and each passed for the
// limited key: @getbrevo/brevo 6's smsCampaigns.sendSmsReport (mailed like
// the email campaign's report, which was one), and three that have the
// provider mail the address they name, as SES's VerifyEmailIdentity (which
// was one) does: mailgun.js 14's accountManagement.
// addSandboxAuthorizedRecipient (an invitation), @getbrevo/brevo's
// senders.createSender (a verification code) and postmark's
// AccountClient.createSenderSignature (a confirmation link).
func TestE2ESDKCallsThatMailAreUnreadSends(t *testing.T) {
	dir := filepath.Join("compat", "node")
	if err := npmCI(dir); err != nil {
		missingTool(t, err)
	}
	for _, c := range []struct {
		call, dialect, scope, refusal string
	}{
		{"brevo-sms-report", "brevo", "campaigns.write POST /v3/smsCampaigns/*", "Brevo's SMS campaign report send"},
		{"mailgun-sandbox-recipient", "mailgun", "account.write POST /v5/sandbox/*", "Mailgun's sandbox recipient invitation"},
		{"brevo-sender", "brevo", "senders.write POST /v3/senders", "Brevo's sender verification"},
		{"postmark-sender-signature", "postmark", "senders.write POST /senders*", "Postmark's sender signature confirmation"},
	} {
		t.Run(c.call, func(t *testing.T) {
			up := newUpstream(t)
			g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api ` + c.dialect + `
		scope ` + c.scope + `
	}
	reverse_proxy {UPSTREAM}
`)})
			scope := strings.Fields(c.scope)[0]
			limited := g.issue("--name", "limited", "--scope", scope, "--sender-domain", "shop.example")
			open := g.issue("--name", "open", "--scope", scope)
			run := func(key string) sdkResult {
				cmd := exec.Command("node", "--input-type=module", "-e", unreadSendScript, c.call, g.siteURL, key)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				var r sdkResult
				if err != nil || json.Unmarshal(out, &r) != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				return r
			}
			want := "keygate invalid_payload: a request of " + c.refusal
			if r := run(limited.Key); r.OK || r.Status != 400 || !strings.Contains(r.Text, want) {
				t.Errorf("a key limited to shop.example: the SDK gave %+v; want 400 %q", r, want)
			}
			if n := up.count(); n != 0 {
				t.Errorf("the provider got %d requests from the limited key, want none", n)
			}
			if r := run(open.Key); !r.OK || up.count() != 1 {
				t.Errorf("a key without limits: the SDK gave %+v, %d requests upstream; want it passed on", r, up.count())
			}
		})
	}
}
