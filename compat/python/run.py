"""The compatibility suite's Python driver: the AWS SDK for Python (boto3),
configured with nothing but the gateway's base URL and a keygate key,
sends the scenarios of the plan that e2e_sdk_test.go writes
(KEYGATE_COMPAT_PLAN) and prints one JSON result per scenario, as
compat/node/run.mjs does.

It runs with Debian's interpreter and python3-boto3 (apt-get install
python3-boto3): the machines this project is tested on reach no Python
package index.
"""

import json
import os
import sys
import time

import boto3
import botocore.exceptions


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
    client.send_email(
        FromEmailAddress=sc["from"],
        Destination={"ToAddresses": sc["to"]},
        Content={"Simple": {"Subject": {"Data": "compat"}, "Body": body}},
    )


DRIVERS = {"boto3": ses}


def describe(err):
    """What a developer sees of the SDK's error: its text, and the fields
    botocore documents for it."""
    out = {"text": str(err), "name": type(err).__name__}
    if isinstance(err, botocore.exceptions.ClientError):
        meta = err.response.get("ResponseMetadata", {})
        out["name"] = err.response.get("Error", {}).get("Code", "")
        out["status"] = meta.get("HTTPStatusCode", 0)
        out["attempts"] = meta.get("RetryAttempts", 0) + 1
    return out


def run(sc):
    """Sends sc["sends"] times (a rate or quota scenario uses up the limit
    first) and reports the last send, or the first that failed."""
    t0 = time.monotonic()
    result = {"id": sc["id"]}
    try:
        for _ in range(sc.get("sends") or 1):
            DRIVERS[sc["sdk"]](sc["base"], sc["key"], sc)
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
        print(json.dumps(run(sc)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
