#!/usr/bin/env bash
# Flaky-test sweep (outside CI): runs the integration tests and the interop
# suites ROUNDS times, every other round with both cores kept busy by two
# spinning processes, and lists every test that failed even once.
#
#   bash tests/sweep.sh [ROUNDS]        default 4 (two quiet, two loaded)
#
# The build is done once, first. Logs go to target/sweep/ (one per round and
# suite); the summary is printed at the end and written to
# target/sweep/summary.txt. Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-4}
OUT=target/sweep
rm -rf "$OUT"
mkdir -p "$OUT"

cargo build --locked --all-targets >/dev/null || exit 2

LOAD_PIDS=()
load_on() {
    for _ in 1 2; do
        (while :; do :; done) &
        LOAD_PIDS+=($!)
    done
}
load_off() {
    for pid in "${LOAD_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    LOAD_PIDS=()
}
trap load_off EXIT

for round in $(seq 1 "$ROUNDS"); do
    mode=quiet
    if [ $((round % 2)) -eq 0 ]; then
        mode=loaded
        load_on
    fi
    echo "== round $round ($mode)"
    cargo test --locked --tests --no-fail-fast >"$OUT/cargo-$round-$mode.log" 2>&1
    ORDO_BIN="$PWD/target/debug/ordo" bash interop-tests/run.sh >"$OUT/interop-$round-$mode.log" 2>&1
    load_off
    # cargo: "test x ... FAILED"; pytest: "FAILED file::test"; node: "✖ name".
    grep -hE '^test .* FAILED$|^FAILED |^ *✖ ' "$OUT"/*-"$round"-"$mode".log |
        sed "s/^ */  round $round ($mode): /"
done | tee "$OUT/summary.txt"

failures=$(grep -c '^  round' "$OUT/summary.txt")
if [ "$failures" -gt 0 ]; then
    echo "== $failures failures over $ROUNDS rounds (logs in $OUT/)"
    exit 1
fi
echo "== no failure over $ROUNDS rounds"
