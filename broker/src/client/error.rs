use std::fmt;

use tonic::Code;

use crate::protocol::grpc::proto::ErrorCode;
use crate::protocol::grpc::status::error_code_of;
use crate::record::BatchError;

/// What went wrong in a client call. Every message says what was wrong and, where it can,
/// what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker refused the request or a partition of it.
    #[error("{message}")]
    Broker { code: ErrorCode, message: String },
    /// No broker could be reached, or a connection broke.
    #[error(
        "cannot reach a broker at {address}: {reason}; is a broker running there? (start one with `tributary local up`, or point --bootstrap at one)"
    )]
    Connection { address: String, reason: String },
    /// The call itself is wrong: bad configuration or arguments.
    #[error("{0}")]
    Invalid(String),
    #[error("timed out after {waited_ms} ms: {what}")]
    Timeout { what: String, waited_ms: u64 },
    /// A fetched batch could not be decoded.
    #[error("corrupt record batch from {partition}: {source}")]
    Corrupt {
        partition: String,
        source: BatchError,
    },
    #[error("the client is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn broker(code: ErrorCode, message: impl fmt::Display) -> Self {
        Self::Broker {
            code,
            message: message.to_string(),
        }
    }

    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again (after refreshing metadata) can succeed; Kafka's list.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::RequestTimedOut
                    | ErrorCode::NotEnoughReplicas
                    | ErrorCode::NotEnoughReplicasAfterAppend
                    | ErrorCode::BrokerNotAvailable
                    | ErrorCode::BrokerShuttingDown
                    | ErrorCode::CorruptRecord
                    | ErrorCode::StorageError
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
            ),
            Self::Connection { .. } | Self::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether the client's idea of who leads the partition may be stale.
    pub fn needs_metadata_refresh(&self) -> bool {
        matches!(self, Self::Connection { .. })
            || matches!(
                self.code(),
                Some(
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::LeaderNotAvailable
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::BrokerShuttingDown
                        | ErrorCode::FencedLeaderEpoch
                )
            )
    }

    /// Turns a gRPC status from `address` into an error.
    pub(crate) fn from_status(status: tonic::Status, address: &str) -> Self {
        if let Some(code) = error_code_of(&status) {
            return Self::broker(code, status.message());
        }
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled => Self::Connection {
                address: address.to_string(),
                reason: describe_transport(&status),
            },
            Code::DeadlineExceeded => Self::Timeout {
                what: format!("request to {address}"),
                waited_ms: 0,
            },
            Code::Unimplemented => Self::Connection {
                address: address.to_string(),
                reason: "it does not speak Tributary's gRPC API (is that the HTTP metrics port?)"
                    .into(),
            },
            Code::ResourceExhausted => {
                Self::Invalid(format!("the message was too large: {}", status.message()))
            }
            _ => Self::broker(
                ErrorCode::Unknown,
                format!("{address}: {}", status.message()),
            ),
        }
    }
}

/// The most telling part of a transport error: "Connection refused" rather than a chain.
fn describe_transport(status: &tonic::Status) -> String {
    let mut reason = status.message().to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(error) = source {
        reason = error.to_string();
        source = error.source();
    }
    if reason.is_empty() {
        "the connection failed".into()
    } else {
        reason
    }
}
