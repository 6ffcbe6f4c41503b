//! Consumer groups on a real three-broker `tributary local up`: records shared among the
//! members of a group, a member dying and its partitions moving on, the coordinator's
//! broker killed, and the refusals a stale or confused member gets.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::local::{LocalCluster, Member};
use common::{PATIENCE, eventually, eventually_with};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tributary_broker::client::*;
use tributary_broker::protocol::grpc::proto;

const PARTITIONS: u32 = 6;
const SESSION: Duration = Duration::from_secs(2);

fn three_brokers(dir: &Path) -> LocalCluster {
    LocalCluster::start(
        &dir.join("cluster"),
        &["--brokers", "3"],
        &[("TRIBUTARY_SESSION_TIMEOUT_MS", "2000")],
    )
}

/// `events`: PARTITIONS partitions on all three brokers, min.insync.replicas=2.
async fn create_events(cluster: &LocalCluster) {
    common::create_topic(
        &cluster.bootstrap,
        "events",
        PARTITIONS,
        &[("min.insync.replicas", "2")],
    )
    .await;
}

/// (partition, offset) of a record, and its value.
type Seen = Arc<Mutex<Vec<(String, u32, i64, String)>>>;

/// A group member reading until aborted (a killed consumer: no commit, no goodbye) or
/// until `stop` resolves (then it commits and leaves).
fn member(
    bootstrap: &str,
    group: &str,
    name: &str,
    seen: Seen,
    stop: tokio_util::sync::CancellationToken,
) -> JoinHandle<()> {
    let mut config = ConsumerConfig::new(bootstrap);
    config.group_id = Some(group.into());
    config.client_id = name.into();
    config.session_timeout = SESSION;
    config.auto_commit_interval = Duration::from_millis(200);
    config.auto_offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    let name = name.to_string();
    tokio::spawn(async move {
        let mut consumer = Consumer::connect(config).await.unwrap();
        consumer.subscribe(&["events"]).await.unwrap();
        while !stop.is_cancelled() {
            for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                seen.lock()
                    .unwrap()
                    .push((name.clone(), r.partition, r.offset, value));
            }
        }
        consumer.close().await.unwrap();
    })
}

