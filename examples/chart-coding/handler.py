"""The chart coder as an unmodified AWS-Lambda-style handler (`lambda` runtime:
`python3 -m awslambdaric handler.handler`).

Events it takes:
- a chart: {"bucket": …, "key": …, "body": "<chart text>"};
- a Mayfly job item: {"job", "run", "item", "attempt", "payload"} where the
  payload is a chart as above, or a bucket source's {"bucket", "key", "size"}
  (the chart is then read with `mayfly get BUCKET/KEY -`; $MAYFLY_BIN names
  the binary, default `mayfly`), or an S3 event notification of one object,
  {"Records": [{"s3": {"bucket": {"name"}, "object": {"key"}}}]}, as a route
  puts on a queue (the key URL-encoded, as S3 writes it); it is read the same
  way.

It returns the coding (codes with evidence and offsets, dropped mentions with
their reasons) with the chart's bucket and key. The ICD-10-CM index is built
once per process, at the first event, and stays warm."""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import unquote_plus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from coder import code_chart  # noqa: E402


class ChartEventError(ValueError):
    """The event names no chart the handler can read."""


def chart_from_event(event: dict) -> tuple[str, str | None, str | None]:
    """(chart text, bucket, key) from either event shape."""
    if not isinstance(event, dict):
        raise ChartEventError(f"the event is a {type(event).__name__}, not an object; send {{\"body\": \"<chart text>\"}} or a job item")
    chart = event.get("payload", event) if "payload" in event else event
    if isinstance(chart, str):
        return chart, None, None
    if not isinstance(chart, dict):
        raise ChartEventError("the job item's payload is neither a chart text nor an object")
    if "Records" in chart:
        chart = object_of_notification(chart["Records"])
    bucket, key = chart.get("bucket"), chart.get("key")
    if isinstance(chart.get("body"), str):
        return chart["body"], bucket, key
    if bucket and key:
        return read_object(bucket, key), bucket, key
    raise ChartEventError('the event has no "body" and no "bucket" and "key" to read the chart from')


def object_of_notification(records) -> dict:
    """{"bucket", "key"} of an S3 event notification's one object."""
    if not isinstance(records, list) or len(records) != 1:
        count = len(records) if isinstance(records, list) else "no list of"
        raise ChartEventError(f"the S3 event notification has {count} records; the handler codes one chart per event, so route one object per message")
    try:
        s3 = records[0]["s3"]
        return {"bucket": s3["bucket"]["name"], "key": unquote_plus(s3["object"]["key"])}
    except (KeyError, TypeError) as error:
        raise ChartEventError(f"the S3 event notification's record has no s3.bucket.name and s3.object.key ({error!r} missing)") from error


def read_object(bucket: str, key: str) -> str:
    mayfly = os.environ.get("MAYFLY_BIN", "mayfly")
    try:
        done = subprocess.run([mayfly, "get", f"{bucket}/{key}", "-"], capture_output=True)
    except OSError as error:
        raise ChartEventError(f"could not run `{mayfly} get` to read {bucket}/{key}: {error}; set MAYFLY_BIN or send the chart in \"body\"") from error
    if done.returncode != 0:
        raise ChartEventError(f"could not read {bucket}/{key} with `{mayfly} get`: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8", errors="replace")


def handler(event, context):
    text, bucket, key = chart_from_event(event)
    coding = code_chart(text)
    result = {"bucket": bucket, "key": key}
    if isinstance(event, dict) and "item" in event:
        result["item"] = event["item"]
    result.update(coding)
    return result
