package mailapi

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
)

// SES's v1 API (the Query API) sends every action to "/", POSTed as a form
// or, with GET, in the query string, and names it in the Action parameter.
// Most applications on SES still send with it: Laravel's and Rails' SES
// mailers, django-ses and Anymail's amazon_ses, boto3's and the AWS SDKs'
// "ses" clients.

// queryAction is one send action of the Query API.
type queryAction struct {
	name string
	// scopePath is the path the action's requests match scope lines as:
	// the SES v2 endpoint that sends the same way ("" when there is none:
	// then "/" and the action's name, see actionScopePath).
	scopePath string
	// read marks the sends keygate reads (with the endpoint's shape); the
	// others are opaque.
	read bool
}

// sesV1Sends are the actions of SES's v1 API that send mail. Every other
// action sends none.
var sesV1Sends = []queryAction{
	{"SendEmail", "/v2/email/outbound-emails", true},
	{"SendRawEmail", "/v2/email/outbound-emails", true},
	{"SendTemplatedEmail", "/v2/email/outbound-emails", true},
	{"SendBulkTemplatedEmail", "/v2/email/outbound-bulk-emails", true},
	// A verification mail from the sender of a template stored at SES.
	{"SendCustomVerificationEmail", "/v2/email/outbound-custom-verification-emails", false},
	// A bounce from any BounceSender; SES's v2 API has no such action.
	{"SendBounce", "", false},
	// SES's verification mail, to any address the request names (it
	// then becomes an identity of the account): from SES, with a text of
	// its own, but mail to a recipient keygate would not count.
	{"VerifyEmailIdentity", "", false},
	{"VerifyEmailAddress", "", false},
}

// query reads a Query API request of endpoint e: its action, then, for a
// send keygate reads, every parameter the endpoint's shape names.
func (in *inspection) query(e *endpoint, rawQuery string, posted bool, contentType string, body []byte) error {
	forms := [2][]byte{[]byte(rawQuery), nil}
	if posted {
		mt, _, err := formMediaType(contentType)
		if err != nil {
			return err
		}
		if mt != "application/x-www-form-urlencoded" {
			return errors.New("Content-Type: want application/x-www-form-urlencoded (SES's v1 API)")
		}
		forms[1] = body
	}
	for _, form := range forms {
		if err := semicolonParam(e.shape, form); err != nil {
			return err
		}
	}
	var action string
	err := eachParam(forms, func(name string, value []byte) error {
		if !strings.EqualFold(name, "Action") {
			return nil
		}
		v, err := url.QueryUnescape(string(value))
		switch {
		case err != nil:
			return errors.New("Action: invalid escape")
		case action != "" && v != action:
			// Other readers might take either.
			return errors.New("Action is given twice, with different values")
		}
		action = v
		return nil
	})
	if err != nil {
		return err
	}
	if action == "" {
		return errors.New("Action is missing (every request of SES's v1 API names one)")
	}
	var act *queryAction
	for i := range e.actions {
		// SES matches actions exactly; any case is read, so that no
		// spelling of a send passes as another action.
		if strings.EqualFold(action, e.actions[i].name) {
			act = &e.actions[i]
		}
	}
	switch {
	case act == nil && actionScopePath(action) == "":
		// No action of SES's is spelled so ("SendEmail " or "SendEmail\x00"),
		// but a reader that trims or stops at such bytes would take it
		// for a send: a send keygate cannot read.
		in.m.Opaque, in.m.ScopeElse = true, true
		in.m.Unread = "an SES v1 action that is not letters and digits, which keygate does not read"
		return nil
	case act == nil:
		in.m.NotSend = true
		in.m.ScopePath, in.m.ScopeElse = actionScopePath(action), true
		return nil
	case act.scopePath == "":
		in.m.ScopePath, in.m.ScopeElse = actionScopePath(act.name), true
	default:
		in.m.ScopePath = act.scopePath
	}
	if !act.read {
		in.m.Opaque = true
		in.m.Unread = "SES's v1 " + act.name + " action, which keygate does not read"
		return nil
	}
	in.begin()
	err = eachParam(forms, func(name string, value []byte) error {
		return in.param(e.shape, queryName(name), value)
	})
	if err != nil {
		return err
	}
	in.end(e.shape)
	return nil
}

