package gosdk

// The previous majors of the Go SDKs whose newest major set up differently
// or report errors differently, as the many integrations not yet moved to
// the new major still run them: mailgun-go/v4 and resend-go/v2. They send
// the plain scenarios (send), as the main suite's sendEarlier names them.

import (
	"context"
	"errors"
	"net/url"

	mailgunv4 "github.com/mailgun/mailgun-go/v4"
	resendv2 "github.com/resend/resend-go/v2"
)

// sendEarlier sends sc with an SDK of a previous major, and reports whether
// sc.SDK names one.
func sendEarlier(ctx context.Context, p plan, sc scenario) (result, bool) {
	switch sc.SDK {
	case "mailgun-go-v4":
		// v4 takes the sending domain with the key, and the API base with
		// its version: gateway + "/v3" (v5 refuses that).
		mg := mailgunv4.NewMailgun(p.MailgunDomain, sc.Key)
		mg.SetAPIBase(sc.Base + "/v3")
		msg := mailgunv4.NewMessage(sc.From, "compat", "hello", sc.To...)
		if sc.HTML != "" {
			msg.SetHtml(sc.HTML)
		}
		_, _, err := mg.Send(ctx, msg)
		if err != nil {
			// v4 has no RateLimitedError: every status is an
			// UnexpectedResponseError.
			r := result{Text: err.Error()}
			var ue *mailgunv4.UnexpectedResponseError
			if errors.As(err, &ue) {
				r.Status = ue.Actual
			}
			return r, true
		}
		return result{OK: true}, true

	case "resend-go-v2":
		c := resendv2.NewClient(sc.Key)
		c.BaseURL, _ = url.Parse(sc.Base + "/")
		_, err := c.Emails.SendWithContext(ctx, &resendv2.SendEmailRequest{From: sc.From, To: sc.To, Subject: "compat", Text: "hello", Html: sc.HTML})
		if err != nil {
			r := result{Text: err.Error()}
			var rl *resendv2.RateLimitError
			if errors.As(err, &rl) {
				r.Name = "RateLimitError"
			}
			return r, true
		}
		return result{OK: true}, true
	}
	return result{}, false
}
