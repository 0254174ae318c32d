#!/usr/bin/env bash
# Storage engine benchmark beside fio on the same file system. Usage:
#   benches/storage.sh [DIR]        (DIR: where to write, default benches/out/scratch)
#   RUNS=5 SECONDS_PER_RUN=5 benches/storage.sh /mnt/nvme/scratch
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio; }
cargo build --release -p oxbow-benches --bin storage_bench
exec python3 benches/storage.py "$@"
