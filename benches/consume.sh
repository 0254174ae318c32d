#!/usr/bin/env bash
# Catch-up consumers reading from disk beside fio's sequential reads of the same files, both
# protocols, one reader and several at once; prints a RESULTS.md section.
#   benches/consume.sh                   (RUNS=3 GB=4 FANOUT=4 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio; }
cargo build --release -p oxbow-tools
mkdir -p benches/out
exec python3 benches/consume.py "$@"
