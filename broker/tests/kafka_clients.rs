//! Real Kafka clients against real brokers on the Kafka protocol: kafka-python,
//! confluent-kafka (librdkafka, as its wheel bundles it) and kcat (Debian's librdkafka),
//! installed by `scripts/install-kafka-clients` (the test command runs it). Each test
//! prints the API versions its client negotiated, read from the broker's metrics. The
//! bad-input tests speak the protocol by hand.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::local::{LocalCluster, Member};
use common::{Broker, PATIENCE};
use tributary_broker::protocol::kafka::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use tributary_broker::protocol::kafka::{Decodable, Encodable};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kafka-clients")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka_clients")
        .join(name)
}

/// Runs a Python client script; panics with its output unless it succeeds. Returns its
/// standard output.
fn python(name: &str, args: &[&str]) -> String {
    let python_path = clients_dir().join("python");
    assert!(
        python_path.join("kafka").exists() && python_path.join("confluent_kafka").exists(),
        "the Python Kafka clients are not installed in {}: run scripts/install-kafka-clients",
        python_path.display()
    );
    let output = Command::new("python3")
        .arg(script(name))
        .args(args)
        .env("PYTHONPATH", &python_path)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// A `java` command with the Java client, Kafka's tools and the test program on its class
/// path, logging warnings only.
fn java(main_class: &str) -> Command {
    let java_dir = clients_dir().join("java");
    assert!(
        java_dir.join("classes/JavaClients.class").exists(),
        "the Java Kafka clients are not installed in {}: run scripts/install-kafka-clients",
        java_dir.display()
    );
    let mut command = Command::new("java");
    command
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg(format!(
            "{}:{}/*",
            java_dir.join("classes").display(),
            java_dir.join("lib").display()
        ))
        .arg(main_class);
    command
}

/// Runs a Java program to the end with `stdin`; panics with its output unless it
/// succeeds. Returns its standard output.
fn run_java(main_class: &str, args: &[&str], stdin: &str) -> String {
    let mut child = java(main_class)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to java");
    let output = child.wait_with_output().expect("java runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "{main_class} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

fn kcat(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run scripts/install-kafka-clients");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to kcat");
    let output = child.wait_with_output().expect("kcat runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kcat {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The Kafka requests a broker served, by API and version, from its metrics.
fn negotiated(http: &str) -> Vec<String> {
    let (_, metrics) = common::http_get_blocking(http, "/metrics").expect("metrics answer");
    metrics
        .lines()
        .filter(|l| l.starts_with("tributary_kafka_requests_total{"))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect()
}

/// Record bytes a broker's Kafka fetch answers sent by `sendfile` and by copying.
fn fetch_paths(http: &str) -> (u64, u64) {
    let (_, metrics) = common::http_get_blocking(http, "/metrics").expect("metrics answer");
    let sent = |path: &str| {
        let prefix = format!("tributary_kafka_fetch_record_bytes_total{{path=\"{path}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().expect("a counter"))
    };
    (sent("sendfile"), sent("copy"))
}

/// Every record byte the broker's fetch answers held went from the segment files to the
/// socket without a copy.
fn assert_fetched_by_sendfile(http: &str, client: &str) {
    let (sendfile, copy) = fetch_paths(http);
    println!("{client}: {sendfile} record bytes sent by sendfile, {copy} copied");
    assert!(
        sendfile > 0 && copy == 0,
        "{client}: {sendfile} record bytes by sendfile, {copy} copied"
    );
}

fn served_at_ok(negotiated: &[String], api: &str) -> bool {
    negotiated
        .iter()
        .any(|l| l.contains(&format!("api=\"{api}\"")) && l.contains("outcome=\"ok\""))
}

#[test]
fn kafka_python_creates_produces_reads_back_and_deletes_a_topic() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    let out = python(
        "roundtrip_kafka_python.py",
        &[&broker.kafka, "kafka-python", "3000", "1"],
    );
    println!("{out}");
    assert!(out.contains("\"read\": 3000"), "{out}");
    let seen = negotiated(&broker.http);
    println!("kafka-python negotiated:\n{}", seen.join("\n"));
    for api in [
        "ApiVersions",
        "Metadata",
        "CreateTopics",
        "InitProducerId",
        "Produce",
        "Fetch",
        "ListOffsets",
        "DeleteTopics",
    ] {
        assert!(
            served_at_ok(&seen, api),
            "kafka-python never got a good {api} answer: {seen:?}"
        );
    }
    assert_fetched_by_sendfile(&broker.http, "kafka-python");
}

#[test]
fn librdkafka_produces_and_reads_back_every_compression_codec() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("librdkafka-{codec}");
        let out = python(
            "roundtrip_confluent_kafka.py",
            &[&broker.kafka, &topic, "2000", codec, "1"],
        );
        println!("{out}");
        assert!(out.contains("\"read\": 2000"), "{out}");
    }
    println!(
        "confluent-kafka negotiated:\n{}",
        negotiated(&broker.http).join("\n")
    );
    assert_fetched_by_sendfile(&broker.http, "confluent-kafka");
}

#[test]
fn kcat_lists_metadata_produces_with_auto_creation_and_consumes() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    let lines: Vec<String> = (0..500).map(|i| format!("k{}:value {i}", i % 5)).collect();
    kcat(
        &[
            "-b",
            &broker.kafka,
            "-P",
            "-t",
            "kcat-auto",
            "-K",
            ":",
            "-z",
            "snappy",
        ],
        &(lines.join("\n") + "\n"),
    );
    let metadata = kcat(&["-b", &broker.kafka, "-L", "-t", "kcat-auto"], "");
    assert!(
        metadata.contains("topic \"kcat-auto\" with 1 partitions")
            && metadata.contains(&format!("broker 0 at {}", broker.kafka)),
        "{metadata}"
    );
    let read = kcat(
        &[
            "-b",
            &broker.kafka,
            "-C",
            "-t",
            "kcat-auto",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k:%s\\n",
        ],
        "",
    );
    assert_eq!(read.lines().collect::<Vec<_>>(), lines);
    println!("kcat negotiated:\n{}", negotiated(&broker.http).join("\n"));
    assert_fetched_by_sendfile(&broker.http, "kcat");
}

/// A 3-broker `local up` whose topics get replication factor 3.
fn three_brokers(dir: &std::path::Path) -> LocalCluster {
    LocalCluster::start(&dir.join("cluster"), &["--brokers", "3"], &[])
}

#[test]
fn kafka_python_consumers_share_a_topic_in_a_group_and_take_over_a_leavers_partitions() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    for assignor in ["range", "roundrobin"] {
        let out = python(
            "group_kafka_python.py",
            &[
                &cluster.kafka_bootstrap,
                &format!("kp-group-{assignor}"),
                &format!("kp-{assignor}"),
                "600",
                assignor,
                "3",
            ],
        );
        println!("{out}");
        assert!(out.contains("\"committed\": 1200"), "{out}");
    }
    let http = &cluster.brokers[0].1;
    println!("broker 0 served:\n{}", negotiated(http).join("\n"));
}

