"""Ranks the scanned candidates: the unique ones (their 20-mer occurs at no
other site of the genome) by fewest off-targets, fewer close ones first.

    mayfly results scan --json --limit 100000 | python3 rank.py [--top 20] [--json]

The input is what `mayfly results scan --json` prints: a list of records
whose `result` is a batch's result ({"genome", "batch", "candidates"}).
"""

import argparse
import json
import sys


def rank(records):
    """(unique candidates ranked, candidates dropped as not unique)."""
    candidates = {}
    for record in records:
        for candidate in record["result"]["candidates"]:
            candidates[candidate["site"]] = candidate
    unique = [candidate for candidate in candidates.values() if candidate["mismatches"][0] == 1]
    unique.sort(key=lambda candidate: (candidate["off_targets"], candidate["mismatches"][1:], candidate["site"]))
    return unique, len(candidates) - len(unique)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=20, help="how many to print (default 20)")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON")
    args = parser.parse_args(argv)
    ranked, repeated = rank(json.load(sys.stdin))
    if args.json:
        json.dump({"ranked": ranked, "not_unique": repeated}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{len(ranked)} unique candidates ({repeated} not unique); the best {min(args.top, len(ranked))}:")
    print(f"{'RANK':>4}  {'SITE':<10} {'SEQUENCE (20 + PAM)':<25} {'OFF':>4}  MISMATCHES 1/2/3")
    for number, candidate in enumerate(ranked[: args.top], start=1):
        one, two, three = candidate["mismatches"][1:]
        print(f"{number:>4}  {candidate['site']:<10} {candidate['sequence']:<25} {candidate['off_targets']:>4}  {one}/{two}/{three}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
