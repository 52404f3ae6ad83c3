#!/usr/bin/env bash
# Where a job's per-item time goes (issue 14): runs ITEMS no-op items
# (`lambda-echo` sleeping 0 ms, warm `lambda` runtime) through a
# manifest-fed job on WORKERS workers with the embedded store, as bench (e)
# does, under a system-wide `perf record` (software clock: the VM has no
# hardware counters), then prints the CPU samples by process and by what the
# code was doing (scripts/bench/profile_summary.py).
#
#   scripts/profile-job.sh [WORKERS] [ITEMS]     # defaults: 8 20000
#
# Needs a release build (`cargo build --release -p mayfly -p
# mayfly-test-handlers --bins`, or MAYFLY_BIN and HANDLER naming other
# builds) and `perf` (Debian's `linux-perf`). Not part of the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workers="${1:-8}"
items="${2:-20000}"
mayfly="${MAYFLY_BIN:-$root/target/release/mayfly}"
handler="${HANDLER:-$root/target/release/lambda-echo}"
for binary in "$mayfly" "$handler"; do
  [ -x "$binary" ] || { echo "profile-job: $binary is missing: build it with cargo build --release -p mayfly -p mayfly-test-handlers --bins" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "profile-job: perf is missing: apt-get install -y linux-perf" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
project="$work/project"
mkdir -p "$project"
cat > "$project/mayfly.toml" <<TOML
version = 1
name = "profile-$$"
[buckets.items]
[buckets.logs]
[functions.work]
runtime = "lambda"
command = ["$handler"]
env = { MAYFLY_TEST_MODE = "sleep", MAYFLY_TEST_MS = "0" }
[jobs.batch]
source = { manifest = { bucket = "items", key = "manifest.txt" } }
function = "work"
workers = { max = $workers }
logs = "logs"
TOML
cd "$project"
unset MAYFLY_PROJECT MAYFLY_STATE_URL
"$mayfly" deploy >/dev/null
seq -f 'item-%05g' 0 $((items - 1)) | "$mayfly" put items/manifest.txt - >/dev/null
perf record -a -F 499 -o "$work/perf.data" -- "$mayfly" run batch --json > "$work/run.json" 2> "$work/perf.err"
python3 - "$work/run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
print(f"run {run['run']}: {run['status']}")
PY
perf report -i "$work/perf.data" --stdio -n --no-children --sort comm,dso,sym -g none --percent-limit 0 2>/dev/null \
  | python3 "$root/scripts/bench/profile_summary.py" "$items"
