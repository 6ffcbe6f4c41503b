//! One partition replica on this broker: its log, its role and its high watermark.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use super::ReplicaError;
use crate::TopicPartition;
use crate::log::{AppendInfo, Log, ReadResult, replace_file};

const PARTITION_METADATA_FILE: &str = "partition.metadata";

pub struct Partition {
    tp: TopicPartition,
    topic_id: Uuid,
    log: Arc<Log>,
    leader_epoch: AtomicI32,
    is_leader: AtomicBool,
    /// Consumers read below it; every advance wakes waiting fetches.
    high_watermark: watch::Sender<i64>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition").field("tp", &self.tp).finish()
    }
}

/// What a successful read found.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub data: ReadResult,
    pub high_watermark: i64,
}

impl Partition {
    pub(super) fn new(tp: TopicPartition, topic_id: Uuid, log: Arc<Log>) -> Self {
        let high_watermark = watch::Sender::new(log.log_end_offset());
        Self {
            tp,
            topic_id,
            log,
            leader_epoch: AtomicI32::new(0),
            is_leader: AtomicBool::new(false),
            high_watermark,
        }
    }

    /// The topic id recorded in a log directory, if any.
    pub(super) fn recorded_topic_id(dir: &Path) -> Option<Uuid> {
        let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("topic_id:"))
            .and_then(|id| id.trim().parse().ok())
    }

    /// Records which topic (by id) this log belongs to, so that a topic deleted and created
    /// again under the same name never picks up the old data.
    pub(super) fn record_topic_id(dir: &Path, topic_id: Uuid) -> std::io::Result<()> {
        replace_file(
            &dir.join(PARTITION_METADATA_FILE),
            format!("version: 0\ntopic_id: {topic_id}\n").as_bytes(),
        )
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    pub(super) fn become_leader(&self, leader_epoch: i32) {
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.is_leader.store(true, Ordering::Release);
        self.advance_high_watermark();
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// With this broker as the only in-sync replica, everything appended is committed.
    fn advance_high_watermark(&self) {
        let leo = self.log.log_end_offset();
        self.high_watermark.send_if_modified(|hw| {
            let advanced = leo > *hw;
            if advanced {
                *hw = leo;
            }
            advanced
        });
    }

    /// Appends a producer's batches as leader.
    pub fn append_as_leader(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader {
                tp: self.tp.clone(),
                leader: None,
            });
        }
        let info = self
            .log
            .append_as_leader(records, self.leader_epoch(), now_ms)?;
        self.advance_high_watermark();
        Ok(info)
    }

    /// Waits until the high watermark reaches `offset`, or `wait` runs out.
    pub async fn wait_for_high_watermark(
        &self,
        offset: i64,
        wait: std::time::Duration,
    ) -> Result<(), ReplicaError> {
        let mut hw = self.subscribe();
        let reached = tokio::time::timeout(wait, hw.wait_for(|&hw| hw >= offset)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ReplicaError::ShuttingDown),
            Err(_) => Err(ReplicaError::Timeout {
                tp: self.tp.clone(),
                waited: wait,
            }),
        }
    }

    /// Reads committed batches (below the high watermark) from `offset`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<PartitionRead, ReplicaError> {
        let high_watermark = self.high_watermark();
        let data = self.log.read(offset, max_bytes, high_watermark)?;
        Ok(PartitionRead {
            data,
            high_watermark,
        })
    }
}
