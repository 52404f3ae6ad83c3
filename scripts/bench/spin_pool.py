"""The peer baseline of bench (b) of `cargo bench -p mayfly --bench jobs`
(issue 14): Python's `multiprocessing.Pool(WORKERS)` doing the same work as
the job, ITEMS items each burning MS milliseconds of its process's CPU time
(`time.thread_time`, as the `spin` mode of `lambda-echo` burns its thread's),
mapped with the pool's default chunking, as a Python user would write it.

    python3 scripts/bench/spin_pool.py ITEMS WORKERS MS

Prints one line: `pool: S seconds (ITEMS x MS ms CPU on WORKERS processes)`,
the wall time of the map alone (the pool's processes are started and warm
before the clock starts).
"""

import multiprocessing
import sys
import time


def spin(ms):
    started = time.thread_time()
    while time.thread_time() - started < ms / 1000.0:
        pass
    return ms


def main():
    items, workers, ms = (int(arg) for arg in sys.argv[1:4])
    with multiprocessing.Pool(workers) as pool:
        pool.map(spin, [0] * workers * 4)  # every process started and importing nothing more
        started = time.perf_counter()
        done = pool.map(spin, [ms] * items)
        took = time.perf_counter() - started
    assert len(done) == items, f"the pool returned {len(done)} of {items} results"
    print(f"pool: {took:.3f} seconds ({items} x {ms} ms CPU on {workers} processes)")


if __name__ == "__main__":
    main()
