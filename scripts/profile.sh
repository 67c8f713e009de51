#!/usr/bin/env bash
# Profiles `samos serve` (release build) under one load of `samos bench`: where its CPU time
# goes (perf, by thread and by function) and which system calls it makes (strace -c), for the
# "where the time goes" tables of BENCHMARKS.md.
#
#   scripts/profile.sh paper|many [OUT_DIR]
#
#   paper   one node, 10,000 QoS 2 readings, one exchange at a time
#   many    1,000 nodes × 100 QoS 2 readings, 10 in flight each
#
# Needs `perf` (Debian: linux-perf) and `strace`. Runs the load twice on a fresh server each
# time: once under perf, once under strace (which slows every system call, so its run is not
# timed). Uses the benches' release build (CARGO_TARGET_DIR honoured). Writes OUT_DIR (default target/profile-SCENARIO): perf.data, threads.txt,
# functions.txt, syscalls.txt and the bench reports.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?paper or many}"
out="${2:-target/profile-$scenario}"
case "$scenario" in
    paper) load=(--clients 1 --messages 10000 --inflight 1) ;;
    many) load=(--clients 1000 --messages 100 --inflight 10) ;;
    *) echo "unknown scenario $scenario (paper or many)" >&2; exit 2 ;;
esac
# The benches' build (their feature set): `cargo build --release` would build every crate again.
cargo bench --bench limits --no-run
samos="${CARGO_TARGET_DIR:-target}/release/samos"
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() {
    rm -rf "$work/data" "$work/ready.json"
    "$samos" serve --data-dir "$work/data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
        --api-listen 127.0.0.1:0 --log warn --ready-file "$work/ready.json" &
    server=$!
    for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
    mqtt=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); m=r["mqtt"]; print(m if isinstance(m,str) else m[0])' "$work/ready.json")
}

start_server
perf record -F 4999 -g -o "$out/perf.data" -p "$server" 2>/dev/null &
perf_pid=$!
sleep 0.5
"$samos" bench --server "$mqtt" --qos 2 "${load[@]}" --quiet \
    | tee "$out/bench-perf.txt"
kill -INT "$perf_pid"
wait "$perf_pid" || true
kill "$server"; wait "$server" 2>/dev/null || true
report() {
    perf report -i "$out/perf.data" --stdio --no-children -g none "$@" 2>/dev/null \
        | grep -v -e '^#' -e '^$' | sed 's/ *$//' || true
}
report --sort comm > "$out/threads.txt"
report --sort comm,dso,symbol | head -60 > "$out/functions.txt" || true

start_server
strace -c -f -p "$server" -o "$out/syscalls.txt" &
strace_pid=$!
sleep 0.5
"$samos" bench --server "$mqtt" --qos 2 "${load[@]}" --quiet \
    > "$out/bench-strace.txt"
kill -INT "$strace_pid"
wait "$strace_pid" || true
echo "profile of $scenario: $out/{threads,functions,syscalls}.txt"
cat "$out/threads.txt"
head -30 "$out/functions.txt" || true
head -25 "$out/syscalls.txt" || true
