//! `tributary perf produce|consume`: throughput and latency, reported like Kafka's
//! producer and consumer performance tools.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tributary_broker::client::{
    Acks, Compression, Consumer, ConsumerConfig, ConsumerRecord, DeliveryFuture, Offset,
    OffsetReset, Producer, ProducerConfig, ProducerRecord,
};

use crate::produce::parse_acks;

const MB: f64 = 1024.0 * 1024.0;
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Send records as fast as allowed and report throughput and latency percentiles.
    Produce {
        topic: String,
        #[arg(long)]
        num_records: u64,
        #[arg(long)]
        record_size: usize,
        #[arg(long, default_value = "1", value_parser = parse_acks)]
        acks: Acks,
        /// Records per second to aim for; -1 for no limit.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        throughput: i64,
        #[arg(long, default_value_t = 16 * 1024)]
        batch_size: usize,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        #[arg(long, default_value = "none")]
        compression: Compression,
        /// Largest request; raise it with large batches.
        #[arg(long, default_value_t = 1024 * 1024)]
        max_request_size: usize,
        /// Memory for records waiting to be sent.
        #[arg(long, default_value_t = 32 * 1024 * 1024)]
        buffer_memory: usize,
    },
    /// Read records from the beginning of every partition and report throughput; with
    /// --group, read as one member of a consumer group and report throughput, lag,
    /// end-to-end latency and every change of the member's partitions.
    Consume {
        topic: String,
        /// Stop after this many records (without --group, where it is required).
        #[arg(long, required_unless_present = "group")]
        num_records: Option<u64>,
        /// Without --group: give up when no record has arrived for this long. With
        /// --group: stop (commit and leave the group) when none has arrived for this long
        /// since the last record or the last change of the member's partitions.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 50 * 1024 * 1024)]
        fetch_max_bytes: usize,
        #[arg(long, default_value_t = 1024 * 1024)]
        max_partition_fetch_bytes: usize,
        /// Read as a member of this consumer group, from its committed offsets (else from
        /// the beginning), committing as `consume --group` does. Start several to share
        /// the topic's partitions.
        #[arg(long)]
        group: Option<String>,
        /// The group member's session timeout: how long the coordinator waits for its
        /// heartbeats before giving its partitions to the other members.
        #[arg(long, default_value_t = 45_000, requires = "group")]
        session_timeout_ms: u64,
    },
}

pub async fn run(bootstrap: &str, command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce {
            topic,
            num_records,
            record_size,
            acks,
            throughput,
            batch_size,
            linger_ms,
            compression,
            max_request_size,
            buffer_memory,
        } => {
            let mut config = ProducerConfig::new(bootstrap);
            config.acks = acks;
            config.batch_size = batch_size;
            config.linger = Duration::from_millis(linger_ms);
            config.compression = compression;
            config.max_request_size = max_request_size;
            config.buffer_memory = buffer_memory;
            produce(config, &topic, num_records, record_size, throughput).await
        }
        PerfCommand::Consume {
            topic,
            num_records,
            timeout_ms,
            fetch_max_bytes,
            max_partition_fetch_bytes,
            group,
            session_timeout_ms,
        } => {
            let mut config = ConsumerConfig::new(bootstrap);
            config.auto_offset_reset = OffsetReset::Earliest;
            config.fetch_max_bytes = fetch_max_bytes;
            config.max_partition_fetch_bytes = max_partition_fetch_bytes;
            config.max_poll_records = 10_000;
            let idle_limit = Duration::from_millis(timeout_ms);
            match (group, num_records) {
                (Some(group), num_records) => {
                    config.group_id = Some(group);
                    config.client_id = "tributary-perf".into();
                    config.session_timeout = Duration::from_millis(session_timeout_ms);
                    consume_in_group(config, &topic, num_records, idle_limit).await
                }
                (None, Some(num_records)) => consume(config, &topic, num_records, idle_limit).await,
                (None, None) => unreachable!("clap requires --num-records without --group"),
            }
        }
    }
}

