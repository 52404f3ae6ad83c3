"""Unmodified boto3 against Mayfly's S3-compatible endpoint.

Configured only through the standard variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_CA_BUNDLE, AWS_REGION), as a
Lambda handler's SDK would be. Arguments: the key pair of a second token,
limited to bucket `other`. Prints one JSON document of what it saw.
"""
import json
import os
import sys
import urllib.error
import urllib.request
import ssl

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

limited_key, limited_secret = sys.argv[1], sys.argv[2]
path_style = Config(s3={"addressing_style": "path"})
s3 = boto3.client("s3", config=path_style)
seen = {}


def code(call):
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return None


seen["buckets"] = sorted(bucket["Name"] for bucket in s3.list_buckets()["Buckets"])
s3.head_bucket(Bucket="inbox")
body = b"chart of patient 0042\n" * 100
key = "charts/sp ace #1?.txt"
put = s3.put_object(Bucket="inbox", Key=key, Body=body)
seen["put_etag"] = put["ETag"]
head = s3.head_object(Bucket="inbox", Key=key)
seen["head_size"] = head["ContentLength"]
seen["get_matches"] = s3.get_object(Bucket="inbox", Key=key)["Body"].read() == body
ranged = s3.get_object(Bucket="inbox", Key=key, Range="bytes=6-15")
seen["range"] = ranged["Body"].read().decode()
seen["content_range"] = ranged["ContentRange"]
seen["missing"] = code(lambda: s3.get_object(Bucket="inbox", Key="charts/none.txt"))
seen["no_bucket"] = code(lambda: s3.head_bucket(Bucket="nonesuch"))

for number in range(5):
    s3.put_object(Bucket="inbox", Key=f"batch/{number}.txt", Body=f"item {number}".encode())
s3.put_object(Bucket="inbox", Key="batch/deeper/x.txt", Body=b"x")
listing = s3.list_objects_v2(Bucket="inbox", Prefix="batch/", Delimiter="/")
seen["listed"] = [item["Key"] for item in listing.get("Contents", [])]
seen["prefixes"] = [prefix["Prefix"] for prefix in listing.get("CommonPrefixes", [])]
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="inbox", Prefix="batch/", PaginationConfig={"PageSize": 2})
seen["paged"] = [[item["Key"] for item in page.get("Contents", [])] for page in pages]
seen["after"] = [item["Key"] for item in s3.list_objects_v2(Bucket="inbox", StartAfter="batch/3.txt")["Contents"]]

s3.copy_object(Bucket="archive", Key="renamed/chart.txt", CopySource={"Bucket": "inbox", "Key": key})
s3.delete_object(Bucket="inbox", Key=key)
seen["moved"] = s3.get_object(Bucket="archive", Key="renamed/chart.txt")["Body"].read() == body
seen["original_gone"] = code(lambda: s3.head_object(Bucket="inbox", Key=key))
deleted = s3.delete_objects(Bucket="inbox", Delete={"Objects": [{"Key": f"batch/{n}.txt"} for n in range(2)]})
seen["deleted"] = sorted(item["Key"] for item in deleted.get("Deleted", []))

context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
url = s3.generate_presigned_url("get_object", Params={"Bucket": "inbox", "Key": "batch/4.txt"}, ExpiresIn=60)
seen["presigned"] = urllib.request.urlopen(url, context=context).read().decode()
# botocore presigns with SigV2 by default (the GET above); this PUT is SigV4.
v4 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
upload = v4.generate_presigned_url("put_object", Params={"Bucket": "inbox", "Key": "presigned/up.txt"}, ExpiresIn=60)
try:
    urllib.request.urlopen(urllib.request.Request(upload, data=b"uploaded", method="PUT"), context=context).read()
    seen["presigned_put"] = s3.get_object(Bucket="inbox", Key="presigned/up.txt")["Body"].read().decode()
except urllib.error.HTTPError as error:
    seen["presigned_put"] = f"{error.code}: {error.read().decode()}"
tampered = url.replace("batch/4.txt", "batch/3.txt")
try:
    urllib.request.urlopen(tampered, context=context)
    seen["tampered"] = 200
except urllib.error.HTTPError as error:
    seen["tampered"] = error.code
try:
    urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"] + "/inbox/batch/4.txt", context=context)
    seen["unsigned"] = 200
except urllib.error.HTTPError as error:
    seen["unsigned"] = error.code

wrong = boto3.client(
    "s3", config=path_style, aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="0" * 40
)
seen["wrong_secret"] = code(lambda: wrong.list_objects_v2(Bucket="inbox"))
unknown = boto3.client(
    "s3", config=path_style, aws_access_key_id="MF0000000000000000", aws_secret_access_key="0" * 40
)
seen["unknown_key"] = code(lambda: unknown.list_objects_v2(Bucket="inbox"))
limited = boto3.client("s3", config=path_style, aws_access_key_id=limited_key, aws_secret_access_key=limited_secret)
seen["limited_buckets"] = [bucket["Name"] for bucket in limited.list_buckets()["Buckets"]]
seen["limited_other_bucket"] = code(lambda: limited.get_object(Bucket="inbox", Key="batch/4.txt"))
seen["limited_write"] = code(lambda: limited.put_object(Bucket="other", Key="x.txt", Body=b"x"))
json.dump(seen, sys.stdout)
