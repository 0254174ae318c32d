#!/usr/bin/env python3
"""Compression beside no compression, in one run on one machine (see compression.sh).

1 KiB messages of varied, compressible text (`--payload text`: lz4 ~2x, zstd ~3x), 1 partition,
one producer and one consumer, over the native and the Kafka protocol, under both durability
settings of side_by_side.py. Throughput is the median of RUNS max-rate runs; latency is end to
end (send to delivery, through the broker's decompression for native subscriptions), from
fixed-rate runs at 50% of each codec's own median and at one common rate (COMMON_RATE msg/s,
well within every codec's capacity), so compression's own cost shows at the same load.
The section replaces the one between the markers in benches/RESULTS.md (side_by_side.py keeps
it when it rewrites the rest).
"""
import datetime, os, re, subprocess
import side_by_side as sbs

CODECS = ("none", "lz4", "zstd")
COMMON_RATE = int(os.environ.get("COMMON_RATE", "20000"))
BEGIN, END = "<!-- compression: benches/compression.sh -->", "<!-- /compression -->"


def main():
    lines = [BEGIN, "## Compression: 1 KiB text messages, 1 partition, 1 producer, 1 consumer", ""]
    lines.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
                 f"`RUNS={sbs.RUNS} DURATION={sbs.DURATION} WARMUP={sbs.WARMUP} benches/compression.sh`; "
                 "MB/s counts uncompressed message bytes; end-to-end latency at 50% of each row's own max "
                 f"and at {COMMON_RATE:,} msg/s for all.")
    lines.append("")
    lines.append("| durability | protocol | compression | msg/s | MB/s | vs none | at 50%: p50 ms | p99 ms | p99.9 ms "
                 f"| at {COMMON_RATE:,}/s: p50 ms | p99 ms | p99.9 ms |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for durability, (log_settings, acks) in sbs.DURABILITY.items():
        for protocol in ("native", "kafka"):
            proc, data, addrs = sbs.start_oxbow(log_settings)
            try:
                rows = {}
                for codec in CODECS:
                    extra = ["--payload", "text", "--compression", codec]
                    runs = [sbs.bench(protocol, addrs[protocol], 1024, 1, acks, extra=extra) for _ in range(sbs.RUNS)]
                    rows[codec] = sbs.median_run(runs)
                for codec in CODECS:
                    extra = ["--payload", "text", "--compression", codec]
                    best = rows[codec]
                    half = sbs.bench(protocol, addrs[protocol], 1024, 1, acks, rate=max(1, int(best["msgs"] / 2)),
                                     extra=extra)
                    common = sbs.bench(protocol, addrs[protocol], 1024, 1, acks, rate=COMMON_RATE, extra=extra)
                    lines.append(f"| {durability} | {protocol} | {codec} | {best['msgs']:,.0f} | {best['mb']:.1f} | "
                                 f"{best['msgs'] / rows['none']['msgs']:.2f} | {half['p50']:.2f} | "
                                 f"{half['p99']:.2f} | {half['p999']:.2f} | {common['p50']:.2f} | "
                                 f"{common['p99']:.2f} | {common['p999']:.2f} |")
                    print(lines[-1], flush=True)
            finally:
                sbs.stop(proc, data)
    lines.append(END)
    section = "\n".join(lines)
    text = open(sbs.OUT).read() if os.path.exists(sbs.OUT) else ""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    with open(sbs.OUT, "w") as f:
        f.write(text.rstrip("\n") + "\n")
    subprocess.run(["rm", "-rf", sbs.SCRATCH])


if __name__ == "__main__":
    main()
