#!/usr/bin/env python3
"""The chart-coding pipeline end to end (what ./scripts/demo.sh runs).

    python3 examples/chart-coding/demo.py --mayfly target/release/mayfly [--charts 300] [--dir DIR]

It creates the project (this folder's mayfly.toml, handler.py and coder/) in a
temporary directory, or in DIR to keep it; deploys it; generates held-out
charts and puts them into bucket `charts` with boto3 through the
AWS-compatible endpoint of `mayfly serve`; starts `mayfly up`, whose alarm on
the backlog starts job `code-charts`; follows the run over the HTTPS API;
then prints the run report, charts/s, makespan, cost, precision/recall/F1 of
the results read from `/v1/jobs/code-charts/results`, a sample coded chart,
the audit, and how to open the dashboard on the run. No chart text is written
to disk unsealed: the charts go from memory to the sealed bucket, and the
scoring regenerates the (seeded) corpus."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

EXAMPLE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXAMPLE)

import corpus as corpus_module  # noqa: E402
from evaluate import report  # noqa: E402
from score import chart_key, figures, score_results  # noqa: E402

JOB = "code-charts"
FINAL = {"succeeded", "completed_with_failures", "failed", "cancelled", "deadline_exceeded", "budget_exceeded"}


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


class Mayfly:
    """The `mayfly` binary, run in the demo's project."""

    def __init__(self, binary: str, project: str):
        self.binary, self.project = binary, project

    def command(self, *args: str) -> list[str]:
        return [self.binary, "--project", self.project, *args]

    def run(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(self.command(*args), input=stdin, capture_output=True)
        if done.returncode != 0:
            raise DemoError(f"`mayfly {' '.join(args)}` exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode()

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json"))

    def spawn(self, *args: str, log: str) -> tuple[subprocess.Popen, dict[str, str]]:
        """Start a long-running command; wait for it to announce its API and
        AWS-compatible endpoint and return them (its stderr goes on to `log`)."""
        process = subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found: dict[str, str] = {}
        ready = threading.Event()

        def follow():
            with open(log, "a") as out:
                for line in process.stderr:
                    out.write(line)
                    out.flush()
                    if "API listening on " in line:
                        found["api"] = line.split("API listening on ")[1].split()[0]
                    if "AWS-compatible endpoint (S3 and SQS) at " in line:
                        found["aws"] = line.split("(S3 and SQS) at ")[1].split()[0]
                        ready.set()
            ready.set()

        threading.Thread(target=follow, daemon=True).start()
        if not ready.wait(60) or "aws" not in found:
            stop(process)
            raise DemoError(f"`mayfly {' '.join(args)}` did not start its API within 60 s; see {log}")
        return process, found


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def create_project(directory: str) -> None:
    """This folder's pipeline, with the API on free ports of this machine."""
    if os.path.exists(os.path.join(directory, "mayfly.toml")):
        raise DemoError(f"{directory} already holds a project; the demo needs a fresh directory")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(EXAMPLE, "mayfly.toml")) as f:
        spec = f.read()
    for declared in ("127.0.0.1:8443", "127.0.0.1:8444"):
        if declared not in spec:
            raise DemoError(f"{EXAMPLE}/mayfly.toml no longer declares {declared} under [api]; update demo.py")
        spec = spec.replace(declared, f"127.0.0.1:{free_port()}")
    with open(os.path.join(directory, "mayfly.toml"), "w") as f:
        f.write(spec)
    shutil.copy(os.path.join(EXAMPLE, "handler.py"), directory)
    shutil.copytree(os.path.join(EXAMPLE, "coder"), os.path.join(directory, "coder"), ignore=shutil.ignore_patterns("__pycache__"))


class Api:
    """The HTTPS API `mayfly up` serves, with a bearer token."""

    def __init__(self, url: str, token: str, cert: str):
        self.url, self.token = url, token
        self.context = ssl.create_default_context(cafile=cert)

    def get(self, path: str, **query) -> dict:
        address = self.url + path + ("?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}) if query else "")
        request = urllib.request.Request(address, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise DemoError(f"GET {path}: {error.code} {error.read().decode(errors='replace')}") from error

    def results(self, run: str) -> list[dict]:
        records, after = [], None
        while True:
            page = self.get(f"/jobs/{JOB}/results", run=run, after=after, limit=1000)
            records += page["results"]
            after = page.get("next_after")
            if not after:
                return records


def put_charts(mayfly: Mayfly, charts: list[dict], log: str) -> float:
    """Put every chart into bucket `charts` with boto3 through `mayfly serve`'s S3 endpoint; returns seconds."""
    import boto3
    from botocore.config import Config

    server, found = mayfly.spawn("serve", "--listen", "127.0.0.1:0", "--aws-listen", "127.0.0.1:0", log=log)
    try:
        key = mayfly.json("tokens", "create", "--aws", "--name", "demo-ingest", "--scope", "objects:write", "--bucket", "charts", "--expires", "1h")
        s3 = boto3.client(
            "s3", endpoint_url=found["aws"], region_name="us-east-1",
            aws_access_key_id=key["aws_access_key_id"], aws_secret_access_key=key["aws_secret_access_key"],
            verify=os.path.join(mayfly.project, ".mayfly/tls/cert.pem"), config=Config(retries={"max_attempts": 3}),
        )
        started = time.monotonic()
        for chart in charts:
            s3.put_object(Bucket="charts", Key=chart_key(chart), Body=chart["text"].encode())
        return time.monotonic() - started
    finally:
        stop(server)


def progress_line(run: dict, workers: list[dict], expected: int, started: float) -> str:
    items = run["items"]
    done, failed = items["done"], items["dead_lettered"]
    width = 30
    filled = int(width * (done + failed) / expected) if expected else width
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    live = sum(1 for worker in workers if worker.get("end") is None)
    return f"\r    [{'#' * filled}{'.' * (width - filled)}] {done + failed:>5}/{expected} charts  {rate:6.1f}/s  {live} worker(s) live  {failed} dead-lettered  {run['status']:<12}"


class Chaos:
    """SIGKILLs `workers` workers, a second apart, once the run has coded some
    charts, then its coordinator (which `mayfly up` replaces once its lease
    lapses): what a crashed machine does to a run."""

    def __init__(self, mayfly: Mayfly, workers: int):
        self.mayfly, self.workers_left, self.coordinator_left = mayfly, workers, 1
        self.last = 0.0
        self.killed: list[str] = []

    def strike(self, done: int, expected: int) -> None:
        if not (self.workers_left or self.coordinator_left) or done < expected // 10 or time.monotonic() - self.last < 1.0:
            return
        live = self.mayfly.json("ps")
        role = "worker" if self.workers_left else "coordinator"
        victim = next((process for process in live if process["role"] == role), None)
        if victim is None:
            return
        # A local process's id is `local:PGID:…`: kill its whole process group, as a crash would.
        os.killpg(int(victim["id"].split(":")[1]), signal.SIGKILL)
        self.killed.append(f"{role} {victim.get('worker') or victim['id']}")
        if role == "worker":
            self.workers_left -= 1
        else:
            self.coordinator_left -= 1
        self.last = time.monotonic()
        print(f"\n    chaos: SIGKILL {self.killed[-1]}", flush=True)


def follow_run(mayfly: Mayfly, api: Api, expected: int, timeout: float, chaos: Chaos | None = None) -> dict:
    """Wait for the alarm's run, show its progress, return its detail once it ends."""
    deadline = time.monotonic() + timeout
    while True:
        runs = api.get("/runs", job=JOB)["runs"]
        if runs:
            break
        if time.monotonic() > deadline:
            raise DemoError(f"no run of {JOB} started within {timeout:.0f} s: is the alarm declared? see `mayfly queues` and `mayfly alarms`")
        time.sleep(0.2)
    run = runs[-1]  # the first, oldest, run: the alarm's
    say(f"alarm `backlog` started run {run['id']} (trigger {run['trigger']})")
    started = time.monotonic()
    tty = sys.stdout.isatty()
    last_print = 0.0
    while True:
        detail = api.get(f"/runs/{run['id']}")
        if chaos:
            chaos.strike(detail["run"]["items"]["done"], expected)
        if tty or time.monotonic() - last_print > 5 or detail["run"]["status"] in FINAL:
            line = progress_line(detail["run"], detail["workers"], expected, started)
            print(line if tty else line.lstrip("\r"), end="" if tty else "\n", flush=True)
            last_print = time.monotonic()
        if detail["run"]["status"] in FINAL and detail.get("report"):
            if tty:
                print()
            return detail
        if time.monotonic() > deadline:
            raise DemoError(f"run {run['id']} had not ended after {timeout:.0f} s")
        time.sleep(0.5)


def differing_charts(charts: list[dict], records: list[dict]) -> list[str]:
    """Keys of the charts whose codes from the pipeline differ from coding
    them here, directly, with no pipeline in between (the coder is
    deterministic: this is what any undisturbed run gives)."""
    from coder import ChartCoder
    from coder.lexicon import default_index

    coder = ChartCoder(default_index())
    by_key = {record["result"]["key"]: record["result"] for record in records}
    differing = []
    for chart in charts:
        piped = by_key.get(chart_key(chart))
        direct = coder.code(chart["text"])
        codes = lambda coding: sorted((c["code"], c["start"], c["end"]) for c in coding["codes"])  # noqa: E731
        if piped is None or codes(piped) != codes(direct):
            differing.append(chart_key(chart))
    return differing


def sample(charts: list[dict], records: list[dict]) -> str:
    """One coded chart with its evidence: the one with the most kinds of context."""
    by_key = {record["result"]["key"]: record["result"] for record in records}
    best = None
    for chart in charts:
        coding = by_key.get(chart_key(chart))
        if not coding:
            continue
        kinds = {c["context"] for c in coding["codes"]} | {d["reason"] for d in coding["dropped"]}
        if best is None or len(kinds) > best[0]:
            best = (len(kinds), chart, coding)
    if best is None:
        return "    (no chart was coded)"
    _, chart, coding = best
    lines = [f"chart {chart_key(chart)} (gold codes {', '.join(chart['gold_codes'])}):"]
    lines += ["    | " + line for line in chart["text"].rstrip("\n").split("\n")]
    lines.append("  codes:")
    for c in coding["codes"]:
        lines.append(f"    {c['code']:<8} {c['description'][:48]:<48} \"{c['evidence']}\" [{c['start']}:{c['end']}] {c['section']}, {c['context']}, confidence {c['confidence']:.2f}")
    lines.append("  dropped:")
    for d in coding["dropped"]:
        lines.append(f"    {d['code']:<8} \"{d['evidence']}\" [{d['start']}:{d['end']}] {d['reason']}: {d['why']}")
    return "\n".join(lines)


def demo(args: argparse.Namespace, directory: str, keep: bool) -> int:
    mayfly = Mayfly(args.mayfly, directory)
    say(f"creating the chart-coding pipeline in {directory}")
    create_project(directory)
    print(mayfly.run("deploy"), end="")

    say(f"generating {args.charts} held-out charts (corpus.py --split heldout) and putting them into bucket `charts` over S3 (boto3)")
    charts = corpus_module.generate("heldout", args.charts)
    log = os.path.join(directory, ".mayfly", "demo-server.log")
    seconds = put_charts(mayfly, charts, log)
    print(f"    {len(charts)} charts put in {seconds:.1f} s ({len(charts) / seconds:.0f}/s)")

    say("starting the control plane (`mayfly up`): the route fills queue `backlog`, the alarm starts the job")
    up, found = mayfly.spawn("up", log=log)
    try:
        token = mayfly.json("tokens", "create", "--name", "demo-reader", "--scope", "runs:read", "--scope", "results:read", "--job", JOB, "--expires", "1h")["token"]
        api = Api(found["api"], token, os.path.join(directory, ".mayfly/tls/cert.pem"))
        chaos = Chaos(mayfly, args.chaos) if args.chaos else None
        detail = follow_run(mayfly, api, len(charts), args.timeout, chaos)
        run_id = detail["run"]["id"]
        say(f"reading the results over GET {found['api']}/jobs/{JOB}/results?run={run_id}")
        records = api.results(run_id)
    finally:
        stop(up)

    result = mayfly.json("run-report", run_id)
    print()
    say(f"run report (`mayfly run-report {run_id}`)")
    print(mayfly.run("run-report", run_id), end="")
    makespan = result["makespan_ms"] / 1000
    measured = score_results(charts, records, makespan)
    headline = figures(measured)
    print()
    say("precision / recall / F1 of the pipeline's results against the gold codes (score.py)")
    print(report(measured, f"held-out split, {headline['with_result']} of {len(charts)} charts with a result", "the run's makespan, worker start included"))
    differing = differing_charts(charts, records)
    chaos_note = f" after SIGKILLing {', '.join(chaos.killed)}" if chaos else ""
    print(f"codes (with their evidence offsets) the same as coding each chart directly{chaos_note}: "
          f"{len(charts) - len(differing)}/{len(charts)} charts" + (f"; differ: {', '.join(differing[:10])}" if differing else ""))
    print()
    say("a sample coded chart with its evidence")
    print(sample(charts, records))
    print()
    say("audit after the run (`mayfly audit`)")
    print(mayfly.run("audit"), end="")
    print()
    currency = "USD"
    say(
        f"{len(records)}/{len(charts)} charts coded in {makespan:.1f} s = {len(records) / makespan:.1f} charts/s; "
        f"cost {result['estimated_cost']:.6f} {currency}; P {headline['precision']:.3f} R {headline['recall']:.3f} "
        f"F1 {headline['f1']:.3f}; negated coded {headline['negated_coded']}/{headline['negated_total']} ({100 * headline['negated_coded_rate']:.2f}%)"
    )
    if keep:
        say("open the dashboard on this run:")
        print(f"    {args.mayfly} --project {directory} tokens create --name dashboard --scope runs:read --scope logs:read")
        print(f"    {args.mayfly} --project {directory} serve     # the API and dashboard on [api].listen; the certificate is .mayfly/tls/cert.pem")
        print(f"    open {found['api'].removesuffix('/v1')}/runs/{run_id}   (sign in with the token)")
    else:
        say(f"the project is removed; run with --dir DIR to keep it and open the dashboard on run {run_id}")
    ok = detail["run"]["status"] == "succeeded" and headline["with_result"] == len(charts) and not differing
    if not ok:
        print(f"error: run {run_id} ended {detail['run']['status']} with {headline['with_result']} of {len(charts)} charts coded, "
              f"{len(differing)} coded differently from coding them directly", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mayfly", default="mayfly", help="the mayfly binary (default: on PATH)")
    parser.add_argument("--charts", type=int, default=300, help="how many held-out charts to code (default 300)")
    parser.add_argument("--dir", help="create the project here and keep it (default: a temporary directory, removed)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (default 600)")
    parser.add_argument("--chaos", type=int, default=0, metavar="N",
                        help="SIGKILL N workers and then the coordinator mid-run; the codes must come out the same")
    args = parser.parse_args(argv)
    if args.charts < 1:
        parser.error("--charts must be at least 1")
    args.mayfly = os.path.abspath(args.mayfly) if os.sep in args.mayfly else args.mayfly
    keep = args.dir is not None
    directory = os.path.abspath(args.dir) if keep else tempfile.mkdtemp(prefix="mayfly-chart-coding-")
    try:
        return demo(args, directory, keep)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
