#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, then every test.
# Installs what the tests need when it is missing: Debian's chromium for the dashboard's
# real-browser test (tests/dashboard.rs fails, never skips, without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (tests/dashboard.rs)"
    sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1 | tee target/test.log
