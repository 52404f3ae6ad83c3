#!/usr/bin/env bash
# Builds Mayfly and runs its demo pipeline on embedded defaults: a fresh
# project in a temporary directory, objects landing in a bucket, their events
# routed to a queue, a worker processing them, a poison message dead-lettered
# and redriven. Extra arguments go to `mayfly demo` (see `mayfly demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2
    exit 1
fi
# The demo's function is a Python program.
if ! command -v python3 >/dev/null 2>&1; then
    echo "==> installing python3 from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
cargo build --release --locked -p mayfly
exec "${CARGO_TARGET_DIR:-target}/release/mayfly" demo "$@"
