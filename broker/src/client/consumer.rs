//! The consumer: reads assigned partitions from their leaders. One fetch per leader is in
//! flight at a time and runs ahead of the application: a response's batches are queued as
//! they arrived and the next fetch is sent at once; `poll` decodes queued batches while
//! that fetch is on its way.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::error::{Error, Result};
use super::offsets::{OffsetQuery, list_offsets};
use crate::TopicPartition;
use crate::proto::{self, ErrorCode};
use crate::record::{self, Header};

/// Where to start when a partition has no position, or its position is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead: the application must seek.
    None,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub bootstrap: String,
    /// Longest a broker holds a fetch waiting for data.
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: usize,
    /// Upper bound on one fetch response.
    pub fetch_max_bytes: usize,
    /// Upper bound per partition in one fetch response.
    pub max_partition_fetch_bytes: usize,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    pub auto_offset_reset: OffsetReset,
    pub request_timeout: Duration,
    pub retry_backoff: Duration,
}

impl ConsumerConfig {
    /// Kafka's defaults.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
            auto_offset_reset: OffsetReset::Latest,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// A record as the application receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Where `seek` moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    Beginning,
    End,
    At(i64),
    /// The first record at or after this time (milliseconds since the epoch), or the end.
    Timestamp(i64),
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Next offset to fetch; None until a reset policy or seek gives one.
    fetch_position: Option<i64>,
    /// Bytes of this partition's batches fetched but not decoded yet.
    buffered_bytes: usize,
    in_flight: bool,
    /// Bumped by seek, so answers to fetches sent before it are dropped.
    epoch: u64,
    retry_at: Option<Instant>,
    high_watermark: i64,
}

/// What one partition of a fetch brought back: whole batches, still encoded.
struct Fetched {
    batches: Bytes,
    next_offset: Option<i64>,
    high_watermark: i64,
}

struct FetchOutcome {
    leader: String,
    results: Vec<(TopicPartition, u64, Result<Fetched>)>,
}

/// Fetched batches of one partition, waiting to be decoded.
struct Chunk {
    tp: TopicPartition,
    topic: Arc<str>,
    /// Records before this offset are skipped: the first batch may start earlier.
    from: i64,
    batches: Bytes,
}

/// Reads records from assigned partitions.
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Fetched batches in the order they arrived.
    chunks: VecDeque<Chunk>,
    /// Decoded records ready to hand out.
    records: VecDeque<ConsumerRecord>,
    fetches: JoinSet<FetchOutcome>,
    topic_names: HashMap<String, Arc<str>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.partitions.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn is_of(record: &ConsumerRecord, tp: &TopicPartition) -> bool {
    record.partition == tp.partition && *record.topic == *tp.topic
}

impl Consumer {
    /// Creates a consumer and checks that the cluster answers.
    pub async fn connect(config: ConsumerConfig) -> Result<Self> {
        let cluster = Cluster::new(&config.bootstrap, config.request_timeout)?;
        cluster.refresh().await?;
        Ok(Self {
            cluster,
            config,
            partitions: BTreeMap::new(),
            chunks: VecDeque::new(),
            records: VecDeque::new(),
            fetches: JoinSet::new(),
            topic_names: HashMap::new(),
        })
    }

    /// The partitions of `topic`, in order.
    pub async fn partitions_of(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let count = self.cluster.partition_count(topic).await?;
        Ok((0..count).map(|p| TopicPartition::new(topic, p)).collect())
    }

