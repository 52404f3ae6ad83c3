"""Genomes and their guide sites: FASTA reading, reverse complements, and
the sites (a 20-mer protospacer and its NGG PAM) on both strands.

A site is named by the 1-based leftmost forward-strand coordinate of its
23 bp footprint and its strand, e.g. ``"1234+"`` or ``"877-"``.
"""

import gzip
import re

PROTOSPACER = 20
SITE = PROTOSPACER + 3  # the protospacer and its NGG PAM
MAX_MISMATCHES = 3

_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
_NOT_A_BASE = re.compile("[^ACGT]")


def parse_fasta(text):
    """The sequence of the first record of FASTA ``text``, upper case, one line.

    Raises ValueError when there is no record or no sequence.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith(">"):
        raise ValueError("not FASTA: the first line does not start with '>'")
    sequence = []
    for line in lines[1:]:
        if line.startswith(">"):
            break
        sequence.append(line.strip().upper())
    joined = "".join(sequence)
    if not joined:
        raise ValueError("the FASTA record holds no sequence")
    return joined


def read_fasta(path):
    """The first record of a FASTA file (gzip-compressed when it ends in .gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="ascii") as handle:
        return parse_fasta(handle.read())


def reverse_complement(sequence):
    return sequence.translate(_COMPLEMENT)[::-1]


def strand_sites(sequence):
    """(start, protospacer) of every site on this strand, in order: a
    protospacer of A/C/G/T followed by a base and GG."""
    index = sequence.find("GG", PROTOSPACER + 1)
    while index != -1:
        start = index - PROTOSPACER - 1
        if not _NOT_A_BASE.search(sequence, start, start + PROTOSPACER + 1):
            yield start, sequence[start : start + PROTOSPACER]
        index = sequence.find("GG", index + 1)


def site_name(genome_length, start, strand):
    """A site's name from its start on its strand's sequence."""
    if strand == "+":
        return f"{start + 1}+"
    return f"{genome_length - start - SITE + 1}-"


def sites(genome):
    """(name, protospacer, PAM) of every site of ``genome``, forward strand first."""
    found = []
    for strand, sequence in (("+", genome), ("-", reverse_complement(genome))):
        for start, protospacer in strand_sites(sequence):
            pam = sequence[start + PROTOSPACER : start + SITE]
            found.append((site_name(len(genome), start, strand), protospacer, pam))
    return found
