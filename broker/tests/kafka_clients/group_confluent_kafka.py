"""Three librdkafka consumers (confluent-kafka), each its own process, in one group over a
six-partition topic with the given assignor (range, roundrobin or cooperative-sticky):
each partition is read by one member and every record once, offsets committed; then one
member is killed with SIGKILL, and after its session times out the other two take its
partitions over from its last commits. Prints one JSON line; exits non-zero on a mismatch.

Run as `member BOOTSTRAP TOPIC GROUP ASSIGNOR NAME` it is one member: it prints
`ASSIGNED p,p,..` on every assignment and `READ partition offset value` for each record,
committing synchronously after each record."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def member(bootstrap, topic, group, assignor, name):
    owned = set()

    def report():
        print("ASSIGNED " + ",".join(str(p) for p in sorted(owned)), flush=True)

    # Eager assignors hand out (and take back) everything at once, cooperative-sticky only
    # what changes; either way the callbacks name the partitions that come and go.
    def assigned(consumer, partitions):
        owned.update(p.partition for p in partitions)
        report()

    def revoked(consumer, partitions):
        owned.difference_update(p.partition for p in partitions)
        report()

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                         "partition.assignment.strategy": assignor, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500})
    consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
    while True:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            print(f"ERROR {message.error()}", flush=True)
            continue
        print(f"READ {message.partition()} {message.offset()} {int(message.value())}", flush=True)
        consumer.commit(message=message, asynchronous=False)


class Member:
    def __init__(self, argv, name):
        self.name = name
        self.assigned = []
        self.read = []
        self.process = subprocess.Popen([sys.executable, __file__, "member", *argv, name],
                                        stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self.follow, daemon=True).start()

    def follow(self):
        for line in self.process.stdout:
            if line.startswith("ASSIGNED"):
                parts = line.split()
                self.assigned = [int(p) for p in parts[1].split(",")] if len(parts) > 1 else []
            elif line.startswith("READ"):
                _, p, o, v = line.split()
                self.read.append((int(p), int(o), int(v)))


def wait(what, condition, seconds=60):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def main(bootstrap, topic, group, count, assignor, replication):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=replication)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})

    def produce(start, end):
        for i in range(start, end):
            producer.produce(topic, key=str(i).encode(), value=str(i).encode())
            producer.poll(0)
        assert producer.flush(30) == 0

    argv = [bootstrap, topic, group, assignor]
    members = [Member(argv, f"member-{i}") for i in range(3)]
    try:
        wait("a stable split over three members",
             lambda: all(len(m.assigned) == 2 for m in members)
             and sorted(p for m in members for p in m.assigned) == list(range(6)))
        split = {m.name: list(m.assigned) for m in members}
        produce(0, count)
        wait("every record read", lambda: sum(len(m.read) for m in members) >= count)
        values = sorted(v for m in members for _, _, v in m.read)
        assert values == list(range(count)), "each record read exactly once"
        for m in members:
            assert {p for p, _, _ in m.read} <= set(split[m.name]), f"{m.name} read outside its partitions"

        killed = members[0]
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.wait()
        rest = members[1:]
        started = time.time()
        wait("the two remaining members own all six partitions",
             lambda: sorted(p for m in rest for p in m.assigned) == list(range(6)))
        took_over = time.time() - started
        before = sum(len(m.read) for m in rest)
        produce(count, 2 * count)
        wait("the second half read", lambda: sum(len(m.read) for m in rest) >= before + count)
        later = sorted(v for m in rest for _, _, v in m.read if v >= count)
        assert later == list(range(count, 2 * count)), "each later record read exactly once"
        # The killed member committed each record before reading the next, so at most the
        # one it was reading when it died is read again, on each of its partitions.
        again = [(p, v) for m in rest for p, _, v in m.read if v < count and p in split[killed.name]]
        assert len({v for _, v in again}) <= len(split[killed.name]), f"read again: {again}"
        assert all(p in split[killed.name] for p, _ in again), f"read again: {again}"
    finally:
        for m in members:
            if m.process.poll() is None:
                m.process.kill()
    print(json.dumps({"client": "confluent-kafka", "assignor": assignor, "split": split,
                      "took_over_after_kill_s": round(took_over, 1)}))


if __name__ == "__main__":
    if sys.argv[1] == "member":
        member(*sys.argv[2:7])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
