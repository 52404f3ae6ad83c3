#!/usr/bin/env python3
"""Measures the chart coder against the synthetic corpus's gold codes.

    python3 evaluate.py --split heldout --count 2000     # generate and measure
    python3 evaluate.py --corpus heldout.jsonl           # measure a saved corpus

Overall: precision, recall and F1 of the codes assigned per chart against the
gold codes (micro-averaged over charts).

Per category, each gold mention has one expected outcome: a code (positive,
misspelled, history, family) or a dropped mention with its reason (negated,
uncertain). The coder's outputs about that mention's condition in that chart
(codes whose condition is it, dropped mentions of it) are correct when they
are the expected outcome and wrong otherwise: precision = correct / outputs,
recall = mentions with their expected outcome / mentions. Codes about no gold
mention are counted as spurious (they lower overall precision only).

Also printed: the share of negated mentions whose condition was coded anyway
(target < 2%), and charts/s (the index build is timed apart)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import corpus as corpus_module
from coder import ChartCoder
from coder.lexicon import default_index


def evaluate(charts: list[dict], coder: ChartCoder, show_errors: int = 0) -> dict:
    """Code every chart here, timed, and score the codings."""
    started = time.perf_counter()
    results = [coder.code(chart["text"]) for chart in charts]
    elapsed = time.perf_counter() - started
    return score(charts, results, elapsed, show_errors)


def score(charts: list[dict], results: list[dict], elapsed: float, show_errors: int = 0) -> dict:
    """Score `results[i]`, the coding of `charts[i]` (wherever it was made:
    here, or by the pipeline), against the gold codes."""
    overall = {"tp": 0, "fp": 0, "fn": 0}
    by_category = defaultdict(lambda: {"correct": 0, "outputs": 0, "expected": 0, "found": 0})
    abbreviated = {"expected": 0, "found": 0}
    negated_total = negated_coded = spurious = 0
    errors = []
    for chart, result in zip(charts, results, strict=True):
        predicted = {c["code"] for c in result["codes"]}
        gold = set(chart["gold_codes"])
        overall["tp"] += len(predicted & gold)
        overall["fp"] += len(predicted - gold)
        overall["fn"] += len(gold - predicted)
        about: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        for c in result["codes"]:
            for condition_code in sorted({m["condition_code"] for m in c["mentions"]}):
                about[condition_code].append((c["code"], None))
        for d in result["dropped"]:
            about[d["code"]].append((None, d["reason"]))
        gold_conditions = {m["condition_code"] for m in chart["mentions"]}
        spurious += sum(1 for c in result["codes"] if c["condition_code"] not in gold_conditions and c["code"] not in gold)
        for mention in chart["mentions"]:
            category = mention["category"]
            expected = (mention["expected_code"], mention["expected_reason"])
            outputs = about.get(mention["condition_code"], [])
            stats = by_category[category]
            stats["expected"] += 1
            stats["outputs"] += len(outputs)
            stats["correct"] += sum(1 for o in outputs if o == expected)
            ok = expected in outputs
            stats["found"] += ok
            if mention["abbreviation"]:
                abbreviated["expected"] += 1
                abbreviated["found"] += ok
            if category == "negated":
                negated_total += 1
                negated_coded += any(code is not None for code, _ in outputs)
            if not ok and len(errors) < show_errors:
                errors.append({"chart": chart["id"], "mention": mention, "outputs": outputs})
    return {
        "charts": len(charts), "seconds": elapsed, "overall": overall, "by_category": dict(by_category),
        "abbreviated": abbreviated, "negated_total": negated_total, "negated_coded": negated_coded,
        "spurious": spurious, "errors": errors,
    }


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def report(measured: dict, label: str, timing: str = "one core") -> str:
    lines = [f"corpus: {label}, {measured['charts']} charts"]
    o = measured["overall"]
    p, r, f = prf(o["tp"], o["fp"], o["fn"])
    lines.append(f"overall codes        precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}  (tp {o['tp']}, fp {o['fp']}, fn {o['fn']})")
    for category in corpus_module.CATEGORIES:
        s = measured["by_category"].get(category)
        if not s:
            continue
        precision = s["correct"] / s["outputs"] if s["outputs"] else 0.0
        recall = s["found"] / s["expected"]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        lines.append(f"  {category:<18} precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}  ({s['expected']} mentions)")
    a = measured["abbreviated"]
    if a["expected"]:
        lines.append(f"  {'(abbreviated)':<18} recall {a['found'] / a['expected']:.3f}  ({a['expected']} mentions, across categories)")
    rate = measured["negated_coded"] / measured["negated_total"] if measured["negated_total"] else 0.0
    lines.append(f"negated mentions wrongly coded: {measured['negated_coded']}/{measured['negated_total']} = {100 * rate:.2f}%")
    lines.append(f"spurious codes (about no gold mention): {measured['spurious']}")
    lines.append(f"throughput: {measured['charts'] / measured['seconds']:.0f} charts/s ({measured['seconds']:.2f} s, {timing})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=sorted(corpus_module.SPLITS), default="heldout")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--corpus", help="a JSON Lines corpus written by corpus.py (instead of generating one)")
    parser.add_argument("--errors", type=int, default=0, help="print this many missed mentions")
    args = parser.parse_args(argv)
    if args.corpus:
        with open(args.corpus) as f:
            charts = [json.loads(line) for line in f if line.strip()]
        label = args.corpus
    else:
        charts = corpus_module.generate(args.split, args.count)
        label = f"{args.split} split (generated)"
    started = time.perf_counter()
    index = default_index()
    print(f"index: {len(index.terms)} terms built in {time.perf_counter() - started:.1f} s")
    measured = evaluate(charts, ChartCoder(index), show_errors=args.errors)
    print(report(measured, label))
    for error in measured["errors"]:
        print(json.dumps(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
