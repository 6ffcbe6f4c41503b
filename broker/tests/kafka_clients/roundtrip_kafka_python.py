"""kafka-python against a Tributary cluster: create a topic with the admin client, produce
keyed records with an idempotent acks=all producer, read them back by partition, delete the
topic. Prints one JSON line with what it saw; exits non-zero on any mismatch."""
import json
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap, topic, count, replication = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-python-admin")
admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=replication)])
assert topic in admin.list_topics(), "the created topic is listed"

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         compression_type="gzip", linger_ms=5)
sent = [producer.send(topic, key=str(i % 11).encode(), value=str(i).encode()) for i in range(count)]
producer.flush()
acked = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in sent)]
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         consumer_timeout_ms=5000, auto_offset_reset="earliest")
partitions = [TopicPartition(topic, p) for p in range(3)]
consumer.assign(partitions)
consumer.seek_to_beginning(*partitions)
read = {}
for message in consumer:
    read.setdefault(message.partition, []).append((message.offset, int(message.value), message.key))
    if sum(len(v) for v in read.values()) == count:
        break
end_offsets = consumer.end_offsets(partitions)
consumer.close()

for partition, records in read.items():
    offsets = [o for o, _, _ in records]
    assert offsets == list(range(len(offsets))), f"partition {partition}: offsets {offsets[:10]}..."
    values = [v for _, v, _ in records]
    assert values == sorted(values), f"partition {partition} is out of order"
    for offset, value, key in records:
        assert key == str(value % 11).encode()
        assert acked[value] == (partition, offset), f"record {value} acked at {acked[value]}, read at {(partition, offset)}"
total = sum(len(v) for v in read.values())
assert total == count, f"read {total} of {count}"
assert sum(end_offsets.values()) == count

admin.delete_topics([topic])
assert topic not in admin.list_topics(), "the deleted topic is gone"
admin.close()
print(json.dumps({"client": "kafka-python", "produced": count, "read": total,
                  "partitions": sorted(read)}))
