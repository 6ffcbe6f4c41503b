"""An idempotent acks=all producer (librdkafka) that sends increasing numbers to partition 0
of a topic until its standard input closes, and prints each acknowledged number with its
offset as it is acknowledged: `ACK number offset`. Retries are librdkafka's own, so a
leader killed mid-way is ridden out as a real application would."""
import sys
import threading

from confluent_kafka import Producer

bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 2, "message.timeout.ms": 120000})
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()


def delivered(error, message):
    if error:
        print(f"FAILED {int(message.value())} {error}", flush=True)
    else:
        print(f"ACK {int(message.value())} {message.offset()}", flush=True)


i = 0
while not stop.is_set():
    try:
        producer.produce(topic, partition=0, value=str(i).encode(), on_delivery=delivered)
        i += 1
    except BufferError:
        pass
    producer.poll(0.001)
remaining = producer.flush(120)
print(f"DONE sent={i} undelivered={remaining}", flush=True)
