"""CRISPR guide scanning, modelled on GT-Scan: candidate guide targets are
20-mers immediately followed by an NGG PAM on either strand of a genome;
each is scored by its off-target sites, the other PAM-adjacent 20-mers of
the genome (both strands) within three mismatches.

Two ways to count them, the two architectures of this example:
``plain`` scans the whole genome for every batch of candidates;
``seedindex`` builds a seed index of the genome's sites once and answers
each candidate from the handful of sites that share a seed with it.
"""
