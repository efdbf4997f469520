#!/usr/bin/env bash
# Ordo's benchmark in one command: builds release, starts Ordo (and RabbitMQ
# 3.10 with its AMQP 1.0 plugin on another loopback port), runs every
# scenario against every target interleaved, writes the JSON lines to
# benches/results/<date>.jsonl and has benches/report.py turn them into the
# tables of docs/PERFORMANCE.md and docs/performance.png.
#
#   bash benches/run.sh                 # the full run (about 40 minutes on 2 cores)
#   bash benches/run.sh --quick         # a smoke run of seconds, no RabbitMQ, docs untouched
#   bash benches/run.sh --reps 5 --no-rabbitmq
#
# See docs/PERFORMANCE.md for what each scenario measures.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

usage() {
    cat <<'EOF'
Usage: bash benches/run.sh [options]
  --quick               seconds-long smoke run: 1 repetition, tiny counts, no RabbitMQ;
                        results go to benches/results/quick-<date>.jsonl, docs are not touched
  --reps N              repetitions of every (scenario, target) (default 3)
  --duration S          seconds each throughput/latency run sends for (default 10)
  --backlog N           messages in the backlog scenario (default 1000000)
  --connections N       idle connections (default 10000)
  --queues N            queues (default 100000)
  --size B              message body bytes (default 1024)
  --no-rabbitmq         leave RabbitMQ out
  --rabbitmq-port P     RabbitMQ's AMQP port on 127.0.0.1 (default 5673; P+20000 for distribution)
  --no-build            use target/release/ordo as it is
  --no-docs             write the results file only (report printed, docs untouched)
  --memory-limit B      Ordo's store.memory-limit in the paging scenario (default 268435456);
                        the scenario queues twice that in durable messages
  --also FILE           report this earlier results file together with this run's
                        (e.g. after rerunning only some scenarios); repeatable
  --only LIST           comma-separated scenarios to run (presettled,unsettled,fanin,latency,
                        durable,durable-fanin,latency-durable,recovery,paging,groups,
                        strict,group-churn,selector,backlog,connections,queues)
EOF
}

QUICK=0 REPS=3 DURATION=10 BACKLOG=1000000 CONNECTIONS=10000 QUEUES=100000 SIZE=1024
MEMORY_LIMIT=268435456
RABBIT=1 RMQ_PORT=5673 BUILD=1 DOCS=1
ONLY="presettled,unsettled,fanin,latency,durable,durable-fanin,latency-durable,recovery,paging,groups,strict,group-churn,selector,backlog,connections,queues"
REPS_SET=0
ALSO=()
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps) REPS=$2; REPS_SET=1; shift ;;
        --duration) DURATION=$2; shift ;;
        --backlog) BACKLOG=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --queues) QUEUES=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --memory-limit) MEMORY_LIMIT=$2; shift ;;
        --no-rabbitmq) RABBIT=0 ;;
        --rabbitmq-port) RMQ_PORT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-docs) DOCS=0 ;;
        --only) ONLY=$2; shift ;;
        --also) ALSO+=(--results "$2"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if ((QUICK)); then
    ((REPS_SET)) || REPS=1
    DURATION=1 BACKLOG=20000 CONNECTIONS=200 QUEUES=2000 RABBIT=0 DOCS=0 MEMORY_LIMIT=8388608
fi
FSYNC_COUNT=$((QUICK ? 20000 : 200000))

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "run.sh: $*"; exit 1; }
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$HERE/results"
if ((QUICK)); then OUT="$HERE/results/quick-$STAMP.jsonl"; else OUT="$HERE/results/$STAMP.jsonl"; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ordo-bench.XXXXXX")
STARTED=$(date +%s)

