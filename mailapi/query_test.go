package mailapi

import (
	"slices"
	"strings"
	"testing"
)

func TestQueryRequest(t *testing.T) {
	ses, _ := Lookup("ses")
	mailpit, _ := Lookup("mailpit")
	form := "application/x-www-form-urlencoded; charset=utf-8"
	for _, c := range []struct {
		d                                   *Dialect
		method, path, rawQuery, contentType string
		want                                bool
	}{
		{ses, "POST", "/", "", "", true},
		{ses, "post", "//", "", "", true},
		{ses, "GET", "/", "Action=SendEmail&Source=a%40b.org", "", true},
		{ses, "HEAD", "/", "Action=ListIdentities", "", true},
		{ses, "GET", "/", "", "", false}, // no parameters: nothing of the Query API
		{ses, "POST", "/v2/email/outbound-emails", "", "application/json", false},
		{ses, "POST", "/v2/email/outbound-emails", "", form, false}, // a v2 send, inspected as one
		{ses, "GET", "/v2/email/account", "x=1", "", false},
		{ses, "POST", "/v2/email/templates", "", "application/json", false},
		{ses, "POST", "/keygate/whoami", "", "", false},
		// Elsewhere, a form or an Action parameter is the Query API's.
		{ses, "POST", "/x", "", form, true},
		{ses, "POST", "/.json", "", "multipart/form-data; boundary=b", true},
		{ses, "GET", "/x", "Action=SendEmail", "", true},
		{ses, "GET", "/v2/email/identities", "x=1&%41ction=SendEmail", "", true},
		{ses, "GET", "/x", "x=1;action=SendEmail", "", true},
		{ses, "POST", "/x", "", "application/json", false},
		{ses, "GET", "/v2/email/account", "Actions=1&xAction=2", "", false},
		{mailpit, "POST", "/", "Action=SendEmail", form, false},
	} {
		if got := c.d.QueryRequest(c.method, c.path, c.rawQuery, c.contentType); got != c.want {
			t.Errorf("%s QueryRequest(%q, %q, %q, %q) = %v, want %v", c.d.Name, c.method, c.path, c.rawQuery, c.contentType, got, c.want)
		}
	}
}

