//! Consumer groups: the coordinator of each group (the leader of the group's partition of
//! the internal `__consumer_offsets` topic), its members and their server-side assignment
//! (KIP-848 style), and committed offsets, written to that replicated topic before they
//! are acknowledged.

pub mod assignor;
pub mod classic;
mod coordinator;
mod records;
pub mod state;

use std::time::Duration;

pub use coordinator::{GroupCoordinator, JoinAnswer, OffsetCommit, OffsetDeletion};
pub use state::{GroupState, HeartbeatAnswer};

use crate::TopicPartition;
use crate::replication::ReplicaError;

/// How coordinators treat members.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// How often members heartbeat while nothing is moving.
    pub heartbeat_interval: Duration,
    /// The session timeouts members may ask for.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(3),
            min_session_timeout: Duration::from_millis(500),
            max_session_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The partition of `__consumer_offsets` that holds a group: the group id's murmur2 hash
/// (as Kafka's clients hash keys) modulo the partition count.
pub fn offsets_partition_for(group_id: &str, partitions: u32) -> u32 {
    crate::metadata::partition_for_key(group_id.as_bytes(), partitions)
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("the coordinator of group '{group}' is not available yet ({why}); try again shortly")]
    CoordinatorNotAvailable { group: String, why: String },
    #[error("this broker is not the coordinator of group '{group}'; find the coordinator again")]
    NotCoordinator { group: String },
    #[error(
        "member {member} is not in group '{group}' (it left, or its session expired); join again"
    )]
    UnknownMember { group: String, member: String },
    #[error(
        "member {member} of group '{group}' sent epoch {theirs}, but its epoch is {ours}: it missed an assignment change; heartbeat to learn it"
    )]
    StaleEpoch {
        group: String,
        member: String,
        theirs: i32,
        ours: i32,
    },
    #[error(
        "member {member} of group '{group}' sent epoch {theirs}, newer than its epoch {ours}; join again"
    )]
    FencedEpoch {
        group: String,
        member: String,
        theirs: i32,
        ours: i32,
    },
    #[error("group '{0}' does not exist (it has no members and no committed offsets)")]
    NotFound(String),
    #[error(
        "group '{group}' has {members} active member(s); stop its consumers (or wait for their sessions to expire) first"
    )]
    NotEmpty { group: String, members: usize },
    #[error(
        "member {member} of group '{group}' cannot commit {partition}: it is not assigned to it"
    )]
    NotAssigned {
        group: String,
        member: String,
        partition: TopicPartition,
    },
    #[error(
        "member {member} of group '{group}' sent generation {theirs}, but the group is at generation {ours}: it missed a rebalance; join again"
    )]
    IllegalGeneration {
        group: String,
        member: String,
        theirs: i32,
        ours: i32,
    },
    #[error("group '{group}' is rebalancing; join again")]
    RebalanceInProgress { group: String },
    #[error("group '{group}': {why}")]
    InconsistentProtocol { group: String, why: String },
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    UnknownPartition(TopicPartition),
    #[error("writing to the offsets log failed: {0}")]
    Replica(#[from] ReplicaError),
}

/// Checks a group id: 1 to 255 characters, none of them control characters.
pub fn validate_group_id(group: &str) -> Result<(), GroupError> {
    if group.is_empty() {
        return Err(GroupError::InvalidGroupId(
            "it is empty; name the group".into(),
        ));
    }
    if group.len() > 255 {
        return Err(GroupError::InvalidGroupId(format!(
            "it is {} bytes long; the limit is 255",
            group.len()
        )));
    }
    if group.chars().any(char::is_control) {
        return Err(GroupError::InvalidGroupId(format!(
            "{group:?} contains control characters"
        )));
    }
    Ok(())
}
