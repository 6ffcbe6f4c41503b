"""Three kafka-python consumers in one group share a six-partition topic: each partition is
read by one member, every record once, offsets committed; then one member leaves and the
other two take its partitions over and read on from its commits. Also lists and describes
the group with the admin client. Prints one JSON line; exits non-zero on any mismatch."""
import json
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

bootstrap, topic, group, count, assignor = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                            sys.argv[5])
assignors = {"range": [RangePartitionAssignor], "roundrobin": [RoundRobinPartitionAssignor]}[assignor]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=int(sys.argv[6]))])
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)


def produce(start, end):
    for i in range(start, end):
        producer.send(topic, key=str(i).encode(), value=str(i).encode())
    producer.flush()


class Member:
    def __init__(self, name):
        self.name = name
        self.read = []
        self.stop = threading.Event()
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id=name,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      partition_assignment_strategy=assignors,
                                      session_timeout_ms=10000, heartbeat_interval_ms=500)
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            batches = self.consumer.poll(timeout_ms=200)
            for records in batches.values():
                self.read.extend((r.partition, r.offset, int(r.value)) for r in records)
            if batches:
                self.consumer.commit()
        self.consumer.close()  # leaves the group

    def assigned(self):
        return sorted(tp.partition for tp in self.consumer.assignment())


def wait(what, condition, seconds=60):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


members = [Member(f"member-{i}") for i in range(3)]
wait("a stable split over three members",
     lambda: all(len(m.assigned()) == 2 for m in members)
     and sorted(p for m in members for p in m.assigned()) == list(range(6)))
split = {m.name: m.assigned() for m in members}
produce(0, count)
wait("every record read", lambda: sum(len(m.read) for m in members) >= count)
values = sorted(v for m in members for _, _, v in m.read)
assert values == list(range(count)), "each record read exactly once"
for m in members:
    assert {p for p, _, _ in m.read} <= set(split[m.name]), f"{m.name} read outside its partitions"

# One member leaves: the other two take over its partitions from its commits.
members[0].stop.set()
members[0].thread.join()
rest = members[1:]
wait("the two remaining members own all six partitions",
     lambda: sorted(p for m in rest for p in m.assigned()) == list(range(6)))
before = sum(len(m.read) for m in rest)
produce(count, 2 * count)
wait("the second half read", lambda: sum(len(m.read) for m in rest) >= before + count)
later = sorted(v for m in rest for _, _, v in m.read if v >= count)
assert later == list(range(count, 2 * count)), "each later record read exactly once"

listed = {g["group_id"]: g for g in admin.list_groups()}
assert listed[group]["group_type"] == "classic" and listed[group]["group_state"] == "Stable", listed
described = admin.describe_groups([group])[group]
assert described["protocol_data"] == assignor, described
assert sorted(m["client_id"] for m in described["members"]) == ["member-1", "member-2"], described
assigned = sorted(p for m in described["members"]
                  for a in m["member_assignment"]["assigned_partitions"] for p in a["partitions"])
assert assigned == list(range(6)), described
offsets = admin.list_group_offsets(group)[group]
committed = sum(o.offset for o in offsets.values())
assert committed == 2 * count, f"committed offsets add up to {committed}, not {2 * count}"
for m in rest:
    m.stop.set()
    m.thread.join()
print(json.dumps({"client": "kafka-python", "assignor": assignor, "split": split,
                  "state": described["group_state"], "members_described": len(described["members"]),
                  "committed": committed}))
