//! Producing and consuming through a real broker process.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Broker, PATIENCE};
use tributary_broker::client::*;
use tributary_broker::protocol::grpc::proto;

/// Reads every partition of `topic` from the beginning until `expected` records arrived.
async fn read_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    let mut config = ConsumerConfig::new(bootstrap);
    config.max_poll_records = 5000;
    let mut consumer = Consumer::connect(config).await.unwrap();
    let partitions = consumer.partitions_of(topic).await.unwrap();
    consumer.assign(partitions.clone()).await.unwrap();
    for tp in &partitions {
        consumer.seek(tp, Offset::Beginning).await.unwrap();
    }
    let mut by_partition: BTreeMap<u32, Vec<ConsumerRecord>> = BTreeMap::new();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {expected} records arrived"
        );
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            by_partition
                .entry(record.partition)
                .or_default()
                .push(record);
            count += 1;
        }
    }
    // Nothing more than what was produced.
    assert!(
        consumer
            .poll(Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    by_partition
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_records_across_segment_rolls_come_back_in_order_per_partition() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "events", 3, &[("segment.bytes", "65536")]).await;

    let mut config = ProducerConfig::new(&broker.grpc);
    config.acks = Acks::Leader;
    let producer = Producer::connect(config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..100_000u32 {
        let key = format!("key-{}", i % 97);
        let record = ProducerRecord::new("events")
            .key(key)
            .value(format!("value-{i}"));
        deliveries.push((i, producer.send(record).await.unwrap()));
    }
    producer.close().await;
    // What the producer was told, per partition, in offset order.
    let mut acknowledged: BTreeMap<u32, Vec<(i64, u32)>> = BTreeMap::new();
    for (i, delivery) in deliveries {
        let written = delivery.await.unwrap();
        acknowledged
            .entry(written.partition)
            .or_default()
            .push((written.offset, i));
    }
    let consumed = read_all(&broker.grpc, "events", 100_000).await;
    assert_eq!(consumed.len(), 3, "keys spread over all partitions");
    for (partition, records) in &consumed {
        let acked = &acknowledged[partition];
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..records.len() as i64).collect::<Vec<_>>(),
            "partition {partition} offsets are dense"
        );
        // Records of a partition come back in the order they were sent, at the offsets the
        // producer was told.
        let mut by_offset = acked.clone();
        by_offset.sort();
        let sent_order: Vec<u32> = acked.iter().map(|(_, i)| *i).collect();
        let mut ascending = sent_order.clone();
        ascending.sort();
        assert_eq!(
            sent_order, ascending,
            "partition {partition}: offsets were assigned in send order"
        );
        for (record, (offset, i)) in records.iter().zip(&by_offset) {
            assert_eq!(record.offset, *offset);
            assert_eq!(
                record.value.as_deref(),
                Some(format!("value-{i}").as_bytes())
            );
            assert_eq!(
                record.key.as_deref(),
                Some(format!("key-{}", i % 97).as_bytes())
            );
        }
    }
    // Each partition holds about a megabyte in 64 KiB segments: many rolls each.
    let segments = std::fs::read_dir(dir.path().join("data/events-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments >= 8, "only {segments} segments in events-0");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_codec_round_trips_through_the_broker() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("codec-{codec}");
        common::create_topic(&broker.grpc, &topic, 1, &[]).await;
        let mut config = ProducerConfig::new(&broker.grpc);
        config.compression = codec;
        let producer = Producer::connect(config).await.unwrap();
        let mut deliveries = Vec::new();
        for i in 0..2000 {
            let record = ProducerRecord::new(&topic)
                .value(format!("{codec} record {i} {}", "z".repeat(i % 50)))
                .header("n", i.to_string());
            deliveries.push(producer.send(record).await.unwrap());
        }
        producer.close().await;
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        let records = &read_all(&broker.grpc, &topic, 2000).await[&0];
        for (i, record) in records.iter().enumerate() {
            assert_eq!(
                record.value.as_deref(),
                Some(format!("{codec} record {i} {}", "z".repeat(i % 50)).as_bytes())
            );
            assert_eq!(
                record.headers[0].value.as_deref(),
                Some(i.to_string().as_bytes())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_wakes_when_a_record_arrives() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "waiting", 1, &[]).await;
    let mut config = ConsumerConfig::new(&broker.grpc);
    config.fetch_max_wait = Duration::from_secs(30);
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer
        .assign(vec![TopicPartition::new("waiting", 0)])
        .await
        .unwrap();
    consumer
        .seek(&TopicPartition::new("waiting", 0), Offset::Beginning)
        .await
        .unwrap();
    let poll = tokio::spawn(async move { consumer.poll(PATIENCE).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    producer
        .send(ProducerRecord::new("waiting").value("wake up"))
        .await
        .unwrap()
        .await
        .unwrap();
    // The fetch waits up to 30 s for data; the record ends the wait.
    let records = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long poll woke up")
        .unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"wake up"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_can_be_found_by_time_and_seeking_to_them_reads_from_there() {
    let dir = common::open_tempdir();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "timeline", 1, &[]).await;
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    for i in 0..100i64 {
        let record = ProducerRecord::new("timeline")
            .value(format!("t{i}"))
            .timestamp(1_000_000 + i * 10);
        let _written_on_close = producer.send(record).await.unwrap();
    }
    producer.close().await;
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    let tp = TopicPartition::new("timeline", 0);
    let found = admin
        .list_offsets(std::slice::from_ref(&tp), OffsetQuery::Timestamp(1_000_305))
        .await
        .unwrap();
    assert_eq!(found[&tp], Some((31, 1_000_310)));
    let latest = admin
        .list_offsets(std::slice::from_ref(&tp), OffsetQuery::Latest)
        .await
        .unwrap();
    assert_eq!(latest[&tp].map(|(o, _)| o), Some(100));
    let mut consumer = Consumer::connect(ConsumerConfig::new(&broker.grpc))
        .await
        .unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    consumer
        .seek(&tp, Offset::Timestamp(1_000_305))
        .await
        .unwrap();
    let records = consumer.poll(PATIENCE).await.unwrap();
    assert_eq!(records[0].offset, 31);
    assert_eq!(records[0].value, Some(Bytes::from_static(b"t31")));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_segments_and_moves_the_log_start() {
    let dir = common::open_tempdir();
    let broker = Broker::start(
        &dir.path().join("data"),
        &["--retention-check-interval-ms", "100"],
    );
    common::create_topic(
        &broker.grpc,
        "short",
        1,
        &[("segment.bytes", "4096"), ("retention.bytes", "8192")],
    )
    .await;
    let producer = Producer::connect(ProducerConfig::new(&broker.grpc))
        .await
        .unwrap();
    for i in 0..2000 {
        let _written_on_close = producer
            .send(ProducerRecord::new("short").value(format!("record {i:>40}")))
            .await
            .unwrap();
    }
    producer.close().await;
    let admin = Admin::connect(&broker.grpc).await.unwrap();
    let partition = common::eventually("retention ran", || async {
        let partition = admin.describe_topic("short").await.unwrap().partitions[0].clone();
        (partition.log_start_offset > 0).then_some(partition)
    })
    .await;
    assert_eq!(partition.high_watermark, 2000);
    let records = read_all(
        &broker.grpc,
        "short",
        (2000 - partition.log_start_offset) as usize,
    )
    .await;
    assert_eq!(records[&0][0].offset, partition.log_start_offset);
}

/// A batch of `n` records stamped with an idempotent producer's id, epoch and sequence.
fn idempotent_batch(producer: &proto::InitProducerIdResponse, sequence: i32, n: usize) -> Bytes {
    let mut builder = tributary_broker::record::BatchBuilder::new(Compression::None, 1024);
    for i in 0..n {
        builder.append(
            1_700_000_000_000,
            None,
            Some(format!("seq {}", sequence as usize + i).as_bytes()),
            &[],
        );
    }
    builder.set_producer(
        producer.producer_id,
        producer.producer_epoch as i16,
        sequence,
    );
    builder.build().unwrap()
}

fn produce(records: Bytes) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topic: "once".into(),
        partition: 0,
        acks: -1,
        timeout_ms: 0,
        records,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_idempotent_batch_is_written_once_also_after_a_crash() {
    use tributary_broker::protocol::grpc::proto::broker_client::BrokerClient;
    let dir = common::open_tempdir();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    common::create_topic(&broker.grpc, "once", 1, &[]).await;
    let connect = |address: String| async move {
        BrokerClient::connect(format!("http://{address}"))
            .await
            .unwrap()
    };
    let mut client = connect(broker.grpc.clone()).await;
    let producer = client
        .init_producer_id(proto::InitProducerIdRequest {})
        .await
        .unwrap()
        .into_inner();
    let other = client
        .init_producer_id(proto::InitProducerIdRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        producer.producer_id, other.producer_id,
        "every id is used once"
    );

    let first = idempotent_batch(&producer, 0, 3);
    let second = idempotent_batch(&producer, 3, 2);
    let written = client
        .produce(produce(first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (written.base_offset, written.batch_base_offsets.clone()),
        (0, vec![0])
    );
    // A retry (the first answer was lost) is answered with the offsets it got the first time.
    let retried = client.produce(produce(first)).await.unwrap().into_inner();
    assert_eq!(retried.batch_base_offsets, vec![0]);
    client.produce(produce(second.clone())).await.unwrap();

    // The producer state is rebuilt from the log after kill -9, so a retry is still caught.
    broker.kill9();
    broker.restart();
    let mut client = connect(broker.grpc.clone()).await;
    let retried = client.produce(produce(second)).await.unwrap().into_inner();
    assert_eq!(retried.batch_base_offsets, vec![3]);

    // A gap in the sequence means records were lost on the way: refused, with the reason.
    let status = client
        .produce(produce(idempotent_batch(&producer, 9, 1)))
        .await
        .expect_err("a sequence gap is refused");
    assert_eq!(
        tributary_broker::protocol::grpc::status::error_code_of(&status),
        Some(ErrorCode::OutOfOrderSequence),
        "{status:?}"
    );
    assert!(
        status.message().contains("sequence 9 where 5 comes next"),
        "{status:?}"
    );

    let records = read_all(&broker.grpc, "once", 5).await;
    let values: Vec<_> = records[&0]
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    let expected: Vec<_> = (0..5).map(|i| Bytes::from(format!("seq {i}"))).collect();
    assert_eq!(values, expected);
}
