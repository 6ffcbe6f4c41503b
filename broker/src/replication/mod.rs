//! The partition replicas on this broker. The replica manager applies the controller's
//! metadata (creating, configuring and deleting logs, and taking each partition's role),
//! appends produced records as leader and waits for the ISR as `acks` says, serves
//! consumers below the high watermark, serves followers' fetches as leader, and runs the
//! fetchers that copy the partitions it follows from their leaders.
//!
//! ISR changes are proposed, never applied here: proposals go out through a queue (the
//! server sends them to the controller) and the answers come back to [`ReplicaManager::isr_answered`].

mod fetcher;
mod partition;
mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::TopicPartition;
use crate::config::TopicConfig;
use crate::log::{AppendInfo, LogError, LogManager, OffsetCheckpoint, Records};
use crate::metadata::{Acks, MetadataSnapshot, PartitionRecord};
use fetcher::Fetchers;
pub use partition::{Partition, PartitionRead, PartitionStatus, ReplicaRead, Role};

const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(
        "this broker has no partition {0}; check the topic name and partition (`tributary topic describe` lists them)"
    )]
    UnknownTopicOrPartition(TopicPartition),
    #[error("this broker is not the leader of {tp}{}; refresh metadata and retry", .leader.map(|l| format!(" (broker {l} is)")).unwrap_or_default())]
    NotLeader {
        tp: TopicPartition,
        leader: Option<i32>,
    },
    #[error("{tp} has no leader right now; retry shortly")]
    LeaderNotAvailable { tp: TopicPartition },
    #[error(
        "{tp} has {isr} in-sync replica(s) but min.insync.replicas is {required}: the write was refused; retry when replicas catch up"
    )]
    NotEnoughReplicas {
        tp: TopicPartition,
        isr: usize,
        required: u32,
    },
    #[error(
        "{tp}: the records were written but the ISR shrank to {isr}, below min.insync.replicas {required}, before all in-sync replicas had them"
    )]
    NotEnoughReplicasAfterAppend {
        tp: TopicPartition,
        isr: usize,
        required: u32,
    },
    #[error("{tp}: leader epoch {theirs} does not match this broker's {ours}; refresh metadata")]
    EpochMismatch {
        tp: TopicPartition,
        theirs: i32,
        ours: i32,
    },
    #[error("broker {broker} is not a replica of {tp}")]
    NotAReplica { tp: TopicPartition, broker: i32 },
    #[error(
        "{tp}: an answer from leader {leader} at epoch {epoch} arrived after leadership changed and was dropped"
    )]
    StaleFetch {
        tp: TopicPartition,
        leader: i32,
        epoch: i32,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("timed out after {waited:?} waiting for the in-sync replicas of {tp}")]
    Timeout {
        tp: TopicPartition,
        waited: Duration,
    },
    #[error("the broker is shutting down; retry against another broker")]
    ShuttingDown,
}

/// A leader's proposal to change a partition's ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// One partition of a fetch.
#[derive(Debug, Clone)]
pub struct FetchPartition {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
}

/// A long-poll read of several partitions.
#[derive(Debug, Clone)]
pub struct FetchParams {
    pub max_wait: Duration,
    pub min_bytes: usize,
    pub max_bytes: usize,
    pub partitions: Vec<FetchPartition>,
    /// Leave the batches in their segment files (`Records::File`) for a sender that can
    /// pass them to the socket without copying them.
    pub in_file: bool,
}

/// One partition of a follower's fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPartition {
    pub tp: TopicPartition,
    pub fetch_offset: i64,
    pub leader_epoch: i32,
    pub last_fetched_epoch: i32,
    pub max_bytes: usize,
    /// The high watermark the follower knows.
    pub high_watermark: i64,
}

/// How a broker's replicas behave.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_max: Duration,
    /// Largest answer to one follower fetch, and per partition.
    pub fetch_max_bytes: usize,
    pub partition_fetch_max_bytes: usize,
    /// The most one follower fetch asks for replicas catching up (the rest of the answer is
    /// for in-sync followers): the partitions of a leader share one stream, so a large copy
    /// in one answer would hold back the in-sync followers, and acks=all producers with
    /// them. Catching-up partitions take turns.
    pub catch_up_fetch_max_bytes: usize,
    /// How long a follower's fetch waits for new data at the leader.
    pub fetch_max_wait: Duration,
    /// Bytes per second for replicas catching up (not in the ISR), over all leaders; None
    /// does not limit them.
    pub catch_up_throttle: Option<u64>,
}

