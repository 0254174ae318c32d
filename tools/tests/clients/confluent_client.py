#!/usr/bin/env python3
"""A real Kafka client (confluent-kafka, librdkafka) driven by Oxbow's integration tests.

produce: creates the topic if asked, sends COUNT messages "m-<i>" round-robin over the
partitions with the given acks, and prints "ack <partition> <offset> <value>" for every delivery
the broker acknowledged, flushed at once (a test may kill the broker at any moment). With
--keyed each message also has key "k-<i>" and headers n="h-<i>", empty="" and null=None; with
--compression the batches are compressed (compression.type). With --keys K message i has key
"k-<i mod K>" instead, and with --tombstone-every N every Nth message is a tombstone (no value,
printed as "tomb-<key>"): updates and deletes of K keys, for compacted topics.
consume: reads every partition from the beginning (no consumer group) until it has EXPECT
messages (-1: every partition up to its high watermark, through any gaps compaction left),
printing "msg <partition> <offset> <value>", or with --json one JSON object per message with its
key and headers as well.
Every mode takes --client-config NAME=VALUE (repeatable) for every client it makes, e.g. the
security settings (security.protocol, sasl.mechanism, ssl.ca.location).
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def produce(args):
    if args.create:
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        config = dict(kv.split("=", 1) for kv in args.config)
        for future in admin.create_topics([NewTopic(args.topic, args.partitions, 1, config=config)]).values():
            future.result(timeout=30)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "enable.idempotence": args.idempotent,
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_bytes,
        "message.timeout.ms": args.timeout_ms,
        "compression.type": args.compression,
    })

    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(err)
        else:
            # acks=0 gets no offset back: reported as -1.
            offset = -1 if msg.offset() is None else msg.offset()
            value = f"tomb-{msg.key().decode()}" if msg.value() is None else msg.value().decode()
            sys.stdout.write(f"ack {msg.partition()} {offset} {value}\n")
            sys.stdout.flush()

    for i in range(args.base, args.base + args.count):
        while True:
            try:
                extras = {}
                if args.keyed:
                    extras = {"key": f"k-{i}".encode(),
                              "headers": [("n", f"h-{i}".encode()), ("empty", b""), ("null", None)]}
                value = f"m-{i}".encode()
                if args.keys:
                    extras = {"key": f"k-{i % args.keys}".encode()}
                    if args.tombstone_every and i % args.tombstone_every == 0:
                        value = None
                if args.timestamp_base:
                    extras["timestamp"] = args.timestamp_base + i * args.timestamp_step
                producer.produce(args.topic, value=value, partition=i % args.partitions,
                                 on_delivery=delivered, **extras)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(args.timeout_ms / 1000)
    if failed:
        sys.stderr.write(f"{len(failed)} deliveries failed, first: {failed[0]}\n")
    sys.exit(0 if remaining == 0 and not failed else 3)


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "oxbow-test-reader",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    partitions = [TopicPartition(args.topic, p, 0) for p in range(args.partitions)]
    # Everything stored: up to each partition's high watermark (ListOffsets).
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
    reached = {p for p, end in ends.items() if end == 0}
    consumer.assign(partitions)
    seen = 0

    def finished():
        return len(reached) == len(ends) if args.expect < 0 else seen >= args.expect

    deadline = time.time() + args.timeout_ms / 1000
    while not finished() and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        # Offsets, not a count, say where the end is: compaction leaves gaps.
        if msg.offset() + 1 >= ends[msg.partition()]:
            reached.add(msg.partition())
        if args.json:
            headers = [[k, None if v is None else v.decode()] for k, v in (msg.headers() or [])]
            key = None if msg.key() is None else msg.key().decode()
            value = None if msg.value() is None else msg.value().decode()
            sys.stdout.write(json.dumps({"partition": msg.partition(), "offset": msg.offset(),
                                         "key": key, "value": value,
                                         "headers": headers}) + "\n")
        else:
            value = "-" if msg.value() is None else msg.value().decode()
            sys.stdout.write(f"msg {msg.partition()} {msg.offset()} {value}\n")
        seen += 1
    sys.stdout.flush()
    consumer.close()
    sys.exit(0 if finished() else 4)


def group_consume(args):
    """Consumes as a member of GROUP, committing each message synchronously before printing it
    (so a message is printed by exactly one member), until the group's committed offsets add up
    to EXPECT; DELAY_MS between messages keeps it busy long enough for a rebalance. With
    --protocol consumer it uses the consumer group protocol of KIP-848, whose session and
    heartbeat settings are the broker's."""
    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if args.protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    consumer = Consumer(config)
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    # The classic protocol hands over whole assignments, the consumer protocol increments:
    # either way the member prints all it owns after each change ("assigned 0,2"), so a test
    # can time how long a rebalance took and check that no two members own a partition, and
    # "owns topic:partition,..." with the topics too. --subscribe PATTERN subscribes by
    # regular expression (librdkafka's "^..." form) instead of to TOPIC.
    owned = set()

    def report():
        sys.stdout.write("assigned " + ",".join(str(p) for _, p in sorted(owned)) + "\n")
        sys.stdout.write("owns " + ",".join(f"{t}:{p}" for t, p in sorted(owned)) + "\n")
        sys.stdout.flush()

    def assigned(_consumer, added):
        owned.update((tp.topic, tp.partition) for tp in added)
        report()

    def revoked(_consumer, removed):
        owned.difference_update((tp.topic, tp.partition) for tp in removed)
        if args.protocol == "consumer":
            report()

    consumer.subscribe([args.subscribe or args.topic], on_assign=assigned, on_revoke=revoked,
                       on_lost=revoked)
    deadline = time.time() + args.timeout_ms / 1000
    last_check = 0.0
    while time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error():
            sys.stderr.write(f"error {msg.error()}\n")
        if msg is not None and not msg.error():
            try:
                consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)],
                                asynchronous=False)
            except KafkaException:
                continue  # lost the partition in a rebalance: its next owner gets the message
            sys.stdout.write(f"msg {msg.partition()} {msg.offset()} {msg.value().decode()}\n")
            sys.stdout.flush()
            time.sleep(args.delay_ms / 1000)
        if time.time() - last_check > 0.3:
            last_check = time.time()
            committed = consumer.committed(partitions, timeout=10)
            if sum(max(tp.offset, 0) for tp in committed) >= args.expect:
                break
    consumer.close()


