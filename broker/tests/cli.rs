//! The `tributary` command line, run as a user runs it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::local::LocalCluster;
use common::{Broker, PATIENCE, cli};
use tributary_broker::client::partition_for_key;

fn ok(args: &[&str], stdin: &str) -> String {
    let (code, stdout, stderr) = cli(args, stdin);
    assert_eq!(code, 0, "tributary {args:?} failed:\n{stderr}");
    stdout
}

fn fails(args: &[&str], stdin: &str, says: &str) {
    let (code, _, stderr) = cli(args, stdin);
    assert_eq!(code, 1, "tributary {args:?} should fail:\n{stderr}");
    assert!(
        stderr.contains(says),
        "tributary {args:?}: {stderr:?} should say {says:?}"
    );
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let b = ["--bootstrap", broker.grpc.as_str()];
    let out = ok(
        &[
            &b[..],
            &[
                "topic",
                "create",
                "orders",
                "--partitions",
                "3",
                "--config",
                "retention.ms=3600000",
            ],
        ]
        .concat(),
        "",
    );
    assert_eq!(
        out.trim(),
        "Created topic orders with 3 partitions and replication factor 1."
    );
    ok(
        &[&b[..], &["topic", "create", "audit", "-p", "1"]].concat(),
        "",
    );

    let out = ok(&[&b[..], &["topic", "list"]].concat(), "");
    assert!(out.starts_with("TOPIC"), "{out}");
    assert!(out.contains("orders  3"), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&ok(
        &[&b[..], &["--output", "json", "topic", "list"]].concat(),
        "",
    ))
    .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    ok(
        &[&b[..], &["produce", "orders", "--partition", "1"]].concat(),
        "a\nb\n",
    );
    let described: serde_json::Value = serde_json::from_str(&ok(
        &[&b[..], &["topic", "describe", "orders", "--output", "json"]].concat(),
        "",
    ))
    .unwrap();
    let partitions = described.as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        let mut expected = [
            "partition",
            "leader",
            "replicas",
            "isr",
            "leader_epoch",
            "log_start_offset",
            "high_watermark",
        ];
        expected.sort();
        let mut keys = keys.iter().map(|k| k.as_str()).collect::<Vec<_>>();
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 0);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
        assert_eq!(p["high_watermark"], if i == 1 { 2 } else { 0 });
    }
    let text = ok(&[&b[..], &["topic", "describe", "orders"]].concat(), "");
    assert!(text.contains("Configs: retention.ms=3600000"), "{text}");

    ok(&[&b[..], &["topic", "delete", "audit"]].concat(), "");
    fails(
        &[&b[..], &["topic", "describe", "audit"]].concat(),
        "",
        "unknown topic 'audit'",
    );
    fails(
        &[
            &b[..],
            &[
                "topic",
                "create",
                "x",
                "-p",
                "1",
                "--config",
                "segment.bytes",
            ],
        ]
        .concat(),
        "",
        "expected key=value",
    );
    fails(
        &[&b[..], &["topic", "create", "orders", "-p", "1"]].concat(),
        "",
        "already exists",
    );
}

