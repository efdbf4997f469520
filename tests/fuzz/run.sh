#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a while (tests/fuzz/README.md).
#
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs among fuzz_frame, fuzz_sasl,
# fuzz_message, fuzz_connection, fuzz_selector (default: all, one after
# the other).
# Does what cargo-fuzz does, without a second cargo package: instrumented
# release build in its own target directory (target/fuzz, so it never waits
# for or invalidates the main build), libFuzzer started on the committed
# corpus and regressions. New inputs go to target/fuzz/corpus/<target>/
# (scratch, never the committed corpus), crashes to
# target/fuzz/artifacts/<target>/, logs to target/fuzz/logs/<target>.log.
# Exits non-zero if any target crashed, leaked, hung or ran out of memory
# (an input already in tests/fuzz/regressions/ that still fails counts too).
#
# Environment: ORDO_FUZZ_ASAN=0 builds without AddressSanitizer (faster,
# finds panics only); ORDO_FUZZ_ARGS adds libFuzzer flags (e.g. -jobs=2).
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL_TARGETS=(fuzz_frame fuzz_sasl fuzz_message fuzz_connection fuzz_selector)
SECONDS_PER_TARGET=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    SECONDS_PER_TARGET=$1
    shift
fi
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=("${ALL_TARGETS[@]}")
fi
for t in "${TARGETS[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " =~ " $t " ]]; then
        echo "unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

OUT=target/fuzz
HOST=$(rustc -vV | sed -n 's/^host: //p')

# The flags cargo-fuzz passes (sancov instrumentation that libFuzzer reads,
# cfg(fuzzing), debug assertions and overflow checks in release code).
FLAGS=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)
if [[ ${ORDO_FUZZ_ASAN:-1} != 0 ]]; then
    # The standard library is not instrumented; rustc refuses to mix
    # sanitized and unsanitized crates unless told it is on purpose.
    FLAGS+=(-Zsanitizer=address -Cunsafe-allow-abi-mismatch=sanitizer)
fi

# --target makes RUSTFLAGS apply to the targets only, not to build scripts
# and proc macros (which must not be instrumented). Line tables make the
# backtraces of crashes point at source lines.
EXAMPLES=()
for t in "${TARGETS[@]}"; do EXAMPLES+=(--example "$t"); done
echo "== build (${OUT}, ASan ${ORDO_FUZZ_ASAN:-1})"
RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="${FLAGS[*]}" \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --locked --features fuzzing \
    --target "$HOST" --target-dir "$OUT" "${EXAMPLES[@]}"

# Whether $1 has the same bytes as a file of tests/fuzz/regressions/$2/.
known_regression() {
    local f
    for f in "tests/fuzz/regressions/$2"/*; do
        [[ -f $f ]] && cmp -s "$1" "$f" && { echo "${f#tests/fuzz/regressions/}"; return 0; }
    done
    return 1
}

failed=()
for t in "${TARGETS[@]}"; do
    bin="$OUT/$HOST/release/examples/$t"
    corpus="$OUT/corpus/$t"
    artifacts="$OUT/artifacts/$t"
    log="$OUT/logs/$t.log"
    started="$OUT/logs/$t.started"
    mkdir -p "$corpus" "$artifacts" "$OUT/logs" "tests/fuzz/regressions/$t"
    touch "$started"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    status=0
    # Fork mode: the fuzzing runs in a child process that is restarted after
    # a crash, leak, hang or out-of-memory input, so one bug does not end the
    # run; every such input is saved. The first directory receives new
    # inputs; the committed ones are only read.
    # shellcheck disable=SC2086
    "$bin" \
        -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -artifact_prefix="$artifacts/" \
        ${ORDO_FUZZ_ARGS:-} \
        "$corpus" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" \
        >"$log" 2>&1 || status=$?
    # libFuzzer's last status line: cov (code edges reached), corp (inputs
    # kept), exec/s, and the oom/timeout/crash counts.
    grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true
    # Slow units (over 10 s but not over the timeout) are reported, not failures.
    found=$(find "$artifacts" -type f -newer "$started" ! -name 'slow-unit-*' | sort)
    slow=$(find "$artifacts" -type f -newer "$started" -name 'slow-unit-*' | sort)
    [[ -z $slow ]] || echo "slow inputs (not failures):"$'\n'"$slow"
    if [[ $status -ne 0 || -n $found ]]; then
        echo "!! $t failed (exit $status); log: $log" >&2
        shown=0
        for a in $found; do
            if known=$(known_regression "$a" "$t"); then
                echo "-- $a: still fails (tests/fuzz/regressions/$known)" >&2
                continue
            fi
            # The fork-mode log has no backtraces: run the first few new
            # inputs once more for their panic message or sanitizer summary.
            what=""
            if [[ $shown -lt 10 ]]; then
                shown=$((shown + 1))
                what=$(timeout 60 "$bin" -runs=1 -rss_limit_mb=2048 -timeout=10 "$a" 2>&1 |
                    grep -E -A1 'panicked at|^==[0-9]+== ERROR|^SUMMARY' | grep -vE '^--$' |
                    head -3 | tr '\n' ' ' || true)
            fi
            echo "-- $a: new ${what}" >&2
        done
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing found problems in: ${failed[*]} (artifacts under $OUT/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: ${TARGETS[*]}: no crash in ${SECONDS_PER_TARGET}s each"