def committed(args):
    """Prints "committed <partition> <offset>" for each partition of GROUP (-1: none yet)."""
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group})
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    for tp in consumer.committed(partitions, timeout=30):
        print(f"committed {tp.partition} {tp.offset}")
    consumer.close()


def admin(args):
    """describe: prints "config <name> <value>" for the topic; delete: deletes it;
    add-partitions: grows it to PARTITIONS, printing "added" or "error <name>"; alter-config:
    sets each --config NAME=VALUE and deletes each --config NAME (incrementally), printing
    "altered" or "error <name>"; delete-records: deletes the records of each --delete
    PARTITION=OFFSET (-1: up to the high watermark) below the offset, printing "deleted
    <partition> <low watermark>" or "error <partition> <name>" for each."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    if args.op == "alter-config":
        entries = []
        for kv in args.config:
            name, _, value = kv.partition("=")
            op = AlterConfigOpType.SET if "=" in kv else AlterConfigOpType.DELETE
            entries.append(ConfigEntry(name, value if "=" in kv else None, incremental_operation=op))
        resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic, incremental_configs=entries)
        try:
            client.incremental_alter_configs([resource], validate_only=args.validate_only)[resource].result(timeout=30)
            print("altered")
        except KafkaException as e:
            print(f"error {e.args[0].name()}")
    elif args.op == "add-partitions":
        grow = [NewPartitions(args.topic, args.partitions)]
        try:
            client.create_partitions(grow, validate_only=args.validate_only)[args.topic].result(timeout=30)
            print("added")
        except KafkaException as e:
            print(f"error {e.args[0].name()}")
    elif args.op == "delete-records":
        below = [TopicPartition(args.topic, int(p), int(o))
                 for p, o in (kv.split("=", 1) for kv in args.delete)]
        for tp, future in sorted(client.delete_records(below).items(), key=lambda kv: kv[0].partition):
            try:
                print(f"deleted {tp.partition} {future.result(timeout=30).low_watermark}")
            except KafkaException as e:
                print(f"error {tp.partition} {e.args[0].name()}")
    elif args.op == "describe":
        resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic)
        for config in client.describe_configs([resource])[resource].result(timeout=30).values():
            print(f"config {config.name} {config.value}")
    else:
        client.delete_topics([args.topic])[args.topic].result(timeout=30)
        print("deleted")


def group_admin(args):
    """delete-group: deletes GROUP, printing "deleted" or "error <name>". (confluent-kafka has no
    call for OffsetDelete: the tests send that one themselves.)"""
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    try:
        client.delete_consumer_groups([args.group])[args.group].result(timeout=30)
        print("deleted")
    except KafkaException as e:
        print(f"error {e.args[0].name()}")


def describe_groups(args):
    """Through AdminClient: lists the groups of type TYPE ("listed <group> <type> <state>"),
    then describes GROUP: "group <id> <type> <state> <assignor>" and one line per member,
    "member <client id> <partitions>" (comma-separated, sorted)."""
    from confluent_kafka import ConsumerGroupType
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    kind = ConsumerGroupType[args.group_type.upper()]
    listed = client.list_consumer_groups(types={kind}, request_timeout=30).result()
    for group in listed.valid:
        print(f"listed {group.group_id} {group.type.name.lower()} {group.state.name.lower()}")
    described = client.describe_consumer_groups([args.group], request_timeout=30)[args.group].result()
    print(f"group {described.group_id} {described.type.name.lower()} {described.state.name.lower()} "
          f"{described.partition_assignor}")
    for member in described.members:
        partitions = sorted(tp.partition for tp in member.assignment.topic_partitions)
        print(f"member {member.client_id} {','.join(str(p) for p in partitions)}")


def acls(args):
    """Through AdminClient: allows User:carol Read on topics prefixed TOPIC, lists the ACLs
    that apply to TOPIC + "1" ("match <principal> <pattern>"), deletes carol's ACLs
    ("deleted <n>"), and lists again ("left <n>")."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, ResourcePatternType, ResourceType)
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    binding = AclBinding(ResourceType.TOPIC, args.topic, ResourcePatternType.PREFIXED, "User:carol",
                         "*", AclOperation.READ, AclPermissionType.ALLOW)
    for future in client.create_acls([binding]).values():
        future.result(timeout=30)
    applying = AclBindingFilter(ResourceType.TOPIC, args.topic + "1", ResourcePatternType.MATCH, None,
                                None, AclOperation.ANY, AclPermissionType.ANY)
    for acl in client.describe_acls(applying).result(timeout=30):
        print(f"match {acl.principal} {acl.resource_pattern_type.name}")
    carols = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:carol", None,
                              AclOperation.ANY, AclPermissionType.ANY)
    for future in client.delete_acls([carols]).values():
        print(f"deleted {len(future.result(timeout=30))}")
    print(f"left {len(client.describe_acls(carols).result(timeout=30))}")


