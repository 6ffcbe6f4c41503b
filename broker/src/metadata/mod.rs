//! The cluster's shared vocabulary, below every other layer but the log: what the controller
//! records and brokers and clients receive (brokers, topics, partitions, a rebalance plan),
//! and the small types and rules that several layers agree on (a topic to create, acks, the
//! offsets topic, Kafka's key partitioner). It imports nothing above `log` and `record`.

#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
mod partitioner;
mod rebalance;
mod snapshot;

use std::collections::BTreeMap;

pub use partitioner::{murmur2, partition_for_key};
pub use rebalance::{Move, Plan, human_bytes};
pub use snapshot::{BrokerInfo, MetadataSnapshot, PartitionRecord, TopicRecord};

/// The internal topic that holds committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A topic to create.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    /// None takes the cluster default.
    pub replication_factor: Option<u32>,
    pub config: BTreeMap<String, String>,
}

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
