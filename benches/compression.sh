#!/usr/bin/env bash
# Compressed against uncompressed batches on one release broker, both protocols, driven by
# `oxbow bench`; writes the compression section of benches/RESULTS.md.
#   benches/compression.sh                  (RUNS=3 DURATION=5s WARMUP=1s by default)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oxbow-tools
exec python3 benches/compression.py "$@"
