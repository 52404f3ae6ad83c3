"""The indexed architecture: a seed index of the genome's sites, built once
and stored, that answers each candidate from the few sites sharing a seed.

Pigeonhole: a protospacer of 20 is cut into 4 seeds of 5; a site within 3
mismatches of a candidate matches it exactly in at least one seed, so the
sites to check are those that share a seed (at the same place) with the
candidate. Each part has a table from its 5-mer (1,024 codes) to site ids.

The stored form (little-endian) is one JSON header line, then the sites'
protospacers (20 bytes each), then per part the table as offsets (1,025
uint32) and site ids (uint32), so loading is a few array copies and no
parsing per site.
"""

import array
import json
import sys

from .genome import MAX_MISMATCHES, PROTOSPACER, sites

PARTS = MAX_MISMATCHES + 1
SEED = PROTOSPACER // PARTS
CODES = 4**SEED
_BASE_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}
MAGIC = "mayfly-crispr-seed-index/1"


def seed_code(protospacer, part):
    code = 0
    for base in protospacer[part * SEED : (part + 1) * SEED]:
        code = code * 4 + _BASE_CODE[base]
    return code


def _little_endian_uint32(values):
    table = array.array("I", values)
    if table.itemsize != 4:
        raise RuntimeError("this platform's unsigned int is not 32 bits")
    if sys.byteorder != "little":
        table.byteswap()
    return table


class SeedIndex:
    def __init__(self, genome_key, protospacers, tables):
        self.genome_key = genome_key
        self.protospacers = protospacers  # one string, 20 characters per site
        self.tables = tables  # per part: (offsets, ids)

    @property
    def site_count(self):
        return len(self.protospacers) // PROTOSPACER

    @classmethod
    def build(cls, genome_key, genome):
        protospacers = [protospacer for _, protospacer, _ in sites(genome)]
        tables = []
        for part in range(PARTS):
            buckets = [[] for _ in range(CODES)]
            for site_id, protospacer in enumerate(protospacers):
                buckets[seed_code(protospacer, part)].append(site_id)
            offsets = [0]
            for bucket in buckets:
                offsets.append(offsets[-1] + len(bucket))
            ids = [site_id for bucket in buckets for site_id in bucket]
            tables.append((_little_endian_uint32(offsets), _little_endian_uint32(ids)))
        return cls(genome_key, "".join(protospacers), tables)

    def to_bytes(self):
        header = {"magic": MAGIC, "genome": self.genome_key, "sites": self.site_count}
        blocks = [json.dumps(header).encode() + b"\n", self.protospacers.encode("ascii")]
        for offsets, ids in self.tables:
            blocks += [offsets.tobytes(), ids.tobytes()]
        return b"".join(blocks)

    @classmethod
    def from_bytes(cls, data):
        end = data.find(b"\n")
        header = json.loads(data[:end]) if end > 0 else {}
        if not isinstance(header, dict) or header.get("magic") != MAGIC:
            raise ValueError(f"not a seed index of this version ({MAGIC})")
        count = header["sites"]
        expected = end + 1 + count * PROTOSPACER + PARTS * ((CODES + 1) * 4 + count * 4)
        if len(data) != expected:
            raise ValueError(f"a seed index of {count} sites is {expected} bytes, not {len(data)}")
        view = memoryview(data)
        position = end + 1
        protospacers = bytes(view[position : position + count * PROTOSPACER]).decode("ascii")
        position += count * PROTOSPACER
        tables = []
        for _ in range(PARTS):
            offsets, ids = array.array("I"), array.array("I")
            offsets.frombytes(view[position : position + (CODES + 1) * 4])
            position += (CODES + 1) * 4
            ids.frombytes(view[position : position + count * 4])
            position += count * 4
            if sys.byteorder != "little":
                offsets.byteswap()
                ids.byteswap()
            tables.append((offsets, ids))
        return cls(header["genome"], protospacers, tables)

    def count_off_targets(self, protospacers):
        """For each protospacer, its sites by mismatches: ``[n0, n1, n2, n3]``
        (its own site is one of the ``n0``)."""
        stored = self.protospacers
        results = []
        for protospacer in protospacers:
            sharing_a_seed = set()
            for part, (offsets, ids) in enumerate(self.tables):
                code = seed_code(protospacer, part)
                sharing_a_seed.update(ids[offsets[code] : offsets[code + 1]])
            counts = [0] * (MAX_MISMATCHES + 1)
            for site_id in sharing_a_seed:
                site = stored[site_id * PROTOSPACER : (site_id + 1) * PROTOSPACER]
                mismatches = sum(a != b for a, b in zip(protospacer, site))
                if mismatches <= MAX_MISMATCHES:
                    counts[mismatches] += 1
            results.append(counts)
        return results
