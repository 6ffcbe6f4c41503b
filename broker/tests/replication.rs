//! Replication under failure, on a real three-broker `tributary local up`: brokers killed
//! with kill -9, paused with SIGSTOP, the controller killed and paused, while producers
//! write. Afterwards every acknowledged record must be there exactly once, in order.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::local::{LocalCluster, Member};
use common::{PATIENCE, eventually};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tributary_broker::client::*;

/// `local up --brokers 3` on ephemeral ports; `env` tunes the brokers and controller.
fn three_brokers(dir: &Path, env: &[(&str, &str)]) -> LocalCluster {
    LocalCluster::start(&dir.join("cluster"), &["--brokers", "3"], env)
}

/// Creates `name` with replication factor 3 and min.insync.replicas=2.
async fn create_topic(cluster: &LocalCluster, name: &str, partitions: u32) {
    common::create_topic(
        &cluster.bootstrap,
        name,
        partitions,
        &[("min.insync.replicas", "2")],
    )
    .await;
}

async fn describe(admin: &Admin, topic: &str) -> Vec<PartitionDescription> {
    admin.describe_topic(topic).await.unwrap().partitions
}

/// Waits until every partition of `topic` has all three replicas in sync.
async fn fully_in_sync(admin: &Admin, topic: &str) -> Vec<PartitionDescription> {
    eventually("every replica is in sync", || async {
        let partitions = admin.describe_topic(topic).await.ok()?.partitions;
        partitions
            .iter()
            .all(|p| p.isr.len() == 3 && p.leader >= 0)
            .then_some(partitions)
    })
    .await
}

/// Runs blocking harness calls (signals, waiting on pid files) off the async threads.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What a producer run saw: every record it sent is numbered; acknowledged ones with where
/// they landed.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    acked: Vec<(u64, RecordMetadata)>,
    failed: Vec<(u64, String)>,
}

/// A producer writing numbered records (about 5,000 a second) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Outcome>,
}

