"""A Lambda handler that writes outside its permissions: it may write only to
bucket `drop`, and tries bucket `other` first. It records what S3 answered
in `drop/out/<key>`, the one place it may write."""

import boto3
import botocore.exceptions

s3 = boto3.client("s3")


def handler(event, context):
    key = event["Records"][0]["s3"]["object"]["key"]
    try:
        s3.put_object(Bucket="other", Key="stolen.txt", Body=b"should never land")
        answer = "allowed"
    except botocore.exceptions.ClientError as error:
        answer = error.response["Error"]["Code"]
    s3.put_object(Bucket="drop", Key="out/" + key.split("/")[-1], Body=answer.encode())
    return {"answer": answer}