# ---------------------------------------------------------------- cleanup
ORDO_PID="" RMQ_PID="" RMQ_STARTED_EPMD=0 SAMPLER_PID=""
cleanup() {
    local rc=$?
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    stop_ordo || true
    stop_rabbit || true
    if ((RMQ_STARTED_EPMD)); then
        ERL_EPMD_PORT=$EPMD_PORT epmd -kill >/dev/null 2>&1 || true
    fi
    if ((rc == 0)); then rm -rf "$WORK"; else log "kept $WORK (logs) after a failure"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ build
cd "$ROOT"
if ((BUILD)); then
    for attempt in $(seq 10); do
        log "cargo build --release (attempt $attempt)"
        if cargo build --release --quiet 2>"$WORK/build.err"; then break; fi
        ((attempt == 10)) && { cat "$WORK/build.err" >&2; die "release build failed"; }
        tail -3 "$WORK/build.err" >&2
        log "build failed (someone mid-change?); retrying in 60 s"
        sleep 60
    done
fi
[[ -x target/release/ordo ]] || die "no target/release/ordo"
# Our own copy: a rebuild of the shared target directory during the run
# must not change the binary under measurement.
cp target/release/ordo "$WORK/ordo"
ORDO=$WORK/ordo
REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# Thousands of connections need descriptors (client and brokers inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < CONNECTIONS + 1000)); then
    log "warning: ulimit -n is $(ulimit -n); $CONNECTIONS connections may fail"
fi

# ------------------------------------------------------------------- Ordo
# start_ordo [keep]: a fresh Ordo on a new loopback port with an empty data
# directory, or with `keep` on the data the previous one left (recovery).
# ORDO_ENV (an array of NAME=VALUE) is passed to it, e.g. a memory limit.
ORDO_ENV=()
start_ordo() {
    rm -f "$WORK/ordo.port"
    [[ ${1:-} == keep ]] || rm -rf "$WORK/ordo-data"
    ORDO_STARTED_NS=$(date +%s%N)
    env "${ORDO_ENV[@]}" "$ORDO" run --listen 127.0.0.1:0 --port-file "$WORK/ordo.port" \
        --data-dir "$WORK/ordo-data" >>"$WORK/ordo.log" 2>&1 &
    ORDO_PID=$!
    for _ in $(seq 600); do
        [[ -s $WORK/ordo.port ]] && break
        kill -0 "$ORDO_PID" 2>/dev/null || die "Ordo exited at start; see $WORK/ordo.log"
        sleep 0.05
    done
    [[ -s $WORK/ordo.port ]] || die "Ordo wrote no port file"
    ORDO_UP_MS=$(( ($(date +%s%N) - ORDO_STARTED_NS) / 1000000 ))
    ORDO_URL="amqp://$(cat "$WORK/ordo.port")"
}
stop_ordo() {
    [[ -n $ORDO_PID ]] || return 0
    kill -TERM "$ORDO_PID" 2>/dev/null || true
    wait "$ORDO_PID" 2>/dev/null || true
    ORDO_PID=""
}
kill_ordo() {
    [[ -n $ORDO_PID ]] || return 0
    kill -KILL "$ORDO_PID" 2>/dev/null || true
    wait "$ORDO_PID" 2>/dev/null || true
    ORDO_PID=""
}
# The value of FIELD=... on the last log line of Ordo containing TEXT.
ordo_log_field() { # ordo_log_field TEXT FIELD
    grep -F "$1" "$WORK/ordo.log" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p" | tr -d '"' | head -n 1
}
# Ordo must still be the process we started; if something stopped it, say so
# and start another (the event is recorded in the results).
ensure_ordo() {
    if [[ -z $ORDO_PID ]] || ! kill -0 "$ORDO_PID" 2>/dev/null; then
        log "warning: Ordo (pid ${ORDO_PID:-none}) is gone; starting another"
        record_event "ordo-restarted" "Ordo pid ${ORDO_PID:-none} was not running before a run"
        ORDO_PID=""
        start_ordo
    fi
}

# --------------------------------------------------------------- RabbitMQ
RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_DIR=$WORK/rabbitmq
DIST_PORT=$((RMQ_PORT + 20000))
EPMD_PORT=$((RMQ_PORT - 1300))   # 4373 for 5673: an epmd of our own on loopback
rmq() {
    env HOME="$RMQ_DIR" \
        RABBITMQ_NODENAME="ordobench$RMQ_PORT@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RMQ_PORT" \
        RABBITMQ_DIST_PORT="$DIST_PORT" \
        ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT" \
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$@"
}
install_rabbit() {
    [[ -x $RMQ_BIN/rabbitmq-server ]] && return 0
    log "installing Debian's rabbitmq-server"
    local sudo=""
    ((EUID == 0)) || sudo=sudo
    # No service start by the package: this driver runs its own node.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -q --no-install-recommends \
        rabbitmq-server >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get install rabbitmq-server failed"; }
}
start_rabbit() {
    rm -rf "$RMQ_DIR/mnesia"
    mkdir -p "$RMQ_DIR/log"
    printf 'listeners.tcp.1 = 127.0.0.1:%s\n' "$RMQ_PORT" >"$RMQ_DIR/rabbitmq.conf"
    [[ -f $RMQ_DIR/enabled_plugins ]] ||
        rmq "$RMQ_BIN/rabbitmq-plugins" enable --offline rabbitmq_amqp1_0 >>"$RMQ_DIR/cli.log" 2>&1
    if ! ERL_EPMD_PORT=$EPMD_PORT epmd -names >/dev/null 2>&1; then RMQ_STARTED_EPMD=1; fi
    rmq "$RMQ_BIN/rabbitmq-server" >>"$RMQ_DIR/server.out" 2>&1 &
    local launcher=$!
    local up=0
    for _ in $(seq 60); do
        if rmq "$RMQ_BIN/rabbitmqctl" -q await_startup --timeout 5 >>"$RMQ_DIR/cli.log" 2>&1; then up=1; break; fi
        kill -0 "$launcher" 2>/dev/null || break
        sleep 1
    done
    ((up)) || { tail -20 "$RMQ_DIR/server.out" >&2; die "RabbitMQ did not start; see $RMQ_DIR"; }
    RMQ_PID=$(rmq "$RMQ_BIN/rabbitmqctl" -q eval 'os:getpid().' | tr -d '"[:space:]')
    [[ $RMQ_PID =~ ^[0-9]+$ ]] || die "no RabbitMQ pid ($RMQ_PID)"
    RMQ_URL="amqp://127.0.0.1:$RMQ_PORT"
}
stop_rabbit() {
    [[ -n $RMQ_PID ]] || return 0
    rmq "$RMQ_BIN/rabbitmqctl" -q shutdown >>"$RMQ_DIR/cli.log" 2>&1 || kill -TERM "$RMQ_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$RMQ_PID" 2>/dev/null || break; sleep 0.2; done
    RMQ_PID=""
}
# A durable classic queue (the plugin itself declares /queue/NAME non-durable).
rabbit_durable_queue() {
    rmq "$RMQ_BIN/rabbitmqctl" -q eval \
        "rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"$1\">>), true, false, [], none, <<\"ordo-bench\">>)." \
        >>"$RMQ_DIR/cli.log" 2>&1
}

# -------------------------------------------------------------- recording
record() { # record FIELDS_JSON STDOUT_FILE STDERR_FILE RC
    "$PY" "$HERE/report.py" record --out "$OUT" --fields "$1" --stdout "$2" --stderr "$3" --rc "$4"
}
record_event() {
    "$PY" "$HERE/report.py" record --out "$OUT" \
        --fields "{\"event\":\"$1\",\"detail\":\"$2\"}" --rc 0
}

# The broker's resident memory right now (KiB), without forking.
rss_kib() {
    local k v _
    while read -r k v _; do [[ $k == VmRSS: ]] && { echo "$v"; return; }; done <"/proc/$1/status"
    echo 0
}
# Samples the broker's RSS every 0.2 s into a file until stopped.
start_sampler() {
    local pid=$1 file=$2
    (
        local max=0 r
        while kill -0 "$pid" 2>/dev/null; do
            r=$(rss_kib "$pid")
            ((r > max)) && { max=$r; echo "$max" >"$file"; }
            sleep 0.2
        done
    ) &
    SAMPLER_PID=$!
}
stop_sampler() {
    [[ -n $SAMPLER_PID ]] && { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; }
    SAMPLER_PID=""
}

# target_url/target_pid/address for a broker target.
url_of() { case $1 in ordo) echo "$ORDO_URL" ;; rabbitmq) echo "$RMQ_URL" ;; esac; }
pid_of() { case $1 in ordo) echo "$ORDO_PID" ;; rabbitmq) echo "$RMQ_PID" ;; esac; }
# RabbitMQ 3.10's AMQP 1.0 plugin: /queue/NAME declares NAME (non-durable).
addr_of() { case $1 in rabbitmq) echo "/queue/$2" ;; *) echo "$2" ;; esac; }

