#!/usr/bin/env bash
# Installs what is missing, builds Samos (release) and runs the main job on the embedded
# default: `samos serve` (MQTT on 127.0.0.1:1883, metrics on 127.0.0.1:9883, state in ./data)
# with simulated sensor nodes joining and publishing (`samos simulate`, the paper's protocol).
#
# Arguments go to `samos serve` (e.g. --config samos.toml). SAMOS_SIMULATE_NODES sets the
# number of virtual nodes (default 5; 0 runs the server alone). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p samos
bin=./target/release/samos
nodes=${SAMOS_SIMULATE_NODES:-5}
if [ "$nodes" = 0 ]; then
  exec "$bin" serve "$@"
fi

work=$(mktemp -d)
ready="$work/ready.json"
"$bin" serve --ready-file "$ready" "$@" &
server=$!
cleanup() {
  kill "${sim:-}" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 100); do
  [ -s "$ready" ] && break
  kill -0 "$server" 2>/dev/null || { echo "samos serve did not start" >&2; exit 1; }
  sleep 0.1
done
addr=$(grep -o '"mqtt":\["[^"]*"' "$ready" | cut -d'"' -f4)
echo "run.sh: samos serve is up on $addr; starting $nodes simulated nodes (node SIM001 gets a planted temperature ramp)" >&2
# The paper samples every 60/40/20 s; --speed 30 makes that 2 s / 1.3 s / 0.7 s.
"$bin" simulate --server "$addr" --nodes "$nodes" --speed 30 --ramp 1 &
sim=$!
wait "$server"
