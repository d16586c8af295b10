#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, then every test.
# Installs what the tests need when it is missing: redis-server (Debian's package) for
# the cluster-mode tests, which this script starts on a free port for the run
# (IM_GATEWAY_TEST_REDIS_URL: not IMGW_*, which the gateway reads as config) and stops
# after. Tests that kill or restart Redis start their own. And chromium (Debian's
# package) for the dashboard test in a real headless browser.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (tests/dashboard.rs)"
    sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
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
