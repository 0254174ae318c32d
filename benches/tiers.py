#!/usr/bin/env python3
"""The native consumer's three tiers against the targets of the consumer-tiers design note
(stream about 10K msg/s at about 1 ms, buffered 50K+, dedicated 100K+), on one release broker.

Per tier: the delivered rate with the producer sending as fast as acks allow (medians of RUNS
runs), and the end-to-end latency at a fixed 10,000 msg/s with no producer linger (the run
with the median p99 of RUNS). The baseline, measured in the same
run on the same broker: the producer alone at max rate (what the consumers could at most be
offered). One partition, one producer, one exclusive reliable consumer, 100 B messages,
acks=1 with the log flushed every 100 ms (so that the disk does not set the pace).
"""
import datetime, os, platform, statistics, sys

sys.path.insert(0, os.path.dirname(__file__))
import side_by_side as sbs  # noqa: E402  (broker start, `oxbow bench` runs, medians)

TIERS = ["stream", "buffered:1024", "dedicated"]
SIZE = 100
LATENCY_RATE = 10_000
TARGETS = {"stream": "≈10K msg/s, ~1 ms", "buffered:1024": "≥50K msg/s", "dedicated": "≥100K msg/s"}


def main():
    proc, data, addrs = sbs.start_oxbow('flush = "interval"\nflush_interval_ms = 100\n')
    common = ["--subscription-type", "exclusive"]
    rows = []
    try:
        alone = [sbs.bench("native", addrs["native"], SIZE, 1, "1", workload="produce", extra=common)
                 for _ in range(sbs.RUNS)]
        baseline = statistics.median(r["msgs"] for r in alone)
        for tier in TIERS:
            extra = common + ["--tier", tier]
            runs = [sbs.bench("native", addrs["native"], SIZE, 1, "1", extra=extra)
                    for _ in range(sbs.RUNS)]
            delivered = statistics.median(r["consumed"] for r in runs)
            # No linger at a fixed rate: the producer's 1 ms batching wait is not the tier's.
            paced = [sbs.bench("native", addrs["native"], SIZE, 1, "1", rate=LATENCY_RATE,
                               extra=extra + ["--linger", "0ms"]) for _ in range(sbs.RUNS)]
            # The run with the median p99, so that its percentiles belong to one real run.
            paced = sorted(paced, key=lambda r: r["p99"])[len(paced) // 2]
            rows.append((tier, delivered, paced))
    finally:
        sbs.stop(proc, data)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Run {when} on {os.cpu_count()} cores, kernel {platform.release()}; medians of "
          f"{sbs.RUNS} runs of {sbs.DURATION}. Producer alone at max rate: {baseline:,.0f} msg/s.")
    print()
    print(f"| tier | delivered msg/s (max rate) | / producer alone | p50 ms at {LATENCY_RATE:,}/s "
          "| p99 ms | p99.9 ms | design-note target |")
    print("|---|---|---|---|---|---|---|")
    for tier, delivered, paced in rows:
        print(f"| {tier} | {delivered:,.0f} | {delivered / baseline:.2f} | {paced['p50']:.2f} "
              f"| {paced['p99']:.2f} | {paced['p999']:.2f} | {TARGETS[tier]} |")


if __name__ == "__main__":
    main()
