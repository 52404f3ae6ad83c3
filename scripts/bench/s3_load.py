"""Load for scripts/bench-s3.sh: the same workload against each target,
interleaved (small PUT, small GET, large PUT, large GET on one target, then
the next), printed side by side.

Two clients: boto3 (both object sizes) and, for the large object, curl with
presigned URLs (OpenSSL, native code: one PUT and one GET of the same bytes,
streamed from and to a file in the page cache). Each large transfer reports
the client's CPU seconds beside its wall time, so a figure bound by its
client shows as a client near one full core. With --dd-mbps, the large
figures are also printed as a share of the disk's."""
import argparse
import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

parser = argparse.ArgumentParser()
parser.add_argument("--small", type=int, default=2000)
parser.add_argument("--large-mib", type=int, default=256)
parser.add_argument("--clients", type=int, default=16)
parser.add_argument("--dd-mbps", type=float, help="the disk's MB/s (dd, fdatasync) in this run, for the ratios")
parser.add_argument("--target", action="append", required=True, help="name=endpoint,key,secret,ca_bundle,")
args = parser.parse_args()

small_body = os.urandom(4096)
large_body = os.urandom(args.large_mib << 20)
workdir = tempfile.mkdtemp(prefix="s3-load-")
large_file = os.path.join(workdir, "large")
with open(large_file, "wb") as file:
    file.write(large_body)


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


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(work):
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def timed_with_cpu(work, who=resource.RUSAGE_SELF):
    """Wall seconds and the client's CPU seconds (this process, or its children: curl)."""
    cpu = cpu_seconds(who)
    wall = timed(work)
    return wall, cpu_seconds(who) - cpu


def curl(*arguments):
    subprocess.run(["curl", "--silent", "--show-error", "--fail", *arguments], check=True)


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
    large_put = timed_with_cpu(lambda: s3.put_object(Bucket=bucket, Key="large", Body=large_body))
    large_get_body = []
    large_get = timed_with_cpu(lambda: large_get_body.append(s3.get_object(Bucket=bucket, Key="large")["Body"].read()))
    assert large_get_body[0] == large_body, f"{name}: the large object came back different"
    del large_get_body

    # curl: presigned URLs (signed for UNSIGNED-PAYLOAD, as S3 presigns them).
    tls = ["--cacert", ca] if ca else []
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "large-curl"}, ExpiresIn=600)
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "large-curl"}, ExpiresIn=600)
    curl_put = timed_with_cpu(
        lambda: curl(*tls, "--upload-file", large_file, "--output", "/dev/null", put_url), resource.RUSAGE_CHILDREN
    )
    curl_get = timed_with_cpu(lambda: curl(*tls, "--output", "/dev/null", get_url), resource.RUSAGE_CHILDREN)
    # Check the bytes once more, untimed, so the timed GET writes to /dev/null.
    fetched = os.path.join(workdir, "fetched")
    curl(*tls, "--output", fetched, get_url)
    with open(fetched, "rb") as file:
        assert file.read() == large_body, f"{name}: the large object came back different through curl"
    os.remove(fetched)

    results[name] = {
        "small_put": args.small / put,
        "small_get": args.small / get,
        "large": {
            ("boto3", "PUT"): large_put,
            ("boto3", "GET"): large_get,
            ("curl", "PUT"): curl_put,
            ("curl", "GET"): curl_get,
        },
    }

os.remove(large_file)
os.rmdir(workdir)
mb = len(large_body) / 1e6

print(f"{'target':<10} {'4KiB PUT ops/s':>15} {'4KiB GET ops/s':>15}")
for name, result in results.items():
    print(f"{name:<10} {result['small_put']:>15.0f} {result['small_get']:>15.0f}")
if "mayfly" in results and "seaweedfs" in results:
    m, s = results["mayfly"], results["seaweedfs"]
    print(f"mayfly / seaweedfs: 4 KiB PUT {m['small_put'] / s['small_put']:.2f}x, GET {m['small_get'] / s['small_get']:.2f}x")
print()
print(f"{args.large_mib} MiB object, one request each (client CPU: seconds the client process used, all cores)")
header = f"{'target':<10} {'client':<6} {'op':<4} {'MB/s':>7} {'wall s':>7} {'client CPU s':>13}"
if args.dd_mbps:
    header += f" {'of dd':>6}"
print(header)
for name, result in results.items():
    for (client_name, op), (wall, cpu) in result["large"].items():
        line = f"{name:<10} {client_name:<6} {op:<4} {mb / wall:>7.0f} {wall:>7.3f} {cpu:>13.3f}"
        if args.dd_mbps:
            line += f" {mb / wall / args.dd_mbps:>6.0%}"
        print(line)
if args.dd_mbps:
    print(f"disk (dd, fdatasync): {args.dd_mbps:.0f} MB/s; target (issue 13): Mayfly's large PUT and GET >= 70% of it")
