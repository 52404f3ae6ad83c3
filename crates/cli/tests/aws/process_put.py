"""A `process`-runtime handler (event on stdin, result on stdout) that
writes with boto3: in a container, it reaches the AWS endpoint only because
its function declares `permissions`."""

import json
import sys

import boto3

event = json.load(sys.stdin)
key = event["Records"][0]["s3"]["object"]["key"]
boto3.client("s3").put_object(Bucket="drop", Key="out/process.txt", Body=("written for " + key).encode())
print(json.dumps({"wrote": "drop/out/process.txt"}))