RUN_SEQ=0 FAILED=0
# bench SCENARIO TARGET REP NOTE -- ordo-bench-args...
# Runs one `ordo bench ...` with a time limit and records its line.
bench() {
    local scenario=$1 target=$2 rep=$3 note=$4
    shift 5
    RUN_SEQ=$((RUN_SEQ + 1))
    local pid="" rc=0 limit=$((DURATION * 10 + 300))
    [[ $target == ordo ]] && ensure_ordo
    case $target in ordo | rabbitmq) pid=$(pid_of "$target") ;; esac
    local args=("$@")
    [[ -n $pid && ${args[0]} != fsync ]] && args+=(--broker-pid "$pid")
    rm -f "$WORK/rss.max"
    [[ -n $pid ]] && start_sampler "$pid" "$WORK/rss.max"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$ORDO" bench "${args[@]}" --label "$target" \
        >"$WORK/out" 2>"$WORK/err" || rc=$?
    stop_sampler
    local sampled=0
    [[ -f $WORK/rss.max ]] && sampled=$(cat "$WORK/rss.max")
    local fields="{\"scenario\":\"$scenario\",\"target\":\"$target\",\"rep\":$rep,\"seq\":$RUN_SEQ"
    fields+=",\"note\":\"$note\",\"command\":\"ordo bench ${args[*]}\""
    ((sampled > 0)) && fields+=",\"broker_rss_sampled_peak_kib\":$sampled"
    fields+="}"
    record "$fields" "$WORK/out" "$WORK/err" "$rc"
    LAST_RC=$rc
    ((rc == 0)) || FAILED=$((FAILED + 1))
    LAST_LINE=$(tail -n 1 "$WORK/out" 2>/dev/null || true)
    local status="ok"
    ((rc == 0)) || status="rc=$rc $(tail -n 1 "$WORK/err" 2>/dev/null | cut -c1-160)"
    log "  $scenario/$target #$rep ($((SECONDS - t0)) s): $(tail -n 1 "$WORK/out" 2>/dev/null | cut -c1-110) [$status]"
}

