#!/usr/bin/env bash
# herd vs nginx vs HAProxy: the same three demo-app backends behind each proxy, one load run per
# proxy and workload, plus a direct-to-one-backend baseline. See bench/README.md for what it
# measures and the caveats. Everything listens on 127.0.0.1; every process this script starts is
# stopped on exit.
#
# Knobs (environment):
#   WORKLOADS=small  which workloads to run, in order (one table each):
#                    small  GET / (~20-byte body), wrk -c$CONNECTIONS
#                    10k    GET /bytes/10240, wrk -c$CONNECTIONS
#                    1m     GET /bytes/1048576, wrk -c$CONNECTIONS_1M
#                    h2tls  HTTP/2 over TLS to the proxy (HTTP/1.1 to the backends), h2load
#                    idle   memory per idle keep-alive connection ($IDLE_CONNS open at once)
#   THREADS=1        worker threads/processes of each proxy (herd: TOKIO_WORKER_THREADS,
#                    nginx: worker_processes, haproxy: nbthread)
#   DURATION=10      seconds of each measured wrk run (after a 2 s warm-up)
#   CONNECTIONS=64   wrk connections (-c)
#   WRK_THREADS=1    wrk threads (-t)
#   CONNECTIONS_1M=16                        wrk connections for the 1m workload
#   H2_CLIENTS=16 H2_STREAMS=10 H2_THREADS=1 h2load -c, -m (streams per connection), -t
#   IDLE_CONNS=20000 idle connections held open at once (lowered, with a warning, when the
#                    open-files hard limit is too low); IDLE_SETTLE=2 seconds before measuring
#   PIN=auto         auto: with THREADS=1 on >= 2 CPUs, proxy on CPU 0, wrk + backends on CPU 1;
#                    0: no pinning; "P:L" (e.g. "0:1" or "0:1-3"): proxy on CPU list P,
#                    wrk + backends on CPU list L
#   WAIT_QUIET=30    before each target, wait up to N s until the machine is idle (< 10% of a core
#                    busy over 1 s); 0 disables. The run goes on (with a warning) after N s.
#   OTHER_WARN=15    flag a run when processes outside the benchmark used more than N% of a core
#   RETRIES=2        measure a flagged target again (after waiting for quiet) up to N times; the
#                    last attempt is reported, still flagged if it was disturbed too
#   BUILD=1          0 skips `cargo build --release`
#   INSTALL=1        0 never calls apt-get (fails if nginx/haproxy/wrk/h2load are missing)
#   ONLY="baseline herd nginx haproxy"   subset/order of targets to run
#   HERD_GATEWAY=    extra lines for herd's [gateway] table (e.g. 'idle_release = "off"')
#   RESULTS_DIR      where configs, logs and raw wrk output go (default /tmp/herd-bench.XXXXXX)
#   BACKEND_PORTS="21001 21002 21003"  BASELINE_PORT=21000
#   HERD_PORT=18081 NGINX_PORT=18082 HAPROXY_PORT=18083 HERD_ADMIN_PORT=19091
set -euo pipefail

WORKLOADS=${WORKLOADS:-small}
THREADS=${THREADS:-1}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
CONNECTIONS_1M=${CONNECTIONS_1M:-16}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-10}
H2_THREADS=${H2_THREADS:-1}
IDLE_CONNS=${IDLE_CONNS:-20000}
IDLE_SETTLE=${IDLE_SETTLE:-2}
PIN=${PIN:-auto}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
ONLY=${ONLY:-baseline herd nginx haproxy}
WARMUP=2
OTHER_WARN=${OTHER_WARN:-15}   # % of one core used by other processes above which a run is flagged
WAIT_QUIET=${WAIT_QUIET:-30}   # before each target, wait up to this many seconds for an idle machine
RETRIES=${RETRIES:-2}          # re-measurements of a target whose run was disturbed by other load
read -r -a BACKEND_PORTS <<<"${BACKEND_PORTS:-21001 21002 21003}"
BASELINE_PORT=${BASELINE_PORT:-21000}
HERD_PORT=${HERD_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
HAPROXY_PORT=${HAPROXY_PORT:-18083}
HERD_ADMIN_PORT=${HERD_ADMIN_PORT:-19091}

for v in THREADS DURATION CONNECTIONS WRK_THREADS CONNECTIONS_1M H2_CLIENTS H2_STREAMS H2_THREADS IDLE_CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer (got '${!v}')" >&2; exit 64; }
done
for v in WAIT_QUIET RETRIES OTHER_WARN IDLE_SETTLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a non-negative integer (got '${!v}')" >&2; exit 64; }
done
for w in $WORKLOADS; do
    case $w in
        small | 10k | 1m | h2tls | idle) ;;
        *) echo "bench: unknown workload '$w' in WORKLOADS (small, 10k, 1m, h2tls, idle)" >&2; exit 64 ;;
    esac
