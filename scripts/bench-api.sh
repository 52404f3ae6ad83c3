#!/usr/bin/env bash
# Load test of the HTTPS API: authenticated reads of one item's result.
#
# Builds `mayfly` in release mode, creates a project in a temporary
# directory, runs a job so the store holds results, creates a token with
# `results:read`, starts `mayfly serve` on a free loopback port and runs
# `wrk -t2 -c32 -d10s --latency` against GET /v1/jobs/bench/results/in%2F0
# with that token. Prints requests/s, p99 latency and the machine's load
# (/proc/loadavg) before and after, since other work on the machine skews the
# figure. Needs `wrk` (Debian: apt-get install wrk). Not part of the test suite.
#
# Usage: scripts/bench-api.sh [DURATION]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"

if ! command -v wrk >/dev/null 2>&1; then
    echo "error: wrk is not installed; install it with: apt-get install wrk" >&2
    exit 1
fi
cargo build --release -p mayfly --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/mayfly"

dir="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir/project"
cd "$dir/project"
cat > mayfly.toml <<'TOML'
version = 1
name = "bench-api"
tags = { owner = "bench" }
[buckets.inbox]
[buckets.logs]
[functions.echo]
command = ["cat"]
[jobs.bench]
source = { bucket = "inbox", prefix = "in/" }
function = "echo"
logs = "logs"
[api]
TOML
"$bin" deploy >/dev/null
for n in 0 1 2; do echo "{\"n\": $n}" | "$bin" put "inbox/in/$n" >/dev/null; done
"$bin" run bench --json >/dev/null
token="$("$bin" tokens create --name bench --scope results:read --job bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

"$bin" serve --listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 2> serve.log &
server_pid=$!
for _ in $(seq 100); do grep -q "(address " serve.log && break; sleep 0.1; done
address="$(sed -n 's/.*(address \([^)]*\)).*/\1/p' serve.log | head -1)"
url="https://$address/v1/jobs/bench/results/in%2F0"
curl -sk -o /dev/null -w "warm-up: HTTP %{http_code}\n" -H "Authorization: Bearer $token" "$url"

echo "load before: $(cat /proc/loadavg)"
wrk -t2 -c32 -d"$duration" --latency -H "Authorization: Bearer $token" "$url" | tee wrk.out
echo "load after:  $(cat /proc/loadavg)"
requests=$(awk '/Requests\/sec/ {print $2}' wrk.out)
p99=$(awk '$1 == "99%" {print $2}' wrk.out)
records=$("$bin" access-log --limit 1000000 --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "authenticated result reads: ${requests} requests/s, p99 ${p99}; ${records} access records committed"
