// Drives each provider's official Node SDK through a keygate gateway, as an
// integrator would: only the base URL and the key change. e2e_sdk_test.go
// writes the plan (base URLs, keys, scenarios) to the file named by
// KEYGATE_COMPAT_PLAN and reads the report this prints: one line of JSON
// per scenario with what the SDK returned or threw, as a developer would
// see it. The test, not this script, decides what is right.
import { readFileSync } from "node:fs";
import sgMail from "@sendgrid/mail";
import postmark from "postmark";
import Mailgun from "mailgun.js";
import FormData from "form-data";
import { Resend } from "resend";
import Mailjet from "node-mailjet";
import { BrevoClient } from "@getbrevo/brevo";
// The previous majors still in use whose set-up differs from the newest's:
// @getbrevo/brevo 3 (the generated TransactionalEmailsApi, before the
// BrevoClient of 4 and later) and resend 5 (imported below, when used).
import brevoV3 from "@getbrevo/brevo-v3";
import {
  SESv2Client, SendEmailCommand, SendBulkEmailCommand, GetMessageInsightsCommand, ListSuppressedDestinationsCommand,
  ListEmailIdentitiesCommand, ListEmailTemplatesCommand,
} from "@aws-sdk/client-sesv2";
import * as sesV1 from "@aws-sdk/client-ses";
import nodemailer from "nodemailer";

const plan = JSON.parse(readFileSync(process.env.KEYGATE_COMPAT_PLAN, "utf8"));

// Each driver sends one message (from, to[]) with the SDK configured for
// the base URL and key; opts.noRetry turns the SDK's own retries off, and
// opts.html adds an HTML part (in the field named by html's second argument).
// It returns what the SDK gave back, or throws what it threw.
const html = (opts, field) => (opts.html ? { [field]: opts.html } : {});
// named splits an address the way a developer hands it to an SDK that takes
// the name and the address apart: "Zoë Ünal <a@example.org>" is { name:
// "Zoë Ünal", email: "a@example.org" }; a bare address has no name. (The
// others take the string whole.)
const named = (s) => {
  const m = /^\s*(?:"((?:[^"\\]|\\.)*)"|([^<]*?))\s*<([^<>]+)>\s*$/.exec(s);
  if (!m) return { email: s };
  const name = m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2];
  return name ? { name, email: m[3] } : { email: m[3] };
};
const mailjetAddress = (s) => { const { name, email } = named(s); return name ? { Email: email, Name: name } : { Email: email }; };
const drivers = {
  async sendgrid(base, key, from, to, opts) {
    const mail = new sgMail.MailService(); // the default export is one shared instance
    mail.setApiKey(key);
    mail.client.setDefaultRequest("baseUrl", base); // after setApiKey, which resets it
    return mail.send({ from, to, subject: "compat", text: "hello", ...html(opts, "html") }, true);
  },
  async postmark(base, key, from, to, opts) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmail({ From: from, To: to.join(", "), Subject: "compat", TextBody: "hello", ...html(opts, "HtmlBody") });
  },
  async mailgun(base, key, from, to, opts) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    return mg.messages.create(plan.mailgunDomain, { from, to, subject: "compat", text: "hello", ...html(opts, "html") });
  },
  async resend(base, key, from, to, opts) {
    const r = new Resend(key, { baseUrl: base });
    const { data, error } = await r.emails.send({ from, to, subject: "compat", text: "hello", ...html(opts, "html") });
    if (error) throw error; // the SDK returns its errors rather than throwing
    return data;
  },
  async mailjet(base, key, from, to, opts) {
    // The SDK always speaks https://, which a gateway in production does and
    // needs only the host option for; the suite's plain-HTTP taps need the
    // protocol switched too (every scenario of a plan has the same scheme).
    Mailjet.Request.protocol = new URL(base).protocol + "//";
    const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
    return mj.post("send", { version: "v3.1" }).request({
      Messages: [{
        From: mailjetAddress(from), To: to.map(mailjetAddress), Subject: "compat", TextPart: "hello", ...html(opts, "HTMLPart"),
      }],
    });
  },
  // Mailjet's older v3 Send API: node-mailjet's default version, so
  // post("send") without one.
  async "mailjet-v3"(base, key, from, to, opts) {
    const sender = named(from);
    return mailjetV3(base, key).request({
      FromEmail: sender.email, FromName: sender.name, Recipients: to.map(mailjetAddress), Subject: "compat",
      "Text-part": "hello", ...html(opts, "Html-part"),
    });
  },
  async brevo(base, key, from, to, opts) {
    const c = new BrevoClient({ apiKey: key, baseUrl: base + "/v3", ...(opts.noRetry ? { maxRetries: 0 } : {}) });
    return c.transactionalEmails.sendTransacEmail({
      sender: named(from), to: to.map(named), subject: "compat", textContent: "hello", ...html(opts, "htmlContent"),
    });
  },
  // @getbrevo/brevo 3: the API class takes the base URL (with /v3) as its
  // basePath and the key as its apiKey authentication; it does not retry.
  async "brevo-3"(base, key, from, to, opts) {
    const api = new brevoV3.TransactionalEmailsApi();
    api.basePath = base + "/v3";
    api.authentications.apiKey.apiKey = key;
    const m = new brevoV3.SendSmtpEmail();
    Object.assign(m, { sender: named(from), to: to.map(named), subject: "compat", textContent: "hello", ...html(opts, "htmlContent") });
    return api.sendTransacEmail(m);
  },
  // resend before 6.12.4 (4.x, 5.x, 6.0 to 6.12.3) takes no baseUrl
  // option (it ignores one): it reads RESEND_BASE_URL once, when it is
  // imported, so the variable is set before the import.
  async "resend-5"(base, key, from, to, opts) {
    const { data, error } = await (await resendV5(base))(key).emails.send({ from, to, subject: "compat", text: "hello", ...html(opts, "html") });
    if (error) throw error;
    return data;
  },
  async ses(base, key, from, to, opts) {
    return sesClient(base, key).send(new SendEmailCommand({
      FromEmailAddress: from, Destination: { ToAddresses: to },
      Content: { Simple: { Subject: { Data: "compat" }, Body: { Text: { Data: "hello" }, ...(opts.html ? { Html: { Data: opts.html } } : {}) } } },
    }));
  },
  // SES's v1 API (the Query API: a form POSTed to /), which most SES
  // senders still use.
  async "ses-v1"(base, key, from, to, opts) {
    return sesV1Client(base, key).send(new sesV1.SendEmailCommand({
      Source: from, Destination: { ToAddresses: to },
      Message: { Subject: { Data: "compat" }, Body: { Text: { Data: "hello" }, ...(opts.html ? { Html: { Data: opts.html } } : {}) } },
    }));
  },
  // Nodemailer's SES transport: the message as raw MIME, sent with the
  // AWS SDK's client.
  async "nodemailer-ses"(base, key, from, to, opts) {
    const t = nodemailer.createTransport({ SES: { sesClient: sesClient(base, key), SendEmailCommand } });
    return t.sendMail({ from, to, subject: "compat", text: "hello", ...html(opts, "html") });
  },
};

