#!/usr/bin/env bash
# Runs one fuzz target for a while, politely on a shared machine: one
# process, lowest priority. Usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets
# the stable toolchain take the nightly flags cargo-fuzz passes. `-O -a`:
# optimized, but with debug assertions and overflow checks, so an integer
# overflow on hostile input is a finding too.
set -euo pipefail
cd "$(dirname "$0")"
target=$1
seconds=${2:-1200}
shift $(( $# < 2 ? $# : 2 ))
dict=()
[ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")
mkdir -p "corpus/$target" artifacts
RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run -O -a "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}" "$@"