/// Latency statistics over a window or the whole run, in microseconds.
struct Window {
    histogram: Histogram<u64>,
    started: Instant,
    records: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            started: Instant::now(),
            records: 0,
        }
    }

    fn record(&mut self, latency: Duration) {
        self.histogram
            .saturating_record(latency.as_micros().max(1) as u64);
        self.records += 1;
    }

    fn rate(&self, record_size: usize) -> (f64, f64) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let per_second = self.records as f64 / seconds;
        (per_second, per_second * record_size as f64 / MB)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

async fn produce(
    config: ProducerConfig,
    topic: &str,
    num_records: u64,
    record_size: usize,
    throughput: i64,
) -> anyhow::Result<()> {
    let producer = Producer::connect(config).await?;
    // One payload of random capital letters, shared by every record, as Kafka's tool does.
    let payload = Bytes::from(
        (0..record_size)
            .map(|_| rand::random_range(b'A'..=b'Z'))
            .collect::<Vec<u8>>(),
    );
    // Deliveries are awaited in send order: the records of a batch are acknowledged
    // together, so only the first of each batch waits and the rest are already done.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
    let collector = tokio::spawn(async move {
        let mut total = Window::new();
        let mut window = Window::new();
        let mut failures = 0u64;
        let mut first_error = None;
        while let Some((sent, delivery)) = rx.recv().await {
            match delivery.await {
                Ok(_) => {
                    let latency = sent.elapsed();
                    total.record(latency);
                    window.record(latency);
                }
                Err(error) => {
                    failures += 1;
                    first_error.get_or_insert(error);
                }
            }
            if window.started.elapsed() >= REPORT_EVERY {
                let (rate, mb) = window.rate(record_size);
                println!(
                    "{} records sent, {rate:.1} records/sec ({mb:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                    window.records,
                    window.histogram.mean() / 1000.0,
                    window.histogram.max() as f64 / 1000.0
                );
                window = Window::new();
            }
        }
        (total, failures, first_error)
    });

    let started = Instant::now();
    for i in 0..num_records {
        if throughput > 0 {
            // Stay on schedule: sleep only when ahead by more than a millisecond.
            let due = started + Duration::from_secs_f64(i as f64 / throughput as f64);
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                tokio::time::sleep(due - now).await;
            }
        }
        let record = ProducerRecord {
            topic: topic.to_string(),
            value: Some(payload.clone()),
            ..Default::default()
        };
        let sent = Instant::now();
        let delivery = producer.send(record).await.context("sending a record")?;
        let _ = tx.send((sent, delivery));
    }
    drop(tx);
    producer.close().await;
    let (total, failures, first_error) = collector.await?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = total.records as f64 / seconds;
    println!(
        "{} records sent, {rate:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
        total.records,
        rate * record_size as f64 / MB,
        total.histogram.mean() / 1000.0,
        total.histogram.max() as f64 / 1000.0,
        total.ms(0.50),
        total.ms(0.95),
        total.ms(0.99),
        total.ms(0.999),
    );
    if let Some(error) = first_error {
        bail!("{failures} of {num_records} records failed; the first error: {error}");
    }
    Ok(())
}

