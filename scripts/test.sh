#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, then every test.
# Installs what the tests need when it is missing: redis-server (Debian's package) for
# the cluster-mode tests, which this script starts on a free port for the run
# (IM_GATEWAY_TEST_REDIS_URL: not IMGW_*, which the gateway reads as config) and stops
# after. Tests that kill or restart Redis start their own. And chromium (Debian's
# package) for the dashboard and demo-page tests in a real headless browser. And
# Node.js with npm (Debian's packages when missing) for the JavaScript client
# (clients/js): npm ci from its lock file, a build, and its tests (node --test) against
# the gateway binary that cargo test built.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (tests/dashboard.rs)"
    sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing nodejs and npm (clients/js)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y nodejs npm
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y redis-server
fi

redis_pid=""
stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap stop_redis EXIT

# Start redis-server on a free port: try random ports until one serves PING.
start_redis() {
  local port attempt
  for attempt in $(seq 1 20); do
    port=$((20000 + RANDOM % 20000))
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 100); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        export IM_GATEWAY_TEST_REDIS_URL="redis://127.0.0.1:$port/"
        echo "== redis-server $(redis-server --version | awk '{print $3}') on port $port (pid $redis_pid)"
        return 0
      fi
      if ! kill -0 "$redis_pid" 2>/dev/null; then break; fi # port taken: try another
      sleep 0.1
    done
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  done
  echo "could not start redis-server" >&2
  return 1
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
start_redis
echo "== cargo test"
mkdir -p target
cargo test --workspace 2>&1 | tee target/test.log

echo "== JavaScript client (clients/js, node $(node --version))"
(
  cd clients/js
  npm ci --no-audit --no-fund
  npm run build
  # The committed browser bundle (served at /demo/) is this source's.
  if ! git diff --quiet -- ../../examples/web/im-gateway.js; then
    echo "examples/web/im-gateway.js is not the bundle of clients/js/src: run npm run build in clients/js and commit it" >&2
    exit 1
  fi
  # Node 20 and 21 have the global WebSocket behind a flag: turn it on so its test runs.
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" = 20 ] || [ "$major" = 21 ]; then export NODE_OPTIONS=--experimental-websocket; fi
  IMGW_BIN="$PWD/../../target/debug/im-gateway" node --test test/ 2>&1 | tee ../../target/test-js.log
)
