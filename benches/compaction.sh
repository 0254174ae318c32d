#!/usr/bin/env bash
# Compaction benchmark beside fio on the same file system. Usage:
#   benches/compaction.sh [DIR]        (DIR: where to write, default benches/out/scratch)
#   RUNS=5 TOTAL_MB=4096 benches/compaction.sh /mnt/nvme/scratch
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio; }
cargo build --release -p oxbow-benches --bin storage_bench
exec python3 benches/compaction.py "$@"
