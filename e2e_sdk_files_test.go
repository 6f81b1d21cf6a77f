package keygate_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// sdkFileSends are legitimate but unusual messages with attachments, as
// real applications send them through their SDK: file names in other
// scripts, with emoji, spaces, apostrophes, quotes and Windows paths; an
// inline image; many files and an empty one; a binary file whose bytes
// read like multipart boundaries and form fields; a long subject in
// another script. A key that allows the sender must let each through
// unchanged, however the SDK encodes it.
var sdkFileSends = []struct {
	name    string
	files   []sdkFile
	subject string
}{
	{name: "unicode-names", files: []sdkFile{
		sdkPDF("Rechnung für Müller & Söhne.pdf"), sdkPDF("日本語の請求書.pdf"), sdkPDF("🧾 receipt 2026 ✓.pdf"),
	}},
	{name: "apostrophe", files: []sdkFile{sdkPDF("Bob's invoice (final); copy.pdf")}},
	{name: "quote", files: []sdkFile{sdkPDF(`The "final" invoice.pdf`)}},
	{name: "backslash", files: []sdkFile{sdkPDF(`C:\Users\bob\Documents\invoice.pdf`)}},
	{name: "inline", files: []sdkFile{
		{Name: "logo.png", Type: "image/png", Content: base64.StdEncoding.EncodeToString(sdkBinary("logo")), CID: "logo"},
		sdkPDF("invoice.pdf"),
	}},
	{name: "many", files: func() []sdkFile {
		fs := []sdkFile{{Name: "empty.txt", Type: "text/plain", Content: ""}}
		for i := range 10 {
			fs = append(fs, sdkPDF(fmt.Sprintf("statement-%02d.pdf", i)))
		}
		return fs
	}()},
	{name: "binary", files: []sdkFile{{Name: "data.bin", Type: "application/octet-stream",
		Content: base64.StdEncoding.EncodeToString(sdkBinary("boundary"))}}},
	{name: "long-subject", subject: strings.Repeat("Ihre Bestellung Nr. 12345 bei Bäckerei Müller – 注文確認 📦 ", 12),
		files: []sdkFile{sdkPDF("invoice.pdf")}},
}

// sdkPDF is a small PDF-like attachment named name.
func sdkPDF(name string) sdkFile {
	return sdkFile{Name: name, Type: "application/pdf", Content: base64.StdEncoding.EncodeToString(sdkBinary(name))}
}

// sdkBinary is 2 KB of bytes seeded by seed, holding what a careless
// reader of a multipart form or a MIME message would take for structure:
// bare CRs and LFs, "--" lines, the word boundary, a form part naming a
// from field and a From header.
func sdkBinary(seed string) []byte {
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\r\n--boundary\r\n--\r\n\r--boundary\r\n\n--boundary--\n")
	b.WriteString("Content-Disposition: form-data; name=\"from\"\r\n\r\nceo@evil.example\r\n")
	b.WriteString("From: ceo@evil.example\r\n\r\n\x00\xff\xfe\r\r\n\n")
	for x := uint32(len(seed)) + 1; b.Len() < 2048; {
		x = x*1103515245 + 12345
		b.WriteByte(byte(x >> 24))
	}
	return b.Bytes()
}

// sdkFileSendsRefused are the sends of sdkFileSends keygate refuses, by
// scenario id, with the code: Go's mime/multipart (mailgun-go) writes a
// quote in a file name as a quoted pair (filename="The \"final\"
// invoice.pdf"), which a parser reading the backslash as itself ends the
// file name at, reading the rest as other parameters (docs/sdks.md).
var sdkFileSendsRefused = map[string]string{"mailgun-go/quote": "invalid_payload"}

// sdkFileSendsUnsupported are the sends an SDK will not make: Anymail's
// Brevo backend has no inline images.
var sdkFileSendsUnsupported = map[string]bool{"anymail-brevo/inline": true}

// TestE2ESDKsUnusualAttachments sends each of sdkFileSends through every
// SDK that sends attachments, with a key limited to the shop's sender
// domains: each must reach the provider once, byte for byte as the SDK
// sent it (but sdkFileSendsRefused).
func TestE2ESDKsUnusualAttachments(t *testing.T) {
	rig := startSDKRig(t, "")
	var attach map[string]string
	for _, k := range sdkKinds {
		if k.name == "attachment" {
			attach = k.sdks
		}
	}
	langOf := map[string]string{}
	for _, d := range sdkDrivers {
		langOf[d.name] = d.lang
	}
	// Symfony Mailer's API transports attach as the others do (the suite's
	// other attachment sends leave them out).
	sdks := slices.Sorted(maps.Keys(attach))
	for _, d := range sdkDrivers {
		if d.lang == "php" {
			sdks = append(sdks, d.name)
		}
	}
	keys := map[string]*string{}
	for _, sdk := range sdks {
		keys[sdk] = new(string)
		rig.issueKey(keys[sdk], "--name", sdk+"-files", "--sender-domain", "shop.example",
			"--sender-domain", sdkMailgunDomain, "--quota", "1000/d")
	}
	rig.issuing.Wait()
	plans := map[string][]sdkScenario{}
	for _, sdk := range sdks {
		for _, f := range sdkFileSends {
			if sdkFileSendsUnsupported[sdk+"/"+f.name] {
				continue
			}
			plans[langOf[sdk]] = append(plans[langOf[sdk]], sdkScenario{ID: sdk + "/" + f.name, SDK: sdk, Base: rig.base(sdk),
				Key: *keys[sdk], From: sdkAllowedFrom, To: []string{"a@rcpt.example"}, Attachment: true, Files: f.files, Subject: f.subject})
		}
	}
	results := rig.run(plans)

	delivered := map[string]int{} // by SDK
	for p, sent := range rig.delivered(keys) {
		sdk := sent.by
		delivered[sdk]++
		if !bytes.Equal(p.Body, sent.Body) {
			t.Errorf("%s: the provider's body differs from the SDK's:\n%q\n%q", sdk, p.Body, sent.Body)
		}
	}
	for _, sdk := range sdks {
		want := 0
		for _, f := range sdkFileSends {
			id := sdk + "/" + f.name
			r, ok := results[id]
			switch code := sdkFileSendsRefused[id]; {
			case sdkFileSendsUnsupported[id]:
			case code != "":
				sdkRefused(t, id, r, code, 400, "")
			case !ok || !r.OK:
				t.Errorf("%s: the SDK failed: %+v", id, r)
			default:
				want++
			}
		}
		if delivered[sdk] != want {
			t.Errorf("%s: the provider got %d sends, want %d", sdk, delivered[sdk], want)
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, id := range sortedKeys(results) {
			t.Logf("%s: %+v", id, results[id])
		}
	}
}
