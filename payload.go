package keygate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keygate/caddy-keygate/mailapi"
	"github.com/keygate/caddy-keygate/store"
)

// Step 4 of the request path: the email policy of send routes.

// checkPayload reads a send request's body (restoring it byte for byte for
// the upstream) and applies the key's sender and recipient rules.
func (h *Handler) checkPayload(r *http.Request, rec *store.Record) (int, denial) {
	if r.ContentLength > h.maxBody {
		return 0, denial{code: PayloadTooLarge}
	}
	body, err := readBody(r, h.maxBody)
	r.Body.Close()
	if err != nil {
		return 0, denial{code: InvalidPayload, message: "the request body could not be read"}
	}
	if int64(len(body)) > h.maxBody {
		return 0, denial{code: PayloadTooLarge}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	msg, err := h.dialect.Inspect(r.URL.Path, r.Header.Get("Content-Type"), body)
	if err != nil {
		return 0, denial{code: InvalidPayload, message: h.dialect.Name + " payload: " + err.Error()}
	}
	// A body keygate cannot read fully (raw MIME, senders by id) could hide
	// senders or recipients, so keys with any limit on them may not send one.
	restricted := len(rec.SenderDomains) > 0 || rec.MaxRecipients > 0 || rec.Quota != nil || h.quota != nil
	if msg.Opaque && restricted {
		return 0, denial{code: InvalidPayload, message: "senders or recipients keygate cannot read (raw MIME it cannot parse, a sender by id or template) are refused for keys with sender, recipient or quota limits"}
	}
	// Form APIs (Mailgun) may read fields from the query string as well as
	// the body; keygate reads the body only.
	if restricted && r.URL.RawQuery != "" && isForm(r.Header.Get("Content-Type")) {
		return 0, denial{code: InvalidPayload, message: "query parameters on a form send are refused for keys with sender, recipient or quota limits"}
	}
	if len(rec.SenderDomains) > 0 {
		for _, s := range msg.Senders {
			if !mailapi.SenderAllowed(s, rec.SenderDomains) {
				return 0, denial{code: SenderNotAllowed}
			}
		}
		for _, d := range msg.SendingDomains {
			if !mailapi.DomainAllowed(d, rec.SenderDomains) {
				return 0, denial{code: SenderNotAllowed, message: "the sending domain in the path is outside the API key's sender domains"}
			}
		}
	}
	if rec.MaxRecipients > 0 && msg.Recipients > rec.MaxRecipients {
		return 0, denial{code: TooManyRecipients, message: fmt.Sprintf("the message has %d recipients; this API key allows %d per request", msg.Recipients, rec.MaxRecipients)}
	}
	return msg.Recipients, denial{}
}

// isForm reports whether a content type is one of the HTML form encodings.
func isForm(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data"
}

// readBody reads at most limit+1 bytes, in one allocation when the client
// declared the length.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= limit {
		body := make([]byte, n, n+1)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		// A body longer than declared is cut by net/http; read one more
		// byte anyway so nothing is silently dropped.
		var one [1]byte
		if m, _ := r.Body.Read(one[:]); m > 0 {
			return nil, errors.New("the body is longer than its Content-Length")
		}
		return body, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, limit+1))
}
