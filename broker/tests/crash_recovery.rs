//! kill -9, SIGTERM and damaged files: nothing acknowledged is lost, and offsets a
//! consumer has read never change.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, PATIENCE};
use tributary_broker::client::*;

/// Every record of `topic`, by (partition, offset).
async fn read_all(bootstrap: &str, topic: &str) -> BTreeMap<(u32, i64), String> {
    let admin = Admin::connect(bootstrap).await.unwrap();
    let ends: i64 = admin
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum();
    let mut consumer = Consumer::connect(ConsumerConfig::new(bootstrap))
        .await
        .unwrap();
    let partitions = consumer.partitions_of(topic).await.unwrap();
    consumer.assign(partitions.clone()).await.unwrap();
    for tp in &partitions {
        consumer.seek(tp, Offset::Beginning).await.unwrap();
    }
    let mut records = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while (records.len() as i64) < ends {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read only {} of {ends} records",
            records.len()
        );
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            assert!(
                records.insert((r.partition, r.offset), value).is_none(),
                "offset read twice"
            );
        }
    }
    records
}

/// Produces to `topic` until told to stop, recording what was acknowledged.
fn produce_until_stopped(
    bootstrap: String,
    topic: &'static str,
    acked: Arc<Mutex<Vec<(u32, i64, String)>>>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut config = ProducerConfig::new(&bootstrap);
        config.acks = Acks::Leader;
        config.delivery_timeout = Duration::from_secs(2);
        config.linger = Duration::from_millis(1);
        let producer = Producer::connect(config).await.unwrap();
        let mut waiting = Vec::new();
        let mut i = 0u64;
        // Paced (about 20,000 records a second) and capped, so the kill lands mid-stream.
        while !stop.is_cancelled() && i < 40_000 {
            let value = format!("{topic}-{i}");
            match producer
                .send(ProducerRecord::new(topic).value(value.clone()))
                .await
            {
                Ok(delivery) => waiting.push((value, delivery)),
                Err(_) => break,
            }
            i += 1;
            if i.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for (value, delivery) in waiting {
            if let Ok(written) = delivery.await {
                acked
                    .lock()
                    .unwrap()
                    .push((written.partition, written.offset, value));
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_producing_loses_no_acknowledged_record() {
    let dir = common::open_tempdir();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "durable", 2, &[("segment.bytes", "16384")]).await;
    common::create_topic(
        &broker.grpc,
        "fsynced",
        2,
        &[("segment.bytes", "16384"), ("flush.messages", "1")],
    )
    .await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let producers = [
        produce_until_stopped(broker.grpc.clone(), "durable", acked.clone(), stop.clone()),
        produce_until_stopped(broker.grpc.clone(), "fsynced", acked.clone(), stop.clone()),
    ];
    // Let records flow, and read some of them as a consumer would.
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while admin
        .describe_topic("fsynced")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum::<i64>()
        < 2000
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "producing is too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen_before = read_all(&broker.grpc, "durable").await;
    assert!(!seen_before.is_empty());

    broker.kill9();
    stop.cancel();
    for producer in producers {
        producer.await.unwrap();
    }
    broker.restart();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 2000,
        "only {} records acknowledged",
        acked.len()
    );
    assert!(
        acked.len() < 80_000,
        "the kill came after every record was sent"
    );
    for topic in ["durable", "fsynced"] {
        let stored = read_all(&broker.grpc, topic).await;
        for (partition, offset, value) in acked
            .iter()
            .filter(|(_, _, v)| v.starts_with(&format!("{topic}-")))
        {
            assert_eq!(
                stored.get(&(*partition, *offset)),
                Some(value),
                "acknowledged record {value} at {partition}/{offset} is lost"
            );
        }
        // Offsets are dense from 0 in every partition.
        for partition in 0..2 {
            let offsets: Vec<i64> = stored
                .keys()
                .filter(|(p, _)| *p == partition)
                .map(|(_, o)| *o)
                .collect();
            assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
        if topic == "durable" {
            for (at, value) in &seen_before {
                assert_eq!(
                    stored.get(at),
                    Some(value),
                    "a record a consumer had read changed at {at:?}"
                );
            }
        }
    }
    // The restarted broker takes new records after the old ones.
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    let written = producer
        .send(ProducerRecord::new("durable").partition(0).value("after"))
        .await
        .unwrap()
        .await
        .unwrap();
    let before = acked
        .iter()
        .filter(|(p, _, v)| *p == 0 && v.starts_with("durable-"))
        .map(|(_, o, _)| *o)
        .max()
        .unwrap();
    assert!(written.offset > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_the_restart_trusts_the_logs() {
    let dir = common::open_tempdir();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    common::create_topic(&broker.grpc, "clean", 1, &[]).await;
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    for i in 0..500 {
        let _written_on_close = producer
            .send(ProducerRecord::new("clean").value(format!("v{i}")))
            .await
            .unwrap();
    }
    producer.close().await;

    let status = broker.terminate();
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        broker.stderr()
    );
    assert!(data.join(".clean-shutdown").exists());
    assert!(broker.stderr().contains("logs flushed and closed cleanly"));

    broker.restart();
    assert!(
        !data.join(".clean-shutdown").exists(),
        "the marker is consumed at start-up"
    );
    assert!(
        broker.stderr().contains("clean_shutdown=true"),
        "{}",
        broker.stderr()
    );
    let stored = read_all(&broker.grpc, "clean").await;
    assert_eq!(stored.len(), 500);
    assert_eq!(stored[&(0, 499)], "v499");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_tail_left_by_a_crash_is_cut_off_at_restart() {
    let dir = common::open_tempdir();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    common::create_topic(&broker.grpc, "torn", 1, &[]).await;
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    for i in 0..100 {
        producer
            .send(ProducerRecord::new("torn").value(format!("v{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
    broker.kill9();

    // Half a batch at the end: a header promising more bytes than the file holds.
    let segment = data.join("torn-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let good = bytes.len();
    let mut torn = vec![0u8; 40];
    torn[..8].copy_from_slice(&100i64.to_be_bytes());
    torn[8..12].copy_from_slice(&5000i32.to_be_bytes());
    bytes.extend_from_slice(&torn);
    std::fs::write(&segment, &bytes).unwrap();

    broker.restart();
    assert!(
        broker.stderr().contains("cut a torn or corrupt tail"),
        "{}",
        broker.stderr()
    );
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, good);
    let stored = read_all(&broker.grpc, "torn").await;
    assert_eq!(stored.len(), 100);
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    let written = producer
        .send(ProducerRecord::new("torn").value("next"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(written.offset, 100);
}
