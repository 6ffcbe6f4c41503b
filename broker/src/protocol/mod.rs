//! The wire protocols brokers speak, each as a codec that knows nothing of the engine
//! (controller, replication, groups) it is served over: `grpc`, for Tributary's own client
//! and CLI and the internal plane (brokers to the controller, followers to leaders), and
//! `kafka`, the protocol of every Kafka client and tool. The services that answer them over
//! the engine are in `server`.

pub mod grpc;
pub mod kafka;
