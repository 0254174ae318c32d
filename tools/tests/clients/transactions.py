#!/usr/bin/env python3
"""Kafka transactions driven by Oxbow's integration tests, with confluent-kafka (librdkafka).

produce: a transactional producer (transactional.id ID) runs TRANSACTIONS transactions of 1-6
messages "<id>-<run>-t<n>-m<i>" spread over the topic's partitions; each is committed or aborted at
random (--seed), and after each ends "commit <value>" or "abort <value>" is printed per message,
flushed at once. With --hang N it opens transaction N, sends its messages, prints "open <value>",
and waits to be killed.
zombie: producer A opens a transaction and sends "<id>-zombie-m0"; producer B with the same id
initializes (fencing A and aborting its transaction) and commits "<id>-fresh-m0"; then A sends
"<id>-zombie-m1" and commits. Prints "fenced <error>" when A is refused as Kafka refuses a fenced
producer (fatal, PRODUCER_FENCED or INVALID_PRODUCER_EPOCH), "not-fenced" otherwise.
pipeline: consume-transform-produce: reads TOPIC in group GROUP (read_committed) and for each
poll of 1-5 messages writes "out-<value>" to OUTPUT (same partition) and the group's offsets in
one transaction, committed with probability --commit-share, else aborted and the input read
again from the committed offsets; stops after TRANSACTIONS input messages are committed.
Prints "commit <output value>" / "abort <output value>".
consume: reads every partition from the beginning with isolation.level ISOLATION until its
position reaches the end offset ListOffsets gives under that isolation (the last stable offset
under read_committed), printing "msg <partition> <offset> <value>".
"""
import argparse
import random
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition


def produce(args):
    rng = random.Random(args.seed)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.id,
        "transaction.timeout.ms": args.transaction_timeout_ms,
        "linger.ms": 5,
    })
    producer.init_transactions(30)
    for n in range(args.transactions):
        producer.begin_transaction()
        values = []
        for i in range(rng.randint(1, 6)):
            value = f"{args.id}-{args.run}-t{n}-m{i}"
            producer.produce(args.topic, value=value.encode(),
                             partition=rng.randrange(args.partitions))
            values.append(value)
        # Sent before the decision, so an aborted transaction's records are in the log too
        # (librdkafka drops what it has not sent when a transaction aborts).
        producer.flush(30)
        if n == args.hang:
            for value in values:
                sys.stdout.write(f"open {value}\n")
            sys.stdout.flush()
            time.sleep(3600)
        if rng.random() < args.commit_share:
            producer.commit_transaction(30)
            outcome = "commit"
        else:
            producer.abort_transaction(30)
            outcome = "abort"
        for value in values:
            sys.stdout.write(f"{outcome} {value}\n")
        sys.stdout.flush()


def zombie(args):
    def producer():
        return Producer({"bootstrap.servers": args.bootstrap, "transactional.id": args.id,
                         "linger.ms": 5})

    old = producer()
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(args.topic, value=f"{args.id}-zombie-m0".encode(), partition=0)
    old.flush(30)
    new = producer()
    new.init_transactions(30)
    new.begin_transaction()
    new.produce(args.topic, value=f"{args.id}-fresh-m0".encode(), partition=0)
    new.commit_transaction(30)
    try:
        old.produce(args.topic, value=f"{args.id}-zombie-m1".encode(), partition=0)
        old.flush(10)
        old.commit_transaction(30)
        sys.stdout.write("not-fenced\n")
    except KafkaException as e:
        error = e.args[0]
        sys.stdout.write(f"fenced {error.name()} fatal={error.fatal()}\n")
    sys.stdout.flush()


def pipeline(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    producer = Producer({"bootstrap.servers": args.bootstrap, "transactional.id": args.id})
    producer.init_transactions(30)
    rng = random.Random(args.seed)
    processed = 0
    deadline = time.time() + args.timeout_ms / 1000
    while processed < args.transactions and time.time() < deadline:
        msgs = [m for m in consumer.consume(num_messages=rng.randint(1, 5), timeout=0.5)
                if not m.error()]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(args.output, value=b"out-" + m.value(), partition=m.partition())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        if rng.random() < args.commit_share:
            producer.commit_transaction(30)
            processed += len(msgs)
            outcome = "commit"
        else:
            producer.abort_transaction(30)
            outcome = "abort"
            # An aborted transaction's input is read again from the committed offsets.
            for tp in consumer.committed(consumer.assignment(), 30):
                tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                consumer.seek(tp)
        for m in msgs:
            sys.stdout.write(f"{outcome} out-{m.value().decode()}\n")
        sys.stdout.flush()
    consumer.close()
    sys.exit(0 if processed >= args.transactions else 4)


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "oxbow-transactions-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": args.isolation,
    })
    partitions = [TopicPartition(args.topic, p, 0) for p in range(args.partitions)]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
    consumer.assign(partitions)
    deadline = time.time() + args.timeout_ms / 1000

    def finished():
        positions = consumer.position(partitions)
        return all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions)

    while not finished() and time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        sys.stdout.write(f"msg {msg.partition()} {msg.offset()} {msg.value().decode()}\n")
    sys.stdout.write("ends " + " ".join(str(ends[p]) for p in sorted(ends)) + "\n")
    sys.stdout.flush()
    done = finished()
    consumer.close()
    sys.exit(0 if done else 4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["produce", "consume", "zombie", "pipeline"])
    parser.add_argument("--output", help="pipeline: the topic it writes to")
    parser.add_argument("--group", default="oxbow-pipeline")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--id", default="oxbow-txn")
    parser.add_argument("--transactions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default="r", help="produce: a tag in every value")
    parser.add_argument("--commit-share", type=float, default=0.5)
    parser.add_argument("--hang", type=int, default=-1)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--isolation", default="read_committed",
                        choices=["read_committed", "read_uncommitted"])
    parser.add_argument("--timeout-ms", type=int, default=30000)
    args = parser.parse_args()
    modes = {"produce": produce, "consume": consume, "zombie": zombie, "pipeline": pipeline}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
