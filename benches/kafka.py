#!/usr/bin/env python3
"""Kafka-protocol throughput and latency of the release `oxbow` binary, with real clients.

Produce: kcat (librdkafka) sends N messages of SIZE bytes from a file, acks=1 or all, to a fresh
1-partition topic; the broker runs with its defaults (flush = always: every acknowledged batch
is fdatasynced). Consume: kcat reads the topic back from the beginning to its end. Each figure
is the median of RUNS runs; wall time includes client start-up (a few ms).
Fetch latency at the head: a confluent-kafka producer sends at a fixed rate (acks=1) while a
consumer waits at the end of the log; latency = receive time - send time written in the
message, per message, so a stall shows up in the percentiles (no coordinated omission).
Prints a Markdown report (also written to benches/out/kafka-latest.md).
"""
import os, re, statistics, subprocess, sys, tempfile, threading, time, datetime, platform

RUNS = int(os.environ.get("RUNS", "3"))
BINARY = "target/release/oxbow"


def start_broker(data):
    proc = subprocess.Popen([BINARY, "serve", "--data-dir", data, "--kafka-listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "oxbow ready" in line:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, re.search(r"kafka=(\S+)", line).group(1)
    raise RuntimeError("broker did not start")


def kcat(addr, args, stdin=None):
    start = time.perf_counter()
    subprocess.run(["kcat", "-b", addr, *args], stdin=stdin, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def throughput(addr, size, acks, count, run):
    topic = f"bench-{size}-{acks}-{run}"
    with tempfile.NamedTemporaryFile("wb", delete=False) as f:
        line = (b"x" * (size - 1)) + b"\n"
        f.write(line * count)
        path = f.name
    with open(path, "rb") as f:
        produce = kcat(addr, ["-P", "-t", topic, "-X", f"acks={acks}", "-X", "linger.ms=5",
                              "-X", "batch.num.messages=10000", "-X", "queue.buffering.max.messages=2000000"], f)
    os.remove(path)
    consume = kcat(addr, ["-C", "-t", topic, "-o", "beginning", "-e", "-q"])
    return count / produce, count / consume


def head_latency(addr, rate, seconds, topic="bench-latency"):
    """A fresh `topic` per call: the consumer starts at offset 1, after the warm-up message."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    producer = Producer({"bootstrap.servers": addr, "acks": "1", "linger.ms": 0})
    producer.produce(topic, b"warm-up")
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": addr, "group.id": "bench", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    consumer.assign([TopicPartition(topic, 0, 1)])
    latencies, total = [], int(rate * seconds)
    stop = threading.Event()

    def consume():
        while not stop.is_set() and len(latencies) < total:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                latencies.append(time.time_ns() - int(msg.value()))

    reader = threading.Thread(target=consume)
    reader.start()
    start = time.perf_counter()
    for i in range(total):
        # Sleep, not spin: the consumer thread needs the GIL to read on time.
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        producer.produce(topic, str(time.time_ns()).encode())
        producer.poll(0)
    producer.flush(10)
    reader.join(timeout=30)
    stop.set()
    consumer.close()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6
    return len(latencies), total, pick(0.5), pick(0.99), pick(0.999), latencies[-1] / 1e6


def main():
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))
    base = os.environ.get("BENCH_DIR", "/tmp")
    os.makedirs(base, exist_ok=True)
    data = tempfile.mkdtemp(prefix="oxbow-bench-", dir=base)
    broker, addr = start_broker(data)
    try:
        say(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
            f"kernel {platform.uname().release}; broker and clients on this machine over loopback; "
            f"broker defaults (2 shards, flush always); medians of {RUNS} runs.")
        say()
        say("| message | acks | messages | produce msg/s | produce MB/s | consume msg/s | consume MB/s |")
        say("|---|---|---|---|---|---|---|")
        for size, count in [(100, 1_000_000), (1024, 300_000)]:
            for acks in ["1", "all"]:
                runs = [throughput(addr, size, acks, count, r) for r in range(RUNS)]
                p = statistics.median(r[0] for r in runs)
                c = statistics.median(r[1] for r in runs)
                say(f"| {size} B | {acks} | {count} | {p:,.0f} | {p * size / 1e6:,.1f} | {c:,.0f} | {c * size / 1e6:,.1f} |")
        say()
        got, sent, p50, p99, p999, worst = head_latency(addr, rate=1000, seconds=10)
        say(f"Fetch latency at the head (confluent-kafka, 1000 msg/s for 10 s, acks=1, flush always): "
            f"{got} of {sent} received; p50 {p50:.2f} ms, p99 {p99:.2f} ms, p99.9 {p999:.2f} ms, max {worst:.2f} ms.")
    finally:
        broker.terminate()
        broker.wait(30)
        subprocess.run(["rm", "-rf", data])
    os.makedirs("benches/out", exist_ok=True)
    with open("benches/out/kafka-latest.md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
