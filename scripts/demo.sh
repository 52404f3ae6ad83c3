#!/usr/bin/env bash
# Builds Mayfly (release) and runs its main demo, the chart-coding pipeline
# of examples/chart-coding: a fresh project in a temporary directory (or
# --dir DIR to keep it), held-out synthetic charts put into bucket `charts`
# over the S3-compatible endpoint, `mayfly up` whose alarm on the backlog
# starts job `code-charts`, a progress bar, then the run report, charts/s,
# makespan, cost, precision/recall/F1 of the results read from the results
# API, a sample coded chart with its evidence, the audit, and how to open the
# dashboard on the run. Options go to examples/chart-coding/demo.py:
# --charts N (default 300), --dir DIR, --timeout SECONDS.
# The first demo, files renamed by a queue-triggered function: `mayfly demo rename`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2
    exit 1
fi
pip_install() {
    python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
}
# The coder is a Python handler run by AWS's unmodified runtime interface client.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    step "installing python3 and pip from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
if ! python3 -c "import awslambdaric" >/dev/null 2>&1; then
    step "installing awslambdaric from PyPI"
    pip_install awslambdaric
fi
# The coder codes against the ICD-10-CM release this package ships.
if ! python3 -c "import importlib.metadata as m; assert m.version('simple-icd-10-cm') == '1.5.0'" >/dev/null 2>&1; then
    step "installing simple-icd-10-cm 1.5.0 from PyPI"
    pip_install simple-icd-10-cm==1.5.0
fi
# The charts land in the bucket through the S3-compatible endpoint, with an unmodified AWS SDK.
if ! python3 -c "import boto3" >/dev/null 2>&1; then
    step "installing boto3 from PyPI"
    pip_install boto3
fi
step "building mayfly (release)"
cargo build --release --locked -p mayfly
exec python3 examples/chart-coding/demo.py --mayfly "${CARGO_TARGET_DIR:-target}/release/mayfly" "$@"