done
[[ -n ${WORKLOADS// /} ]] || { echo "bench: WORKLOADS is empty (small, 10k, 1m, h2tls, idle)" >&2; exit 64; }
((H2_CLIENTS >= H2_THREADS)) || { echo "bench: H2_CLIENTS must be >= H2_THREADS (h2load -c >= -t)" >&2; exit 64; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/herd-bench.XXXXXX)}
mkdir -p "$RESULTS_DIR"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}   # where `cargo build` below puts the binaries
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
HERD_BIN=$TARGET_DIR/release/herd
DEMO_BIN=$TARGET_DIR/release/demo-app
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- process bookkeeping / cleanup
PIDS=()
stop_pid() { # stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL. Only ever our own children.
    local pid=$1 i p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")                            # never signal a pid twice (it may be reused)
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done   # proxies first, then the backends
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPULIST CMD... : runs CMD in the background (pinned to CPULIST unless empty), output to
# $RESULTS_DIR/NAME.log; sets LAST_PID. taskset execs, so the pid is the command's own pid.
start() {
    local name=$1 cpus=$2
    shift 2
    if [[ -n $cpus ]]; then
        taskset -c "$cpus" "$@" >"$RESULTS_DIR/$name.log" 2>&1 &
    else
        "$@" >"$RESULTS_DIR/$name.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http URL [SECONDS] [PID]: until URL answers 200 (bounded; fails early if PID died).
wait_http() {
    local url=$1 secs=${2:-30} pid=${3:-} i
    for ((i = 0; i < secs * 10; i++)); do
        if [[ $(curl -sk -o /dev/null -m 1 -w '%{http_code}' "$url" || true) == 200 ]]; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- CPU accounting
# Ticks (user+system) of a process and all its descendants (nginx master + workers).
proc_ticks() {
    local pid=$1 t=0 c stat f
    if [[ -r /proc/$pid/stat ]]; then
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) }                          # drop "pid (comm) "
        read -r -a f <<<"$stat"
        t=$((f[11] + f[12]))                       # utime, stime (fields 14, 15)
    fi
    for c in $(pgrep -P "$pid" || true); do
        t=$((t + $(proc_ticks "$c")))
    done
    echo "$t"
}
# "busy idle" jiffies per CPU, one line per CPU.
cpu_snapshot() { awk '/^cpu[0-9]+ /{idle=$5+$6; busy=0; for(i=2;i<=NF;i++) busy+=$i; busy-=idle; print busy, idle}' /proc/stat; }
total_busy() { awk '{s+=$1} END{print s+0}' <<<"$1"; }
# Ticks of everything this benchmark runs: the measured process tree, the backends, and this
# shell's waited-for children (wrk, via timeout) from /proc/$$/stat cutime + cstime.
our_ticks() {
    local t b stat f
    t=$(proc_ticks "$1")
    for b in "${BACKEND_PIDS[@]}"; do [[ $b == "$1" ]] || t=$((t + $(proc_ticks "$b"))); done
    stat=$(<"/proc/$$/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((t + f[13] + f[14]))
}
cpu_busy_pct() { # cpu_busy_pct BEFORE AFTER -> "93/100" (per-CPU busy % over the interval)
    paste -d' ' <(echo "$1") <(echo "$2") |
        awk '{b=$3-$1; i=$4-$2; t=b+i; printf "%s%d", (NR>1?"/":""), (t>0?100*b/t:0)}'
}

# ---------------------------------------------------------------- setup
wants() { [[ " $WORKLOADS " == *" $1 "* ]]; }
for t in $ONLY; do
    case $t in
        baseline | herd | nginx | haproxy) ;;
        *) die "unknown target '$t' in ONLY (baseline, herd, nginx, haproxy)" ;;
    esac
done
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if wants h2tls; then
    command -v h2load >/dev/null || need+=(nghttp2-client)
    command -v openssl >/dev/null || need+=(openssl)
fi
if wants idle; then command -v python3 >/dev/null || need+=(python3); fi
if ((${#need[@]})); then
    [[ $INSTALL == 1 ]] || die "missing ${need[*]} and INSTALL=0"
    log "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y "${need[@]}" >"$RESULTS_DIR/apt.log" 2>&1 ||
        { timeout 300 apt-get update >>"$RESULTS_DIR/apt.log" 2>&1 &&
            timeout 600 apt-get install -y "${need[@]}" >>"$RESULTS_DIR/apt.log" 2>&1; } ||
        die "apt-get install ${need[*]} failed; see $RESULTS_DIR/apt.log"
fi
for c in curl taskset; do command -v $c >/dev/null || die "$c is required"; done

if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p herd -p demo-app) || die "cargo build failed"
fi
[[ -x $HERD_BIN && -x $DEMO_BIN ]] || die "missing $HERD_BIN or $DEMO_BIN (run with BUILD=1)"

# Open files: the proxies inherit this shell's limit. The idle workload holds IDLE_CONNS client
# connections in one proxy process (and as many sockets in the client), so it needs more than
# the usual 1024; raising the hard limit needs root (CAP_SYS_RESOURCE), the soft one does not.
IDLE_NOTE=""
if wants idle; then
    ulimit -n 65536 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -Sn)
    [[ $NOFILE == unlimited ]] && NOFILE=1048576
    if ((IDLE_CONNS + 256 > NOFILE)); then
        ((NOFILE > 512)) || die "open-files limit $NOFILE is too low for the idle workload (ulimit -n)"
        IDLE_NOTE="IDLE_CONNS=$IDLE_CONNS lowered to $((NOFILE - 256)): the open-files limit is $NOFILE and could not be raised (needs root with CAP_SYS_RESOURCE, or a higher LimitNOFILE / limits.conf nofile)"
        IDLE_CONNS=$((NOFILE - 256))
        log "WARNING: $IDLE_NOTE"
    fi
fi

# Pinning: proxy CPU list and "load" CPU list (load generator + backends).
PROXY_CPUS="" LOAD_CPUS="" PIN_DESC="none (all processes float over all $NCPU CPUs)"
case $PIN in
    auto) if ((THREADS == 1 && NCPU >= 2)); then PROXY_CPUS=0 LOAD_CPUS=1-$((NCPU - 1)); fi
        [[ $LOAD_CPUS == 1-1 ]] && LOAD_CPUS=1 ;;
    0 | none | off) ;;
    *:*) PROXY_CPUS=${PIN%%:*} LOAD_CPUS=${PIN#*:} ;;
    *) die "PIN must be auto, 0 or PROXY_CPUS:LOAD_CPUS (got '$PIN')" ;;