// Every action of SES's v1 API shares "/": a send is read and scoped as
// the v2 endpoint that sends the same way, an action that sends no mail is
// no send, and a send keygate does not read is opaque.
func TestInspectQueryActions(t *testing.T) {
	ses, _ := Lookup("ses")
	for _, c := range []struct {
		name, query, body string
		posted            bool
		senders           []string
		recipients        int
		opaque, notSend   bool
		scopePath         string
		scopeElse         bool
	}{
		{name: "SendEmail", posted: true,
			body:    "Action=SendEmail&Source=a%40shop.example&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"a@shop.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "SendTemplatedEmail", posted: true,
			body:    "Action=SendTemplatedEmail&Source=a%40shop.example&Template=t&TemplateData=%7B%7D&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"a@shop.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "SendBulkTemplatedEmail", posted: true,
			body:    "Action=SendBulkTemplatedEmail&Source=a%40shop.example&Destinations.member.1.Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"a@shop.example"}, recipients: 1, scopePath: "/v2/email/outbound-bulk-emails"},
		{name: "the action after the fields", posted: true,
			body:    "Source=a%40shop.example&Destination.ToAddresses.member.1=x%40example.com&Action=SendEmail",
			senders: []string{"a@shop.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "an action in another case is read as that action", posted: true,
			body:    "Action=sendemail&Source=ceo%40evil.example&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"ceo@evil.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "a list numbered without member reads the same", posted: true,
			body:    "Action=SendEmail&Source=a%40shop.example&Destination.ToAddresses.1=x%40example.com&destination.toaddresses.member.2=y%40example.com",
			senders: []string{"a@shop.example"}, recipients: 2, scopePath: "/v2/email/outbound-emails"},
		{name: "a GET names everything in its query string",
			query:   "Action=SendEmail&Source=ceo%40evil.example&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"ceo@evil.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "a POST's query string is read with its body", posted: true,
			query:   "Source=ceo%40evil.example",
			body:    "Action=SendEmail&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"ceo@evil.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
		{name: "an action that sends no mail", posted: true, body: "Action=ListIdentities&IdentityType=Domain", notSend: true,
			scopePath: "/ListIdentities", scopeElse: true},
		{name: "a deletion sends no mail, whatever else it names", posted: true,
			body: "Action=DeleteIdentity&Identity=shop.example&Source=not+an+address", notSend: true,
			scopePath: "/DeleteIdentity", scopeElse: true},
		{name: "an action is scoped by its name as sent", query: "Action=getSendQuota", notSend: true,
			scopePath: "/getSendQuota", scopeElse: true},
		{name: "an action SES could not have is scoped as the request, and may be a send", posted: true, body: "Action=Get%2F..%2FDelete",
			opaque: true, scopeElse: true},
		{name: "a send's name with a byte after it is no other action: it may be that send", posted: true,
			body: "Action=SendEmail%20&Source=ceo%40evil.example&Destination.ToAddresses.member.1=a%40rcpt.example", opaque: true, scopeElse: true},
		{name: "so is one with a NUL", query: "Action=SendRawEmail%00&RawMessage.Data=x", opaque: true, scopeElse: true},
		{name: "SendBounce is a send keygate does not read", posted: true,
			body: "Action=SendBounce&BounceSender=ceo%40evil.example", opaque: true, scopePath: "/SendBounce", scopeElse: true},
		{name: "VerifyEmailIdentity mails any address: a send keygate does not read", posted: true,
			body: "Action=VerifyEmailIdentity&EmailAddress=a%40rcpt.example", opaque: true, scopePath: "/VerifyEmailIdentity", scopeElse: true},
		{name: "so does the older VerifyEmailAddress", query: "Action=VerifyEmailAddress&EmailAddress=a%40rcpt.example",
			opaque: true, scopePath: "/VerifyEmailAddress", scopeElse: true},
		{name: "SendCustomVerificationEmail is one too", posted: true,
			body: "Action=SendCustomVerificationEmail&EmailAddress=x%40example.com&TemplateName=t", opaque: true,
			scopePath: "/v2/email/outbound-custom-verification-emails"},
		{name: "the same action twice", posted: true,
			body:    "Action=SendEmail&Action=SendEmail&Source=a%40shop.example&Destination.ToAddresses.member.1=x%40example.com",
			senders: []string{"a@shop.example"}, recipients: 1, scopePath: "/v2/email/outbound-emails"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := ses.InspectQuery(c.query, c.posted, formType, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.Senders, c.senders) || m.Recipients != c.recipients || m.Opaque != c.opaque ||
				m.NotSend != c.notSend || m.ScopePath != c.scopePath || m.ScopeElse != c.scopeElse {
				t.Errorf("got senders %q, %d recipients, opaque %v, not a send %v, scope path %q (else %v); want %q, %d, %v, %v, %q (%v)",
					m.Senders, m.Recipients, m.Opaque, m.NotSend, m.ScopePath, m.ScopeElse,
					c.senders, c.recipients, c.opaque, c.notSend, c.scopePath, c.scopeElse)
			}
			if c.opaque && !strings.Contains(m.Unread, "which keygate does not read") {
				t.Errorf("an opaque action's Unread is %q", m.Unread)
			}
		})
	}
}

func TestActionScopePath(t *testing.T) {
	ses, _ := Lookup("ses")
	sendgrid, _ := Lookup("sendgrid")
	for _, c := range []struct {
		d    *Dialect
		path string
		want bool
	}{
		{ses, "/GetSendQuota", true},
		{ses, "/ListIdentities", true},
		{ses, "/", false},
		{ses, "/v2/email/identities", false},
		{ses, "GetSendQuota", false},
		{sendgrid, "/GetSendQuota", false},
	} {
		if got := c.d.ActionScopePath(c.path); got != c.want {
			t.Errorf("%s: ActionScopePath(%q) = %v, want %v", c.d.Name, c.path, got, c.want)
		}
	}
}

func TestInspectQueryRejects(t *testing.T) {
	ses, _ := Lookup("ses")
	for _, c := range []struct {
		name, query, ctype, body, wantErr string
	}{
		{"no action", "", formType, "Source=a%40b.org", "Action is missing"},
		{"two actions", "", formType, "Action=ListIdentities&Action=SendEmail&Source=a%40b.org", "Action is given twice, with different values"},
		{"one action in the query, another in the body", "Action=SendEmail", formType, "Action=ListIdentities", "Action is given twice"},
		{"a send without a sender", "", formType, "Action=SendEmail&Destination.ToAddresses.member.1=x%40example.com",
			"Source (or a From header in RawMessage.Data) is missing"},
		{"a sender that is no address", "", formType, "Action=SendEmail&Source=secret-bad-address", "Source: not a valid address list"},
		{"a recipient that is no address", "", formType, "Action=SendEmail&Source=a%40b.org&Destination.ToAddresses.member.1=secret-bad-address",
			"Destination.ToAddresses: not a valid address list"},
		{"a bad escape in the action", "", formType, "Action=%zz", "Action: invalid escape"},
		{"a bad escape in a value", "", formType, "Action=SendEmail&Source=%zz", "Source: invalid escape"},
		{"a multipart body", "", "multipart/form-data; boundary=b", "--b--\r\n", "want application/x-www-form-urlencoded"},
		{"JSON", "", jsonType, `{"Action":"SendEmail"}`, "Content-Type: want"},
		{"another charset", "", formType + "; charset=utf-16", "Action=SendEmail", `form charset "utf-16" is refused`},
		// Read by a reader splitting at ';' (Rack 2's query strings), the
		// last Action is a send keygate would scope as GetSendQuota.
		{"an action after a ';' in the body", "", formType, "Action=GetSendQuota&x=1;Action=SendEmail&Source=a%40b.org", "a parameter after a ';' is refused"},
		{"an action after a ';' in the query", "Action=GetSendQuota&x=1;%41ction=SendEmail", formType, "", "a parameter after a ';' is refused"},
		{"a recipient after a ';'", "", formType, "Action=SendEmail&Source=a%40b.org&Message.Subject.Data=x;Destination.ToAddresses.member.1=x%40example.com",
			"a parameter after a ';' is refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ses.InspectQuery(c.query, true, c.ctype, []byte(c.body))
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, c.wantErr)
			}
			if strings.Contains(err.Error(), "secret-bad-address") {
				t.Errorf("error %q quotes the body", err)
			}
		})
	}
}

