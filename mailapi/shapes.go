package mailapi

import "slices"

// A shape tells the walker what a value of a send body holds. One shape may
// allow several JSON types (Resend's "to" is a string or an array of
// strings); any other type is an error naming the field.
type shape struct {
	// role applies to a string value (and, for roleHidden, to any value).
	role role
	// members, when set, allow an object; members not listed are skipped.
	members []member
	// elem, when set, allows an array of such elements.
	elem *shape
	// sender, when set, makes the object one message: it must name a
	// sender, and sender is the field an error says is missing.
	sender string
	// shared marks an object whose sender and recipients apply to every
	// message of the request (Mailjet's Globals).
	shared bool
	// batch marks a message that may hold messages instead (batchOf).
	batch bool
	// everyVersion, when set, is the shape of the value, whose recipients
	// receive every version of the message (versions): Brevo's top-level
	// cc and bcc beside messageVersions.
	everyVersion *shape
	// versions marks an array each of whose elements is a version of the
	// message it is in, sent to its own recipients and to those of the
	// message's everyVersion fields (Brevo's messageVersions).
	versions bool
	// pair marks a header given as {"Name": …, "Value": …}: its value's
	// meaning depends on its name, known once the object ends.
	pair bool
	// headerNames marks an object whose member names are header names
	// (custom headers, Mailgun's form fields, h:From among them): a name
	// matches also as looseName spells it, and one holding a line break
	// makes the message opaque.
	headerNames bool
	// rest, when set, is the member every other member whose name starts
	// with restPrefix (in any case) is read as: a header keygate does not
	// look for, whose value must still not start another header.
	rest       *member
	restPrefix string
	// split is a form field's part in a batch send (Mailgun's).
	split splitRole
	// names tells the keys that may be a member's name from those that
	// cannot, by length and first byte, so most keys a shape does not name
	// are passed over without comparing names. Set by object and message.
	names nameFilter
}

// splitRole is a form field's part in a batch send: Mailgun sends a
// message with recipient-variables as a message of its own to each address
// of its "to" fields, each with the cc and bcc recipients, who so get a
// copy of every one.
type splitRole uint8

const (
	notSplit    splitRole = iota
	splitter              // a field that, given, makes the message a batch send (Mailgun's recipient-variables)
	splitEach             // a field each of whose recipients gets a message of its own in a batch send (Mailgun's to)
	splitCopied           // a field whose recipients get a copy of every message of a batch send (Mailgun's cc and bcc)
)

// nameFilter has bit b of word n set when a member's name is n bytes long
// (modulo 16) and starts with a byte that is b modulo 64 once ASCII letters
// are folded to lower case: a key equal to a name under case folding has
// the same length and folded first byte, when it is ASCII.
type nameFilter [16]uint64

func filterOf(members []member) nameFilter {
	var f nameFilter
	for _, m := range members {
		if m.name != "" {
			f[len(m.name)&15] |= 1 << ((m.name[0] | 0x20) & 63)
		}
	}
	return f
}

func (f *nameFilter) mayHold(key []byte) bool {
	return len(key) > 0 && f[len(key)&15]&(1<<((key[0]|0x20)&63)) != 0
}

// member is one object member the walker reads. Names match
// case-insensitively, as some providers' decoders do.
type member struct {
	name  string
	shape *shape
}

// role says what a string value means.
type role uint8

const (
	roleNone          role = iota
	roleSender             // one bare address, e.g. {"email": "a@b"}
	roleSenderList         // an RFC 5322 address list, e.g. "Shop <a@b>"
	roleRecipient          // one bare address: one recipient
	roleRecipientList      // an RFC 5322 address list: one recipient per address
	roleAlsoSender         // an RFC 5322 address list of senders beside the message's own (a Sender header, a From among custom headers): checked as senders, but naming none for the message
	roleHeaderName         // a pair's header name
	roleHeaderValue        // a pair's header value: a sender's if the name is From or Sender
	roleHeaderText         // any other custom header's value, of any type: a string holding a line break makes the message opaque
	roleMIME               // a raw MIME message (Mailgun's "message" part)
	roleMIMEBase64         // base64 of a raw MIME message (SES Content.Raw.Data)
	roleHidden             // any value: the provider may take the sender from where keygate cannot see (a stored template) when the message names none
	roleOpaque             // any value: the provider may prefer it to a sender the message names (a sender id), so the message cannot be checked
)

