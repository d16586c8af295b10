#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, then every test.
# Installs what the tests need when it is missing (nothing beyond the Rust toolchain
# for the single-node suite).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1 | tee target/test.log
