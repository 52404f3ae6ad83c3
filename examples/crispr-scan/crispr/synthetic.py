"""Deterministic synthetic genomes for runs larger than lambda's 48.5 kb.

Random bases (50% GC), with repeat families like real genomes have: every so
often a copy of an earlier stretch, on either strand, with a few point
mutations, so that guides have off-targets at 1–3 mismatches. The same
length and seed always give the same genome (Python's ``random.Random`` is
stable across versions for ``random()`` and ``choices``).
"""

import random

from .genome import reverse_complement

BASES = "ACGT"


def synthetic_genome(length, seed, repeat_every=1_500, repeat_length=400, mutation_rate=0.04):
    generator = random.Random(seed)
    parts = []
    total = 0
    while total < length:
        if total > repeat_length and generator.random() < repeat_length / repeat_every:
            genome = "".join(parts)
            start = generator.randrange(0, total - repeat_length)
            copy = list(genome[start : start + repeat_length])
            for position in range(len(copy)):
                if generator.random() < mutation_rate:
                    copy[position] = generator.choice(BASES)
            chunk = "".join(copy)
            if generator.random() < 0.5:
                chunk = reverse_complement(chunk)
            parts = [genome]
        else:
            chunk = "".join(generator.choices(BASES, k=repeat_length))
        parts.append(chunk)
        total += len(chunk)
    return "".join(parts)[:length]


def to_fasta(name, sequence, width=70):
    lines = [f">{name}"] + [sequence[start : start + width] for start in range(0, len(sequence), width)]
    return "\n".join(lines) + "\n"
