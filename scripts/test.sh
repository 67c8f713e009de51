#!/usr/bin/env bash
# Installs what is missing, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# Every fuzz target for a short smoke run from its committed seeds (scripts/fuzz.sh).
scripts/fuzz.sh "${SAMOS_FUZZ_SECONDS:-20}"
# One closing line for the whole run (cargo's own last line is a crate's doc-tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
