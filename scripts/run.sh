#!/usr/bin/env bash
# Installs what is missing, builds Samos (release) and runs it on its embedded default:
# plain MQTT on 127.0.0.1:1883, metrics on 127.0.0.1:9883, state in ./data. Extra arguments go
# to `samos serve`, e.g. scripts/run.sh --config samos.toml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p samos
exec ./target/release/samos serve "$@"
