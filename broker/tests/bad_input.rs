//! Every bad input gets a clear error, and the broker keeps serving everyone else.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::Broker;
use tonic::Code;
use tributary_broker::client::*;
use tributary_broker::protocol::grpc::proto::{self, broker_client::BrokerClient};
use tributary_broker::protocol::grpc::status::error_code_of;
use tributary_broker::record::BatchBuilder;

async fn raw(broker: &Broker) -> BrokerClient<tonic::transport::Channel> {
    BrokerClient::connect(format!("http://{}", broker.grpc))
        .await
        .unwrap()
}

fn batch(records: usize, value_size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None, 1024);
    for _ in 0..records {
        builder.append(1_700_000_000_000, None, Some(&vec![b'x'; value_size]), &[]);
    }
    builder.build().unwrap().to_vec()
}

fn produce_request(topic: &str, partition: u32, records: Vec<u8>) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic: topic.into(),
        partition,
        acks: 1,
        timeout_ms: 0,
        records: Bytes::from(records),
    }
}

/// Asserts the call failed with `code`, the broker's `error`, and a message containing `says`.
fn expect(
    result: Result<tonic::Response<proto::ProduceResponse>, tonic::Status>,
    code: Code,
    error: ErrorCode,
    says: &str,
) {
    let status = result.expect_err("the request should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_code_of(&status), Some(error), "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} should say {says:?}",
        status.message()
    );
}

async fn still_serving(broker: &Broker) {
    let mut client = raw(broker).await;
    let response = client
        .produce(produce_request("good", 0, batch(1, 10)))
        .await
        .expect("the broker still serves");
    assert!(response.into_inner().base_offset >= 0);
}

