#!/usr/bin/env python3
"""Scores the pipeline's results against the corpus's gold codes.

    mayfly results code-charts --json --limit 100000 | python3 score.py --split heldout --count 300
    python3 score.py --split heldout --count 300 --results results.json --json

The results are what `mayfly results code-charts --json` prints (a list of
records with `item` and `result`) or the `results` of the pages of
`GET /v1/jobs/code-charts/results`. Each result names its chart by its
object key, `in/<chart id>.txt` (as the demo puts them). The corpus is
generated again from its split and count (it is seeded), so no chart text
needs to be kept on disk to score. The scoring is evaluate.py's; a chart
with no result counts as coded with nothing."""
from __future__ import annotations

import argparse
import json
import posixpath
import sys

import corpus as corpus_module
from evaluate import prf, report, score


class ResultsError(ValueError):
    """The results cannot be matched to the corpus."""


def chart_key(chart: dict) -> str:
    """The object key the demo puts a chart under."""
    return f"in/{chart['id']}.txt"


def codings_by_chart(records: list[dict]) -> dict[str, dict]:
    """Chart id → its coding, from result records."""
    codings = {}
    for position, record in enumerate(records):
        result = record.get("result") if isinstance(record, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("key"), str) or "codes" not in result:
            item = record.get("item") if isinstance(record, dict) else None
            raise ResultsError(f"result {position + 1} (item {item!r}) is not a chart coding with a `key` and `codes`: {str(result)[:200]}")
        chart_id = posixpath.splitext(posixpath.basename(result["key"]))[0]
        if chart_id in codings:
            raise ResultsError(f"two results code chart {chart_id} (key {result['key']}): each chart must be coded once")
        codings[chart_id] = result
    return codings


def score_results(charts: list[dict], records: list[dict], seconds: float) -> dict:
    """evaluate.score of the pipeline's codings, plus how many charts had one."""
    codings = codings_by_chart(records)
    known = {chart["id"] for chart in charts}
    strangers = sorted(set(codings) - known)
    if strangers:
        raise ResultsError(f"{len(strangers)} result(s) code charts the corpus does not hold, e.g. {strangers[0]}: score the corpus the demo put (same --split and --count)")
    empty = {"codes": [], "dropped": []}
    measured = score(charts, [codings.get(chart["id"], empty) for chart in charts], seconds)
    measured["with_result"] = sum(1 for chart in charts if chart["id"] in codings)
    return measured


def figures(measured: dict) -> dict:
    """The headline figures as one flat JSON object."""
    o = measured["overall"]
    precision, recall, f1 = prf(o["tp"], o["fp"], o["fn"])
    negated = measured["negated_coded"] / measured["negated_total"] if measured["negated_total"] else 0.0
    return {
        "charts": measured["charts"], "with_result": measured["with_result"],
        "precision": precision, "recall": recall, "f1": f1,
        "negated_coded": measured["negated_coded"], "negated_total": measured["negated_total"], "negated_coded_rate": negated,
    }


def read_records(path: str) -> list[dict]:
    text = sys.stdin.read() if path == "-" else open(path).read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(f"{'stdin' if path == '-' else path} is not JSON: {error}") from error
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        return value["results"]
    if isinstance(value, list):
        return value
    raise ResultsError(f"{'stdin' if path == '-' else path} holds neither a list of results nor a page with `results`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=sorted(corpus_module.SPLITS), default="heldout")
    parser.add_argument("--count", type=int, required=True, help="how many charts of the split were put")
    parser.add_argument("--results", default="-", help="the results JSON (default: stdin)")
    parser.add_argument("--seconds", type=float, default=0.0, help="the run's makespan, for charts/s")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    try:
        measured = score_results(corpus_module.generate(args.split, args.count), read_records(args.results), args.seconds or float("inf"))
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures(measured)))
    else:
        print(report(measured, f"{args.split} split, {measured['with_result']} of {measured['charts']} charts with a result", "the run's makespan"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