#[test]
fn librdkafka_consumers_share_a_topic_with_each_assignor_and_survive_a_killed_member() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    for assignor in ["range", "roundrobin", "cooperative-sticky"] {
        let out = python(
            "group_confluent_kafka.py",
            &[
                &cluster.kafka_bootstrap,
                &format!("ck-group-{assignor}"),
                &format!("ck-{assignor}"),
                "600",
                assignor,
                "3",
            ],
        );
        println!("{out}");
        assert!(out.contains("took_over_after_kill_s"), "{out}");
    }
}

#[test]
fn kcat_reads_a_topic_as_a_balanced_consumer_group_and_commits() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    let lines: Vec<String> = (0..300).map(|i| format!("record {i}")).collect();
    kcat(
        &["-b", &broker.kafka, "-P", "-t", "kcat-group"],
        &(lines.join("\n") + "\n"),
    );
    let read = kcat(
        &[
            "-b",
            &broker.kafka,
            "-G",
            "kcat-readers",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%s\\n",
            "kcat-group",
        ],
        "",
    );
    assert_eq!(read.lines().collect::<Vec<_>>(), lines);
    // The group committed where it stopped: reading again finds nothing new.
    let again = kcat(
        &[
            "-b",
            &broker.kafka,
            "-G",
            "kcat-readers",
            "-e",
            "-f",
            "%s\\n",
            "kcat-group",
        ],
        "",
    );
    assert_eq!(again, "", "the second read starts at the committed offsets");
}

