#!/usr/bin/env bash
# Slurm scale bench (issue 12), not part of the suite. On a throwaway 4-node
# cluster (scripts/slurm.sh, each node in its own network namespace, CPUs
# raised so that WORKERS one-CPU tasks run at once), in the same run:
#
#   baseline: `sbatch --array=0-(WORKERS-1)` of a bash script that only
#             reports in (one TCP hello to a listener on the host that
#             counts them): seconds from `sbatch` to the last hello.
#   mayfly:   `mayfly run` of a job with `workers = { max = WORKERS }` on
#             Slurm: seconds from `mayfly run` to the WORKERS-th worker
#             enrolled (its coordinator log's "worker enrolled" lines), and
#             the coordinator's CPU time and peak resident memory (VmHWM)
#             over the whole run, with WORKERS workers serving.
#
#   scripts/bench-slurm.sh        (root; needs slurm-wlm, python3, bash)
#   WORKERS=200 ITEMS=800 SLEEP=2 MAYFLY_BIN=target/debug/mayfly scripts/bench-slurm.sh
#
# Prints one `slurm-bench:` line per measure. MAYFLY_BIN defaults to the
# debug build (`cargo build --offline --bin mayfly` first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mayfly="$(realpath "${MAYFLY_BIN:-$root/target/debug/mayfly}")"
workers="${WORKERS:-200}"
items="${ITEMS:-$((workers * 4))}"
sleep_s="${SLEEP:-2}"
port=16390
work="$(mktemp -d /tmp/mayfly-bench-slurm.XXXXXX)"
chmod 755 "$work"
cluster="$work/slurm"
listener_pid=""
run_pid=""
cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null
    bash "$root/scripts/slurm.sh" stop "$cluster" || true
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

MAYFLY_SLURM_NETNS=1 MAYFLY_SLURM_PORT_BASE=16300 MAYFLY_SLURM_CPUS=$(((workers + 3) / 4 + 2)) \
    bash "$root/scripts/slurm.sh" start "$cluster" >/dev/null
export SLURM_CONF="$cluster/slurm.conf" MAYFLY_COORDINATOR_ADDRESS=10.252.0.1

# --- baseline: an array of tasks that only report in ---
python3 - "$port" "$workers" >"$work/listener.out" <<'PY' &
import socket, sys, time
port, wanted = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("10.252.0.1", port))
server.listen(1024)
print("listening", flush=True)
for _ in range(wanted):
    connection, _ = server.accept()
    connection.close()
print(f"last {time.time():.6f}", flush=True)
PY
listener_pid=$!
until grep -q listening "$work/listener.out"; do sleep 0.05; done
printf '#!/bin/bash\necho hello >/dev/tcp/10.252.0.1/%s\n' "$port" >"$work/hello.sh"
began=$(now)
array=$(sbatch --parsable --no-requeue --export=NONE --output=/dev/null --cpus-per-task=1 \
    --array=0-$((workers - 1)) "$work/hello.sh")
for _ in $(seq 3000); do grep -q '^last' "$work/listener.out" && break; sleep 0.1; done
last=$(awk '/^last/ {print $2}' "$work/listener.out")
[ -n "$last" ] || { echo "error: the baseline's $workers hellos did not all arrive" >&2; exit 1; }
baseline=$(python3 -c "print(f'{$last - $began:.2f}')")
echo "slurm-bench: baseline sbatch --array of $workers hello tasks: $baseline s to the last hello"
scancel "$array" 2>/dev/null || true
until [ -z "$(squeue -h -o %i)" ]; do sleep 0.2; done
listener_pid=""

# --- mayfly: a job of `workers` Slurm workers ---
project="$work/project"
mkdir -p "$project/functions"
cat >"$project/mayfly.toml" <<TOML
version = 1
name = "bench-slurm"
[buckets.scans]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
env = { SLEEP = "$sleep_s" }
[jobs.scan]
source = { manifest = { bucket = "scans", key = "manifest.txt" } }
function = "work"
workers = { max = $workers }
max_attempts = 3
provisioner = { kind = "slurm", partition = "batch", time_limit = "30m", cpus = 1 }
TOML
printf '#!/bin/sh\ncat >/dev/null\nsleep "$SLEEP"\nprintf %s\n' "'{\"done\": true}'" >"$project/functions/sleeper.sh"
cd "$project"
"$mayfly" deploy >/dev/null
seq -f '%05g' 1 "$items" | "$mayfly" put scans/manifest.txt >/dev/null
began=$(now)
"$mayfly" run scan >"$work/run.out" 2>"$work/run.err" &
run_pid=$!
run=""
coordinator=""
until [ -n "$run" ] && [ -n "$coordinator" ]; do
    sleep 0.1
    run=$("$mayfly" runs --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print((r[0].get("id") or r[0].get("run")) if r else "")')
    coordinator=$("$mayfly" ps --json | python3 -c '
import json, sys
print(next((p["id"].split(":")[1] for p in json.load(sys.stdin) if p["role"] == "coordinator"), ""))')
done
ticks=$(getconf CLK_TCK)
cpu=0 peak=0 enrolled_at=""
while kill -0 "$coordinator" 2>/dev/null; do
    if stat=$(cat "/proc/$coordinator/stat" 2>/dev/null) && status=$(cat "/proc/$coordinator/status" 2>/dev/null); then
        cpu=$(echo "$stat" | awk '{print $14 + $15}')
        peak=$(echo "$status" | awk '/^VmHWM/ {print $2}')
    fi
    if [ -z "$enrolled_at" ]; then
        enrolled_at=$("$mayfly" logs "$run" --process coordinator 2>/dev/null | grep 'worker enrolled' \
            | sed -n "${workers}p" | cut -d' ' -f1 || true)
    fi
    sleep 1
done
wait "$run_pid" || { echo "error: mayfly run failed: $(tail -5 "$work/run.err")" >&2; run_pid=""; exit 1; }
run_pid=""
[ -n "$enrolled_at" ] || { echo "error: fewer than $workers workers enrolled" >&2; exit 1; }
python3 - "$began" "$enrolled_at" "$baseline" "$workers" "$cpu" "$ticks" "$peak" "$items" "$sleep_s" <<'PY'
import datetime, sys
began, enrolled, baseline, workers, cpu, ticks, peak, items, sleep = sys.argv[1:]
enrolled = datetime.datetime.fromisoformat(enrolled.replace("Z", "+00:00")).timestamp()
mayfly = enrolled - float(began)
print(f"slurm-bench: mayfly run to {workers} Slurm workers enrolled: {mayfly:.2f} s "
      f"({mayfly / float(baseline):.2f}x the baseline's {float(baseline):.2f} s)")
print(f"slurm-bench: coordinator over the run ({items} items of {sleep} s on {workers} workers): "
      f"{int(cpu) / int(ticks):.2f} s CPU, peak RSS {int(peak) / 1024:.0f} MiB")
PY
