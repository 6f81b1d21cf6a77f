package mailapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/url"
	"strings"
)

// maxParts bounds the form parts read from a multipart body.
const maxParts = 1000

// Inspect reads the sender(s) and counts the recipients of a send request.
// An error means the body is not a valid send request in this dialect; its
// message names the field and never quotes the body.
func (d *Dialect) Inspect(path, contentType string, body []byte) (Message, error) {
	ep := d.endpoint(path)
	if ep == nil {
		return Message{}, fmt.Errorf("%s is not a %s send endpoint", path, d.Name)
	}
	var m Message
	var err error
	switch ep.shape {
	case oneObject:
		err = m.readObject(body, ep.msg)
	case objectArray:
		err = m.readArray(body, ep.msg)
	case messagesOrList:
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
			err = m.readArray(body, ep.msg)
		} else {
			var wrapper struct{ Messages json.RawMessage }
			if err = json.Unmarshal(body, &wrapper); err == nil {
				if wrapper.Messages == nil {
					err = errors.New(`field "Messages": missing`)
				} else {
					err = m.readArray(wrapper.Messages, ep.msg)
				}
			}
		}
	case form, mimeForm:
		err = m.readForm(contentType, body, ep)
		if err == nil {
			if dom := pathDomain(ep.path, path); dom != "" {
				m.Senders = append(m.Senders, "@"+dom)
			}
		}
	}
	if err != nil {
		return Message{}, jsonError(err)
	}
	return m, nil
}

// jsonError turns encoding/json's errors into messages that name the
// problem without quoting the body.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Errorf("field %q: want %s, got a JSON %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Errorf("want %s, got a JSON %s", typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: unexpected end")
	}
	return err
}

type object map[string]json.RawMessage

func (m *Message) readArray(body []byte, spec *msgSpec) error {
	var items []object
	if err := json.Unmarshal(body, &items); err != nil {
		return err
	}
	if len(items) == 0 {
		return errors.New("the batch holds no messages")
	}
	for i, it := range items {
		if err := m.readMessage(it, spec); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

func (m *Message) readObject(body []byte, spec *msgSpec) error {
	var o object
	if err := json.Unmarshal(body, &o); err != nil {
		return err
	}
	if o == nil {
		return errors.New("the body is not a JSON object")
	}
	return m.readMessage(o, spec)
}

// readMessage walks one message object by its spec.
func (m *Message) readMessage(o object, spec *msgSpec) error {
	senders := len(m.Senders)
	for _, f := range spec.from {
		addrs, err := o.addresses(f)
		if err != nil {
			return err
		}
		m.Senders = append(m.Senders, addrs...)
	}
	for _, f := range spec.recipients {
		addrs, err := o.addresses(f)
		if err != nil {
			return err
		}
		m.Recipients += len(addrs)
	}
	if spec.raw != "" {
		if raw, ok := o.get(spec.raw); ok {
			if err := m.readRawMIME(raw, len(m.Senders) == senders); err != nil {
				return err
			}
		}
	}
	for _, g := range spec.groups {
		raw, ok := o.get(g.path)
		if !ok {
			if g.required {
				return fmt.Errorf("field %q: missing", g.path)
			}
			continue
		}
		var items []object
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("field %q: want an array of objects", g.path)
		}
		if g.required && len(items) == 0 {
			return fmt.Errorf("field %q: empty", g.path)
		}
		for i, it := range items {
			if err := m.readMessage(it, g.spec); err != nil {
				return fmt.Errorf("%s[%d]: %w", g.path, i, err)
			}
		}
	}
	if spec.fromRequired && len(m.Senders) == senders && !m.Opaque {
		return fmt.Errorf("field %q: missing sender", spec.from[0].path)
	}
	return nil
}

// get follows a dotted path through nested objects.
func (o object) get(path string) (json.RawMessage, bool) {
	cur := o
	for {
		name, rest, more := strings.Cut(path, ".")
		raw, ok := cur[name]
		if !ok || isNull(raw) {
			return nil, false
		}
		if !more {
			return raw, true
		}
		var next object
		if json.Unmarshal(raw, &next) != nil {
			return nil, false
		}
		cur, path = next, rest
	}
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 4 && string(raw) == "null"
}

// addresses reads the addresses of field f; a missing field has none.
func (o object) addresses(f field) ([]string, error) {
	raw, ok := o.get(f.path)
	if !ok {
		return nil, nil
	}
	bad := func(want string) error { return fmt.Errorf("field %q: want %s", f.path, want) }
	switch f.kind {
	case addrString:
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad("a string")
		}
		return parseList(f.path, s, true)
	case addrList:
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad("a string of comma-separated addresses")
		}
		return parseList(f.path, s, false)
	case addrListOrArray:
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return parseList(f.path, s, false)
		}
		fallthrough
	case stringArray:
		var list []string
		if json.Unmarshal(raw, &list) != nil {
			return nil, bad("an array of address strings")
		}
		var out []string
		for _, s := range list {
			a, err := parseList(f.path, s, true)
			if err != nil {
				return nil, err
			}
			out = append(out, a...)
		}
		return out, nil
	case objectOne:
		var one object
		if json.Unmarshal(raw, &one) != nil || one == nil {
			return nil, bad(fmt.Sprintf("an object with %q", f.key))
		}
		return one.addresses(field{path: f.key, kind: addrString})
	case objectList:
		var many []object
		if json.Unmarshal(raw, &many) != nil {
			return nil, bad(fmt.Sprintf("an array of objects with %q", f.key))
		}
		var out []string
		for i, one := range many {
			a, err := one.addresses(field{path: f.key, kind: addrString})
			if err != nil {
				return nil, fmt.Errorf("field %q[%d]: %w", f.path, i, err)
			}
			if len(a) == 0 {
				return nil, fmt.Errorf("field %q[%d]: missing %q", f.path, i, f.key)
			}
			out = append(out, a...)
		}
		return out, nil
	}
	return nil, nil
}

