#!/usr/bin/env python3
"""Storage engine vs fio, in one run, on one file system.

For each frame size (4 KiB, 64 KiB, 1 MiB) and flush policy (never, always), runs Oxbow's append
benchmark with 1 and 64 concurrent appenders and, interleaved with them, fio with the same block
size, O_DIRECT,
io_uring, queue depth 1, and the same fdatasync cadence (none for `never`, one per write for
`always`: the cost an engine without group commit pays). Each figure is the median of RUNS runs.
Then times recovery of a 1 GiB partition with and without its index files.
Prints a Markdown report (also written to benches/out/storage-latest.md).
"""
import json, os, shutil, statistics, subprocess, sys, datetime, platform

RUNS = int(os.environ.get("RUNS", "3"))
SECONDS = float(os.environ.get("SECONDS_PER_RUN", "3"))
DIR = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "benches/out/scratch")
BENCH = "target/release/storage_bench"
FRAMES = [4096, 65536, 1 << 20]


def oxbow(frame, flush, appenders):
    out = subprocess.run(
        [BENCH, "--dir", DIR, "append", "--frame-bytes", str(frame), "--flush", flush,
         "--appenders", str(appenders), "--seconds", str(SECONDS)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fio(frame, flush):
    path = os.path.join(DIR, "fio.data")
    if os.path.exists(path):
        os.remove(path)
    args = ["fio", "--name=append", f"--filename={path}", "--rw=write", f"--bs={frame}",
            "--direct=1", "--ioengine=io_uring", "--iodepth=1", "--fallocate=none",
            "--size=16G", f"--runtime={SECONDS}", "--time_based", "--output-format=json"]
    if flush == "always":
        args.append("--fdatasync=1")
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    os.remove(path)
    write = out["jobs"][0]["write"]
    return {"mb_per_s": write["bw_bytes"] / 1e6, "iops": write["iops"]}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    os.makedirs(DIR, exist_ok=True)
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))
    uname = platform.uname()
    say(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"kernel {uname.release}, file system of `{DIR}`; medians of {RUNS} runs of {SECONDS:g} s.")
    say()
    say("| frame | flush | appenders | Oxbow MB/s | appends/s | p50 µs | p99 µs | p99.9 µs | fio MB/s | fio writes/s | Oxbow / fio |")
    say("|---|---|---|---|---|---|---|---|---|---|---|")
    for frame in FRAMES:
        for flush in ["never", "always"]:
            # Interleaved (fio, Oxbow x1, Oxbow x64, again...) so drift of this noisy disk
            # over the minutes of a row hits baseline and subject alike.
            base, ours = [], {1: [], 64: []}
            for _ in range(RUNS):
                base.append(fio(frame, flush))
                for appenders in ours:
                    ours[appenders].append(oxbow(frame, flush, appenders))
            fio_mb, fio_iops = median(base, "mb_per_s"), median(base, "iops")
            for appenders, runs in ours.items():
                mb = median(runs, "mb_per_s")
                say(f"| {frame // 1024} KiB | {flush} | {appenders} | {mb:.0f} | {median(runs, 'appends_per_s'):.0f} "
                    f"| {median(runs, 'p50_us'):.0f} | {median(runs, 'p99_us'):.0f} | {median(runs, 'p999_us'):.0f} "
                    f"| {fio_mb:.0f} | {fio_iops:.0f} | {mb / fio_mb:.2f} |")
    say()
    out = subprocess.run([BENCH, "--dir", DIR, "recovery", "--runs", str(RUNS)],
                         check=True, capture_output=True, text=True).stdout
    rec = json.loads(out.strip().splitlines()[-1])
    say(f"Recovery of a {rec['total_bytes'] >> 20} MiB partition ({rec['segment_bytes'] >> 20} MiB segments, "
        f"{rec['batches']} batches of 1 MiB): {rec['with_index_ms']:.0f} ms with index files, "
        f"{rec['without_index_ms']:.0f} ms with them deleted (median of {rec['runs']}).")
    os.makedirs("benches/out", exist_ok=True)
    with open("benches/out/storage-latest.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
