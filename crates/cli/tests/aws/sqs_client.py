"""Unmodified boto3 against Mayfly's SQS-compatible endpoint (AWS JSON 1.0).

Configured only through the standard variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_CA_BUNDLE, AWS_REGION), as a
Lambda handler's SDK would be; the same endpoint URL serves S3. boto3 checks
every MD5OfBody and MD5OfMessageAttributes it is handed.

Arguments: the key pair of a second token that may only send. The script
first prints `waiting` and long-polls queue `poll`, which the test fills with
`mayfly send` meanwhile; at the end it prints one JSON document of what it saw.
"""
import hashlib
import json
import os
import ssl
import struct
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

sender_key, sender_secret = sys.argv[1], sys.argv[2]
sqs = boto3.client("sqs")
seen = {}


def code(call):
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return None


def attributes_md5(attributes):
    """SQS's MD5 of message attributes, as the Java and Go SDKs check it (boto3 does not)."""
    digest = hashlib.md5()
    for key in sorted(attributes):
        value = attributes[key]
        for part in (key.encode(), value["DataType"].encode()):
            digest.update(struct.pack(">I", len(part)) + part)
        digest.update(b"\x01" + struct.pack(">I", len(value["StringValue"].encode())) + value["StringValue"].encode())
    return digest.hexdigest()


def name(url):
    return url.rsplit("/", 1)[1]


# Long polling: the test sends to `poll` with `mayfly send` while this waits.
poll = sqs.get_queue_url(QueueName="poll")["QueueUrl"]
print("waiting", flush=True)
started = time.monotonic()
polled = sqs.receive_message(QueueUrl=poll, WaitTimeSeconds=10, MessageAttributeNames=["All"])
seen["long_poll_waited"] = time.monotonic() - started
seen["long_poll"] = [(m["Body"], m.get("MessageAttributes")) for m in polled.get("Messages", [])]
for message in polled.get("Messages", []):
    sqs.delete_message(QueueUrl=poll, ReceiptHandle=message["ReceiptHandle"])
started = time.monotonic()
empty = sqs.receive_message(QueueUrl=poll, WaitTimeSeconds=1)
seen["empty_poll"] = [len(empty.get("Messages", [])), time.monotonic() - started]

work = sqs.get_queue_url(QueueName="work")["QueueUrl"]
seen["work_url"] = work
seen["listed"] = sorted(name(url) for url in sqs.list_queues()["QueueUrls"])
seen["listed_prefix"] = sorted(name(url) for url in sqs.list_queues(QueueNamePrefix="retry")["QueueUrls"])

# Send with an attribute and with a delay.
sent = sqs.send_message(
    QueueUrl=work,
    MessageBody="hello",
    MessageAttributes={"colour": {"DataType": "String", "StringValue": "blue"}},
)
seen["sent_id"] = sent["MessageId"]
colour = {"colour": {"DataType": "String", "StringValue": "blue"}}
seen["sent_md5s"] = [
    sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest(),
    sent["MD5OfMessageAttributes"] == attributes_md5(colour),
]
sent_at = time.monotonic()
sqs.send_message(QueueUrl=work, MessageBody="later", DelaySeconds=4)
counts = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
seen["counts_after_send"] = [
    counts["ApproximateNumberOfMessages"],
    counts["ApproximateNumberOfMessagesNotVisible"],
    counts["ApproximateNumberOfMessagesDelayed"],
]
seen["work_visibility"] = counts["VisibilityTimeout"]

