//! Tributary's gRPC protocol, as server, client and follower share it: the messages and
//! services generated from `proto/`, their conversions to and from the metadata types,
//! error codes carried on a status, and the transport settings and cluster header every
//! connection uses.

pub mod convert;
pub mod status;
pub mod transport;

/// The gRPC API, generated from `proto/`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tributary.v1");
}