// batchDrivers send one request that carries a message per recipient, with
// each SDK's own batch or bulk call, from one sender; opts.bcc, when set,
// is given once for the whole batch, as the SDK takes it (a blind copy of
// every message), and opts.secondFrom is the second message's own sender.
const batchDrivers = {
  async sendgrid(base, key, from, to, opts) {
    const mail = new sgMail.MailService();
    mail.setApiKey(key);
    mail.client.setDefaultRequest("baseUrl", base);
    if (opts.secondFrom) { // the second personalization with a sender of its own
      return mail.send({ from, subject: "compat", text: "hello",
        personalizations: to.map((t, i) => ({ to: t, ...(i === 1 ? { from: opts.secondFrom } : {}) })) });
    }
    // A personalization per recipient, each with the bcc.
    return mail.sendMultiple({ from, to, ...(opts.bcc ? { bcc: opts.bcc } : {}), subject: "compat", text: "hello" });
  },
  async postmark(base, key, from, to) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmailBatch(to.map((To) => ({ From: from, To, Subject: "compat", TextBody: "hello" })));
  },
  // Batch sending: with recipient-variables Mailgun sends each to a message
  // of its own, each with the bcc.
  async mailgun(base, key, from, to, opts) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    return mg.messages.create(plan.mailgunDomain, { from, to, subject: "compat", text: "hello %recipient.n%",
      "recipient-variables": JSON.stringify(Object.fromEntries(to.map((t, n) => [t, { n }]))),
      ...(opts.bcc ? { bcc: opts.bcc } : {}) });
  },
  async resend(base, key, from, to) {
    const r = new Resend(key, { baseUrl: base });
    const { data, error } = await r.batch.send(to.map((t) => ({ from, to: [t], subject: "compat", text: "hello" })));
    if (error) throw error;
    return data;
  },
  async mailjet(base, key, from, to, opts) {
    Mailjet.Request.protocol = new URL(base).protocol + "//";
    const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
    return mj.post("send", { version: "v3.1" }).request({
      ...(opts.bcc ? { Globals: { Bcc: opts.bcc.map((Email) => ({ Email })) } } : {}), // merged into every message
      Messages: to.map((Email) => ({ From: { Email: from }, To: [{ Email }], Subject: "compat", TextPart: "hello" })),
    });
  },
  async "mailjet-v3"(base, key, from, to) {
    return mailjetV3(base, key).request({
      Messages: to.map((Email) => ({ FromEmail: from, Recipients: [{ Email }], Subject: "compat", "Text-part": "hello" })),
    });
  },
  async brevo(base, key, from, to, opts) {
    const c = new BrevoClient({ apiKey: key, baseUrl: base + "/v3" });
    return c.transactionalEmails.sendTransacEmail({
      sender: { email: from }, subject: "compat", textContent: "hello",
      ...(opts.bcc ? { bcc: opts.bcc.map((email) => ({ email })) } : {}), // every version's, none naming its own
      messageVersions: to.map((email) => ({ to: [{ email }] })),
    });
  },
  async ses(base, key, from, to) {
    return sesClient(base, key).send(new SendBulkEmailCommand({
      FromEmailAddress: from,
      DefaultContent: { Template: { TemplateName: "compat", TemplateData: "{}" } },
      BulkEmailEntries: to.map((a) => ({ Destination: { ToAddresses: [a] } })),
    }));
  },
  async "ses-v1"(base, key, from, to) {
    return sesV1Client(base, key).send(new sesV1.SendBulkTemplatedEmailCommand({
      Source: from, Template: "compat", DefaultTemplateData: "{}",
      Destinations: to.map((a) => ({ Destination: { ToAddresses: [a] } })),
    }));
  },
};