impl ReplicationConfig {
    /// How often leaders look for followers that fell behind.
    pub fn lag_check_interval(&self) -> Duration {
        (self.replica_lag_max / 4).max(Duration::from_millis(100))
    }
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            replica_lag_max: Duration::from_secs(30),
            fetch_max_bytes: 10 * 1024 * 1024,
            partition_fetch_max_bytes: 1024 * 1024,
            catch_up_fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            catch_up_throttle: None,
        }
    }
}

pub struct ReplicaManager {
    broker_id: i32,
    logs: Arc<LogManager>,
    topic_defaults: TopicConfig,
    config: ReplicationConfig,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    metadata: watch::Sender<Arc<MetadataSnapshot>>,
    proposals: mpsc::UnboundedSender<IsrChange>,
    proposals_out: Mutex<Option<mpsc::UnboundedReceiver<IsrChange>>>,
    fetchers: Mutex<Fetchers>,
    /// High watermarks read at start-up, for partitions not created yet.
    saved_high_watermarks: Mutex<BTreeMap<TopicPartition, i64>>,
    /// When ISR lag was last checked, to notice this broker itself was stalled.
    last_lag_check: Mutex<Option<std::time::Instant>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("broker_id", &self.broker_id)
            .finish()
    }
}

impl ReplicaManager {
    pub fn new(
        broker_id: i32,
        logs: Arc<LogManager>,
        topic_defaults: TopicConfig,
        config: ReplicationConfig,
    ) -> Self {
        let saved = OffsetCheckpoint::new(logs.data_dir().join(HIGH_WATERMARK_FILE))
            .read()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "ignoring an unreadable high watermark checkpoint");
                BTreeMap::new()
            });
        let (proposals, proposals_out) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        Self {
            broker_id,
            fetchers: Mutex::new(Fetchers::new(broker_id, config.clone(), shutdown.clone())),
            logs,
            topic_defaults,
            config,
            partitions: RwLock::new(HashMap::new()),
            metadata: watch::Sender::new(Arc::new(MetadataSnapshot::default())),
            proposals,
            proposals_out: Mutex::new(Some(proposals_out)),
            saved_high_watermarks: Mutex::new(saved),
            last_lag_check: Mutex::new(None),
            shutdown,
        }
    }

    pub fn broker_id(&self) -> i32 {
        self.broker_id
    }

    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    pub fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    /// Waits until the applied metadata satisfies `ready`, for up to `wait`.
    pub async fn wait_for_metadata(
        &self,
        wait: Duration,
        ready: impl Fn(&MetadataSnapshot) -> bool,
    ) -> bool {
        let mut rx = self.metadata.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|m| ready(m)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The ISR proposals this broker's leaders make; taken once, by whoever talks to the
    /// controller.
    pub fn take_isr_proposals(&self) -> Option<mpsc::UnboundedReceiver<IsrChange>> {
        self.proposals_out.lock().take()
    }

    /// Wakes every long-poll and stops the fetchers, so the broker can stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Brings the replicas on this broker in line with `snapshot`: logs for new partitions
    /// are created, configurations updated, each partition takes the role the metadata gives
    /// it (leaders serve, followers fetch from their leader), and logs of partitions no longer
    /// here (deleted topics) are deleted. Snapshots older than the last applied, or from an
    /// older controller, are ignored.
    pub fn apply_metadata(&self, snapshot: Arc<MetadataSnapshot>) {
        {
            let current = self.metadata.borrow();
            if snapshot.controller_epoch < current.controller_epoch
                || (snapshot.controller_epoch == current.controller_epoch
                    && snapshot.version <= current.version)
            {
                return;
            }
        }
        let mut wanted = BTreeMap::new();
        for (tp, topic, record) in snapshot.replicas_on(self.broker_id) {
            let config = TopicConfig::resolve(&self.topic_defaults, &topic.config).unwrap_or_else(|error| {
                tracing::error!(topic = %topic.name, %error, "topic config does not apply; using broker defaults");
                self.topic_defaults.clone()
            });
            wanted.insert(tp, (topic.id, config, record.clone()));
        }
        let current: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let mut removed = false;
        for partition in current {
            let keep = wanted
                .get(partition.topic_partition())
                .is_some_and(|(id, _, _)| *id == partition.topic_id());
            if !keep {
                self.fetchers.lock().remove(partition.topic_partition());
                self.remove_partition(partition.topic_partition());
                removed = true;
            }
        }
        // Logs on disk that no partition claims belong to topics deleted while we were down.
        for log in self.logs.all() {
            let tp = log.partition();
            if !wanted.contains_key(tp) && !self.partitions.read().contains_key(tp) {
                tracing::info!(partition = %tp, "deleting the log of a partition that no longer exists");
                if let Err(error) = self.logs.delete(tp) {
                    tracing::error!(partition = %tp, %error, "could not delete a stray log");
                }
                removed = true;
            }
        }
        if removed {
            // Before any log is created again under a deleted one's name.
            self.checkpoint_logs();
        }
        for (tp, (topic_id, config, record)) in wanted {
            let existing = self.partitions.read().get(&tp).cloned();
            let partition = match existing {
                Some(partition) => {
                    partition.log().set_config(config.log.clone());
                    partition
                }
                None => match self.create_partition(&tp, topic_id, &config) {
                    Ok(partition) => partition,
                    Err(error) => {
                        tracing::error!(partition = %tp, %error, "could not create the replica");
                        continue;
                    }
                },
            };
            match partition.apply(&record, &config) {
                Ok((Role::Follower { leader }, new_epoch)) => match snapshot.brokers.get(&leader) {
                    Some(broker) => self.fetchers.lock().follow(
                        partition.clone(),
                        leader,
                        broker.address(),
                        new_epoch,
                    ),
                    None => self.fetchers.lock().remove(&tp),
                },
                Ok(_) => self.fetchers.lock().remove(&tp),
                Err(error) => {
                    tracing::error!(partition = %tp, %error, "could not take the partition's role")
                }
            }
        }
        self.fetchers
            .lock()
            .reconnect_moved_leaders(&snapshot.brokers);
        self.metadata.send_replace(snapshot);
    }

    fn create_partition(
        &self,
        tp: &TopicPartition,
        topic_id: uuid::Uuid,
        config: &TopicConfig,
    ) -> Result<Arc<Partition>, LogError> {
        let mut log = self.logs.get_or_create(tp, config.log.clone())?;
        let recorded = Partition::recorded_topic_id(log.dir());
        if recorded.is_some_and(|recorded| recorded != topic_id) {
            tracing::info!(partition = %tp, "replacing the log of an earlier topic with the same name");
            self.logs.delete(tp)?;
            self.checkpoint_logs();
            log = self.logs.get_or_create(tp, config.log.clone())?;
        }
        log.set_config(config.log.clone());
        // Written once per replica, not at every start.
        if recorded != Some(topic_id) {
            Partition::record_topic_id(log.dir(), topic_id).map_err(|source| LogError::Io {
                partition: tp.clone(),
                op: "record the topic id",
                source,
            })?;
        }
        let saved_hw = if recorded == Some(topic_id) {
            self.saved_high_watermarks.lock().remove(tp)
        } else {
            None
        };
        let partition = Arc::new(Partition::new(
            tp.clone(),
            topic_id,
            self.broker_id,
            log,
            saved_hw,
        ));
        self.partitions
            .write()
            .insert(tp.clone(), partition.clone());
        Ok(partition)
    }

    fn checkpoint_logs(&self) {
        if let Err(error) = self.logs.checkpoint() {
            tracing::error!(%error, "could not write the checkpoints");
        }
    }

    fn remove_partition(&self, tp: &TopicPartition) {
        if let Some(partition) = self.partitions.write().remove(tp) {
            partition.retire();
        }
        if let Err(error) = self.logs.delete(tp) {
            tracing::error!(partition = %tp, %error, "could not delete the log of a removed partition");
        } else {
            tracing::info!(partition = %tp, "deleted the replica");
        }
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions.read().get(tp).cloned()
    }

    /// The partition, if this broker leads it.
    pub fn leader_partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>, ReplicaError> {
        let partition = self.partition(tp);
        match partition {
            Some(partition) if partition.is_leader() => Ok(partition),
            _ => {
                let metadata = self.metadata();
                match metadata.partition(tp) {
                    None => Err(ReplicaError::UnknownTopicOrPartition(tp.clone())),
                    Some((_, record)) if record.leader < 0 => {
                        Err(ReplicaError::LeaderNotAvailable { tp: tp.clone() })
                    }
                    Some((_, record)) => Err(ReplicaError::NotLeader {
                        tp: tp.clone(),
                        leader: Some(record.leader),
                    }),
                }
            }
        }
    }

    /// Appends a producer's records and waits as `acks` says: with acks=all until every
    /// in-sync replica has them (and refuses the write when the ISR is smaller than
    /// `min.insync.replicas`).
    pub async fn produce(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<AppendInfo, ReplicaError> {
        if self.shutdown.is_cancelled() {
            return Err(ReplicaError::ShuttingDown);
        }
        let partition = self.leader_partition(tp)?;
        let (info, epoch) =
            partition.append_as_leader(records, acks == Acks::All, crate::now_ms())?;
        if acks == Acks::All && info.last_offset >= 0 {
            tokio::select! {
                result = partition.wait_for_replication(info.last_offset + 1, timeout, epoch) => result?,
                () = self.shutdown.cancelled() => return Err(ReplicaError::ShuttingDown),
            }
        }
        Ok(info)
    }

    /// Reads the partitions of `params`, waiting up to `max_wait` for `min_bytes` of committed
    /// data. Each partition gets its own result.
    pub async fn fetch(
        &self,
        params: &FetchParams,
    ) -> Vec<(TopicPartition, Result<PartitionRead, ReplicaError>)> {
        let deadline = tokio::time::Instant::now() + params.max_wait;
        loop {
            // Subscribe before reading so no append between the read and the wait is missed.
            let mut watchers: Vec<watch::Receiver<i64>> = params
                .partitions
                .iter()
                .filter_map(|p| self.partition(&p.tp).map(|partition| partition.subscribe()))
                .collect();
            let results = self.read_once(params);
            let bytes: usize = results
                .iter()
                .map(|(_, r)| r.as_ref().map_or(0, |r| r.data.records.len()))
                .sum();
            let failed = results.iter().any(|(_, r)| r.is_err());
            if bytes >= params.min_bytes.max(1)
                || failed
                || watchers.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                return results;
            }
            if !self.wait_for_change(&mut watchers, deadline).await {
                return self.read_once(params);
            }
        }
    }

    /// The wait of a long-poll fetch: until one of `watchers` changes or `deadline` passes.
    /// False when the broker is shutting down instead.
    async fn wait_for_change(
        &self,
        watchers: &mut [watch::Receiver<i64>],
        deadline: tokio::time::Instant,
    ) -> bool {
        let changed =
            futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = changed => true,
            _ = tokio::time::sleep_until(deadline) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    fn read_once(
        &self,
        params: &FetchParams,
    ) -> Vec<(TopicPartition, Result<PartitionRead, ReplicaError>)> {
        let mut remaining = params.max_bytes;
        params
            .partitions
            .iter()
            .map(|p| {
                let result = self.leader_partition(&p.tp).and_then(|partition| {
                    let limit = p.max_bytes.min(remaining);
                    // With the response full, still check the offset and report the marks.
                    let mut read = partition.read(p.offset, limit.max(1), params.in_file)?;
                    // Only the first data in a response may exceed the limits, so that a
                    // consumer always makes progress but the response stays bounded.
                    if read.data.records.len() > limit && remaining < params.max_bytes {
                        read.data.records = Records::default();
                    }
                    remaining = remaining.saturating_sub(read.data.records.len());
                    Ok(read)
                });
                (p.tp.clone(), result)
            })
            .collect()
    }

    /// The leader's side of a follower's fetch: each partition is answered with what the
    /// follower needs next (or where its log diverges), waiting up to `max_wait` for at least
    /// `min_bytes` of new data.
    pub async fn replica_fetch(
        &self,
        follower: i32,
        partitions: &[ReplicaFetchPartition],
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
    ) -> Vec<(TopicPartition, Result<ReplicaRead, ReplicaError>)> {
        let deadline = tokio::time::Instant::now() + max_wait.min(Duration::from_secs(10));
        // New metadata ends the wait too: it may have given the follower partitions here
        // that it has not asked for yet, and it asks again with them at once.
        let mut metadata = self.metadata.subscribe();
        loop {
            // New records, or a high watermark the follower has not seen, end the wait.
            let mut watchers: Vec<watch::Receiver<i64>> = partitions
                .iter()
                .filter_map(|p| self.partition(&p.tp))
                .flat_map(|partition| [partition.subscribe_log_end(), partition.subscribe()])
                .collect();
            let mut remaining = max_bytes;
            let propose = |change: IsrChange| {
                let _ = self.proposals.send(change);
            };
            let results: Vec<_> = partitions
                .iter()
                .map(|p| {
                    let result = self
                        .partition(&p.tp)
                        .ok_or_else(|| ReplicaError::UnknownTopicOrPartition(p.tp.clone()))
                        .and_then(|partition| {
                            partition.replica_read(
                                follower,
                                p.fetch_offset,
                                p.leader_epoch,
                                p.last_fetched_epoch,
                                p.max_bytes.min(remaining).max(1),
                                &propose,
                            )
                        });
                    if let Ok(ReplicaRead::Data { records, .. }) = &result {
                        remaining = remaining.saturating_sub(records.len());
                    }
                    (p.tp.clone(), result)
                })
                .collect();
            let bytes: usize = results
                .iter()
                .map(|(_, r)| match r {
                    Ok(ReplicaRead::Data { records, .. }) => records.len(),
                    _ => 0,
                })
                .sum();
            let urgent = results.iter().zip(partitions).any(|((_, r), p)| match r {
                Ok(ReplicaRead::Data { high_watermark, .. }) => *high_watermark > p.high_watermark,
                _ => true,
            });
            if bytes >= min_bytes.max(1)
                || urgent
                || watchers.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                return results;
            }
            tokio::select! {
                woken = self.wait_for_change(&mut watchers, deadline) => if !woken {
                    return results;
                },
                _ = metadata.changed() => return results,
            }
        }
    }

    /// Proposes dropping followers that have not caught up for `replica.lag.time.max.ms`.
    pub fn check_isr_lag(&self) {
        // Checks run every lag_check_interval. A long gap means this broker was stalled
        // (paused, starved of CPU) and its followers' fetches wait unread: the time it could
        // not see does not count against them (instead of all leaving the ISR), but a
        // follower behind before the stall still is.
        let now = std::time::Instant::now();
        let lag_max = self.config.replica_lag_max;
        let interval = self.config.lag_check_interval();
        let stalled = self
            .last_lag_check
            .lock()
            .replace(now)
            .map(|last| now - last)
            .filter(|&gap| gap > (lag_max / 2).max(interval * 3));
        if let Some(gap) = stalled {
            tracing::warn!(
                ?gap,
                "this broker was stalled; the stall does not count against followers' lag"
            );
        }
        let propose = |change: IsrChange| {
            let _ = self.proposals.send(change);
        };
        for partition in self.partitions() {
            if let Some(gap) = stalled {
                partition.discount_stall(gap.saturating_sub(interval), now);
            } else {
                partition.check_isr_lag(lag_max, &propose);
            }
        }
    }

    /// The controller answered the ISR proposal `change`; `state` is the partition as it
    /// is now, when the controller said.
    pub fn isr_answered(&self, change: &IsrChange, state: Option<&PartitionRecord>) {
        if let Some(partition) = self.partition(&change.tp) {
            partition.isr_answered(change, state);
        }
    }

    /// Runs retention on every log, never deleting records that are not yet committed.
    pub fn apply_retention(&self, now_ms: i64) {
        for partition in self.partitions() {
            if let Err(error) = partition
                .log()
                .apply_retention(now_ms, partition.high_watermark())
            {
                tracing::error!(partition = %partition.topic_partition(), %error, "retention failed");
            }
        }
    }

    /// Writes every partition's high watermark and producer state (with the log checkpoints).
    pub fn checkpoint(&self) {
        let marks: BTreeMap<TopicPartition, i64> = self
            .partitions()
            .iter()
            .map(|p| (p.topic_partition().clone(), p.high_watermark()))
            .collect();
        if let Err(error) =
            OffsetCheckpoint::new(self.logs.data_dir().join(HIGH_WATERMARK_FILE)).write(&marks)
        {
            tracing::error!(%error, "could not write the high watermark checkpoint");
        }
        for partition in self.partitions() {
            partition.log().write_producer_snapshot();
        }
        self.checkpoint_logs();
    }

    /// The bytes of every replica this broker holds.
    pub fn replica_sizes(&self) -> Vec<(TopicPartition, u64)> {
        self.partitions()
            .iter()
            .map(|p| (p.topic_partition().clone(), p.log().size()))
            .collect()
    }

    /// Partitions this broker leads.
    pub fn leader_count(&self) -> usize {
        self.partitions().iter().filter(|p| p.is_leader()).count()
    }

    /// The partitions this broker replicates but is not in the in-sync set of, while they
    /// have a leader to catch up from: a broker with any is still catching up, and stopping
    /// another replica of those partitions could leave them short of in-sync replicas.
    pub fn out_of_sync(&self) -> Vec<TopicPartition> {
        let snapshot = self.metadata();
        snapshot
            .replicas_on(self.broker_id)
            .filter(|(_, _, record)| record.leader >= 0 && !record.isr.contains(&self.broker_id))
            .map(|(tp, _, _)| tp)
            .collect()
    }

    /// The idempotent producers with batches in a partition this broker leads.
    pub fn active_producers(
        &self,
        tp: &TopicPartition,
    ) -> Result<Vec<crate::log::ActiveProducer>, ReplicaError> {
        Ok(self.leader_partition(tp)?.log().active_producers())
    }

    /// The offset for a list-offsets query: earliest, latest (high watermark), or the first
    /// record at or after a timestamp (with its timestamp).
    pub fn list_offset(
        &self,
        tp: &TopicPartition,
        query: OffsetQuery,
    ) -> Result<(i64, Option<i64>), ReplicaError> {
        let partition = self.leader_partition(tp)?;
        Ok(match query {
            OffsetQuery::Earliest => (partition.log().log_start_offset(), None),
            OffsetQuery::Latest => (partition.high_watermark(), None),
            OffsetQuery::Timestamp(ts) => match partition
                .log()
                .offset_for_timestamp(ts, partition.high_watermark())?
            {
                Some((offset, found)) => (offset, Some(found)),
                None => (-1, None),
            },
        })
    }
}

