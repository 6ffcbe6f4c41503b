//! The consumer: reads assigned partitions from their leaders. One fetch per leader is in
//! flight at a time and runs ahead of the application: a response's batches are queued as
//! they arrived and the next fetch is sent at once; `poll` decodes queued batches while
//! that fetch is on its way.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::error::{Error, Result};
use super::group;
use super::membership::{self, Membership};
use super::offsets::{OffsetQuery, list_offsets};
use crate::TopicPartition;
use crate::protocol::grpc::proto::{self, ErrorCode};
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
    /// The consumer group `subscribe` joins; None for a consumer that assigns partitions
    /// itself.
    pub group_id: Option<String>,
    /// Commit the positions of the records `poll` returned every `auto_commit_interval`
    /// (and before giving partitions up, and on `close`): at-least-once delivery.
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// The coordinator removes a member it has not heard from for this long; its
    /// partitions go to the others.
    pub session_timeout: Duration,
    /// How long the consumer may take to give up revoked partitions (its `poll` must run)
    /// before it is removed from the group.
    pub rebalance_timeout: Duration,
    /// Shown by `group describe`.
    pub client_id: String,
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
            group_id: None,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            client_id: "tributary-consumer".into(),
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
    /// Set by `subscribe`: the group membership that decides the assignment.
    membership: Option<Membership>,
    next_auto_commit: Instant,
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
            membership: None,
            next_auto_commit: Instant::now(),
        })
    }

    /// Joins the consumer group of `group_id` reading `topics`: the group's coordinator
    /// assigns partitions, and each starts at the group's committed offset (or per
    /// `auto_offset_reset` when it has none).
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        let Some(group) = self.config.group_id.clone() else {
            return Err(Error::Invalid(
                "subscribe needs a group: set group_id in the ConsumerConfig".into(),
            ));
        };
        crate::group::validate_group_id(&group).map_err(|e| Error::Invalid(e.to_string()))?;
        if topics.is_empty() {
            return Err(Error::Invalid("subscribe to at least one topic".into()));
        }
        if self.membership.is_some() || !self.partitions.is_empty() {
            return Err(Error::Invalid(
                "this consumer already reads partitions; subscribe once, on a new consumer".into(),
            ));
        }
        for topic in topics {
            self.cluster.partition_count(topic).await?;
        }
        let settings = membership::Settings {
            topics: topics.iter().map(ToString::to_string).collect(),
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.rebalance_timeout,
            client_id: self.config.client_id.clone(),
        };
        self.membership = Some(Membership::start(self.cluster.clone(), &group, settings));
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        Ok(())
    }

    /// The member id the group gave this consumer (empty before it joined).
    pub fn member_id(&self) -> Option<String> {
        Some(self.membership.as_ref()?.state.lock().member_id.clone())
    }

    /// Takes up what the coordinator assigned: revoked partitions are committed (with
    /// auto-commit) and dropped, new ones start from the committed offsets. Then tells the
    /// coordinator what the consumer owns.
    async fn follow_assignment(&mut self) -> Result<()> {
        let Some(membership) = &self.membership else {
            return Ok(());
        };
        let (assignment, lost) = {
            let mut state = membership.state.lock();
            // Heartbeats retry what may pass; a group this consumer can never join is an
            // error for the application.
            if let Some(error) = &state.error
                && matches!(
                    error.code(),
                    Some(ErrorCode::InconsistentGroupProtocol | ErrorCode::InvalidGroupId)
                )
            {
                return Err(error.clone());
            }
            let lost = std::mem::take(&mut state.lost);
            (state.assignment.clone(), lost)
        };
        let owned: BTreeSet<TopicPartition> = self.partitions.keys().cloned().collect();
        let mut changed = false;
        if lost && !owned.is_empty() {
            tracing::info!(
                partitions = owned.len(),
                "lost the group's partitions; dropping them without committing"
            );
            self.drop_partitions(&owned);
            changed = true;
        }
        let owned: BTreeSet<TopicPartition> = self.partitions.keys().cloned().collect();
        let revoked: BTreeSet<TopicPartition> = owned.difference(&assignment).cloned().collect();
        if !revoked.is_empty() {
            if self.config.enable_auto_commit
                && let Err(error) = self.commit_positions(&revoked).await
            {
                tracing::warn!(%error, "could not commit partitions being given up");
            }
            self.drop_partitions(&revoked);
            changed = true;
        }
        let added: Vec<TopicPartition> = assignment.difference(&owned).cloned().collect();
        if !added.is_empty() {
            let membership = self.membership.as_ref().expect("checked");
            let committed =
                group::committed(&self.cluster, &membership.coordinator, &added).await?;
            for tp in added {
                self.topic_names
                    .entry(tp.topic.clone())
                    .or_insert_with(|| Arc::from(tp.topic.as_str()));
                let position = committed.get(&tp).copied();
                self.partitions.insert(
                    tp,
                    PartitionState {
                        fetch_position: position,
                        ..PartitionState::default()
                    },
                );
            }
            changed = true;
        }
        if changed {
            let membership = self.membership.as_ref().expect("checked");
            membership.state.lock().owned = self.partitions.keys().cloned().collect();
            membership.wake.notify_one();
        }
        Ok(())
    }

    fn drop_partitions(&mut self, gone: &BTreeSet<TopicPartition>) {
        self.partitions.retain(|tp, _| !gone.contains(tp));
        self.chunks.retain(|c| !gone.contains(&c.tp));
        self.records.retain(|r| !gone.iter().any(|tp| is_of(r, tp)));
    }

    /// Commits the positions of the consumer's partitions to its group: every record
    /// `poll` returned before counts as processed.
    pub async fn commit(&mut self) -> Result<()> {
        let owned: BTreeSet<TopicPartition> = self.partitions.keys().cloned().collect();
        self.commit_positions(&owned).await
    }

    /// Commits the given offsets (of the next records to read) to the consumer's group.
    pub async fn commit_offsets(&mut self, offsets: BTreeMap<TopicPartition, i64>) -> Result<()> {
        let Some(membership) = &self.membership else {
            return Err(Error::Invalid(
                "commit needs a group: set group_id and subscribe first".into(),
            ));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        for attempt in 0..2 {
            let (member_id, epoch) = {
                let state = membership.state.lock();
                (state.member_id.clone(), state.epoch)
            };
            let answered = membership.answered.notified();
            match group::commit(
                &self.cluster,
                &membership.coordinator,
                &member_id,
                epoch,
                &offsets,
            )
            .await
            {
                // A heartbeat moved the epoch while the commit was on its way: once its
                // answer is here, commit again if the partitions are still ours.
                Err(error) if attempt == 0 && error.code() == Some(ErrorCode::StaleMemberEpoch) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
                    let state = membership.state.lock();
                    if !offsets.keys().all(|tp| state.assignment.contains(tp)) {
                        return Err(error);
                    }
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn commit_positions(&mut self, partitions: &BTreeSet<TopicPartition>) -> Result<()> {
        let offsets: BTreeMap<TopicPartition, i64> = partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.position(tp)?)))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits (with auto-commit), leaves the group so its partitions move to the other
    /// members at once, and stops heartbeating.
    pub async fn close(mut self) -> Result<()> {
        let committed = if self.config.enable_auto_commit && self.membership.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(membership) = self.membership.take() {
            membership.leave().await;
        }
        committed
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
        if self.partitions.is_empty() && self.membership.is_none() {
            return Err(Error::Invalid(
                "no partitions are assigned: call assign() or subscribe() first".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.membership.is_some() {
                self.follow_assignment().await?;
                if self.config.enable_auto_commit && Instant::now() >= self.next_auto_commit {
                    self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
                    if let Err(error) = self.commit().await {
                        tracing::warn!(%error, "auto-commit failed; the next one will try again");
                    }
                }
                if self.partitions.is_empty() {
                    // Nothing assigned yet (or any more): wait for the coordinator.
                    let membership = self.membership.as_ref().expect("checked");
                    let answered = membership.answered.notified();
                    if tokio::time::timeout_at(deadline, answered).await.is_err() {
                        return Ok(Vec::new());
                    }
                    continue;
                }
            }
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