async fn broker_with_topic() -> (tempfile::TempDir, Broker) {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    let config = [("max.message.bytes".to_string(), "10000".to_string())].into();
    admin
        .create_topic(NewTopic {
            name: "good".into(),
            partitions: 2,
            replication_factor: None,
            config,
        })
        .await
        .unwrap();
    (dir, broker)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_batches_are_refused_with_what_was_wrong() {
    let (_dir, broker) = broker_with_topic().await;
    let mut client = raw(&broker).await;

    let mut damaged = batch(3, 20);
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    expect(
        client.produce(produce_request("good", 0, damaged)).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord,
        "CRC mismatch",
    );

    let mut old_format = batch(1, 20);
    old_format[16] = 1;
    expect(
        client.produce(produce_request("good", 0, old_format)).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRecord,
        "magic 2",
    );

    let mut truncated = batch(3, 20);
    truncated.truncate(truncated.len() - 5);
    expect(
        client.produce(produce_request("good", 0, truncated)).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord,
        "truncated",
    );

    expect(
        client
            .produce(produce_request("good", 0, batch(20, 1000)))
            .await,
        Code::InvalidArgument,
        ErrorCode::RecordTooLarge,
        "max.message.bytes (10000)",
    );
    expect(
        client.produce(produce_request("good", 0, Vec::new())).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRecord,
        "at least one record",
    );
    expect(
        client
            .produce(produce_request("good", 0, vec![0xde, 0xad, 0xbe, 0xef]))
            .await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord,
        "truncated",
    );

    let mut bad_acks = produce_request("good", 0, batch(1, 1));
    bad_acks.acks = 2;
    expect(
        client.produce(bad_acks).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest,
        "acks must be 0, 1 or -1",
    );

    // Nothing was written by any of them.
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    assert_eq!(
        admin.describe_topic("good").await.unwrap().partitions[0].high_watermark,
        0
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topics_and_partitions_are_named_in_the_error() {
    let (_dir, broker) = broker_with_topic().await;
    let mut client = raw(&broker).await;
    expect(
        client
            .produce(produce_request("missing", 0, batch(1, 1)))
            .await,
        Code::NotFound,
        ErrorCode::UnknownTopicOrPartition,
        "missing-0",
    );
    expect(
        client
            .produce(produce_request("good", 7, batch(1, 1)))
            .await,
        Code::NotFound,
        ErrorCode::UnknownTopicOrPartition,
        "good-7",
    );

    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    let err = producer
        .send(ProducerRecord::new("missing").value("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown topic 'missing'"), "{err}");
    let err = producer
        .send(ProducerRecord::new("good").partition(9).value("x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no partition 9: it has partitions 0 to 1"),
        "{err}"
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_at_bad_offsets_say_which_offsets_exist() {
    let (_dir, broker) = broker_with_topic().await;
    still_serving(&broker).await;
    let mut client = raw(&broker).await;
    for offset in [-1, 5] {
        let response = client
            .fetch(proto::FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 0,
                partitions: vec![
                    proto::FetchPartition {
                        topic: "good".into(),
                        partition: 0,
                        fetch_offset: offset,
                        max_bytes: 0,
                    },
                    proto::FetchPartition {
                        topic: "good".into(),
                        partition: 1,
                        fetch_offset: 0,
                        max_bytes: 0,
                    },
                    proto::FetchPartition {
                        topic: "nope".into(),
                        partition: 0,
                        fetch_offset: 0,
                        max_bytes: 0,
                    },
                ],
            })
            .await
            .unwrap()
            .into_inner();
        let [bad, fine, unknown] = response.partitions.as_slice() else {
            panic!("three answers expected")
        };
        assert_eq!(bad.error_code, i32::from(ErrorCode::OffsetOutOfRange));
        assert!(
            bad.error_message.contains(&format!(
                "offset {offset} is out of range for good-0: it holds offsets 0 to 1"
            )),
            "{}",
            bad.error_message
        );
        assert_eq!(
            fine.error_code,
            i32::from(ErrorCode::None),
            "one bad partition does not fail the others"
        );
        assert_eq!(
            unknown.error_code,
            i32::from(ErrorCode::UnknownTopicOrPartition)
        );
    }
    let status = client
        .fetch(proto::FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 0,
            partitions: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("at least one partition"),
        "{status:?}"
    );
    let mut consumer = Consumer::connect(ConsumerConfig::new(&broker.grpc))
        .await
        .unwrap();
    consumer
        .assign(vec![TopicPartition::new("good", 0)])
        .await
        .unwrap();
    let err = consumer
        .seek(&TopicPartition::new("good", 0), Offset::At(-3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("offsets start at 0"), "{err}");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_topic_definitions_are_refused_with_what_to_do() {
    let (_dir, broker) = broker_with_topic().await;
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    let cases: [(NewTopic, &str); 5] = [
        (
            NewTopic {
                name: "a b".into(),
                partitions: 1,
                ..Default::default()
            },
            "contains ' '",
        ),
        (
            NewTopic {
                name: "zero".into(),
                partitions: 0,
                ..Default::default()
            },
            "from 1 to",
        ),
        (
            NewTopic {
                name: "rf".into(),
                partitions: 1,
                replication_factor: Some(3),
                ..Default::default()
            },
            "1 broker is available",
        ),
        (
            NewTopic {
                name: "good".into(),
                partitions: 1,
                ..Default::default()
            },
            "already exists",
        ),
        (
            NewTopic {
                name: "cfg".into(),
                partitions: 1,
                config: [("segment.byte".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            "unknown topic config 'segment.byte'",
        ),
    ];
    for (topic, says) in cases {
        let err = admin.create_topic(topic).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
    let err = admin.delete_topic("never-was").await.unwrap_err();
    assert!(
        err.to_string().contains("unknown topic 'never-was'"),
        "{err}"
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_grpc_port_closes_that_connection_only() {
    let (_dir, broker) = broker_with_topic().await;
    let reply = common::send_raw(
        &broker.grpc,
        b"\x00\x01 this is not HTTP/2 at all \xff\xfe\r\n\r\n",
    )
    .await;
    // The server answers a broken HTTP/2 preface with a GOAWAY (or just closes).
    assert!(
        reply.len() < 1024,
        "unexpected reply of {} bytes",
        reply.len()
    );
    // A plain HTTP request (curl, a browser) is told what the port is for.
    let reply = common::send_raw(
        &broker.grpc,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("Tributary broker's gRPC port") && reply.contains("/healthz"),
        "{reply}"
    );
    still_serving(&broker).await;
    assert_eq!(
        common::http_get_blocking(&broker.http, "/healthz").map(|(c, _)| c),
        Some(200)
    );
}

/// Runs the broker binary until it exits; returns its exit code and stderr.
fn broker_exit(args: &[&str], as_nobody: bool) -> (i32, String) {
    let mut command = Command::new(common::BROKER);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if as_nobody {
        command.uid(65534).gid(65534);
    }
    let mut child = command.spawn().expect("start the broker");
    // Bounded: a broker that does not stop as expected is killed and the test fails.
    let status = common::wait_with_patience(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn unusable_data_directories_stop_the_broker_with_a_clear_message() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::open_tempdir();
    let listen = common::EPHEMERAL_LISTENERS;

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (code, stderr) = broker_exit(
        &[&["--data-dir", file.to_str().unwrap()], &listen[..]].concat(),
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("exists but is not a directory"), "{stderr}");

    let below_file = file.join("data");
    let (code, stderr) = broker_exit(
        &[&["--data-dir", below_file.to_str().unwrap()], &listen[..]].concat(),
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot create it"), "{stderr}");

    // Read-only: root ignores permission bits, so then the broker runs as nobody.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let as_nobody = running_as_root();
    let (code, stderr) = broker_exit(
        &[&["--data-dir", read_only.to_str().unwrap()], &listen[..]].concat(),
        as_nobody,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is not writable"), "{stderr}");

    // A missing directory is simply created.
    let missing = dir.path().join("new/deeper/data");
    let broker = Broker::start(&missing, &[]);
    assert!(missing.join(".lock").exists());
    drop(broker);
}

/// Whether this process runs as root (read from /proc, no unsafe code needed).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_port_in_use_or_a_second_broker_on_the_same_data_stops_with_a_clear_message() {
    let dir = common::open_tempdir();
    let data = dir.path().join("data");
    let broker = Broker::start(&data, &[]);
    let (code, stderr) = broker_exit(
        &[
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
            "--listen",
            &broker.grpc,
            "--http-listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
        ],
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for gRPC on {}", broker.grpc))
            && stderr.contains("--listen"),
        "{stderr}"
    );

    let (code, stderr) = broker_exit(
        &[
            &["--data-dir", data.to_str().unwrap()][..],
            &common::EPHEMERAL_LISTENERS,
        ]
        .concat(),
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("in use by another broker process"),
        "{stderr}"
    );

    let (code, stderr) = broker_exit(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            "retention.ms=soon",
        ],
        false,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("invalid value 'soon' for retention.ms"),
        "{stderr}"
    );
}

#[test]
fn a_second_controller_on_the_same_data_stops_before_it_says_it_listens() {
    let dir = common::open_tempdir();
    let data = dir.path().join("controller");
    let start = || {
        Command::new(common::CONTROLLER)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the controller")
    };
    let mut first = start();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("listening: controller=0 grpc=127.0.0.1:"),
        "{line:?}"
    );

    // A supervisor takes the listening line as "started": the second must not print it.
    let second = start().wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&second.stdout), "", "{stderr}");
    assert!(stderr.contains("another controller"), "{stderr}");

    common::signal(first.id(), libc::SIGTERM);
    assert!(common::wait_with_patience(&mut first).success());
}

#[test]
fn a_broker_refuses_the_controller_of_another_cluster_and_keeps_its_logs() {
    let dir = common::open_tempdir();
    let data = dir.path().join("broker");
    let mut broker = common::Broker::start(&data, &[]);
    let bootstrap = ["--bootstrap", broker.grpc.as_str()];
    for (args, stdin) in [
        (&["topic", "create", "kept", "--partitions", "1"][..], ""),
        (&["produce", "kept"][..], "one\ntwo\n"),
    ] {
        let (code, _, err) = common::cli(&[&bootstrap[..], args].concat(), stdin);
        assert_eq!(code, 0, "{err}");
    }
    broker.terminate();
    let logs = || {
        std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("kept"))
            .count()
    };
    assert_eq!(logs(), 1);

    // The metadata is gone (as when a Cluster is deleted and created again under its
    // name, its volumes kept): a new controller, a new cluster id.
    std::fs::remove_dir_all(data.join("controller")).unwrap();
    let (code, stderr) = broker_exit(
        &[
            &["--data-dir", data.to_str().unwrap()][..],
            &common::EPHEMERAL_LISTENERS,
        ]
        .concat(),
        false,
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("holds the logs of cluster")
            && stderr.contains("nothing in it was touched"),
        "{stderr}"
    );
    assert_eq!(logs(), 1, "the other cluster's log is still there");
}
