#!/usr/bin/env bash
# Cluster mode, locally: starts redis-server and three gateway nodes (A, B, C) on it,
# then shows a cross-node push and a cross-node kick, and stops everything it started.
#
#   scripts/cluster-demo.sh            # ports from 28100 up (DEMO_BASE_PORT to change)
#
# Needs redis-server (Debian: apt-get install redis-server) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

base=${DEMO_BASE_PORT:-28100}
redis_port=$((base + 79))
work=$(mktemp -d /tmp/imgw-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "== stopped everything; logs were in $work"
}
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }

echo "== building"
cargo build --quiet --bin im-gateway --example watch
gw=target/debug/im-gateway
watch=target/debug/examples/watch

wait_until() { # wait_until DESCRIPTION COMMAND...: poll up to 10 s
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what" >&2
  exit 1
}
admin() { echo "127.0.0.1:$((base + 90 + $1))"; }
ws() { echo "127.0.0.1:$((base + 80 + $1))"; }

echo "== redis-server on port $redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
wait_until "redis" redis-cli -p "$redis_port" ping

ids=(_ A B C)
for i in 1 2 3; do
  id=${ids[$i]}
  IMGW_SERVER_PIN_CORES=false "$gw" --shards 1 --gateway-id "$id" --listen "$(ws $i)" --admin "$(admin $i)" \
    --redis "redis://127.0.0.1:$redis_port/" >"$work/node-$id.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_until "node $i" curl -sf "http://$(admin $i)/readyz"; done
echo "== nodes A ($(ws 1)), B ($(ws 2)), C ($(ws 3)) ready; gateways in redis:"
redis-cli -p "$redis_port" zrange im:gateways 0 -1 withscores | paste - -

echo
echo "== user 1001 (platform 1) logs in on node A"
"$watch" "$(ws 1)" 1001 1 "1001 on A" &
pids+=($!)
wait_until "1001 online" sh -c "curl -s 'http://$(admin 3)/v1/online?user_ids=1001' | grep -q '\"online\":true'"
echo "-- node C's /v1/online:"
curl -s "http://$(admin 3)/v1/online?user_ids=1001"; echo
echo "-- redis: $(redis-cli -p "$redis_port" hgetall im:location:1001 | paste -sd' ')"

echo
echo "== cross-node push: POST /v1/push on node C for user 1001 (who is on A)"
curl -s -X POST "http://$(admin 3)/v1/push" -H 'content-type: application/json' \
  -d '{"user_ids":[1001],"msg":{"msg_id":1,"sender_id":42,"content":"hello from node C"}}'; echo
sleep 0.5 # let the watcher print before the next step (presentation only)

echo
echo "== cross-node kick: user 1001 logs in with the same platform on node B"
"$watch" "$(ws 2)" 1001 1 "1001 on B" &
pids+=($!)
wait_until "1001 only on B" sh -c "curl -s 'http://$(admin 3)/v1/online?user_ids=1001' | grep -q '\"gateway_id\":\"B\"' && ! curl -s 'http://$(admin 3)/v1/online?user_ids=1001' | grep -q '\"gateway_id\":\"A\"'"
echo "-- node C's /v1/online:"
curl -s "http://$(admin 3)/v1/online?user_ids=1001"; echo

echo
echo "== admin kick from node A for user 1001 (now on B)"
curl -s -X POST "http://$(admin 1)/v1/kick" -H 'content-type: application/json' \
  -d '{"user_id":1001,"reason":"demo over"}'; echo
wait_until "1001 offline" sh -c "curl -s 'http://$(admin 1)/v1/online?user_ids=1001' | grep -q '\"online\":false'"
sleep 0.5 # presentation only: let the watchers print their close
echo "== done"
