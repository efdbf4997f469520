#!/usr/bin/env bash
# Runs Ordo's interop suites against real clients of other languages:
#   python/  Qpid Proton Python (Debian python3-qpid-proton) under pytest
#   js/      rhea (pinned in js/package-lock.json) under node's test runner
#
#   bash interop-tests/run.sh            both suites
#   bash interop-tests/run.sh python     one suite (python or js); any further
#   bash interop-tests/run.sh js ARGS    arguments go to pytest / node --test
#
# The broker is not built here: ORDO_BIN names it, default target/debug/ordo
# (run `cargo build` first). Missing client packages are installed: apt-get for
# python3-qpid-proton and python3-pytest when /usr/bin/python3 cannot import
# them, `npm ci` in js/ when js/node_modules is missing.
# Exits non-zero if any suite fails.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SUITE="${1:-all}"
[ $# -gt 0 ] && shift
case "$SUITE" in
    all | python | js) ;;
    *) echo "usage: $0 [all|python|js] [args for the test runner]" >&2; exit 2 ;;
esac
if [ "$SUITE" = all ] && [ $# -gt 0 ]; then
    echo "runner arguments need a suite: $0 python|js ARGS" >&2
    exit 2
fi

# Each suite gets at most this long; a hang fails the run instead of blocking it.
SUITE_TIMEOUT="${INTEROP_SUITE_TIMEOUT:-300}"

ORDO_BIN="${ORDO_BIN:-$REPO/target/debug/ordo}"
case "$ORDO_BIN" in /*) ;; *) ORDO_BIN="$PWD/$ORDO_BIN" ;; esac
if [ ! -x "$ORDO_BIN" ]; then
    echo "run.sh: no Ordo binary at $ORDO_BIN: run 'cargo build' or set ORDO_BIN" >&2
    exit 2
fi
export ORDO_BIN
echo "== Ordo binary: $ORDO_BIN ($("$ORDO_BIN" --version 2>/dev/null))"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

setup_python() {
    if ! /usr/bin/python3 -c 'import proton, pytest' 2>/dev/null; then
        echo "== installing python3-qpid-proton python3-pytest"
        apt_install python3-qpid-proton python3-pytest || return 1
    fi
    /usr/bin/python3 -c 'import proton, pytest' || return 1
}

setup_js() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "== installing nodejs npm"
        apt_install nodejs npm || return 1
    fi
    if [ ! -d "$HERE/js/node_modules" ]; then
        echo "== npm ci (js/)"
        (cd "$HERE/js" && npm ci --no-audit --no-fund) || return 1
    fi
}

run_python() {
    echo "== Python suite (Qpid Proton $(/usr/bin/python3 -c 'import proton; print(".".join(map(str, proton.VERSION)))'))"
    (cd "$HERE/python" &&
        timeout "$SUITE_TIMEOUT" /usr/bin/python3 -m pytest -p no:cacheprovider -q "$@")
}

run_js() {
    cd "$HERE/js" || return 1
    echo "== JS suite (rhea $(node -p 'require("rhea/package.json").version'), node $(node --version))"
    if [ $# -eq 0 ]; then set -- test/; fi
    timeout "$SUITE_TIMEOUT" node --test --test-reporter=spec "$@"
    local rc=$?
    cd "$HERE" || return 1
    return $rc
}

START=$(date +%s)
declare -A RESULT
FAILED=0
for s in python js; do
    [ "$SUITE" = all ] || [ "$SUITE" = "$s" ] || continue
    if ! "setup_$s"; then
        echo "run.sh: could not set up the $s suite" >&2
        RESULT[$s]="setup failed"
        FAILED=1
        continue
    fi
    if "run_$s" "$@"; then
        RESULT[$s]="passed"
    else
        RESULT[$s]="FAILED"
        FAILED=1
    fi
done

echo "== interop summary ($(($(date +%s) - START)) s)"
for s in python js; do
    [ -n "${RESULT[$s]:-}" ] && echo "   $s: ${RESULT[$s]}"
done
exit $FAILED
