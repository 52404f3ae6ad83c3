"""The straightforward architecture: every batch of candidates scans the
whole genome, both strands, and compares each site with each candidate."""

from .genome import MAX_MISMATCHES, reverse_complement, strand_sites


def mismatches_up_to(first, second, limit):
    """Mismatches between two equal-length strings, counting stops past ``limit``."""
    count = 0
    for a, b in zip(first, second):
        if a != b:
            count += 1
            if count > limit:
                break
    return count


def count_off_targets(genome, protospacers):
    """For each protospacer, its sites by mismatches: ``[n0, n1, n2, n3]``
    (its own site is one of the ``n0``)."""
    counts = [[0] * (MAX_MISMATCHES + 1) for _ in protospacers]
    for sequence in (genome, reverse_complement(genome)):
        for _, site in strand_sites(sequence):
            for index, protospacer in enumerate(protospacers):
                mismatches = mismatches_up_to(protospacer, site, MAX_MISMATCHES)
                if mismatches <= MAX_MISMATCHES:
                    counts[index][mismatches] += 1
    return counts
