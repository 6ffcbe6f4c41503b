//! Tributary's data plane: a Kafka-style segmented log, replication, the cluster controller
//! core, the gRPC server, and the Rust client.

pub mod config;
pub mod log;
pub mod record;
mod topic_partition;

pub use topic_partition::{TopicPartition, validate_topic_name};

/// The gRPC API, generated from `proto/`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tributary.v1");
}