#[test]
fn a_group_of_kafka_clients_refuses_tributary_consumers_and_says_why() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    kcat(&["-b", &broker.kafka, "-P", "-t", "mixed"], "one\n");
    let mut member = Command::new("kcat")
        .args(["-b", &broker.kafka, "-G", "mixed-group", "mixed"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    // kcat says when it has joined: "Group mixed-group rebalanced ... assigned: ...".
    let stderr = member.stderr.take().expect("stderr");
    let (joined_tx, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("assigned:") {
                let _ = joined_tx.send(());
            }
        }
    });
    let in_group = joined.recv_timeout(PATIENCE);
    let (code, _, err) = common::cli(
        &[
            "--bootstrap",
            &broker.grpc,
            "consume",
            "mixed",
            "--group",
            "mixed-group",
            "--timeout-ms",
            "5000",
        ],
        "",
    );
    let _ = member.kill();
    let _ = member.wait();
    assert!(in_group.is_ok(), "kcat never joined its group");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("group 'mixed-group'") && err.contains("classic group protocol"),
        "{err}"
    );
}

#[test]
fn the_java_admin_client_manages_topics_configs_and_partitions() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    let out = run_java(
        "JavaClients",
        &["admin", &cluster.kafka_bootstrap, "java-admin"],
        "",
    );
    println!("{out}");
    assert!(out.contains("\"brokers\": 3, \"ok\": true"), "{out}");
    let cluster_id = out
        .split("\"cluster\": \"")
        .nth(1)
        .unwrap_or("")
        .split('"')
        .next()
        .unwrap_or("");
    let from_metadata = python("cluster_id_confluent_kafka.py", &[&cluster.kafka_bootstrap]);
    assert!(
        !cluster_id.is_empty() && from_metadata.trim() == cluster_id,
        "Metadata and DescribeCluster name the same cluster id: {cluster_id} and {from_metadata}"
    );
    let out = run_java(
        "JavaClients",
        &["produce", &cluster.kafka_bootstrap, "java-produce", "5000"],
        "",
    );
    assert!(out.contains("\"acked\": 5000"), "{out}");
    println!(
        "broker 0 served:\n{}",
        negotiated(&cluster.brokers[0].1).join("\n")
    );
}

#[test]
fn java_consumers_share_a_topic_with_the_classic_and_the_kip_848_protocol() {
    let dir = common::open_tempdir();
    // One member is killed: its partitions move once its session times out, 10 s with
    // either protocol (the classic one's is the client's setting, the other the broker's).
    let cluster = LocalCluster::start(
        &dir.path().join("cluster"),
        &["--brokers", "3"],
        &[("TRIBUTARY_KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000")],
    );
    for protocol in ["classic", "consumer"] {
        let out = run_java(
            "JavaClients",
            &[
                "group",
                &cluster.kafka_bootstrap,
                &format!("java-group-{protocol}"),
                &format!("java-{protocol}"),
                "600",
                protocol,
            ],
            "",
        );
        println!("{out}");
        assert!(
            out.contains("\"lag\": 0") && out.contains("\"takeover_ms\""),
            "{out}"
        );
    }
}

#[test]
fn kafkas_own_command_line_tools_work_as_kafka_users_run_them() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    let bootstrap = cluster.kafka_bootstrap.as_str();
    let topics = "org.apache.kafka.tools.TopicCommand";
    run_java(
        topics,
        &[
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--topic",
            "tools",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        "",
    );
    assert!(run_java(topics, &["--bootstrap-server", bootstrap, "--list"], "").contains("tools"));
    run_java(
        topics,
        &[
            "--bootstrap-server",
            bootstrap,
            "--alter",
            "--topic",
            "tools",
            "--partitions",
            "4",
        ],
        "",
    );
    let described = run_java(
        topics,
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--topic",
            "tools",
        ],
        "",
    );
    assert!(
        described.contains("PartitionCount: 4") && described.contains("ReplicationFactor: 3"),
        "{described}"
    );

    let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    run_java(
        "org.apache.kafka.tools.ConsoleProducer",
        &["--bootstrap-server", bootstrap, "--topic", "tools"],
        &(lines.join("\n") + "\n"),
    );
    let consumed = run_java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            "tools",
            "--group",
            "tools-group",
            "--from-beginning",
            "--max-messages",
            "100",
        ],
        "",
    );
    let mut got: Vec<&str> = consumed.lines().collect();
    got.sort_by_key(|l| {
        l.trim_start_matches("line ")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    assert_eq!(got, lines, "{consumed}");
    let groups = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    assert!(
        run_java(groups, &["--bootstrap-server", bootstrap, "--list"], "").contains("tools-group")
    );
    let lag = run_java(
        groups,
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            "tools-group",
        ],
        "",
    );
    let total: i64 = lag
        .lines()
        .filter(|l| l.starts_with("tools-group"))
        .map(|l| {
            l.split_whitespace()
                .nth(5)
                .and_then(|n| n.parse().ok())
                .unwrap_or(-1)
        })
        .sum();
    assert_eq!(total, 0, "the group read everything: {lag}");
    let deleted = run_java(
        groups,
        &[
            "--bootstrap-server",
            bootstrap,
            "--delete",
            "--group",
            "tools-group",
        ],
        "",
    );
    assert!(deleted.contains("was successful"), "{deleted}");
    assert!(
        !run_java(groups, &["--bootstrap-server", bootstrap, "--list"], "").contains("tools-group")
    );

    let perf = run_java(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "tools-perf",
            "--num-records",
            "20000",
            "--record-size",
            "1024",
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={bootstrap}"),
            "acks=all",
        ],
        "",
    );
    assert!(perf.contains("20000 records sent"), "{perf}");
    let perf = run_java(
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            "tools-perf",
            "--messages",
            "20000",
        ],
        "",
    );
    assert!(perf.contains(", 20000,"), "{perf}");
}

