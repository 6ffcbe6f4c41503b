//! Prometheus metrics: requests and latency per API, bytes and records in and out per
//! topic, and log sizes and offsets per partition (refreshed on each scrape).

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::replication::ReplicaManager;

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    kafka_requests: IntCounterVec,
    kafka_latency: HistogramVec,
    kafka_records_sent: IntCounterVec,
    bytes_in: IntCounterVec,
    records_in: IntCounterVec,
    bytes_out: IntCounterVec,
    log_size: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    log_end_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    partitions: IntGauge,
    leaders: IntGauge,
    under_replicated: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tributary".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let tp = &["topic", "partition"];
        Self {
            requests: counter(
                "requests_total",
                "Requests handled, by API and outcome.",
                &["api", "outcome"],
            ),
            latency: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "request_duration_seconds",
                        "Time to answer a request, by API.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["api"],
                )
                .expect("valid metric"),
            ),
            kafka_requests: counter(
                "kafka_requests_total",
                "Kafka protocol requests, by API, version and outcome (ok, error, unsupported).",
                &["api", "version", "outcome"],
            ),
            kafka_latency: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "kafka_request_duration_seconds",
                        "Time to answer a Kafka protocol request, by API.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["api"],
                )
                .expect("valid metric"),
            ),
            kafka_records_sent: counter(
                "kafka_fetch_record_bytes_total",
                "Record bytes of Kafka fetch answers, by how they reached the socket: sendfile \
                 (from the segment file, no copy) or copy (through memory).",
                &["path"],
            ),
            bytes_in: counter(
                "bytes_in_total",
                "Record batch bytes appended by producers.",
                &["topic"],
            ),
            records_in: counter(
                "records_in_total",
                "Records appended by producers.",
                &["topic"],
            ),
            bytes_out: counter(
                "bytes_out_total",
                "Record batch bytes returned to consumers.",
                &["topic"],
            ),
            log_size: gauge(
                "log_size_bytes",
                "Bytes on disk of each partition's log.",
                tp,
            ),
            log_start_offset: gauge(
                "log_start_offset",
                "First offset still in each partition's log.",
                tp,
            ),
            log_end_offset: gauge(
                "log_end_offset",
                "Offset the next record of each partition will get.",
                tp,
            ),
            high_watermark: gauge(
                "high_watermark",
                "Offset below which records are committed.",
                tp,
            ),
            partitions: register(
                &registry,
                IntGauge::new("partitions", "Partition replicas on this broker.")
                    .expect("valid metric"),
            ),
            leaders: register(
                &registry,
                IntGauge::new("leader_partitions", "Partitions this broker leads.")
                    .expect("valid metric"),
            ),
            under_replicated: register(
                &registry,
                IntGauge::new(
                    "under_replicated_partitions",
                    "Partitions this broker leads with fewer replicas in sync than replicas.",
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// Starts timing a request; the result is recorded when the timer is dropped.
    pub fn timer(&self, api: &'static str) -> ApiTimer<'_> {
        ApiTimer {
            metrics: self,
            api,
            started: Instant::now(),
            ok: false,
        }
    }

    /// Counts a Kafka request; `took` is None for one that was not served at all.
    pub fn kafka_request(
        &self,
        api: &str,
        version: i16,
        ok: bool,
        took: Option<std::time::Duration>,
    ) {
        let outcome = match (ok, took) {
            (_, None) => "unsupported",
            (true, Some(_)) => "ok",
            (false, Some(_)) => "error",
        };
        self.kafka_requests
            .with_label_values(&[api, &version.to_string(), outcome])
            .inc();
        if let Some(took) = took {
            self.kafka_latency
                .with_label_values(&[api])
                .observe(took.as_secs_f64());
        }
    }

    pub fn produced(&self, topic: &str, bytes: u64, records: u64) {
        self.bytes_in.with_label_values(&[topic]).inc_by(bytes);
        self.records_in.with_label_values(&[topic]).inc_by(records);
    }

    /// Record bytes of a Kafka fetch answer written to its socket by `path`.
    pub fn kafka_records_sent(&self, path: &str, bytes: u64) {
        self.kafka_records_sent
            .with_label_values(&[path])
            .inc_by(bytes);
    }

    pub fn fetched(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            self.bytes_out.with_label_values(&[topic]).inc_by(bytes);
        }
    }

    /// The Prometheus text exposition, with partition gauges refreshed from `replicas`.
    pub fn render(&self, replicas: &ReplicaManager) -> String {
        for gauge in [
            &self.log_size,
            &self.log_start_offset,
            &self.log_end_offset,
            &self.high_watermark,
        ] {
            gauge.reset();
        }
        let partitions = replicas.partitions();
        self.partitions.set(partitions.len() as i64);
        self.leaders
            .set(partitions.iter().filter(|p| p.is_leader()).count() as i64);
        self.under_replicated.set(
            partitions
                .iter()
                .filter(|p| p.is_leader() && p.is_under_replicated())
                .count() as i64,
        );
        for partition in &partitions {
            let tp = partition.topic_partition();
            let number = tp.partition.to_string();
            let labels = [tp.topic.as_str(), number.as_str()];
            let log = partition.log();
            self.log_size
                .with_label_values(&labels)
                .set(log.size() as i64);
            self.log_start_offset
                .with_label_values(&labels)
                .set(log.log_start_offset());
            self.log_end_offset
                .with_label_values(&labels)
                .set(log.log_end_offset());
            self.high_watermark
                .with_label_values(&labels)
                .set(partition.high_watermark());
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Records one request's latency and outcome when dropped; call [`ApiTimer::success`]
/// once the request has succeeded.
pub struct ApiTimer<'a> {
    metrics: &'a Metrics,
    api: &'static str,
    started: Instant,
    ok: bool,
}

impl ApiTimer<'_> {
    pub fn success(&mut self) {
        self.ok = true;
    }
}

impl Drop for ApiTimer<'_> {
    fn drop(&mut self) {
        let outcome = if self.ok { "ok" } else { "error" };
        self.metrics
            .requests
            .with_label_values(&[self.api, outcome])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[self.api])
            .observe(self.started.elapsed().as_secs_f64());
    }
}