// templateData is what an application renders a template with: an order,
// and fields named like a message's own (from, to, headers, a line break),
// which are data, not the message's sender or recipients.
const templateData = {
  name: "Ann", order: { id: 42, total: "19.90", items: [{ sku: "A-1", qty: 2 }] },
  from: { email: "ceo@evil.example", name: "CEO" }, sender: { email: "ceo@evil.example" }, From: "ceo@evil.example",
  to: [{ email: "b@evil.example" }], To: "b@evil.example", headers: { From: "ceo@evil.example", "X-Note": "a\r\nFrom: ceo@evil.example" },
};

// templateDrivers send one message to every recipient with a template
// stored at the provider (the fake provider renders nothing), naming the
// sender as the request must for keygate to check it.
const templateDrivers = {
  async sendgrid(base, key, from, to) {
    const mail = new sgMail.MailService();
    mail.setApiKey(key);
    mail.client.setDefaultRequest("baseUrl", base);
    return mail.send({ from, to, templateId: "d-compat", dynamicTemplateData: templateData });
  },
  async postmark(base, key, from, to) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmailWithTemplate({ From: from, To: to.join(", "), TemplateAlias: "compat", TemplateModel: templateData });
  },
  async mailgun(base, key, from, to) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    return mg.messages.create(plan.mailgunDomain, { from, to, template: "compat", "h:X-Mailgun-Variables": JSON.stringify(templateData) });
  },
  async brevo(base, key, from, to) {
    const c = new BrevoClient({ apiKey: key, baseUrl: base + "/v3" });
    return c.transactionalEmails.sendTransacEmail({ sender: { email: from }, to: to.map((email) => ({ email })), templateId: 7, params: templateData });
  },
  async "mailjet-v3"(base, key, from, to) {
    return mailjetV3(base, key).request({
      FromEmail: from, Recipients: to.map((Email) => ({ Email })), "Mj-TemplateID": 7, "Mj-TemplateLanguage": true, Vars: templateData,
    });
  },
  async ses(base, key, from, to) {
    return sesClient(base, key).send(new SendEmailCommand({
      FromEmailAddress: from, Destination: { ToAddresses: to },
      Content: { Template: { TemplateName: "compat", TemplateData: JSON.stringify(templateData) } },
    }));
  },
  async "ses-v1"(base, key, from, to) {
    return sesV1Client(base, key).send(new sesV1.SendTemplatedEmailCommand({
      Source: from, Destination: { ToAddresses: to }, Template: "compat", TemplateData: JSON.stringify(templateData),
    }));
  },
};

// batchTemplateDrivers send a message per recipient, each with a template
// stored at the provider, in one request.
const batchTemplateDrivers = {
  async postmark(base, key, from, to) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmailBatchWithTemplates(to.map((To) => ({ From: from, To, TemplateAlias: "compat", TemplateModel: templateData })));
  },
};