# The order of targets for repetition REP: rotated, so none always runs first.
rotate() { # rotate REP target...
    local rep=$1
    shift
    local n=$# i
    local list=("$@")
    for ((i = 0; i < n; i++)); do echo "${list[$(((i + rep - 1) % n))]}"; done
}

# ------------------------------------------------------------------- meta
if ((RABBIT)); then
    install_rabbit
    mkdir -p "$RMQ_DIR"
    if (exec 3<>"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$RMQ_PORT (use --rabbitmq-port)"
    fi
fi
RMQ_VERSION=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo none)
ERL_VERSION=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo none)
"$PY" "$HERE/report.py" record --out "$OUT" --rc 0 --fields "$("$PY" - "$@" <<EOF
import json, os, platform, subprocess
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
model = ""
for line in sh("lscpu").splitlines():
    if line.startswith("Model name:"): model = line.split(":", 1)[1].strip()
mem = sh("awk '/MemTotal/ {print \$2}' /proc/meminfo")
print(json.dumps({"meta": True, "date": "$STAMP", "ordo_rev": "$REV", "quick": bool($QUICK),
  "reps": $REPS, "duration_s": $DURATION, "size": $SIZE, "backlog": $BACKLOG,
  "connections": $CONNECTIONS, "queues": $QUEUES, "fsync_count": $FSYNC_COUNT,
  "memory_limit": $MEMORY_LIMIT,
  "rabbitmq": bool($RABBIT), "rabbitmq_version": "$RMQ_VERSION" if $RABBIT else None,
  "erlang_version": "$ERL_VERSION" if $RABBIT else None,
  "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
  "mem_kib": int(mem) if mem.isdigit() else None,
  "os": sh(". /etc/os-release && echo \$PRETTY_NAME"),
  "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
  "client": "ordo bench (src/tools/bench.rs, tokio, one connection per producer/consumer)"}))
EOF
)"
log "results: $OUT"
log "Ordo $REV; RabbitMQ: $( ((RABBIT)) && echo "$RMQ_VERSION on 127.0.0.1:$RMQ_PORT" || echo skipped)"

start_ordo
log "Ordo pid $ORDO_PID at $ORDO_URL"
if ((RABBIT)); then
    log "starting RabbitMQ $RMQ_VERSION (rabbitmq_amqp1_0) on 127.0.0.1:$RMQ_PORT"
    start_rabbit
    log "RabbitMQ pid $RMQ_PID"
