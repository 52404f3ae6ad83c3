"""Prepares a workload for the experiment: a genome and batches of candidate
guides, as files under OUT that the experiment stores in bucket `crispr`:

    OUT/genome/NAME.fa       the genome (one FASTA record)
    OUT/batches/b000.txt …   the items: batches of candidates (crispr/batch.py)

Candidates are the genome's guide sites (a 20-mer and an NGG PAM, both
strands), a deterministic sample spread evenly along the genome.

    python3 prepare.py --out data/lambda                       # lambda phage (bowtie2-examples)
    python3 prepare.py --out data/large --synthetic 1000000 --seed 7 --batches 16 --batch-size 10
"""

import argparse
import pathlib
import shutil
import sys

from crispr.batch import format_batch
from crispr.genome import read_fasta, sites
from crispr.synthetic import synthetic_genome, to_fasta

LAMBDA = pathlib.Path("/usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz")


def sample_evenly(items, count):
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=pathlib.Path, help="the folder to (re)write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--genome", type=pathlib.Path, help=f"a FASTA file, .gz or not (default: {LAMBDA})")
    source.add_argument("--synthetic", type=int, metavar="LENGTH", help="a synthetic genome of LENGTH bases")
    parser.add_argument("--seed", type=int, default=7, help="the synthetic genome's seed (default 7)")
    parser.add_argument("--batches", type=int, default=4, help="items (default 4)")
    # 400, so that an item's scan outweighs the fixed cost both architectures
    # pay per item (starting Python, two `mayfly get`s): with 100 the index
    # measured only 1.77x faster on lambda (BENCHMARKS.md, "CRISPR scan").
    parser.add_argument("--batch-size", type=int, default=400, help="candidates per item (default 400)")
    args = parser.parse_args(argv)

    if args.synthetic:
        name = f"synthetic-{args.synthetic}-{args.seed}"
        genome = synthetic_genome(args.synthetic, args.seed)
    else:
        path = args.genome or LAMBDA
        if not path.exists():
            hint = " (apt-get install bowtie2-examples)" if path == LAMBDA else ""
            parser.error(f"no genome at {path}{hint}")
        name = "lambda" if path == LAMBDA else path.name.split(".")[0]
        genome = read_fasta(path)

    chosen = sample_evenly(sites(genome), args.batches * args.batch_size)
    for folder in ("genome", "batches"):
        shutil.rmtree(args.out / folder, ignore_errors=True)
        (args.out / folder).mkdir(parents=True)
    genome_key = f"genome/{name}.fa"
    (args.out / genome_key).write_text(to_fasta(name, genome))
    for number in range(args.batches):
        batch = chosen[number * args.batch_size : (number + 1) * args.batch_size]
        if not batch:
            break
        candidates = [(site_name, protospacer + pam) for site_name, protospacer, pam in batch]
        (args.out / "batches" / f"b{number:03}.txt").write_text(format_batch(genome_key, candidates))
    print(f"{args.out}: {genome_key} ({len(genome):,} bp), {len(chosen)} candidates in {number + 1} batches", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