// invoice is a 60 KB binary attachment, the same in every run.
const invoice = Buffer.alloc(60 << 10);
for (let i = 0, x = 1; i < invoice.length; i++) { x = (x * 1103515245 + 12345) >>> 0; invoice[i] = x >>> 24; }
const invoice64 = invoice.toString("base64");

// files are a scenario's attachments ({ name, type, data, b64, cid }):
// opts.files as the plan gives them (base64 content; a content id makes an
// inline one), or the invoice. subject is its subject.
const files = (opts) => (opts.files ?? [{ name: "invoice.pdf", type: "application/pdf", content: invoice64 }])
  .map((f) => ({ ...f, data: Buffer.from(f.content, "base64"), b64: f.content }));
const subject = (opts) => opts.subject || "compat";

// attachDrivers send one message with attachments (by default a binary
// invoice), as each SDK takes them.
const attachDrivers = {
  async sendgrid(base, key, from, to, opts) {
    const mail = new sgMail.MailService();
    mail.setApiKey(key);
    mail.client.setDefaultRequest("baseUrl", base);
    return mail.send({ from, to, subject: subject(opts), text: "hello", attachments: files(opts).map((f) => ({
      content: f.b64, filename: f.name, type: f.type, disposition: f.cid ? "inline" : "attachment", ...(f.cid ? { content_id: f.cid } : {}),
    })) });
  },
  async postmark(base, key, from, to, opts) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmail({ From: from, To: to.join(", "), Subject: subject(opts), TextBody: "hello",
      Attachments: files(opts).map((f) => new postmark.Models.Attachment(f.name, f.b64, f.type, f.cid ? "cid:" + f.cid : undefined)) });
  },
  async mailgun(base, key, from, to, opts) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    // Mailgun names an inline file's content id after its file name.
    const fs = files(opts), of = (inline) => fs.filter((f) => !!f.cid === inline).map((f) => ({ filename: f.name, data: f.data, contentType: f.type }));
    return mg.messages.create(plan.mailgunDomain, { from, to, subject: subject(opts), text: "hello",
      attachment: of(false), ...(fs.some((f) => f.cid) ? { inline: of(true) } : {}) });
  },
  async resend(base, key, from, to, opts) {
    const r = new Resend(key, { baseUrl: base });
    const { data, error } = await r.emails.send({ from, to, subject: subject(opts), text: "hello",
      attachments: files(opts).map((f) => ({ filename: f.name, content: f.data, contentType: f.type, ...(f.cid ? { contentId: f.cid } : {}) })) });
    if (error) throw error;
    return data;
  },
  async mailjet(base, key, from, to, opts) {
    Mailjet.Request.protocol = new URL(base).protocol + "//";
    const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
    const fs = files(opts), of = (inline) => fs.filter((f) => !!f.cid === inline)
      .map((f) => ({ ContentType: f.type, Filename: f.name, Base64Content: f.b64, ...(f.cid ? { ContentID: f.cid } : {}) }));
    return mj.post("send", { version: "v3.1" }).request({ Messages: [{
      From: { Email: from }, To: to.map((Email) => ({ Email })), Subject: subject(opts), TextPart: "hello",
      Attachments: of(false), ...(fs.some((f) => f.cid) ? { InlinedAttachments: of(true) } : {}),
    }] });
  },
  async "mailjet-v3"(base, key, from, to, opts) {
    const fs = files(opts), of = (inline) => fs.filter((f) => !!f.cid === inline)
      .map((f) => ({ "Content-type": f.type, Filename: f.cid ? f.cid : f.name, content: f.b64 }));
    return mailjetV3(base, key).request({
      FromEmail: from, Recipients: to.map((Email) => ({ Email })), Subject: subject(opts), "Text-part": "hello",
      Attachments: of(false), ...(fs.some((f) => f.cid) ? { Inline_attachments: of(true) } : {}),
    });
  },
  async brevo(base, key, from, to, opts) {
    const c = new BrevoClient({ apiKey: key, baseUrl: base + "/v3" });
    return c.transactionalEmails.sendTransacEmail({ sender: { email: from }, to: to.map((email) => ({ email })),
      subject: subject(opts), textContent: "hello", attachment: files(opts).map((f) => ({ content: f.b64, name: f.name })) });
  },
  async ses(base, key, from, to, opts) {
    return sesClient(base, key).send(new SendEmailCommand({
      FromEmailAddress: from, Destination: { ToAddresses: to },
      Content: { Simple: { Subject: { Data: subject(opts) }, Body: { Text: { Data: "hello" } },
        Attachments: files(opts).map((f) => ({ FileName: f.name, RawContent: f.data, ContentType: f.type,
          ...(f.cid ? { ContentDisposition: "INLINE", ContentId: f.cid } : {}) })) } },
    }));
  },
  async "nodemailer-ses"(base, key, from, to, opts) {
    const t = nodemailer.createTransport({ SES: { sesClient: sesClient(base, key), SendEmailCommand } });
    return t.sendMail({ from, to, subject: subject(opts), text: "hello",
      attachments: files(opts).map((f) => ({ filename: f.name, content: f.data, contentType: f.type, ...(f.cid ? { cid: f.cid } : {}) })) });
  },
  // SES's v1 API takes an attachment only in raw MIME the application
  // builds: SendRawEmail, with the recipients from its headers.
  async "ses-v1"(base, key, from, to, opts) {
    if (opts.files || opts.subject) {
      // The MIME as Nodemailer builds it (its stream transport), the way
      // applications on the v1 API build theirs.
      const built = await nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "windows" }).sendMail({
        from, to, subject: subject(opts), text: "hello",
        attachments: files(opts).map((f) => ({ filename: f.name, content: f.data, contentType: f.type, ...(f.cid ? { cid: f.cid } : {}) })) });
      return sesV1Client(base, key).send(new sesV1.SendRawEmailCommand({ RawMessage: { Data: built.message } }));
    }
    const boundary = "compat-boundary";
    const raw = `From: ${from}\r\nTo: ${to.join(", ")}\r\nSubject: compat\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n--${boundary}\r\n` +
      "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n" +
      `--${boundary}\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="invoice.pdf"\r\n` +
      `Content-Transfer-Encoding: base64\r\n\r\n${invoice64.replace(/.{76}/g, "$&\r\n")}\r\n--${boundary}--\r\n`;
    return sesV1Client(base, key).send(new sesV1.SendRawEmailCommand({ RawMessage: { Data: Buffer.from(raw) } }));
  },
};

