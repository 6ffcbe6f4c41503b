//! The broker process: loads the logs, joins the controller (a standalone broker runs its
//! own), serves the gRPC API and the health and metrics endpoints, runs the maintenance
//! tasks, and shuts down cleanly (`broker.rs`). Also the controller process of a local
//! cluster (`controller_process.rs`). The services answer the gRPC protocol
//! (`protocol::grpc`) over the engine: the log, replication, groups and the controller.

mod admin;
mod broker;
mod controller_link;
mod controller_process;
mod controller_service;
mod data_plane;
mod errors;
mod group_service;
mod grpc_only;
mod http;
mod identity;
mod kafka;
mod metrics;
mod offsets_topic;
mod producer_ids;
mod replication_service;

pub use broker::{BrokerConfig, BrokerError, Listeners, run};
pub use controller_link::ControllerLink;
pub use controller_process::{ControllerProcessConfig, run_controller};
pub use controller_service::{ControllerDirectory, ControllerService, controller_server};
pub use data_plane::{
    DEFAULT_FETCH_MAX_BYTES, DEFAULT_PARTITION_MAX_BYTES, DEFAULT_PRODUCE_TIMEOUT, MAX_FETCH_WAIT,
};
pub use kafka::KafkaSettings;
pub use metrics::Metrics;