fi

BROKERS=(ordo)
((RABBIT)) && BROKERS+=(rabbitmq)
ALL=(ordo peer)
((RABBIT)) && ALL+=(rabbitmq)

# Every broker run starts on a freshly started broker: nothing queued or
# retained by the allocator from an earlier run (a pre-settled flood leaves
# gigabytes behind in both brokers), so the runs are independent samples.
restart() {
    case $1 in
        ordo) stop_ordo; start_ordo ;;
        rabbitmq) stop_rabbit; start_rabbit ;;
        *) return 0 ;;
    esac
    sleep 2
}

# target-specific arguments of a `bench run` on a fresh address
run_args() { # run_args TARGET NAME
    case $1 in
        peer) echo "--peer" ;;
        *) echo "--url $(url_of "$1") --address $(addr_of "$1" "$2")" ;;
    esac
}

# ------------------------------------------------------- throughput scenarios
throughput() { # throughput SCENARIO EXTRA-ARGS
    local scenario=$1 extra=$2 rep t
    log "scenario $scenario: ${ALL[*]} × $REPS, $DURATION s each"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${ALL[@]}"); do
            restart "$t"
            # shellcheck disable=SC2046
            bench "$scenario" "$t" "$rep" "" -- run $(run_args "$t" "b-$scenario-$rep-$RANDOM") \
                --count 0 --duration "$DURATION" --size "$SIZE" $extra
        done
    done
}
wanted presettled && throughput presettled "--presettled"
wanted unsettled && throughput unsettled ""
wanted fanin && throughput fanin "--producers 4 --consumers 4"

# ------------------------------------------------ latency at half the maximum
if wanted latency; then
    log "scenario latency: each target at half its own unsettled 1→1 median"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${ALL[@]}"); do
            max=$("$PY" "$HERE/report.py" median --results "$OUT" --scenario unsettled --target "$t")
            if [[ -z $max || $max == 0 ]]; then
                # No unsettled runs (e.g. --only latency): measure the maximum now.
                bench unsettled "$t" "$rep" "for the latency rate" -- run $(run_args "$t" "b-max-$rep-$RANDOM") \
                    --count 0 --duration "$DURATION" --size "$SIZE"
                max=$("$PY" "$HERE/report.py" median --results "$OUT" --scenario unsettled --target "$t")
            fi
            restart "$t"
            rate=$(( ${max%.*} / 2 ))
            ((rate > 0)) || rate=1000
            bench latency "$t" "$rep" "rate $rate/s = half the unsettled median" -- run \
                $(run_args "$t" "b-latency-$rep-$RANDOM") --count 0 --duration "$DURATION" \
                --size "$SIZE" --rate "$rate"
        done
    done
fi