#[test]
fn franz_go_produces_and_reads_back_in_a_group() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    let franz = clients_dir().join("go/franz");
    assert!(
        franz.exists(),
        "franz-go's test program is not built in {}: run scripts/install-kafka-clients",
        franz.display()
    );
    let output = Command::new(&franz)
        .args([&cluster.kafka_bootstrap, "franz", "3000"])
        .stdin(Stdio::null())
        .output()
        .expect("the franz-go program runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "franz-go failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    assert!(
        stdout.contains("\"committed\":3000") && stdout.contains("\"read\":3000"),
        "{stdout}"
    );
    println!(
        "broker 0 served:\n{}",
        negotiated(&cluster.brokers[0].1).join("\n")
    );
}

#[test]
fn auto_creation_can_be_turned_off() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &["--auto-create-topics", "false"]);
    let metadata = kcat(&["-b", &broker.kafka, "-L", "-t", "not-made"], "");
    assert!(
        metadata.contains("Broker: Unknown topic or partition"),
        "{metadata}"
    );
    let (_, out, _) = common::cli(&["--bootstrap", &broker.grpc, "topic", "list"], "");
    assert!(!out.contains("not-made"), "{out}");
}

/// Before the cluster metadata reaches a broker it knows no topic and no broker; Kafka
/// requests wait for it instead of hearing that every topic is unknown.
#[test]
fn kafka_requests_wait_until_the_broker_has_the_cluster_metadata() {
    let dir = common::open_tempdir();
    let controller_address = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        free.local_addr().unwrap().to_string()
    };
    let broker = Broker::start_listening(
        &dir.path().join("broker"),
        &["--controller", &controller_address],
    );
    let mut stream = connect(&broker.kafka);
    stream
        .write_all(&request(
            ApiKey::Metadata,
            12,
            5,
            &MetadataRequest::default(),
        ))
        .unwrap();
    // No controller yet: no answer (a broker without metadata would answer at once).
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = stream.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the broker answered before it had the cluster metadata: {early:?}"
    );

    let mut controller = Command::new(common::CONTROLLER)
        .args(["--listen", &controller_address, "--data-dir"])
        .arg(dir.path().join("controller"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the controller");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (id, mut body) = response(&mut stream, 1);
        (
            id,
            MetadataResponse::decode(&mut body, 12).expect("a Metadata response"),
        )
    }));
    let _ = controller.kill();
    let _ = controller.wait();
    let (id, metadata) = answered.unwrap_or_else(|_| {
        panic!(
            "no answer once the controller ran; broker stderr:\n{}",
            broker.stderr()
        )
    });
    assert_eq!(id, 5);
    assert_eq!(metadata.brokers.len(), 1, "{metadata:?}");
}

/// A request frame: header v1 or v2 (as `api` at `version` uses) and `body`.
fn request<B: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &B) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some("raw-test".into()));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, api.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut out, version).expect("body encodes");
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.to_vec()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect to the Kafka port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Reads one response frame: its correlation id (header v0) and the rest.
fn response(stream: &mut TcpStream, header_version: i16) -> (i32, bytes::Bytes) {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("the whole response");
    let mut body = bytes::Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, header_version).expect("a response header");
    (header.correlation_id, body)
}

/// Whether the broker closed `stream` (a read sees the end, or a reset).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