// parseList parses an RFC 5322 address list (never split on commas; names
// may contain them). one requires exactly one address.
func parseList(name, s string, one bool) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		if one {
			return nil, fmt.Errorf("field %q: empty address", name)
		}
		return nil, nil
	}
	list, err := mail.ParseAddressList(s)
	if err != nil {
		return nil, fmt.Errorf("field %q: not an email address list: %v", name, err)
	}
	if one && len(list) != 1 {
		return nil, fmt.Errorf("field %q: want one address, got %d", name, len(list))
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = strings.ToLower(a.Address)
	}
	return out, nil
}

// readRawMIME reads From/To/Cc/Bcc from base64 raw MIME (SES). When the
// headers cannot be read the message is Opaque.
func (m *Message) readRawMIME(raw json.RawMessage, needFrom bool) error {
	var b64 string
	if json.Unmarshal(raw, &b64) != nil {
		return errors.New(`field "Content.Raw.Data": want a base64 string`)
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return errors.New(`field "Content.Raw.Data": not base64`)
	}
	m.readMIMEHeaders(data, needFrom, true)
	return nil
}

// readMIMEHeaders adds the From (when needFrom) and, when countRecipients,
// the To/Cc/Bcc of a raw message. Unreadable headers make it Opaque.
func (m *Message) readMIMEHeaders(data []byte, needFrom, countRecipients bool) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		m.Opaque = true
		return
	}
	if needFrom {
		from, err := msg.Header.AddressList("From")
		if err != nil || len(from) == 0 {
			m.Opaque = true
			return
		}
		for _, a := range from {
			m.Senders = append(m.Senders, strings.ToLower(a.Address))
		}
	}
	if countRecipients {
		for _, h := range []string{"To", "Cc", "Bcc"} {
			list, err := msg.Header.AddressList(h)
			if errors.Is(err, mail.ErrHeaderNotPresent) {
				continue
			}
			if err != nil {
				m.Opaque = true
				return
			}
			m.Recipients += len(list)
		}
	}
}

// readForm reads a Mailgun form: urlencoded or multipart, repeatable
// fields, and for messages.mime the raw "message" part.
func (m *Message) readForm(contentType string, body []byte, ep *endpoint) error {
	values := url.Values{}
	var mimeMessage []byte
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return errors.New("Content-Type: want multipart/form-data or application/x-www-form-urlencoded")
	}
	switch mediaType {
	case "application/x-www-form-urlencoded":
		if values, err = url.ParseQuery(string(body)); err != nil {
			return errors.New("the form is not valid urlencoded data")
		}
	case "multipart/form-data":
		r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for n := 0; ; n++ {
			p, err := r.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil || n >= maxParts {
				return errors.New("the multipart form cannot be read")
			}
			name := p.FormName()
			switch {
			case name == "message" && ep.shape == mimeForm:
				mimeMessage, err = io.ReadAll(p)
			case name == "from" || name == "to" || name == "cc" || name == "bcc":
				var v []byte
				v, err = io.ReadAll(p)
				values.Add(name, string(v))
			}
			if err != nil {
				return errors.New("the multipart form cannot be read")
			}
		}
	default:
		return fmt.Errorf("Content-Type %q: want multipart/form-data or application/x-www-form-urlencoded", mediaType)
	}
	for _, name := range []string{"to", "cc", "bcc"} {
		for _, v := range values[name] {
			list, err := parseList(name, v, false)
			if err != nil {
				return err
			}
			m.Recipients += len(list)
		}
	}
	if ep.shape == mimeForm {
		if mimeMessage == nil {
			return errors.New(`field "message": missing`)
		}
		if len(values["to"]) == 0 {
			return errors.New(`field "to": missing`)
		}
		m.readMIMEHeaders(mimeMessage, true, false)
		return nil
	}
	froms := values["from"]
	if len(froms) == 0 {
		return errors.New(`field "from": missing sender`)
	}
	for _, f := range froms {
		list, err := parseList("from", f, true)
		if err != nil {
			return err
		}
		m.Senders = append(m.Senders, list...)
	}
	return nil
}
