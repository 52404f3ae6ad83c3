#!/usr/bin/env bash
# The 256 MiB PUT through Mayfly's S3-compatible endpoint against the disk's
# own figure, in rounds, to compare builds on a shared, busy machine (issue
# 13's large-object target: the PUT at >= 70 % of `dd`). Each round runs, for
# each binary in turn: `dd` of 256 MiB with fdatasync, then at once one PUT
# of a 256 MiB file with curl on a presigned URL (TLS, UNSIGNED-PAYLOAD, as
# in scripts/bench-s3.sh) to that binary's `mayfly serve`. Each PUT is
# printed beside the `dd` of seconds before it (the ratio the target is
# about) and the server's CPU seconds for it; the medians close the run. The
# objects are sealed, as the CLI always stores them; each binary's last
# object is read back and compared, untimed.
#
# Needs curl and boto3 (for presigning). Not part of the test suite.
#
# Usage: scripts/bench-s3-put.sh ROUNDS BIN [BIN...]
#   e.g. scripts/bench-s3-put.sh 5 /tmp/mayfly-before target/release/mayfly
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ROUNDS BIN [BIN...]" >&2; exit 2; }
rounds="$1"
shift
bins=("$@")
python3 -c "import boto3" 2>/dev/null || { echo "error: boto3 is missing: python3 -m pip install boto3" >&2; exit 1; }

dir="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

head -c $((256 << 20)) /dev/urandom > "$dir/large"
cat "$dir/large" > /dev/null   # in the page cache, as curl will read it

# One project and one `mayfly serve` per binary; its presigned PUT and GET URLs.
put_urls=() get_urls=() cas=()
for n in "${!bins[@]}"; do
    bin="$(realpath "${bins[$n]}")"
    project="$dir/project-$n"
    mkdir -p "$project"
    printf 'version = 1\nname = "bench-s3-put"\ntags = { owner = "bench" }\n[buckets.bench]\n[api]\n' > "$project/mayfly.toml"
    (cd "$project" && "$bin" deploy > /dev/null)
    created="$(cd "$project" && "$bin" tokens create --name bench --scope objects:read --scope objects:write --aws --json)"
    (cd "$project" && exec "$bin" serve --listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 2> serve.log) &
    pids+=($!)
    for _ in $(seq 100); do grep -qs "AWS-compatible endpoint" "$project/serve.log" && break; sleep 0.1; done
    port="$(sed -n 's/.*AWS-compatible endpoint.*(address 127.0.0.1:\([0-9]*\)).*/\1/p' "$project/serve.log" | head -1)"
    urls="$(CREATED="$created" python3 - "https://localhost:$port" "$project/.mayfly/tls/cert.pem" <<'PY'
import json, os, sys
import boto3
from botocore.config import Config
created = json.loads(os.environ["CREATED"])
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", verify=sys.argv[2],
                  aws_access_key_id=created["aws_access_key_id"],
                  aws_secret_access_key=created["aws_secret_access_key"], config=Config(s3={"addressing_style": "path"}))
for method in ("put_object", "get_object"):
    print(s3.generate_presigned_url(method, Params={"Bucket": "bench", "Key": "large"}, ExpiresIn=3600))
PY
)"
    put_urls+=("$(sed -n 1p <<<"$urls")")
    get_urls+=("$(sed -n 2p <<<"$urls")")
    cas+=("$project/.mayfly/tls/cert.pem")
    echo "binary $n: $bin (serve pid ${pids[$n]}, port $port)"
done

server_cpu_seconds() {   # utime + stime of a process, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

echo "CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-7s %10s %10s %7s %14s\n' round binary "dd MB/s" "PUT MB/s" "of dd" "server CPU s"
declare -A ratios puts
for round in $(seq "$rounds"); do
    for n in "${!bins[@]}"; do
        dd_line="$(dd if=/dev/zero of="$dir/dd.bin" bs=1M count=256 conv=fdatasync 2>&1 | tail -1)"
        rm -f "$dir/dd.bin"
        dd_mbps="$(awk -F', ' '{ split($0, bytes, " "); split($(NF-1), seconds, " "); printf "%.0f", bytes[1] / seconds[1] / 1e6 }' <<<"$dd_line")"
        cpu_before="$(server_cpu_seconds "${pids[$n]}")"
        seconds="$(curl --silent --show-error --fail --cacert "${cas[$n]}" --upload-file "$dir/large" \
            --output /dev/null --write-out '%{time_total}' "${put_urls[$n]}")"
        cpu="$(awk -v a="$cpu_before" -v b="$(server_cpu_seconds "${pids[$n]}")" 'BEGIN { printf "%.2f", b - a }')"
        put_mbps="$(awk -v s="$seconds" 'BEGIN { printf "%.0f", 268435456 / s / 1e6 }')"
        ratio="$(awk -v p="$put_mbps" -v d="$dd_mbps" 'BEGIN { printf "%.0f", 100 * p / d }')"
        printf '%-6s %-7s %10s %10s %6s%% %14s\n' "$round" "$n" "$dd_mbps" "$put_mbps" "$ratio" "$cpu"
        ratios[$n]+="$ratio "
        puts[$n]+="$put_mbps "
    done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for n in "${!bins[@]}"; do
    curl --silent --show-error --fail --cacert "${cas[$n]}" --output "$dir/fetched" "${get_urls[$n]}"
    cmp --quiet "$dir/large" "$dir/fetched" || { echo "error: binary $n's object came back different" >&2; exit 1; }
    rm -f "$dir/fetched"
    echo "binary $n: PUT median $(median <<<"${puts[$n]}") MB/s, median share of its dd $(median <<<"${ratios[$n]}") % (read back: identical)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
