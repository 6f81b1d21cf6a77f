// Package gosdk drives the providers' official Go SDKs through a keygate
// gateway, as an integrator would: only the base URL and the key change.
//
// It is a module of its own so that the plugin's go.mod never requires the
// SDKs. TestSDKs runs only when e2e_sdk_test.go (in the repository root)
// names a plan in KEYGATE_COMPAT_PLAN; it writes one JSON line per scenario
// to KEYGATE_COMPAT_REPORT with what the SDK returned, as a developer would
// see it. The root test decides what is right.
package gosdk

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sesv1 "github.com/aws/aws-sdk-go-v2/service/ses"
	sesv1types "github.com/aws/aws-sdk-go-v2/service/ses/types"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	sestypes "github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	brevo "github.com/getbrevo/brevo-go/lib"
	"github.com/mailgun/mailgun-go/v5"
	"github.com/mailgun/mailgun-go/v5/events"
	"github.com/mailgun/mailgun-go/v5/mtypes"
	"github.com/mailjet/mailjet-apiv3-go/v4"
	"github.com/mrz1836/postmark"
	"github.com/resend/resend-go/v3"
	"github.com/sendgrid/rest"
	"github.com/sendgrid/sendgrid-go"
	sgmail "github.com/sendgrid/sendgrid-go/helpers/mail"
)

type scenario struct {
	ID    string   `json:"id"`
	SDK   string   `json:"sdk"`
	Base  string   `json:"base"`
	Key   string   `json:"key"`
	From  string   `json:"from"`
	To    []string `json:"to"`
	Sends int      `json:"sends"`
	// Retrying uses the SDK's opt-in retrying call where it has one
	// (sendgrid-go's MakeRequestRetry).
	Retrying bool `json:"retrying"`
	// HTML, when set, is sent as the message's HTML part beside the text.
	HTML string `json:"html"`
	// Batch sends a message per recipient in one request, with the SDK's
	// batch or bulk call (sendBatch); Bcc, when set, is given once for the
	// whole batch, as the SDK takes it (a blind copy of every message).
	// SecondFrom, when set, is the second message's own sender.
	Batch      bool     `json:"batch"`
	Bcc        []string `json:"bcc"`
	SecondFrom string   `json:"secondFrom"`
	// Template sends one message with a template stored at the provider
	// (sendTemplate).
	Template bool `json:"template"`
	// MIME sends a message the application built as MIME itself.
	MIME bool `json:"mime"`
	// Attachment sends one message with a binary attachment
	// (sendAttachment).
	Attachment bool `json:"attachment"`
	// Files, on an attachment scenario, are its attachments in place of
	// the invoice (the base64 content decoded; a content id makes an
	// inline one); Subject, when set, is the message's subject.
	Files []struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Content []byte `json:"content"`
		CID     string `json:"cid"`
	} `json:"files"`
	Subject string `json:"subject"`
	// Extras sends one message with custom headers, tags and metadata,
	// tracking settings, a send time ahead and reply-to addresses
	// (sendExtras).
	Extras bool `json:"extras"`
	// Op makes a call other than a send in place of the send (callOp).
	Op string `json:"op"`
}

type plan struct {
	MailgunDomain string     `json:"mailgunDomain"`
	Scenarios     []scenario `json:"scenarios"`
}