func TestQueryName(t *testing.T) {
	for in, want := range map[string]string{
		"Source":                            "Source",
		"Destination.ToAddresses.member.12": "Destination.ToAddresses",
		"Destinations.member.2.Destination.CcAddresses.member.1": "Destinations.Destination.CcAddresses",
		"Destinations.member.1":                                  "Destinations",
		"Destinations.3":                                         "Destinations",
		"RawMessage.Data":                                        "RawMessage.Data",
		"Tags.member.1.Name":                                     "Tags.Name",
		"a..b":                                                   "a.b",
	} {
		if got := queryName(in); got != want {
			t.Errorf("queryName(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzInspectQuery feeds arbitrary query strings and form bodies to SES's
// Query API reader: it must never panic or change the body, and what it
// reports must hold together (a request that is no send names no one, a
// read send names a sender and a scope path).
func FuzzInspectQuery(f *testing.F) {
	f.Add("", true, "Action=SendEmail&Source=a%40b.org&Destination.ToAddresses.member.1=c%40d.org")
	f.Add("Action=SendRawEmail", true, "RawMessage.Data=RnJvbTogYUBiLm9yZw0KDQpoaQ%3D%3D&Destinations.member.1=c%40d.org")
	f.Add("Action=SendBulkTemplatedEmail&Source=a%40b.org&Destinations.member.1.Destination.ToAddresses.member.1=c%40d.org", false, "")
	f.Add("Action=ListIdentities", false, "")
	f.Add("", true, "Action=SendBounce&BounceSender=a%40b.org")
	ses, _ := Lookup("ses")
	f.Fuzz(func(t *testing.T, query string, posted bool, body string) {
		b := []byte(body)
		m, err := ses.InspectQuery(query, posted, formType, b)
		if string(b) != body {
			t.Fatal("InspectQuery modified the body")
		}
		if err != nil {
			return
		}
		switch {
		case m.Recipients < 0:
			t.Fatalf("%d recipients", m.Recipients)
		case m.NotSend && (len(m.Senders) > 0 || m.Recipients > 0 || m.Opaque || !m.ScopeElse):
			t.Fatalf("a request that is no send reports %+v", m)
		case m.ScopeElse && m.ScopePath != "" && actionScopePath(m.ScopePath[1:]) != m.ScopePath:
			// Only a name SES could have: never a v2 send path, never "/…/".
			t.Fatalf("an action scoped by name as %q", m.ScopePath)
		case !m.NotSend && !m.Opaque && (len(m.Senders) == 0 || m.ScopePath == ""):
			t.Fatalf("a send read without a sender or a scope path: %+v", m)
		}
	})
}