#[test]
fn records_go_in_with_produce_and_come_out_with_consume_in_every_format() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let b = ["--bootstrap", broker.grpc.as_str()];
    ok(
        &[&b[..], &["topic", "create", "kv", "-p", "2"]].concat(),
        "",
    );
    // Two keys that Kafka's partitioner sends to different partitions.
    let (k1, k2) = (
        "k1",
        (2..100)
            .map(|i| format!("k{i}"))
            .find(|k| partition_for_key(k.as_bytes(), 2) != partition_for_key(b"k1", 2))
            .unwrap(),
    );
    let input = format!("{k1}:one\n{k2}:two\n{k1}:three\n");
    let offsets = ok(
        &[
            &b[..],
            &[
                "produce",
                "kv",
                "--key-separator",
                ":",
                "--print-offsets",
                "--acks",
                "1",
            ],
        ]
        .concat(),
        &input,
    );
    let offsets: Vec<(u32, i64)> = offsets
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    assert_eq!(
        offsets,
        [
            (partition_for_key(b"k1", 2), 0),
            (partition_for_key(k2.as_bytes(), 2), 0),
            (partition_for_key(b"k1", 2), 1)
        ]
    );

    let values = ok(
        &[
            &b[..],
            &["consume", "kv", "--from-beginning", "--max-messages", "3"],
        ]
        .concat(),
        "",
    );
    let mut sorted: Vec<&str> = values.lines().collect();
    sorted.sort();
    assert_eq!(sorted, ["one", "three", "two"]);

    let p = offsets[0].0.to_string();
    let kv = ok(
        &[
            &b[..],
            &[
                "consume",
                "kv",
                "--partition",
                &p,
                "--from-beginning",
                "--timeout-ms",
                "500",
                "--format",
                "kv",
            ],
        ]
        .concat(),
        "",
    );
    assert_eq!(kv.lines().collect::<Vec<_>>(), ["k1\tone", "k1\tthree"]);

    let json = ok(
        &[
            &b[..],
            &[
                "consume",
                "kv",
                "--partition",
                &p,
                "--offset",
                "1",
                "--timeout-ms",
                "500",
                "--format",
                "json",
            ],
        ]
        .concat(),
        "",
    );
    let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6);
    assert_eq!(
        (
            line["topic"].as_str(),
            line["partition"].as_u64(),
            line["offset"].as_i64()
        ),
        (Some("kv"), Some(offsets[0].0 as u64), Some(1))
    );
    assert_eq!(
        (line["key"].as_str(), line["value"].as_str()),
        (Some("k1"), Some("three"))
    );
    assert!(line["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(
        json.lines()
            .next()
            .unwrap()
            .starts_with(r#"{"topic":"kv","partition":"#),
        "keys in the documented order: {json}"
    );

    // Without --from-beginning only new records arrive, so nothing within the timeout.
    let started = Instant::now();
    let nothing = ok(
        &[&b[..], &["consume", "kv", "--timeout-ms", "300"]].concat(),
        "",
    );
    assert!(nothing.is_empty());
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn cli_mistakes_get_clear_errors_and_a_failing_exit_code() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let b = ["--bootstrap", broker.grpc.as_str()];
    ok(&[&b[..], &["topic", "create", "t", "-p", "2"]].concat(), "");
    fails(
        &[&b[..], &["produce", "missing"]].concat(),
        "x\n",
        "unknown topic 'missing'",
    );
    fails(
        &[&b[..], &["consume", "missing", "--timeout-ms", "100"]].concat(),
        "",
        "unknown topic 'missing'",
    );
    fails(
        &[&b[..], &["produce", "t", "--key-separator", "="]].concat(),
        "a=1\nno separator\n",
        "line 2 has no key separator",
    );
    fails(
        &[
            &b[..],
            &["consume", "t", "--offset", "0", "--timeout-ms", "100"],
        ]
        .concat(),
        "",
        "--offset needs --partition",
    );
    fails(
        &[
            &b[..],
            &[
                "consume",
                "t",
                "--partition",
                "0",
                "--offset",
                "7",
                "--timeout-ms",
                "100",
            ],
        ]
        .concat(),
        "",
        "offset 7 is out of range for t-0",
    );
    fails(
        &[
            &b[..],
            &["consume", "t", "--partition", "0", "--offset", "-2"],
        ]
        .concat(),
        "",
        "offsets start at 0",
    );
    fails(
        &[
            &b[..],
            &["consume", "t", "--partition", "5", "--timeout-ms", "100"],
        ]
        .concat(),
        "",
        "has no partition 5",
    );
    fails(
        &["--bootstrap", "nowhere", "topic", "list"],
        "",
        "expected HOST:PORT",
    );
    fails(
        &["--bootstrap", "127.0.0.1:1", "topic", "list"],
        "",
        "cannot reach a broker at 127.0.0.1:1",
    );
    let (code, _, stderr) = cli(&[&b[..], &["produce", "t", "--acks", "2"]].concat(), "");
    assert_eq!(code, 2, "usage errors exit with 2: {stderr}");
    assert!(stderr.contains("'2' is not 0, 1 or all"), "{stderr}");
    // The broker is unharmed by all of it.
    ok(&[&b[..], &["produce", "t"]].concat(), "fine\n");
}

#[test]
fn the_perf_tool_reports_throughput_and_latency_percentiles() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    let b = ["--bootstrap", broker.grpc.as_str()];
    ok(
        &[&b[..], &["topic", "create", "bench", "-p", "1"]].concat(),
        "",
    );
    let out = ok(
        &[
            &b[..],
            &[
                "perf",
                "produce",
                "bench",
                "--num-records",
                "5000",
                "--record-size",
                "200",
                "--throughput",
                "-1",
            ],
        ]
        .concat(),
        "",
    );
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("5000 records sent"), "{out}");
    for part in [
        "records/sec",
        "MB/sec",
        "ms avg latency",
        "ms max latency",
        "ms 50th",
        "ms 95th",
        "ms 99th",
        "ms 99.9th",
    ] {
        assert!(last.contains(part), "{last} lacks {part}");
    }
    let out = ok(
        &[
            &b[..],
            &["perf", "consume", "bench", "--num-records", "5000"],
        ]
        .concat(),
        "",
    );
    assert!(out.starts_with("5000 records consumed (0.95 MB)"), "{out}");
    assert!(
        out.contains("records/sec") && out.contains("MB/sec"),
        "{out}"
    );
    fails(
        &[
            &b[..],
            &[
                "perf",
                "consume",
                "bench",
                "--num-records",
                "9000",
                "--timeout-ms",
                "500",
            ],
        ]
        .concat(),
        "",
        "only 5000 of 9000 records arrived",
    );
}

