#!/usr/bin/env bash
# What transactions cost a Kafka producer (see transactions.py).
#   benches/transactions.sh            (RUNS=5 MESSAGES=100000 for longer runs)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import confluent_kafka" 2>/dev/null || python3 -m pip install -q confluent-kafka
cargo build --release --bin oxbow
exec python3 benches/transactions.py
