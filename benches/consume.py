#!/usr/bin/env python3
"""Reading back from disk: catch-up consumers beside fio's sequential reads (see consume.sh).

One partition of GB gigabytes of 1 KiB messages is produced, then the broker restarts so that
neither its tail cache nor its read cache holds any of it, and each run reads everything from
the earliest offset. Every run restarts the broker first. Reported per protocol: the median of
RUNS runs in MB/s, its ratio to fio's median (1 MiB O_DIRECT reads, 4 in flight, of the same
segment files on the same disk, measured in between), and the bytes the broker read from the
disk per byte consumed (/proc/<pid>/io read_bytes). The fan-out row runs FANOUT consumers at
once (separate readers: Kafka consumers without a group, or native subscriptions of their own)
and reports the disk bytes per byte of the topic.
"""
import datetime, json, os, statistics, subprocess, sys, tempfile
import side_by_side as sbs

GB = float(os.environ.get("GB", "4"))
FANOUT = int(os.environ.get("FANOUT", "4"))
TOPIC = "catch-up"


def start(data):
    kafka, native = sbs.free_port(), sbs.free_port()
    proc = subprocess.Popen([sbs.BINARY, "serve", "--data-dir", data,
                             "--kafka-listen", f"127.0.0.1:{kafka}", "--native-listen", f"127.0.0.1:{native}",
                             "--metrics-listen", "127.0.0.1:0"], stderr=subprocess.DEVNULL)
    sbs.wait_listening(native, proc, "oxbow")
    sbs.wait_listening(kafka, proc, "oxbow")
    return proc, {"kafka": f"127.0.0.1:{kafka}", "native": f"127.0.0.1:{native}"}


def stop(proc):
    proc.terminate()
    proc.wait()


def disk_read_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))


def bench(protocol, broker, workload, out, extra=()):
    return subprocess.Popen([sbs.BINARY, "bench", "--protocol", protocol, "--broker", broker,
                             "--workload", workload, "--topic", TOPIC, "--message-size", "1024",
                             "--duration", "600s", "--warmup", "0s", "--drain-timeout", "1s",
                             "--quiet", "--json", out, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def consume(data, protocol, readers):
    proc, addrs = start(data)
    try:
        before = disk_read_bytes(proc.pid)
        outs = [os.path.join(sbs.SCRATCH, f"consume-{i}.json") for i in range(readers)]
        runs = [bench(protocol, addrs[protocol], "consume", out, ["--from", "earliest"]) for out in outs]
        for run in runs:
            if run.wait() != 0:
                sys.exit(f"oxbow bench ({protocol} consume) failed")
        disk = disk_read_bytes(proc.pid) - before
    finally:
        stop(proc)
    consumed = [json.load(open(out))["consumed"] for out in outs]
    return consumed, disk


def fio(files):
    runs = []
    for _ in range(sbs.RUNS):
        args = ["fio", "--name=read", f"--filename={':'.join(files)}", "--rw=read", "--bs=1M", "--iodepth=4",
                "--direct=1", "--ioengine=io_uring", "--readonly", "--output-format=json"]
        result = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        runs.append(result["jobs"][0]["read"]["bw_bytes"] / 1e6)
    return statistics.median(runs)


def main():
    data = tempfile.mkdtemp(dir=sbs.SCRATCH)
    messages = int(GB * 1e9 / 1024)
    proc, addrs = start(data)
    try:
        fill = bench("native", addrs["native"], "produce", os.path.join(sbs.SCRATCH, "fill.json"),
                     ["--keep-topic", "--messages", str(messages), "--acks", "1"])
        if fill.wait() != 0:
            sys.exit("oxbow bench (produce) failed")
    finally:
        stop(proc)
    segments = sorted(os.path.join(data, TOPIC, "0", f) for f in os.listdir(os.path.join(data, TOPIC, "0"))
                      if f.endswith(".log"))
    topic_bytes = sum(os.path.getsize(f) for f in segments)
    lines = [f"## Catch-up reads: {GB:g} GB of 1 KiB messages in 1 partition, read from the earliest offset "
             "after a restart (no cache holds any of it)", "",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"`RUNS={sbs.RUNS} GB={GB:g} FANOUT={FANOUT} benches/consume.sh`; medians of {sbs.RUNS}; "
             "fio: 1 MiB O_DIRECT sequential reads, 4 in flight, of the same segment files, "
             "median of its own runs in between.", "",
             "| protocol | readers | consumed MB/s (each) | vs fio | disk bytes read / bytes consumed |",
             "|---|---|---|---|---|"]
    fio_mb = None
    for protocol in ("kafka", "native"):
        runs = []
        for _ in range(sbs.RUNS):
            consumed, disk = consume(data, protocol, 1)
            runs.append((consumed[0]["megabytes_per_second"], disk / consumed[0]["bytes"]))
        fio_mb = fio_mb or fio(segments)
        mb = statistics.median(r[0] for r in runs)
        ratio = statistics.median(r[1] for r in runs)
        lines.append(f"| {protocol} | 1 | {mb:,.0f} | {mb / fio_mb:.2f} | {ratio:.3f} |")
        print(lines[-1], flush=True)
    for protocol in ("kafka", "native"):
        consumed, disk = consume(data, protocol, FANOUT)
        each = statistics.median(c["megabytes_per_second"] for c in consumed)
        lines.append(f"| {protocol} | {FANOUT} at once | {each:,.0f} | {each / fio_mb:.2f} | "
                     f"{disk / topic_bytes:.3f} of the topic's bytes for all {FANOUT} |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"fio median: {fio_mb:,.0f} MB/s.")
    print("\n".join(lines))
    subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
