package keygate_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// awsEnvScript sends one message with each of the AWS SDK for
// JavaScript's SES clients, given no endpoint (argv: key, from) and prints
// "ok" or the error for each.
const awsEnvScript = `
import { SESv2Client, SendEmailCommand } from "@aws-sdk/client-sesv2";
import { SESClient, SendEmailCommand as SendV1 } from "@aws-sdk/client-ses";
const [key, from] = process.argv.slice(1);
const credentials = { accessKeyId: key, secretAccessKey: "unused" };
const out = [];
for (const send of [
  () => new SESv2Client({ region: "us-east-1", credentials }).send(new SendEmailCommand({ FromEmailAddress: from,
    Destination: { ToAddresses: ["a@rcpt.example"] }, Content: { Simple: { Subject: { Data: "s" }, Body: { Text: { Data: "t" } } } } })),
  () => new SESClient({ region: "us-east-1", credentials }).send(new SendV1({ Source: from,
    Destination: { ToAddresses: ["a@rcpt.example"] }, Message: { Subject: { Data: "s" }, Body: { Text: { Data: "t" } } } })),
]) {
  try { await send(); out.push("ok"); } catch (err) { out.push((err.name + ": " + err.message).replace(/\n/g, " ")); }
}
console.log(out.join("\n"));
`

// The AWS SDK for JavaScript takes a service's endpoint from the
// environment when the code names none (AWS_ENDPOINT_URL_SESV2 for the v2
// client, AWS_ENDPOINT_URL_SES for the v1 one), as docs/sdks.md says: a
// deployment points an unchanged application at the gateway so.
func TestE2EAWSSDKsTakeTheEndpointFromTheEnvironment(t *testing.T) {
	dir := filepath.Join("compat", "node")
	if err := npmCI(dir); err != nil {
		missingTool(t, err)
	}
	up := newUpstream(t)
	g := startGateway(t, gatewayConfig{upstream: up.URL, caddyfile: site(`
	keygate {
		store {STORE}
		mail_api ses
		scope mail.send POST /v2/email/outbound-emails
	}
	reverse_proxy {UPSTREAM}
`)})
	k := g.issue("--name", "env", "--scope", "mail.send", "--sender-domain", "shop.example")
	run := func(from string) []string {
		cmd := exec.Command("node", "--input-type=module", "-e", awsEnvScript, k.Key, from)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "AWS_ENDPOINT_URL_SESV2="+g.siteURL, "AWS_ENDPOINT_URL_SES="+g.siteURL,
			"AWS_MAX_ATTEMPTS=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	// The fake provider answers JSON, which the v2 client takes and the v1
	// client cannot read (it reads XML): what counts is that both sends
	// reached the provider, through the gateway.
	got := run("orders@shop.example")
	up.mu.Lock()
	var paths []string
	for _, r := range up.reqs {
		paths = append(paths, r.Method+" "+r.Path)
	}
	up.mu.Unlock()
	if len(got) != 2 || got[0] != "ok" || strings.Join(paths, ", ") != "POST /v2/email/outbound-emails, POST /" {
		t.Errorf("the v2 and v1 clients with the endpoint in the environment: %q; the provider got %q, want each client's send", got, paths)
	}
	for i, r := range run("ceo@evil.example") {
		if !strings.HasPrefix(r, "MessageRejected: keygate sender_not_allowed") {
			t.Errorf("client %d from another domain: %q, want keygate's sender_not_allowed", i, r)
		}
	}
}
