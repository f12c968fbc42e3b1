#!/usr/bin/env bash
# Runs each fuzz target for SECONDS and prints what it did.
# usage: [FUZZ_PROFILE=dev] fuzz.sh SECONDS TARGET...
# FUZZ_PROFILE=dev builds faster, with overflow checks, and runs ~10x slower
# (make test's smoke); the default is an optimized build.
# A crash stops the run with the failing input under build/fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=$1; shift
root=$PWD
case ${FUZZ_PROFILE:-release} in
  release) profile=-O ;;
  dev) profile=--dev ;;
  *) echo "fuzz: FUZZ_PROFILE is release or dev" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
(cd fuzz && cargo fuzz build --sanitizer none "$profile" 2>&1 | tail -1)
runs_total=0
for t in "$@"; do
  mkdir -p "build/fuzz/corpus/$t" "build/fuzz/artifacts/$t"
  log="build/fuzz/$t.log"
  if ! (cd fuzz && cargo fuzz run --sanitizer none "$profile" "$t" \
        "$root/build/fuzz/corpus/$t" "$root/fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -artifact_prefix="$root/build/fuzz/artifacts/$t/" \
        -print_final_stats=1) > "$log" 2>&1; then
    tail -30 "$log" >&2
    echo "fuzz: $t FAILED; the input is in build/fuzz/artifacts/$t" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(ls "build/fuzz/corpus/$t" | wc -l)
  printf 'fuzz: %-14s %10s executions in %ss, coverage %s, corpus %s, 0 crashes\n' "$t" "$runs" "$seconds" "${cov:-?}" "$corpus"
  runs_total=$((runs_total + ${runs:-0}))
done
echo "fuzz: $# targets, $runs_total executions, 0 crashes"
