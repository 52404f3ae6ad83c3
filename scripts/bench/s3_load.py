"""Load for scripts/bench-s3.sh: the same boto3 workload against each target,
interleaved (small PUT, small GET, large PUT, large GET on one target, then
the next), printed side by side."""
import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

parser = argparse.ArgumentParser()
parser.add_argument("--small", type=int, default=2000)
parser.add_argument("--large-mib", type=int, default=256)
parser.add_argument("--clients", type=int, default=16)
parser.add_argument("--target", action="append", required=True, help="name=endpoint,key,secret,ca_bundle,")
args = parser.parse_args()

small_body = os.urandom(4096)
large_body = os.urandom(args.large_mib << 20)


def client(endpoint, key, secret, ca):
    config = Config(
        s3={"addressing_style": "path"},
        max_pool_connections=args.clients,
        retries={"max_attempts": 1},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=ca or None,
        config=config,
    )


def timed(work):
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


results = {}
for target in args.target:
    name, spec = target.split("=", 1)
    endpoint, key, secret, ca, _ = spec.split(",")
    s3 = client(endpoint, key, secret, ca)
    bucket = "bench"
    keys = [f"small/{n:06d}" for n in range(args.small)]
    with ThreadPoolExecutor(args.clients) as pool:
        # Warm the connection pool.
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key="warm/" + k, Body=small_body), keys[: args.clients]))
        put = timed(lambda: list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=small_body), keys)))
        get = timed(lambda: list(pool.map(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)))
    large_put = timed(lambda: s3.put_object(Bucket=bucket, Key="large", Body=large_body))
    large_get_body = []
    large_get = timed(lambda: large_get_body.append(s3.get_object(Bucket=bucket, Key="large")["Body"].read()))
    assert large_get_body[0] == large_body, f"{name}: the large object came back different"
    mb = len(large_body) / 1e6
    results[name] = (args.small / put, args.small / get, mb / large_put, mb / large_get)

print(f"{'target':<10} {'4KiB PUT ops/s':>15} {'4KiB GET ops/s':>15} {'256MiB PUT MB/s':>16} {'256MiB GET MB/s':>16}")
for name, (put, get, lput, lget) in results.items():
    print(f"{name:<10} {put:>15.0f} {get:>15.0f} {lput:>16.1f} {lget:>16.1f}")
if "mayfly" in results and "seaweedfs" in results:
    m, s = results["mayfly"], results["seaweedfs"]
    print(
        f"mayfly / seaweedfs: PUT {m[0] / s[0]:.2f}x, GET {m[1] / s[1]:.2f}x, "
        f"large PUT {m[2] / s[2]:.2f}x, large GET {m[3] / s[3]:.2f}x"
    )
