#!/usr/bin/env bash
# Native-protocol subscriptions vs the Kafka consume path on one release broker.
#   benches/native.sh            (RUNS=5 MESSAGES=500000 for longer runs; BENCH_DIR=/path)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat; }
python3 -c "import confluent_kafka" 2>/dev/null || python3 -m pip install -q confluent-kafka
cargo build --release --bin oxbow --bin native_bench
exec python3 benches/native.py
