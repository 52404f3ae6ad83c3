"""Batches of candidates, the items of the scan job: one object each.

    genome genome/lambda.fa
    1234+ GAGTTTACGATTTGGCAGTCAGG
    877- ...

The first line names the genome's key (in the same bucket); each other line
is a candidate: its site name and its 23 bp site (protospacer and PAM).
"""

from .genome import PROTOSPACER, SITE

_BASES = set("ACGT")


def format_batch(genome_key, candidates):
    lines = [f"genome {genome_key}"] + [f"{name} {site}" for name, site in candidates]
    return "\n".join(lines) + "\n"


def parse_batch(text, where="the batch"):
    """(genome key, [(name, site)]); a ValueError names the line at fault."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("genome ") or not lines[0][7:].strip():
        raise ValueError(f"{where}:1: the first line must be `genome KEY`")
    candidates = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != SITE or not set(parts[1]) <= _BASES or parts[1][-2:] != "GG":
            raise ValueError(f"{where}:{number}: expected `NAME SITE` with a 23 bp site ending in GG, got {line!r}")
        candidates.append((parts[0], parts[1]))
    return lines[0][7:].strip(), candidates


def protospacers(candidates):
    return [site[:PROTOSPACER] for _, site in candidates]
