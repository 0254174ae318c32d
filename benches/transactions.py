#!/usr/bin/env python3
"""What transactions cost a Kafka producer: the same release broker, one confluent-kafka
(librdkafka) producer with acks=all and idempotence, writing MESSAGES messages of 1 KiB to a
topic of 3 partitions, without transactions and with transactions of K records (begin, K
produces, commit: one AddPartitionsToTxn per new partition, an EndTxn whose prepare record is
fdatasynced, a marker per partition, the complete record). Medians of RUNS runs; the ratio is
against the non-transactional run of the same broker.
"""
import datetime, os, platform, statistics, subprocess, sys, time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(__file__))
import side_by_side as sbs  # noqa: E402

MESSAGES = int(os.environ.get("MESSAGES", "30000"))
PER_TRANSACTION = [10, 100, 1000]
VALUE = b"x" * 1024


def run(bootstrap, topic, per_transaction, n):
    config = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
              "linger.ms": 5}
    if per_transaction:
        config["transactional.id"] = f"bench-{per_transaction}-{n}"
    producer = Producer(config)
    if per_transaction:
        producer.init_transactions(30)
    start = time.monotonic()
    sent = 0
    while sent < MESSAGES:
        batch = per_transaction or MESSAGES
        if per_transaction:
            producer.begin_transaction()
        for _ in range(batch):
            while True:
                try:
                    producer.produce(topic, VALUE, partition=sent % 3)
                    break
                except BufferError:
                    producer.poll(0.01)
            sent += 1
        if per_transaction:
            producer.commit_transaction(60)
    producer.flush(60)
    return MESSAGES / (time.monotonic() - start)


def main():
    proc, data, addrs = sbs.start_oxbow('flush = "always"\n')
    try:
        bootstrap = addrs["kafka"]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic("bench", 3, 1)]).values():
            future.result(30)
        rows = []
        for per_transaction in [0] + PER_TRANSACTION:
            rates = [run(bootstrap, "bench", per_transaction, n) for n in range(sbs.RUNS)]
            rows.append((per_transaction, statistics.median(rates), min(rates), max(rates)))
    finally:
        sbs.stop(proc, data)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Run {when} on {os.cpu_count()} cores, kernel {platform.release()}; medians of "
          f"{sbs.RUNS} runs of {MESSAGES:,} messages of 1 KiB, 3 partitions, flush always.")
    print()
    print("| records per transaction | msg/s (median) | min - max | / no transactions |")
    print("|---|---|---|---|")
    base = rows[0][1]
    for per_transaction, median, low, high in rows:
        name = per_transaction or "no transactions"
        print(f"| {name} | {median:,.0f} | {low:,.0f} - {high:,.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
