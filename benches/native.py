#!/usr/bin/env python3
"""Native-protocol delivery vs the Kafka-protocol consume path, on one release broker.

Native (target/release/native_bench, Rust client): a reliable Shared subscription with 4
consumers, and a non-reliable Exclusive one with 1, 1 KiB messages, acks=1. Throughput: the
producer sends as fast as it can while the consumers receive; delivered msg/s = messages /
(first send .. last delivery). Latency: a fixed send rate, publish-to-deliver measured from
each message's intended send time (no coordinated omission).
Kafka path on the same broker in the same run (benches/kafka.py's functions): kcat produces
the same count of 1 KiB messages and then consumes them from the beginning (librdkafka); head
latency with confluent-kafka at the same fixed rate.
Medians of RUNS runs. Prints Markdown (also benches/out/native-latest.md).
"""
import datetime, importlib.util, os, platform, re, statistics, subprocess, sys, tempfile, threading

RUNS = int(os.environ.get("RUNS", "3"))
MESSAGES = int(os.environ.get("MESSAGES", "200000"))
spec = importlib.util.spec_from_file_location("kafka_bench", "benches/kafka.py")
kafka = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kafka)


def start_broker(data):
    proc = subprocess.Popen(["target/release/oxbow", "serve", "--data-dir", data,
                             "--kafka-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                             "--native-listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "oxbow ready" in line:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, re.search(r"kafka=(\S+)", line).group(1), re.search(r"native=(\S+)", line).group(1)
    raise RuntimeError("broker did not start")


def native(addr, scenario, consumers, messages, topic, rate=None):
    cmd = ["target/release/native_bench", "--broker", addr, "--scenario", scenario,
           "--consumers", str(consumers), "--messages", str(messages), "--topic", topic]
    if rate:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


def main():
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))
    base = os.environ.get("BENCH_DIR", "/tmp")
    data = tempfile.mkdtemp(prefix="oxbow-native-bench-", dir=base)
    broker, kafka_addr, native_addr = start_broker(data)
    try:
        say(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
            f"kernel {platform.uname().release}; broker (defaults: 2 shards, flush always) and clients on this "
            f"machine over loopback; 1 KiB messages, acks=1; medians of {RUNS} runs.")
        say()
        say("| path | consumers | messages | delivered | delivered msg/s | p50 ms | p99 ms | p99.9 ms |")
        say("|---|---|---|---|---|---|---|---|")
        for scenario, consumers in [("shared-reliable", 4), ("exclusive-nonreliable", 1)]:
            runs = [native(native_addr, scenario, consumers, MESSAGES, f"t-{scenario}-{r}") for r in range(RUNS)]
            m = lambda k: statistics.median(r[k] for r in runs)
            say(f"| native {scenario}, max rate | {consumers} | {MESSAGES} | {m('delivered'):.0f} | {m('msgs_per_s'):,.0f} "
                f"| {m('p50_ms'):.1f} | {m('p99_ms'):.1f} | {m('p999_ms'):.1f} |")
        runs = [kafka.throughput(kafka_addr, 1024, "1", MESSAGES, r) for r in range(RUNS)]
        say(f"| Kafka protocol, kcat produce then consume | 1 | {MESSAGES} | {MESSAGES} | "
            f"{statistics.median(r[1] for r in runs):,.0f} (produce {statistics.median(r[0] for r in runs):,.0f}) | | | |")
        say()
        say("Publish-to-deliver latency at a fixed rate (from the intended send time):")
        say()
        say("| path | rate msg/s | seconds | delivered | p50 ms | p99 ms | p99.9 ms | max ms |")
        say("|---|---|---|---|---|---|---|---|")
        for scenario, consumers, rate, seconds in [("shared-reliable", 4, 1000, 10),
                                                   ("exclusive-nonreliable", 1, 1000, 10),
                                                   ("shared-reliable", 4, 20000, 5)]:
            runs = [native(native_addr, scenario, consumers, rate * seconds, f"l-{scenario}-{rate}-{r}", rate)
                    for r in range(RUNS)]
            m = lambda k: statistics.median(r[k] for r in runs)
            say(f"| native {scenario} ({consumers}) | {rate} | {seconds} | {m('delivered'):.0f} | {m('p50_ms'):.2f} "
                f"| {m('p99_ms'):.2f} | {m('p999_ms'):.2f} | {m('max_ms'):.2f} |")
        runs = [kafka.head_latency(kafka_addr, rate=1000, seconds=10, topic=f"kafka-latency-{r}")
                for r in range(RUNS)]
        m = lambda i: statistics.median(r[i] for r in runs)
        say(f"| Kafka protocol (confluent-kafka, 1 consumer) | 1000 | 10 | {m(0):.0f} | {m(2):.2f} | {m(3):.2f} "
            f"| {m(4):.2f} | {m(5):.2f} |")
    finally:
        broker.terminate()
        broker.wait(30)
        subprocess.run(["rm", "-rf", data])
    os.makedirs("benches/out", exist_ok=True)
    with open("benches/out/native-latest.md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