// extrasDrivers send one message with what applications add beside the
// addresses, each in the SDK's own fields: custom headers (X-Entity-Ref-ID,
// List-Unsubscribe, List-Unsubscribe-Post), tags, categories and metadata,
// tracking settings, a send time in the future and a list of reply-to
// addresses (or the one the API takes).
const unsubscribe = { "List-Unsubscribe": "<mailto:unsubscribe@shop.example?subject=unsubscribe>, <https://shop.example/u/42>",
  "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Entity-Ref-ID": "order-42" };
const headerPairs = Object.entries(unsubscribe).map(([Name, Value]) => ({ Name, Value }));
const replyTo = ["support@shop.example", "Order Desk <orders-desk@help.example>"];
const later = new Date(Date.now() + 3600_000);
const extrasDrivers = {
  async sendgrid(base, key, from, to) {
    const mail = new sgMail.MailService();
    mail.setApiKey(key);
    mail.client.setDefaultRequest("baseUrl", base);
    return mail.send({ from, to, subject: "compat", text: "hello", html: "<p>hello</p>", headers: unsubscribe,
      categories: ["order", "confirmation"], customArgs: { order_id: "42" }, sendAt: Math.floor(later / 1000),
      trackingSettings: { clickTracking: { enable: true, enableText: false }, openTracking: { enable: true } },
      replyToList: replyTo.map(named), asm: { groupId: 7 } });
  },
  async postmark(base, key, from, to) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendEmail({ From: from, To: to.join(", "), Subject: "compat", TextBody: "hello", HtmlBody: "<p>hello</p>",
      Headers: headerPairs, Tag: "order", Metadata: { order_id: "42" }, TrackOpens: true,
      TrackLinks: postmark.Models.LinkTrackingOptions.HtmlAndText, ReplyTo: replyTo.join(", "), MessageStream: "outbound" });
  },
  async mailgun(base, key, from, to) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    return mg.messages.create(plan.mailgunDomain, { from, to, subject: "compat", text: "hello", html: "<p>hello</p>",
      ...Object.fromEntries(Object.entries(unsubscribe).map(([k, v]) => ["h:" + k, v])), "h:Reply-To": replyTo.join(", "),
      "o:tag": ["order", "confirmation"], "o:tracking": "yes", "o:tracking-clicks": "htmlonly", "o:tracking-opens": "yes",
      "o:deliverytime": later.toUTCString(), "v:order-id": "42", "h:X-Mailgun-Variables": '{"order_id":"42"}' });
  },
  async resend(base, key, from, to) {
    const r = new Resend(key, { baseUrl: base });
    const { data, error } = await r.emails.send({ from, to, subject: "compat", text: "hello", headers: unsubscribe,
      tags: [{ name: "category", value: "order" }], replyTo, scheduledAt: later.toISOString() },
      { idempotencyKey: "order-42" }); // the SDK's Idempotency-Key header, for a retry Resend sends once
    if (error) throw error;
    return data;
  },
  async mailjet(base, key, from, to) {
    Mailjet.Request.protocol = new URL(base).protocol + "//";
    const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
    return mj.post("send", { version: "v3.1" }).request({ Messages: [{
      From: mailjetAddress(from), To: to.map(mailjetAddress), Subject: "compat", TextPart: "hello", Headers: unsubscribe,
      ReplyTo: mailjetAddress(replyTo[0]), CustomID: "order-42", EventPayload: '{"order_id":"42"}', CustomCampaign: "orders",
      TrackOpens: "enabled", TrackClicks: "disabled", Variables: { order_id: "42" }, URLTags: "utm_source=orders",
    }] });
  },
  async "mailjet-v3"(base, key, from, to) {
    return mailjetV3(base, key).request({
      FromEmail: named(from).email, FromName: named(from).name, Recipients: to.map(mailjetAddress), Subject: "compat",
      "Text-part": "hello", Headers: { ...unsubscribe, "Reply-To": replyTo.join(", ") }, "Mj-campaign": "orders",
      "Mj-CustomID": "order-42", "Mj-EventPayLoad": '{"order_id":"42"}', "Mj-trackopen": 2, "Mj-trackclick": 1,
    });
  },
  async brevo(base, key, from, to) {
    const c = new BrevoClient({ apiKey: key, baseUrl: base + "/v3" });
    return c.transactionalEmails.sendTransacEmail({ sender: named(from), to: to.map(named), subject: "compat",
      textContent: "hello", headers: { ...unsubscribe, idempotencyKey: "order-42" }, tags: ["order"],
      replyTo: named(replyTo[0]), scheduledAt: later.toISOString(), params: { order_id: "42" } });
  },
  async ses(base, key, from, to) {
    return sesClient(base, key).send(new SendEmailCommand({
      FromEmailAddress: from, Destination: { ToAddresses: to }, ReplyToAddresses: replyTo,
      EmailTags: [{ Name: "category", Value: "order" }], ConfigurationSetName: "tracking",
      ListManagementOptions: { ContactListName: "customers", TopicName: "orders" },
      Content: { Simple: { Subject: { Data: "compat" }, Body: { Text: { Data: "hello" } }, Headers: headerPairs } },
    }));
  },
  async "ses-v1"(base, key, from, to) {
    return sesV1Client(base, key).send(new sesV1.SendEmailCommand({
      Source: from, Destination: { ToAddresses: to }, ReplyToAddresses: replyTo,
      Tags: [{ Name: "category", Value: "order" }], ConfigurationSetName: "tracking",
      Message: { Subject: { Data: "compat" }, Body: { Text: { Data: "hello" } } },
    }));
  },
  async "nodemailer-ses"(base, key, from, to) {
    const t = nodemailer.createTransport({ SES: { sesClient: sesClient(base, key), SendEmailCommand } });
    return t.sendMail({ from, to, subject: "compat", text: "hello", replyTo, headers: { "X-Entity-Ref-ID": "order-42" },
      list: { unsubscribe: [{ url: "https://shop.example/u/42", comment: "Unsubscribe" }, "unsubscribe@shop.example"] },
      ses: { EmailTags: [{ Name: "category", Value: "order" }], ConfigurationSetName: "tracking" } });
  },
};

