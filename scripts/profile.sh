#!/usr/bin/env bash
# Syscalls, io_uring requests, context switches and CPU per operation (perf stat),
# for the round trip and the handshake, floor next to gateway (BENCHMARKS.md, profile).
#
#   scripts/profile.sh [--steps 100,1000] [--duration S] [--storm N] [--shards N] [--out DIR] [--record]
#
# Round trips: the raw epoll echo floor (`loadtest floor-echo-server`) and the gateway's
# HEARTBEAT, one `loadtest echo` / `loadtest heartbeat` run per connection count, the
# same client for both. Handshakes: `loadtest storm` of N connections against the
# gateway. perf counts only each run's measured window (`--perf-ctl`: loadtest enables
# and disables the counters around it), and each count is divided by the operations in
# that window. --record: `perf record -g` (cpu-clock) over the same windows instead,
# into DIR/NAME.data (`perf report -i DIR/NAME.data --no-children --sort dso,sym`); not
# both at once, since every traced syscall would charge perf's own work to the process.
# Needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 1. Everything it
# starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=100,1000
DURATION=5
STORM=10000
SHARDS=2
OUT=target/profile
RECORD=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --steps) STEPS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --storm) STORM="$2"; shift ;;
        --shards) SHARDS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --record) RECORD=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/*.perf "$OUT"/*.data "$OUT"/*.json "$OUT"/ctl* "$OUT"/ack* "$OUT"/gateway.log

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# Every syscall (the table shows those that happened), io_uring requests submitted and
# completed, task work runs (completions the kernel posts from the task's context).
EVENTS="task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_*"
EVENTS+=",io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_complete,io_uring:io_uring_task_work_run"
mkfifo "$OUT/ctl" "$OUT/ack"

# measure NAME PID OPS_KEY -- LOADTEST ARGS...: perf stat on PID around the window;
# OPS_KEY names the JSON number that counts the window's operations.
measure() {
    local name=$1 pid=$2 key=$3
    shift 4
    if [[ $RECORD == 1 ]]; then
        perf record -q -e cpu-clock -F 2999 -g -p "$pid" --delay=-1 --control "fifo:$OUT/ctl,$OUT/ack" \
            -o "$OUT/$name.data" >/dev/null 2>&1 &
    else
        perf stat -x, -e "$EVENTS" -p "$pid" --delay=-1 --control "fifo:$OUT/ctl,$OUT/ack" -o "$OUT/$name.perf" &
    fi
    local perf_pid=$!
    PIDS+=("$perf_pid")
    "$LT" --perf-ctl "$OUT/ctl,$OUT/ack" --json "$@" >"$OUT/$name.json"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    local ops
    ops=$(grep -o "\"$key\":[0-9]*" "$OUT/$name.json" | head -1 | cut -d: -f2)
    local cpu
    cpu=$(grep -o '"server_us_per_rt":{[^}]*}' "$OUT/$name.json" | head -1 || true)
    echo "== $name: $ops operations in the window ${cpu:+; $cpu}"
    if [[ $RECORD == 1 ]]; then
        perf report -i "$OUT/$name.data" --no-children -g none --sort dso 2>/dev/null | grep '%' | head -4
        return
    fi
    awk -F, -v ops="$ops" '
        /^#/ || NF < 3 { next }
        { v = $1; unit = $2; ev = $3; sub(/^syscalls:sys_enter_/, "", ev); sub(/^raw_syscalls:sys_enter/, "syscalls (all)", ev) }
        v !~ /^[0-9.]+$/ || v == 0 { next }
        unit == "msec" { printf "  %-32s %10.2f us per op\n", ev, v * 1000 / ops; next }
        { printf "  %-32s %10.3f per op  (%d)\n", ev, v / ops, v }' "$OUT/$name.perf"
}

echo "== echo floor (raw epoll, $SHARDS threads)"
coproc ECHO { exec "$LT" floor-echo-server --threads "$SHARDS"; }
PIDS+=("$ECHO_PID")
read -r line <&"${ECHO[0]}"
ECHO_ADDR=${line#LISTEN }
IFS=, read -ra NS <<<"$STEPS"
for n in "${NS[@]}"; do
    measure "echo-$n" "$ECHO_PID" round_trips -- --target "$ECHO_ADDR" --gateway-pid "$ECHO_PID" \
        echo --connections "$n" --duration "$DURATION"
done
kill "$ECHO_PID"

free_port WS_PORT
free_port ADMIN_PORT
RUST_LOG=${PROFILE_RUST_LOG:-info} "$GW" --listen "127.0.0.1:$WS_PORT" --admin "127.0.0.1:$ADMIN_PORT" --shards "$SHARDS" \
    >>"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 1 200); do
    if http_get "$ADMIN_PORT" /readyz 2>/dev/null | grep -q '"ready":true'; then break; fi
    sleep 0.05
done
wait_empty() {
    for _ in $(seq 1 600); do
        if http_get "$ADMIN_PORT" /v1/stats | grep -q '"open_connections":0[,}]'; then return; fi
        sleep 0.05
    done
}
for n in "${NS[@]}"; do
    measure "heartbeat-$n" "$GW_PID" round_trips -- --target "127.0.0.1:$WS_PORT" --gateway-pid "$GW_PID" \
        heartbeat --connections "$n" --rate 5000 --duration "$DURATION"
    wait_empty
done
measure storm "$GW_PID" up -- --target "127.0.0.1:$WS_PORT" --gateway-pid "$GW_PID" \
    storm --connections "$STORM" --rate 0
echo "(storm: gateway CPU per handshake $(grep -o '"gateway_cpu_us_per_handshake":[0-9.]*' "$OUT/storm.json" | cut -d: -f2) us)"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