/// What a list-offsets query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    Timestamp(i64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::metadata::fixtures;

    #[tokio::test(start_paused = true)]
    async fn a_followers_long_poll_ends_when_new_metadata_arrives() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let logs = Arc::new(LogManager::open(dir.path(), |_| LogConfig::default()).expect("logs"));
        let replicas = Arc::new(ReplicaManager::new(
            1,
            logs,
            TopicConfig::default(),
            ReplicationConfig::default(),
        ));
        let mut snapshot = fixtures::snapshot(&[1, 2], &[&[1, 2]]);
        snapshot.version = 1;
        replicas.apply_metadata(Arc::new(snapshot.clone()));
        let tp = TopicPartition::new("t", 0);
        let status = replicas
            .partition(&tp)
            .expect("broker 1 leads t-0")
            .status();
        let poll = tokio::spawn({
            let replicas = replicas.clone();
            async move {
                let started = tokio::time::Instant::now();
                let asked = [ReplicaFetchPartition {
                    tp,
                    fetch_offset: 0,
                    leader_epoch: status.leader_epoch,
                    last_fetched_epoch: -1,
                    max_bytes: 1024,
                    high_watermark: 0,
                }];
                let answer = replicas
                    .replica_fetch(2, &asked, Duration::from_secs(10), 1, 1024)
                    .await;
                (started.elapsed(), answer)
            }
        });
        // Broker 2 also follows a new partition here now; its poll, with nothing to read,
        // ends so that it can ask for that one too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        snapshot.version = 2;
        if let Some(topic) = snapshot.topics.get_mut("t") {
            topic.partitions.push(topic.partitions[0].clone());
        }
        replicas.apply_metadata(Arc::new(snapshot));
        let (waited, answer) = poll.await.expect("the poll ends");
        assert!(
            waited < Duration::from_secs(2),
            "answered after {waited:?}, not at once"
        );
        assert!(
            matches!(answer[0].1, Ok(ReplicaRead::Data { .. })),
            "{answer:?}"
        );
    }
}