# Receive: attributes, receive counts, redelivery after a short visibility timeout.
received = sqs.receive_message(
    QueueUrl=work, MaxNumberOfMessages=10, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
)["Messages"]
first = received[0]
seen["received"] = [m["Body"] for m in received]
seen["received_attribute"] = first["MessageAttributes"]["colour"]["StringValue"]
seen["received_count"] = first["Attributes"]["ApproximateReceiveCount"]
seen["received_md5s"] = [
    first["MD5OfBody"] == hashlib.md5(b"hello").hexdigest(),
    first["MD5OfMessageAttributes"] == attributes_md5(first["MessageAttributes"]),
]
seen["sent_timestamp_is_millis"] = int(first["Attributes"]["SentTimestamp"]) > 1_000_000_000_000
counts = sqs.get_queue_attributes(
    QueueUrl=work,
    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
)["Attributes"]
seen["counts_in_flight"] = [
    counts["ApproximateNumberOfMessages"],
    counts["ApproximateNumberOfMessagesNotVisible"],
    counts["ApproximateNumberOfMessagesDelayed"],
]
sqs.change_message_visibility(QueueUrl=work, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
again = sqs.receive_message(QueueUrl=work, VisibilityTimeout=1, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
time.sleep(1.5)
third = sqs.receive_message(QueueUrl=work, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"][0]
seen["redelivered_counts"] = [again["Attributes"]["ApproximateReceiveCount"], third["Attributes"]["ApproximateReceiveCount"]]
seen["stale_receipt_visibility"] = code(
    lambda: sqs.change_message_visibility(QueueUrl=work, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5)
)
sqs.delete_message(QueueUrl=work, ReceiptHandle=third["ReceiptHandle"])
seen["stale_receipt_delete"] = code(lambda: sqs.delete_message(QueueUrl=work, ReceiptHandle=again["ReceiptHandle"]))
seen["bad_receipt"] = code(lambda: sqs.delete_message(QueueUrl=work, ReceiptHandle="not-a-receipt"))

# Batches.
time.sleep(max(0.0, 4.2 - (time.monotonic() - sent_at)))
batch = sqs.send_message_batch(
    QueueUrl=work,
    Entries=[
        {"Id": "a", "MessageBody": "batch a", "MessageAttributes": {"n": {"DataType": "String", "StringValue": "1"}}},
        {"Id": "b", "MessageBody": "batch b"},
        {"Id": "c", "MessageBody": "batch c", "DelaySeconds": 0},
        {"Id": "bad", "MessageBody": "binary", "MessageAttributes": {"n": {"DataType": "Binary", "BinaryValue": b"1"}}},
    ],
)
seen["batch_sent"] = sorted(entry["Id"] for entry in batch["Successful"])
seen["batch_failed"] = [(entry["Id"], entry["Code"], entry["SenderFault"]) for entry in batch["Failed"]]
seen["duplicate_ids"] = code(
    lambda: sqs.send_message_batch(
        QueueUrl=work, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}]
    )
)
seen["too_many"] = code(
    lambda: sqs.send_message_batch(QueueUrl=work, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(11)])
)
messages = []
for _ in range(5):
    if len(messages) >= 4:
        break
    messages += sqs.receive_message(QueueUrl=work, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
seen["batch_received"] = sorted(m["Body"] for m in messages)
changed = sqs.change_message_visibility_batch(
    QueueUrl=work,
    Entries=[{"Id": "keep", "ReceiptHandle": messages[0]["ReceiptHandle"], "VisibilityTimeout": 60}]
    + [{"Id": "bad", "ReceiptHandle": "7.7.7", "VisibilityTimeout": 60}],
)
seen["visibility_batch"] = [[e["Id"] for e in changed["Successful"]], [(e["Id"], e["Code"]) for e in changed["Failed"]]]
deleted = sqs.delete_message_batch(
    QueueUrl=work,
    Entries=[{"Id": f"m{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    + [{"Id": "bad", "ReceiptHandle": "nonsense"}],
)
seen["delete_batch"] = [len(deleted["Successful"]), [(e["Id"], e["Code"]) for e in deleted["Failed"]]]
counts = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
seen["counts_at_end"] = [counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]]

# Dead letters after max receives (the spec says 2).
retry = sqs.get_queue_url(QueueName="retry")["QueueUrl"]
seen["redrive_policy"] = json.loads(
    sqs.get_queue_attributes(QueueUrl=retry, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
)
sqs.send_message(QueueUrl=retry, MessageBody="poison")
receives = []
for _ in range(3):
    got = sqs.receive_message(QueueUrl=retry, VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    receives.append([m["Attributes"]["ApproximateReceiveCount"] for m in got.get("Messages", [])])
seen["retry_receives"] = receives
dlq = sqs.get_queue_url(QueueName="retry-dlq")["QueueUrl"]
seen["dead_lettered"] = [m["Body"] for m in sqs.receive_message(QueueUrl=dlq).get("Messages", [])]

# Refusals.
seen["unknown_queue"] = code(lambda: sqs.get_queue_url(QueueName="nope"))
try:
    sqs.receive_message(QueueUrl=work.replace("/work", "/nope"))
    seen["unknown_queue_modeled"] = False
except sqs.exceptions.QueueDoesNotExist:
    seen["unknown_queue_modeled"] = True
seen["bad_max"] = code(lambda: sqs.receive_message(QueueUrl=work, MaxNumberOfMessages=11))
# PurgeQueue deletes every message, in flight and delayed included.
purged = sqs.get_queue_url(QueueName="purged")["QueueUrl"]
sqs.send_message_batch(
    QueueUrl=purged,
    Entries=[
        {"Id": "visible", "MessageBody": "visible"},
        {"Id": "leased", "MessageBody": "leased"},
        {"Id": "delayed", "MessageBody": "delayed", "DelaySeconds": 60},
    ],
)
leased = sqs.receive_message(QueueUrl=purged, MaxNumberOfMessages=1)["Messages"]
names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
counts = sqs.get_queue_attributes(QueueUrl=purged, AttributeNames=names)["Attributes"]
seen["before_purge"] = [counts[name] for name in names]
sqs.purge_queue(QueueUrl=purged)
counts = sqs.get_queue_attributes(QueueUrl=purged, AttributeNames=names)["Attributes"]
seen["after_purge"] = [counts[name] for name in names]
seen["purged_receipt"] = code(lambda: sqs.delete_message(QueueUrl=purged, ReceiptHandle=leased[0]["ReceiptHandle"]))
seen["purged_receive"] = len(sqs.receive_message(QueueUrl=purged, MaxNumberOfMessages=10).get("Messages", []))
sqs.send_message(QueueUrl=purged, MessageBody="kept")
seen["purge_unknown"] = code(lambda: sqs.purge_queue(QueueUrl=purged.replace("/purged", "/nope")))
seen["create"] = code(lambda: sqs.create_queue(QueueName="new"))
sender = boto3.client("sqs", aws_access_key_id=sender_key, aws_secret_access_key=sender_secret)
sender.send_message(QueueUrl=work, MessageBody="from the sender")
seen["sender_receive"] = code(lambda: sender.receive_message(QueueUrl=work))
seen["sender_purge"] = code(lambda: sender.purge_queue(QueueUrl=purged))
wrong = boto3.client("sqs", aws_access_key_id=sender_key, aws_secret_access_key="0" * 40)
seen["wrong_secret"] = code(lambda: wrong.send_message(QueueUrl=work, MessageBody="never"))


def raw(signed_body, sent_body, service="sqs", sign=True):
    """POST a SendMessage signed by botocore's own SigV4 signer, then send
    `sent_body` (which may differ from what was signed): (status, error code)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"] + "/"
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessage"}
    request = AWSRequest(method="POST", url=endpoint, data=signed_body, headers=headers)
    if sign:
        SigV4Auth(boto3.Session().get_credentials(), service, "us-east-1").add_auth(request)
    sent = urllib.request.Request(endpoint, data=sent_body, headers=dict(request.headers.items()), method="POST")
    context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
    try:
        with urllib.request.urlopen(sent, context=context) as response:
            return [response.status, None]
    except urllib.error.HTTPError as error:
        return [error.code, error.headers.get("x-amzn-query-error")]


signed = json.dumps({"QueueUrl": work, "MessageBody": "signed by hand"}).encode()
seen["raw_signed"] = raw(signed, signed)
seen["tampered_body"] = raw(signed, signed.replace(b"by hand", b"forged!"))
seen["s3_scope"] = raw(signed, signed, service="s3")
seen["unsigned"] = raw(signed, signed, sign=False)
counts = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
seen["after_refusals"] = counts["ApproximateNumberOfMessages"]

# For the test to read with `mayfly receive`: a real Mayfly message.
sqs.send_message(
    QueueUrl=sqs.get_queue_url(QueueName="left")["QueueUrl"],
    MessageBody='{"for": "rust"}',
    MessageAttributes={"source": {"DataType": "String", "StringValue": "boto3"}},
)

# S3 on the same endpoint URL.
seen["s3_buckets"] = [bucket["Name"] for bucket in boto3.client("s3").list_buckets()["Buckets"]]

print(json.dumps(seen))
