"""confluent-kafka (librdkafka) against a Tributary cluster: create a topic, produce with an
idempotent acks=all producer in the given codec, read everything back with assigned
partitions, check order and offsets, delete the topic. Prints one JSON line."""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, count, codec, replication = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                                sys.argv[4], int(sys.argv[5]))
admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=replication)]).values():
    future.result(30)

producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "compression.type": codec, "linger.ms": 5})
acked = {}
failures = []


def delivered(error, message):
    if error:
        failures.append(str(error))
    else:
        acked[int(message.value())] = (message.partition(), message.offset())


for i in range(count):
    producer.produce(topic, key=str(i % 13).encode(), value=str(i).encode(), on_delivery=delivered)
    producer.poll(0)
assert producer.flush(30) == 0, "every record was delivered"
assert not failures, failures[:3]
assert len(acked) == count

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only",
                     "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
read = {}
total = 0
while total < count:
    message = consumer.poll(10)
    assert message is not None, f"read only {total} of {count}"
    assert not message.error(), message.error()
    value = int(message.value())
    assert acked[value] == (message.partition(), message.offset())
    read.setdefault(message.partition(), []).append(value)
    total += 1
consumer.close()
for partition, values in read.items():
    assert values == sorted(values), f"partition {partition} is out of order"

metadata = admin.list_topics(timeout=10)
assert topic in metadata.topics
admin.delete_topics([topic])[topic].result(30)
print(json.dumps({"client": "confluent-kafka", "librdkafka": __import__("confluent_kafka").libversion()[0],
                  "codec": codec, "produced": count, "read": total,
                  "brokers": sorted(metadata.brokers)}))