// result is what the SDK gave back: ok, or its error as a developer sees
// it (Error(), or for sendgrid-go, which returns HTTP errors as responses,
// the response).
type result struct {
	ID       string `json:"id"`
	OK       bool   `json:"ok"`
	Text     string `json:"text,omitempty"`
	Name     string `json:"name,omitempty"`
	Status   int    `json:"status,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	MS       int64  `json:"ms"`
}

func TestSDKs(t *testing.T) {
	planPath, reportPath := os.Getenv("KEYGATE_COMPAT_PLAN"), os.Getenv("KEYGATE_COMPAT_REPORT")
	if planPath == "" || reportPath == "" {
		t.Skip("driven by the keygate repository's e2e_sdk_test.go")
	}
	b, err := os.ReadFile(planPath)
	if err != nil {
		t.Fatal(err)
	}
	var p plan
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	report, err := os.Create(reportPath)
	if err != nil {
		t.Fatal(err)
	}
	defer report.Close()
	var mu sync.Mutex
	bySDK := map[string][]scenario{}
	for _, sc := range p.Scenarios {
		bySDK[sc.SDK] = append(bySDK[sc.SDK], sc)
	}
	// Scenarios of one SDK run in order (they share limits); SDKs side by side.
	var wg sync.WaitGroup
	for _, list := range bySDK {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, sc := range list {
				r := run(p, sc)
				line, _ := json.Marshal(r)
				mu.Lock()
				fmt.Fprintf(report, "%s\n", line)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func run(p plan, sc scenario) result {
	t0 := time.Now()
	var r result
	for i := 0; i < max(1, sc.Sends); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		switch {
		case sc.Op != "":
			r = callOp(ctx, p, sc)
		case sc.Batch && sc.Template:
			r = sendBatchTemplate(ctx, sc)
		case sc.Batch:
			r = sendBatch(ctx, p, sc)
		case sc.Template:
			r = sendTemplate(ctx, p, sc)
		case sc.MIME:
			r = sendMIME(ctx, p, sc)
		case sc.Attachment:
			r = sendAttachment(ctx, p, sc)
		case sc.Extras:
			r = sendExtras(ctx, p, sc)
		default:
			r = send(ctx, p, sc)
		}
		cancel()
		if !r.OK {
			break
		}
	}
	r.ID, r.MS = sc.ID, time.Since(t0).Milliseconds()
	return r
}

func send(ctx context.Context, p plan, sc scenario) result {
	switch sc.SDK {
	case "sendgrid-go":
		m := sendgridMail(sc)
		m.AddPersonalizations(sendgridTo(sc.To...))
		m.AddContent(sgmail.NewContent("text/plain", "hello"))
		if sc.HTML != "" {
			m.AddContent(sgmail.NewContent("text/html", sc.HTML))
		}
		if sc.Retrying {
			c := sendgridClient(sc)
			c.Request.Body = sgmail.GetRequestBody(m)
			return sendgridResult(sendgrid.MakeRequestRetryWithContext(ctx, c.Request))
		}
		return sendgridResult(sendgridClient(sc).SendWithContext(ctx, m))

	case "mailgun-go":
		msg := mailgun.NewMessage(p.MailgunDomain, sc.From, "compat", "hello", sc.To...)
		if sc.HTML != "" {
			msg.SetHTML(sc.HTML)
		}
		_, err := mailgunClient(sc).Send(ctx, msg)
		if err != nil {
			var ue *mailgun.UnexpectedResponseError
			r := result{Text: err.Error()}
			if errors.As(err, &ue) {
				r.Status = ue.Actual
			}
			// Since v5 a 429 is a RateLimitedError, with ResetAt from
			// X-RateLimit-Reset when the answer has it.
			var rl *mailgun.RateLimitedError
			if errors.As(err, &rl) {
				r.Name = "RateLimitedError"
				if rl.ResetAt != nil {
					r.Text += fmt.Sprintf(" (ResetAt %d)", rl.ResetAt.Unix())
				}
			}
			return r
		}
		return result{OK: true}

	case "mailjet-go":
		_, err := mailjetClient(sc).SendMailV31(&mailjet.MessagesV31{Info: []mailjet.InfoMessagesV31{{
			From: mailjetFrom(sc.From), To: mailjetTo(sc.To...), Subject: "compat", TextPart: "hello", HTMLPart: sc.HTML,
		}}})
		if err != nil {
			// 400 and 403 come back as the send's validation errors,
			// anything else as one error; both print themselves as JSON.
			r := result{Text: err.Error()}
			var feedback *mailjet.APIFeedbackErrorsV31
			var info *mailjet.ErrorInfoV31
			switch {
			case errors.As(err, &feedback) && len(feedback.Messages) > 0 && len(feedback.Messages[0].Errors) > 0:
				r.Status = feedback.Messages[0].Errors[0].StatusCode
			case errors.As(err, &info):
				r.Status = info.StatusCode
			}
			return r
		}
		return result{OK: true}

	case "mailjet-go-v3": // the older v3 Send API, SendMail
		_, err := mailjetClient(sc).SendMail(&mailjet.InfoSendMail{FromEmail: addressOf(sc.From), FromName: nameOf(sc.From), Recipients: mailjetV3To(sc.To...),
			Subject: "compat", TextPart: "hello", HTMLPart: sc.HTML})
		if err != nil {
			r := result{Text: err.Error()}
			var re mailjet.RequestError
			if errors.As(err, &re) {
				r.Status = re.StatusCode
			}
			return r
		}
		return result{OK: true}

	case "brevo-go":
		resp, err := brevoSend(ctx, sc, brevo.SendSmtpEmail{
			Sender: brevoSender(sc.From), To: brevoTo(sc.To...), Subject: "compat",
			TextContent: "hello", HtmlContent: sc.HTML,
		})
		if err != nil {
			r := result{Text: err.Error()}
			if resp != nil {
				r.Status = resp.StatusCode
			}
			return r
		}
		return result{OK: true}

	case "postmark-go":
		_, err := postmarkClient(sc).SendEmail(ctx, postmark.Email{
			From: sc.From, To: strings.Join(sc.To, ", "), Subject: "compat", TextBody: "hello", HTMLBody: sc.HTML,
		})
		if err != nil {
			return result{Text: err.Error()}
		}
		return result{OK: true}

	case "resend-go":
		_, err := resendClient(sc).Emails.SendWithContext(ctx, &resend.SendEmailRequest{From: sc.From, To: sc.To, Subject: "compat", Text: "hello", Html: sc.HTML})
		if err != nil {
			r := result{Text: err.Error()}
			var rl *resend.RateLimitError
			if errors.As(err, &rl) {
				r.Name = "RateLimitError"
			}
			return r
		}
		return result{OK: true}

	case "aws-sdk-go-v2":
		var md middleware.Metadata
		body := &sestypes.Body{Text: &sestypes.Content{Data: aws.String("hello")}}
		if sc.HTML != "" {
			body.Html = &sestypes.Content{Data: aws.String(sc.HTML)}
		}
		_, err := sesClient(sc, &md).SendEmail(ctx, &sesv2.SendEmailInput{
			FromEmailAddress: aws.String(sc.From),
			Destination:      &sestypes.Destination{ToAddresses: sc.To},
			Content: &sestypes.EmailContent{Simple: &sestypes.Message{
				Subject: &sestypes.Content{Data: aws.String("compat")},
				Body:    body,
			}},
		})
		return awsResult(err, md)

	case "aws-sdk-go-v2-ses": // SES's v1 API (the Query API)
		var md middleware.Metadata
		body := &sesv1types.Body{Text: &sesv1types.Content{Data: aws.String("hello")}}
		if sc.HTML != "" {
			body.Html = &sesv1types.Content{Data: aws.String(sc.HTML)}
		}
		_, err := sesV1Client(sc, &md).SendEmail(ctx, &sesv1.SendEmailInput{
			Source:      aws.String(sc.From),
			Destination: &sesv1types.Destination{ToAddresses: sc.To},
			Message:     &sesv1types.Message{Subject: &sesv1types.Content{Data: aws.String("compat")}, Body: body},
		})
		return awsResult(err, md)
	}
	if r, ok := sendEarlier(ctx, p, sc); ok {
		return r
	}
	return result{Text: "unknown SDK " + strings.TrimSpace(sc.SDK)}
}

// callOp makes the call other than a send that sc.Op names, with the SDK's
// own method: a message's status or events ("status"), the suppression
// list ("suppressions"), the sending domains ("domains") or the stored
// templates ("templates").
func callOp(ctx context.Context, p plan, sc scenario) result {
	switch sc.SDK + "/" + sc.Op {
	case "sendgrid-go/status", "sendgrid-go/suppressions", "sendgrid-go/domains", "sendgrid-go/templates":
		path := map[string]string{"status": "/v3/messages/sg-1", "suppressions": "/v3/suppression/bounces",
			"domains": "/v3/whitelabel/domains", "templates": "/v3/templates"}[sc.Op]
		req := sendgrid.GetRequest(sc.Key, path, sc.Base)
		req.Method = rest.Get
		return sendgridResult(sendgrid.MakeRequestWithContext(ctx, req))
	case "postmark-go/status":
		_, err := postmarkClient(sc).GetOutboundMessage(ctx, "pm-1")
		return done(err)
	case "postmark-go/suppressions":
		_, err := postmarkClient(sc).GetSuppressions(ctx, "outbound", nil)
		return done(err)
	case "postmark-go/templates":
		_, _, err := postmarkClient(sc).GetTemplates(ctx, 10, 0)
		return done(err)
	case "mailgun-go/status":
		var page []events.Event
		it := mailgunClient(sc).ListEvents(p.MailgunDomain, nil)
		it.Next(ctx, &page)
		return done(it.Err())
	case "mailgun-go/suppressions":
		var page []mtypes.Bounce
		it := mailgunClient(sc).ListBounces(p.MailgunDomain, nil)
		it.Next(ctx, &page)
		return done(it.Err())
	case "mailgun-go/domains":
		var page []mtypes.Domain
		it := mailgunClient(sc).ListDomains(nil)
		it.Next(ctx, &page)
		return done(it.Err())
	case "mailgun-go/templates":
		var page []mtypes.Template
		it := mailgunClient(sc).ListTemplates(p.MailgunDomain, nil)
		it.Next(ctx, &page)
		return done(it.Err())
	case "resend-go/status":
		c := resendClient(sc)
		if _, err := c.Emails.GetWithContext(ctx, "re-1"); err != nil {
			return done(err)
		}
		_, err := c.Emails.ListWithContext(ctx)
		return done(err)
	case "resend-go/domains":
		_, err := resendClient(sc).Domains.ListWithContext(ctx)
		return done(err)
	case "resend-go/templates":
		_, err := resendClient(sc).Templates.ListWithContext(ctx, nil)
		return done(err)
	case "aws-sdk-go-v2/status":
		var md middleware.Metadata
		_, err := sesClient(sc, &md).GetMessageInsights(ctx, &sesv2.GetMessageInsightsInput{MessageId: aws.String("ses-1")})
		return awsResult(err, md)
	case "aws-sdk-go-v2/suppressions":
		var md middleware.Metadata
		_, err := sesClient(sc, &md).ListSuppressedDestinations(ctx, &sesv2.ListSuppressedDestinationsInput{})
		return awsResult(err, md)
	case "aws-sdk-go-v2/domains":
		var md middleware.Metadata
		_, err := sesClient(sc, &md).ListEmailIdentities(ctx, &sesv2.ListEmailIdentitiesInput{})
		return awsResult(err, md)
	case "aws-sdk-go-v2/templates":
		var md middleware.Metadata
		_, err := sesClient(sc, &md).ListEmailTemplates(ctx, &sesv2.ListEmailTemplatesInput{})
		return awsResult(err, md)
	}
	return result{Text: "no op " + sc.Op + " for " + sc.SDK}
}

// The SDKs' clients as every scenario sets them up: the gateway's base URL
// and the keygate key where the provider's key goes.

func sendgridClient(sc scenario) *sendgrid.Client {
	c := sendgrid.NewSendClient(sc.Key)
	c.Request.BaseURL = sc.Base + "/v3/mail/send"
	return c
}

// sendgridMail is a message from sc.From with the suite's subject.
func sendgridMail(sc scenario) *sgmail.SGMailV3 {
	m := sgmail.NewV3Mail()
	m.SetFrom(sgmail.NewEmail(named(sc.From)))
	m.Subject = "compat"
	return m
}

// sendgridTo is one personalization to every address.
func sendgridTo(to ...string) *sgmail.Personalization {
	pz := sgmail.NewPersonalization()
	for _, a := range to {
		pz.AddTos(sgmail.NewEmail(named(a)))
	}
	return pz
}

// sendgridResult reads sendgrid-go's answer, which returns an HTTP error as
// a response, not an error.
func sendgridResult(resp *rest.Response, err error) result {
	if err != nil {
		return result{Text: err.Error()}
	}
	return result{OK: resp.StatusCode < 300, Text: resp.Body, Status: resp.StatusCode}
}

// mailgunClient: since v5 the sending domain is the message's, and the API
// base is the site alone, without a version (SetAPIBase refuses one, and
// the client then keeps Mailgun's own URL).
func mailgunClient(sc scenario) *mailgun.Client {
	mg := mailgun.NewMailgun(sc.Key)
	if err := mg.SetAPIBase(sc.Base); err != nil {
		panic(err)
	}
	return mg
}

// mailjetClient takes the key as the API key (the Basic user); the secret
// is not checked.
func mailjetClient(sc scenario) *mailjet.Client {
	return mailjet.NewMailjetClient(sc.Key, "unused", sc.Base+"/v3")
}

// named splits an address the way a developer hands it to an SDK that takes
// the name and the address apart: "Zoë Ünal <a@example.org>" is the name
// Zoë Ünal and the address a@example.org; a bare address has no name.
func named(s string) (name, address string) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", s
	}
	return a.Name, a.Address
}

func nameOf(s string) string    { n, _ := named(s); return n }
func addressOf(s string) string { _, a := named(s); return a }

func mailjetFrom(s string) *mailjet.RecipientV31 {
	name, email := named(s)
	return &mailjet.RecipientV31{Email: email, Name: name}
}

func brevoSender(s string) *brevo.SendSmtpEmailSender {
	name, email := named(s)
	return &brevo.SendSmtpEmailSender{Email: email, Name: name}
}

func mailjetTo(to ...string) *mailjet.RecipientsV31 {
	r := mailjet.RecipientsV31{}
	for _, a := range to {
		name, email := named(a)
		r = append(r, mailjet.RecipientV31{Email: email, Name: name})
	}
	return &r
}

// mailjetV3To is the v3 Send API's Recipients.
func mailjetV3To(to ...string) []mailjet.Recipient {
	r := make([]mailjet.Recipient, len(to))
	for i, a := range to {
		name, email := named(a)
		r[i] = mailjet.Recipient{Email: email, Name: name}
	}
	return r
}

// brevoSend sends with brevo-go. Its error is the status line; what the
// server said is in GenericSwaggerError's Body() (and, for a 400, Model()),
// which the returned error adds.
func brevoSend(ctx context.Context, sc scenario, email brevo.SendSmtpEmail) (*http.Response, error) {
	cfg := brevo.NewConfiguration()
	cfg.BasePath = sc.Base + "/v3"
	cfg.AddDefaultHeader("api-key", sc.Key)
	_, resp, err := brevo.NewAPIClient(cfg).TransactionalEmailsApi.SendTransacEmail(ctx, email)
	var se brevo.GenericSwaggerError
	if errors.As(err, &se) {
		err = fmt.Errorf("%w: %s", err, se.Body())
	}
	return resp, err
}

func brevoTo(to ...string) []brevo.SendSmtpEmailTo {
	r := make([]brevo.SendSmtpEmailTo, len(to))
	for i, a := range to {
		name, email := named(a)
		r[i] = brevo.SendSmtpEmailTo{Email: email, Name: name}
	}
	return r
}

// postmarkClient: Postmark publishes no Go SDK; this is the maintained
// community client (a fork of the one Postmark's library page lists).
func postmarkClient(sc scenario) *postmark.Client {
	c := postmark.NewClient(sc.Key, "")
	c.BaseURL = sc.Base
	return c
}

func resendClient(sc scenario) *resend.Client {
	c := resend.NewClient(sc.Key)
	c.BaseURL, _ = url.Parse(sc.Base + "/")
	return c
}

// sesClient takes the key as the access key id; keygate never sees or
// checks the secret access key, so any value will do. A non-nil md gets
// each call's metadata, for awsResult's attempts.
func sesClient(sc scenario, md *middleware.Metadata) *sesv2.Client {
	return sesv2.New(sesv2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(sc.Base),
		Credentials:  credentials.NewStaticCredentialsProvider(sc.Key, "unused", ""),
		APIOptions:   keepMetadata(md),
	})
}

// sesV1Client is the same for SES's v1 API.
func sesV1Client(sc scenario, md *middleware.Metadata) *sesv1.Client {
	return sesv1.New(sesv1.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(sc.Base),
		Credentials:  credentials.NewStaticCredentialsProvider(sc.Key, "unused", ""),
		APIOptions:   keepMetadata(md),
	})
}

// keepMetadata is the API option that stores each call's metadata in md
// (none when md is nil).
func keepMetadata(md *middleware.Metadata) []func(*middleware.Stack) error {
	if md == nil {
		return nil
	}
	return []func(*middleware.Stack) error{func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("compatAttempts",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				out, m, err := next.HandleInitialize(ctx, in)
				*md = m
				return out, m, err
			}), middleware.After)
	}}
}

// awsResult is what an AWS SDK's call showed: its error's code and status,
// and the attempts it made.
func awsResult(err error, md middleware.Metadata) result {
	if err == nil {
		return result{OK: true}
	}
	r := result{Text: err.Error()}
	var api smithy.APIError
	if errors.As(err, &api) {
		r.Name = api.ErrorCode()
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		r.Status = re.HTTPStatusCode()
	}
	if res, ok := retry.GetAttemptResults(md); ok {
		r.Attempts = len(res.Results)
	}
	return r
}

// done is the result of a call that returns a plain error.
func done(err error) result {
	if err != nil {
		return result{Text: err.Error()}
	}
	return result{OK: true}
}

// sendBatch sends a message to each of sc.To in one request, from sc.From,
// with the SDK's own batch or bulk call.
func sendBatch(ctx context.Context, p plan, sc scenario) result {
	switch sc.SDK {
	case "sendgrid-go": // a personalization per recipient
		m := sendgridMail(sc)
		for i, to := range sc.To {
			pz := sendgridTo(to)
			if i == 1 && sc.SecondFrom != "" {
				pz.AddFrom(sgmail.NewEmail(named(sc.SecondFrom)))
			}
			m.AddPersonalizations(pz)
		}
		m.AddContent(sgmail.NewContent("text/plain", "hello"))
		return sendgridResult(sendgridClient(sc).SendWithContext(ctx, m))
	case "postmark-go":
		var emails []postmark.Email
		for _, to := range sc.To {
			emails = append(emails, postmark.Email{From: sc.From, To: to, Subject: "compat", TextBody: "hello"})
		}
		_, err := postmarkClient(sc).SendEmailBatch(ctx, emails)
		return done(err)
	case "mailgun-go": // recipient-variables: a message of its own to each to, each with the bcc
		msg := mailgun.NewMessage(p.MailgunDomain, sc.From, "compat", "hello %recipient.n%")
		for i, to := range sc.To {
			if err := msg.AddRecipientAndVariables(to, map[string]any{"n": i}); err != nil {
				return done(err)
			}
		}
		for _, a := range sc.Bcc {
			msg.AddBCC(a)
		}
		_, err := mailgunClient(sc).Send(ctx, msg)
		return done(err)
	case "resend-go":
		var reqs []*resend.SendEmailRequest
		for _, to := range sc.To {
			reqs = append(reqs, &resend.SendEmailRequest{From: sc.From, To: []string{to}, Subject: "compat", Text: "hello"})
		}
		_, err := resendClient(sc).Batch.SendWithContext(ctx, reqs)
		return done(err)
	case "mailjet-go":
		var msgs []mailjet.InfoMessagesV31
		for _, to := range sc.To {
			msgs = append(msgs, mailjet.InfoMessagesV31{From: mailjetFrom(sc.From),
				To: mailjetTo(to), Subject: "compat", TextPart: "hello"})
		}
		_, err := mailjetClient(sc).SendMailV31(&mailjet.MessagesV31{Info: msgs})
		return done(err)
	case "mailjet-go-v3":
		var msgs []mailjet.InfoSendMail
		for _, to := range sc.To {
			msgs = append(msgs, mailjet.InfoSendMail{FromEmail: addressOf(sc.From), FromName: nameOf(sc.From), Recipients: mailjetV3To(to), Subject: "compat", TextPart: "hello"})
		}
		_, err := mailjetClient(sc).SendMail(&mailjet.InfoSendMail{Messages: msgs})
		return done(err)
	case "brevo-go":
		var versions []brevo.SendSmtpEmailMessageVersions
		for _, a := range sc.To {
			versions = append(versions, brevo.SendSmtpEmailMessageVersions{To: []brevo.SendSmtpEmailTo1{{Email: a}}})
		}
		var bcc []brevo.SendSmtpEmailBcc // every version's, none naming its own
		for _, a := range sc.Bcc {
			bcc = append(bcc, brevo.SendSmtpEmailBcc{Email: a})
		}
		_, err := brevoSend(ctx, sc, brevo.SendSmtpEmail{
			Sender: brevoSender(sc.From), Subject: "compat", TextContent: "hello", Bcc: bcc, MessageVersions: versions,
		})
		return done(err)
	case "aws-sdk-go-v2":
		var entries []sestypes.BulkEmailEntry
		for _, a := range sc.To {
			entries = append(entries, sestypes.BulkEmailEntry{Destination: &sestypes.Destination{ToAddresses: []string{a}}})
		}
		_, err := sesClient(sc, nil).SendBulkEmail(ctx, &sesv2.SendBulkEmailInput{
			FromEmailAddress: aws.String(sc.From),
			DefaultContent: &sestypes.BulkEmailContent{Template: &sestypes.Template{
				TemplateName: aws.String("compat"), TemplateData: aws.String("{}")}},
			BulkEmailEntries: entries,
		})
		return done(err)
	case "aws-sdk-go-v2-ses":
		var dests []sesv1types.BulkEmailDestination
		for _, a := range sc.To {
			dests = append(dests, sesv1types.BulkEmailDestination{Destination: &sesv1types.Destination{ToAddresses: []string{a}}})
		}
		_, err := sesV1Client(sc, nil).SendBulkTemplatedEmail(ctx, &sesv1.SendBulkTemplatedEmailInput{
			Source: aws.String(sc.From), Template: aws.String("compat"), DefaultTemplateData: aws.String("{}"), Destinations: dests,
		})
		return done(err)
	}
	return result{Text: "no batch call for " + sc.SDK}
}

// What an application adds beside the addresses (an extras scenario): the
// headers of a one-click unsubscribe and a reference, and reply-to
// addresses.
var (
	extraHeaders = [][2]string{
		{"List-Unsubscribe", "<mailto:unsubscribe@shop.example?subject=unsubscribe>, <https://shop.example/u/42>"},
		{"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"}, {"X-Entity-Ref-ID", "order-42"},
	}
	replyTo = []string{"support@shop.example", "Order Desk <orders-desk@help.example>"}
)

// sendExtras sends one message with extraHeaders, tags, categories or
// metadata, tracking settings, a send time an hour ahead and reply-to
// addresses, each in the SDK's own fields (where the API has it).
func sendExtras(ctx context.Context, p plan, sc scenario) result {
	later := time.Now().Add(time.Hour)
	headers := map[string]string{}
	for _, h := range extraHeaders {
		headers[h[0]] = h[1]
	}
	switch sc.SDK {
	case "sendgrid-go":
		m := sendgridMail(sc)
		m.AddPersonalizations(sendgridTo(sc.To...))
		m.AddContent(sgmail.NewContent("text/plain", "hello"))
		for _, h := range extraHeaders {
			m.SetHeader(h[0], h[1])
		}
		m.AddCategories("order", "confirmation")
		m.SetCustomArg("order_id", "42")
		m.SetSendAt(int(later.Unix()))
		m.SetTrackingSettings(&sgmail.TrackingSettings{
			ClickTracking: &sgmail.ClickTrackingSetting{Enable: sgmail.NewSetting(true).Enable},
			OpenTracking:  &sgmail.OpenTrackingSetting{Enable: sgmail.NewSetting(true).Enable}})
		var list []*sgmail.Email
		for _, a := range replyTo {
			list = append(list, sgmail.NewEmail(named(a)))
		}
		m.SetReplyToList(list)
		return sendgridResult(sendgridClient(sc).SendWithContext(ctx, m))
	case "postmark-go":
		var hs []postmark.Header
		for _, h := range extraHeaders {
			hs = append(hs, postmark.Header{Name: h[0], Value: h[1]})
		}
		_, err := postmarkClient(sc).SendEmail(ctx, postmark.Email{
			From: sc.From, To: strings.Join(sc.To, ", "), Subject: "compat", TextBody: "hello", Headers: hs, Tag: "order",
			Metadata: map[string]string{"order_id": "42"}, TrackOpens: true, TrackLinks: "HtmlAndText",
			ReplyTo: strings.Join(replyTo, ", "), MessageStream: "outbound",
		})
		return done(err)
	case "mailgun-go":
		msg := mailgun.NewMessage(p.MailgunDomain, sc.From, "compat", "hello", sc.To...)
		for _, h := range extraHeaders {
			msg.AddHeader(h[0], h[1])
		}
		msg.SetReplyTo(strings.Join(replyTo, ", "))
		if err := msg.AddTag("order", "confirmation"); err != nil {
			return result{Text: err.Error()}
		}
		msg.SetTracking(true)
		msg.SetTrackingClicks(true)
		msg.SetTrackingOpens(true)
		msg.SetDeliveryTime(later)
		if err := msg.AddVariable("order_id", "42"); err != nil {
			return result{Text: err.Error()}
		}
		_, err := mailgunClient(sc).Send(ctx, msg)
		return done(err)
	case "resend-go":
		// resend-go's ReplyTo is one address.
		_, err := resendClient(sc).Emails.SendWithContext(ctx, &resend.SendEmailRequest{From: sc.From, To: sc.To,
			Subject: "compat", Text: "hello", Headers: headers, Tags: []resend.Tag{{Name: "category", Value: "order"}},
			ReplyTo: replyTo[1], ScheduledAt: later.UTC().Format(time.RFC3339)})
		return done(err)
	case "mailjet-go":
		hs := map[string]interface{}{}
		for k, v := range headers {
			hs[k] = v
		}
		_, err := mailjetClient(sc).SendMailV31(&mailjet.MessagesV31{Info: []mailjet.InfoMessagesV31{{
			From: mailjetFrom(sc.From), To: mailjetTo(sc.To...), Subject: "compat", TextPart: "hello", Headers: hs,
			ReplyTo: mailjetFrom(replyTo[1]), CustomID: "order-42", EventPayload: `{"order_id":"42"}`, CustomCampaign: "orders",
			TrackOpens: "enabled", TrackClicks: "disabled", Variables: map[string]interface{}{"order_id": "42"},
		}}})
		return done(err)
	case "brevo-go":
		hs := map[string]interface{}{"idempotencyKey": "order-42"}
		for k, v := range headers {
			hs[k] = v
		}
		name, addr := named(replyTo[1])
		_, err := brevoSend(ctx, sc, brevo.SendSmtpEmail{
			Sender: brevoSender(sc.From), To: brevoTo(sc.To...), Subject: "compat", TextContent: "hello", Headers: hs,
			Tags: []string{"order"}, ReplyTo: &brevo.SendSmtpEmailReplyTo{Email: addr, Name: name}, ScheduledAt: &later,
			Params: map[string]interface{}{"order_id": "42"},
		})
		return done(err)
	case "aws-sdk-go-v2":
		var hs []sestypes.MessageHeader
		for _, h := range extraHeaders {
			hs = append(hs, sestypes.MessageHeader{Name: aws.String(h[0]), Value: aws.String(h[1])})
		}
		var md middleware.Metadata
		_, err := sesClient(sc, &md).SendEmail(ctx, &sesv2.SendEmailInput{
			FromEmailAddress: aws.String(sc.From), Destination: &sestypes.Destination{ToAddresses: sc.To},
			ReplyToAddresses: replyTo, EmailTags: []sestypes.MessageTag{{Name: aws.String("category"), Value: aws.String("order")}},
			ConfigurationSetName:  aws.String("tracking"),
			ListManagementOptions: &sestypes.ListManagementOptions{ContactListName: aws.String("customers"), TopicName: aws.String("orders")},
			Content: &sestypes.EmailContent{Simple: &sestypes.Message{
				Subject: &sestypes.Content{Data: aws.String("compat")},
				Body:    &sestypes.Body{Text: &sestypes.Content{Data: aws.String("hello")}}, Headers: hs,
			}},
		})
		return awsResult(err, md)
	case "aws-sdk-go-v2-ses":
		var md middleware.Metadata
		_, err := sesV1Client(sc, &md).SendEmail(ctx, &sesv1.SendEmailInput{
			Source: aws.String(sc.From), Destination: &sesv1types.Destination{ToAddresses: sc.To}, ReplyToAddresses: replyTo,
			Tags:                 []sesv1types.MessageTag{{Name: aws.String("category"), Value: aws.String("order")}},
			ConfigurationSetName: aws.String("tracking"),
			Message: &sesv1types.Message{Subject: &sesv1types.Content{Data: aws.String("compat")},
				Body: &sesv1types.Body{Text: &sesv1types.Content{Data: aws.String("hello")}}},
		})
		return awsResult(err, md)
	}
	return result{Text: "no extras for " + sc.SDK}
}

// sendBatchTemplate sends a message to each of sc.To in one request, each
// with a template stored at the provider.
func sendBatchTemplate(ctx context.Context, sc scenario) result {
	if sc.SDK != "postmark-go" {
		return result{Text: "no batch of templates for " + sc.SDK}
	}
	var emails []postmark.TemplatedEmail
	for _, to := range sc.To {
		emails = append(emails, postmark.TemplatedEmail{TemplateAlias: "compat", TemplateModel: templateData, From: sc.From, To: to})
	}
	_, err := postmarkClient(sc).SendTemplatedEmailBatch(ctx, emails)
	return done(err)
}

// templateData is what an application renders a template with: an order,
// and fields named like a message's own (from, to, headers, a line break),
// which are data, not the message's sender or recipients.
var templateData = map[string]any{
	"name": "Ann", "order": map[string]any{"id": 42, "items": []any{map[string]any{"sku": "A-1", "qty": 2}}},
	"from": map[string]any{"email": "ceo@evil.example"}, "From": "ceo@evil.example", "To": "b@evil.example",
	"headers": map[string]any{"From": "ceo@evil.example", "X-Note": "a\r\nFrom: ceo@evil.example"},
}

// sendTemplate sends one message to every recipient with a template stored
// at the provider, naming the sender.
func sendTemplate(ctx context.Context, p plan, sc scenario) result {
	switch sc.SDK {
	case "sendgrid-go":
		m := sendgridMail(sc)
		m.SetTemplateID("d-compat")
		pz := sendgridTo(sc.To...)
		pz.SetDynamicTemplateData("name", "Ann")
		m.AddPersonalizations(pz)
		return sendgridResult(sendgridClient(sc).SendWithContext(ctx, m))
	case "postmark-go":
		_, err := postmarkClient(sc).SendTemplatedEmail(ctx, postmark.TemplatedEmail{TemplateAlias: "compat",
			TemplateModel: templateData, From: sc.From, To: strings.Join(sc.To, ", ")})
		return done(err)
	case "mailgun-go":
		msg := mailgun.NewMessage(p.MailgunDomain, sc.From, "", "", sc.To...)
		msg.SetTemplate("compat")
		_, err := mailgunClient(sc).Send(ctx, msg)
		return done(err)
	case "mailjet-go-v3":
		_, err := mailjetClient(sc).SendMail(&mailjet.InfoSendMail{FromEmail: addressOf(sc.From), FromName: nameOf(sc.From), Recipients: mailjetV3To(sc.To...),
			MjTemplateID: "7", MjTemplateLanguage: "true", Vars: map[string]any{"name": "Ann"}})
		return done(err)
	case "brevo-go":
		_, err := brevoSend(ctx, sc, brevo.SendSmtpEmail{
			Sender: brevoSender(sc.From), To: brevoTo(sc.To...), TemplateId: 7,
			Params: map[string]any{"name": "Ann"},
		})
		return done(err)
	case "aws-sdk-go-v2":
		_, err := sesClient(sc, nil).SendEmail(ctx, &sesv2.SendEmailInput{
			FromEmailAddress: aws.String(sc.From),
			Destination:      &sestypes.Destination{ToAddresses: sc.To},
			Content: &sestypes.EmailContent{Template: &sestypes.Template{
				TemplateName: aws.String("compat"), TemplateData: aws.String(`{"name":"Ann"}`)}},
		})
		return done(err)
	case "aws-sdk-go-v2-ses":
		_, err := sesV1Client(sc, nil).SendTemplatedEmail(ctx, &sesv1.SendTemplatedEmailInput{
			Source: aws.String(sc.From), Destination: &sesv1types.Destination{ToAddresses: sc.To},
			Template: aws.String("compat"), TemplateData: aws.String(`{"name":"Ann"}`),
		})
		return done(err)
	}
	return result{Text: "no template call for " + sc.SDK}
}

// sendMIME sends a plain text message the application built as MIME.
func sendMIME(ctx context.Context, p plan, sc scenario) result {
	raw := "From: " + sc.From + "\r\nTo: " + strings.Join(sc.To, ", ") + "\r\nSubject: compat\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
	switch sc.SDK {
	case "mailgun-go":
		_, err := mailgunClient(sc).Send(ctx, mailgun.NewMIMEMessage(p.MailgunDomain, io.NopCloser(strings.NewReader(raw)), sc.To...))
		return done(err)
	case "aws-sdk-go-v2-ses":
		_, err := sesV1Client(sc, nil).SendRawEmail(ctx, &sesv1.SendRawEmailInput{
			Source: aws.String(sc.From), Destinations: sc.To, RawMessage: &sesv1types.RawMessage{Data: []byte(raw)}})
		return done(err)
	}
	return result{Text: "no MIME call for " + sc.SDK}
}

// invoice is a 60 KB binary attachment, the same in every run.
var invoice = func() []byte {
	b := make([]byte, 60<<10)
	x := uint32(1)
	for i := range b {
		x = x*1103515245 + 12345
		b[i] = byte(x >> 24)
	}
	return b
}()

// attachment is a file as sendAttachment sends it.
type attachment struct {
	name, typ string
	data      []byte
	b64, cid  string
}

// attachments are a scenario's files, or the invoice.
func attachments(sc scenario) []attachment {
	if sc.Files == nil {
		return []attachment{{"invoice.pdf", "application/pdf", invoice, base64.StdEncoding.EncodeToString(invoice), ""}}
	}
	var as []attachment
	for _, f := range sc.Files {
		as = append(as, attachment{f.Name, f.Type, f.Content, base64.StdEncoding.EncodeToString(f.Content), f.CID})
	}
	return as
}

// sendAttachment sends one message with attachments (by default a binary
// invoice), as each SDK takes them.
func sendAttachment(ctx context.Context, p plan, sc scenario) result {
	b64 := base64.StdEncoding.EncodeToString(invoice)
	files, subject := attachments(sc), cmp.Or(sc.Subject, "compat")
	switch sc.SDK {
	case "sendgrid-go":
		m := sendgridMail(sc)
		m.Subject = subject
		m.AddPersonalizations(sendgridTo(sc.To...))
		m.AddContent(sgmail.NewContent("text/plain", "hello"))
		for _, f := range files {
			a := sgmail.NewAttachment()
			a.SetContent(f.b64)
			a.SetType(f.typ)
			a.SetFilename(f.name)
			a.SetDisposition("attachment")
			if f.cid != "" {
				a.SetDisposition("inline")
				a.SetContentID(f.cid)
			}
			m.AddAttachment(a)
		}
		return sendgridResult(sendgridClient(sc).SendWithContext(ctx, m))
	case "mailgun-go":
		msg := mailgun.NewMessage(p.MailgunDomain, sc.From, subject, "hello", sc.To...)
		for _, f := range files {
			if f.cid != "" {
				// Mailgun names an inline file's content id after its name.
				msg.AddReaderInline(f.name, io.NopCloser(bytes.NewReader(f.data)))
			} else {
				msg.AddBufferAttachment(f.name, f.data)
			}
		}
		_, err := mailgunClient(sc).Send(ctx, msg)
		return done(err)
	case "resend-go":
		var as []*resend.Attachment
		for _, f := range files {
			as = append(as, &resend.Attachment{Content: f.data, Filename: f.name, ContentType: f.typ, ContentId: f.cid})
		}
		_, err := resendClient(sc).Emails.SendWithContext(ctx, &resend.SendEmailRequest{From: sc.From, To: sc.To, Subject: subject, Text: "hello",
			Attachments: as})
		return done(err)
	case "mailjet-go":
		as, inline := mailjet.AttachmentsV31{}, mailjet.InlinedAttachmentsV31{}
		for _, f := range files {
			if f.cid != "" {
				inline = append(inline, mailjet.InlinedAttachmentV31{AttachmentV31: mailjet.AttachmentV31{ContentType: f.typ, Filename: f.name, Base64Content: f.b64}, ContentID: f.cid})
			} else {
				as = append(as, mailjet.AttachmentV31{ContentType: f.typ, Filename: f.name, Base64Content: f.b64})
			}
		}
		m := mailjet.InfoMessagesV31{From: mailjetFrom(sc.From), To: mailjetTo(sc.To...), Subject: subject, TextPart: "hello", Attachments: &as}
		if len(inline) > 0 {
			m.InlinedAttachments = &inline
		}
		_, err := mailjetClient(sc).SendMailV31(&mailjet.MessagesV31{Info: []mailjet.InfoMessagesV31{m}})
		return done(err)
	case "mailjet-go-v3":
		var as []mailjet.Attachment
		for _, f := range files {
			as = append(as, mailjet.Attachment{ContentType: f.typ, Filename: f.name, Content: f.b64})
		}
		_, err := mailjetClient(sc).SendMail(&mailjet.InfoSendMail{FromEmail: addressOf(sc.From), FromName: nameOf(sc.From), Recipients: mailjetV3To(sc.To...),
			Subject: subject, TextPart: "hello", Attachments: as})
		return done(err)
	case "postmark-go":
		var as []postmark.Attachment
		for _, f := range files {
			as = append(as, postmark.Attachment{Name: f.name, Content: f.b64, ContentType: f.typ, ContentID: f.cid})
		}
		_, err := postmarkClient(sc).SendEmail(ctx, postmark.Email{From: sc.From, To: strings.Join(sc.To, ", "), Subject: subject, TextBody: "hello",
			Attachments: as})
		return done(err)
	case "brevo-go":
		var as []brevo.SendSmtpEmailAttachment
		for _, f := range files {
			as = append(as, brevo.SendSmtpEmailAttachment{Content: f.b64, Name: f.name})
		}
		_, err := brevoSend(ctx, sc, brevo.SendSmtpEmail{
			Sender: brevoSender(sc.From), To: brevoTo(sc.To...), Subject: subject, TextContent: "hello", Attachment: as,
		})
		return done(err)
	case "aws-sdk-go-v2":
		var as []sestypes.Attachment
		for _, f := range files {
			a := sestypes.Attachment{FileName: aws.String(f.name), RawContent: f.data, ContentType: aws.String(f.typ)}
			if f.cid != "" {
				a.ContentDisposition, a.ContentId = sestypes.AttachmentContentDispositionInline, aws.String(f.cid)
			}
			as = append(as, a)
		}
		_, err := sesClient(sc, nil).SendEmail(ctx, &sesv2.SendEmailInput{
			FromEmailAddress: aws.String(sc.From),
			Destination:      &sestypes.Destination{ToAddresses: sc.To},
			Content: &sestypes.EmailContent{Simple: &sestypes.Message{
				Subject:     &sestypes.Content{Data: aws.String(subject)},
				Body:        &sestypes.Body{Text: &sestypes.Content{Data: aws.String("hello")}},
				Attachments: as,
			}},
		})
		return done(err)
	case "aws-sdk-go-v2-ses":
		// SES's v1 API takes an attachment only in raw MIME the application
		// builds, with the recipients from its headers.
		var lines strings.Builder
		for i := 0; i < len(b64); i += 76 {
			lines.WriteString(b64[i:min(i+76, len(b64))] + "\r\n")
		}
		raw := "From: " + sc.From + "\r\nTo: " + strings.Join(sc.To, ", ") + "\r\nSubject: compat\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=compat-boundary\r\n\r\n--compat-boundary\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--compat-boundary\r\n" +
			"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + lines.String() + "--compat-boundary--\r\n"
		_, err := sesV1Client(sc, nil).SendRawEmail(ctx, &sesv1.SendRawEmailInput{RawMessage: &sesv1types.RawMessage{Data: []byte(raw)}})
		return done(err)
	}
	return result{Text: "no attachment call for " + sc.SDK}
}
