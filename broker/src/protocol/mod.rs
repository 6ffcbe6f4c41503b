//! The wire protocols brokers speak, each as a codec that knows nothing of the engine
//! (controller, replication, groups) it is served over. Today there is `grpc`: Tributary's
//! own client and CLI, and the internal plane (brokers to the controller, followers to
//! leaders). The services that answer it over the engine are in `server`.

pub mod grpc;
