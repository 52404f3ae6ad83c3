"""Unmodified boto3 against Mayfly's S3-compatible endpoint.

Configured only through the standard variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_CA_BUNDLE, AWS_REGION), as a
Lambda handler's SDK would be. Arguments: the key pair of a second token,
limited to bucket `other`, and a marker that the multipart uploads and the
metadata carry (the test then looks for it on disk). Prints one JSON
document of what it saw.
"""
import json
import os
import sys
import urllib.error
import urllib.request
import ssl
import tempfile
from datetime import timedelta

import boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

limited_key, limited_secret, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
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
# --- multipart uploads ---------------------------------------------------------
MIB = 1024 * 1024
big = (marker * (12 * MIB // len(marker) + 10))[: 12 * MIB + 123]
with tempfile.NamedTemporaryFile() as file:
    file.write(big)
    file.flush()
    small_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_file(
        file.name, "inbox", "big/upload.bin", Config=small_parts,
        ExtraArgs={"ContentType": "application/x-chart", "Metadata": {"patient": marker.decode()}},
    )
seen["upload_file_matches"] = s3.get_object(Bucket="inbox", Key="big/upload.bin")["Body"].read() == big
head = s3.head_object(Bucket="inbox", Key="big/upload.bin")
seen["upload_file_head"] = [head["ContentLength"], head["ContentType"], head["Metadata"] == {"patient": marker.decode()}]

first = (marker * (5 * MIB // len(marker) + 1))[: 5 * MIB]
created = s3.create_multipart_upload(Bucket="inbox", Key="big/direct.bin", ContentType="text/plain", Metadata={"ward": "7"})
upload_id = created["UploadId"]
part1 = s3.upload_part(Bucket="inbox", Key="big/direct.bin", UploadId=upload_id, PartNumber=1, Body=first)
part2 = s3.upload_part(Bucket="inbox", Key="big/direct.bin", UploadId=upload_id, PartNumber=2, Body=b"tail")
seen["uploads_listed"] = [upload["Key"] for upload in s3.list_multipart_uploads(Bucket="inbox").get("Uploads", [])]
listed = s3.list_parts(Bucket="inbox", Key="big/direct.bin", UploadId=upload_id)
seen["parts_listed"] = [[part["PartNumber"], part["Size"], part["ETag"] == part1["ETag"]] for part in listed["Parts"]]


def complete(key, upload, parts):
    return s3.complete_multipart_upload(
        Bucket="inbox", Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]},
    )


seen["invalid_part"] = code(lambda: complete("big/direct.bin", upload_id, [(1, part1["ETag"]), (2, '"0123"')]))
seen["part_order"] = code(lambda: complete("big/direct.bin", upload_id, [(2, part2["ETag"]), (1, part1["ETag"])]))
seen["bad_part_number"] = code(
    lambda: s3.upload_part(Bucket="inbox", Key="big/direct.bin", UploadId=upload_id, PartNumber=10001, Body=b"x")
)
seen["no_such_upload"] = code(
    lambda: s3.upload_part(Bucket="inbox", Key="big/direct.bin", UploadId="0" * 32, PartNumber=1, Body=b"x")
)
complete("big/direct.bin", upload_id, [(1, part1["ETag"]), (2, part2["ETag"])])
direct = s3.get_object(Bucket="inbox", Key="big/direct.bin")
seen["direct_matches"] = direct["Body"].read() == first + b"tail"
seen["direct_metadata"] = [direct["ContentType"], direct["Metadata"]]
seen["completed_twice"] = code(lambda: complete("big/direct.bin", upload_id, [(1, part1["ETag"]), (2, part2["ETag"])]))

small = s3.create_multipart_upload(Bucket="inbox", Key="big/small.bin")["UploadId"]
tiny1 = s3.upload_part(Bucket="inbox", Key="big/small.bin", UploadId=small, PartNumber=1, Body=b"a" * 1024)
tiny2 = s3.upload_part(Bucket="inbox", Key="big/small.bin", UploadId=small, PartNumber=2, Body=b"b")
seen["too_small"] = code(lambda: complete("big/small.bin", small, [(1, tiny1["ETag"]), (2, tiny2["ETag"])]))
s3.abort_multipart_upload(Bucket="inbox", Key="big/small.bin", UploadId=small)
seen["aborted"] = code(lambda: s3.list_parts(Bucket="inbox", Key="big/small.bin", UploadId=small))
seen["aborted_object"] = code(lambda: s3.head_object(Bucket="inbox", Key="big/small.bin"))

copied = s3.create_multipart_upload(Bucket="archive", Key="copied.bin")["UploadId"]
copy1 = s3.upload_part_copy(
    Bucket="archive", Key="copied.bin", UploadId=copied, PartNumber=1,
    CopySource={"Bucket": "inbox", "Key": "big/upload.bin"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}",
)
copy2 = s3.upload_part_copy(
    Bucket="archive", Key="copied.bin", UploadId=copied, PartNumber=2,
    CopySource={"Bucket": "inbox", "Key": "big/direct.bin"}, CopySourceRange=f"bytes={5 * MIB}-{5 * MIB + 3}",
)
s3.complete_multipart_upload(
    Bucket="archive", Key="copied.bin", UploadId=copied,
    MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": copy1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": copy2["CopyPartResult"]["ETag"]},
    ]},
)
seen["part_copy_matches"] = s3.get_object(Bucket="archive", Key="copied.bin")["Body"].read() == big[: 5 * MIB] + b"tail"

