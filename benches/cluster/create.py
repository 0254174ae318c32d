# Creates TOPIC with PARTITIONS partitions on RF replicas (an existing one is fine):
# create.py BOOTSTRAP TOPIC RF [PARTITIONS]
import sys
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
partitions = int(sys.argv[4]) if len(sys.argv) > 4 else 1
for f in admin.create_topics([NewTopic(sys.argv[2], partitions, int(sys.argv[3]))]).values():
    try:
        f.result(timeout=30)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
