#!/usr/bin/env bash
# One run, one machine: raw disk (fio), loopback TCP (iperf3), Oxbow (Kafka and native
# protocol) and NATS JetStream, all driven by `oxbow bench`; writes benches/RESULTS.md.
#   benches/side_by_side.sh                  (RUNS=3 DURATION=5s WARMUP=1s by default)
#   RUNS=5 DURATION=30s benches/side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in fio iperf3 nats-server; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
cargo build --release -p oxbow-tools --features nats
exec python3 benches/side_by_side.py "$@"