impl Load {
    fn start(config: ProducerConfig, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let topic = topic.to_string();
        let (stopping, counter) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let producer = Producer::connect(config).await.unwrap();
            let mut outcome = Outcome::default();
            let mut pending = FuturesUnordered::new();
            let record =
                |outcome: &mut Outcome, (n, result): (u64, Result<RecordMetadata>)| match result {
                    Ok(written) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        outcome.acked.push((n, written));
                    }
                    Err(error) => outcome.failed.push((n, error.to_string())),
                };
            while !stopping.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    let n = outcome.sent;
                    let delivery = producer
                        .send(ProducerRecord::new(&topic).value(n.to_string()))
                        .await
                        .unwrap();
                    pending.push(async move { (n, delivery.await) });
                    outcome.sent += 1;
                }
                let pause = tokio::time::sleep(Duration::from_millis(10));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        Some(done) = pending.next() => record(&mut outcome, done),
                    }
                }
            }
            producer.flush().await;
            while let Some(done) = pending.next().await {
                record(&mut outcome, done);
            }
            producer.close().await;
            outcome
        });
        Self { stop, acked, task }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` records beyond those acknowledged so far are acknowledged.
    async fn wait_for_progress(&self, more: u64, what: &str) {
        let target = self.acked() + more;
        eventually(what, || async { (self.acked() >= target).then_some(()) }).await;
    }

    async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(PATIENCE * 2, self.task)
            .await
            .expect("the producer finished")
            .unwrap()
    }
}

/// A producer that keeps retrying across leader changes (its requests to a silent broker
/// give up after a few seconds).
fn patient_producer(bootstrap: &str) -> ProducerConfig {
    let mut config = ProducerConfig::new(bootstrap);
    config.request_timeout = Duration::from_secs(5);
    config
}

/// Every record of every partition of `topic`, read from the beginning up to the high
/// watermark.
async fn read_everything(bootstrap: &str, topic: &str) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    let admin = Admin::connect(bootstrap).await.unwrap();
    let partitions = describe(&admin, topic).await;
    let mut config = ConsumerConfig::new(bootstrap);
    config.max_poll_records = 10_000;
    let mut consumer = Consumer::connect(config).await.unwrap();
    let mut everything = BTreeMap::new();
    for p in partitions {
        let tp = TopicPartition::new(topic, p.partition);
        consumer.assign(vec![tp.clone()]).await.unwrap();
        consumer.seek(&tp, Offset::Beginning).await.unwrap();
        let mut records: Vec<ConsumerRecord> = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while records.last().map_or(p.log_start_offset, |r| r.offset + 1) < p.high_watermark {
            assert!(
                Instant::now() < deadline,
                "{tp} could not be read to its end"
            );
            records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
        }
        everything.insert(p.partition, records);
    }
    everything
}

/// Checks Kafka's promises for a finished producer run: every acknowledged record is there
/// at the offset it was acknowledged with, each record is there at most once, and each
/// partition holds records in the order they were sent. Returns how many records were read.
async fn verify(bootstrap: &str, topic: &str, outcome: &Outcome) -> usize {
    let everything = read_everything(bootstrap, topic).await;
    let mut seen: HashMap<u64, (u32, i64)> = HashMap::new();
    for (partition, records) in &everything {
        let mut previous = None;
        for record in records {
            let n: u64 = std::str::from_utf8(record.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert!(n < outcome.sent, "record {n} was never sent");
            if let Some((p, o)) = seen.insert(n, (*partition, record.offset)) {
                panic!(
                    "record {n} is there twice: partition {p} offset {o} and partition {partition} offset {}",
                    record.offset
                );
            }
            assert!(
                previous < Some(n),
                "partition {partition} has record {n} at offset {} after record {previous:?}: out of send order",
                record.offset
            );
            previous = Some(n);
        }
    }
    for (n, written) in &outcome.acked {
        assert_eq!(
            seen.get(n),
            Some(&(written.partition, written.offset)),
            "acknowledged record {n} is not where it was acknowledged ({written:?})"
        );
    }
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_leaders_killed_with_kill_9_exactly_once_and_in_order() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[]);
    create_topic(&cluster, "chaos", 3).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let load = Load::start(patient_producer(&cluster.bootstrap), "chaos");
    load.wait_for_progress(500, "the producer is writing").await;

    for round in 0..4u32 {
        let partitions = fully_in_sync(&admin, "chaos").await;
        let leader = partitions[(round % 3) as usize].leader;
        let pid = blocking(|| cluster.kill9(Member::Broker(leader)));
        load.wait_for_progress(500, "writes go on without the killed leader")
            .await;
        blocking(|| cluster.wait_restarted(Member::Broker(leader), pid));
        load.wait_for_progress(200, "writes go on after the restart")
            .await;
    }
    fully_in_sync(&admin, "chaos").await;
    let outcome = load.finish().await;
    assert!(outcome.failed.is_empty(), "{:?}", &outcome.failed[..1]);
    let read = verify(&cluster.bootstrap, "chaos", &outcome).await;
    assert_eq!(
        read as u64, outcome.sent,
        "every record sent was written once"
    );
    eprintln!("{read} records written through four leader kills, each exactly once");

    // Ctrl-C stops every broker cleanly, then the controller.
    let mut cluster = cluster;
    let (code, output) = blocking(|| cluster.stop());
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("Tributary stopped cleanly."), "{output}");
    for member in [0, 1, 2]
        .map(Member::Broker)
        .into_iter()
        .chain([Member::Controller])
    {
        let dir = cluster.dir_of(member);
        assert!(!dir.join("pid").exists(), "{member:?} left its pid file");
        if member != Member::Controller {
            assert!(
                dir.join(".clean-shutdown").exists(),
                "{member:?} did not stop cleanly"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_follower_leaves_the_isr_after_the_lag_time_and_rejoins_when_it_catches_up() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(
        dir.path(),
        &[
            ("TRIBUTARY_REPLICA_LAG_TIME_MAX_MS", "1000"),
            ("TRIBUTARY_SESSION_TIMEOUT_MS", "15000"),
        ],
    );
    create_topic(&cluster, "lagging", 1).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partition = fully_in_sync(&admin, "lagging").await.remove(0);
    let leader_address = cluster.brokers[partition.leader as usize].0.clone();
    let follower = *partition
        .isr
        .iter()
        .find(|&&r| r != partition.leader)
        .unwrap();
    // Talk to the leader only: the paused follower would not answer.
    let admin = Admin::connect(&leader_address).await.unwrap();
    let load = Load::start(patient_producer(&leader_address), "lagging");
    load.wait_for_progress(300, "the producer is writing").await;

    blocking(|| cluster.pause(Member::Broker(follower)));
    eventually("the paused follower leaves the ISR", || async {
        let p = describe(&admin, "lagging").await.remove(0);
        (!p.isr.contains(&follower)).then_some(())
    })
    .await;
    load.wait_for_progress(500, "acks=all writes go on with two in-sync replicas")
        .await;
    let leader_http = cluster.brokers[partition.leader as usize].1.clone();
    let under_replicated = |http: String| {
        blocking(move || common::http_get_blocking(&http, "/metrics"))
            .is_some_and(|(_, m)| m.contains("tributary_under_replicated_partitions 1"))
    };
    assert!(
        under_replicated(leader_http.clone()),
        "the leader reports it"
    );
    blocking(|| cluster.resume(Member::Broker(follower)));
    let p = fully_in_sync(&admin, "lagging").await.remove(0);
    assert_eq!(p.leader, partition.leader, "the leader never changed");
    eventually("the leader reports nothing under-replicated", || async {
        let http = leader_http.clone();
        blocking(move || common::http_get_blocking(&http, "/metrics"))
            .filter(|(_, m)| m.contains("tributary_under_replicated_partitions 0"))
            .map(drop)
    })
    .await;

    let outcome = load.finish().await;
    assert!(outcome.failed.is_empty(), "{:?}", &outcome.failed[..1]);
    let read = verify(&cluster.bootstrap, "lagging", &outcome).await;
    assert_eq!(read as u64, outcome.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_of_three_brokers_down_acks_all_fails_cleanly_and_succeeds_once_one_returns() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[("TRIBUTARY_SESSION_TIMEOUT_MS", "2000")]);
    create_topic(&cluster, "quorum", 1).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partition = fully_in_sync(&admin, "quorum").await.remove(0);
    let leader_address = cluster.brokers[partition.leader as usize].0.clone();
    let followers: Vec<i32> = partition
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != partition.leader)
        .collect();
    let admin = Admin::connect(&leader_address).await.unwrap();
    let mut outcome = Outcome::default();
    let send = |outcome: &mut Outcome, config: ProducerConfig| {
        let n = outcome.sent;
        outcome.sent += 1;
        async move {
            let producer = Producer::connect(config).await.unwrap();
            let result = producer
                .send(ProducerRecord::new("quorum").value(n.to_string()))
                .await
                .unwrap()
                .await;
            producer.close().await;
            (n, result)
        }
    };
    for _ in 0..10 {
        let (n, result) = send(&mut outcome, patient_producer(&leader_address)).await;
        outcome.acked.push((n, result.unwrap()));
    }

    for &follower in &followers {
        blocking(|| cluster.pause(Member::Broker(follower)));
    }
    eventually("the controller fences both silent brokers", || async {
        let p = describe(&admin, "quorum").await.remove(0);
        (p.isr == vec![partition.leader]).then_some(())
    })
    .await;
    let mut hasty = patient_producer(&leader_address);
    hasty.delivery_timeout = Duration::from_secs(2);
    let (n, result) = send(&mut outcome, hasty).await;
    let error = result.expect_err("acks=all with one in-sync replica must fail");
    assert!(
        error.to_string().contains("min.insync.replicas is 2"),
        "{error}"
    );
    outcome.failed.push((n, error.to_string()));
    let p = describe(&admin, "quorum").await.remove(0);
    assert_eq!(p.high_watermark, 10, "the refused record was not written");

    blocking(|| cluster.resume(Member::Broker(followers[0])));
    let (n, result) = send(&mut outcome, patient_producer(&leader_address)).await;
    outcome
        .acked
        .push((n, result.expect("written once a replica is back")));
    blocking(|| cluster.resume(Member::Broker(followers[1])));
    fully_in_sync(&admin, "quorum").await;

    let read = verify(&cluster.bootstrap, "quorum", &outcome).await;
    assert_eq!(read, 11, "ten before, none while refused, one after");
}

/// The bytes of a partition's log on one broker: its segments, oldest first.
fn log_bytes(cluster: &LocalCluster, broker: i32, topic: &str, partition: u32) -> Vec<u8> {
    let dir = cluster
        .dir_of(Member::Broker(broker))
        .join(format!("{topic}-{partition}"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut segments: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|s| std::fs::read(s).unwrap())
        .collect()
}

async fn produce_values(config: ProducerConfig, topic: &str, values: &[String]) {
    let producer = Producer::connect(config).await.unwrap();
    let mut deliveries = Vec::new();
    for value in values {
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic).value(value.clone()))
                .await
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_truncates_what_it_alone_had_and_converges_byte_for_byte() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[("TRIBUTARY_SESSION_TIMEOUT_MS", "15000")]);
    create_topic(&cluster, "diverge", 1).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partition = fully_in_sync(&admin, "diverge").await.remove(0);
    let old_leader = partition.leader;
    let followers: Vec<i32> = partition
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != old_leader)
        .collect();
    let values = |prefix: &str| (0..100).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    produce_values(
        ProducerConfig::new(&cluster.bootstrap),
        "diverge",
        &values("a"),
    )
    .await;

    // The followers stop fetching; the leader takes records only it has (acks=1). A paused
    // follower's socket still receives the answer to the fetch it was waiting on, so the
    // first record may reach it: it is sent alone, and the rest after that answer went out.
    for &follower in &followers {
        blocking(|| cluster.pause(Member::Broker(follower)));
    }
    let leader_address = cluster.brokers[old_leader as usize].0.clone();
    let mut leader_only = ProducerConfig::new(&leader_address);
    leader_only.acks = Acks::Leader;
    let own = values("b");
    produce_values(leader_only.clone(), "diverge", &own[..1]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce_values(leader_only, "diverge", &own[1..]).await;
    let pid = blocking(|| cluster.kill9(Member::Broker(old_leader)));
    // The controller moves leadership to a follower, which learns it once it runs again.
    for &follower in &followers {
        blocking(|| cluster.resume(Member::Broker(follower)));
    }
    blocking(|| cluster.wait_restarted(Member::Broker(old_leader), pid));

    let follower_address = cluster.brokers[followers[0] as usize].0.clone();
    let admin = Admin::connect(&follower_address).await.unwrap();
    let partition = fully_in_sync(&admin, "diverge").await.remove(0);
    assert_ne!(partition.leader, old_leader);
    assert!(partition.leader_epoch > 0);
    produce_values(
        ProducerConfig::new(&follower_address),
        "diverge",
        &values("c"),
    )
    .await;

    let new_leader = partition.leader;
    let converged = eventually("all three replicas hold the same bytes", || async {
        let leader = log_bytes(&cluster, new_leader, "diverge", 0);
        partition
            .replicas
            .iter()
            .all(|&r| log_bytes(&cluster, r, "diverge", 0) == leader)
            .then_some(leader)
    })
    .await;
    assert!(!converged.is_empty());
    let records = read_everything(&follower_address, "diverge")
        .await
        .remove(&0)
        .unwrap();
    let mut read: Vec<Bytes> = records.into_iter().map(|r| r.value.unwrap()).collect();
    // "b0" stays if the new leader had it before it took over.
    if read.get(100).is_some_and(|v| v == "b0") {
        read.remove(100);
    }
    let expected: Vec<Bytes> = values("a")
        .into_iter()
        .chain(values("c"))
        .map(Bytes::from)
        .collect();
    assert_eq!(
        read, expected,
        "the deposed leader's own records are gone everywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_can_stall_or_die_without_losing_metadata_or_stopping_traffic() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[("TRIBUTARY_SESSION_TIMEOUT_MS", "2000")]);
    create_topic(&cluster, "steady", 3).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let before = admin.describe_topic("steady").await.unwrap();
    fully_in_sync(&admin, "steady").await;
    let load = Load::start(patient_producer(&cluster.bootstrap), "steady");
    load.wait_for_progress(300, "the producer is writing").await;

    // Paused for longer than a session timeout: brokers keep serving, and when it runs
    // again it fences nobody.
    blocking(|| cluster.pause(Member::Controller));
    let paused = Instant::now();
    load.wait_for_progress(1000, "writes go on while the controller is paused")
        .await;
    let read = read_everything(&cluster.bootstrap, "steady").await;
    assert!(read.values().map(Vec::len).sum::<usize>() > 0);
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed())).await;
    blocking(|| cluster.resume(Member::Controller));
    load.wait_for_progress(500, "writes go on after the controller resumed")
        .await;
    let after_pause = admin.describe_topic("steady").await.unwrap();
    for (b, a) in before.partitions.iter().zip(&after_pause.partitions) {
        assert_eq!(
            (b.leader, b.leader_epoch),
            (a.leader, a.leader_epoch),
            "no leader moved"
        );
    }

    // Killed: brokers keep serving until it is back, and it comes back with everything.
    let pid = blocking(|| cluster.kill9(Member::Controller));
    load.wait_for_progress(500, "writes go on without a controller")
        .await;
    blocking(|| cluster.wait_restarted(Member::Controller, pid));
    let after = admin.describe_topic("steady").await.unwrap();
    assert_eq!(
        (after.id.as_str(), after.config.clone()),
        (before.id.as_str(), before.config.clone())
    );
    for (b, a) in before.partitions.iter().zip(&after.partitions) {
        assert_eq!(b.replicas, a.replicas);
        assert!(a.leader_epoch >= b.leader_epoch);
    }
    // The restarted controller does its job: a new topic, and a leader elected when one dies.
    create_topic(&cluster, "after-restart", 1).await;
    produce_values(
        ProducerConfig::new(&cluster.bootstrap),
        "after-restart",
        &["x".into()],
    )
    .await;
    let leader = fully_in_sync(&admin, "steady").await[0].leader;
    let pid = blocking(|| cluster.kill9(Member::Broker(leader)));
    load.wait_for_progress(500, "writes go on after a leader died")
        .await;
    blocking(|| cluster.wait_restarted(Member::Broker(leader), pid));

    fully_in_sync(&admin, "steady").await;
    let outcome = load.finish().await;
    assert!(outcome.failed.is_empty(), "{:?}", &outcome.failed[..1]);
    let read = verify(&cluster.bootstrap, "steady", &outcome).await;
    assert_eq!(read as u64, outcome.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_takes_writes_within_two_session_timeouts_of_the_old_one_going_silent() {
    const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = common::open_tempdir();
    let timeout_ms = SESSION_TIMEOUT.as_millis().to_string();
    let cluster = three_brokers(dir.path(), &[("TRIBUTARY_SESSION_TIMEOUT_MS", &timeout_ms)]);
    create_topic(&cluster, "failover", 1).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partition = fully_in_sync(&admin, "failover").await.remove(0);
    let follower = partition
        .replicas
        .iter()
        .find(|&&r| r != partition.leader)
        .unwrap();
    let follower_address = cluster.brokers[*follower as usize].0.clone();
    let admin = Admin::connect(&follower_address).await.unwrap();

    // SIGSTOP: the leader's connections stay open, so only the session timeout notices.
    blocking(|| cluster.pause(Member::Broker(partition.leader)));
    let silent = Instant::now();
    let new_leader = eventually("a new leader is elected", || async {
        let view = admin.cluster().await.unwrap();
        let leader = view.topics["failover"].partitions[0].leader;
        (leader >= 0 && leader != partition.leader).then_some(leader)
    })
    .await;
    // A producer that asks now goes to the new leader (one with a request in flight to
    // the silent broker waits for its request timeout first, as with Kafka).
    let producer = Producer::connect(patient_producer(&follower_address))
        .await
        .unwrap();
    let written = producer
        .send(ProducerRecord::new("failover").value("after"))
        .await
        .unwrap()
        .await
        .unwrap();
    let took = silent.elapsed();
    eprintln!("broker {new_leader} took a write {took:?} after the leader went silent");
    assert!(
        took < SESSION_TIMEOUT * 2,
        "broker {new_leader} took over and took a write {took:?} after the leader went silent"
    );
    assert_eq!(written.offset, 0);
    producer.close().await;
    blocking(|| cluster.resume(Member::Broker(partition.leader)));
    fully_in_sync(&admin, "failover").await;
}

/// Deletes everything in broker `broker`'s data directory (but the pid file `local up`
/// keeps there): a lost disk. Pause the broker first.
fn wipe_disk(cluster: &LocalCluster, broker: i32) {
    let data = cluster.dir_of(Member::Broker(broker));
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "pid") {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_back_with_an_empty_disk_rebuilds_its_replicas_from_the_leaders() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[]);
    create_topic(&cluster, "rebuild", 3).await;
    let values: Vec<String> = (0..3000).map(|i| format!("record {i}")).collect();
    produce_values(ProducerConfig::new(&cluster.bootstrap), "rebuild", &values).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    fully_in_sync(&admin, "rebuild").await;

    // Broker 2 loses its disk: stopped, its data deleted, then killed and started again.
    let lost = 2;
    blocking(|| cluster.pause(Member::Broker(lost)));
    wipe_disk(&cluster, lost);
    let pid = blocking(|| cluster.kill9(Member::Broker(lost)));
    blocking(|| cluster.wait_restarted(Member::Broker(lost), pid));

    let partitions = fully_in_sync(&admin, "rebuild").await;
    for p in &partitions {
        let leader = log_bytes(&cluster, p.leader, "rebuild", p.partition);
        eventually("the rebuilt replica matches its leader", || async {
            (log_bytes(&cluster, lost, "rebuild", p.partition) == leader).then_some(())
        })
        .await;
    }
    let read: usize = read_everything(&cluster.bootstrap, "rebuild")
        .await
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(read, values.len());
}

/// A rolling restart waits on `/in-sync` (the broker pods' readiness probe) before it stops
/// the next broker: a broker back from a restart answers ready at once but is in sync only
/// once it is back in the in-sync set of what it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_broker_is_in_sync_only_once_it_has_caught_up() {
    let dir = common::open_tempdir();
    // Catching up at 1 MB/s, so that it takes a few seconds.
    let cluster = three_brokers(
        dir.path(),
        &[("TRIBUTARY_REPLICATION_THROTTLE_BYTES_PER_SEC", "1000000")],
    );
    create_topic(&cluster, "sync", 1).await;
    let values: Vec<String> = (0..4000).map(|i| format!("{i:01000}")).collect();
    produce_values(ProducerConfig::new(&cluster.bootstrap), "sync", &values).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partition = fully_in_sync(&admin, "sync").await.remove(0);
    let lost = (0..3).find(|b| *b != partition.leader).unwrap();
    let http = cluster.brokers[lost as usize].1.clone();
    let in_sync = || common::http_get_blocking(&http, "/in-sync");
    assert_eq!(blocking(in_sync).map(|(code, _)| code), Some(200));

    // Broker `lost` comes back with an empty disk: 4 MB to copy again.
    blocking(|| cluster.pause(Member::Broker(lost)));
    wipe_disk(&cluster, lost);
    let pid = blocking(|| cluster.kill9(Member::Broker(lost)));
    blocking(|| cluster.wait_restarted(Member::Broker(lost), pid));
    let (code, body) = blocking(in_sync).expect("an answer");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("catching up on 1 partition(s): sync-0"),
        "{body}"
    );
    let ready = blocking(|| common::http_get_blocking(&http, "/readyz"));
    assert_eq!(
        ready.map(|(code, _)| code),
        Some(200),
        "it serves meanwhile"
    );
    let catching_up = std::time::Instant::now();
    eventually("the restarted broker is in sync", || async {
        (blocking(in_sync)?.0 == 200).then_some(())
    })
    .await;
    eprintln!("in sync {:?} after it was ready", catching_up.elapsed());
    let isr = describe(&admin, "sync").await.remove(0).isr;
    assert!(isr.contains(&lost), "in sync means in the ISR: {isr:?}");
}

/// A rolling restart as a StatefulSet does it with the operator's probes, under acks=all
/// load with min.insync.replicas=2: for each broker in turn, `/prestop` (the preStop hook),
/// SIGTERM, and the next broker only once `/in-sync` (the readiness probe) answers 200.
/// While each broker is down, 2 MB more arrive that it copies back at 1 MB/s, so a roll
/// that went on at the first `/readyz` would stop the next broker while the last still
/// catches up. No partition's ISR drops below two, no send fails, every record is there
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_gated_on_in_sync_keeps_min_insync_and_fails_no_send() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(
        dir.path(),
        &[("TRIBUTARY_REPLICATION_THROTTLE_BYTES_PER_SEC", "1000000")],
    );
    create_topic(&cluster, "rolled", 3).await;
    create_topic(&cluster, "backlog", 1).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    fully_in_sync(&admin, "rolled").await;
    fully_in_sync(&admin, "backlog").await;
    let backlog: Vec<String> = (0..2000).map(|i| format!("{i:01000}")).collect();
    let load = Load::start(patient_producer(&cluster.bootstrap), "rolled");
    load.wait_for_progress(500, "the producer is writing").await;

    // The smallest ISR seen while the brokers roll.
    let smallest = Arc::new(AtomicU64::new(u64::MAX));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (smallest, watching) = (smallest.clone(), watching.clone());
        let bootstrap = cluster.bootstrap.clone();
        tokio::spawn(async move {
            let admin = Admin::connect(&bootstrap).await.unwrap();
            while watching.load(Ordering::Relaxed) {
                for topic in ["rolled", "backlog"] {
                    if let Ok(topic) = admin.describe_topic(topic).await {
                        for p in topic.partitions {
                            smallest.fetch_min(p.isr.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for id in [2, 1, 0] {
        let http = cluster.brokers[id as usize].1.clone();
        let answer = blocking(|| common::http_get_blocking(&http, "/prestop"));
        assert_eq!(answer.map(|(code, _)| code), Some(200));
        let pid = cluster.pid(Member::Broker(id)).expect("the broker runs");
        common::signal(pid, libc::SIGTERM);
        produce_values(patient_producer(&cluster.bootstrap), "backlog", &backlog).await;
        blocking(|| cluster.wait_restarted(Member::Broker(id), pid));
        eventually("the restarted broker is in sync", || async {
            let (code, _) = blocking(|| common::http_get_blocking(&http, "/in-sync"))?;
            (code == 200).then_some(())
        })
        .await;
        load.wait_for_progress(200, "writes go on after the restart")
            .await;
    }
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let outcome = load.finish().await;
    assert!(outcome.failed.is_empty(), "{:?}", &outcome.failed[..1]);
    let read = verify(&cluster.bootstrap, "rolled", &outcome).await;
    assert_eq!(
        read as u64, outcome.sent,
        "every record sent was written once"
    );
    let smallest = smallest.load(Ordering::Relaxed);
    assert!(smallest >= 2, "an ISR shrank to {smallest} during the roll");
    eprintln!("{read} records through a rolling restart of three brokers; smallest ISR {smallest}");
}

/// Kubernetes calls `/prestop` before it stops a broker pod: the broker stops answering
/// ready and answers only once the other in-sync replicas lead its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prestop_hands_every_leadership_over_before_it_answers() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[]);
    create_topic(&cluster, "orders", 6).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let partitions = fully_in_sync(&admin, "orders").await;
    let leaving = partitions[0].leader;
    let http = cluster.brokers[leaving as usize].1.clone();

    let answer = blocking(|| common::http_get_blocking(&http, "/prestop"));
    assert_eq!(answer.map(|(code, _)| code), Some(200));
    let partitions = describe(&admin, "orders").await;
    assert!(
        partitions
            .iter()
            .all(|p| p.leader != leaving && p.leader >= 0),
        "broker {leaving} still leads (or a partition has no leader): {partitions:?}"
    );
    let ready = blocking(|| common::http_get_blocking(&http, "/readyz"));
    assert_eq!(ready.map(|(code, _)| code), Some(503));
}

/// The controller's view of the cluster, once `ready` says it is as wanted.
async fn cluster_status_when(
    cluster: &LocalCluster,
    what: &str,
    ready: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    eventually(what, || async {
        let admin = ClusterAdmin::connect(&cluster.controller, None)
            .await
            .ok()?;
        let status = admin.status().await.ok()?;
        ready(&status).then_some(status)
    })
    .await
}

fn counts_within_one(status: &ClusterStatus, brokers: &[i32]) -> bool {
    let of = |f: fn(&BrokerState) -> u32| {
        let counts: Vec<u32> = status
            .brokers
            .iter()
            .filter(|b| brokers.contains(&b.id))
            .map(f)
            .collect();
        counts.len() == brokers.len()
            && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
    };
    of(|b| b.replicas) && of(|b| b.leaders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_from_three_to_five_brokers_under_acks_all_moves_replicas_and_loses_nothing() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path(), &[]);
    create_topic(&cluster, "growing", 6).await;
    let load = Load::start(patient_producer(&cluster.bootstrap), "growing");
    load.wait_for_progress(2_000, "records before the new brokers join")
        .await;

    // `tributary cluster scale 5`: local up starts brokers 3 and 4, and once they have
    // registered the controller moves replicas onto them.
    let admin = ClusterAdmin::connect(&cluster.controller, None)
        .await
        .unwrap();
    let asked = admin.scale(5).await.unwrap();
    assert_eq!((asked.brokers, asked.run), (5, 5), "{asked:?}");
    let moving = cluster_status_when(&cluster, "the rebalance onto brokers 3 and 4 starts", |s| {
        !s.rebalance.moves.is_empty()
    })
    .await;
    let total = moving.rebalance.total;
    assert!(
        moving.brokers.iter().filter(|b| b.alive).count() == 5,
        "{:?}",
        moving.brokers
    );
    // The controller dies in the middle of the rebalance; its successor resumes it.
    let pid = blocking(|| cluster.kill9(Member::Controller));
    blocking(|| cluster.wait_restarted(Member::Controller, pid));
    let status = cluster_status_when(&cluster, "the rebalance finishes", |s| {
        s.rebalance.moves.is_empty()
            && s.under_replicated_partitions == 0
            && s.brokers.iter().filter(|b| b.alive).count() == 5
    })
    .await;
    assert_eq!(status.rebalance.done + status.rebalance.rolled_back, total);
    assert!(
        counts_within_one(&status, &[0, 1, 2, 3, 4]),
        "{:?}",
        status.brokers
    );
    let scale = status.scale.as_ref().unwrap();
    assert_eq!((scale.brokers, scale.run), (5, 5), "{scale:?}");
    load.wait_for_progress(2_000, "records after the rebalance")
        .await;
    let outcome = load.finish().await;
    assert!(verify(&cluster.bootstrap, "growing", &outcome).await > 0);
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    for p in describe(&admin, "growing").await {
        assert_eq!((p.replicas.len(), p.isr.len()), (3, 3), "{p:?}");
    }
    for id in [3, 4] {
        assert!(
            cluster.output().contains(&format!("broker {id} started")),
            "{}",
            cluster.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shrinking_from_five_to_three_drains_the_two_brokers_before_they_stop() {
    let dir = common::open_tempdir();
    let cluster = LocalCluster::start(&dir.path().join("cluster"), &["--brokers", "5"], &[]);
    create_topic(&cluster, "draining", 6).await;
    let load = Load::start(patient_producer(&cluster.bootstrap), "draining");
    load.wait_for_progress(2_000, "records before the drain")
        .await;

    // Through the CLI, as a user would: it waits until three brokers run and nothing moves.
    let controller = cluster.controller.clone();
    let (code, out, err) = blocking(|| {
        common::cli(
            &[
                "cluster",
                "scale",
                "3",
                "--wait",
                "--timeout-secs",
                "120",
                "--controller",
                &controller,
            ],
            "",
        )
    });
    assert_eq!(code, 0, "{out}\n{err}\n{}", cluster.output());
    assert!(out.contains("3 brokers run and nothing is moving"), "{out}");
    let status = cluster_status_when(&cluster, "three brokers, all in sync", |s| {
        s.under_replicated_partitions == 0 && s.brokers.iter().all(|b| b.id < 3)
    })
    .await;
    assert_eq!(
        status.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
        [0, 1, 2],
        "brokers 3 and 4 are gone: {:?}",
        status.brokers
    );
    assert!(
        counts_within_one(&status, &[0, 1, 2]),
        "{:?}",
        status.brokers
    );
    for id in [3, 4] {
        assert_eq!(cluster.pid(Member::Broker(id)), None, "broker {id} stopped");
        assert!(
            cluster.output().contains(&format!(
                "broker {id} stopped (cleanly): it holds no replicas"
            )),
            "{}",
            cluster.output()
        );
    }
    // Below the topic's replication factor: refused, and nothing changes.
    let (code, _, err) =
        blocking(|| common::cli(&["cluster", "scale", "2", "--controller", &controller], ""));
    assert_ne!(code, 0);
    assert!(
        err.contains("topic 'draining' keeps 3 replicas") && err.contains("scale to 3 or more"),
        "{err}"
    );
    let status = cluster_status_when(&cluster, "the status after the refusal", |_| true).await;
    let scale = status.scale.as_ref().unwrap();
    assert_eq!((scale.brokers, scale.run), (3, 3), "{scale:?}");
    assert!(
        status.brokers.iter().all(|b| !b.cordoned),
        "{:?}",
        status.brokers
    );

    load.wait_for_progress(2_000, "records without the removed brokers")
        .await;
    let outcome = load.finish().await;
    assert!(outcome.failed.is_empty(), "{:?}", &outcome.failed[..1]);
    verify(&cluster.bootstrap, "draining", &outcome).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    for p in describe(&admin, "draining").await {
        assert_eq!((p.replicas.len(), p.isr.len()), (3, 3), "{p:?}");
        assert!(p.replicas.iter().all(|r| *r < 3), "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_gone_for_good_has_its_replicas_recreated_after_the_self_healing_delay() {
    let dir = common::open_tempdir();
    let cluster = LocalCluster::start(
        &dir.path().join("cluster"),
        &["--brokers", "4"],
        &[("TRIBUTARY_SELF_HEALING_AFTER_MS", "2000")],
    );
    create_topic(&cluster, "healing", 8).await;
    let load = Load::start(patient_producer(&cluster.bootstrap), "healing");
    load.wait_for_progress(2_000, "records before the broker goes")
        .await;
    blocking(|| cluster.pause(Member::Broker(3)));
    let status = cluster_status_when(
        &cluster,
        "every partition is back at full replication",
        |s| {
            s.rebalance.moves.is_empty()
                && s.under_replicated_partitions == 0
                && s.brokers.iter().all(|b| b.id != 3 || b.replicas == 0)
        },
    )
    .await;
    assert!(status.rebalance.done > 0, "{:?}", status.rebalance);
    load.wait_for_progress(2_000, "records after healing").await;
    let outcome = load.finish().await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    for p in describe(&admin, "healing").await {
        assert!(!p.replicas.contains(&3), "{p:?}");
        assert_eq!(p.replicas.len(), 3, "{p:?}");
    }
    // Back, and empty: the balancer evens things out onto it again.
    blocking(|| cluster.resume(Member::Broker(3)));
    let status = cluster_status_when(&cluster, "broker 3 holds its share again", |s| {
        s.rebalance.moves.is_empty()
            && s.under_replicated_partitions == 0
            && s.brokers
                .iter()
                .any(|b| b.id == 3 && b.alive && b.replicas > 0)
    })
    .await;
    assert!(
        counts_within_one(&status, &[0, 1, 2, 3]),
        "{:?}",
        status.brokers
    );
    verify(&cluster.bootstrap, "healing", &outcome).await;
    for p in describe(&admin, "healing").await {
        assert_eq!((p.replicas.len(), p.isr.len()), (3, 3), "{p:?}");
    }
}
