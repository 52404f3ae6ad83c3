#!/usr/bin/env bash
# Ray as a peer baseline for bench (e) of `cargo bench -p mayfly --bench jobs`
# (issue 14): `ray.get([f.remote() ...])` over a no-op with num_cpus=2, in
# Ray's warm local pool (in memory, not durable), for TASKS tasks (default
# 20,000), ROUNDS times (default 3) after a warm-up round. Prints one line:
#   ray: N tasks/s (median of R rounds: a, b, c)
# Ray is installed from PyPI into a venv of its own under target/ on first
# use; it is not part of the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAYFLY_RAY_VENV:-$root/target/bench-ray/venv}"
tasks="${TASKS:-20000}"
rounds="${ROUNDS:-3}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import ray' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check ray >&2
fi
export RAY_DISABLE_USAGE_STATS=1 RAY_USAGE_STATS_ENABLED=0
exec "$venv/bin/python" - "$tasks" "$rounds" <<'PY'
import statistics, sys, time
import ray

tasks, rounds = int(sys.argv[1]), int(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)

@ray.remote
def f():
    return None

ray.get([f.remote() for _ in range(min(tasks, 2000))])  # warm the worker pool
rates = []
for _ in range(rounds):
    started = time.perf_counter()
    ray.get([f.remote() for _ in range(tasks)])
    rates.append(tasks / (time.perf_counter() - started))
ray.shutdown()
print(f"ray: {statistics.median(rates):.0f} tasks/s (median of {rounds} rounds of {tasks} no-op tasks, num_cpus=2: "
      + ", ".join(f"{rate:.0f}" for rate in rates) + ")")
PY