async fn produce(bootstrap: &str, from: usize, to: usize) {
    let mut config = ProducerConfig::new(bootstrap);
    config.acks = Acks::All;
    let producer = Producer::connect(config).await.unwrap();
    let mut pending = Vec::new();
    for i in from..to {
        let record = ProducerRecord::new("events")
            .key(format!("k{i}"))
            .value(format!("v{i}"));
        pending.push(producer.send(record).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
    producer.close().await;
}

/// Waits until the records seen hold every value of `0..n`.
async fn wait_for_all(seen: &Seen, n: usize, what: &str) {
    eventually_with(what, || async {
        let values: BTreeSet<String> = seen.lock().unwrap().iter().map(|r| r.3.clone()).collect();
        if values.len() == n {
            Ok(())
        } else {
            Err(format!("{} of {n} records read", values.len()))
        }
    })
    .await
}

/// Waits until the group's committed offsets reach the log end on every partition.
async fn wait_committed(admin: &Admin, group: &str) -> GroupDescription {
    eventually_with("the group committed everything", || async {
        match admin.describe_group(group).await {
            Ok(d)
                if d.partitions.len() == PARTITIONS as usize
                    && d.partitions.iter().all(|p| p.lag == Some(0)) =>
            {
                Ok(d)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_shares_partitions_and_a_dead_members_partitions_move_on_from_its_commits() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    create_events(&cluster).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let a = member(
        &cluster.bootstrap,
        "readers",
        "a",
        seen.clone(),
        stop.clone(),
    );
    let b = member(
        &cluster.bootstrap,
        "readers",
        "b",
        seen.clone(),
        stop.clone(),
    );
    let c = member(
        &cluster.bootstrap,
        "readers",
        "c",
        seen.clone(),
        stop.clone(),
    );

    // Every record exactly once while nobody fails, two partitions per member.
    produce(&cluster.bootstrap, 0, 3000).await;
    wait_for_all(&seen, 3000, "three members").await;
    let described = wait_committed(&admin, "readers").await;
    assert_eq!(described.members.len(), 3, "{described:?}");
    assert!(
        described.members.iter().all(|m| m.assigned.len() == 2),
        "{described:?}"
    );
    {
        let seen = seen.lock().unwrap();
        let values: BTreeSet<&String> = seen.iter().map(|r| &r.3).collect();
        assert_eq!(values.len(), seen.len(), "a record was read twice");
    }

    // c dies (no commit, no goodbye) while records keep coming: its partitions move to a
    // and b once its session expires, and reading resumes from its last commits.
    c.abort();
    let died = Instant::now();
    produce(&cluster.bootstrap, 3000, 6000).await;
    wait_for_all(&seen, 6000, "after c died").await;
    let described = wait_committed(&admin, "readers").await;
    assert_eq!(described.members.len(), 2, "{described:?}");
    assert!(
        died.elapsed() < PATIENCE,
        "took over in {:?}",
        died.elapsed()
    );
    {
        let seen = seen.lock().unwrap();
        let mut by_record: BTreeMap<(u32, i64), Vec<&str>> = BTreeMap::new();
        for (who, p, o, _) in seen.iter() {
            by_record.entry((*p, *o)).or_default().push(who);
        }
        for (record, readers) in &by_record {
            if readers.len() > 1 {
                // Only what c read after its last commit is read again, by its successor.
                assert!(
                    readers.len() == 2 && readers[0] == "c",
                    "{record:?} read by {readers:?}"
                );
            }
        }
    }

    // c comes back (a new process, a new member): the partitions spread over three again
    // and nothing already committed is read again.
    let before = seen.lock().unwrap().len();
    let c = member(
        &cluster.bootstrap,
        "readers",
        "c2",
        seen.clone(),
        stop.clone(),
    );
    let d = eventually_with("c2 got partitions", || async {
        let d = admin.describe_group("readers").await.unwrap();
        if d.state == "Stable" && d.members.len() == 3 {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert!(d.members.iter().all(|m| m.assigned.len() == 2), "{d:?}");
    produce(&cluster.bootstrap, 6000, 6600).await;
    wait_for_all(&seen, 6600, "after c came back").await;
    assert_eq!(
        seen.lock().unwrap().len() - before,
        600,
        "committed records were read again"
    );
    stop.cancel();
    for m in [a, b, c] {
        m.await.unwrap();
    }
    let d = admin.describe_group("readers").await.unwrap();
    assert_eq!(d.state, "Empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_group_finds_a_new_coordinator_when_its_broker_is_killed_and_keeps_its_offsets() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    create_events(&cluster).await;
    let admin = Admin::connect(&cluster.bootstrap).await.unwrap();
    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let a = member(&cluster.bootstrap, "g", "a", seen.clone(), stop.clone());
    let b = member(&cluster.bootstrap, "g", "b", seen.clone(), stop.clone());
    produce(&cluster.bootstrap, 0, 2000).await;
    wait_for_all(&seen, 2000, "before the kill").await;
    let described = wait_committed(&admin, "g").await;

    let old = cluster.kill9(Member::Broker(described.coordinator));
    produce(&cluster.bootstrap, 2000, 4000).await;
    wait_for_all(&seen, 4000, "after the coordinator was killed").await;
    let described = wait_committed(&admin, "g").await;
    cluster.wait_restarted(Member::Broker(described.coordinator), old);

    stop.cancel();
    for m in [a, b] {
        m.await.unwrap();
    }
    // The committed offsets survived: a new member of the group reads nothing old.
    let seen_again: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let late = member(
        &cluster.bootstrap,
        "g",
        "late",
        seen_again.clone(),
        stop.clone(),
    );
    produce(&cluster.bootstrap, 4000, 4010).await;
    eventually("the late member read the new records", || async {
        (seen_again.lock().unwrap().len() >= 10).then_some(())
    })
    .await;
    stop.cancel();
    late.await.unwrap();
    let values: BTreeSet<String> = seen_again
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.3.clone())
        .collect();
    let expected: BTreeSet<String> = (4000..4010).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected, "only the new records");
}

/// Calls the group's coordinator directly, as a confused or stale client would.
async fn raw_commit(
    address: &str,
    member_id: &str,
    epoch: i32,
    partition: u32,
) -> Result<(), tonic::Status> {
    let mut client = proto::group_client::GroupClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    client
        .offset_commit(proto::OffsetCommitRequest {
            group_id: "solo".into(),
            member_id: member_id.into(),
            member_epoch: epoch,
            offsets: vec![proto::CommittedOffset {
                topic: "events".into(),
                partition,
                offset: 1,
                metadata: String::new(),
            }],
        })
        .await
        .map(|_| ())
}

fn code(status: &tonic::Status) -> Option<ErrorCode> {
    tributary_broker::protocol::grpc::status::error_code_of(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_and_confused_members_and_bad_admin_requests_are_refused_with_reasons() {
    let dir = common::open_tempdir();
    let broker = common::Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "events", 2, &[]).await;
    let mut client = proto::group_client::GroupClient::connect(format!("http://{}", broker.grpc))
        .await
        .unwrap();
    let heartbeat = |member_id: &str, epoch: i32, owned: Vec<u32>| proto::GroupHeartbeatRequest {
        group_id: "solo".into(),
        member_id: member_id.into(),
        member_epoch: epoch,
        subscribed_topics: vec!["events".into()],
        owned: vec![proto::GroupTopicPartitions {
            topic: "events".into(),
            partitions: owned,
        }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        client_id: "raw".into(),
    };
    // The offsets topic is created on first use: retry until the coordinator is there.
    eventually_with("the coordinator is there", || {
        let mut client = client.clone();
        async move {
            let find = proto::FindCoordinatorRequest {
                group_id: "solo".into(),
            };
            match client.find_coordinator(find).await {
                Ok(_) => Ok(()),
                Err(s) if code(&s) == Some(ErrorCode::CoordinatorNotAvailable) => {
                    Err(format!("{s:?}"))
                }
                Err(s) => panic!("{s:?}"),
            }
        }
    })
    .await;
    let joined = client
        .heartbeat(heartbeat("", 0, vec![]))
        .await
        .unwrap()
        .into_inner();
    let first = client
        .heartbeat(heartbeat(&joined.member_id, joined.member_epoch, vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.assignment[0].partitions, vec![0, 1]);
    let (id, epoch) = (first.member_id.clone(), first.member_epoch);
    raw_commit(&broker.grpc, &id, epoch, 0).await.unwrap();

    // A second member joins: the first gives partition 1 up and moves to a new epoch.
    let other = client
        .heartbeat(heartbeat("", 0, vec![]))
        .await
        .unwrap()
        .into_inner();
    let moved = client
        .heartbeat(heartbeat(&id, epoch, vec![0, 1]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.assignment[0].partitions.len(), 1);
    assert!(moved.member_epoch > epoch);

    // A commit from the old epoch (a zombie of the earlier assignment) is refused.
    let status = raw_commit(&broker.grpc, &id, epoch, 0).await.unwrap_err();
    assert_eq!(
        code(&status),
        Some(ErrorCode::StaleMemberEpoch),
        "{status:?}"
    );
    assert!(
        status.message().contains("missed an assignment change"),
        "{status:?}"
    );
    // So is a commit for a partition the member gave up (once it said so; until then it
    // may still commit it), and one by a stranger.
    client
        .heartbeat(heartbeat(
            &id,
            moved.member_epoch,
            moved.assignment[0].partitions.clone(),
        ))
        .await
        .unwrap();
    let theirs = if moved.assignment[0].partitions == [0] {
        1
    } else {
        0
    };
    let status = raw_commit(&broker.grpc, &id, moved.member_epoch, theirs)
        .await
        .unwrap_err();
    assert_eq!(
        code(&status),
        Some(ErrorCode::PartitionNotAssigned),
        "{status:?}"
    );
    let status = raw_commit(&broker.grpc, "nobody", 1, 0).await.unwrap_err();
    assert_eq!(
        code(&status),
        Some(ErrorCode::UnknownMemberId),
        "{status:?}"
    );
    assert!(status.message().contains("join again"), "{status:?}");

    // Offsets of an active group cannot be reset; an unknown group is named as such.
    let b = ["--bootstrap", broker.grpc.as_str()];
    let (code_, _, stderr) = common::cli(
        &[
            &b[..],
            &[
                "group",
                "reset-offsets",
                "solo",
                "--topic",
                "events",
                "--to-earliest",
            ],
        ]
        .concat(),
        "",
    );
    assert_eq!(code_, 1);
    assert!(stderr.contains("has 2 active member(s)"), "{stderr}");
    let (code_, _, stderr) = common::cli(&[&b[..], &["group", "describe", "nobody"]].concat(), "");
    assert_eq!(code_, 1);
    assert!(stderr.contains("group 'nobody' does not exist"), "{stderr}");
    let (code_, _, stderr) = common::cli(
        &[
            &b[..],
            &["group", "reset-offsets", "solo", "--topic", "events"],
        ]
        .concat(),
        "",
    );
    assert_eq!(code_, 1, "{stderr}");
    assert!(
        stderr.contains("--to-earliest, --to-latest or --to-offset"),
        "{stderr}"
    );

    // Once both leave, the reset goes through.
    for member in [&id, &other.member_id] {
        client
            .heartbeat(heartbeat(member, -1, vec![]))
            .await
            .unwrap();
    }
    let (code_, stdout, stderr) = common::cli(
        &[
            &b[..],
            &[
                "group",
                "reset-offsets",
                "solo",
                "--topic",
                "events",
                "--to-offset",
                "0",
            ],
        ]
        .concat(),
        "",
    );
    assert_eq!(code_, 0, "{stderr}");
    assert!(
        stdout.contains("events-0: 0") && stdout.contains("events-1: 0"),
        "{stdout}"
    );
}

/// The CLI end to end: `consume --group` reads and commits, `group describe` shows the
/// lag per partition, and `perf consume --group` reads only what the group has not.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_as_a_group_and_shows_its_committed_offsets_and_lag() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    common::create_topic(&cluster.bootstrap, "events", PARTITIONS, &[]).await;
    produce(&cluster.bootstrap, 0, 60).await;
    let b = ["--bootstrap", cluster.bootstrap.as_str()];
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = common::cli(&[&b[..], args].concat(), "");
        assert_eq!(code, 0, "tributary {args:?}: {stderr}");
        stdout
    };

    let read = run(&[
        "consume",
        "events",
        "--group",
        "cli",
        "--from-beginning",
        "--max-messages",
        "60",
    ]);
    let values: BTreeSet<&str> = read.lines().collect();
    let expected: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected.iter().map(String::as_str).collect());

    produce(&cluster.bootstrap, 60, 70).await;
    let described: Vec<serde_json::Value> =
        serde_json::from_str(&run(&["--output", "json", "group", "describe", "cli"])).unwrap();
    assert_eq!(described.len(), PARTITIONS as usize, "{described:?}");
    let mut lag = 0;
    for p in &described {
        let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        let expected = [
            "committed_offset",
            "lag",
            "log_end_offset",
            "member",
            "partition",
            "topic",
        ];
        assert_eq!(keys, expected.into_iter().collect(), "{p}");
        assert_eq!(
            p["log_end_offset"].as_i64().unwrap() - p["committed_offset"].as_i64().unwrap(),
            p["lag"].as_i64().unwrap(),
            "{p}"
        );
        lag += p["lag"].as_i64().unwrap();
    }
    assert_eq!(
        lag, 10,
        "the ten records produced after the group read: {described:?}"
    );
    assert!(run(&["group", "list"]).contains("cli"));

    let perf = run(&[
        "perf",
        "consume",
        "events",
        "--group",
        "cli",
        "--num-records",
        "10",
    ]);
    assert!(
        perf.contains("assigned partitions [0, 1, 2, 3, 4, 5] at "),
        "{perf}"
    );
    assert!(perf.contains("total: 10 records consumed"), "{perf}");
}