esac
LOAD_PREFIX=()
[[ -n $LOAD_CPUS ]] && LOAD_PREFIX=(taskset -c "$LOAD_CPUS")
[[ -n $PROXY_CPUS ]] && PIN_DESC="proxy (or the baseline backend) on CPU $PROXY_CPUS; the load generator + the 3 backends on CPU $LOAD_CPUS"

for p in "${BACKEND_PORTS[@]}" "$BASELINE_PORT" "$HERD_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$HERD_ADMIN_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is already in use"
done

: >"$RESULTS_DIR/summary.md"
log "results, configs and logs: $RESULTS_DIR"
log "workloads: $WORKLOADS; threads=$THREADS duration=${DURATION}s connections=$CONNECTIONS wrk_threads=$WRK_THREADS pin: $PIN_DESC"

# A self-signed certificate for the h2tls workload (P-256: the handshake cost is the same for all
# three proxies and is paid once per connection, h2load keeps its connections).
TLS_DIR=$RESULTS_DIR/tls
if wants h2tls; then
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$RESULTS_DIR/openssl.log" 2>&1 ||
        die "openssl could not make a certificate (see $RESULTS_DIR/openssl.log)"
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"   # HAProxy: chain + key in one file
fi

# ---------------------------------------------------------------- backends
UPSTREAMS=() BACKEND_PIDS=()
for i in "${!BACKEND_PORTS[@]}"; do
    p=${BACKEND_PORTS[$i]}
    start "backend-$p" "$LOAD_CPUS" env PORT="$p" HERD_INSTANCE="backend-$((i + 1))" "$DEMO_BIN"
    UPSTREAMS+=("127.0.0.1:$p") BACKEND_PIDS+=("$LAST_PID")
done
for p in "${BACKEND_PORTS[@]}"; do
    wait_http "http://127.0.0.1:$p/" 30 || die "backend on port $p did not come up (see $RESULTS_DIR/backend-$p.log)"
done

# check_backends: all three backends still run (a figure measured without them means nothing).
check_backends() {
    local i
    for i in "${!BACKEND_PIDS[@]}"; do
        kill -0 "${BACKEND_PIDS[$i]}" 2>/dev/null ||
            die "backend ${UPSTREAMS[$i]} (pid ${BACKEND_PIDS[$i]}) has exited (see $RESULTS_DIR/backend-${BACKEND_PORTS[$i]}.log)"
    done
}

# ---------------------------------------------------------------- workloads
declare -A RPS P50 P99 PCPU CPUS OTHER ERRS XFER TLSINFO OPENED ALIVE RSS0 RSS1 RSSPC PSSPC
TARGETS_RUN=() DISTURBED=()

# set_workload NAME: what the load is, where its files go; clears the previous workload's figures.
# WSUB: prefix of this workload's files in RESULTS_DIR ("" for small, as before workloads existed).
set_workload() {
    WL=$1 SCHEME=http URL_PATH=/ TOOL=wrk CONNS=$CONNECTIONS BODY=0 WSUB="$1/"
    case $WL in
        small) WSUB="" WL_DESC="GET / (~20-byte body), HTTP/1.1 keep-alive" ;;
        10k) URL_PATH=/bytes/10240 BODY=10240 WL_DESC="GET /bytes/10240 (10 KiB body), HTTP/1.1 keep-alive" ;;
        1m) URL_PATH=/bytes/1048576 BODY=1048576 CONNS=$CONNECTIONS_1M
            WL_DESC="GET /bytes/1048576 (1 MiB body), HTTP/1.1 keep-alive" ;;
        h2tls) SCHEME=https TOOL=h2load CONNS=$H2_CLIENTS
            WL_DESC="GET / (~20-byte body), HTTP/2 over TLS to the proxy, HTTP/1.1 to the backends" ;;
        idle) TOOL=idle CONNS=$IDLE_CONNS
            WL_DESC="memory per idle HTTP/1.1 keep-alive connection ($IDLE_CONNS open at once, each after one GET /)" ;;
    esac
    mkdir -p "$RESULTS_DIR/$WSUB"
    RPS=() P50=() P99=() PCPU=() CPUS=() OTHER=() ERRS=() XFER=() TLSINFO=()
    OPENED=() ALIVE=() RSS0=() RSS1=() RSSPC=() PSSPC=()
    TARGETS_RUN=() DISTURBED=()
}

