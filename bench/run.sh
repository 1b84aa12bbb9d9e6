#!/usr/bin/env bash
# The benchmark suite in one command: builds the release binaries and runs
# `firmware-sim bench suite`, which writes bench/results/<UTC time>.md and
# .json. Needs what the README's set-up needs, plus mosquitto on PATH
# (apt-get install mosquitto). The collector run also measures PostgreSQL
# when the server named by CLOUD_SYNC_TEST_POSTGRES (default: the tests'
# postgres://postgres@127.0.0.1:5432/test) answers, in a schema it drops
# afterwards; otherwise it says so in one line and measures sled alone.
# Extra arguments go to the suite, e.g.
#   bench/run.sh --duration 5s --drain-readings 200000 --latency-duration 0
# Under 10 minutes on 2 cores with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || {
    echo "bench/run.sh: mosquitto not found; install it (apt-get install mosquitto)" >&2
    exit 1
}
cargo build --release -p firmware-sim -p edge-agent -p cloud-sync
exec target/release/firmware-sim bench suite --out-dir bench/results "$@"