func field(name string, s *shape) member { return member{name: name, shape: s} }

func object(members ...member) *shape { return &shape{members: members, names: filterOf(members)} }

func arrayOf(elem *shape) *shape { return &shape{elem: elem} }

// orArrayOf lets object s also be given as an array of elem.
func orArrayOf(s, elem *shape) *shape {
	s.elem = elem
	return s
}

// batchOf is message m that may instead hold a batch of such messages in
// the member named batch: it then needs no sender of its own, as each of its
// messages names one.
func batchOf(m *shape, batch string) *shape {
	members := append(slices.Clone(m.members), field(batch, arrayOf(m)))
	return &shape{members: members, sender: m.sender, batch: true, names: filterOf(members)}
}

// everyVersion is s, whose recipients receive every version of the
// message it is in (see versionsOf).
func everyVersion(s *shape) *shape { return &shape{everyVersion: s} }

// versionsOf is an array of versions of the message it is in, each sent to
// its own recipients and to those of the message's everyVersion fields.
func versionsOf(elem *shape) *shape { return &shape{elem: elem, versions: true} }

// shared marks s as holding what applies to every message of the request.
func shared(s *shape) *shape {
	s.shared = true
	return s
}

// message is an object that is one email and must name a sender.
func message(sender string, members ...member) *shape {
	return &shape{members: members, sender: sender, names: filterOf(members)}
}

// Leaf shapes shared by the dialects.
var (
	sender        = &shape{role: roleSender}
	senderList    = &shape{role: roleSenderList}
	alsoSender    = &shape{role: roleAlsoSender}
	recipient     = &shape{role: roleRecipient}
	recipientList = &shape{role: roleRecipientList}
	hidden        = &shape{role: roleHidden}
	opaque        = &shape{role: roleOpaque}
)

// people is an array of {key: address, name: ...} objects, each one recipient.
func people(key string) *shape { return arrayOf(object(field(key, recipient))) }

// customHeaders is a message's own MIME headers, as a JSON object of name →
// value. A From or Sender set there is what recipients would see if the
// provider sends it as written (some refuse it, some do not say), so it is
// checked as a sender; it does not stand in for the message's own sender,
// which the provider takes from its field (or a stored template).
// Any other header is read only for a line break in its value, which would
// start another header (a From) where the provider writes it as it is.
var customHeaders = headerNames(object(field("From", alsoSender), field("Sender", alsoSender)), "")

// headerNames marks s as an object whose member names are header names,
// those starting with prefix ("" for all) custom headers of the message.
func headerNames(s *shape, prefix string) *shape {
	s.headerNames = true
	s.rest, s.restPrefix = &member{name: prefix + "…", shape: headerText}, prefix
	return s
}

// headerText is a custom header's value keygate does not otherwise read.
var headerText = &shape{role: roleHeaderText}

// injectedHeader is a custom header whose name holds a line break: written
// as it is, it starts headers keygate did not see ("X: y\r\nFrom: …").
var injectedHeader = &member{name: "a header name with a line break", shape: opaque}

// headerPairs is the same as an array of {"Name": …, "Value": …} objects
// (Postmark's Headers, SES's Simple, Template and bulk headers).
var headerPairs = arrayOf(pairOf(field("Name", &shape{role: roleHeaderName}), field("Value", &shape{role: roleHeaderValue})))

// pairOf is an object that is one header pair.
func pairOf(name, value member) *shape {
	s := object(name, value)
	s.pair = true
	return s
}