/// The broker still answers a good Metadata request on a new connection.
fn still_serves(address: &str) {
    let mut stream = connect(address);
    stream
        .write_all(&request(
            ApiKey::Metadata,
            12,
            77,
            &MetadataRequest::default(),
        ))
        .unwrap();
    let (id, mut body) = response(&mut stream, 1);
    assert_eq!(id, 77);
    let metadata = MetadataResponse::decode(&mut body, 12).expect("a Metadata response");
    assert_eq!(metadata.brokers.len(), 1);
}

#[test]
fn bad_frames_close_their_connection_and_the_broker_serves_on() {
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &["--kafka-max-request-bytes", "1048576"]);

    // Responses come in request order, with their correlation ids.
    let mut stream = connect(&broker.kafka);
    let mut pipelined = request(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    pipelined.extend(request(
        ApiKey::Metadata,
        12,
        2,
        &MetadataRequest::default(),
    ));
    pipelined.extend(request(
        ApiKey::ApiVersions,
        0,
        3,
        &ApiVersionsRequest::default(),
    ));
    stream.write_all(&pipelined).unwrap();
    assert_eq!(response(&mut stream, 0).0, 1);
    assert_eq!(response(&mut stream, 1).0, 2);
    assert_eq!(response(&mut stream, 0).0, 3);

    // ApiVersions at a version from the future: v0 with UNSUPPORTED_VERSION and the list.
    stream
        .write_all(&{
            let mut frame = request(ApiKey::ApiVersions, 3, 4, &ApiVersionsRequest::default());
            frame[6..8].copy_from_slice(&99i16.to_be_bytes());
            frame
        })
        .unwrap();
    let (id, mut body) = response(&mut stream, 0);
    assert_eq!(id, 4);
    let versions = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(versions.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        versions
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );

    // Produce v1: listed (from v0, as Kafka 4 does) but refused, partition by partition.
    let mut produce_v1 = BytesMut::new();
    produce_v1.put_i32(0);
    produce_v1.put_i16(ApiKey::Produce as i16);
    produce_v1.put_i16(1);
    produce_v1.put_i32(5);
    produce_v1.put_i16(3);
    produce_v1.put_slice(b"old");
    produce_v1.put_i16(1); // acks
    produce_v1.put_i32(1000);
    produce_v1.put_i32(1);
    produce_v1.put_i16(1);
    produce_v1.put_slice(b"t");
    produce_v1.put_i32(1);
    produce_v1.put_i32(0);
    produce_v1.put_i32(0);
    let len = (produce_v1.len() - 4) as i32;
    produce_v1[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&produce_v1).unwrap();
    let (id, body) = response(&mut stream, 0);
    assert_eq!(id, 5);
    // topics [name "t", partitions [index 0, error, base offset]], throttle time
    assert_eq!(
        &body[..],
        &[
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 35, 255, 255, 255, 255, 255, 255,
            255, 255, 0, 0, 0, 0
        ][..]
    );

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a size above the limit",
            2_000_000i32.to_be_bytes().to_vec(),
        ),
        ("a negative size", (-5i32).to_be_bytes().to_vec()),
        ("a frame too short for a header", vec![0, 0, 0, 3, 0, 18, 0]),
        ("an unknown API key", {
            let mut frame = request(ApiKey::Metadata, 12, 5, &MetadataRequest::default());
            frame[4..6].copy_from_slice(&1234i16.to_be_bytes());
            frame
        }),
        ("a version no one serves", {
            let mut frame = request(ApiKey::Metadata, 12, 6, &MetadataRequest::default());
            frame[6..8].copy_from_slice(&300i16.to_be_bytes());
            frame
        }),
        ("a valid header with a cut body", {
            let mut frame = request(ApiKey::Metadata, 12, 7, &MetadataRequest::default());
            frame.truncate(frame.len() - 2);
            let len = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&len.to_be_bytes());
            frame
        }),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let mut stream = connect(&broker.kafka);
        stream.write_all(&bytes).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        assert!(closed(&mut stream), "{what}: the connection stays open");
        still_serves(&broker.kafka);
    }
    // A frame cut off mid-way, then the client gone: nothing to answer, broker fine.
    let mut stream = connect(&broker.kafka);
    stream.write_all(&[0, 0, 1, 0, 0, 3]).unwrap();
    drop(stream);
    still_serves(&broker.kafka);
    assert!(
        broker
            .stderr()
            .contains("larger than the broker's limit of 1048576 bytes"),
        "the refused frame is logged:\n{}",
        broker.stderr()
    );
}

