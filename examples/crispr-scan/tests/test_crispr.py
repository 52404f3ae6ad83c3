"""The example's scanners against the independent brute force (brute.py) on
the lambda phage genome (Debian's bowtie2-examples, which scripts/test.sh
installs) and on a synthetic genome with repeats; the sites' strands and
names; the stored seed index; batches and the ranking.

    python3 -m unittest discover -s examples/crispr-scan/tests
"""

import pathlib
import sys
import unittest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE))

import brute  # noqa: E402
import prepare  # noqa: E402
import rank  # noqa: E402
from crispr import plain  # noqa: E402
from crispr.batch import format_batch, parse_batch  # noqa: E402
from crispr.genome import parse_fasta, read_fasta, reverse_complement, sites  # noqa: E402
from crispr.seedindex import SeedIndex  # noqa: E402
from crispr.synthetic import synthetic_genome  # noqa: E402


def lambda_genome():
    if not prepare.LAMBDA.exists():
        raise AssertionError(f"{prepare.LAMBDA} is missing: apt-get install bowtie2-examples (scripts/test.sh does)")
    return read_fasta(prepare.LAMBDA)


def check_against_brute_force(test, genome, guides):
    """Both architectures give brute.py's counts for every guide; returns them."""
    expected = [brute.brute_force_counts(genome, guide) for guide in guides]
    test.assertEqual(plain.count_off_targets(genome, guides), expected)
    index = SeedIndex.from_bytes(SeedIndex.build("genome/g.fa", genome).to_bytes())
    test.assertEqual(index.count_off_targets(guides), expected)
    return expected


class AgainstBruteForce(unittest.TestCase):
    def test_lambda_phage(self):
        genome = lambda_genome()
        self.assertEqual(len(genome), 48502)
        found = sites(genome)
        self.assertEqual(len(found), 5670)
        guides = [protospacer for _, protospacer, _ in prepare.sample_evenly(found, 24)]
        # And guides that are not sites: one or two bases changed, so that
        # the counts are not all "itself and nothing else".
        guides += [guide[:3] + ("A" if guide[3] != "A" else "C") + guide[4:] for guide in guides[:6]]
        guides += [guide[:10] + "TT" + guide[12:] for guide in guides[6:12]]
        expected = check_against_brute_force(self, genome, guides)
        self.assertTrue(all(counts[0] >= 1 for counts in expected[:24]), "every site finds itself")
        self.assertTrue(any(counts[0] == 0 and sum(counts) > 0 for counts in expected[24:]), expected[24:])

    def test_a_synthetic_genome_with_repeats(self):
        genome = synthetic_genome(60_000, seed=3)
        guides = [protospacer for _, protospacer, _ in prepare.sample_evenly(sites(genome), 40)]
        expected = check_against_brute_force(self, genome, guides)
        close = [counts for counts in expected if sum(counts[1:]) > 0]
        self.assertGreaterEqual(len(close), 5, f"repeats give off-targets at 1-3 mismatches: {expected}")


class Sites(unittest.TestCase):
    def test_both_strands_are_named_by_forward_coordinates(self):
        # CCN + 20 bases on the forward strand is NGG + protospacer on the reverse.
        protospacer = "ACGTACGTTTGACCATGCAA"
        genome = "TTTT" + "CCA" + reverse_complement(protospacer) + "TTTT"
        self.assertEqual(sites(genome), [("5-", protospacer, "TGG")])
        forward = "TT" + protospacer + "AGG" + "TT"
        self.assertEqual(sites(forward), [("3+", protospacer, "AGG")])

    def test_sites_with_an_unknown_base_are_skipped(self):
        self.assertEqual(sites("ACGTACGTTTGACCATGCANAGG"), [])

    def test_fasta(self):
        self.assertEqual(parse_fasta(">x\nacg\nTT\n>y\nGG\n"), "ACGTT")
        with self.assertRaises(ValueError):
            parse_fasta("ACGT\n")


class StoredIndex(unittest.TestCase):
    def test_a_damaged_index_is_refused(self):
        data = SeedIndex.build("genome/g.fa", synthetic_genome(5_000, seed=1)).to_bytes()
        self.assertEqual(SeedIndex.from_bytes(data).genome_key, "genome/g.fa")
        for damaged in (data[:-4], b"{}\n" + data, b"not an index"):
            with self.assertRaises(ValueError):
                SeedIndex.from_bytes(damaged)

    def test_the_synthetic_genome_is_deterministic(self):
        self.assertEqual(synthetic_genome(20_000, seed=9), synthetic_genome(20_000, seed=9))
        self.assertNotEqual(synthetic_genome(20_000, seed=9), synthetic_genome(20_000, seed=10))


class Batches(unittest.TestCase):
    def test_round_trip_and_located_errors(self):
        text = format_batch("genome/g.fa", [("5-", "ACGTACGTTTGACCATGCAATGG")])
        self.assertEqual(parse_batch(text), ("genome/g.fa", [("5-", "ACGTACGTTTGACCATGCAATGG")]))
        with self.assertRaisesRegex(ValueError, r"b\.txt:1: the first line must be `genome KEY`"):
            parse_batch("5- ACGT\n", "b.txt")
        with self.assertRaisesRegex(ValueError, r"b\.txt:3: expected `NAME SITE`"):
            parse_batch(text + "6+ ACGTACGTTTGACCATGCAATCC\n", "b.txt")

    def test_ranking_keeps_unique_candidates_fewest_off_targets_first(self):
        def candidate(site, mismatches):
            return {"site": site, "sequence": "", "mismatches": mismatches, "off_targets": sum(mismatches) - 1}

        records = [
            {"result": {"candidates": [candidate("1+", [1, 0, 2, 5]), candidate("2+", [2, 0, 0, 0])]}},
            {"result": {"candidates": [candidate("3-", [1, 0, 0, 7]), candidate("4+", [1, 1, 0, 0])]}},
        ]
        ranked, repeated = rank.rank(records)
        self.assertEqual([c["site"] for c in ranked], ["4+", "3-", "1+"])
        self.assertEqual(repeated, 1)


if __name__ == "__main__":
    unittest.main()
