#!/usr/bin/env python3
"""The demo's `rename` function (process runtime).

Input on stdin: an SQS event whose records each carry an S3 notification.
For every object it names, it moves the object to $TARGET_BUCKET under
coded/<name>.coded<ext> with `mayfly mv`. Objects it cannot move are reported
in `batchItemFailures`, so only their messages are retried.
Logs go to stderr; the result (JSON) to stdout."""
import json
import os
import subprocess
import sys
import urllib.parse

mayfly = os.environ.get("MAYFLY_BIN", "mayfly")
target = os.environ.get("TARGET_BUCKET", "archive")
event = json.load(sys.stdin)

def new_key(key):
    name = key.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return f"coded/{stem}.coded.{ext}" if dot else f"coded/{name}.coded"

failures, moved = [], 0
for record in event.get("Records", []):
    try:
        notification = json.loads(record["body"])
        for s3_record in notification["Records"]:
            bucket = s3_record["s3"]["bucket"]["name"]
            key = urllib.parse.unquote_plus(s3_record["s3"]["object"]["key"])
            done = subprocess.run(
                [mayfly, "mv", f"{bucket}/{key}", f"{target}/{new_key(key)}"],
                capture_output=True, text=True)
            if done.returncode == 4:
                # Already moved by an earlier delivery of the same message.
                print(f"{bucket}/{key} is already gone", file=sys.stderr)
            elif done.returncode != 0:
                raise RuntimeError(done.stderr.strip())
            else:
                moved += 1
                print(f"moved {bucket}/{key} -> {target}/{new_key(key)}", file=sys.stderr)
    except Exception as error:  # report this message as failed; keep the others
        print(f"failed on message {record.get('messageId')}: {error}", file=sys.stderr)
        failures.append({"itemIdentifier": record.get("messageId")})

json.dump({"moved": moved, "batchItemFailures": failures}, sys.stdout)
