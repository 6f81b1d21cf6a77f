"""The compatibility suite's Python driver: the AWS SDK for Python (boto3),
its SES v2 and v1 clients, and Django-Anymail, the email backend through
which Django applications send with SendGrid, Postmark, Mailgun, Mailjet,
Brevo (Sendinblue) and Amazon SES (its v1 API), each
configured with nothing but the gateway's base URL and a keygate key, send
the scenarios of the plan that e2e_sdk_test.go writes (KEYGATE_COMPAT_PLAN)
and print one JSON result per scenario, as compat/node/run.mjs does.

It runs with Debian's interpreter, python3-boto3 and python3-django-anymail
(apt-get install python3-boto3 python3-django-anymail): the machines this
project is tested on reach no Python package index.
"""

import base64
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import boto3
import botocore.exceptions
import django
from django.conf import settings

settings.configure()  # Anymail needs Django set up; every setting is per send here
django.setup()

from anymail.exceptions import AnymailAPIError  # noqa: E402 (after Django is set up)
from django.core.mail import EmailMultiAlternatives, get_connection  # noqa: E402


def ses(base, key, sc):
    # The key is the access key id; keygate never sees or checks the
    # secret access key, so any value will do.
    client = boto3.client(
        "sesv2",
        region_name="us-east-1",
        endpoint_url=base,
        aws_access_key_id=key,
        aws_secret_access_key="unused",
    )
    body = {"Text": {"Data": "hello"}}
    if sc.get("html"):
        body["Html"] = {"Data": sc["html"]}
    extras = {}
    if sc.get("extras"):
        # Debian's botocore (1.29) predates Simple.Headers.
        extras = {"ReplyToAddresses": REPLY_TO, "EmailTags": [{"Name": "category", "Value": "order"}],
                  "ConfigurationSetName": "tracking",
                  "ListManagementOptions": {"ContactListName": "customers", "TopicName": "orders"}}
    if sc.get("batch"):
        # A message per recipient on a stored template: SendBulkEmail.
        client.send_bulk_email(
            FromEmailAddress=sc["from"],
            DefaultContent={"Template": {"TemplateName": "compat", "TemplateData": "{}"}},
            BulkEmailEntries=[{"Destination": {"ToAddresses": [a]}} for a in sc["to"]])
        return
    content = {"Simple": {"Subject": {"Data": "compat"}, "Body": body}}
    if sc.get("template"):
        content = {"Template": {"TemplateName": "compat", "TemplateData": '{"name": "Ann"}'}}
    elif sc.get("mime") or sc.get("attachment"):
        # Content.Raw: MIME the application built, as for v1's SendRawEmail.
        content = {"Raw": {"Data": mime(sc)}}
    client.send_email(
        FromEmailAddress=sc["from"],
        Destination={"ToAddresses": sc["to"]},
        Content=content,
        **extras,
    )