// bulkDrivers send one message to each recipient through the provider's
// broadcast API, the content given once.
const bulkDrivers = {
  async postmark(base, key, from, to) {
    const url = new URL(base);
    const c = new postmark.ServerClient(key, { useHttps: url.protocol === "https:", requestHost: url.host });
    return c.sendBulkEmail(new postmark.BulkEmailRequest(from, to.map((a) => new postmark.BulkEmailMessage(a)), "compat", undefined, "hello"));
  },
};

// mimeDrivers send a message the application built as MIME itself.
const mimeDrivers = {
  async mailgun(base, key, from, to) {
    const mg = new Mailgun(FormData).client({ username: "api", key, url: base });
    return mg.messages.create(plan.mailgunDomain, { to, message: mime(from, to) }); // to /messages.mime
  },
  async "ses-v1"(base, key, from, to) {
    return sesV1Client(base, key).send(new sesV1.SendRawEmailCommand({
      Source: from, Destinations: to, RawMessage: { Data: Buffer.from(mime(from, to)) },
    }));
  },
};

// opDrivers make the calls other than sends that applications make with the
// same key, each with the SDK's own method: read a message's status or
// events ("status"), the suppression or bounce list ("suppressions"), the
// sending domains ("domains") and the stored templates ("templates"). An
// SDK lacks an op its provider has no API for.
const resendCall = async (promise) => {
  const { data, error } = await promise;
  if (error) throw error;
  return data;
};
const postmarkClient = (base, key, Client = postmark.ServerClient) => {
  const url = new URL(base);
  return new Client(key, { useHttps: url.protocol === "https:", requestHost: url.host });
};
const sendgridGet = (base, key, url) => {
  const mail = new sgMail.MailService();
  mail.setApiKey(key);
  mail.client.setDefaultRequest("baseUrl", base);
  return mail.client.request({ method: "GET", url });
};
const mailjetGet = (base, key, resource) => {
  Mailjet.Request.protocol = new URL(base).protocol + "//";
  const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
  return mj.get(resource, { version: "v3" }).request();
};
const opDrivers = {
  sendgrid: {
    status: (base, key) => sendgridGet(base, key, "/v3/messages/sg-1"),
    suppressions: (base, key) => sendgridGet(base, key, "/v3/suppression/bounces"),
    domains: (base, key) => sendgridGet(base, key, "/v3/whitelabel/domains"),
    templates: (base, key) => sendgridGet(base, key, "/v3/templates?generations=dynamic"),
  },
  postmark: {
    status: (base, key) => postmarkClient(base, key).getOutboundMessageDetails("pm-1"),
    suppressions: (base, key) => postmarkClient(base, key).getSuppressions("outbound"),
    // Domains are the account's: the account token's client.
    domains: (base, key) => postmarkClient(base, key, postmark.AccountClient).getDomains(),
    templates: (base, key) => postmarkClient(base, key).getTemplates(),
  },
  mailgun: {
    status: (base, key) => new Mailgun(FormData).client({ username: "api", key, url: base }).events.get(plan.mailgunDomain),
    suppressions: (base, key) => new Mailgun(FormData).client({ username: "api", key, url: base }).suppressions.list(plan.mailgunDomain, "bounces"),
    domains: (base, key) => new Mailgun(FormData).client({ username: "api", key, url: base }).domains.list(),
    templates: (base, key) => new Mailgun(FormData).client({ username: "api", key, url: base }).domains.domainTemplates.list(plan.mailgunDomain),
  },
  resend: {
    // A message's status, and the list of sent messages.
    status: async (base, key) => {
      const r = new Resend(key, { baseUrl: base });
      await resendCall(r.emails.get("re-1"));
      return resendCall(r.emails.list());
    },
    domains: (base, key) => resendCall(new Resend(key, { baseUrl: base }).domains.list()),
    templates: (base, key) => resendCall(new Resend(key, { baseUrl: base }).templates.list()),
  },
  ses: {
    status: (base, key) => sesClient(base, key).send(new GetMessageInsightsCommand({ MessageId: "ses-1" })),
    suppressions: (base, key) => sesClient(base, key).send(new ListSuppressedDestinationsCommand({})),
    domains: (base, key) => sesClient(base, key).send(new ListEmailIdentitiesCommand({})),
    templates: (base, key) => sesClient(base, key).send(new ListEmailTemplatesCommand({})),
  },
  "ses-v1": {
    domains: (base, key) => sesV1Client(base, key).send(new sesV1.ListIdentitiesCommand({})),
    templates: (base, key) => sesV1Client(base, key).send(new sesV1.ListTemplatesCommand({})),
  },
  mailjet: {
    status: (base, key) => mailjetGet(base, key, "message"),
    domains: (base, key) => mailjetGet(base, key, "sender"),
    templates: (base, key) => mailjetGet(base, key, "template"),
  },
  brevo: {
    status: (base, key) => new BrevoClient({ apiKey: key, baseUrl: base + "/v3" }).transactionalEmails.getTransacEmailsList({ messageId: "<brevo-1@shop.example>" }),
    suppressions: (base, key) => new BrevoClient({ apiKey: key, baseUrl: base + "/v3" }).transactionalEmails.getTransacBlockedContacts(),
    domains: (base, key) => new BrevoClient({ apiKey: key, baseUrl: base + "/v3" }).domains.getDomains(),
    templates: (base, key) => new BrevoClient({ apiKey: key, baseUrl: base + "/v3" }).transactionalEmails.getSmtpTemplates(),
  },
};