to_ms() { # "412.00us" | "1.23ms" | "1.02s" | "2.00m" -> milliseconds
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
        else if (v ~ /m$/) { sub(/m$/,"",v); printf "%.3f", v*60000 }
        else print "?" }'
}

# check_spread NAME PORT: the proxy answers with the demo body and reaches all backends.
check_spread() {
    local name=$1 port=$2 i seen
    seen=$(for ((i = 0; i < 3 * ${#UPSTREAMS[@]}; i++)); do curl -sk -m 2 "$SCHEME://127.0.0.1:$port/" || true; echo; done |
        grep -o 'backend-[0-9]*' | sort -u | tr '\n' ' ')
    log "$name: backends answering through it: ${seen:-none}"
    [[ $(wc -w <<<"$seen") -eq ${#UPSTREAMS[@]} ]] || log "WARNING: $name does not reach all ${#UPSTREAMS[@]} backends"
}

# check_body NAME PORT: the workload's URL answers 200 with exactly BODY bytes through the target.
check_body() {
    local got
    got=$(curl -sk -m 10 -o /dev/null -w '%{http_code} %{size_download}' "$SCHEME://127.0.0.1:$2$URL_PATH" || true)
    [[ $got == "200 $BODY" ]] || die "$1: GET $URL_PATH answered '$got' (status, bytes), expected '200 $BODY'"
}

# wait_quiet NAME: bounded wait until nothing else is using the CPU (another user's build or tests).
wait_quiet() {
    local name=$1 start=$SECONDS a b busy
    ((WAIT_QUIET > 0)) || return 0
    while :; do
        a=$(total_busy "$(cpu_snapshot)")
        sleep 1
        b=$(total_busy "$(cpu_snapshot)")
        busy=$((100 * (b - a) / CLK_TCK))
        ((busy < 10)) && return 0
        if ((SECONDS - start >= WAIT_QUIET)); then
            log "WARNING: $name: machine still busy (${busy}% of a core) after ${WAIT_QUIET}s; measuring anyway"
            return 0
        fi
        log "$name: machine busy (${busy}% of a core in use by others); waiting (up to ${WAIT_QUIET}s)"
        sleep 2
    done
}

# load_run SECS URL OUT [LATENCY_LOG]: one run of the workload's load generator.
load_run() {
    local secs=$1 url=$2 out=$3 lat=${4:-} extra=()
    case $TOOL in
        wrk)
            [[ -n $lat ]] && extra=(--latency)
            timeout $((secs + 60)) "${LOAD_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" "${extra[@]}" "$url" >"$out" 2>&1 ;;
        h2load)
            [[ -n $lat ]] && extra=(--log-file="$lat")
            timeout $((secs + 60)) "${LOAD_PREFIX[@]}" h2load -t"$H2_THREADS" -c"$CONNS" -m"$H2_STREAMS" -D"$secs" "${extra[@]}" "$url" >"$out" 2>&1 ;;
    esac
}

# measure NAME PORT PID: warm up, run the load, record figures. PID: the process whose CPU we account.
measure() {
    local name=$1 port=$2 pid=$3 attempt out
    out=$RESULTS_DIR/$WSUB$TOOL-$name.txt
    for ((attempt = 1; ; attempt++)); do
        measure_once "$name" "$port" "$pid" "$out"
        ((OTHER[$name] > OTHER_WARN)) || break
        if ((attempt > RETRIES)); then
            log "WARNING: $name: other processes used ${OTHER[$name]}% of a core during the run; its figures are disturbed"
            DISTURBED+=("$name")
            break
        fi
        log "$name: disturbed (other processes used ${OTHER[$name]}% of a core); measuring again ($attempt/$RETRIES)"
        mv "$out" "${out%.txt}-disturbed-$attempt.txt"
    done
    TARGETS_RUN+=("$name")
}
measure_once() {
    local name=$1 port=$2 pid=$3 out=$4
    local url="$SCHEME://127.0.0.1:$port$URL_PATH" lat="${4%.txt}-latencies.tsv"
    wait_quiet "$name"
    log "$name: warm-up ${WARMUP}s"
    load_run "$WARMUP" "$url" "${out%.txt}-warmup.txt" ||
        die "$name: warm-up $TOOL failed (see ${out%.txt}-warmup.txt)"
    log "$name: measuring ${DURATION}s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    local t0 t1 c0 c1 s0 s1 o0 o1
    c0=$(cpu_snapshot) t0=$(proc_ticks "$pid") o0=$(our_ticks "$pid") s0=$(date +%s.%N)
    load_run "$DURATION" "$url" "$out" "$lat" || die "$name: $TOOL failed (see $out)"
    c1=$(cpu_snapshot) t1=$(proc_ticks "$pid") o1=$(our_ticks "$pid") s1=$(date +%s.%N)
    kill -0 "$pid" 2>/dev/null || die "$name: process $pid died during the run"

    "parse_$TOOL" "$name" "$out" "$lat"
    PCPU[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s0="$s0" -v s1="$s1" 'BEGIN{printf "%.0f", 100*d/hz/(s1-s0)}')
    CPUS[$name]=$(cpu_busy_pct "$c0" "$c1")
    # CPU used by anything else on the machine (other users' builds/tests, kernel softirq work not
    # charged to a process), % of one core. A few % is normal; more means the run was disturbed.
    OTHER[$name]=$(awk -v d=$(($(total_busy "$c1") - $(total_busy "$c0") - (o1 - o0))) -v hz="$CLK_TCK" -v s0="$s0" -v s1="$s1" \
        'BEGIN{v=100*d/hz/(s1-s0); printf "%.0f", (v<0?0:v)}')
    [[ -n ${RPS[$name]} ]] || die "$name: could not parse $TOOL output ($out)"
    log "$name: ${RPS[$name]} req/s (${XFER[$name]}), p50 ${P50[$name]} ms, p99 ${P99[$name]} ms, process CPU ${PCPU[$name]}%, per-CPU busy ${CPUS[$name]}%, other ${OTHER[$name]}%, ${ERRS[$name]}"
}
parse_wrk() {
    local name=$1 out=$2 non2xx sockerr
    RPS[$name]=$(awk '/^Requests\/sec:/{print $2}' "$out")
    XFER[$name]=$(awk '/^Transfer\/sec:/{print $2"/s"}' "$out")
    P50[$name]=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    P99[$name]=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/{gsub(",","");print "connect="$4" read="$6" write="$8" timeout="$10}' "$out")
    ERRS[$name]="non2xx=${non2xx:-0}${sockerr:+ $sockerr}"
}
# h2load prints only min/max/mean/sd of request times; p50/p99 come from its --log-file (one line
# per request: start µs, status, µs until the end of the response).
parse_h2load() {
    local name=$1 out=$2 lat=$3 p
    RPS[$name]=$(awk '/^finished in/{print $4}' "$out")
    XFER[$name]=$(awk '/^finished in/{print $6}' "$out")
    p=$(awk -F'\t' '{print $3}' "$lat" 2>/dev/null | sort -n | awk '{v[NR]=$1} END{
        if (NR == 0) { print "? ?"; exit }
        i = int(NR * 0.50 + 0.999999); j = int(NR * 0.99 + 0.999999)
        printf "%.3f %.3f", v[i] / 1000, v[j] / 1000 }')
    read -r "P50[$name]" "P99[$name]" <<<"$p"
    ERRS[$name]=$(awk '/^requests:/{f=$10; e=$12; t=$14} /^status codes:/{n=$5+$7+$9}
        END{printf "non2xx=%d failed=%d errored=%d timeout=%d", n, f, e, t}' "$out")
    TLSINFO[$name]=$(awk -F': ' '/^TLS Protocol:/{p=$2} /^Cipher:/{c=$2} /^Application protocol:/{a=$2}
        END{printf "%s %s ALPN %s", p, c, a}' "$out")
    [[ ${TLSINFO[$name]} == *"ALPN h2" ]] || die "$name: h2load did not negotiate HTTP/2 over TLS (${TLSINFO[$name]}; see $out)"
}

# ---------------------------------------------------------------- idle connections
tree_pids() { local c; echo "$1"; for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done; }
mem_kb() { # mem_kb PID -> "RSS PSS" in KiB, summed over the process and its descendants
    local p rss=0 pss=0 v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
        rss=$((rss + ${v:-0}))
        v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        pss=$((pss + ${v:-0}))
    done
    echo "$rss $pss"
}

# measure_idle NAME PORT PID: memory of PID's process tree before and while IDLE_CONNS idle
# keep-alive connections are open to it (bench/idle_conns.py, on the load CPUs).
measure_idle() {
    local name=$1 port=$2 pid=$3 clog cpid i limit r0 p0 r1 p1 opened alive
    clog=$RESULTS_DIR/${WSUB}idle-$name.log
    sleep 1
    read -r r0 p0 <<<"$(mem_kb "$pid")"
    log "$name: opening $IDLE_CONNS idle keep-alive connections (RSS before: $((r0 / 1024)) MiB)"
    start "${WSUB}idle-$name" "$LOAD_CPUS" python3 "$ROOT/bench/idle_conns.py" --port "$port" --conns "$IDLE_CONNS"
    cpid=$LAST_PID
    limit=$((60 + IDLE_CONNS / 100))
    for ((i = 0; i < limit * 10; i++)); do
        grep -qs '^READY' "$clog" && break
        kill -0 "$cpid" 2>/dev/null || die "$name: the idle client exited early (see $clog)"
        kill -0 "$pid" 2>/dev/null || die "$name: process $pid died while connections were being opened"
        sleep 0.1
    done
    grep -qs '^READY' "$clog" || die "$name: the idle client did not open its connections within ${limit}s (see $clog)"
    sleep "$IDLE_SETTLE"
    read -r r1 p1 <<<"$(mem_kb "$pid")"
    kill -0 "$pid" 2>/dev/null || die "$name: process $pid died while holding idle connections"
    kill -USR1 "$cpid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$cpid"
    opened=$(awk '/^open /{print $2}' "$clog")
    alive=$(awk '/^alive /{print $2}' "$clog")
    [[ -n $opened && -n $alive ]] || die "$name: could not parse the idle client's output ($clog)"
    ((opened > 0)) || die "$name: no idle connection could be opened (see $clog)"
    OPENED[$name]=$opened ALIVE[$name]=$alive RSS0[$name]=$r0 RSS1[$name]=$r1
    RSSPC[$name]=$(((r1 - r0) * 1024 / opened)) PSSPC[$name]=$(((p1 - p0) * 1024 / opened))
    log "$name: $opened open ($alive still open after the measurement), RSS $((r0 / 1024)) -> $((r1 / 1024)) MiB, ${RSSPC[$name]} B/conn RSS, ${PSSPC[$name]} B/conn PSS"
    ((opened == IDLE_CONNS && alive == opened)) ||
        log "WARNING: $name: $opened of $IDLE_CONNS connections opened, $alive still open when measured (see $clog)"
    TARGETS_RUN+=("$name")
}

# measure_target NAME PORT PID: the current workload's measurement of one started target.
measure_target() {
    check_backends
    if [[ $TOOL == idle ]]; then
        measure_idle "$@"
    else
        ((BODY == 0)) || check_body "$1" "$2"
        measure "$@"
    fi
    check_backends
}

# ---------------------------------------------------------------- targets
# Idle connections stay open for this long in every proxy (herd client_header_timeout and
# idle_timeout, nginx keepalive_timeout, HAProxy timeout client / http-keep-alive), so that none
# is closed while IDLE_CONNS connections are being opened and measured.
IDLE_KEEP=300

run_baseline() {
    # A fourth demo-app on its own port, on the proxy's CPU: what one backend does when the load
    # generator hits it directly with nothing in between.
    if [[ $WL == h2tls ]]; then
        log "baseline: skipped for h2tls (demo-app does not speak TLS)"
        return 0
    fi
    start "${WSUB}backend-baseline" "$PROXY_CPUS" env PORT="$BASELINE_PORT" HERD_INSTANCE=baseline "$DEMO_BIN"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$BASELINE_PORT/" 30 "$pid" || die "baseline backend did not come up"
    measure_target baseline "$BASELINE_PORT" "$pid"
    stop_pid "$pid"
}

run_herd() {
    local dir=$RESULTS_DIR/${WSUB}herd servers
    mkdir -p "$dir/logs"
    servers=$(printf '"%s", ' "${UPSTREAMS[@]}")
    {
        cat <<EOF
[gateway]
listen = "127.0.0.1:$HERD_PORT"
shutdown_timeout = "1s"
threads = $THREADS
EOF
        # Extra [gateway] keys for experiments (e.g. HERD_GATEWAY='idle_release = "off"').
        [[ -n ${HERD_GATEWAY:-} ]] && printf '%s\n' "$HERD_GATEWAY"
        # max_connections is unlimited by default (0): nothing to raise for the idle workload.
        [[ $WL == idle ]] && printf 'client_header_timeout = "%ss"\nidle_timeout = "%ss"\n' "$IDLE_KEEP" "$IDLE_KEEP"
        [[ $WL == h2tls ]] && printf '\n[gateway.tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
        cat <<EOF

[admin]
listen = "127.0.0.1:$HERD_ADMIN_PORT"

[logs]
dir = "$dir/logs"

[[app]]
name = "bench"
servers = [${servers%, }]
balance = "round_robin"

[app.health]
interval = "2s"
EOF
    } >"$dir/herd.toml"
    start "${WSUB}herd" "$PROXY_CPUS" env TOKIO_WORKER_THREADS="$THREADS" "$HERD_BIN" up -c "$dir/herd.toml"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$HERD_ADMIN_PORT/health" 30 "$pid" || die "herd did not become healthy (see $RESULTS_DIR/${WSUB}herd.log)"
    wait_http "$SCHEME://127.0.0.1:$HERD_PORT/" 30 "$pid" || die "herd gateway does not answer (see $RESULTS_DIR/${WSUB}herd.log)"
    check_spread herd "$HERD_PORT"
    measure_target herd "$HERD_PORT" "$pid"
    stop_pid "$pid"
}

run_nginx() {
    local dir=$RESULTS_DIR/${WSUB}nginx u listen="127.0.0.1:$NGINX_PORT" conns=4096 server_extra=""
    mkdir -p "$dir/logs"
    case $WL in
        h2tls) listen+=" ssl http2"
            # nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols; herd and HAProxy use it.
            server_extra="ssl_certificate $TLS_DIR/cert.pem; ssl_certificate_key $TLS_DIR/key.pem; ssl_protocols TLSv1.2 TLSv1.3;" ;;
        # Every idle client connection may land on one worker: each worker can hold them all,
        # twice over, because nginx starts closing idle keep-alive connections ("worker_connections
        # are not enough, reusing connections") once fewer than 1/16 of them are free.
        idle) conns=$((2 * IDLE_CONNS + 1024)) server_extra="keepalive_timeout ${IDLE_KEEP}s;" ;;
    esac
    {
        cat <<EOF
worker_processes $THREADS;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;

events {
    worker_connections $conns;
}

http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # herd and HAProxy never close a keep-alive connection after N requests; nginx's default
    # is 1000 (client side and upstream side). Raised so that all three keep connections open.
    keepalive_requests 1000000;
    # A response larger than proxy_buffers is relayed as it comes instead of being spooled to
    # a temporary file on disk (herd and HAProxy never write bodies to disk).
    proxy_max_temp_file_size 0;

    upstream bench {
EOF
        for u in "${UPSTREAMS[@]}"; do echo "        server $u;"; done
        cat <<EOF
        keepalive 32;
        keepalive_requests 1000000;
    }

    server {
        listen $listen;
        $server_extra
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    nginx -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" >"$RESULTS_DIR/${WSUB}nginx-test.log" 2>&1 ||
        die "nginx config test failed (see $RESULTS_DIR/${WSUB}nginx-test.log)"
    start "${WSUB}nginx" "$PROXY_CPUS" nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf"
    local pid=$LAST_PID
    wait_http "$SCHEME://127.0.0.1:$NGINX_PORT/" 30 "$pid" || die "nginx does not answer (see $RESULTS_DIR/${WSUB}nginx.log, $dir/logs/error.log)"
    check_spread nginx "$NGINX_PORT"
    measure_target nginx "$NGINX_PORT" "$pid"
    stop_pid "$pid"
}

run_haproxy() {
    local dir=$RESULTS_DIR/${WSUB}haproxy i maxconn=4096 bind="127.0.0.1:$HAPROXY_PORT" idle_s=60 limits=""
    mkdir -p "$dir"
    [[ $WL == h2tls ]] && bind+=" ssl crt $TLS_DIR/haproxy.pem alpn h2,http/1.1"
    # HAProxy wants 2 x maxconn open files (a server side per client connection) and, by default
    # (strict-limits), refuses to start when it cannot raise its limit that far. Idle client
    # connections need no server side, so where the hard limit is lower it runs with what it has.
    [[ $WL == idle ]] && maxconn=$((IDLE_CONNS + 1024)) idle_s=$IDLE_KEEP limits="    no strict-limits"
    {
        cat <<EOF
global
    nbthread $THREADS
    maxconn $maxconn
$limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client ${idle_s}s
    timeout server 60s
    timeout http-keep-alive ${idle_s}s

frontend fe
    bind $bind
    default_backend be

backend be
    balance roundrobin
EOF
        for i in "${!UPSTREAMS[@]}"; do echo "    server s$((i + 1)) ${UPSTREAMS[$i]} check inter 2s"; done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" >"$RESULTS_DIR/${WSUB}haproxy-test.log" 2>&1 ||
        die "haproxy config check failed (see $RESULTS_DIR/${WSUB}haproxy-test.log)"
    start "${WSUB}haproxy" "$PROXY_CPUS" haproxy -db -f "$dir/haproxy.cfg"
    local pid=$LAST_PID
    wait_http "$SCHEME://127.0.0.1:$HAPROXY_PORT/" 30 "$pid" || die "haproxy does not answer (see $RESULTS_DIR/${WSUB}haproxy.log)"
    check_spread haproxy "$HAPROXY_PORT"
    measure_target haproxy "$HAPROXY_PORT" "$pid"
    stop_pid "$pid"
}

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2fx", a/b; else print "n/a" }'; }
per_core() { awk -v r="$1" -v c="$2" 'BEGIN{ if (c > 0) printf "%.0f", r/(c/100); else print "n/a" }'; }

report_load() {
    local t th xh="" xs=""
    echo
    echo "herd bench, workload $WL: $WL_DESC"
    echo "threads=$THREADS (herd: threads = $THREADS, nginx: worker_processes $THREADS, haproxy: nbthread $THREADS)"
    if [[ $TOOL == wrk ]]; then
        echo "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency $URL_PATH, ${WARMUP}s warm-up; $NCPU CPUs; pinning: $PIN_DESC"
    else
        echo "h2load -t$H2_THREADS -c$CONNS -m$H2_STREAMS -D$DURATION --log-file (p50/p99 from it), ${WARMUP}s warm-up; $NCPU CPUs; pinning: $PIN_DESC"
    fi
    [[ $WL == 10k || $WL == 1m ]] && xh=" transfer/s |" xs="-----------:|"
    echo
    printf "| %-8s | %7s | %10s |$xh %8s | %8s | %8s | %14s | %9s | %5s | %s |\n" \
        target threads "req/s" "p50 ms" "p99 ms" "proc CPU" "req/s per core" "CPU busy" "other" "errors"
    printf "|%s|%s|%s|$xs%s|%s|%s|%s|%s|%s|%s|\n" ---------- ---------: ------------: ----------: ----------: ----------: ----------------: ----------: -------: --------
    for t in "${TARGETS_RUN[@]}"; do
        th=$THREADS
        [[ $t == baseline ]] && th="1 (app)"
        [[ -n $xh ]] && xs=$(printf ' %10s |' "${XFER[$t]}")
        printf "| %-8s | %7s | %10s |$xs %8s | %8s | %7s%% | %14s | %8s%% | %4s%% | %s |\n" \
            "$t" "$th" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${PCPU[$t]}" \
            "$(per_core "${RPS[$t]}" "${PCPU[$t]}")" "${CPUS[$t]}" "${OTHER[$t]}" "${ERRS[$t]}"
    done
    echo
    echo "proc CPU: CPU time of the proxy process(es) (baseline: the backend) during the measured run, % of one core."
    echo "req/s per core: req/s / (proc CPU / 100). CPU busy: per-CPU busy % over the run (cpu0/cpu1/...), all processes."
    echo "other: CPU used by processes outside this benchmark (and uncharged kernel work), % of one core."
    if [[ $TOOL == h2load ]]; then
        for t in "${TARGETS_RUN[@]}"; do echo "$t: ${TLSINFO[$t]}"; done
    fi
    if ((${#DISTURBED[@]})); then
        echo
        echo "WARNING: disturbed by other load (other > ${OTHER_WARN}%): ${DISTURBED[*]}. Re-run on a quiet machine."
    fi
    if [[ -n ${RPS[herd]:-} ]]; then
        echo
        for o in nginx haproxy; do
            [[ -n ${RPS[$o]:-} ]] || continue
            echo "herd / $o: req/s $(ratio "${RPS[herd]}" "${RPS[$o]}"), req/s per core $(ratio \
                "$(per_core "${RPS[herd]}" "${PCPU[herd]}")" "$(per_core "${RPS[$o]}" "${PCPU[$o]}")"), p99 $(ratio "${P99[herd]}" "${P99[$o]}") (lower is better)"
        done
    fi
}

report_idle() {
    local t th
    echo
    echo "herd bench, workload idle: $WL_DESC"
    echo "threads=$THREADS; memory of the proxy's process tree (nginx: master + workers) $IDLE_SETTLE s after the last connection opened, minus before; $NCPU CPUs; pinning: $PIN_DESC"
    [[ -n $IDLE_NOTE ]] && echo "WARNING: $IDLE_NOTE"
    echo
    printf '| %-8s | %7s | %7s | %7s | %10s | %10s | %10s | %10s |\n' \
        target threads opened "alive" "RSS before" "RSS after" "RSS B/conn" "PSS B/conn"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------- --------: --------: --------: -----------: -----------: -----------: -----------:
    for t in "${TARGETS_RUN[@]}"; do
        th=$THREADS
        [[ $t == baseline ]] && th="1 (app)"
        printf '| %-8s | %7s | %7s | %7s | %6s MiB | %6s MiB | %10s | %10s |\n' "$t" "$th" "${OPENED[$t]}" "${ALIVE[$t]}" \
            "$((RSS0[$t] / 1024))" "$((RSS1[$t] / 1024))" "${RSSPC[$t]}" "${PSSPC[$t]}"
    done
    echo
    echo "opened: connections that got their 200; alive: still open after the measurement (a proxy that closed"
    echo "some would look cheaper than it is). B/conn: (after - before) / opened, bytes. PSS counts a page"
    echo "shared by n processes as 1/n (nginx's workers share the master's pages; RSS counts them in each)."
    if [[ -n ${PSSPC[herd]:-} ]]; then
        echo
        for o in nginx haproxy; do
            [[ -n ${PSSPC[$o]:-} ]] || continue
            echo "herd / $o: memory per idle connection, PSS $(ratio "${PSSPC[herd]}" "${PSSPC[$o]}"), RSS $(ratio "${RSSPC[herd]}" "${RSSPC[$o]}") (lower is better)"
        done
    fi
}

for w in $WORKLOADS; do
    set_workload "$w"
    log "workload $WL: $WL_DESC"
    for t in $ONLY; do "run_$t"; done
    if [[ $TOOL == idle ]]; then report_idle; else report_load; fi | tee -a "$RESULTS_DIR/summary.md"
done
{
    echo
    echo "raw output, configs and logs: $RESULTS_DIR"
} | tee -a "$RESULTS_DIR/summary.md"