# What an application adds beside the addresses (an extras scenario): the
# headers of a one-click unsubscribe and a reference, and reply-to
# addresses.
HEADERS = {"List-Unsubscribe": "<mailto:unsubscribe@shop.example?subject=unsubscribe>, <https://shop.example/u/42>",
           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Entity-Ref-ID": "order-42"}
REPLY_TO = ["support@shop.example", "Order Desk <orders-desk@help.example>"]


def ses_v1(sc, plan):
    """SES's v1 API (the Query API), which most SES senders still use:
    boto3.client("ses"), as django-ses and many scripts send."""
    client = boto3.client(
        "ses",
        region_name="us-east-1",
        endpoint_url=sc["base"],
        aws_access_key_id=sc["key"],
        aws_secret_access_key="unused",
    )
    frm, to = sc["from"], sc["to"]
    if sc.get("batch"):
        client.send_bulk_templated_email(
            Source=frm, Template="compat", DefaultTemplateData="{}",
            Destinations=[{"Destination": {"ToAddresses": [a]}} for a in to])
    elif sc.get("template"):
        client.send_templated_email(
            Source=frm, Destination={"ToAddresses": to}, Template="compat", TemplateData='{"name": "Ann"}')
    elif sc.get("mime") or sc.get("attachment"):
        # SES's v1 API takes an attachment only in raw MIME the
        # application builds.
        client.send_raw_email(Source=frm, Destinations=to, RawMessage={"Data": mime(sc)})
    else:
        body = {"Text": {"Data": "hello"}}
        if sc.get("html"):
            body["Html"] = {"Data": sc["html"]}
        extras = {}
        if sc.get("extras"):
            extras = {"ReplyToAddresses": REPLY_TO, "Tags": [{"Name": "category", "Value": "order"}],
                      "ConfigurationSetName": "tracking"}
        client.send_email(Source=frm, Destination={"ToAddresses": to},
                          Message={"Subject": {"Data": "compat"}, "Body": body}, **extras)


def mime(sc):
    """A scenario's message as MIME the application builds, with its
    attachments (an attachment scenario)."""
    msg = MIMEMultipart()
    msg["From"], msg["To"], msg["Subject"] = sc["from"], ", ".join(sc["to"]), sc.get("subject") or "compat"
    msg.attach(MIMEText("hello"))
    if sc.get("attachment"):
        for name, data, ctype, cid in files(sc):
            part = MIMEApplication(data, ctype.split("/", 1)[1])
            part.add_header("Content-Disposition", "inline" if cid else "attachment", filename=name)
            if cid:
                part["Content-ID"] = "<%s>" % cid
            msg.attach(part)
    return msg.as_bytes()


# Anymail's backend for each provider, and the settings that point it at the
# gateway: the API URL (its default is the provider's) and the key where the
# provider's key goes.
ANYMAIL = {
    "anymail-sendgrid": ("sendgrid", lambda base, key: {"api_url": base + "/v3/", "api_key": key}),
    "anymail-postmark": ("postmark", lambda base, key: {"api_url": base + "/", "server_token": key}),
    "anymail-mailgun": ("mailgun", lambda base, key: {"api_url": base + "/v3/", "api_key": key}),
    "anymail-mailjet": ("mailjet", lambda base, key: {"api_url": base + "/v3.1/", "api_key": key, "secret_key": "unused"}),
    "anymail-brevo": ("sendinblue", lambda base, key: {"api_url": base + "/v3/", "api_key": key}),
    # Anymail 9's amazon_ses backend sends with boto3's SES v1 client.
    "anymail-amazon-ses": ("amazon_ses", lambda base, key: {"client_params": {
        "endpoint_url": base, "region_name": "us-east-1", "aws_access_key_id": key, "aws_secret_access_key": "unused"}}),
}


# A field of each provider's that Anymail has no feature for, given as
# esp_extra.
ESP_EXTRA = {
    "sendgrid": {"ip_pool_name": "transactional"},
    "postmark": {"MessageStream": "outbound"},
    "mailgun": {"o:require-tls": "yes"},
    "mailjet": {"SandboxMode": False},
    "sendinblue": {"batchId": "5c6cfa04-eed9-42c2-8b5c-6d470d978e9d"},
    "amazon_ses": {"ConfigurationSetName": "tracking"},
}


def invoice():
    """A 60 KB binary attachment, the same in every run."""
    out, x = bytearray(60 << 10), 1
    for i in range(len(out)):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = x >> 24
    return bytes(out)


def files(sc):
    """A scenario's attachments (name, bytes, type, content id), or the invoice."""
    if "files" not in sc:
        return [("invoice.pdf", invoice(), "application/pdf", "")]
    return [(f["name"], base64.b64decode(f["content"]), f["type"], f.get("cid", "")) for f in sc["files"]]


def anymail(sc, plan):
    esp, conf = ANYMAIL[sc["sdk"]]
    options = conf(sc["base"], sc["key"])
    if esp == "mailgun":
        # Otherwise the domain of the From address, which is not the
        # sending domain here.
        options["sender_domain"] = plan["mailgunDomain"]
    if sc.get("extras"):
        # What a backend has no field for (Mailjet's send time, SES v1's
        # tracking) is dropped, as applications that send through several
        # providers configure Anymail to.
        options["ignore_unsupported_features"] = True
    conn = get_connection("anymail.backends.%s.EmailBackend" % esp, **options)
    msg = EmailMultiAlternatives(sc.get("subject") or "compat", "hello", sc["from"], sc["to"], connection=conn)
    if sc.get("html"):
        msg.attach_alternative(sc["html"], "text/html")
    if sc.get("batch"):
        # Anymail's batch send: a message per recipient, in one request
        # where the provider has one.
        msg.merge_data = {to: {"name": "Ann"} for to in sc["to"]}
    if sc.get("bcc"):
        # Given once for the whole batch: Anymail's Mailgun backend sends it
        # beside recipient-variables, and Mailgun copies each message to it.
        msg.bcc = sc["bcc"]
    if sc.get("attachment"):
        for name, data, ctype, cid in files(sc):
            if cid:
                # Anymail's inline image: a MIME part with a Content-ID.
                img = MIMEImage(data, ctype.split("/", 1)[1])
                img.add_header("Content-Disposition", "inline", filename=name)
                img["Content-ID"] = "<%s>" % cid
                msg.attach(img)
            else:
                msg.attach(name, data, ctype)
    if sc.get("extras"):
        # Anymail's provider-neutral features, each sent in the provider's
        # own fields.
        msg.extra_headers = dict(HEADERS)
        msg.reply_to = REPLY_TO
        msg.tags = ["order"]
        msg.metadata = {"order_id": "42"}
        msg.track_opens = msg.track_clicks = True
        msg.send_at = datetime.now(timezone.utc) + timedelta(hours=1)
        # And a provider's own field, which Anymail merges into its payload.
        msg.esp_extra = ESP_EXTRA[esp]
    if sc.get("template"):
        # A template stored at the provider; the ids are the providers' forms.
        msg.template_id = {"mailjet": 7, "sendinblue": 7, "sendgrid": "d-compat"}.get(esp, "compat")
        msg.merge_global_data = {"name": "Ann"}
        if esp == "amazon_ses":
            msg.subject = msg.body = ""  # SES's templates hold both, and may not be overridden
        if not sc["from"]:
            # Sent as the template's stored sender: Anymail leaves the
            # message's out when from_email is None.
            msg.from_email = None
    msg.send()


DRIVERS = {"boto3": lambda sc, plan: ses(sc["base"], sc["key"], sc), "boto3-ses": ses_v1}
DRIVERS.update({name: anymail for name in ANYMAIL})


def describe(err):
    """What a developer sees of the SDK's error: its text, and the fields
    botocore documents for it."""
    out = {"text": str(err), "name": type(err).__name__}
    if isinstance(err, AnymailAPIError):
        out["status"] = err.status_code or 0
        if isinstance(err.__cause__, botocore.exceptions.ClientError):
            # Anymail's SES backend raises from boto3's error.
            meta = err.__cause__.response.get("ResponseMetadata", {})
            out["status"] = meta.get("HTTPStatusCode", 0)
            out["attempts"] = meta.get("RetryAttempts", 0) + 1
    if isinstance(err, botocore.exceptions.ClientError):
        meta = err.response.get("ResponseMetadata", {})
        out["name"] = err.response.get("Error", {}).get("Code", "")
        out["status"] = meta.get("HTTPStatusCode", 0)
        out["attempts"] = meta.get("RetryAttempts", 0) + 1
    return out


def run(sc, plan):
    """Sends sc["sends"] times (a rate or quota scenario uses up the limit
    first) and reports the last send, or the first that failed."""
    t0 = time.monotonic()
    result = {"id": sc["id"]}
    try:
        for _ in range(sc.get("sends") or 1):
            DRIVERS[sc["sdk"]](sc, plan)
        result["ok"] = True
    except Exception as err:  # every failure is a result, as in run.mjs
        result["ok"] = False
        result.update(describe(err))
    result["ms"] = int((time.monotonic() - t0) * 1000)
    return result


def main():
    with open(os.environ["KEYGATE_COMPAT_PLAN"]) as f:
        plan = json.load(f)
    for sc in plan["scenarios"]:
        print(json.dumps(run(sc, plan)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
