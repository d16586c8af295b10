#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (see SECURITY.md), one after another, each for
# SECONDS (default 600), at the lowest CPU priority, and prints libFuzzer's final stats.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: packet_dispatch ws_frame handshake admin_json
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them. New inputs go to fuzz/corpus/<target> (not
# committed); fuzz/seeds/<target> is the committed starting corpus; a crash lands in
# fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packet_dispatch ws_frame handshake admin_json)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t for ${secs}s"
    nice -n 19 cargo fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 2>&1 \
        | grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus)|ERROR|SUMMARY|panicked' || true
    echo "corpus: $(ls "fuzz/corpus/$t" | wc -l) files"
done
