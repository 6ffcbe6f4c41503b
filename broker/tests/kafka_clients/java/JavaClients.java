// The Java Kafka client (kafka-clients) against Tributary, as the compatibility tests run it
// (broker/tests/kafka_clients.rs). Each command prints one JSON line of what it saw and
// exits non-zero on any mismatch.
//
//   admin BOOTSTRAP TOPIC                       topics, configs, partitions, cluster,
//                                               records, producers
//   produce BOOTSTRAP TOPIC COUNT               an idempotent acks=all producer
//   group BOOTSTRAP TOPIC GROUP COUNT PROTOCOL  three consumers share six partitions
//                                               (group.protocol classic or consumer);
//                                               one, in its own process, is killed
//   member BOOTSTRAP TOPIC GROUP PROTOCOL NAME  one consumer of a group until standard
//                                               input closes, printing what it is
//                                               assigned and reads
//   produce-until-stopped BOOTSTRAP TOPIC       an idempotent acks=all producer sending
//                                               increasing numbers to partition 0 until
//                                               standard input closes, printing
//                                               `ACK number offset` as each is acknowledged

import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaClients {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void waitFor(String what, Callable<Boolean> condition) throws Exception {
        long deadline = System.currentTimeMillis() + 60_000;
        while (!condition.call()) {
            check(System.currentTimeMillis() < deadline, "timed out waiting for " + what);
            Thread.sleep(100);
        }
    }

    static Admin admin(String bootstrap) {
        return Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap));
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "admin" -> admin(args[1], args[2]);
            case "produce" -> System.out.println(
                    "{\"client\": \"java\", \"acked\": " + produce(args[1], args[2], 0, Integer.parseInt(args[3])) + "}");
            case "group" -> group(args[1], args[2], args[3], Integer.parseInt(args[4]), args[5]);
            case "produce-until-stopped" -> produceUntilStopped(args[1], args[2]);
            case "member" -> member(args[1], args[2], args[3], args[4], args[5]);
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    static void admin(String bootstrap, String topic) throws Exception {
        try (Admin admin = admin(bootstrap)) {
            int brokers = admin.describeCluster().nodes().get().size();
            String clusterId = admin.describeCluster().clusterId().get();
            check(clusterId != null && clusterId.length() == 22, "a cluster id in Kafka's form: " + clusterId);
            short rf = (short) Math.min(3, brokers);
            admin.createTopics(List.of(new NewTopic(topic, 3, rf)
                    .configs(Map.of("retention.ms", "86400000")))).all().get();
            check(admin.listTopics().names().get().contains(topic), "the topic is listed");
            TopicDescription described = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            check(described.partitions().size() == 3, "three partitions");
            check(described.partitions().get(0).replicas().size() == rf, "replication factor " + rf);

            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            check(config.get("retention.ms").value().equals("86400000"), "the override is described");
            check(config.get("segment.bytes") != null, "defaults are described too");
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET))))
                    .all().get();
            config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            check(config.get("retention.ms").value().equals("3600000"), "the change is described");
            check(config.get("max.message.bytes").value().equals("2000000"), "the new key is described");
            try {
                admin.incrementalAlterConfigs(Map.of(resource, List.of(
                        new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET))))
                        .all().get();
                check(false, "a bad value is refused");
            } catch (ExecutionException e) {
                check(e.getCause().getMessage().contains("retention.ms"), "the refusal names the key: " + e.getCause());
            }

            produce(bootstrap, topic, 0, 300);
            TopicPartition first = new TopicPartition(topic, 0);
            long end = admin.listOffsets(Map.of(first, OffsetSpec.latest())).all().get().get(first).offset();
            check(end > 2, "records in partition 0: " + end);
            Collection<ProducerState> producers = admin.describeProducers(List.of(first))
                    .partitionResult(first).get().activeProducers();
            check(producers.size() == 1, "one idempotent producer wrote partition 0: " + producers);
            ProducerState producer = producers.iterator().next();
            check(producer.producerId() >= 0 && producer.producerEpoch() == 0
                    && producer.lastSequence() == end - 1
                    && Math.abs(producer.lastTimestamp() - System.currentTimeMillis()) < 600_000,
                    "the producer's id, epoch, last sequence and time: " + producer);
            long low = admin.deleteRecords(Map.of(first, RecordsToDelete.beforeOffset(end / 2)))
                    .lowWatermarks().get(first).get().lowWatermark();
            check(low == end / 2, "deleteRecords moved the log start to " + low);
            long earliest = admin.listOffsets(Map.of(first, OffsetSpec.earliest())).all().get().get(first).offset();
            check(earliest == end / 2, "the earliest offset is where the records were deleted: " + earliest);

            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all().get();
            waitFor("five partitions", () -> admin.describeTopics(List.of(topic)).allTopicNames().get()
                    .get(topic).partitions().size() == 5);
            admin.deleteTopics(List.of(topic)).all().get();
            waitFor("the topic gone", () -> !admin.listTopics().names().get().contains(topic));
            System.out.println("{\"client\": \"java-admin\", \"cluster\": \"" + clusterId + "\", \"brokers\": " + brokers + ", \"ok\": true}");
        }
    }

    static int produce(String bootstrap, String topic, int from, int count) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = from; i < from + count; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, Integer.toString(i), Integer.toString(i))));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) {
                f.get(30, TimeUnit.SECONDS);
            }
        }
        return sent.size();
    }

    static void produceUntilStopped(String bootstrap, String topic) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "2");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        AtomicBoolean stop = new AtomicBoolean();
        Thread watcher = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // Drain until the test closes standard input.
                }
            } catch (java.io.IOException e) {
                // Closed: stop as well.
            }
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        int sent = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            Semaphore inFlight = new Semaphore(10_000);
            while (!stop.get()) {
                inFlight.acquire();
                int number = sent++;
                producer.send(new ProducerRecord<>(topic, 0, null, Integer.toString(number)), (metadata, error) -> {
                    inFlight.release();
                    synchronized (System.out) {
                        if (error != null) {
                            System.out.println("FAILED " + number + " " + error);
                        } else {
                            System.out.println("ACK " + number + " " + metadata.offset());
                        }
                        System.out.flush();
                    }
                });
            }
            producer.flush();
        }
        System.out.println("DONE sent=" + sent);
    }

    // A consumer in the group, as the test sees it: what it was assigned and what it read.
    abstract static class Member {
        final String name;
        final List<Integer> read = Collections.synchronizedList(new ArrayList<>());
        final Set<Integer> partitionsRead = ConcurrentHashMap.newKeySet();
        volatile Set<Integer> assigned = Set.of();

        Member(String name) {
            this.name = name;
        }

        abstract void close() throws Exception;
    }

    // A consumer on a thread of this process; with `echo`, it also prints what it is
    // assigned and reads (`ASSIGNED p p ...`, `READ partition value`), for a parent process.
    static final class LocalMember extends Member implements Runnable {
        final KafkaConsumer<String, String> consumer;
        final AtomicBoolean stop = new AtomicBoolean();
        final Thread thread = new Thread(this);
        final java.io.PrintStream echo;

        LocalMember(String bootstrap, String topic, String group, String protocol, String name,
                java.io.PrintStream echo) {
            super(name);
            this.echo = echo;
            Properties props = new Properties();
            props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            props.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
            props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            if (protocol.equals("classic")) {
                props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
                props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            }
            props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            consumer = new KafkaConsumer<>(props);
            consumer.subscribe(List.of(topic));
            thread.start();
        }

        public void run() {
            try {
                while (!stop.get()) {
                    ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                    for (ConsumerRecord<String, String> r : records) {
                        read.add(Integer.parseInt(r.value()));
                        partitionsRead.add(r.partition());
                        if (echo != null) {
                            echo.println("READ " + r.partition() + " " + r.value());
                        }
                    }
                    if (!records.isEmpty()) {
                        consumer.commitSync();
                    }
                    Set<Integer> now = new TreeSet<>();
                    for (TopicPartition tp : consumer.assignment()) {
                        now.add(tp.partition());
                    }
                    if (echo != null && !now.equals(assigned)) {
                        StringBuilder line = new StringBuilder("ASSIGNED");
                        now.forEach(p -> line.append(' ').append(p));
                        echo.println(line);
                    }
                    if (echo != null) {
                        echo.flush();
                    }
                    assigned = now;
                }
            } finally {
                consumer.close();
            }
        }

        void close() throws InterruptedException {
            stop.set(true);
            thread.join();
        }
    }

    // A consumer in a process of its own (the `member` command), so that it can be killed
    // with SIGKILL: no LeaveGroup, no last commit, its partitions held until its session
    // times out.
    static final class ChildMember extends Member {
        final Process process;
        final Thread reader;

        ChildMember(String bootstrap, String topic, String group, String protocol, String name) throws Exception {
            super(name);
            String java = ProcessHandle.current().info().command().orElse("java");
            process = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "JavaClients", "member", bootstrap, topic, group, protocol, name)
                    .redirectError(ProcessBuilder.Redirect.INHERIT)
                    .start();
            reader = new Thread(() -> {
                try (var lines = new java.io.BufferedReader(new java.io.InputStreamReader(process.getInputStream()))) {
                    String line;
                    while ((line = lines.readLine()) != null) {
                        String[] parts = line.split(" ");
                        if (parts[0].equals("READ")) {
                            partitionsRead.add(Integer.parseInt(parts[1]));
                            read.add(Integer.parseInt(parts[2]));
                        } else if (parts[0].equals("ASSIGNED")) {
                            Set<Integer> now = new TreeSet<>();
                            for (int i = 1; i < parts.length; i++) {
                                now.add(Integer.parseInt(parts[i]));
                            }
                            assigned = now;
                        }
                    }
                } catch (java.io.IOException e) {
                    // The process is gone.
                }
            });
            reader.start();
        }

        // SIGKILL.
        void kill() throws Exception {
            process.destroyForcibly();
            process.waitFor();
            reader.join();
        }

        void close() throws Exception {
            kill();
        }
    }

    // One group member until standard input closes (or the process is killed).
    static void member(String bootstrap, String topic, String group, String protocol, String name) throws Exception {
        LocalMember member = new LocalMember(bootstrap, topic, group, protocol, name, System.out);
        while (System.in.read() != -1) {
        }
        member.close();
    }

    static void group(String bootstrap, String topic, String group, int count, String protocol) throws Exception {
        try (Admin admin = admin(bootstrap)) {
            short rf = (short) Math.min(3, admin.describeCluster().nodes().get().size());
            admin.createTopics(List.of(new NewTopic(topic, 6, rf))).all().get();
            // An offset of a topic the members will not read, committed while the group is empty.
            TopicPartition unread = new TopicPartition(topic + "-unread", 0);
            admin.createTopics(List.of(new NewTopic(unread.topic(), 1, rf))).all().get();
            admin.alterConsumerGroupOffsets(group, Map.of(unread, new OffsetAndMetadata(0))).all().get();
            List<Member> members = new ArrayList<>();
            ChildMember killed = new ChildMember(bootstrap, topic, group, protocol, "member-0");
            members.add(killed);
            for (int i = 1; i < 3; i++) {
                members.add(new LocalMember(bootstrap, topic, group, protocol, "member-" + i, null));
            }
            waitFor("a split over three members", () -> {
                List<Integer> all = new ArrayList<>();
                for (Member m : members) {
                    if (m.assigned.size() != 2) {
                        return false;
                    }
                    all.addAll(m.assigned);
                }
                Collections.sort(all);
                return all.equals(List.of(0, 1, 2, 3, 4, 5));
            });
            Map<String, Set<Integer>> split = new TreeMap<>();
            for (Member m : members) {
                split.put(m.name, m.assigned);
            }
            produce(bootstrap, topic, 0, count);
            waitFor("every record read", () -> members.stream().mapToInt(m -> m.read.size()).sum() >= count);
            List<Integer> values = new ArrayList<>();
            for (Member m : members) {
                values.addAll(m.read);
                check(split.get(m.name).containsAll(m.partitionsRead), m.name + " read outside its partitions");
            }
            Collections.sort(values);
            for (int i = 0; i < count; i++) {
                check(values.get(i) == i && values.size() == count, "each record read exactly once");
            }

            killed.kill();
            long killedAt = System.currentTimeMillis();
            List<Member> rest = members.subList(1, 3);
            waitFor("two members own all six partitions", () -> {
                List<Integer> all = new ArrayList<>();
                rest.forEach(m -> all.addAll(m.assigned));
                Collections.sort(all);
                return all.equals(List.of(0, 1, 2, 3, 4, 5));
            });
            long takeover = System.currentTimeMillis() - killedAt;
            int before = rest.stream().mapToInt(m -> m.read.size()).sum();
            produce(bootstrap, topic, count, count);
            waitFor("the second half read", () -> rest.stream().mapToInt(m -> m.read.size()).sum() >= before + count);
            Set<Integer> later = new TreeSet<>();
            int laterReads = 0;
            for (Member m : rest) {
                synchronized (m.read) {
                    for (int v : m.read) {
                        if (v >= count) {
                            later.add(v);
                            laterReads++;
                        }
                    }
                }
            }
            check(later.size() == count && laterReads == count, "each later record read exactly once");

            // The group as admin tools see it, with its lag.
            check(admin.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals(group)),
                    "the group is listed");
            ConsumerGroupDescription described = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            check(described.members().size() == 2, "two members described: " + described);
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            committed.keySet().forEach(tp -> latest.put(tp, OffsetSpec.latest()));
            long lag = 0;
            for (var e : admin.listOffsets(latest).all().get().entrySet()) {
                lag += e.getValue().offset() - committed.get(e.getKey()).offset();
            }
            check(lag == 0, "no lag once everything is read: " + lag);

            // Offsets of a topic the members read are kept; the others can go.
            TopicPartition read = new TopicPartition(topic, 0);
            DeleteConsumerGroupOffsetsResult deletion =
                    admin.deleteConsumerGroupOffsets(group, Set.of(read, unread));
            deletion.partitionResult(unread).get();
            try {
                deletion.partitionResult(read).get();
                check(false, "the offsets of a topic the members read are kept");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.GroupSubscribedToTopicException,
                        "GROUP_SUBSCRIBED_TO_TOPIC: " + e.getCause());
            }
            Set<TopicPartition> left = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().keySet();
            check(left.contains(read) && !left.contains(unread), "only the unread topic's offset deleted: " + left);
            for (Member m : rest) {
                m.close();
            }
            System.out.println("{\"client\": \"java\", \"protocol\": \"" + protocol + "\", \"split\": \"" + split
                    + "\", \"takeover_ms\": " + takeover
                    + ", \"state\": \"" + described.groupState() + "\", \"lag\": " + lag + "}");
        }
    }
}
