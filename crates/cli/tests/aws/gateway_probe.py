"""A Lambda handler that looks at what its container reaches on the function
network's gateway: it reads a list of ports from the object that triggered
it, tries a TCP connection to each on the gateway (and to its Runtime API's
and AWS endpoint's own ports), and writes what answered to
`drop/out/probe.json`."""

import json
import os
import socket
import urllib.parse

import boto3

s3 = boto3.client("s3")


def answers(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def handler(event, context):
    record = event["Records"][0]["s3"]
    key = urllib.parse.unquote_plus(record["object"]["key"])
    ports = json.loads(s3.get_object(Bucket=record["bucket"]["name"], Key=key)["Body"].read())
    gateway, runtime_api_port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
    seen = {
        "gateway": gateway,
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "ca_bundle": os.environ.get("AWS_CA_BUNDLE"),
        "runtime_api": answers(gateway, int(runtime_api_port)),
        "aws_endpoint": endpoint.hostname == gateway and answers(gateway, endpoint.port),
        "other_ports": {str(port): answers(gateway, port) for port in ports},
        "outside": answers("1.1.1.1", 443),
    }
    s3.put_object(Bucket="drop", Key="out/probe.json", Body=json.dumps(seen).encode())
    return seen
