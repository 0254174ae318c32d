#!/usr/bin/env bash
# What idempotence costs a native acks=all producer (see idempotence.py).
#   benches/idempotence.sh            (RUNS=5 DURATION=10s for longer runs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin oxbow
exec python3 benches/idempotence.py
