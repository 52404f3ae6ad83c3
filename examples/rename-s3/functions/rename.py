"""Moves each object named in an S3 event to another bucket under a new name.

Written for AWS Lambda and run unmodified on Mayfly: boto3 finds its
endpoint, region and credentials in the standard AWS_* variables that the
runtime sets for each invocation.
"""

import os
import urllib.parse

import boto3

s3 = boto3.client("s3")
TARGET_BUCKET = os.environ.get("TARGET_BUCKET", "archive")


def new_name(key):
    """`incoming/scan 1.pdf` becomes `renamed/incoming/scan 1.pdf`."""
    return f"renamed/{key}"


def handler(event, context):
    moved = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        target = new_name(key)
        s3.copy_object(Bucket=TARGET_BUCKET, Key=target, CopySource={"Bucket": bucket, "Key": key})
        s3.delete_object(Bucket=bucket, Key=key)
        moved.append({"from": f"{bucket}/{key}", "to": f"{TARGET_BUCKET}/{target}"})
    return {"moved": moved}
