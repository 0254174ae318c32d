#!/usr/bin/env bash
# The native consumer tiers (stream, buffered, dedicated) against the design note's targets.
#   benches/tiers.sh            (RUNS=5 DURATION=10s for longer runs; BENCH_DIR=/path)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin oxbow
exec python3 benches/tiers.py
