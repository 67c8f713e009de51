#!/usr/bin/env bash
# Installs what is missing, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A one-shot build gains nothing from incremental compilation, and its caches were 2.1 GB of
# the 8.3 GB target directory of a cold run (CI ran out of disk). Set it to 1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# Every fuzz target for a short smoke run from its committed seeds (scripts/fuzz.sh).
scripts/fuzz.sh "${SAMOS_FUZZ_SECONDS:-20}"
# One closing line for the whole run (cargo's own last line is a crate's doc-tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
