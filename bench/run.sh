#!/usr/bin/env bash
# herd vs nginx vs HAProxy: the same three demo-app backends behind each proxy, one wrk run per
# proxy, plus a direct-to-one-backend baseline. See bench/README.md for what it measures and the
# caveats. Everything listens on 127.0.0.1; every process this script starts is stopped on exit.
#
# Knobs (environment):
#   THREADS=1        worker threads/processes of each proxy (herd: TOKIO_WORKER_THREADS,
#                    nginx: worker_processes, haproxy: nbthread)
#   DURATION=10      seconds of each measured wrk run (after a 2 s warm-up)
#   CONNECTIONS=64   wrk connections (-c)
#   WRK_THREADS=1    wrk threads (-t)
#   PIN=auto         auto: with THREADS=1 on >= 2 CPUs, proxy on CPU 0, wrk + backends on CPU 1;
#                    0: no pinning; "P:L" (e.g. "0:1" or "0:1-3"): proxy on CPU list P,
#                    wrk + backends on CPU list L
#   WAIT_QUIET=30    before each target, wait up to N s until the machine is idle (< 10% of a core
#                    busy over 1 s); 0 disables. The run goes on (with a warning) after N s.
#   OTHER_WARN=15    flag a run when processes outside the benchmark used more than N% of a core
#   RETRIES=2        measure a flagged target again (after waiting for quiet) up to N times; the
#                    last attempt is reported, still flagged if it was disturbed too
#   BUILD=1          0 skips `cargo build --release`
#   INSTALL=1        0 never calls apt-get (fails if nginx/haproxy/wrk are missing)
#   ONLY="baseline herd nginx haproxy"   subset/order of targets to run
#   RESULTS_DIR      where configs, logs and raw wrk output go (default /tmp/herd-bench.XXXXXX)
#   BACKEND_PORTS="21001 21002 21003"  BASELINE_PORT=21000
#   HERD_PORT=18081 NGINX_PORT=18082 HAPROXY_PORT=18083 HERD_ADMIN_PORT=19091
set -euo pipefail

THREADS=${THREADS:-1}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
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

for v in THREADS DURATION CONNECTIONS WRK_THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer (got '${!v}')" >&2; exit 64; }
done
for v in WAIT_QUIET RETRIES OTHER_WARN; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a non-negative integer (got '${!v}')" >&2; exit 64; }
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/herd-bench.XXXXXX)}
mkdir -p "$RESULTS_DIR"
HERD_BIN=$ROOT/target/release/herd
DEMO_BIN=$ROOT/target/release/demo-app
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
        if [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true) == 200 ]]; then return 0; fi
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
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
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

# Pinning: proxy CPU list and "load" CPU list (wrk + backends).
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
[[ -n $PROXY_CPUS ]] && PIN_DESC="proxy (or the baseline backend) on CPU $PROXY_CPUS; wrk + the 3 backends on CPU $LOAD_CPUS"

for p in "${BACKEND_PORTS[@]}" "$BASELINE_PORT" "$HERD_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$HERD_ADMIN_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is already in use"
done

log "results, configs and logs: $RESULTS_DIR"
log "threads=$THREADS duration=${DURATION}s connections=$CONNECTIONS wrk_threads=$WRK_THREADS pin: $PIN_DESC"

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

