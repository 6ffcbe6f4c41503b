//! Shared by the operator's integration tests; each uses a part of it.
#![allow(dead_code)]

pub mod brokers;
pub mod control_plane;