#[test]
fn local_up_runs_a_cluster_with_the_topics_of_a_manifest_and_stops_cleanly() {
    let dir = common::open_tempdir();
    let manifest = dir.path().join("topics.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: tributary.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: orders\nspec:\n  partitions: 3\n  config:\n    retention.ms: \"86400000\"\n",
    )
    .unwrap();
    let data = dir.path().join("local");
    let args = ["--brokers", "1", "-f", manifest.to_str().unwrap()];
    let mut cluster = LocalCluster::start(&data, &args, &[]);
    let http = cluster.brokers[0].1.clone();
    let b = ["--bootstrap", cluster.bootstrap.as_str()];
    let described: serde_json::Value = serde_json::from_str(&ok(
        &[&b[..], &["--output", "json", "topic", "describe", "orders"]].concat(),
        "",
    ))
    .unwrap();
    assert_eq!(described.as_array().unwrap().len(), 3);
    ok(
        &[&b[..], &["produce", "orders"]].concat(),
        "first\nsecond\n",
    );
    let got = ok(
        &[
            &b[..],
            &[
                "consume",
                "orders",
                "--from-beginning",
                "--max-messages",
                "2",
            ],
        ]
        .concat(),
        "",
    );
    assert_eq!(got.lines().count(), 2);

    let (code, metrics) = common::http_get_blocking(&http, "/metrics").unwrap();
    assert_eq!(code, 200);
    for metric in [
        "tributary_bytes_in_total{topic=\"orders\"}",
        "tributary_records_in_total{topic=\"orders\"} 2",
        "tributary_bytes_out_total{topic=\"orders\"}",
        "tributary_requests_total{api=\"produce\",outcome=\"ok\"}",
        "tributary_request_duration_seconds_bucket{api=\"fetch\"",
        "tributary_log_size_bytes{partition=\"0\",topic=\"orders\"}",
        "tributary_partitions 3",
    ] {
        assert!(
            metrics.contains(metric),
            "/metrics lacks {metric}:\n{metrics}"
        );
    }
    assert_eq!(
        common::http_get_blocking(&http, "/readyz").map(|(c, _)| c),
        Some(200)
    );

    let (code, output) = cluster.stop();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("Tributary stopped cleanly."), "{output}");
    assert!(data.join("broker-0/.clean-shutdown").exists());
    assert!(
        !data.join("broker-0/pid").exists(),
        "pid files go with the processes"
    );

    // Started again with the same manifest, the topic and its records are still there.
    let mut cluster = LocalCluster::start(&data, &args, &[]);
    assert!(cluster.output().contains("Topic orders already exists."));
    let again = ok(
        &[
            "--bootstrap",
            &cluster.bootstrap,
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "2",
        ],
        "",
    );
    assert_eq!(again.lines().count(), 2);
    cluster.stop();
}

