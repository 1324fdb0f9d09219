#!/usr/bin/env bash
# The shared-services benchmark: herd's services API and queue against redis-benchmark and
# BullMQ, same machine, same run. Everything listens on 127.0.0.1; every process this script
# starts is stopped on exit. See bench/README.md ("services") and BENCHMARKS.md.
#
# Knobs (environment):
#   JOBS=50000       jobs per queue run (herd and BullMQ)
#   RATE=5000        ops/s of the open-loop latency runs
#   SECONDS_RUN=10   seconds of each latency run
#   BUILD=1          0 skips `cargo build --release`
#   ONLY=          "latency" or "queue" runs only that half (default: both)
#   BATCH=50         jobs per batch in the batched queue runs (herd: bulk add, reserve and ack
#                    BATCH jobs per call; BullMQ: addBulk of BATCH jobs, its worker takes one at a
#                    time); 0 skips the batched runs
#   BATCH_JOBS=100000 jobs per batched queue run (batches run short: more jobs, steadier figure)
#   LIBRARY=1        also run the queue through the herd-services library inside the load
#                    process (no HTTP hop; BullMQ is likewise a library in the app's process);
#                    0 skips those runs
#   NEXT=1           herd workers ack with "next" (the ack leases the next job: one call per job,
#                    as BullMQ's moveToFinished); 0 reserves and acks in two calls
#   REDIS_PORT=16390 SERVICES_PORT=19391 (herd embedded) SERVICES_REDIS_PORT=19392 (herd on Redis)
set -euo pipefail

JOBS=${JOBS:-50000}
RATE=${RATE:-5000}
SECONDS_RUN=${SECONDS_RUN:-10}
BUILD=${BUILD:-1}
NEXT=${NEXT:-1}
LIBRARY=${LIBRARY:-1}
ONLY=${ONLY:-}
BATCH=${BATCH:-50}
BATCH_JOBS=${BATCH_JOBS:-100000}
QUEUE_ARGS=()
[ "$NEXT" = 0 ] && QUEUE_ARGS+=(--no-next)
REDIS_PORT=${REDIS_PORT:-16390}
SERVICES_PORT=${SERVICES_PORT:-19391}
SERVICES_REDIS_PORT=${SERVICES_REDIS_PORT:-19392}
TOKEN=bench-token-0123456789abcdef

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/herd-services-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required ($2)" >&2; exit 1; }; }
need redis-server "apt-get install -y redis-server"
need redis-benchmark "apt-get install -y redis-tools"
need node "Node.js 20+"

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p herd -p demo-app -p herd-bench)
fi
# BullMQ is only for the queue half. npm 11's `npm ci` refuses this lock file (it wants entries
# for msgpackr-extract's binaries of other platforms, which older npm left out); `npm install`
# installs the same locked versions.
if [ "$ONLY" != latency ] && [ ! -d "$ROOT/bench/bullmq/node_modules/bullmq" ]; then
    (cd "$ROOT/bench/bullmq" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
fi
HERD=$ROOT/target/release/herd
LOAD=$ROOT/target/release/herd-bench
echo "# machine: $(nproc) CPUs, $(uname -r); redis $(redis-server --version | awk '{print $3}' | cut -d= -f2)"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

start_herd() { # $1 name, $2 port, $3 store section
    local dir=$WORK/$1
    mkdir -p "$dir"
    cat >"$dir/herd.toml" <<CONF
[gateway]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[services]
listen = "127.0.0.1:$2"
token = "$TOKEN"
$3
[[app]]
name = "web"
command = ["$ROOT/target/release/demo-app"]
instances = 1
port_range = "24000-24100"
CONF
    TOKIO_WORKER_THREADS=${HERD_THREADS:-2} "$HERD" up -c "$dir/herd.toml" >"$dir/herd.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$2/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: herd ($1) did not start; log:" >&2
    cat "$dir/herd.log" >&2
    exit 1
}

if [ "$ONLY" != queue ]; then
    echo "## redis-benchmark (50 clients, 200k requests, no pipelining)"
    redis-benchmark -p "$REDIS_PORT" -t get,set -n 200000 -c 50 -q --csv | tee "$WORK/redis-benchmark.csv"
fi

start_herd embedded "$SERVICES_PORT" "[store]
backend = \"embedded\"
path = \"$WORK/embedded/store.redb\""
start_herd redis "$SERVICES_REDIS_PORT" "[store]
backend = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\""

for store in embedded redis; do
    [ "$ONLY" = queue ] && break
    port=$SERVICES_PORT
    [ "$store" = redis ] && port=$SERVICES_REDIS_PORT
    for op in session-get session-set cache-get; do
        echo "## services API $op at $RATE/s for ${SECONDS_RUN}s (store: $store)"
        "$LOAD" --url "http://127.0.0.1:$port" --token "$TOKEN" rate --rate "$RATE" \
            --seconds "$SECONDS_RUN" --op "$op" | sed "s/^{/{\"store\":\"$store\",/"
    done
done

queue_runs() { # $1 batch (1: one job per call)
    local b=$1 extra=() mode="one job per call" jobs=$JOBS
    [ "$b" -gt 1 ] && extra=(--bulk "$b" --batch "$b") && mode="batches of $b" && jobs=$BATCH_JOBS
    for c in 1 16; do
        for store in embedded redis; do
            port=$SERVICES_PORT
            [ "$store" = redis ] && port=$SERVICES_REDIS_PORT
            echo "## herd queue, $mode, concurrency $c (store: $store)"
            "$LOAD" --url "http://127.0.0.1:$port" --token "$TOKEN" queue --jobs "$jobs" \
                --concurrency "$c" "${QUEUE_ARGS[@]}" "${extra[@]}" | sed "s/^{/{\"store\":\"$store\",/"
        done
        for store in embedded redis; do
            [ "$LIBRARY" = 1 ] || break
            spec="redis://127.0.0.1:$REDIS_PORT"
            [ "$store" = embedded ] && spec="embedded:$WORK/library-$c-$b/store.redb"
            echo "## herd-services library in the load process (no HTTP), $mode, concurrency $c (store: $store)"
            "$LOAD" queue-lib --store "$spec" --jobs "$jobs" --concurrency "$c" "${QUEUE_ARGS[@]}" \
                "${extra[@]}" | sed "s/^{/{\"store\":\"$store\",/"
        done
        echo "## BullMQ, $mode (addBulk when batched), concurrency $c (same Redis)"
        (cd "$ROOT/bench/bullmq" && REDIS_PORT=$REDIS_PORT JOBS=$jobs CONCURRENCY=$c BULK=$b node bench.mjs)
    done
}

if [ "$ONLY" != latency ]; then
    queue_runs 1
    [ "$BATCH" -gt 1 ] && queue_runs "$BATCH"
fi
