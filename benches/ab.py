#!/usr/bin/env python3
"""A/B comparison of two or more `oxbow` binaries (say, main before and after a change).

Runs are interleaved (A, B, A, B, ...) so drift on a noisy machine hits both; each run starts a
fresh broker on free loopback ports with its own data directory. Reports medians and the ratio
of each binary to the first.

    python3 benches/ab.py produce OLD NEW --runs 5   # max-rate produce msg/s, native and Kafka, 100 B and 1 KiB
    python3 benches/ab.py cpu OLD NEW --runs 5       # broker CPU µs per message at a fixed rate
    python3 benches/ab.py latency OLD NEW --runs 5   # end-to-end latency of a long-polling Kafka consumer at 1,000 msg/s
    python3 benches/ab.py topics OLD NEW --runs 3    # CreateTopics latency, one topic at a time (kafka-python)
"""
import argparse, json, os, socket, statistics, subprocess, tempfile, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, shards=None, config=None):
        self.dir = tempfile.mkdtemp(prefix="oxbow-ab-")
        self.kafka, self.native = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        args = [binary, "serve", "--data-dir", self.dir + "/data", "--kafka-listen", self.kafka,
                "--native-listen", self.native, "--metrics-listen", "127.0.0.1:0"]
        if shards:
            args += ["--shards", str(shards)]
        if config:
            with open(self.dir + "/oxbow.toml", "w") as f:
                f.write(config)
            args += ["--config", self.dir + "/oxbow.toml"]
        self.process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        host, port = self.kafka.split(":")
        for _ in range(400):
            try:
                socket.create_connection((host, int(port)), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{binary} did not start")

    def cpu_seconds(self):
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.terminate()
        self.process.wait()
        subprocess.run(["rm", "-rf", self.dir])


INTERVAL_FLUSH = '[log]\nflush = "interval"\nflush_interval_ms = 100\n'


def bench(binary, broker, protocol, *args):
    out = broker.dir + "/result.json"
    subprocess.run([binary, "bench", "--protocol", protocol,
                    "--broker", broker.kafka if protocol == "kafka" else broker.native,
                    "--quiet", "--json", out, *args],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.load(open(out))


def produce(binary):
    rows = {}
    for protocol in ("native", "kafka"):
        for size in (100, 1024):
            with Broker(binary, config=INTERVAL_FLUSH) as broker:
                r = bench(binary, broker, protocol, "--message-size", str(size), "--rate", "max",
                          "--duration", "5s", "--warmup", "1s")
                rows[f"{protocol} {size} B msg/s"] = r["produced"]["messages_per_second"]
    return rows


def cpu(binary):
    rows = {}
    for protocol, rate in (("kafka", 200_000), ("native", 100_000)):
        with Broker(binary, shards=2, config=INTERVAL_FLUSH) as broker:
            before = broker.cpu_seconds()
            r = bench(binary, broker, protocol, "--message-size", "1024", "--rate", str(rate),
                      "--duration", "8s", "--warmup", "1s")
            used = broker.cpu_seconds() - before
            sent = r["produced"]["messages_per_second"] * 9
            rows[f"{protocol} 1 KiB @ {rate} broker CPU µs/msg"] = used / sent * 1e6
    return rows


def latency(binary):
    with Broker(binary) as broker:
        r = bench(binary, broker, "kafka", "--message-size", "100", "--rate", "1000",
                  "--consumers", "1", "--duration", "10s", "--warmup", "2s")
    e2e = r["end_to_end_latency_ms"]
    return {"end-to-end p50 ms": e2e["p50"], "p99 ms": e2e["p99"], "p99.9 ms": e2e["p99_9"]}


def topics(binary, count=100):
    from kafka.admin import KafkaAdminClient, NewTopic
    with Broker(binary, shards=2) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.kafka)
        times = []
        for i in range(count):
            started = time.perf_counter()
            admin.create_topics([NewTopic(f"t{i}", 1, 1)])
            times.append((time.perf_counter() - started) * 1000)
        admin.close()
    times.sort()
    return {"CreateTopics p50 ms": statistics.median(times),
            "CreateTopics p99 ms": times[int(len(times) * 0.99) - 1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["produce", "cpu", "latency", "topics"])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    measure = globals()[args.what]
    results = {b: [] for b in args.binaries}
    for _ in range(args.runs):
        for binary in args.binaries:
            results[binary].append(measure(binary))
    base = args.binaries[0]
    for key in results[base][0]:
        first = statistics.median(run[key] for run in results[base])
        for binary in args.binaries:
            runs = [run[key] for run in results[binary]]
            median = statistics.median(runs)
            print(f"{key:40} {binary:28} median {median:>12,.3f}  ratio {median / first:.2f}"
                  f"  runs {[round(v, 3) for v in runs]}")


if __name__ == "__main__":
    main()