/// What the producer script reported: numbers acknowledged with their offsets, failures.
#[derive(Default)]
struct Sends {
    acked: Vec<(u64, i64)>,
    failed: Vec<String>,
}

impl Sends {
    /// Reads the producer's lines until `count` numbers are acknowledged, its output ends,
    /// or `deadline` passes.
    fn collect(
        &mut self,
        lines: &std::sync::mpsc::Receiver<String>,
        count: usize,
        deadline: Instant,
    ) {
        while self.acked.len() < count {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) if line.starts_with("ACK ") => {
                    let mut parts = line.split_whitespace().skip(1);
                    let number = parts.next().and_then(|n| n.parse().ok());
                    let offset = parts.next().and_then(|o| o.parse().ok());
                    self.acked
                        .push((number.expect("a number"), offset.expect("an offset")));
                }
                Ok(line) if line.starts_with("FAILED ") => self.failed.push(line),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// A default request of every API the broker serves, at `version`, as a frame.
fn default_request(api: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    use tributary_broker::protocol::kafka::messages::*;
    macro_rules! frame {
        ($($key:ident => $body:expr),* $(,)?) => {
            match api {
                $(ApiKey::$key => request(api, version, correlation_id, &$body),)*
                other => panic!("no default request for {other:?}: add it to default_request"),
            }
        };
    }
    frame! {
        // acks=1, so that it is answered.
        Produce => ProduceRequest::default().with_acks(1),
        Fetch => FetchRequest::default(),
        ListOffsets => ListOffsetsRequest::default(),
        Metadata => MetadataRequest::default(),
        OffsetCommit => OffsetCommitRequest::default().with_group_id(GroupId("fuzz".into())),
        OffsetFetch => if version < 8 {
            OffsetFetchRequest::default().with_group_id(GroupId("fuzz".into()))
        } else {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId("fuzz".into())),
            ])
        },
        FindCoordinator => if version < 4 {
            FindCoordinatorRequest::default().with_key("fuzz".into())
        } else {
            FindCoordinatorRequest::default().with_coordinator_keys(vec!["fuzz".into()])
        },
        JoinGroup => JoinGroupRequest::default().with_group_id(GroupId("fuzz".into())),
        Heartbeat => HeartbeatRequest::default().with_group_id(GroupId("fuzz".into())),
        LeaveGroup => LeaveGroupRequest::default().with_group_id(GroupId("fuzz".into())),
        SyncGroup => SyncGroupRequest::default().with_group_id(GroupId("fuzz".into())),
        DescribeGroups => DescribeGroupsRequest::default().with_groups(vec![GroupId("fuzz".into())]),
        ListGroups => ListGroupsRequest::default(),
        DescribeCluster => DescribeClusterRequest::default(),
        DeleteGroups => DeleteGroupsRequest::default(),
        OffsetDelete => OffsetDeleteRequest::default().with_group_id(GroupId("fuzz".into())),
        ApiVersions => ApiVersionsRequest::default(),
        CreateTopics => CreateTopicsRequest::default(),
        DeleteTopics => DeleteTopicsRequest::default(),
        DeleteRecords => DeleteRecordsRequest::default(),
        InitProducerId => InitProducerIdRequest::default(),
        DescribeProducers => DescribeProducersRequest::default(),
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default(),
        DescribeConfigs => DescribeConfigsRequest::default(),
        AlterConfigs => AlterConfigsRequest::default(),
        CreatePartitions => CreatePartitionsRequest::default(),
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default(),
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::default().with_group_id(GroupId("fuzz".into())),
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest::default(),
    }
}

#[test]
fn every_api_the_broker_lists_is_answered_at_every_version_it_lists() {
    use tributary_broker::protocol::kafka::versions::SERVED;
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    let mut stream = connect(&broker.kafka);
    let mut correlation_id = 0;
    for served in SERVED {
        for version in served.min..=served.max {
            correlation_id += 1;
            stream
                .write_all(&default_request(served.api, version, correlation_id))
                .unwrap();
            let header_version = served.api.response_header_version(version);
            let mut size = [0u8; 4];
            assert!(
                stream.read_exact(&mut size).is_ok(),
                "{:?} v{version} got no answer (the connection closed):\n{}",
                served.api,
                broker.stderr()
            );
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            stream.read_exact(&mut body).unwrap();
            let header = ResponseHeader::decode(&mut bytes::Bytes::from(body), header_version)
                .expect("a response header");
            assert_eq!(
                header.correlation_id, correlation_id,
                "{:?} v{version}",
                served.api
            );
        }
    }
}

