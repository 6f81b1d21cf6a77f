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
import sgMail from "@sendgrid/mail";
import Mailjet from "node-mailjet";
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
  case "sendgrid-verified-sender": // SendGrid mails the address a verification link
    sgMail.setApiKey(key);
    sgMail.client.setDefaultRequest("baseUrl", base); // @sendgrid/mail's own @sendgrid/client
    await sgMail.client.request({ method: "POST", url: "/v3/verified_senders", body: {
      nickname: "A", from_email: "a@rcpt.example", reply_to: "a@rcpt.example", address: "1 Main St", city: "X", country: "Y" } });
    break;
  case "mailjet-sender": { // Mailjet mails the address a confirmation link
    Mailjet.Request.protocol = new URL(base).protocol + "//";
    await new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } }).post("sender").request({ Email: "a@rcpt.example" });
    break;
  }
  case "postmark-sender-signature": // Postmark mails the address a confirmation link
    await new postmark.AccountClient(key, { useHttps: false, requestHost: new URL(base).host }).createSenderSignature({ FromEmail: "a@rcpt.example", Name: "A" });
    break;
  }
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  const text = call.startsWith("mailgun") ? String(err.details) : call.startsWith("sendgrid") ? String(err) : String(err.message);
  console.log(JSON.stringify({ ok: false, name: err.name ?? "", text, status: err.statusCode ?? err.code ?? err.status ?? 0 }));
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
// senders.createSender (a verification code), postmark's
// AccountClient.createSenderSignature, SendGrid's verified senders and
// Mailjet's senders (a link; @sendgrid/client's request, node-mailjet's
// post("sender")).
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
		{"sendgrid-verified-sender", "sendgrid", "senders.write POST /v3/verified_senders*", "SendGrid's sender verification"},
		{"mailjet-sender", "mailjet", "senders.write POST /v3/REST/sender", "Mailjet's sender confirmation"},
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
				var stderr strings.Builder
				cmd.Stderr = &stderr // @sendgrid/client warns there that the key does not start with "SG."
				out, err := cmd.Output()
				var r sdkResult
				if err != nil || json.Unmarshal(out, &r) != nil {
					t.Fatalf("%v\n%s%s", err, out, stderr.String())
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
