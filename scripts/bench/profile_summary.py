"""Summarise `perf report --stdio -n --no-children --sort comm,dso,sym -g none`
(read on stdin; `-n` prints each line's sample count) for
scripts/profile-job.sh: the CPU samples of the job's own threads by process
and by what the code was doing, as shares of those samples and as CPU
microseconds per item (the sampling rate is 499 Hz); idle time and other
threads on the machine are counted apart.

    perf report -n ... | python3 scripts/bench/profile_summary.py ITEMS
"""

import re
import sys
from collections import Counter

HZ = 499

# The job's own threads: Mayfly's processes (the coordinator's runtime and
# committer threads, the workers) and the function's instances. Everything
# else the system-wide profile saw (idle, the profiler, other sessions'
# builds, the kernel's own threads) is counted apart, not as the job's.
JOB_THREADS = re.compile(r"^(mayfly|lambda-echo|group-commit|tokio-)")

# (category, test on (comm, dso, symbol)) for the job's samples; the first that matches wins.
CATEGORIES = [
    ("the state store's commit (SQLite)", lambda c, d, s: "sqlite" in s.lower() or "sqlite" in d.lower()),
    ("the kernel: fsync and the file system", lambda c, d, s: d == "[kernel.kallsyms]" and re.search(
        r"ext4|jbd2|fsync|blk_|bio_|nvme|virtio_blk|filemap|writeback|iomap|submit_bio|folio", s)),
    ("TLS and sealing (rustls, ring AES-GCM)", lambda c, d, s: re.search(
        r"rustls|ring::|ring_core|aes_|gcm_|_gcm|aesni|chacha|sha256|sha2::|x25519|ecp_nistz|GFp", s)),
    ("JSON and base64 (serde_json, base64)", lambda c, d, s: re.search(r"serde_json|serde::|base64|serde_core", s)),
    ("HTTP (hyper, axum, reqwest)", lambda c, d, s: re.search(r"hyper|axum|reqwest|http::|h2::|tower", s)),
    ("the async runtime (tokio)", lambda c, d, s: "tokio" in s),
    ("memory (allocator, copies)", lambda c, d, s: re.search(
        r"malloc|free|realloc|memcpy|memmove|memset|_int_|cfree|alloc::|__rust_alloc|__rust_dealloc|tcache", s)),
    ("the kernel: loopback TCP and sockets", lambda c, d, s: d == "[kernel.kallsyms]" and re.search(
        r"tcp|__ip_|ip_|sock|skb|netif|__dev_queue|loopback|net_rx|inet|__sys_sendto|__sys_recvfrom|epoll|ep_", s)),
    ("the kernel: scheduling, wake-ups, futexes", lambda c, d, s: d == "[kernel.kallsyms]" and re.search(
        r"schedul|switch|wake|futex|pick_next|enqueue|dequeue|update_curr|ttwu|select_task|idle|hrtimer|load_balance|rcu", s)),
    ("the kernel: syscalls, pipes and the rest", lambda c, d, s: d == "[kernel.kallsyms]"),
    ("the function's process (lambda-echo)", lambda c, d, s: c.startswith("lambda-echo")),
    ("other user code", lambda c, d, s: True),
]

LINE = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(\S+)\s+\[([.k])\]\s+(.*)$")


def main():
    items = int(sys.argv[1])
    by_category, by_comm, total = Counter(), Counter(), 0
    outside = Counter()  # True: idle; False: other threads
    for line in sys.stdin:
        match = LINE.match(line)
        if not match:
            continue
        count, comm, dso, _, symbol = match.groups()
        count = int(count)
        total += count
        if not JOB_THREADS.match(comm):
            outside[comm == "swapper"] += count
            continue
        by_comm[comm] += count
        for name, test in CATEGORIES:
            if test(comm, dso, symbol):
                by_category[name] += count
                break
    if not total:
        sys.exit("profile_summary: no samples on stdin (was perf report given -n?)")
    busy = sum(by_comm.values())

    def per_item(count):
        return count / HZ / items * 1e6

    print(f"{total} samples at {HZ} Hz over the run: the job's threads {100 * busy / total:.1f}% "
          f"({busy / HZ:.2f} CPU seconds, {per_item(busy):.0f} us of CPU per item over {items} items), "
          f"idle {100 * outside[True] / total:.1f}%, other threads on the machine {100 * outside[False] / total:.1f}%")
    print("\nby process (comm), share of the job's samples:")
    for comm, share in by_comm.most_common():
        print(f"  {comm:<28} {100 * share / busy:5.1f}%  {per_item(share):6.0f} us/item")
    print("\nby what the code was doing, share of the job's samples:")
    for name, share in by_category.most_common():
        print(f"  {name:<44} {100 * share / busy:5.1f}%  {per_item(share):6.0f} us/item")


if __name__ == "__main__":
    main()
