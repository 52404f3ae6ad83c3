"""The example's functions (``runtime = "process"``: the event on stdin, the
result on stdout), each reading and writing objects with ``$MAYFLY_BIN``:

    python3 -m crispr scan-plain     # a batch: scan the whole genome
    python3 -m crispr scan-indexed   # a batch: answer it from the stored seed index
    python3 -m crispr build-index    # a genome: build its seed index, store it

A job item's event is ``{"job", "run", "item", "attempt", "payload"}``; for
a bucket source the payload is ``{"bucket", "key", "size"}``.
"""

import json
import os
import subprocess
import sys

from . import plain
from .batch import parse_batch, protospacers
from .genome import parse_fasta
from .seedindex import SeedIndex

INDEX_BUCKET = os.environ.get("CRISPR_INDEX_BUCKET", "indexes")


def get_object(bucket, key):
    mayfly = os.environ.get("MAYFLY_BIN", "mayfly")
    done = subprocess.run([mayfly, "get", f"{bucket}/{key}", "-"], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot get {bucket}/{key}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def put_object(bucket, key, data):
    mayfly = os.environ.get("MAYFLY_BIN", "mayfly")
    done = subprocess.run([mayfly, "put", f"{bucket}/{key}", "-"], input=data, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot put {bucket}/{key}: {done.stderr.decode(errors='replace').strip()}")


def index_key(genome_key):
    return f"{genome_key}.seeds"


def scored(genome_key, batch_key, candidates, counts):
    return {
        "genome": genome_key,
        "batch": batch_key,
        "candidates": [
            {"site": name, "sequence": site, "mismatches": by_mismatches, "off_targets": sum(by_mismatches) - 1}
            for (name, site), by_mismatches in zip(candidates, counts)
        ],
    }


def scan_plain(bucket, key):
    genome_key, candidates = parse_batch(get_object(bucket, key).decode("ascii"), f"{bucket}/{key}")
    genome = parse_fasta(get_object(bucket, genome_key).decode("ascii"))
    return scored(genome_key, key, candidates, plain.count_off_targets(genome, protospacers(candidates)))


def scan_indexed(bucket, key):
    genome_key, candidates = parse_batch(get_object(bucket, key).decode("ascii"), f"{bucket}/{key}")
    index = SeedIndex.from_bytes(get_object(INDEX_BUCKET, index_key(genome_key)))
    return scored(genome_key, key, candidates, index.count_off_targets(protospacers(candidates)))


def build_index(bucket, key):
    index = SeedIndex.build(key, parse_fasta(get_object(bucket, key).decode("ascii")))
    data = index.to_bytes()
    put_object(INDEX_BUCKET, index_key(key), data)
    return {"genome": key, "sites": index.site_count, "index": f"{INDEX_BUCKET}/{index_key(key)}", "bytes": len(data)}


FUNCTIONS = {"scan-plain": scan_plain, "scan-indexed": scan_indexed, "build-index": build_index}


def main(argv):
    if len(argv) != 1 or argv[0] not in FUNCTIONS:
        print(f"usage: python3 -m crispr {{{'|'.join(FUNCTIONS)}}} < event.json", file=sys.stderr)
        return 2
    event = json.load(sys.stdin)
    payload = event.get("payload", event)
    if not isinstance(payload, dict) or "bucket" not in payload or "key" not in payload:
        print(f"expected a bucket item's event, with payload {{bucket, key}}; got {event!r}", file=sys.stderr)
        return 1
    result = FUNCTIONS[argv[0]](payload["bucket"], payload["key"])
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