// semicolonParam refuses a Query API form (its query string or its body)
// in which a ';' starts the Action parameter or a parameter the send shape
// reads: a reader that splits parameters at ';' as at '&' (Rack 2's query
// strings, Python's parse_qs before 3.9.2, Perl's CGI) and keeps the last
// of a repeated one reads "Action=GetSendQuota&x=1;Action=SendEmail" as a
// send that keygate would scope as GetSendQuota and never inspect. The
// SDKs escape ';' as %3B. (semicolonField does the same for other forms.)
func semicolonParam(s *shape, form []byte) error {
	if bytes.IndexByte(form, ';') < 0 {
		return nil
	}
	for pair := range bytes.SplitSeq(form, []byte("&")) {
		pieces := bytes.Split(pair, []byte(";"))
		for _, piece := range pieces[1:] {
			k, _, _ := bytes.Cut(piece, []byte("="))
			name, err := url.QueryUnescape(string(k))
			if err != nil {
				continue // such readers keep a bad escape: no name keygate reads
			}
			if strings.EqualFold(strings.TrimSpace(name), "Action") || s.member([]byte(queryName(name))) != nil {
				return errors.New("a parameter after a ';' is refused (readers that split parameters at ';' read it); escape ';' as %3B")
			}
		}
	}
	return nil
}

// actionScopePath is the path scope lines match a Query API action as when
// no v2 endpoint does the same: "/" and its name, when the name is one SES
// could have (letters and digits), else "" (the request's own path, "/").
// So `scope ses.read POST /Get*` covers GetSendQuota and GetIdentity…, and
// a name made up to match a line is one SES answers with an error.
func actionScopePath(action string) string {
	if len(action) == 0 || len(action) > 64 {
		return ""
	}
	for i := 0; i < len(action); i++ {
		if c := action[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return ""
		}
	}
	return "/" + action
}

// ActionScopePath reports whether p is the path scope lines name a Query
// API action by on this dialect's routes (/GetSendQuota), rather than a
// path requests arrive at.
func (d *Dialect) ActionScopePath(p string) bool {
	if !d.sigV4 || !strings.HasPrefix(p, "/") || actionScopePath(p[1:]) == "" {
		return false
	}
	e, _ := d.endpoint("/")
	return e != nil && e.query
}

// eachParam calls fn with the unescaped name and the raw value of every
// parameter of the url-encoded forms, in order.
func eachParam(forms [2][]byte, fn func(name string, value []byte) error) error {
	for _, form := range forms {
		for len(form) > 0 {
			var pair []byte
			pair, form, _ = bytes.Cut(form, []byte("&"))
			if len(pair) == 0 {
				continue
			}
			k, v, _ := bytes.Cut(pair, []byte("="))
			name, err := url.QueryUnescape(string(k))
			if err != nil {
				return errors.New("form body: invalid escape in a field name")
			}
			if strings.IndexByte(name, 0) >= 0 {
				// PHP ends a field's name at a NUL: "h:From%00x" is its
				// h:From, which keygate would pass over as another field.
				return errors.New("form body: a field name holds a NUL")
			}
			if err := fn(name, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// queryName is a Query API parameter's name without its list numbering:
// "Destinations.member.2.Destination.ToAddresses.member.1" is read as
// "Destinations.Destination.ToAddresses". Segments that are only digits go
// too, so a list numbered without "member" reads the same, and so do empty
// ones.
func queryName(name string) string {
	if !strings.Contains(name, ".") {
		return name
	}
	var b strings.Builder
	for seg := range strings.SplitSeq(name, ".") {
		if seg == "" || strings.EqualFold(seg, "member") || allDigits(seg) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