    /// Reads exactly these partitions from now on. Partitions kept keep their positions;
    /// new ones start per `auto_offset_reset` unless sought.
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        for tp in &partitions {
            let count = self.cluster.partition_count(&tp.topic).await?;
            if tp.partition >= count {
                return Err(Error::Invalid(format!(
                    "topic '{}' has no partition {}: it has partitions 0 to {}",
                    tp.topic,
                    tp.partition,
                    count - 1
                )));
            }
        }
        self.partitions.retain(|tp, _| partitions.contains(tp));
        self.chunks.retain(|c| partitions.contains(&c.tp));
        self.records
            .retain(|r| partitions.iter().any(|tp| is_of(r, tp)));
        for tp in partitions {
            self.topic_names
                .entry(tp.topic.clone())
                .or_insert_with(|| Arc::from(tp.topic.as_str()));
            self.partitions.entry(tp).or_default();
        }
        Ok(())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The offset of the next record `poll` will return for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        let decoded = self.records.iter().find(|r| is_of(r, tp)).map(|r| r.offset);
        let queued = || self.chunks.iter().find(|c| c.tp == *tp).map(|c| c.from);
        decoded
            .or_else(queued)
            .or_else(|| self.partitions.get(tp)?.fetch_position)
    }

    /// The high watermark of `tp` as of the last fetch, or -1.
    pub fn high_watermark(&self, tp: &TopicPartition) -> i64 {
        self.partitions.get(tp).map_or(-1, |s| s.high_watermark)
    }

    /// Moves `tp` (which must be assigned) so the next record returned is at `offset`.
    pub async fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        if !self.partitions.contains_key(tp) {
            return Err(Error::Invalid(format!(
                "cannot seek {tp}: it is not assigned to this consumer"
            )));
        }
        let position = match offset {
            Offset::At(n) if n < 0 => {
                return Err(Error::Invalid(format!(
                    "cannot seek {tp} to offset {n}: offsets start at 0"
                )));
            }
            Offset::At(n) => n,
            Offset::Beginning => self.lookup(tp, OffsetQuery::Earliest).await?,
            Offset::End => self.lookup(tp, OffsetQuery::Latest).await?,
            Offset::Timestamp(ts) => match list_offsets(
                &self.cluster,
                std::slice::from_ref(tp),
                OffsetQuery::Timestamp(ts),
            )
            .await?
            .remove(tp)
            .flatten()
            {
                Some((offset, _)) => offset,
                None => self.lookup(tp, OffsetQuery::Latest).await?,
            },
        };
        self.chunks.retain(|c| c.tp != *tp);
        self.records.retain(|r| !is_of(r, tp));
        let state = self.partitions.get_mut(tp).expect("checked above");
        state.fetch_position = Some(position);
        state.buffered_bytes = 0;
        state.epoch += 1;
        state.retry_at = None;
        Ok(())
    }

    async fn lookup(&self, tp: &TopicPartition, query: OffsetQuery) -> Result<i64> {
        let found = list_offsets(&self.cluster, std::slice::from_ref(tp), query).await?;
        Ok(found
            .get(tp)
            .copied()
            .flatten()
            .map_or(0, |(offset, _)| offset))
    }

    /// Waits up to `timeout` for records and returns them (at most `max_poll_records`), in
    /// offset order per partition. An empty answer means none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.partitions.is_empty() {
            return Err(Error::Invalid(
                "no partitions are assigned: call assign() first".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.reset_positions().await?;
            self.start_fetches().await?;
            if self.records.is_empty() {
                self.decode_next_chunk()?;
            }
            if !self.records.is_empty() {
                let n = self.records.len().min(self.config.max_poll_records.max(1));
                return Ok(self.records.drain(..n).collect());
            }
            if !self.chunks.is_empty() {
                continue;
            }
            if self.fetches.is_empty() {
                // Every partition is backing off after an error.
                let wake = self
                    .partitions
                    .values()
                    .filter_map(|s| s.retry_at)
                    .min()
                    .unwrap_or(deadline)
                    .min(deadline);
                tokio::time::sleep_until(wake).await;
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.fetches.join_next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => continue,
                Ok(Some(Err(e))) => {
                    return Err(Error::Invalid(format!("a fetch task failed: {e}")));
                }
                Ok(Some(Ok(outcome))) => self.absorb(outcome).await?,
            }
        }
    }

    /// Decodes the oldest queued chunk into records.
    fn decode_next_chunk(&mut self) -> Result<()> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(());
        };
        if let Some(state) = self.partitions.get_mut(&chunk.tp) {
            state.buffered_bytes = state.buffered_bytes.saturating_sub(chunk.batches.len());
        }
        let mut decoded = Vec::new();
        for (at, header) in record::batches(&chunk.batches) {
            let batch = chunk.batches.slice(at..at + header.total_len());
            record::decode_batch(&batch, chunk.from, &mut decoded).map_err(|source| {
                Error::Corrupt {
                    partition: chunk.tp.to_string(),
                    source,
                }
            })?;
        }
        self.records
            .extend(decoded.into_iter().map(|r| ConsumerRecord {
                topic: chunk.topic.clone(),
                partition: chunk.tp.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            }));
        Ok(())
    }

    async fn reset_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.fetch_position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let query = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetQuery::Earliest,
            OffsetReset::Latest => OffsetQuery::Latest,
            OffsetReset::None => {
                return Err(Error::Invalid(format!(
                    "no position for {}: seek to an offset first, or set auto_offset_reset",
                    missing
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let found = list_offsets(&self.cluster, &missing, query).await?;
        for (tp, offset) in found {
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.fetch_position = Some(offset.map_or(0, |(o, _)| o));
            }
        }
        Ok(())
    }

    async fn start_fetches(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut by_leader: HashMap<String, Vec<(TopicPartition, i64, u64)>> = HashMap::new();
        for (tp, state) in &self.partitions {
            // Fetch ahead while the application works through what is buffered, up to
            // about two fetches' worth per partition.
            let ready = !state.in_flight
                && state.retry_at.is_none_or(|at| at <= now)
                && state.buffered_bytes < 2 * self.config.max_partition_fetch_bytes;
            if let (true, Some(position)) = (ready, state.fetch_position) {
                match self.cluster.leader(tp).await {
                    Ok(leader) => by_leader.entry(leader).or_default().push((
                        tp.clone(),
                        position,
                        state.epoch,
                    )),
                    Err(e) if e.is_retriable() => {
                        let _ = self.cluster.refresh().await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for (leader, partitions) in by_leader {
            for (tp, _, _) in &partitions {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.in_flight = true;
                    state.retry_at = None;
                }
            }
            let request = proto::FetchRequest {
                max_wait_ms: self.config.fetch_max_wait.as_millis() as u32,
                min_bytes: self.config.fetch_min_bytes as u32,
                max_bytes: self.config.fetch_max_bytes as u32,
                partitions: partitions
                    .iter()
                    .map(|(tp, position, _)| proto::FetchPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        fetch_offset: *position,
                        max_bytes: self.config.max_partition_fetch_bytes as u32,
                    })
                    .collect(),
            };
            let client = self.cluster.broker_client(&leader)?;
            let wait = self.config.fetch_max_wait + self.config.request_timeout;
            self.fetches
                .spawn(fetch(client, leader, request, partitions, wait));
        }
        Ok(())
    }

    async fn absorb(&mut self, outcome: FetchOutcome) -> Result<()> {
        let mut refresh = false;
        for (tp, epoch, result) in outcome.results {
            let Some(state) = self.partitions.get_mut(&tp) else {
                continue;
            };
            state.in_flight = false;
            if state.epoch != epoch {
                continue;
            }
            match result {
                Ok(fetched) => {
                    state.high_watermark = fetched.high_watermark;
                    if let (Some(next), Some(from)) = (fetched.next_offset, state.fetch_position) {
                        state.fetch_position = Some(next);
                        state.buffered_bytes += fetched.batches.len();
                        let topic = self.topic_names[&tp.topic].clone();
                        self.chunks.push_back(Chunk {
                            tp,
                            topic,
                            from,
                            batches: fetched.batches,
                        });
                    }
                }
                Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange) => {
                    match self.config.auto_offset_reset {
                        OffsetReset::None => return Err(error),
                        reset => {
                            tracing::info!(partition = %tp, %error, ?reset, "position out of range; resetting");
                            state.fetch_position = None;
                        }
                    }
                }
                Err(error) if error.is_retriable() => {
                    tracing::debug!(partition = %tp, %error, "fetch failed; will retry");
                    refresh |= error.needs_metadata_refresh();
                    if matches!(error, Error::Connection { .. }) {
                        self.cluster.reset(&outcome.leader);
                    }
                    state.retry_at = Some(Instant::now() + self.config.retry_backoff);
                }
                Err(error) => return Err(error),
            }
        }
        if refresh {
            let _ = self.cluster.refresh().await;
        }
        Ok(())
    }
}

async fn fetch(
    mut client: proto::broker_client::BrokerClient<tonic::transport::Channel>,
    leader: String,
    request: proto::FetchRequest,
    partitions: Vec<(TopicPartition, i64, u64)>,
    wait: Duration,
) -> FetchOutcome {
    let response = match tokio::time::timeout(wait, client.fetch(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::from_status(status, &leader)),
        Err(_) => Err(Error::Timeout {
            what: format!("fetch from {leader}"),
            waited_ms: wait.as_millis() as u64,
        }),
    };
    let results = match response {
        Err(error) => partitions
            .into_iter()
            .map(|(tp, _, epoch)| (tp, epoch, Err(error.clone())))
            .collect(),
        Ok(response) => {
            let mut answers: HashMap<TopicPartition, proto::FetchedPartition> = response
                .partitions
                .into_iter()
                .map(|p| (TopicPartition::new(p.topic.clone(), p.partition), p))
                .collect();
            partitions
                .into_iter()
                .map(|(tp, position, epoch)| {
                    let result = match answers.remove(&tp) {
                        None => Err(Error::broker(
                            ErrorCode::Unknown,
                            format!("the broker did not answer for {tp}"),
                        )),
                        Some(answer) => unpack(position, answer),
                    };
                    (tp, epoch, result)
                })
                .collect()
        }
    };
    FetchOutcome { leader, results }
}

/// The batches of one partition's answer and where the next fetch starts; decoding waits.
fn unpack(position: i64, answer: proto::FetchedPartition) -> Result<Fetched> {
    if answer.error_code != i32::from(ErrorCode::None) {
        let code = ErrorCode::try_from(answer.error_code).unwrap_or(ErrorCode::Unknown);
        return Err(Error::broker(code, answer.error_message));
    }
    let next_offset = record::batches(&answer.records)
        .last()
        .map(|(_, header)| header.next_offset().max(position));
    Ok(Fetched {
        batches: answer.records,
        next_offset,
        high_watermark: answer.high_watermark,
    })
}