// resendV5 makes resend 5's client, importing the SDK the first time with
// RESEND_BASE_URL set to base: its base URL for as long as the process runs.
let resendV5Module, resendV5Base;
async function resendV5(base) {
  if (!resendV5Module) {
    process.env.RESEND_BASE_URL = base;
    resendV5Module = await import("resend-v5");
    resendV5Base = base;
  }
  if (base !== resendV5Base) throw new Error(`resend 5 was imported for ${resendV5Base}, not ${base}`);
  return (key) => new resendV5Module.Resend(key);
}

// mime is a plain text message from one sender to every recipient.
function mime(from, to) {
  return `From: ${from}\r\nTo: ${to.join(", ")}\r\nSubject: compat\r\nMIME-Version: 1.0\r\n` +
    "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n";
}

// mailjetV3 is node-mailjet's request to the v3 Send API (the SDK's
// default version), for the gateway.
function mailjetV3(base, key) {
  Mailjet.Request.protocol = new URL(base).protocol + "//";
  const mj = new Mailjet({ apiKey: key, apiSecret: "unused", config: { host: new URL(base).host } });
  return mj.post("send");
}

// sesClient is an SESv2 client for the gateway. The key is the access key
// id; keygate never sees or checks the secret access key, so any value
// will do.
function sesClient(base, key) {
  return new SESv2Client({
    region: "us-east-1", endpoint: base,
    credentials: { accessKeyId: key, secretAccessKey: "unused" },
  });
}