fn repository_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README's table of served APIs is the broker's: every API with the versions it
/// answers, nothing else.
#[test]
fn the_readme_lists_exactly_the_apis_and_versions_the_broker_serves() {
    use tributary_broker::protocol::kafka::versions::SERVED;
    let readme = repository_file("README.md");
    let table = readme
        .split("| API | versions | notes |")
        .nth(1)
        .expect("the README has the table of served APIs");
    let mut listed = Vec::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names = cells[1].split(", ");
        let ranges = cells[2].split(" (").next().unwrap_or("").split(", ");
        for (name, range) in names.zip(ranges) {
            let (min, max) = range.split_once('-').unwrap_or((range, range));
            listed.push((
                name.to_string(),
                min.parse::<i16>().ok(),
                max.parse::<i16>().ok(),
            ));
        }
    }
    let mut served: Vec<(String, Option<i16>, Option<i16>)> = SERVED
        .iter()
        .map(|s| (format!("{:?}", s.api), Some(s.min), Some(s.max)))
        .collect();
    listed.sort();
    served.sort();
    assert_eq!(listed, served, "update the README's table of served APIs");
}

/// The README's compatibility table names the client versions the test command installs.
#[test]
fn the_readme_names_the_client_versions_the_suite_runs() {
    let readme = repository_file("README.md");
    let install = repository_file("scripts/install-kafka-clients");
    let pom = repository_file("broker/tests/kafka_clients/java/pom.xml");
    let go_mod = repository_file("broker/tests/kafka_clients/franz/go.mod");
    let value = |text: &str, before: &str, after: char| {
        text.split(before)
            .nth(1)
            .and_then(|rest| rest.split(after).next())
            .unwrap_or_else(|| panic!("no {before}"))
            .to_string()
    };
    let versions = [
        (
            "| kafka-python |",
            value(&install, "kafka_python_version=", '\n'),
        ),
        (
            "| confluent-kafka",
            value(&install, "confluent_kafka_version=", '\n'),
        ),
        (
            "| Java kafka-clients |",
            value(&pom, "<kafka.version>", '<'),
        ),
        ("| Kafka's tools", value(&pom, "<kafka.version>", '<')),
        (
            "| franz-go |",
            value(&go_mod, "github.com/twmb/franz-go v", '\n'),
        ),
    ];
    for (row, version) in versions {
        let line = readme
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("the README's client table has no row {row}"));
        assert!(
            line.contains(&format!("| {version}")),
            "the README's row {row} does not name version {version}: {line}"
        );
    }
}