# Left in progress: its part stays staged on disk, where the test looks for the marker.
pending = s3.create_multipart_upload(Bucket="inbox", Key="big/pending.bin", Metadata={"note": marker.decode()})
s3.upload_part(Bucket="inbox", Key="big/pending.bin", UploadId=pending["UploadId"], PartNumber=1, Body=first)

# --- metadata and conditional requests -----------------------------------------
s3.put_object(
    Bucket="inbox", Key="meta/chart.json", Body=b"{}", ContentType="application/json",
    Metadata={"patient-id": marker.decode(), "ward": "7"},
)
head = s3.head_object(Bucket="inbox", Key="meta/chart.json")
got = s3.get_object(Bucket="inbox", Key="meta/chart.json")
seen["metadata_head"] = [head["ContentType"], head["Metadata"] == {"patient-id": marker.decode(), "ward": "7"}]
seen["metadata_get"] = [got["ContentType"], got["Metadata"] == head["Metadata"]]
s3.copy_object(Bucket="inbox", Key="meta/copy.json", CopySource={"Bucket": "inbox", "Key": "meta/chart.json"})
seen["metadata_copied"] = s3.head_object(Bucket="inbox", Key="meta/copy.json")["Metadata"] == head["Metadata"]
s3.copy_object(
    Bucket="inbox", Key="meta/replaced.json", CopySource={"Bucket": "inbox", "Key": "meta/chart.json"},
    MetadataDirective="REPLACE", ContentType="text/plain", Metadata={"ward": "9"},
)
replaced = s3.head_object(Bucket="inbox", Key="meta/replaced.json")
seen["metadata_replaced"] = [replaced["ContentType"], replaced["Metadata"]]
s3.put_object(Bucket="inbox", Key="meta/chart.json", Body=b"[]")
plain = s3.head_object(Bucket="inbox", Key="meta/chart.json")
seen["metadata_overwritten"] = [plain["ContentType"], plain.get("Metadata", {})]

etag, modified = plain["ETag"], plain["LastModified"]
day = timedelta(days=1)
seen["if_none_match"] = code(lambda: s3.get_object(Bucket="inbox", Key="meta/chart.json", IfNoneMatch=etag))
seen["if_none_match_other"] = s3.get_object(Bucket="inbox", Key="meta/chart.json", IfNoneMatch='"other"')["Body"].read().decode()
seen["if_match"] = s3.get_object(Bucket="inbox", Key="meta/chart.json", IfMatch=etag)["Body"].read().decode()
seen["if_match_other"] = code(lambda: s3.get_object(Bucket="inbox", Key="meta/chart.json", IfMatch='"other"'))
seen["head_if_match_other"] = code(lambda: s3.head_object(Bucket="inbox", Key="meta/chart.json", IfMatch='"other"'))
seen["if_modified_since"] = code(lambda: s3.head_object(Bucket="inbox", Key="meta/chart.json", IfModifiedSince=modified))
seen["if_modified_since_earlier"] = s3.get_object(
    Bucket="inbox", Key="meta/chart.json", IfModifiedSince=modified - day
)["Body"].read().decode()
seen["if_unmodified_since"] = code(
    lambda: s3.get_object(Bucket="inbox", Key="meta/chart.json", IfUnmodifiedSince=modified - day)
)
seen["if_unmodified_since_later"] = s3.get_object(
    Bucket="inbox", Key="meta/chart.json", IfUnmodifiedSince=modified + day
)["Body"].read().decode()
json.dump(seen, sys.stdout)