async fn consume(
    config: ConsumerConfig,
    topic: &str,
    num_records: u64,
    idle_limit: Duration,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::connect(config).await?;
    let partitions = consumer.partitions_of(topic).await?;
    consumer.assign(partitions.clone()).await?;
    for tp in &partitions {
        consumer.seek(tp, Offset::Beginning).await?;
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    let mut last = Instant::now();
    while records < num_records {
        let batch = consumer.poll(Duration::from_millis(200)).await?;
        if batch.is_empty() {
            if last.elapsed() >= idle_limit {
                bail!(
                    "only {records} of {num_records} records arrived; none for {} ms",
                    idle_limit.as_millis()
                );
            }
            continue;
        }
        last = Instant::now();
        for record in &batch {
            records += 1;
            bytes += payload_bytes(record);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{records} records consumed ({:.2} MB) in {seconds:.2} s: {:.1} records/sec, {:.2} MB/sec.",
        bytes as f64 / MB,
        records as f64 / seconds,
        bytes as f64 / MB / seconds
    );
    Ok(())
}

/// The bytes of a record's key and value: what consume throughput counts.
fn payload_bytes(record: &ConsumerRecord) -> u64 {
    (record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len()))
        as u64
}

/// What one group member read over a window or the whole run.
struct MemberWindow {
    /// End-to-end latency (consumed now, produced at the record's timestamp), in ms.
    latency: Histogram<u64>,
    started: Instant,
    /// When the first and the last record arrived.
    first: Option<Instant>,
    last: Option<Instant>,
    records: u64,
    bytes: u64,
}

impl MemberWindow {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
            started: Instant::now(),
            first: None,
            last: None,
            records: 0,
            bytes: 0,
        }
    }

    fn record(&mut self, record: &ConsumerRecord, now: Instant, now_ms: i64) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.latency
            .saturating_record((now_ms - record.timestamp).max(1) as u64);
        self.records += 1;
        self.bytes += payload_bytes(record);
    }

    /// "N records consumed, R records/sec (M MB/sec)" over `seconds`, and the latency
    /// percentiles.
    fn summary(&self, seconds: f64) -> String {
        let seconds = seconds.max(1e-9);
        format!(
            "{} records consumed, {:.1} records/sec ({:.2} MB/sec), end-to-end latency {} ms 50th, {} ms 99th, {} ms max",
            self.records,
            self.records as f64 / seconds,
            self.bytes as f64 / MB / seconds,
            self.latency.value_at_quantile(0.50),
            self.latency.value_at_quantile(0.99),
            self.latency.max(),
        )
    }
}

/// Reads as one member of a consumer group until `num_records`, `idle_limit` without a
/// record, or Ctrl-C; then commits and leaves. Prints each change of the member's
/// partitions with the wall-clock time, so a benchmark can time rebalances.
async fn consume_in_group(
    config: ConsumerConfig,
    topic: &str,
    num_records: Option<u64>,
    idle_limit: Duration,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::connect(config).await?;
    consumer.subscribe(&[topic]).await?;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let (mut total, mut window) = (MemberWindow::new(), MemberWindow::new());
    let mut assignment = Vec::new();
    let mut last_record = Instant::now();
    let mut last_record_ms = 0;
    let result = loop {
        if num_records.is_some_and(|n| total.records >= n) || last_record.elapsed() >= idle_limit {
            break Ok(());
        }
        let records = tokio::select! {
            records = consumer.poll(Duration::from_millis(200)) => records,
            _ = &mut stop => break Ok(()),
        };
        let records = match records {
            Ok(records) => records,
            Err(error) => break Err(anyhow::Error::new(error).context("reading in the group")),
        };
        let (now, now_ms) = (Instant::now(), tributary_broker::now_ms());
        let owned: Vec<u32> = consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect();
        if owned != assignment {
            println!("assigned partitions {owned:?} at {now_ms} ms");
            assignment = owned;
            // New partitions get the whole idle time to deliver their first records.
            last_record = now;
        }
        if !records.is_empty() {
            last_record = now;
            last_record_ms = now_ms;
        }
        for record in &records {
            total.record(record, now, now_ms);
            window.record(record, now, now_ms);
        }
        if window.started.elapsed() >= REPORT_EVERY {
            let lag: i64 = consumer
                .assignment()
                .iter()
                .filter_map(|tp| {
                    Some((consumer.high_watermark(tp) - consumer.position(tp)?).max(0))
                })
                .sum();
            let seconds = window.started.elapsed().as_secs_f64();
            println!("{}, {lag} records behind.", window.summary(seconds));
            window = MemberWindow::new();
        }
    };
    let closed = consumer.close().await;
    // The rate over the time records were arriving, not the wait before or after.
    let reading = match (total.first, total.last) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "total: {}, last record at {last_record_ms} ms.",
        total.summary(reading)
    );
    result?;
    closed.context("leaving the group")?;
    Ok(())
}
