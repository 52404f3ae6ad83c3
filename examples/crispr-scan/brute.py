"""An independent brute-force off-target counter, to check both
architectures: for each guide, every position of both strands is tried as a
site (an A/C/G/T 20-mer, any base, GG) and its mismatches counted in full.
No code is shared with crispr/: it is slow and obviously right.

    python3 brute.py GENOME.fa[.gz] PROTOSPACER...    # prints n0 n1 n2 n3 per guide
"""

import gzip
import sys


def read_genome(path):
    data = gzip.open(path, "rt") if path.endswith(".gz") else open(path)
    with data:
        lines = data.read().split("\n")
    assert lines[0].startswith(">"), f"{path} is not FASTA"
    sequence = ""
    for line in lines[1:]:
        if line.startswith(">"):
            break
        sequence += line.strip().upper()
    return sequence


def reverse_complement(sequence):
    pairs = {"A": "T", "C": "G", "G": "C", "T": "A"}
    return "".join(pairs.get(base, "N") for base in reversed(sequence))


def brute_force_counts(genome, guide, max_mismatches=3):
    counts = [0] * (max_mismatches + 1)
    for strand in (genome, reverse_complement(genome)):
        for start in range(len(strand) - 22):
            window = strand[start : start + 23]
            if window[21:] != "GG" or any(base not in "ACGT" for base in window[:21]):
                continue
            mismatches = 0
            for position in range(20):
                if window[position] != guide[position]:
                    mismatches += 1
            if mismatches <= max_mismatches:
                counts[mismatches] += 1
    return counts


if __name__ == "__main__":
    genome = read_genome(sys.argv[1])
    for guide in sys.argv[2:]:
        print(guide, *brute_force_counts(genome, guide))