# ---------------------------------------------------------------- one measurement
declare -A RPS P50 P99 PCPU CPUS OTHER ERRS
TARGETS_RUN=() DISTURBED=()

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
    seen=$(for ((i = 0; i < 3 * ${#UPSTREAMS[@]}; i++)); do curl -s -m 2 "http://127.0.0.1:$port/" || true; echo; done |
        grep -o 'backend-[0-9]*' | sort -u | tr '\n' ' ')
    log "$name: backends answering through it: ${seen:-none}"
    [[ $(wc -w <<<"$seen") -eq ${#UPSTREAMS[@]} ]] || log "WARNING: $name does not reach all ${#UPSTREAMS[@]} backends"
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

# measure NAME PORT PID: warm up, run wrk, record figures. PID: the process whose CPU we account.
measure() {
    local name=$1 port=$2 pid=$3 attempt
    for ((attempt = 1; ; attempt++)); do
        measure_once "$name" "$port" "$pid"
        ((OTHER[$name] > OTHER_WARN)) || break
        if ((attempt > RETRIES)); then
            log "WARNING: $name: other processes used ${OTHER[$name]}% of a core during the run; its figures are disturbed"
            DISTURBED+=("$name")
            break
        fi
        log "$name: disturbed (other processes used ${OTHER[$name]}% of a core); measuring again ($attempt/$RETRIES)"
        mv "$RESULTS_DIR/wrk-$name.txt" "$RESULTS_DIR/wrk-$name-disturbed-$attempt.txt"
    done
    TARGETS_RUN+=("$name")
}
measure_once() {
    local name=$1 port=$2 pid=$3
    local url="http://127.0.0.1:$port/" out="$RESULTS_DIR/wrk-$name.txt"
    wait_quiet "$name"
    log "$name: warm-up ${WARMUP}s"
    timeout $((WARMUP + 30)) "${LOAD_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$url" >"$RESULTS_DIR/wrk-$name-warmup.txt" 2>&1 ||
        die "$name: warm-up wrk failed (see $RESULTS_DIR/wrk-$name-warmup.txt)"
    log "$name: measuring ${DURATION}s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    local t0 t1 c0 c1 s0 s1 o0 o1
    c0=$(cpu_snapshot) t0=$(proc_ticks "$pid") o0=$(our_ticks "$pid") s0=$(date +%s.%N)
    timeout $((DURATION + 60)) "${LOAD_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 ||
        die "$name: wrk failed (see $out)"
    c1=$(cpu_snapshot) t1=$(proc_ticks "$pid") o1=$(our_ticks "$pid") s1=$(date +%s.%N)
    kill -0 "$pid" 2>/dev/null || die "$name: process $pid died during the run"

    RPS[$name]=$(awk '/^Requests\/sec:/{print $2}' "$out")
    P50[$name]=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    P99[$name]=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    PCPU[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s0="$s0" -v s1="$s1" 'BEGIN{printf "%.0f", 100*d/hz/(s1-s0)}')
    CPUS[$name]=$(cpu_busy_pct "$c0" "$c1")
    # CPU used by anything else on the machine (other users' builds/tests, kernel softirq work not
    # charged to a process), % of one core. A few % is normal; more means the run was disturbed.
    OTHER[$name]=$(awk -v d=$(($(total_busy "$c1") - $(total_busy "$c0") - (o1 - o0))) -v hz="$CLK_TCK" -v s0="$s0" -v s1="$s1" \
        'BEGIN{v=100*d/hz/(s1-s0); printf "%.0f", (v<0?0:v)}')
    local non2xx sockerr
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/{gsub(",","");print "connect="$4" read="$6" write="$8" timeout="$10}' "$out")
    ERRS[$name]="non2xx=${non2xx:-0}${sockerr:+ $sockerr}"
    [[ -n ${RPS[$name]} ]] || die "$name: could not parse wrk output ($out)"
    log "$name: ${RPS[$name]} req/s, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms, process CPU ${PCPU[$name]}%, per-CPU busy ${CPUS[$name]}%, other ${OTHER[$name]}%, ${ERRS[$name]}"
}

# ---------------------------------------------------------------- targets
run_baseline() {
    # A fourth demo-app on its own port, on the proxy's CPU: what one backend does when wrk hits it
    # directly with nothing in between.
    start "backend-baseline" "$PROXY_CPUS" env PORT="$BASELINE_PORT" HERD_INSTANCE=baseline "$DEMO_BIN"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$BASELINE_PORT/" 30 "$pid" || die "baseline backend did not come up"
    measure baseline "$BASELINE_PORT" "$pid"
    stop_pid "$pid"
}

run_herd() {
    local dir=$RESULTS_DIR/herd servers
    mkdir -p "$dir/logs"
    servers=$(printf '"%s", ' "${UPSTREAMS[@]}")
    cat >"$dir/herd.toml" <<EOF
[gateway]
listen = "127.0.0.1:$HERD_PORT"
shutdown_timeout = "1s"

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
    start herd "$PROXY_CPUS" env TOKIO_WORKER_THREADS="$THREADS" "$HERD_BIN" up -c "$dir/herd.toml"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$HERD_ADMIN_PORT/health" 30 "$pid" || die "herd did not become healthy (see $RESULTS_DIR/herd.log)"
    wait_http "http://127.0.0.1:$HERD_PORT/" 30 "$pid" || die "herd gateway does not answer (see $RESULTS_DIR/herd.log)"
    check_spread herd "$HERD_PORT"
    measure herd "$HERD_PORT" "$pid"
    stop_pid "$pid"
}

run_nginx() {
    local dir=$RESULTS_DIR/nginx u
    mkdir -p "$dir/logs"
    {
        cat <<EOF
worker_processes $THREADS;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;

events {
    worker_connections 4096;
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

    upstream bench {
EOF
        for u in "${UPSTREAMS[@]}"; do echo "        server $u;"; done
        cat <<EOF
        keepalive 32;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    nginx -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" >"$RESULTS_DIR/nginx-test.log" 2>&1 ||
        die "nginx config test failed (see $RESULTS_DIR/nginx-test.log)"
    start nginx "$PROXY_CPUS" nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/" 30 "$pid" || die "nginx does not answer (see $RESULTS_DIR/nginx.log, $dir/logs/error.log)"
    check_spread nginx "$NGINX_PORT"
    measure nginx "$NGINX_PORT" "$pid"
    stop_pid "$pid"
}

run_haproxy() {
    local dir=$RESULTS_DIR/haproxy i
    mkdir -p "$dir"
    {
        cat <<EOF
global
    nbthread $THREADS
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be

backend be
    balance roundrobin
EOF
        for i in "${!UPSTREAMS[@]}"; do echo "    server s$((i + 1)) ${UPSTREAMS[$i]} check inter 2s"; done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" >"$RESULTS_DIR/haproxy-test.log" 2>&1 ||
        die "haproxy config check failed (see $RESULTS_DIR/haproxy-test.log)"
    start haproxy "$PROXY_CPUS" haproxy -db -f "$dir/haproxy.cfg"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$HAPROXY_PORT/" 30 "$pid" || die "haproxy does not answer (see $RESULTS_DIR/haproxy.log)"
    check_spread haproxy "$HAPROXY_PORT"
    measure haproxy "$HAPROXY_PORT" "$pid"
    stop_pid "$pid"
}

for t in $ONLY; do
    case $t in
        baseline | herd | nginx | haproxy) "run_$t" ;;
        *) die "unknown target '$t' in ONLY (baseline, herd, nginx, haproxy)" ;;
    esac
done

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2fx", a/b; else print "n/a" }'; }
per_core() { awk -v r="$1" -v c="$2" 'BEGIN{ if (c > 0) printf "%.0f", r/(c/100); else print "n/a" }'; }

{
    echo
    echo "herd bench: threads=$THREADS (herd: TOKIO_WORKER_THREADS=$THREADS, nginx: worker_processes $THREADS, haproxy: nbthread $THREADS)"
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency, ${WARMUP}s warm-up; $NCPU CPUs; pinning: $PIN_DESC"
    echo
    printf '| %-8s | %7s | %10s | %8s | %8s | %8s | %14s | %9s | %5s | %s |\n' \
        target threads "req/s" "p50 ms" "p99 ms" "proc CPU" "req/s per core" "CPU busy" "other" "errors"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------- ---------: ------------: ----------: ----------: ----------: ----------------: ----------: -------: --------
    for t in "${TARGETS_RUN[@]}"; do
        th=$THREADS
        [[ $t == baseline ]] && th="1 (app)"
        printf '| %-8s | %7s | %10s | %8s | %8s | %7s%% | %14s | %8s%% | %4s%% | %s |\n' \
            "$t" "$th" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${PCPU[$t]}" \
            "$(per_core "${RPS[$t]}" "${PCPU[$t]}")" "${CPUS[$t]}" "${OTHER[$t]}" "${ERRS[$t]}"
    done
    echo
    echo "proc CPU: CPU time of the proxy process(es) (baseline: the backend) during the measured run, % of one core."
    echo "req/s per core: req/s / (proc CPU / 100). CPU busy: per-CPU busy % over the run (cpu0/cpu1/...), all processes."
    echo "other: CPU used by processes outside this benchmark (and uncharged kernel work), % of one core."
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
    echo
    echo "raw wrk output, configs and logs: $RESULTS_DIR"
} | tee "$RESULTS_DIR/summary.md"
