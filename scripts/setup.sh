#!/usr/bin/env bash
# Installs what Samos needs on a Debian machine that has the Rust toolchain; idempotent.
# Debian packages: the MQTT reference clients and broker used by tests and benchmarks, openssl
# for test certificates, libxml2 and libclang for node-configuration validation, Mesa's software
# Vulkan (lavapipe) for the GPU backend without a GPU, a sans-serif font for PNG plots, the
# open FPGA tools (Verilator, Icarus Verilog, yosys, nextpnr-ice40, icestorm),
# PostgreSQL for the sink's tests (no service is started: tests run their own clusters),
# Chromium and chromedriver for the dashboard's browser tests, HAProxy for the load-balancer tests.
# PyPI: paho-mqtt 2.x (the independent Python client of the tests), pyarrow (reads back the
# Parquet files; its Flight client queries Flight SQL), duckdb (the SQL benchmark's baseline),
# deltalake (reads the Delta table), psycopg 3 and the ADBC Flight SQL driver (the SQL
# endpoints' clients), aiosmtpd (the SMTP server alert mail goes to).
# crates.io: Garage 2.5, the S3-compatible server the object-store tests start (built once per
# machine into /opt/garage, or ~/.local/opt/garage without root: about 10 minutes on 2 cores).
set -euo pipefail

need_apt=()
# True when some file matches one of the glob patterns.
have() { for p in "$@"; do compgen -G "$p" >/dev/null && return 0; done; return 1; }
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null || need_apt+=(mosquitto)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v cc >/dev/null || need_apt+=(build-essential)
# jemalloc (the samos binary's allocator) is built from source with configure and make.
command -v make >/dev/null || need_apt+=(make)
# The C++ compiler builds the Verilator model of the FPGA kernel.
command -v c++ >/dev/null || need_apt+=(g++)
# libxml2 validates node configurations (libxml crate: pkg-config probe, bindgen needs libclang).
pkg-config --exists libxml-2.0 2>/dev/null || need_apt+=(libxml2-dev)
# (libclang.so itself: libclang-cpp.so, present on some images, is not what bindgen loads.)
have '/usr/lib/llvm-*/lib/libclang.so*' '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' || need_apt+=(libclang-dev)
# The GPU backend's software path (CI has no GPU): Mesa's lavapipe Vulkan driver and the loader.
have '/usr/share/vulkan/icd.d/lvp_icd.*.json' || need_apt+=(mesa-vulkan-drivers)
have '/usr/lib/*/libvulkan.so.1' '/usr/lib/libvulkan.so.1' || need_apt+=(libvulkan1)
# Labels of PNG plots (samos mine --plot FILE.png).
have /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || need_apt+=(fonts-dejavu-core)
# The FPGA kernel (hw/): Verilator builds the co-simulation model linked into the offload crate
# and lints the RTL, Icarus Verilog runs the test benches, yosys + nextpnr-ice40 + icepack give
# the synthesis report (hw/synth.sh).
command -v verilator >/dev/null || need_apt+=(verilator)
command -v iverilog >/dev/null || need_apt+=(iverilog)
command -v yosys >/dev/null || need_apt+=(yosys)
command -v nextpnr-ice40 >/dev/null || need_apt+=(nextpnr-ice40)
command -v icepack >/dev/null || need_apt+=(fpga-icestorm)
# PostgreSQL server binaries: tests start throwaway clusters (initdb in a temp dir, free port).
have '/usr/lib/postgresql/*/bin/initdb' || need_apt+=(postgresql)
# psql: the PostgreSQL wire endpoint's tests drive it.
command -v psql >/dev/null || need_apt+=(postgresql-client)
# The dashboard's browser tests: Debian's Chromium, driven headless through chromedriver.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# HAProxy: the TCP load balancer in front of Samos in the PROXY protocol tests.
command -v haproxy >/dev/null || need_apt+=(haproxy)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Packages may start system services (a broker on 1883, a database on 5432). Tests never use
# fixed ports, but stop the broker so `samos serve` can take the default port.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl stop mosquitto || true
fi

pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages "$@"
}
if ! python3 -c 'import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__ >= "2" else 1)' 2>/dev/null; then
  echo "setup: installing paho-mqtt 2.x from PyPI"
  pip_install 'paho-mqtt>=2,<3'
fi
# pyarrow: the independent reader that checks the Parquet files Samos writes.
if ! python3 -c 'import pyarrow.dataset' 2>/dev/null; then
  echo "setup: installing pyarrow from PyPI"
  pip_install pyarrow
fi
# duckdb: the baseline of the SQL benchmark (cargo bench --bench sql), on the same files.
if ! python3 -c 'import duckdb' 2>/dev/null; then
  echo "setup: installing duckdb from PyPI"
  pip_install duckdb
fi
# deltalake: an independent reader of the Delta table Samos keeps on object storage.
if ! python3 -c 'import deltalake' 2>/dev/null; then
  echo "setup: installing deltalake from PyPI"
  pip_install deltalake
fi

# The SQL endpoints' real clients: psycopg 3 (libpq, PostgreSQL wire) and the ADBC Flight SQL
# driver (pyarrow.flight comes with pyarrow).
if ! python3 -c 'import psycopg, adbc_driver_flightsql.dbapi' 2>/dev/null; then
  echo "setup: installing psycopg and adbc-driver-flightsql from PyPI"
  pip_install 'psycopg[binary]>=3.1' adbc-driver-flightsql adbc-driver-manager
fi

# aiosmtpd: the real SMTP server the alerting tests mail through (STARTTLS, AUTH).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "setup: installing aiosmtpd from PyPI"
  pip_install aiosmtpd
fi

# cargo-fuzz: runs the fuzz targets (the tests run each for 20 s). Once per machine.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (once per machine)"
  start=$(date +%s)
  cargo install --locked --quiet cargo-fuzz
  echo "setup: cargo-fuzz installed in $(( $(date +%s) - start )) s"
fi

# Garage: a real S3 server for the object-store tests. A long build, so it is done once per
# machine, into a fixed place the tests look in (SAMOS_GARAGE overrides).
garage_root=/opt/garage
[ "$(id -u)" -ne 0 ] && garage_root="$HOME/.local/opt/garage"
if [ -z "${SAMOS_GARAGE:-}" ] && ! command -v garage >/dev/null && [ ! -x "$garage_root/bin/garage" ]; then
  echo "setup: building Garage 2.5.0 into $garage_root (once per machine; about 10 minutes)"
  start=$(date +%s)
  cargo install --locked --quiet garage --version 2.5.0 --root "$garage_root"
  echo "setup: Garage built in $(( $(date +%s) - start )) s"
fi
