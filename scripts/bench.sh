#!/usr/bin/env bash
# The one command that measures im-gateway (BENCHMARKS.md).
#
#   scripts/bench.sh [--quick] [--connections N] [--shards N] [--out DIR]
#
# Builds in release, runs the machine's floors (no gateway: accept, push, fan-out, and
# a raw epoll echo server's CPU per round trip), then starts a fresh gateway (free
# ports) and runs hold, storm, heartbeat (CPU per HEARTBEAT round trip), push
# (saturated, half that rate, and a fixed 20,000/s) and fanout against it with
# `loadtest`. Each step's JSON lands in DIR (default target/bench); `loadtest report`
# folds them into DIR/report.json and prints the figures against the targets and
# against the floors. Everything it starts is stopped on exit, failure included.
#
# --quick: 18,000 connections, short phases (about 3 minutes once built).
# default: as many connections as one gateway process may hold here (19,000; the
#          open-file limit is 20,000), longer phases.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
CONNS=""
SHARDS=2
OUT=target/bench
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --connections) CONNS="$2"; shift ;;
        --shards) SHARDS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [[ $QUICK == 1 ]]; then
    CONNS=${CONNS:-18000}; HOLD_S=10; PUSH_S=8; FLOOR_ROUNDS=20; ROUNDS=5; RT_S=4
else
    CONNS=${CONNS:-19000}; HOLD_S=60; PUSH_S=30; FLOOR_ROUNDS=60; ROUNDS=15; RT_S=15
fi
# Round trips (echo floor and HEARTBEAT): one in flight per connection, one phase per
# connection count.
RT_CONNS=100,1000
# The fixed push rate the latency target is stated at.
FIXED_RATE=20000
# Connections for the push phases: all of them; pushes go to batches of 100 users.
BATCH=100
CONTENT=64
# Attempts per second while ramping up the hold (the storm runs flat out).
HOLD_RATE=6000
LOG=${BENCH_RUST_LOG:-info}

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/gateway.log

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

free_port WS_PORT
free_port ADMIN_PORT
TARGET=127.0.0.1:$WS_PORT
ADMIN=127.0.0.1:$ADMIN_PORT
GW_PID=""

admin_get() { http_get "$ADMIN_PORT" "$1"; }

start_gateway() {
    RUST_LOG=$LOG "$GW" --listen "$TARGET" --admin "$ADMIN" --shards "$SHARDS" >>"$OUT/gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 1 200); do
        if admin_get /readyz 2>/dev/null | grep -q '"ready":true'; then return; fi
        if ! kill -0 "$GW_PID" 2>/dev/null; then echo "gateway died at start:" >&2; tail -5 "$OUT/gateway.log" >&2; exit 1; fi
        sleep 0.05
    done
    echo "gateway not ready" >&2
    exit 1
}

stop_gateway() {
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
}

# Waits until the gateway holds no connection (the previous step's clients are gone).
wait_empty() {
    for _ in $(seq 1 600); do
        if admin_get /v1/stats | grep -q '"open_connections":0[,}]'; then return; fi
        sleep 0.05
    done
    echo "gateway still holds connections" >&2
    exit 1
}

lt() { "$LT" --target "$TARGET" --admin "$ADMIN" --gateway-pid "$GW_PID" --json "$@"; }

echo "== floor: raw TCP accept, push and fan-out floors, $CONNS sockets; epoll echo floor, $RT_CONNS connections (no gateway)"
"$LT" --json floor --connections "$CONNS" --rate 0 --threads "$SHARDS" --content-bytes "$CONTENT" \
    --push-rounds "$FLOOR_ROUNDS" --rounds "$ROUNDS" --echo-connections "$RT_CONNS" --echo-s "$RT_S" >"$OUT/floor.json"

echo "== hold: $CONNS idle authenticated connections on a fresh gateway, ${HOLD_S}s"
start_gateway
lt hold --connections "$CONNS" --rate "$HOLD_RATE" --duration "$HOLD_S" >"$OUT/hold.json"
wait_empty

echo "== storm: $CONNS connections flat out"
lt storm --connections "$CONNS" --rate 0 >"$OUT/storm.json"
wait_empty

echo "== heartbeat: HEARTBEAT round trips, one in flight per connection, $RT_CONNS connections, ${RT_S}s each"
lt heartbeat --connections "${RT_CONNS##*,}" --rate "$HOLD_RATE" --steps "$RT_CONNS" --duration "$RT_S" >"$OUT/heartbeat.json"
wait_empty

echo "== push: saturated, open loop at half that rate, then at $FIXED_RATE/s, ${PUSH_S}s each"
lt push --connections "$CONNS" --rate "$HOLD_RATE" --batch "$BATCH" --duration "$PUSH_S" \
    --content-bytes "$CONTENT" --fixed-rate "$FIXED_RATE" >"$OUT/push.json"
wait_empty

echo "== fanout: broadcast and list push to $CONNS, $ROUNDS rounds"
lt fanout --connections "$CONNS" --rate "$HOLD_RATE" --rounds "$ROUNDS" --content-bytes "$CONTENT" >"$OUT/fanout.json"
stop_gateway

QUICK_JSON=false
[[ $QUICK == 1 ]] && QUICK_JSON=true
PARAMS=$(printf '{"quick":%s,"connections":%s,"shards":%s,"hold_s":%s,"push_phase_s":%s,"push_batch":%s,"content_bytes":%s,"fanout_rounds":%s,"round_trip_connections":"%s","round_trip_s":%s,"push_fixed_rate_per_s":%s,"rust_log":"%s","commit":"%s","date":"%s","machine":"%s cores, %s kB RAM","load_average":"%s"}' \
    "$QUICK_JSON" "$CONNS" "$SHARDS" "$HOLD_S" "$PUSH_S" "$BATCH" "$CONTENT" "$ROUNDS" "$RT_CONNS" "$RT_S" "$FIXED_RATE" "$LOG" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u +%FT%TZ)" \
    "$(nproc)" "$(awk '/MemTotal/{print $2}' /proc/meminfo)" "$(cut -d' ' -f1-3 /proc/loadavg)")
echo "== report: $OUT/report.json"
"$LT" report --dir "$OUT" --params "$PARAMS"
