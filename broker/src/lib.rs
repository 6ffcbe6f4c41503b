//! Tributary's data plane: a Kafka-style segmented log, replication, the cluster controller
//! core, the gRPC server, and the Rust client.

pub mod config;
pub mod log;
pub mod record;
mod topic_partition;

pub use topic_partition::{TopicPartition, validate_topic_name};

pub mod metadata;
pub mod protocol;

pub mod controller;
pub mod group;
pub mod replication;

/// Milliseconds since the Unix epoch, the unit of every timestamp in the record format.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
pub mod client;
pub mod manifest;
pub mod process;
pub mod server;
