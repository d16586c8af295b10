#!/usr/bin/env bash
# Cluster scale on one box, past one process's open-file limit (BENCHMARKS.md):
# redis-server + NODES gateway processes (1 shard each), PER_NODE idle authenticated
# connections on each (loadtest hold over several client processes and 127.0.0.x
# sources), heartbeats on; while they are held, samples every node's RSS and CPU and
# Redis's memory, then measures cross-node push latency (clients on nodes 1..N-1,
# pushes through node N's admin API, so every delivery crosses Redis pub/sub).
#
#   scripts/cluster-bench.sh [--nodes 5] [--per-node 19000] [--hold 60] [--out DIR]
#
# Needs redis-server (apt-get install redis-server). Stops everything it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=5
PER_NODE=19000
HOLD_S=60
OUT=target/bench/cluster
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES="$2"; shift ;;
        --per-node) PER_NODE="$2"; shift ;;
        --hold) HOLD_S="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "cluster-bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $HOLD_S -lt 45 ]]; then HOLD_S=45; fi # the samples below take ~35 s after all are up
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/*

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

free_port REDIS_PORT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
    >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
REDIS_PID=$(redis-cli -p "$REDIS_PORT" info server | awk -F: '/process_id/{print $2}' | tr -d '\r')

WS=(); ADMIN=(); GPID=()
for i in $(seq 1 "$NODES"); do
    free_port ws; free_port admin
    IMGW_SERVER_PIN_CORES=false RUST_LOG=warn "$GW" --shards 1 --gateway-id "node$i" \
        --listen "127.0.0.1:$ws" --admin "127.0.0.1:$admin" --redis "redis://127.0.0.1:$REDIS_PORT/" \
        >"$OUT/node$i.log" 2>&1 &
    PIDS+=($!); GPID+=($!); WS+=("127.0.0.1:$ws"); ADMIN+=("$admin")
done
for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 1 200); do
        http_get "${ADMIN[$i]}" /readyz 2>/dev/null | grep -q '"ready":true' && break
        sleep 0.05
    done
done
for i in $(seq 0 $((NODES - 1))); do
    if ! kill -0 "${GPID[$i]}" 2>/dev/null; then
        echo "node$((i + 1)) did not start:" >&2
        tail -2 "$OUT/node$((i + 1)).log" >&2
        exit 1
    fi
done
echo "== $NODES nodes ready on redis :$REDIS_PORT"

RSS0=(); for p in "${GPID[@]}"; do RSS0+=("$(rss_kb "$p")"); done
REDIS_MEM0=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
SOCK0=$(awk '/^TCP:/{print $NF}' /proc/net/sockstat)

TOTAL=$((NODES * PER_NODE))
TARGETS=$(IFS=,; echo "${WS[*]}")
PROCS=$(( (TOTAL + 15999) / 16000 ))
echo "== hold: $TOTAL connections over $NODES nodes, $PROCS client processes, ${HOLD_S}s"
"$LT" --target "$TARGETS" --json hold --connections "$TOTAL" --procs "$PROCS" --rate 5000 \
    --source-ips 60 --duration "$HOLD_S" --heartbeat 30 >"$OUT/hold.json" &
HOLD_PID=$!
PIDS+=("$HOLD_PID")

# Wait until every node holds its share.
all_up() {
    local sum=0 n
    for a in "${ADMIN[@]}"; do
        n=$(http_get "$a" /v1/stats | grep -o '"open_connections":[0-9]*' | cut -d: -f2)
        sum=$((sum + ${n:-0}))
    done
    [[ $sum -ge $TOTAL ]]
}
for _ in $(seq 1 1200); do all_up && break; kill -0 "$HOLD_PID" || break; sleep 0.1; done
echo "== all up; sampling memory"
RSS1=(); for p in "${GPID[@]}"; do RSS1+=("$(rss_kb "$p")"); done
REDIS_MEM1=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
SOCK1=$(awk '/^TCP:/{print $NF}' /proc/net/sockstat)
T0=$(date +%s.%N)
C0=(); for p in "${GPID[@]}"; do C0+=("$(cpu_ticks "$p")"); done
RC0=$(cpu_ticks "$REDIS_PID")

# Let the registry settle first: the logins' batched writes may still be draining.
sleep "${SETTLE_S:-0}"
echo "== cross-node push while held: clients on nodes 1..$((NODES - 1)), pushes via node $NODES"
PUSH_TARGETS=$(IFS=,; echo "${WS[*]:0:$((NODES - 1))}")
"$LT" --target "$PUSH_TARGETS" --admin "127.0.0.1:${ADMIN[$((NODES - 1))]}" --json push \
    --connections 400 --first-user 9000000 --rate 2000 --no-saturate --push-rate 2000 --batch 10 \
    --duration 10 >"$OUT/push.json" || echo "push failed" >&2

# Each node's own view (push delivery latency router -> socket, loop stalls, per shard).
for i in $(seq 0 $((NODES - 1))); do
    http_get "${ADMIN[$i]}" /v1/stats | sed -n '/^{/,$p' >"$OUT/stats-node$((i + 1)).json"
done

sleep 20
T1=$(date +%s.%N)
C1=(); for p in "${GPID[@]}"; do C1+=("$(cpu_ticks "$p")"); done
RC1=$(cpu_ticks "$REDIS_PID")
wait "$HOLD_PID" || true

{
    echo "connections=$TOTAL nodes=$NODES per_node=$PER_NODE hold_s=$HOLD_S client_procs=$PROCS"
    TK=$(getconf CLK_TCK)
    WIN=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b - a}')
    pct() { awk -v d="$1" -v tk="$TK" -v w="$WIN" 'BEGIN{printf "%.1f", d * 100 / tk / w}'; }
    for i in $(seq 0 $((NODES - 1))); do
        echo "node$((i + 1)) rss_before_kb=${RSS0[$i]} rss_held_kb=${RSS1[$i]} per_conn_b=$(( (RSS1[i] - RSS0[i]) * 1024 / PER_NODE )) cpu_pct=$(pct $((C1[i] - C0[i])))"
    done
    echo "redis used_memory_before=$REDIS_MEM0 used_memory_held=$REDIS_MEM1 per_conn_b=$(( (REDIS_MEM1 - REDIS_MEM0) / TOTAL )) cpu_pct=$(pct $((RC1 - RC0)))"
    echo "kernel tcp mem pages before=$SOCK0 held=$SOCK1"
    echo "CPU sample window ${WIN}s while all are held (includes the cross-node push run)"
} | tee "$OUT/summary.txt"
echo "== hold report: $OUT/hold.json; push report: $OUT/push.json; nodes' /v1/stats: $OUT/stats-node*.json"