# ---------------------------------------------------------------- durable
# Ordo durable and unsettled, then the append+fdatasync loop with the batch
# Ordo reached in that run (messages per fsync, from the "store flushed" line
# it logs at shutdown): the disk's limit for the same batches. RabbitMQ with
# a durable classic queue and persistent messages.
durable() { # durable SCENARIO EXTRA-ARGS
    local scenario=$1 extra=$2 rep t
    local targets=(ordo)
    ((RABBIT)) && targets+=(rabbitmq)
    log "scenario $scenario: ${targets[*]} (each Ordo run followed by the fsync loop at its batch) × $REPS"
    mkdir -p "$WORK/fsync"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${targets[@]}"); do
            restart "$t"
            case $t in
                ordo)
                    # shellcheck disable=SC2046
                    bench "$scenario" ordo "$rep" "durable queue, durable messages, sync = always" -- run \
                        $(run_args ordo "b-$scenario-$rep-$RANDOM") --count 0 --duration "$DURATION" \
                        --size "$SIZE" --durable $extra
                    stop_ordo
                    local syncs messages batch
                    syncs=$(ordo_log_field "store flushed" syncs)
                    messages=$(ordo_log_field "store flushed" messages)
                    batch=$(( ${messages:-0} / (${syncs:-0} > 0 ? ${syncs:-1} : 1) ))
                    ((batch > 0)) || batch=1
                    log "  Ordo wrote $messages messages in $syncs fsyncs: $batch per fsync"
                    rm -f "$WORK"/fsync/*
                    # At most 4000 fsyncs: small batches would take minutes.
                    local count=$(( batch * 4000 < FSYNC_COUNT ? batch * 4000 : FSYNC_COUNT ))
                    bench "$scenario" fsync "$rep" "append + fdatasync every $batch records (Ordo's batch)" -- fsync \
                        --dir "$WORK/fsync" --count "$count" --size "$SIZE" --batch "$batch"
                    start_ordo
                    ;;
                rabbitmq)
                    q="b-$scenario-$rep-$RANDOM"
                    rabbit_durable_queue "$q"
                    # shellcheck disable=SC2086
                    bench "$scenario" rabbitmq "$rep" "durable classic queue, persistent messages" -- run \
                        --url "$RMQ_URL" --address "/amq/queue/$q" --count 0 --duration "$DURATION" \
                        --size "$SIZE" --durable $extra
                    ;;
            esac
        done
    done
}
wanted durable && durable durable ""
wanted durable-fanin && durable durable-fanin "--producers 4 --consumers 4"

# ----------------------------------------------- durable latency at half load
if wanted latency-durable; then
    log "scenario latency-durable: Ordo at half its own durable 1→1 median"
    for ((rep = 1; rep <= REPS; rep++)); do
        max=$("$PY" "$HERE/report.py" median --results "$OUT" --scenario durable --target ordo)
        if [[ -z $max || $max == 0 ]]; then
            restart ordo
            bench durable ordo "$rep" "for the durable latency rate" -- run \
                $(run_args ordo "b-dmax-$rep-$RANDOM") --count 0 --duration "$DURATION" --size "$SIZE" --durable
            max=$("$PY" "$HERE/report.py" median --results "$OUT" --scenario durable --target ordo)
        fi
        restart ordo
        rate=$(( ${max%.*} / 2 ))
        ((rate > 0)) || rate=1000
        bench latency-durable ordo "$rep" "rate $rate/s = half the durable median" -- run \
            $(run_args ordo "b-dlatency-$rep-$RANDOM") --count 0 --duration "$DURATION" \
            --size "$SIZE" --rate "$rate" --durable
    done
fi

# --------------------------------------------------------------- recovery
# BACKLOG durable messages queued, the broker killed with SIGKILL, started
# again on its data: the time to recover (Ordo's own figure, and the time
# from exec to listening), then every message drained.
if wanted recovery; then
    log "scenario recovery: $BACKLOG durable messages, kill -9, restart; Ordo × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        restart ordo
        name="b-recovery-$rep-$RANDOM"
        bench recovery-fill ordo "$rep" "durable, produce only" -- run $(run_args ordo "$name") \
            --count "$BACKLOG" --size "$SIZE" --consumers 0 --durable
        fill_rc=$LAST_RC
        kill_ordo
        start_ordo keep
        recovered=$(ordo_log_field "store recovered" messages)
        duration_ms=$(ordo_log_field "store recovered" duration_ms)
        rss=$(rss_kib "$ORDO_PID")
        bench recovery-drain ordo "$rep" "consume the recovered backlog" -- run $(run_args ordo "$name") \
            --count "$BACKLOG" --size "$SIZE" --producers 0
        "$PY" "$HERE/report.py" record --out "$OUT" --rc "$((fill_rc || LAST_RC))" --fields \
            "{\"scenario\":\"recovery\",\"target\":\"ordo\",\"rep\":$rep,\"messages\":$BACKLOG,\"recovered\":${recovered:-0},\"recovery_ms\":${duration_ms:-0},\"start_to_listen_ms\":$ORDO_UP_MS,\"rss_after_recovery_kib\":$rss}"
        log "  recovery/ordo #$rep: ${recovered:-?} messages recovered in ${duration_ms:-?} ms (listening after $ORDO_UP_MS ms)"
    done
fi

# ----------------------------------------------------------------- paging
# A durable backlog twice Ordo's memory limit: it must fill and drain with
# the broker's memory held near the limit (bodies past it stay on disk).
if wanted paging; then
    paging_count=$(( 2 * MEMORY_LIMIT / SIZE ))
    log "scenario paging: $paging_count durable messages = 2 × memory-limit $MEMORY_LIMIT; Ordo × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        ORDO_ENV=("ORDO_STORE__MEMORY_LIMIT=$MEMORY_LIMIT")
        restart ordo
        name="b-paging-$rep-$RANDOM"
        pid=$ORDO_PID
        before=$(rss_kib "$pid")
        bench paging-fill ordo "$rep" "durable, produce only, 2 × memory limit" -- run $(run_args ordo "$name") \
            --count "$paging_count" --size "$SIZE" --consumers 0 --durable
        fill_rc=$LAST_RC
        full=$(rss_kib "$pid")
        bench paging-drain ordo "$rep" "consume, bodies read back from the store" -- run $(run_args ordo "$name") \
            --count "$paging_count" --size "$SIZE" --producers 0
        "$PY" "$HERE/report.py" record --out "$OUT" --rc "$((fill_rc || LAST_RC))" --fields \
            "{\"scenario\":\"paging\",\"target\":\"ordo\",\"rep\":$rep,\"messages\":$paging_count,\"size\":$SIZE,\"memory_limit\":$MEMORY_LIMIT,\"rss_before_kib\":$before,\"rss_full_kib\":$full}"
        log "  paging/ordo #$rep: RSS ${before} → ${full} KiB with $paging_count queued (limit $((MEMORY_LIMIT / 1024)) KiB)"
        ORDO_ENV=()
        restart ordo
    done
fi

# ----------------------------------------------------------------- groups
# Message groups cost little (SPEC §10): 4 producers and 8 consumers on one
# queue with no groups, 10 groups and 10,000 groups; and 2 against 200
# consumers with no groups. Broker CPU per message shows that dispatch walks
# neither the groups nor the consumers. Ordo only: the references have no
# groups. The loop is closed (at most 20,000 messages sent and not yet
# received), so throughput is what the consumers sustain: with groups a
# message waits for its group's owner, and an open loop would measure how
# fast a backlog grows instead.
if wanted groups; then
    log "scenario groups: Ordo, 8 consumers × {0, 10, 10000} groups, {2, 200} consumers × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for variant in $(rotate "$rep" g0 g10 g10k c2 c200); do
            restart ordo
            case $variant in
                g0) args="--producers 4 --consumers 8 --groups 0 --max-backlog 20000" ;;
                g10) args="--producers 4 --consumers 8 --groups 10 --max-backlog 20000" ;;
                g10k) args="--producers 4 --consumers 8 --groups 10000 --max-backlog 20000" ;;
                c2) args="--producers 2 --consumers 2 --credit 100 --max-backlog 20000" ;;
                c200) args="--producers 2 --consumers 200 --credit 100 --max-backlog 20000" ;;
            esac
            # shellcheck disable=SC2086,SC2046
            bench "groups-$variant" ordo "$rep" "$args" -- run $(run_args ordo "b-groups-$variant-$rep-$RANDOM") \
                --count 0 --duration "$DURATION" --size "$SIZE" $args
        done
    done
fi

# ----------------------------------------------------------------- strict
# Strict ordering (SPEC §6) against ordinary groups: 1,000 groups over 8
# consumers, closed loop. In a strict group the next message waits for the
# previous one's acceptance, so at most 1,000 messages are out at a time.
if wanted strict; then
    log "scenario strict: Ordo, 1,000 groups, group-ordering none vs strict × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for variant in $(rotate "$rep" none strict); do
            restart ordo
            # shellcheck disable=SC2046
            bench "strict-$variant" ordo "$rep" "group-ordering=$variant" -- run \
                $(run_args ordo "b-strict-$variant-$rep-$RANDOM?queue.group-ordering=$variant") \
                --count 0 --duration "$DURATION" --size "$SIZE" --producers 4 --consumers 8 \
                --groups 1000 --max-backlog 20000
        done
    done
fi

# --------------------------------------------------------------- selector
# What a selector costs per message: 4 producers, 4 consumers, closed loop;
# every message carries the same application properties (color, n) in both
# variants, and in the second every consumer has the selector
# "color = 'red' AND n >= 0", which matches everything (so nothing is left
# behind). The broker CPU per message of the two is the selector's cost.
if wanted selector; then
    log "scenario selector: Ordo, 4→4, no selector vs selector × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for variant in $(rotate "$rep" none match); do
            restart ordo
            if [[ $variant == match ]]; then sel=(--selector "color = 'red' AND n >= 0"); else sel=(--tag); fi
            # shellcheck disable=SC2046
            bench "selector-$variant" ordo "$rep" "" -- run \
                $(run_args ordo "b-selector-$variant-$rep-$RANDOM") \
                --count 0 --duration "$DURATION" --size "$SIZE" --producers 4 --consumers 4 \
                --max-backlog 20000 "${sel[@]}"
        done
    done
fi

# ------------------------------------------------------------ group churn
# 1,000,000 groups of one message each, forgotten as soon as they are done
# (`group-idle-timeout = 0`): the broker's memory must stay flat.
if wanted group-churn; then
    churn=$((QUICK ? 20000 : 1000000))
    log "scenario group-churn: $churn one-message groups; Ordo × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        restart ordo
        before=$(rss_kib "$ORDO_PID")
        bench group-churn ordo "$rep" "$churn distinct groups, idle timeout 0" -- run \
            $(run_args ordo "b-churn-$rep-$RANDOM?queue.group-idle-timeout=0") \
            --count "$churn" --size "$SIZE" --groups "$churn"
        after=$(rss_kib "$ORDO_PID")
        "$PY" "$HERE/report.py" record --out "$OUT" --rc "$LAST_RC" --fields \
            "{\"scenario\":\"group-churn-memory\",\"target\":\"ordo\",\"rep\":$rep,\"groups\":$churn,\"rss_before_kib\":$before,\"rss_after_kib\":$after}"
        log "  group-churn/ordo #$rep: RSS $before → $after KiB after $churn groups"
    done
fi

# ---------------------------------------------------------------- backlog
if wanted backlog; then
    log "scenario backlog: fill $BACKLOG, drain, memory per queued message; ${BROKERS[*]} × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${BROKERS[@]}"); do
            restart "$t"
            name="b-backlog-$rep-$RANDOM"
            pid=$(pid_of "$t")
            before=$(rss_kib "$pid")
            bench backlog-fill "$t" "$rep" "produce only" -- run $(run_args "$t" "$name") \
                --count "$BACKLOG" --size "$SIZE" --consumers 0
            fill_rc=$LAST_RC
            after=$(rss_kib "$pid")
            bench backlog-drain "$t" "$rep" "consume only" -- run $(run_args "$t" "$name") \
                --count "$BACKLOG" --size "$SIZE" --producers 0
            drained=$(rss_kib "$pid")
            "$PY" "$HERE/report.py" record --out "$OUT" --rc "$fill_rc" --fields \
                "{\"scenario\":\"backlog-memory\",\"target\":\"$t\",\"rep\":$rep,\"messages\":$BACKLOG,\"size\":$SIZE,\"rss_before_kib\":$before,\"rss_full_kib\":$after,\"rss_drained_kib\":$drained}"
            log "  backlog-memory/$t #$rep: RSS ${before} → ${after} → ${drained} KiB"
        done
    done
fi

# ------------------------------------------------------------ connections
if wanted connections; then
    log "scenario connections: $CONNECTIONS idle; ${BROKERS[*]} × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${BROKERS[@]}"); do
            restart "$t"
            bench connections "$t" "$rep" "" -- connections --url "$(url_of "$t")" --count "$CONNECTIONS"
        done
    done
fi

# ----------------------------------------------------------------- queues
if wanted queues; then
    log "scenario queues: $QUEUES; ${BROKERS[*]} × $REPS"
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $(rotate "$rep" "${BROKERS[@]}"); do
            restart "$t"
            bench queues "$t" "$rep" "" -- queues --url "$(url_of "$t")" --count "$QUEUES"
        done
    done
fi

stop_ordo
stop_rabbit
"$PY" "$HERE/report.py" record --out "$OUT" --rc 0 \
    --fields "{\"event\":\"finished\",\"detail\":\"run time $(( $(date +%s) - STARTED )) s, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)\"}"
log "finished in $(( $(date +%s) - STARTED )) s; results in ${OUT#"$ROOT"/}"

# ----------------------------------------------------------------- report
if ((DOCS)); then
    "$PY" "$HERE/report.py" report "${ALSO[@]}" --results "$OUT" \
        --doc "$ROOT/docs/PERFORMANCE.md" --plot "$ROOT/docs/performance.png"
else
    "$PY" "$HERE/report.py" report --results "$OUT" --plot "$WORK/performance.png" --optional-plot
fi
if ((FAILED)); then
    log "$FAILED run(s) failed or lost messages (see Problems above); exit status 3"
    exit 3
fi
