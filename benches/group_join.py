#!/usr/bin/env python3
"""How long a consumer group takes to hand a joining member its share, with confluent-kafka
(librdkafka) on Kafka's classic protocol and on the consumer group protocol (KIP-848).

One member owns all four partitions of a topic; a second joins; the time from the second
consumer's creation until each owns two partitions is the rebalance. Each setting runs on a
fresh release broker: the broker's KIP-848 heartbeat interval (`[consumer_groups]
heartbeat_interval_ms`, 5 s by default as in Kafka) paces the consumer protocol; the classic
protocol runs with librdkafka's defaults (heartbeat.interval.ms 3 s). Medians of RUNS.

usage: benches/group_join.py [--runs 3] [--oxbow target/release/oxbow]
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, threading, time
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic


def start_broker(oxbow, heartbeat_ms, workdir):
    config = os.path.join(workdir, "oxbow.toml")
    with open(config, "w") as f:
        f.write(f"shards = 2\n[consumer_groups]\nheartbeat_interval_ms = {heartbeat_ms}\n"
                f"session_timeout_ms = {max(45000, 3 * heartbeat_ms)}\n")
    broker = subprocess.Popen([oxbow, "serve", "--config", config, "--data-dir",
                               os.path.join(workdir, "data"), "--kafka-listen", "127.0.0.1:0",
                               "--native-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
                              stderr=subprocess.PIPE, text=True)
    for line in broker.stderr:
        if "oxbow ready" in line:
            threading.Thread(target=lambda: [None for _ in broker.stderr], daemon=True).start()
            return broker, re.search(r"kafka=(\S+)", line).group(1)
    sys.exit("the broker did not start")


def rebalance(bootstrap, topic, protocol, group):
    """Seconds until a second member and the first own two partitions each."""
    owned = [set(), set()]
    stop = threading.Event()

    def member(i):
        config = {"bootstrap.servers": bootstrap, "group.id": group}
        if protocol == "consumer":
            config["group.protocol"] = "consumer"
        consumer = Consumer(config)
        add = lambda _c, ps: owned[i].update(p.partition for p in ps)
        remove = lambda _c, ps: owned[i].difference_update(p.partition for p in ps)
        consumer.subscribe([topic], on_assign=add, on_revoke=remove, on_lost=remove)
        while not stop.is_set():
            consumer.poll(0.02)
        consumer.close()

    threads = [threading.Thread(target=member, args=(0,))]
    threads[0].start()
    while len(owned[0]) != 4:
        time.sleep(0.005)
    joined = time.time()
    threads.append(threading.Thread(target=member, args=(1,)))
    threads[1].start()
    while not (len(owned[0]) == 2 and len(owned[1]) == 2):
        time.sleep(0.005)
    took = time.time() - joined
    stop.set()
    for t in threads:
        t.join()
    return took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--oxbow", default="target/release/oxbow")
    args = parser.parse_args()
    print("| protocol | broker heartbeat interval | rebalance s (median) | runs |")
    print("|---|---|---|---|")
    for heartbeat_ms in [5000, 1000]:
        with tempfile.TemporaryDirectory() as workdir:
            broker, bootstrap = start_broker(args.oxbow, heartbeat_ms, workdir)
            try:
                admin = AdminClient({"bootstrap.servers": bootstrap})
                admin.create_topics([NewTopic("joins", num_partitions=4)])["joins"].result(30)
                del admin
                for protocol in ["classic", "consumer"]:
                    times = [rebalance(bootstrap, "joins", protocol, f"{protocol}-{heartbeat_ms}-{run}")
                             for run in range(args.runs)]
                    shown = " / ".join(f"{t:.2f}" for t in times)
                    interval = f"{heartbeat_ms} ms" if protocol == "consumer" else "- (client: 3000 ms)"
                    print(f"| {protocol} | {interval} | {statistics.median(times):.2f} | {shown} |",
                          flush=True)
            finally:
                broker.terminate()
                broker.wait()


if __name__ == "__main__":
    main()