#[test]
fn local_up_stops_cleanly_on_hangup_and_a_second_ctrl_c_kills_what_does_not_stop() {
    use common::local::Member;
    let dir = common::open_tempdir();
    let data = dir.path().join("local");
    // Closing the terminal (SIGHUP) stops the cluster like Ctrl-C.
    let mut cluster = LocalCluster::start(&data, &["--brokers", "1"], &[]);
    cluster.signal(libc::SIGHUP);
    let (code, output) = cluster.wait_exit();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("Tributary stopped cleanly."), "{output}");

    // A paused broker cannot stop; Ctrl-C again kills it instead of waiting.
    let mut cluster = LocalCluster::start(&data, &["--brokers", "1"], &[]);
    let broker = cluster.pid(Member::Broker(0)).expect("broker 0 runs");
    cluster.pause(Member::Broker(0));
    cluster.signal(libc::SIGINT);
    cluster.wait_for_output("press Ctrl-C again to kill");
    cluster.signal(libc::SIGINT);
    let (code, output) = cluster.wait_exit();
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("broker 0 was killed while it stopped"),
        "{output}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{broker}")).exists(),
        "the paused broker is gone:\n{output}"
    );
    assert!(!data.join("broker-0/pid").exists());
}

#[test]
fn local_up_comes_back_with_the_broker_count_it_was_scaled_to() {
    let dir = common::open_tempdir();
    let data = dir.path().join("local");
    let mut cluster = LocalCluster::start(&data, &["--brokers", "1"], &[]);
    let controller = cluster.controller.clone();
    let scaled = ok(
        &[
            "cluster",
            "scale",
            "2",
            "--wait",
            "--timeout-secs",
            "60",
            "--controller",
            &controller,
        ],
        "",
    );
    assert!(
        scaled.contains("2 brokers run and nothing is moving"),
        "{scaled}"
    );
    cluster.wait_for_output("broker 1 started (2 of 2 brokers)");
    let (code, output) = cluster.stop();
    assert_eq!(code, 0, "{output}");

    // Without --brokers, the count it was scaled to holds (not the default of three).
    let cluster = LocalCluster::start(&data, &[], &[]);
    cluster.wait_for_output("This cluster was scaled to 2 brokers");
    cluster.wait_for_output("broker 2 stopped (cleanly): it holds no replicas");
    // The stopped broker's session ends as its process exits: look until it has.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let status = loop {
        let status = ok(
            &[
                "cluster",
                "status",
                "--output",
                "json",
                "--controller",
                &cluster.controller,
            ],
            "",
        );
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let alive: Vec<i64> = status["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["alive"] == true)
            .map(|b| b["id"].as_i64().unwrap())
            .collect();
        if alive == [0, 1] {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status["scale"]["brokers"], 2, "{status}");
}

#[test]
fn local_up_refuses_bad_manifests_and_busy_ports_before_starting() {
    let dir = common::open_tempdir();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: tributary.dev/v1alpha1\nkind: Topic\nmetadata: {name: t}\nspec: {partitons: 3}\n").unwrap();
    let data = dir.path().join("d");
    fails(
        &[
            "local",
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "-f",
            bad.to_str().unwrap(),
        ],
        "",
        "unknown field `partitons`",
    );
    fails(
        &[
            "local",
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "-f",
            "/no/such/file.yaml",
        ],
        "",
        "cannot read manifest /no/such/file.yaml",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    fails(
        &[
            "local",
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
        ],
        "",
        "choose another port with --port",
    );
    // Broker 1 listens on --port + 1: a free port whose successor is taken.
    let (taken, base) = loop {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let next = taken.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", next - 1)).is_ok() {
            break (taken, (next - 1).to_string());
        }
    };
    fails(
        &[
            "local",
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &base,
            "--http-port",
            "0",
            "--kafka-port",
            "0",
            "--controller-port",
            "0",
        ],
        "",
        "for broker 1 (gRPC) (is another cluster or program using it?); choose another port with --port (broker N listens on --port + N)",
    );
    drop((busy, taken));
    for (args, says) in [
        (
            &["--brokers", "0"][..],
            "--brokers 0: a local cluster has between 1 and 100 brokers",
        ),
        (
            &["--brokers", "2", "--default-replication-factor", "3"][..],
            "--default-replication-factor 3: it must be between 1 and the number of brokers (2)",
        ),
    ] {
        let data = data.to_str().unwrap();
        fails(
            &[&["local", "up", "--data-dir", data][..], args].concat(),
            "",
            says,
        );
    }
    assert!(!data.exists(), "nothing was started or created");
}