// sesV1Client is the same for SES's v1 API.
function sesV1Client(base, key) {
  return new sesV1.SESClient({
    region: "us-east-1", endpoint: base,
    credentials: { accessKeyId: key, secretAccessKey: "unused" },
  });
}

// describe is what a developer sees of an SDK's error: its text and the
// fields the SDK documents for it.
function describe(sdk, err) {
  const out = { text: String(err?.message ?? err), name: err?.name };
  switch (sdk) {
    case "sendgrid": // ResponseError: message is the status text; toString adds body.errors[].message
      out.text = String(err); out.status = err.code; break;
    case "postmark": // PostmarkError: message from Message, code from ErrorCode
      out.status = err.statusCode; out.code = err.code; break;
    case "mailgun": // MailgunAPIError: details from the body's message
      out.text = String(err.details); out.status = err.status; break;
    case "resend": // the parsed error body: {name, message, statusCode}
    case "resend-5":
      out.status = err.statusCode; break;
    case "mailjet": // message built from ErrorMessage; ErrorMessage copied
    case "mailjet-v3":
      out.status = err.statusCode; out.code = err.ErrorMessage; break;
    case "brevo": // BrevoError: message holds the status and the whole body
      out.status = err.statusCode; break;
    case "brevo-3": // axios's AxiosError (3.0.4 sends with axios): the status in its message, the parsed body in response.data
      out.text = `${err?.message}: ${JSON.stringify(err?.response?.data)}`; out.status = err?.response?.status; break;
    case "ses": // ServiceException: name from x-amzn-ErrorType, message from message
    case "ses-v1": // the same, read from the Query API's XML error
    case "nodemailer-ses": // the SDK's own error, passed on by Nodemailer
      out.status = err.$metadata?.httpStatusCode; out.attempts = err.$metadata?.attempts; break;
  }
  return out;
}

// run sends sc.sends times (a rate or quota scenario uses up the limit
// first) and reports the last send, or the first that failed.
async function run(sc) {
  const t0 = Date.now();
  try {
    for (let i = 0; i < (sc.sends || 1); i++) {
      if (sc.op) {
        await opDrivers[sc.sdk][sc.op](sc.base, sc.key);
        continue;
      }
      const set = sc.batch && sc.template ? batchTemplateDrivers : sc.batch ? batchDrivers : sc.template ? templateDrivers : sc.mime ? mimeDrivers
        : sc.attachment ? attachDrivers : sc.bulk ? bulkDrivers : sc.extras ? extrasDrivers : drivers;
      await set[sc.sdk](sc.base, sc.key, sc.from, sc.to, sc);
    }
    return { id: sc.id, ok: true, ms: Date.now() - t0 };
  } catch (err) {
    return { id: sc.id, ok: false, ms: Date.now() - t0, ...describe(sc.sdk, err) };
  }
}

// Scenarios of one SDK run in order (they share keys and limits); SDKs run
// side by side, so one SDK's retry waits do not add up with another's.
const bySDK = new Map();
for (const sc of plan.scenarios) {
  if (!bySDK.has(sc.sdk)) bySDK.set(sc.sdk, []);
  bySDK.get(sc.sdk).push(sc);
}
await Promise.all([...bySDK.values()].map(async (list) => {
  for (const sc of list) console.log(JSON.stringify(await run(sc)));
}));
