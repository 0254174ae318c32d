#!/usr/bin/env python3
"""kafka-python with its defaults (idempotent producer, acks=all) and a group consumer.

Produces COUNT messages, then consumes the topic as group GROUP until it has them all or
times out; prints "produced N", "consumed N unique M", and exits 0 only if every message came
back exactly once. Arguments after COUNT are NAME=VALUE settings given to both clients (the
security ones: security_protocol, sasl_mechanism, sasl_plain_username, ssl_cafile...)."""
import sys

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = dict(arg.split("=", 1) for arg in sys.argv[4:])
producer = KafkaProducer(bootstrap_servers=bootstrap, **settings)
assert producer.config["enable_idempotence"], "kafka-python should default to idempotence"
futures = [producer.send(topic, f"m-{i}".encode()) for i in range(count)]
producer.flush(timeout=60)
offsets = [f.get(timeout=30).offset for f in futures]
producer.close()
print(f"produced {len(offsets)}", flush=True)

consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="kafka-python-group",
                         auto_offset_reset="earliest", consumer_timeout_ms=10000, **settings)
values = []
for message in consumer:
    values.append(message.value.decode())
    if len(values) >= count:
        break
consumer.commit()
consumer.close()
print(f"consumed {len(values)} unique {len(set(values))}", flush=True)
sys.exit(0 if sorted(set(values)) == sorted(f"m-{i}" for i in range(count)) and len(values) == count else 1)
