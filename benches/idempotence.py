#!/usr/bin/env python3
"""What idempotence costs a native producer under acks=all: the same release broker, the same
load, with and without producer ids and sequences (which also bound a producer to
PRODUCER_BATCHES_KEPT unanswered batches per partition). One partition, one producer, 1 KiB
messages, max rate, medians of RUNS runs; once with an fdatasync before every acknowledgement
and once with the log flushed every 100 ms.
"""
import datetime, os, platform, statistics, sys

sys.path.insert(0, os.path.dirname(__file__))
import side_by_side as sbs  # noqa: E402

FLUSH = {
    "flush always": 'flush = "always"\n',
    "flush every 100 ms": 'flush = "interval"\nflush_interval_ms = 100\n',
}


def main():
    rows = []
    for name, settings in FLUSH.items():
        proc, data, addrs = sbs.start_oxbow(settings)
        try:
            for idempotence in ("false", "true"):
                extra = ["--idempotence", idempotence]
                runs = [sbs.bench("native", addrs["native"], 1024, 1, "all", workload="produce",
                                  extra=extra) for _ in range(sbs.RUNS)]
                best = sbs.median_run(runs)
                rows.append((name, idempotence, statistics.median(r["msgs"] for r in runs), best))
        finally:
            sbs.stop(proc, data)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Run {when} on {os.cpu_count()} cores, kernel {platform.release()}; medians of "
          f"{sbs.RUNS} runs of {sbs.DURATION}.")
    print()
    print("| log | idempotent | msg/s | / not idempotent | publish p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    base = {}
    for name, idempotence, msgs, best in rows:
        base.setdefault(name, msgs)
        print(f"| {name} | {idempotence} | {msgs:,.0f} | {msgs / base[name]:.2f} "
              f"| {best['p50']:.2f} | {best['p99']:.2f} |")


if __name__ == "__main__":
    main()