/// A small deterministic generator for the fuzz test (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutated requests of every served API and version (bytes flipped, frames cut or padded,
/// sizes and lengths made up) never take the broker down: each is answered or its
/// connection closed, and a good request is served after them. `TRIBUTARY_FUZZ_CASES` sets
/// how many (default 3,000).
#[test]
fn mutated_requests_never_take_the_broker_down() {
    use tributary_broker::protocol::kafka::versions::SERVED;
    let cases: usize = std::env::var("TRIBUTARY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000);
    let dir = common::open_tempdir();
    let broker = Broker::start(dir.path(), &[]);
    let mut noise = Noise(0x5eed_1234_abcd_ef01);
    let started = Instant::now();
    for case in 0..cases {
        let served = &SERVED[noise.below(SERVED.len())];
        let version = served.min + noise.below((served.max - served.min + 1) as usize) as i16;
        let mut frame = default_request(served.api, version, case as i32);
        match noise.below(4) {
            // Flip a few bytes after the size.
            0 | 1 => {
                for _ in 0..=noise.below(4) {
                    let at = 4 + noise.below(frame.len() - 4);
                    frame[at] ^= 1 << noise.below(8);
                }
            }
            // Cut the body and say so in the size.
            2 => {
                let keep = 8 + noise.below(frame.len() - 7);
                frame.truncate(keep.min(frame.len()));
                let len = (frame.len() - 4) as i32;
                frame[..4].copy_from_slice(&len.to_be_bytes());
            }
            // Random bytes appended, or a made-up length inside.
            _ => {
                let at =
                    12.min(frame.len() - 1) + noise.below(frame.len().saturating_sub(12).max(1));
                let value = (noise.next() as i32).to_be_bytes();
                for (i, b) in value.iter().enumerate() {
                    if at + i < frame.len() {
                        frame[at + i] = *b;
                    }
                }
            }
        }
        let mut stream = TcpStream::connect(&broker.kafka).unwrap_or_else(|e| {
            panic!(
                "case {case} ({:?} v{version}): cannot connect: {e}\n{}",
                served.api,
                broker.stderr()
            )
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = stream.write_all(&frame);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        if case % 500 == 499 {
            still_serves(&broker.kafka);
        }
    }
    still_serves(&broker.kafka);
    println!(
        "{cases} mutated requests in {:.1} s; the broker served on",
        started.elapsed().as_secs_f64()
    );
}

/// Reads partition 0 of `topic` from the beginning with kcat: `(offset, number)`.
fn read_numbers(bootstrap: &str, topic: &str) -> Vec<(i64, u64)> {
    kcat(
        &[
            "-b",
            bootstrap,
            "-C",
            "-t",
            topic,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %s\\n",
        ],
        "",
    )
    .lines()
    .map(|l| {
        let (offset, number) = l.split_once(' ').expect("offset and value");
        (offset.parse().unwrap(), number.parse().unwrap())
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_librdkafka_producer_loses_and_repeats_nothing_when_the_leader_is_killed() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    let mut producer = Command::new("python3");
    producer
        .arg(script("produce_until_stopped_confluent_kafka.py"))
        .args([&cluster.kafka_bootstrap, "kill-leader"])
        .env("PYTHONPATH", clients_dir().join("python"));
    kill_the_leader_under(&cluster, producer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_java_producer_loses_and_repeats_nothing_when_the_leader_is_killed() {
    let dir = common::open_tempdir();
    let cluster = three_brokers(dir.path());
    let mut producer = java("JavaClients");
    producer.args([
        "produce-until-stopped",
        &cluster.kafka_bootstrap,
        "kill-leader",
    ]);
    kill_the_leader_under(&cluster, producer).await;
}

/// Runs `producer` (which prints `ACK number offset` for each acknowledged record of
/// partition 0 of `kill-leader` until its standard input closes) while the partition's
/// leader is killed with kill -9; then every acknowledged number must be in the log once,
/// at its acknowledged offset, in order.
async fn kill_the_leader_under(cluster: &LocalCluster, mut producer: Command) {
    common::create_topic(
        &cluster.bootstrap,
        "kill-leader",
        1,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let mut producer = producer
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the producer");
    let stdout = producer.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut sends = Sends::default();
    sends.collect(&lines, 2_000, Instant::now() + PATIENCE);
    assert!(sends.acked.len() >= 2_000, "the producer made no progress");

    // kill -9 the partition's leader while the producer keeps sending.
    let (_, described, _) = common::cli(
        &[
            "--bootstrap",
            &cluster.bootstrap,
            "--output",
            "json",
            "topic",
            "describe",
            "kill-leader",
        ],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(&described).expect("JSON");
    let leader = described[0]["leader"].as_i64().expect("a leader") as i32;
    let killed = cluster.kill9(Member::Broker(leader));
    let before = sends.acked.len();
    sends.collect(&lines, before + 5_000, Instant::now() + PATIENCE);
    cluster.wait_restarted(Member::Broker(leader), killed);
    drop(producer.stdin.take());
    sends.collect(
        &lines,
        usize::MAX,
        Instant::now() + Duration::from_secs(130),
    );
    let Sends { acked, failed } = sends;
    let status = producer.wait().expect("the producer exits");
    assert!(status.success(), "the producer failed");
    assert!(
        failed.is_empty(),
        "sends failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        acked.len() > before,
        "nothing was acknowledged after the kill"
    );

    let read = read_numbers(&cluster.kafka_bootstrap, "kill-leader");
    let numbers: Vec<u64> = read.iter().map(|(_, n)| *n).collect();
    // Idempotence: each number once, in the order sent; nothing acknowledged is missing.
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "duplicates or reordering in the log"
    );
    let offsets: std::collections::HashMap<u64, i64> = read.iter().map(|(o, n)| (*n, *o)).collect();
    for (number, offset) in &acked {
        assert_eq!(
            offsets.get(number).copied(),
            Some(*offset),
            "acknowledged record {number} at offset {offset} is not there"
        );
    }
    println!(
        "{} records acknowledged ({} after killing broker {leader}), {} in the log, none lost or repeated",
        acked.len(),
        acked.len() - before,
        numbers.len()
    );
}
