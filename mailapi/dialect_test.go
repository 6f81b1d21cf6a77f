package mailapi

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestIsSend(t *testing.T) {
	tests := []struct {
		name    string
		dialect string
		method  string
		path    string
		want    bool
	}{
		{"the send path is a send", "sendgrid", "POST", "/v3/mail/send", true},
		{"a trailing slash is the same endpoint", "sendgrid", "POST", "/v3/mail/send/", true},
		{"case does not dodge inspection", "sendgrid", "POST", "/V3/Mail/SEND", true},
		{"repeated slashes do not dodge inspection", "sendgrid", "POST", "//v3//mail/send", true},
		{"dot segments do not dodge inspection", "sendgrid", "POST", "/v3/x/../mail/./send", true},
		{"dot-dot above the root stays at the root", "sendgrid", "POST", "/../v3/mail/send", true},
		{"matrix parameters do not dodge inspection", "postmark", "POST", "/email;x", true},
		{"a trailing space does not dodge inspection", "postmark", "POST", "/email ", true},
		{"a trailing dot does not dodge inspection", "postmark", "POST", "/email.", true},
		{"nor trailing dots and spaces", "postmark", "POST", "/email. .", true},
		{"a format extension does not dodge inspection", "sendgrid", "POST", "/v3/mail/send.json", true},
		{"an escaped question mark ends the path", "postmark", "POST", "/email?x", true},
		{"so does an escaped hash", "postmark", "POST", "/email#x/batch", true},
		{"and a NUL", "resend", "POST", "/emails\x00.png", true},
		{"a final line feed does not dodge inspection", "brevo", "POST", "/v3/smtp/email\n", true},
		{"another line feed is part of the path", "brevo", "POST", "/v3/smtp/email\nx", false},
		{"a carriage return is part of the path", "brevo", "POST", "/v3/smtp/email\r", false},
		{"a path after an authority does not dodge inspection", "sendgrid", "POST", "//gateway.example/v3/mail/send", true},
		{"nor after more slashes", "resend", "POST", "///gateway.example/emails", true},
		{"nor after backslashes", "resend", "POST", `/\gateway.example/emails`, true},
		{"mailgun: the domain after an authority", "mailgun", "POST", "//h/v3/shop.example/messages", true},
		{"an authority's path that is no send is none", "sendgrid", "POST", "//v3/mail/sends", false},
		{"one slash is no authority", "sendgrid", "POST", "/x/v3/mail/send", false},
		{"resend: a format extension", "resend", "POST", "/emails.json", true},
		{"resend: an extension after a trailing slash's segment", "resend", "POST", "/emails/batch.JSON/", true},
		{"mailgun: an extension on messages", "mailgun", "POST", "/v3/mg.example.com/messages.json", true},
		{"an extension only on the last segment", "sendgrid", "POST", "/v3/mail.json/send", false},
		{"an extension is letters and digits", "sendgrid", "POST", "/v3/mail/send.j-s", false},
		{"a longer name with an extension is not the send path", "sendgrid", "POST", "/v3/mail/sender.json", false},
		{"sendgrid: the v2 mail send", "sendgrid", "POST", "/api/mail.send.json", true},
		{"sendgrid: the v2 mail send in XML", "sendgrid", "POST", "/api/mail.send.xml", true},
		{"mailgun: parameters after the domain", "mailgun", "POST", "/v3/shop.example;x/messages", true},
		{"ses: parameters after the send", "ses", "POST", "/v2/email/outbound-emails;jsessionid=1", true},
		{"a servlet's dot-dot with parameters", "sendgrid", "POST", "/v3/x/..;y/mail/send", true},
		{"postmark: a backslash separates segments, as IIS reads one", "postmark", "POST", `/email\batch`, true},
		{"postmark: a trailing backslash is a trailing slash", "postmark", "POST", `/email\`, true},
		{"sendgrid: backslashes and slashes mixed", "sendgrid", "POST", `\v3\mail/send`, true},
		{"sendgrid: a backslash dot-dot leaves the send path", "sendgrid", "POST", `/v3/mail/send\..`, false},
		{"a lower-case method is still a POST", "sendgrid", "post", "/v3/mail/send", true},
		{"GET is not a send", "sendgrid", "GET", "/v3/mail/send", false},
		{"PUT is not a send", "sendgrid", "PUT", "/v3/mail/send", false},
		{"sendgrid: a Single Send is sent by a PUT of its schedule", "sendgrid", "PUT", "/v3/marketing/singlesends/s-1/schedule", true},
		{"sendgrid: the same in lower case", "sendgrid", "put", "/v3/marketing/singlesends/s-1/schedule", true},
		{"sendgrid: its schedule's DELETE cancels it", "sendgrid", "DELETE", "/v3/marketing/singlesends/s-1/schedule", false},
		{"sendgrid: a Single Send is created with no schedule", "sendgrid", "POST", "/v3/marketing/singlesends", false},
		{"a longer path is not the send path", "sendgrid", "POST", "/v3/mail/send/extra", false},
		{"a shorter path is not the send path", "sendgrid", "POST", "/v3/mail", false},
		{"another endpoint is not a send", "sendgrid", "POST", "/v3/templates", false},
		{"dot-dot can leave the send path", "sendgrid", "POST", "/v3/mail/send/..", false},
		{"mailgun: any sending domain", "mailgun", "POST", "/v3/mg.example.com/messages", true},
		{"mailgun: the MIME endpoint", "mailgun", "POST", "/v3/mg.example.com/messages.mime", true},
		{"mailgun: API version 2", "mailgun", "POST", "/v2/mg.example.com/messages", true},
		{"mailgun: API version 2, MIME", "mailgun", "POST", "/v2/mg.example.com/messages.mime", true},
		{"mailgun: the domain segment must be there", "mailgun", "POST", "/v3/messages", false},
		{"mailgun: an empty domain segment is no domain", "mailgun", "POST", "/v3//messages", false},
		{"mailgun: other endpoints are not sends", "mailgun", "POST", "/v3/domains", false},
		{"mailgun: events are not sends", "mailgun", "GET", "/v3/mg.example.com/events", false},
		{"mailgun: a stored message resent to any address", "mailgun", "POST", "/v3/domains/mg.example.com/messages/k-1", true},
		{"mailgun: a stored message read is no send", "mailgun", "GET", "/v3/domains/mg.example.com/messages/k-1", false},
		{"mailgun: an inbox placement test is sent from any sender", "mailgun", "POST", "/v4/inbox/tests", true},
		{"postmark: every send endpoint", "postmark", "POST", "/email/batchWithTemplates", true},
		{"postmark: the Bulk API", "postmark", "POST", "/email/bulk", true},
		{"postmark: a Bulk API request's status is no send", "postmark", "GET", "/email/bulk/b-1", false},
		{"postmark: a resend path is not a postmark send", "postmark", "POST", "/emails", false},
		{"resend: the batch endpoint", "resend", "POST", "/emails/batch", true},
		{"resend: reading an email is not a send", "resend", "GET", "/emails/123", false},
		{"resend: an inbox draft sent", "resend", "POST", "/inboxes/in-1/drafts/d-1/send", true},
		{"resend: an inbox reply, the inbox named by its address", "resend", "POST", "/inboxes/shop%40shop.example/threads/t-1/emails/e-1/reply", true},
		{"resend: an inbox forward", "resend", "POST", "/inboxes/in-1/threads/t-1/emails/e-1/forward", true},
		{"resend: an event that starts automations, which mail the contact", "resend", "POST", "/events/send", true},
		{"resend: an event defined is no send", "resend", "POST", "/events", false},
		{"resend: a draft created is no send", "resend", "POST", "/inboxes/in-1/drafts", false},
		{"ses: the v2 send", "ses", "POST", "/v2/email/outbound-emails", true},
		{"ses: the v2 bulk send", "ses", "POST", "/v2/email/outbound-bulk-emails", true},
		{"ses: a custom verification email", "ses", "POST", "/v2/email/outbound-custom-verification-emails", true},
		{"ses: a predictive inbox placement test is sent from any sender", "ses", "POST", "/v2/email/deliverability-dashboard/test", true},
		{"ses: its reports are read", "ses", "GET", "/v2/email/deliverability-dashboard/test-reports", false},
		{"ses: an identity created, which SES mails its verification", "ses", "POST", "/v2/email/identities", true},
		{"ses: an identity read is no send", "ses", "GET", "/v2/email/identities/a@rcpt.example", false},
		{"ses: Pinpoint Email's send, on the same host", "ses", "POST", "/v1/email/outbound-emails", true},
		{"ses: Pinpoint Email's inbox placement test", "ses", "POST", "/v1/email/deliverability-dashboard/test", true},
		{"ses: Pinpoint Email's identity creation", "ses", "POST", "/v1/email/identities", true},
		{"mailjet: v3.1 send", "mailjet", "POST", "/v3.1/send", true},
		{"mailjet: the older v3 send", "mailjet", "POST", "/v3/send", true},
		{"mailjet: the older v3 send at its first path", "mailjet", "POST", "/v3/send/message", true},
		{"mailjet: a legacy newsletter send", "mailjet", "POST", "/v3/REST/newsletter/7/send", true},
		{"mailjet: a legacy newsletter test send to any address", "mailjet", "POST", "/v3/REST/newsletter/7/test", true},
		{"mailjet: a legacy newsletter schedule", "mailjet", "POST", "/v3/REST/newsletter/7/schedule", true},
		{"mailjet: a legacy newsletter's status is no send", "mailjet", "GET", "/v3/REST/newsletter/7/status", false},
		{"brevo: transactional email", "brevo", "POST", "/v3/smtp/email", true},
		{"brevo: a campaign report mailed to any address", "brevo", "POST", "/v3/emailCampaigns/7/sendReport", true},
		{"brevo: an SMS campaign's report mailed to any address", "brevo", "POST", "/v3/smsCampaigns/7/sendReport", true},
		{"brevo: an SMS campaign sent is no mail", "brevo", "POST", "/v3/smsCampaigns/7/sendNow", false},
		{"mailgun: a sandbox recipient invited by mail", "mailgun", "POST", "/v5/sandbox/auth_recipients", true},
		{"brevo: a sender created, mailed a verification code", "brevo", "POST", "/v3/senders", true},
		{"sendgrid: a verified sender created, mailed a link", "sendgrid", "POST", "/v3/verified_senders", true},
		{"sendgrid: its verification mailed again", "sendgrid", "POST", "/v3/verified_senders/resend/7", true},
		{"sendgrid: a verified sender's steps listed", "sendgrid", "GET", "/v3/verified_senders/steps_completed", false},
		{"mailjet: a sender created, mailed a link", "mailjet", "POST", "/v3/REST/sender", true},
		{"mailjet: the senders listed", "mailjet", "GET", "/v3/REST/sender", false},
		{"brevo: the senders listed", "brevo", "GET", "/v3/senders", false},
		{"postmark: a sender signature created, mailed a confirmation", "postmark", "POST", "/senders/", true},
		{"postmark: its confirmation mailed again", "postmark", "POST", "/senders/12/resend", true},
		{"postmark: a sender signature's SPF checked sends nothing", "postmark", "POST", "/senders/12/verifySpf", false},
		{"mailgun: a sandbox recipient removed sends nothing", "mailgun", "DELETE", "/v5/sandbox/auth_recipients/a@rcpt.example", false},
		{"brevo: a double opt-in confirmation mailed to any address", "brevo", "POST", "/v3/contacts/doubleOptinConfirmation", true},
		{"brevo: a contact created without one sends nothing", "brevo", "POST", "/v3/contacts", false},
		{"mailpit: send", "mailpit", "POST", "/api/v1/send", true},
		{"mailpit: the root is not a send", "mailpit", "POST", "/", false},
		{"an empty path is not a send", "mailpit", "POST", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			if got := d.IsSend(tt.method, tt.path); got != tt.want {
				t.Errorf("%s IsSend(%q, %q) = %v, want %v", tt.dialect, tt.method, tt.path, got, tt.want)
			}
		})
	}
}

// TestMatchPathAgreesWithWalkingBoth holds matchPath, which reads each
// pattern's segments once, to walking the pattern and the path together
// (as it did before) on random paths against every endpoint.
func TestMatchPathAgreesWithWalkingBoth(t *testing.T) {
	walkBoth := func(pattern, path string, ext bool) (string, bool) {
		want := segments{s: pattern, end: len(pattern)}
		got := segments{s: path, end: len(path)}
		var wild string
		for last := true; ; last = false {
			w, wok := want.next()
			g, gok := got.next()
			if ext && last {
				g = formatExtension(g) // the path's last segment, without its format extension
			}
			if !wok || !gok {
				return wild, wok == gok
			}
			switch {
			case w == "*":
				wild = g
			case !strings.EqualFold(w, g):
				return "", false
			}
		}
	}
	words := []string{"v3", "V3", "v2", "mg.example.com", "messages", "Messages.MIME", "messages.mime", "domains", "..", ".", "",
		"x;y", `a\b`, "send ", "mail", "send", "email", "batch", "v4", "inbox", "tests", "emails", "*", "email.", "emails.json", "send.xml", "..."}
	rng := rand.New(rand.NewPCG(23, 24))
	for range 200_000 {
		segs := make([]string, rng.IntN(12)) // past maxSegments too
		for i := range segs {
			segs[i] = words[rng.IntN(len(words))]
		}
		path := "/" + strings.Join(segs, "/")
		for _, d := range dialects {
			for _, e := range d.endpoints {
				for _, ext := range []bool{false, true} {
					wild, ok := matchPath(e.segs, path, ext)
					wwild, wok := walkBoth(e.path, path, ext)
					if ok != wok || ok && wild != wwild {
						t.Fatalf("%s against %q (ext %v): %q, %v; walking both %q, %v", e.path, path, ext, wild, ok, wwild, wok)
					}
				}
			}
		}
	}
}

func TestFormSend(t *testing.T) {
	for _, tc := range []struct {
		dialect, path string
		want          bool
	}{
		{"mailgun", "/v3/mg.example.com/messages", true},
		{"mailgun", "/v3/mg.example.com/messages.mime", true},
		{"ses", "/", true},
		{"ses", "/v2/email/outbound-emails", false},
		{"postmark", "/email", false},
		{"postmark", "/Email/Batch.json", false},
		{"sendgrid", "/v3/mail/send", false},
		{"sendgrid", "/v3/templates", false},
	} {
		d, _ := Lookup(tc.dialect)
		if got := d.FormSend(tc.path); got != tc.want {
			t.Errorf("%s %s: FormSend %v, want %v", tc.dialect, tc.path, got, tc.want)
		}
	}
}

func TestEndpointPathIsTheSendEndpointInspected(t *testing.T) {
	tests := []struct {
		name, dialect, path, want string
	}{
		{"a plain send path is itself", "sendgrid", "/v3/mail/send", "/v3/mail/send"},
		{"case, repeated slashes and dot segments are left to the path matcher", "sendgrid", "//V3/x/../mail/./send", "//V3/x/../mail/./send"},
		{"a trailing slash is dropped", "postmark", "/email/withTemplate/", "/email/withTemplate"},
		{"matrix parameters are dropped", "sendgrid", "/v3/mail/send;x", "/v3/mail/send"},
		{"in every segment", "sendgrid", "/v3;a/mail;b/send;c", "/v3/mail/send"},
		{"a servlet's dot-dot is resolved", "sendgrid", "/v3/x/..;y/mail/send", "/v3/mail/send"},
		{"and after parameters", "postmark", "/email;x/", "/email"},
		{"and a trailing backslash", "postmark", `/email\`, "/email"},
		{"trailing dots and spaces are dropped", "postmark", "/email/batch. ", "/email/batch"},
		{"a backslash is a slash", "postmark", `/email\batch`, "/email/batch"},
		{"a format extension that made the endpoint is dropped", "resend", "/emails.json", "/emails"},
		{"mailgun's domain stays as written", "mailgun", "/v3/Shop.example;x/messages", "/v3/Shop.example/messages"},
		{"mailgun's MIME endpoint keeps its name", "mailgun", "/v3/shop.example/messages.mime;x", "/v3/shop.example/messages.mime"},
		{"ses v1's root", "ses", "/;x", "/"},
		{"ses v1's root as it is", "ses", "//", "//"},
		{"a PUT endpoint with any method", "sendgrid", "/v3/marketing/singlesends/7;x/schedule", "/v3/marketing/singlesends/7/schedule"},
		{"a path that is no endpoint is itself", "sendgrid", "/v3/templates;x", "/v3/templates;x"},
		{"the path ends at a question mark", "postmark", "/email?/batch", "/email"},
		{"or before a final line feed", "brevo", "/v3/smtp/email\n", "/v3/smtp/email"},
		{"a double slash before the send path is left to the matcher", "sendgrid", "//v3/mail/send", "//v3/mail/send"},
		{"the path after an authority", "sendgrid", "//gateway.example/v3/mail/send", "/v3/mail/send"},
		{"ses v1's root after an authority", "ses", "//gateway.example/", "/"},
		// strings.EqualFold (and Java's equalsIgnoreCase) read a long s as
		// an s, a path matcher does not: the endpoint's own spelling.
		{"a segment the endpoint's only as Unicode folds case", "sendgrid", "/v3/mail/\u017fend", "/v3/mail/send"},
		{"the whole segment as the endpoint spells it", "resend", "/EMAIL\u017f/", "/emails"},
		{"mailgun's domain stays as written when a segment is folded", "mailgun", "/v3/\u017fhop.example/me\u017f\u017fages", "/v3/\u017fhop.example/messages"},
		{"a folded segment that dot-dot removes is left", "brevo", "/v3/smtp/email/../../\u212a/../smtp/email", "/v3/smtp/email/../../\u212a/../smtp/email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := Lookup(tt.dialect)
			if got := d.EndpointPath(tt.path); got != tt.want {
				t.Errorf("%s EndpointPath(%q) = %q, want %q", tt.dialect, tt.path, got, tt.want)
			}
		})
	}
}

// ReadPaths reads any path as a server that drops what EndpointPath drops
// would, and as the path after a host; none for the usual path, nor for a
// send endpoint's (EndpointPath reads those).
func TestReadPathsIsThePathAsALenientServerReadsIt(t *testing.T) {
	tests := []struct {
		name, path, read, afterHost string
	}{
		{"a plain path has none", "/v3/templates", "", ""},
		{"nor a plain path with dot segments and repeated slashes, which the matcher cleans", "/v3/./x/..//templates", "", ""},
		{"nor the root", "/", "", ""},
		{"nor a dotted name", "/v3/templates/a.b/.well-known", "", ""},
		{"matrix parameters are dropped", "/v3;a/templates;b", "/v3/templates", ""},
		{"a trailing slash is dropped", "/v3/templates/", "/v3/templates", ""},
		{"trailing dots and spaces are dropped", "/v3/templates. ", "/v3/templates", ""},
		{"a backslash is a slash", `/v3\templates\`, "/v3/templates", ""},
		{"a servlet's dot-dot is resolved", "/x/..;y/v3/templates", "/v3/templates", ""},
		{"the path ends at a question mark, a hash or a NUL", "/v3/templates?x#y\x00z", "/v3/templates", ""},
		{"and before a final line feed", "/v3/templates\n", "/v3/templates", ""},
		{"a root with parameters", "/;x", "/", ""},
		{"the path after a host", "//gateway.example/v3/templates", "/gateway.example/v3/templates", "/v3/templates"},
		{"a base URL's trailing slash reads as a host too", "//v3/templates", "/v3/templates", "/templates"},
		{"after a host, read as any other", "/\\h/v3/templates;x/", "/h/v3/templates", "/v3/templates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read, afterHost := ReadPaths(tt.path)
			if read != tt.read || afterHost != tt.afterHost {
				t.Errorf("ReadPaths(%q) = %q, %q, want %q, %q", tt.path, read, afterHost, tt.read, tt.afterHost)
			}
		})
	}
	sendgrid, _ := Lookup("sendgrid")
	for _, p := range []string{"/v3/mail/send;x", "//v3/mail/send", "//h/v3/mail/send/"} {
		if read, afterHost := sendgrid.ReadPaths(p); read != "" || afterHost != "" {
			t.Errorf("sendgrid ReadPaths(%q) = %q, %q, want none (a send endpoint is read as EndpointPath says)", p, read, afterHost)
		}
	}
	if read, _ := sendgrid.ReadPaths("/v3/templates;x"); read != "/v3/templates" {
		t.Errorf("sendgrid ReadPaths(/v3/templates;x) = %q, want /v3/templates", read)
	}
	if n := testing.AllocsPerRun(100, func() { sendgrid.ReadPaths("/v3/mail/send") }); n != 0 {
		t.Errorf("ReadPaths allocates %v times per call for a plain path", n)
	}
}

func TestIsSendDoesNotAllocate(t *testing.T) {
	d, _ := Lookup("mailgun")
	if n := testing.AllocsPerRun(100, func() { d.IsSend("POST", "/v3/mg.example.com/messages.mime/") }); n != 0 {
		t.Errorf("IsSend allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { d.IsSend("POST", "//gateway.example/v3/templates") }); n != 0 {
		t.Errorf("IsSend allocates %v times per call after an authority", n)
	}
	if n := testing.AllocsPerRun(100, func() { d.EndpointPath("/v3/mg.example.com/messages.mime") }); n != 0 {
		t.Errorf("EndpointPath allocates %v times per call for a path it leaves", n)
	}
}

func TestLookup(t *testing.T) {
	want := []string{"sendgrid", "postmark", "mailgun", "resend", "ses", "mailjet", "brevo", "mailpit"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for _, name := range want {
		if d, ok := Lookup(name); !ok || d.Name != name {
			t.Errorf("Lookup(%q) = %v, %v", name, d, ok)
		}
	}
	if _, ok := Lookup("SendGrid"); ok {
		t.Error("Lookup is case-sensitive, like the rest of the Caddyfile's names")
	}
	if _, ok := Lookup("sparkpost"); ok {
		t.Error("Lookup found an unknown dialect")
	}
}

// Every send endpoint of every dialect refuses a body that is not the JSON
// type the endpoint takes, null included: a null batch would otherwise pass
// as an empty one.
func TestEveryEndpointRefusesABodyOfTheWrongType(t *testing.T) {
	for _, d := range dialects {
		for _, e := range d.endpoints {
			if e.form || e.opaque != "" {
				continue // forms: TestEveryFormEndpointRefusesACutMultipartBody; opaque: TestCampaignSendsAreOpaque
			}
			bodies := []string{`null`, ` null `, `"x"`, `1`, `true`, ``}
			if e.shape.members == nil {
				bodies = append(bodies, `{}`)
			}
			if e.shape.elem == nil {
				bodies = append(bodies, `[]`)
			}
			for _, body := range bodies {
				t.Run(d.Name+e.path+" "+body, func(t *testing.T) {
					if _, err := d.Inspect(e.path, jsonType, []byte(body)); err == nil {
						t.Errorf("%s %s accepted the body %q", d.Name, e.path, body)
					}
				})
			}
		}
	}
}

// A multipart body cut anywhere in its last part is refused, wherever the
// cut falls: mime/multipart itself reports no error when the cut is in the
// part's headers.
func TestEveryFormEndpointRefusesACutMultipartBody(t *testing.T) {
	const b = "b0undary"
	// The cut part is a recipient field, which keygate must not miss
	// while the provider reads it.
	firsts := map[string]string{
		"/v3/mg.example.com/messages": "--" + b + "\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nshop@mg.example.com\r\n",
		"/v3/mg.example.com/messages.mime": "--" + b + "\r\nContent-Disposition: form-data; name=\"message\"; filename=\"m\"\r\n\r\n" +
			"From: shop@mg.example.com\r\nTo: a@example.com\r\n\r\nhi\r\n",
	}
	last := "--" + b + "\r\nContent-Disposition: form-data; name=\"bcc\"\r\n\r\nb@example.com\r\n"
	d, _ := Lookup("mailgun")
	ctype := "multipart/form-data; boundary=" + b
	for _, e := range d.endpoints {
		if e.opaque != "" {
			continue // not read
		}
		path := strings.ReplaceAll(e.path, "*", "mg.example.com")
		first, ok := firsts[strings.Replace(path, "/v2/", "/v3/", 1)]
		if !ok {
			t.Fatalf("no multipart body for %s", path)
		}
		whole := first + last + "--" + b + "--\r\n"
		for _, ok := range []string{whole, strings.TrimSuffix(whole, "\r\n"), whole + "an epilogue\r\n"} {
			if _, err := d.Inspect(path, ctype, []byte(ok)); err != nil {
				t.Fatalf("%s: a whole body is refused: %v\n%q", path, err, ok)
			}
		}
		// Every cut from just after the first part to just before the
		// close delimiter: after the last part's boundary line, in its
		// headers, before the blank line, in its content.
		for cut := len(first) + 1; cut <= len(first)+len(last)+len("--"+b); cut++ {
			body := whole[:cut]
			if _, err := d.Inspect(path, ctype, []byte(body)); err == nil {
				t.Errorf("%s: accepted a body cut at byte %d: %q", path, cut, body[len(first):])
			}
		}
		// Another part after the close delimiter: parsers differ on it.
		more := whole + last + "--" + b + "--\r\n"
		if _, err := d.Inspect(path, ctype, []byte(more)); err == nil {
			t.Errorf("%s: accepted a part after the close delimiter", path)
		}
	}
}

// TestEveryShapeKnowsItsNames walks every endpoint's shapes: a shape built
// without object or message would pass over the members it names.
func TestEveryShapeKnowsItsNames(t *testing.T) {
	seen := map[*shape]bool{}
	var check func(where string, s *shape)
	check = func(where string, s *shape) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		if s.members != nil && s.names != filterOf(s.members) {
			t.Errorf("%s: the name filter is not its members'", where)
		}
		for _, m := range s.members {
			check(where+"."+m.name, m.shape)
		}
		check(where+"[]", s.elem)
	}
	for _, d := range dialects {
		for _, e := range d.endpoints {
			check(d.Name+" "+e.path, e.shape)
		}
	}
	if len(seen) < 20 {
		t.Fatalf("walked only %d shapes", len(seen))
	}
}

// Campaign and broadcast sends take their sender and recipients from what is
// stored at the provider: whatever the body, the request is opaque, names
// what it is, and reports no sending domain for the id in its path.
// Resend's POST /broadcasts creates a draft, or with "send": true sends it
// to a segment stored at Resend; a Brevo campaign created or updated with a
// scheduledAt is sent then. Only those are sends keygate cannot read.
func TestSendsByFlagAreOpaque(t *testing.T) {
	for _, c := range []struct {
		dialect, method, path, body string
		opaque, notSend             bool
		wantErr                     string
		ctype                       string // JSON's unless set
	}{
		{"resend", "POST", "/broadcasts", `{"from":"a@shop.example","segment_id":"s-1","send":true}`, true, false, "", ""},
		{"resend", "POST", "/broadcasts", `{"send":true,"scheduled_at":"in 1 hour"}`, true, false, "", ""},
		{"resend", "POST", "/broadcasts", `{"Send":1}`, true, false, "", ""},
		{"resend", "POST", "/broadcasts", `{"from":"ceo@evil.example","segment_id":"s-1"}`, false, true, "", ""},
		{"resend", "POST", "/broadcasts", `{"from":"ceo@evil.example","send":false}`, false, true, "", ""},
		{"resend", "POST", "/broadcasts", `{"send":null}`, false, true, "", ""},
		{"resend", "POST", "/broadcasts", `{"send":fals}`, false, false, "not valid JSON", ""},
		{"resend", "POST", "/broadcasts", `[{"send":true}]`, false, false, "want a JSON object", ""},
		{"resend", "POST", "/broadcasts", `{"send":true} {}`, false, false, "data after the top-level value", ""},
		{"brevo", "POST", "/v3/emailCampaigns", `{"name":"n","sender":{"email":"ceo@evil.example"},"scheduledAt":"2026-12-01T10:00:00Z"}`, true, false, "", ""},
		{"brevo", "POST", "/v3/emailCampaigns", `{"name":"n","sender":{"email":"ceo@evil.example"}}`, false, true, "", ""},
		{"brevo", "PUT", "/v3/emailCampaigns/7", `{"scheduledAt":"2026-12-01T10:00:00Z"}`, true, false, "", ""},
		{"brevo", "PUT", "/v3/emailCampaigns/7", `{"subject":"s"}`, false, true, "", ""},
		// In UTF-7, which Express's body-parser decodes, "+AHM-end" is "send".
		{"resend", "POST", "/broadcasts", `{"segment_id":"s-1","+AHM-end":true}`, false, false, `charset "utf-7" is refused`, "application/json; charset=utf-7"},
		// Said to be a form, it is one to a provider binding bodies by
		// their Content-Type, whose send is true.
		{"resend", "POST", "/broadcasts", `{"x":"&send=true&y=","segment_id":"s-1"}`, true, false, "", "application/x-www-form-urlencoded"},
		{"brevo", "POST", "/v3/emailCampaigns", `{"x":"&scheduledAt=2026-12-01&y="}`, true, false, "", "Multipart/Form-Data; boundary=b"},
	} {
		d, _ := Lookup(c.dialect)
		if !d.IsSend(c.method, c.path) {
			t.Errorf("%s %s %s is not a send endpoint", c.dialect, c.method, c.path)
			continue
		}
		ct := jsonType
		if c.ctype != "" {
			ct = c.ctype
		}
		m, err := d.Inspect(c.path, ct, []byte(c.body))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s %s: error %v, want one saying %q", c.path, c.body, err, c.wantErr)
			}
			continue
		}
		if err != nil || m.Opaque != c.opaque || m.NotSend != c.notSend || len(m.Senders) != 0 || m.Recipients != 0 {
			t.Errorf("%s %s: %+v, %v; want opaque %v, not a send %v", c.path, c.body, m, err, c.opaque, c.notSend)
		}
		if c.opaque && !strings.Contains(m.Unread, "with send") && !strings.Contains(m.Unread, "with scheduledAt") {
			t.Errorf("%s %s: Unread %q", c.path, c.body, m.Unread)
		}
	}
}

func TestCampaignSendsAreOpaque(t *testing.T) {
	n := 0
	for _, d := range dialects {
		for _, e := range d.endpoints {
			if e.opaque == "" {
				continue
			}
			n++
			path := strings.ReplaceAll(e.path, "*", "c-1")
			method := cmp.Or(e.method, "POST")
			if !d.IsSend(method, path) {
				t.Errorf("%s %s %s is not a send", d.Name, method, path)
			}
			// Only the method that sends: a PUT's DELETE cancels it.
			for _, other := range []string{"GET", "DELETE", "PATCH", "POST", "PUT"} {
				if other != method && d.IsSend(other, path) {
					t.Errorf("%s %s %s is a send", d.Name, other, path)
				}
			}
			if e.sendFlag != "" {
				continue // a send only with its flag: TestSendsByFlagAreOpaque
			}
			for _, body := range []string{``, `{}`, `{"emails":["a@b.org"]}`, `not json`} {
				m, err := d.Inspect(path, jsonType, []byte(body))
				if err != nil || !m.Opaque || !strings.Contains(m.Unread, "which keygate does not read") ||
					len(m.Senders)+len(m.SendingDomains)+m.Recipients != 0 {
					t.Errorf("%s %s %q: %+v, %v; want an opaque send naming itself", d.Name, path, body, m, err)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d campaign sends", n)
	}
}

// A path a server may serve as a send endpoint is read as that endpoint:
// with a format extension (Rails, Spring's suffix match) or trailing dots
// (IIS). An endpoint whose name holds a dot is matched whole first.
func TestInspectReadsExtendedPathsAsTheirEndpoint(t *testing.T) {
	mg, _ := Lookup("mailgun")
	form := []byte("from=shop%40mg.example.com&to=a%40x.org&h%3AFrom=ceo%40evil.example")
	for _, p := range []string{"/v3/mg.example.com/messages.json", "/v3/mg.example.com./messages", "/v3/mg.example.com/messages."} {
		m, err := mg.Inspect(p, formType, form)
		if err != nil || !slices.Contains(m.Senders, "ceo@evil.example") || !slices.Equal(m.SendingDomains, []string{"mg.example.com"}) {
			t.Errorf("%s: senders %v, sending domains %v, err %v; want the message read, through mg.example.com", p, m.Senders, m.SendingDomains, err)
		}
	}
	mime := []byte("--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nFrom: ceo@evil.example\r\nTo: a@x.org\r\n\r\nhi\r\n--b--\r\n")
	for _, p := range []string{"/v3/mg.example.com/messages.mime", "/v3/mg.example.com/messages.mime.json"} {
		m, err := mg.Inspect(p, "multipart/form-data; boundary=b", mime)
		if err != nil || !slices.Contains(m.Senders, "ceo@evil.example") {
			t.Errorf("%s: senders %v, err %v; want the MIME message's From", p, m.Senders, err)
		}
	}
	sg, _ := Lookup("sendgrid")
	m, err := sg.Inspect("/v3/mail/send.json", jsonType, []byte(`{"from":{"email":"ceo@evil.example"},"personalizations":[{"to":[{"email":"a@x.org"}]}]}`))
	if err != nil || !slices.Equal(m.Senders, []string{"ceo@evil.example"}) || m.Recipients != 1 {
		t.Errorf("sendgrid send.json: %+v, %v", m, err)
	}
}

// TestABatchMailjetMaySendInPartIsSaidToBe checks PartlySent: Mailjet's
// v3.1 send processes each message of a batch on its own and answers 400
// when it refused any, so such an answer does not show that nothing went.
// A single message, and every other dialect's send, is refused whole.
func TestABatchMailjetMaySendInPartIsSaidToBe(t *testing.T) {
	msg := `{"From":{"Email":"a@shop.example"},"To":[{"Email":"%s@rcpt.example"}],"TextPart":"hi"}`
	one := fmt.Sprintf(msg, "a")
	for _, c := range []struct {
		dialect, path, body string
		want                bool
	}{
		{"mailjet", "/v3.1/send", `{"Messages":[` + one + `,` + fmt.Sprintf(msg, "b") + `]}`, true},
		{"mailjet", "/v3.1/send", `{"Messages":[` + one + `]}`, false},
		{"mailjet", "/v3.1/send", `{"Globals":{"Bcc":[{"Email":"c@rcpt.example"}]},"Messages":[` + one + `]}`, false},
		{"mailjet", "/v3/send", `{"Messages":[{"FromEmail":"a@shop.example","To":"a@rcpt.example"},{"FromEmail":"a@shop.example","To":"b@rcpt.example"}]}`, false},
		{"postmark", "/email/batch", `[{"From":"a@shop.example","To":"a@rcpt.example"},{"From":"a@shop.example","To":"b@rcpt.example"}]`, false},
	} {
		d, _ := Lookup(c.dialect)
		m, err := d.Inspect(c.path, "application/json", []byte(c.body))
		if err != nil || m.PartlySent != c.want {
			t.Errorf("%s %s %s: PartlySent %v, %v; want %v", c.dialect, c.path, c.body, m.PartlySent, err, c.want)
		}
	}
}
