#!/usr/bin/env bash
# The benchmark suite in one command: builds the release binaries, installs
# the pinned Node-RED (bench/node-red, npm ci) and runs `firmware-sim bench
# suite`, which writes bench/results/<UTC time>.md and .json, then `bench
# forward` (Node-RED forwarding, scenario 3), which writes
# bench/results/<UTC time>-forward.md and .json. Needs what the README's
# set-up needs, plus mosquitto on PATH (apt-get install mosquitto) and
# Node.js 18.5+ with npm. The collector run also measures PostgreSQL when
# the server named by CLOUD_SYNC_TEST_POSTGRES (default: the tests'
# postgres://postgres@127.0.0.1:5432/test) answers, in a schema it drops
# afterwards; otherwise it says so in one line and measures sled alone.
# Extra arguments go to the suite, e.g.
#   bench/run.sh --duration 5s --drain-readings 200000 --latency-duration 0
# Under 13 minutes on 2 cores with the defaults (the forward bench ~3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || {
    echo "bench/run.sh: mosquitto not found; install it (apt-get install mosquitto)" >&2
    exit 1
}
command -v npm >/dev/null || {
    echo "bench/run.sh: npm not found; install Node.js 18.5 or later with npm" >&2
    exit 1
}
# npm ci only when node_modules is missing or older than the lock file:
# it deletes and reinstalls the whole tree.
if [ ! -f bench/node-red/node_modules/.package-lock.json ] ||
    [ bench/node-red/package-lock.json -nt bench/node-red/node_modules/.package-lock.json ]; then
    (cd bench/node-red && npm ci --no-audit --no-fund)
fi
cargo build --release -p firmware-sim -p edge-agent -p cloud-sync
target/release/firmware-sim bench suite --out-dir bench/results "$@"
stamp=$(date -u +%Y-%m-%dT%H%MZ)
target/release/firmware-sim bench forward \
    --json "bench/results/$stamp-forward.json" >"bench/results/$stamp-forward.md"
echo "bench/run.sh: wrote bench/results/$stamp-forward.md and .json" >&2
