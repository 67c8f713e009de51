#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for SECONDS each, from the committed seeds
# (fuzz/seeds/TARGET) plus the corpus grown by earlier runs (fuzz/corpus/TARGET, not
# committed), and prints one line per target: executions, coverage, corpus size, crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        (default: 60 s, every target)
#
# A crash leaves its input in fuzz/artifacts/TARGET/ and makes the script fail; reproduce it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`, then turn it
# into a regression test beside the code it broke. cargo-fuzz needs nightly features, which
# RUSTC_BOOTSTRAP=1 enables on the stable toolchain; `cargo install cargo-fuzz` once.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build --fuzz-dir fuzz -O -a
summary="target/fuzz-summary.md"
mkdir -p target
printf '| target | seconds | executions | coverage (edges) | corpus | crashes |\n| --- | --- | --- | --- | --- | --- |\n' > "$summary"
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    log="target/fuzz-$t.log"
    status=0
    cargo fuzz run --fuzz-dir fuzz -O -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    crashes=0
    if [ "$status" -ne 0 ]; then
        crashes=1
        failed=1
        echo "fuzz: $t FAILED (exit $status); its log: $log" >&2
        grep -E 'panicked|ERROR|SUMMARY|artifact' "$log" | head -5 >&2 || true
    fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "$runs" "$cov" "$corpus" "$crashes" >> "$summary"
done
cat "$summary"
exit "$failed"
