#!/usr/bin/env bash
# Kafka-protocol throughput and head latency of the release broker with real clients.
#   benches/kafka.sh            (RUNS=5 for steadier medians; BENCH_DIR=/path for the data dir)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat; }
python3 -c "import confluent_kafka" 2>/dev/null || python3 -m pip install -q confluent-kafka
cargo build --release --bin oxbow
exec python3 benches/kafka.py
