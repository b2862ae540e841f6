#!/usr/bin/env bash
# Egress proxy throughput and latency (issue 4's benchmark): a 1 GiB download, small HTTP
# requests and new-connection latency, directly over loopback, through corral's proxy and
# through tinyproxy, in one run. Installs tinyproxy when missing, then runs the Rust bench
# (crates/corral-proxy/benches/egress.rs), which prints markdown tables.
# Usage: benches/egress.sh   (sizes: EGRESS_BENCH_BYTES, _ROUNDS, _SECONDS, _CLIENTS, _SAMPLES)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tinyproxy >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy
exec cargo bench -p corral-proxy --locked --bench egress
