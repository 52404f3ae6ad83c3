"""Summarise `perf report --stdio --no-children --sort comm,dso,sym -g none`
(read on stdin) for scripts/profile-job.sh: the CPU samples of a job's run
by process and by what the code was doing, as shares of the busy (not idle)
samples and as CPU microseconds per item (the sampling rate is 499 Hz).

    perf report ... | python3 scripts/bench/profile_summary.py ITEMS
"""

import re
import sys
from collections import Counter

HZ = 499

# (category, test on (comm, dso, symbol)); the first that matches wins.
CATEGORIES = [
    ("idle", lambda c, d, s: c == "swapper"),
    ("the profiler", lambda c, d, s: c.startswith("perf")),
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

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[([.k])\]\s+(.*)$")


def main():
    items = int(sys.argv[1])
    by_category, by_comm, total = Counter(), Counter(), 0.0
    samples_line = re.compile(r"^# Samples: (\d+)([KM]?)")
    samples = None
    for line in sys.stdin:
        found = samples_line.match(line)
        if found:
            samples = int(found.group(1)) * {"": 1, "K": 1000, "M": 1000000}[found.group(2)]
            continue
        match = LINE.match(line)
        if not match:
            continue
        share, comm, dso, _, symbol = match.groups()
        share = float(share)
        total += share
        by_comm[comm] += share
        for name, test in CATEGORIES:
            if test(comm, dso, symbol):
                by_category[name] += share
                break
    if not samples or not total:
        sys.exit("profile_summary: no samples on stdin")
    idle = by_category["idle"] + by_category["the profiler"]
    busy = total - idle
    busy_seconds = samples * busy / total / HZ

    def per_item(share):
        return samples * share / total / HZ / items * 1e6

    print(f"{samples} samples at {HZ} Hz; busy (not idle, not perf): {busy:.1f}% = {busy_seconds:.2f} CPU seconds, "
          f"{per_item(busy):.0f} us of CPU per item over {items} items")
    print("\nby process (comm), share of busy samples:")
    for comm, share in by_comm.most_common(12):
        if comm == "swapper" or comm.startswith("perf"):
            continue
        print(f"  {comm:<28} {100 * share / busy:5.1f}%  {per_item(share):6.0f} us/item")
    print("\nby what the code was doing, share of busy samples:")
    for name, share in by_category.most_common():
        if name in ("idle", "the profiler"):
            continue
        print(f"  {name:<44} {100 * share / busy:5.1f}%  {per_item(share):6.0f} us/item")


if __name__ == "__main__":
    main()