def elect(args):
    """Asks for the preferred leader of partitions 0..PARTITIONS of TOPIC; prints
    "elected <partition> <error name or none>" for each."""
    from confluent_kafka import ElectionType
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    results = client.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=30)
    for tp, error in sorted(results.items(), key=lambda kv: kv[0].partition):
        print(f"elected {tp.partition} {'none' if error is None else error.name()}")


def describe_cluster(args):
    """Prints "cluster <id> controller <id>", then "broker <id> <host>:<port>" per broker."""
    client = AdminClient({"bootstrap.servers": args.bootstrap})
    described = client.describe_cluster().result(timeout=30)
    print(f"cluster {described.cluster_id} controller {described.controller.id}")
    for node in sorted(described.nodes, key=lambda n: n.id):
        print(f"broker {node.id} {node.host}:{node.port}")


def offsets_for_times(args):
    """Prints "at <timestamp> <offset>" for each timestamp of AT on partition 0 (-1: none)."""
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "offsets-for-times"})
    for at in args.at:
        found = consumer.offsets_for_times([TopicPartition(args.topic, 0, at)], timeout=10)
        print(f"at {at} {found[0].offset}")
    consumer.close()


def with_client_config(extra):
    """Every Producer, Consumer and AdminClient made from here on also gets `extra`."""
    if not extra:
        return
    global Producer, Consumer, AdminClient
    producer, consumer, admin_client = Producer, Consumer, AdminClient
    Producer = lambda conf, **kw: producer({**conf, **extra}, **kw)
    Consumer = lambda conf, **kw: consumer({**conf, **extra}, **kw)
    AdminClient = lambda conf, **kw: admin_client({**conf, **extra}, **kw)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["produce", "consume", "group-consume", "committed", "admin",
                                         "group-admin", "offsets-for-times", "elect", "acls",
                                         "describe-cluster", "describe-groups"])
    parser.add_argument("--op", choices=["describe", "delete", "add-partitions", "alter-config",
                                         "delete-records"], default="describe")
    parser.add_argument("--delete", action="append", default=[],
                        help="PARTITION=OFFSET whose records below are deleted")
    parser.add_argument("--validate-only", action="store_true")
    parser.add_argument("--group", default="oxbow-test-group")
    parser.add_argument("--protocol", choices=["classic", "consumer"], default="classic",
                        help="group.protocol of group-consume")
    parser.add_argument("--subscribe", help="group-consume: a pattern to subscribe to")
    parser.add_argument("--group-type", default="consumer", help="what describe-groups lists")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--config", action="append", default=[], help="topic config NAME=VALUE")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--base", type=int, default=0, help="index of the first message")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--acks", default="all")
    parser.add_argument("--idempotent", action="store_true")
    parser.add_argument("--timeout-ms", type=int, default=30000)
    parser.add_argument("--linger-ms", type=int, default=2)
    # librdkafka's default; a topic with a smaller max.message.bytes needs smaller batches
    # (librdkafka does not split a batch the broker refuses as too large).
    parser.add_argument("--batch-bytes", type=int, default=1000000)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--keyed", action="store_true")
    parser.add_argument("--keys", type=int, default=0, help="produce: keys k-<i mod KEYS>")
    parser.add_argument("--tombstone-every", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timestamp-base", type=int, default=0, help="message i gets BASE + i*STEP")
    parser.add_argument("--timestamp-step", type=int, default=10)
    parser.add_argument("--at", type=int, action="append", default=[], help="a timestamp to look up")
    parser.add_argument("--client-config", action="append", default=[],
                        help="NAME=VALUE given to every client")
    args = parser.parse_args()
    with_client_config(dict(kv.split("=", 1) for kv in args.client_config))
    {"produce": produce, "consume": consume, "group-consume": group_consume, "committed": committed,
     "admin": admin, "group-admin": group_admin, "offsets-for-times": offsets_for_times,
     "elect": elect, "acls": acls,
     "describe-cluster": describe_cluster, "describe-groups": describe_groups}[args.mode](args)


if __name__ == "__main__":
    main()