// The payload of every send endpoint, modelled on each provider's API
// reference. Recipient fields are To, Cc and Bcc in the provider's spelling.
var (
	sendgridSend = message("from.email",
		field("from", object(field("email", sender))),
		// Each personalization is an email of its own.
		field("personalizations", versionsOf(object(
			field("to", people("email")), field("cc", people("email")), field("bcc", people("email")),
			field("from", object(field("email", sender))),
			field("headers", customHeaders),
		))),
		field("headers", customHeaders),
		// The BCC mail setting: SendGrid sends a blind copy of every email
		// to this address, one for each personalization (deprecated, but
		// still sent by its SDKs' MailSettings).
		field("mail_settings", object(field("bcc", everyVersion(object(field("email", recipient)))))),
	)

	postmarkMessage = message("From",
		field("From", senderList),
		field("To", recipientList), field("Cc", recipientList), field("Bcc", recipientList),
		field("Headers", headerPairs),
	)

	// Postmark's Bulk API: one message's sender and content, sent to the
	// recipients of each element of Messages.
	// Its Headers, for every message or one element's, are read as the
	// single message's are: keygate errs towards seeing more.
	postmarkBulk = message("From",
		field("From", senderList),
		field("Headers", headerPairs),
		field("Messages", arrayOf(object(
			field("To", recipientList), field("Cc", recipientList), field("Bcc", recipientList),
			field("Headers", headerPairs),
		))),
	)

	mailgunMessage = headerNames(message("from",
		field("from", senderList),
		// Mailgun sets any h:-prefixed MIME header; a From header set this
		// way is what recipients see, so it is a sender too.
		field("h:From", senderList),
		// So is a Sender header, which mail clients show as the one who
		// sent the message on the From's behalf.
		field("h:Sender", alsoSender),
		// With recipient-variables (batch sending) each address of to gets
		// a message of its own, and cc and bcc a copy of every one: the
		// recipients are to's times one plus cc's and bcc's. The variables
		// may also come as the header Mailgun reads them from in SMTP
		// sends, in case its API honours that too.
		field("to", &shape{role: roleRecipientList, split: splitEach}),
		field("cc", &shape{role: roleRecipientList, split: splitCopied}),
		field("bcc", &shape{role: roleRecipientList, split: splitCopied}),
		field("recipient-variables", &shape{split: splitter}),
		field("h:X-Mailgun-Recipient-Variables", &shape{role: roleHeaderText, split: splitter}),
		// A stored template may carry the From, which a message without
		// one is then sent with.
		field("template", hidden),
	), "h:")

	// Mailgun delivers a raw MIME message to the form's "to" fields; its
	// From header is the sender.
	mailgunMIME = headerNames(message("message (a MIME message with a From header)",
		field("message", &shape{role: roleMIME}),
		field("to", recipientList), field("cc", recipientList), field("bcc", recipientList),
	), "h:")

	// Resend's recipient fields are an address string or an array of them.
	resendRecipients = &shape{role: roleRecipientList, elem: recipientList}
	resendMessage    = message("from",
		field("from", senderList),
		field("to", resendRecipients), field("cc", resendRecipients), field("bcc", resendRecipients),
		field("headers", customHeaders),
		// A stored template may carry the from, which a message without
		// one is then sent with.
		field("template", hidden),
	)

	sesDestination = object(
		field("ToAddresses", arrayOf(recipientList)),
		field("CcAddresses", arrayOf(recipientList)),
		field("BccAddresses", arrayOf(recipientList)),
	)
	// With raw content and no FromEmailAddress, SES takes the sender (and,
	// without a Destination, the recipients) from the MIME headers.
	sesMessage = message("FromEmailAddress",
		field("FromEmailAddress", senderList),
		field("Destination", sesDestination),
		field("Content", object(
			field("Raw", object(field("Data", &shape{role: roleMIMEBase64}))),
			field("Simple", object(field("Headers", headerPairs))),
			field("Template", object(field("Headers", headerPairs))),
		)),
	)
	// A bulk send's headers are its template's (DefaultContent), which
	// an entry's ReplacementHeaders add to or replace.
	sesBulk = message("FromEmailAddress",
		field("FromEmailAddress", senderList),
		field("DefaultContent", object(field("Template", object(field("Headers", headerPairs))))),
		field("BulkEmailEntries", arrayOf(object(
			field("Destination", sesDestination),
			field("ReplacementHeaders", headerPairs),
		))),
	)

	// A custom verification email goes to EmailAddress from the sender of a
	// template stored at SES, which keygate cannot see.
	sesVerification = message("FromEmailAddress (a custom verification template's)",
		field("EmailAddress", recipient),
		field("TemplateName", hidden),
	)

	// SES's v1 (Query) API names each request's action in a form field
	// (query.go). Its sends list their addresses in numbered fields
	// (Destination.ToAddresses.member.1), read without the numbers, so one
	// shape holds the fields of every send keygate reads: SendEmail and
	// SendTemplatedEmail (Source, Destination), SendRawEmail (Source or the
	// MIME From, Destinations or the MIME recipients) and
	// SendBulkTemplatedEmail (Destinations.member.N.Destination). A field of
	// another send action counts as well: SES would ignore it, and keygate
	// errs towards seeing more.
	sesV1Send = message("Source (or a From header in RawMessage.Data)",
		field("Source", senderList),
		field("Destination.ToAddresses", recipientList),
		field("Destination.CcAddresses", recipientList),
		field("Destination.BccAddresses", recipientList),
		field("Destinations", recipientList),
		field("Destinations.Destination.ToAddresses", recipientList),
		field("Destinations.Destination.CcAddresses", recipientList),
		field("Destinations.Destination.BccAddresses", recipientList),
		field("RawMessage.Data", &shape{role: roleMIMEBase64}),
	)

	// Mailjet's older v3 Send API, still served, and what node-mailjet and
	// mailjet-apiv3-php send to when no version is named: one message at
	// the top level, or a batch of them in Messages. Recipients are
	// objects, To, Cc and Bcc address lists in one string.
	mailjetV3Message = message("FromEmail",
		field("FromEmail", senderList),
		field("Recipients", people("Email")),
		field("To", recipientList), field("Cc", recipientList), field("Bcc", recipientList),
		// Mailjet sends a copy of a message whose template fails to
		// render to this address: a recipient keygate cannot tell will
		// not receive it.
		field("Mj-TemplateErrorReporting", recipientList),
		field("Headers", customHeaders),
		// A template may carry its own sender.
		field("Mj-TemplateID", hidden),
	)
	mailjetV3 = batchOf(mailjetV3Message, "Messages")

	mailjetMessage = message("From.Email",
		field("From", object(field("Email", sender))),
		// Checked like From in case the provider honours it; a template
		// may still carry the message's sender.
		field("Sender", object(field("Email", alsoSender))),
		field("To", people("Email")), field("Cc", people("Email")), field("Bcc", people("Email")),
		// Mailjet sends a copy of a message whose template fails to
		// render to this address: a recipient keygate cannot tell will
		// not receive it.
		field("TemplateErrorReporting", object(field("Email", recipient))),
		field("Headers", customHeaders),
		// A template may carry its own sender.
		field("TemplateID", hidden),
	)
	mailjetSend = object(
		field("Messages", arrayOf(mailjetMessage)),
		field("Globals", shared(object(mailjetMessage.members...))),
	)

	brevoMessage = message("sender.email",
		// A sender may be given by id, which may win over an email beside
		// it, and without one Brevo uses the template's: keygate cannot see
		// either.
		field("sender", object(field("email", sender), field("id", opaque))),
		field("templateId", hidden),
		field("headers", customHeaders),
		// With messageVersions, to is ignored (counted all the same: keygate
		// errs towards seeing more), and cc and bcc are each version's
		// unless it names its own (counted for every version all the same).
		field("to", people("email")),
		field("cc", everyVersion(people("email"))), field("bcc", everyVersion(people("email"))),
		field("messageVersions", versionsOf(object(
			field("to", people("email")), field("cc", people("email")), field("bcc", people("email")),
		))),
	)

	mailpitMessage = message("From.Email",
		field("From", object(field("Email", sender))),
		field("To", people("Email")), field("Cc", people("Email")),
		field("Bcc", arrayOf(recipientList)),
	)
)
