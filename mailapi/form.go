package mailapi

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/url"
)

// maxParts bounds the parts read from a multipart form.
const maxParts = 1000

// urlencoded reads an application/x-www-form-urlencoded form in order.
// Values are decoded only for the fields the shape names.
func (in *inspection) urlencoded(s *shape, body []byte) error {
	for len(body) > 0 {
		var pair []byte
		pair, body, _ = bytes.Cut(body, []byte("&"))
		if len(pair) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		name, err := url.QueryUnescape(string(k))
		if err != nil {
			return errors.New("form body: invalid escape in a field name")
		}
		m := s.member([]byte(name))
		if m == nil {
			continue
		}
		value, err := url.QueryUnescape(string(v))
		if err != nil {
			return errors.New(m.name + ": invalid escape")
		}
		if err := in.apply(m.shape.role, value, &path{key: m.name}); err != nil {
			return err
		}
	}
	return nil
}

// multipart reads a multipart/form-data form. A raw MIME part is read
// only as far as its headers.
func (in *inspection) multipart(s *shape, boundary string, body []byte) error {
	if boundary == "" {
		return errors.New("Content-Type: multipart/form-data without a boundary")
	}
	// Part errors quote the offending header line, so none is passed on.
	malformed := errors.New("multipart body is malformed")
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return malformed
		}
		if n >= maxParts {
			return errors.New("multipart body has too many parts")
		}
		m := s.member([]byte(part.FormName()))
		if m == nil {
			continue
		}
		if m.shape.role == roleMIME {
			in.mime(part)
			continue
		}
		v, err := io.ReadAll(part)
		if err != nil {
			return malformed
		}
		if err := in.apply(m.shape.role, string(v), &path{key: m.name}); err != nil {
			return err
		}
	}
}
