#!/usr/bin/env python3
"""The cleaner of compacted topics vs fio, in one run, on one file system.

A pass reads the log twice (once for the newest offset of each key, once to copy what it keeps)
in 1 MiB reads, one at a time, and writes the kept records. For each key count (few keys: almost
everything goes; many: a tenth stays), it builds a partition of TOTAL_MB of 1 KiB keyed
updates, times one pass with no I/O pacing, and, interleaved with the passes, fio's sequential
O_DIRECT read of a file of the same size at 1 MiB, queue depth 1: the rate the cleaner's reads
could reach. The cleaner's rate is the log bytes it cleaned per second; reading everything
twice, it could reach half of fio's. Each figure is the median of RUNS runs. Prints a Markdown
report (also written to benches/out/compaction-latest.md).
"""
import datetime, json, os, platform, shutil, statistics, subprocess, sys

RUNS = int(os.environ.get("RUNS", "3"))
TOTAL_MB = int(os.environ.get("TOTAL_MB", "1024"))
DIR = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "benches/out/scratch")
BENCH = "target/release/storage_bench"
KEYS = [1_000, 100_000]


def cleaner(keys):
    out = subprocess.run(
        [BENCH, "--dir", DIR, "compaction", "--total-bytes", str(TOTAL_MB << 20),
         "--keys", str(keys)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fio_read():
    path = os.path.join(DIR, "fio.data")
    common = [f"--filename={path}", "--bs=1M", "--direct=1", "--ioengine=io_uring",
              "--iodepth=1", f"--size={TOTAL_MB}M", "--output-format=json"]
    subprocess.run(["fio", "--name=fill", "--rw=write"] + common, check=True, capture_output=True)
    out = json.loads(subprocess.run(["fio", "--name=read", "--rw=read"] + common,
                                    check=True, capture_output=True, text=True).stdout)
    os.remove(path)
    return out["jobs"][0]["read"]["bw_bytes"] / 1e6


def main():
    os.makedirs(DIR, exist_ok=True)
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))
    uname = platform.uname()
    say(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"kernel {uname.release}, file system of `{DIR}`; {TOTAL_MB} MiB of 1 KiB records; "
        f"medians of {RUNS} runs.")
    say()
    say("| keys | log cleaned MiB | kept MiB | segments in → out | pass s | cleaner MB/s | fio read MB/s | cleaner / fio |")
    say("|---|---|---|---|---|---|---|---|")
    for keys in KEYS:
        base, ours = [], []
        for _ in range(RUNS):
            base.append(fio_read())
            ours.append(cleaner(keys))
        fio_mb = statistics.median(base)
        mb = statistics.median(r["mb_per_s"] for r in ours)
        r = ours[0]
        say(f"| {keys:,} | {r['cleaned_bytes'] >> 20} | {r['bytes_after'] >> 20} "
            f"| {r['segments_rewritten']} → {r['segments_written']} "
            f"| {statistics.median(x['seconds'] for x in ours):.2f} | {mb:.0f} | {fio_mb:.0f} | {mb / fio_mb:.2f} |")
    os.makedirs("benches/out", exist_ok=True)
    with open("benches/out/compaction-latest.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
