#!/usr/bin/env bash
# Runs Mayfly's whole test suite on a fresh machine: installs what the suite
# needs, builds everything, and runs every test (unit, conformance, crash,
# full-disk, CLI end to end). Needs root for the full-disk tests, which mount
# small tmpfs file systems.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: the full-disk tests mount tmpfs file systems and need root; run as root (or in a root container)" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest from crates.io"
    cargo install cargo-nextest --locked
fi

step "building"
cargo build --workspace --all-targets --locked

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --workspace --locked --profile ci
cargo test --workspace --doc --locked

step "all tests passed"
