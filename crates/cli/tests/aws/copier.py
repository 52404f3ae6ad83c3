"""A job's function that reaches Mayfly's buckets with unmodified boto3: it
reads its item's object from `scans` and writes it to `copies` under
`copied/`. It may read `scans` and write `copies`, nothing else, and tries
to write to `other` too, answering what S3 said. Endpoint, region and
credentials come only from the AWS_* variables its worker sets. Run as a
`process` function (the event on stdin, the answer on stdout) or as a
`lambda` handler (`copier.handler`, through awslambdaric)."""

import json
import os
import sys

import boto3
import botocore.exceptions


def handler(event, context):
    key = event["item"]
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket="scans", Key=key)["Body"].read()
    s3.put_object(Bucket="copies", Key="copied/" + key, Body=body)
    try:
        s3.put_object(Bucket="other", Key=key, Body=b"should never land")
        trespass = "allowed"
    except botocore.exceptions.ClientError as error:
        trespass = error.response["Error"]["Code"]
    return {
        "copied": key,
        "bytes": len(body),
        "trespass": trespass,
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "ca_bundle": os.environ["AWS_CA_BUNDLE"],
    }


if __name__ == "__main__":
    json.dump(handler(json.load(sys.stdin), None), sys.stdout)
