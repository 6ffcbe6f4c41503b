//! The partition replicas on this broker. The replica manager applies the controller's
//! metadata (creating, configuring and deleting logs), appends produced records as leader,
//! and serves reads, long-polling until enough data is committed.

mod partition;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::TopicPartition;
use crate::config::TopicConfig;
use crate::controller::MetadataSnapshot;
use crate::log::{AppendInfo, LogError, LogManager};
pub use partition::{Partition, PartitionRead};

/// How many replicas must have a record before the producer hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer is waited for.
    None,
    /// The leader appended it.
    Leader,
    /// Every in-sync replica has it.
    All,
}

impl TryFrom<i32> for Acks {
    type Error = String;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::None),
            1 => Ok(Self::Leader),
            -1 => Ok(Self::All),
            other => Err(format!("acks must be 0, 1 or -1 (all), not {other}")),
        }
    }
}

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
}

pub struct ReplicaManager {
    broker_id: i32,
    logs: Arc<LogManager>,
    topic_defaults: TopicConfig,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    metadata: watch::Sender<Arc<MetadataSnapshot>>,
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
    pub fn new(broker_id: i32, logs: Arc<LogManager>, topic_defaults: TopicConfig) -> Self {
        Self {
            broker_id,
            logs,
            topic_defaults,
            partitions: RwLock::new(HashMap::new()),
            metadata: watch::Sender::new(Arc::new(MetadataSnapshot::default())),
            shutdown: CancellationToken::new(),
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

    /// Waits until metadata of at least `version` has been applied, for up to `wait`.
    pub async fn wait_for_metadata(&self, version: u64, wait: Duration) -> bool {
        let mut rx = self.metadata.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|m| m.version >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Wakes every long-poll so the broker can stop; they answer with what they have.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Brings the replicas on this broker in line with `snapshot`: logs for new partitions are
    /// created, configurations updated, roles set, and logs of partitions that are no longer
    /// here (deleted topics) are deleted.
    pub fn apply_metadata(&self, snapshot: Arc<MetadataSnapshot>) {
        if snapshot.version <= self.metadata.borrow().version {
            return;
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
                    partition.log().set_config(config.log);
                    partition
                }
                None => match self.create_partition(&tp, topic_id, config) {
                    Ok(partition) => partition,
                    Err(error) => {
                        tracing::error!(partition = %tp, %error, "could not create the replica");
                        continue;
                    }
                },
            };
            if record.leader == self.broker_id {
                partition.become_leader(record.leader_epoch);
            }
        }
        self.metadata.send_replace(snapshot);
    }

    fn create_partition(
        &self,
        tp: &TopicPartition,
        topic_id: uuid::Uuid,
        config: TopicConfig,
    ) -> Result<Arc<Partition>, LogError> {
        let mut log = self.logs.get_or_create(tp, config.log.clone())?;
        let recorded = Partition::recorded_topic_id(log.dir());
        if recorded.is_some_and(|recorded| recorded != topic_id) {
            tracing::info!(partition = %tp, "replacing the log of an earlier topic with the same name");
            self.logs.delete(tp)?;
            self.checkpoint_logs();
            log = self.logs.get_or_create(tp, config.log.clone())?;
        }
        log.set_config(config.log);
        // Written once per replica (with an fsync), not at every start.
        if recorded != Some(topic_id) {
            Partition::record_topic_id(log.dir(), topic_id).map_err(|source| LogError::Io {
                partition: tp.clone(),
                op: "record the topic id",
                source,
            })?;
        }
        let partition = Arc::new(Partition::new(tp.clone(), topic_id, log));
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
        self.partitions.write().remove(tp);
        if let Err(error) = self.logs.delete(tp) {
            tracing::error!(partition = %tp, %error, "could not delete the log of a removed partition");
        } else {
            tracing::info!(partition = %tp, "deleted the replica");
        }
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// The partition, if this broker leads it.
    pub fn leader_partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>, ReplicaError> {
        let partition = self.partitions.read().get(tp).cloned();
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

    /// Appends a producer's records and waits as `acks` says.
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
        let info = partition.append_as_leader(records, crate::now_ms())?;
        if acks == Acks::All {
            partition
                .wait_for_high_watermark(info.last_offset + 1, timeout)
                .await?;
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
                .filter_map(|p| {
                    self.partitions
                        .read()
                        .get(&p.tp)
                        .map(|partition| partition.subscribe())
                })
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
            let changed =
                futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => return self.read_once(params),
            }
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
                    let mut read = partition.read(p.offset, limit.max(1))?;
                    // Only the first data in a response may exceed the limits, so that a
                    // consumer always makes progress but the response stays bounded.
                    if read.data.records.len() > limit && remaining < params.max_bytes {
                        read.data.records = Bytes::new();
                    }
                    remaining = remaining.saturating_sub(read.data.records.len());
                    Ok(read)
                });
                (p.tp.clone(), result)
            })
            .collect()
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
