//! Error codes on the wire: a whole-request failure is a gRPC status carrying a protobuf
//! [`ErrorCode`] (its name in the `tributary-error` metadata key) with a message. Which
//! engine error becomes which code is the server's (`server/errors.rs`).

use tonic::{Code, Status};

use super::proto::ErrorCode;

/// Metadata key naming the [`ErrorCode`] of a failed request.
pub const ERROR_CODE_KEY: &str = "tributary-error";

/// A gRPC status for `code` with `message`.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    let grpc = match code {
        ErrorCode::UnknownTopicOrPartition => Code::NotFound,
        ErrorCode::OffsetOutOfRange => Code::OutOfRange,
        ErrorCode::TopicAlreadyExists => Code::AlreadyExists,
        ErrorCode::NotLeaderOrFollower
        | ErrorCode::LeaderNotAvailable
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::BrokerNotAvailable
        | ErrorCode::BrokerShuttingDown => Code::Unavailable,
        ErrorCode::RequestTimedOut => Code::DeadlineExceeded,
        ErrorCode::CoordinatorNotAvailable | ErrorCode::NotCoordinator => Code::Unavailable,
        ErrorCode::GroupIdNotFound => Code::NotFound,
        ErrorCode::UnknownMemberId
        | ErrorCode::StaleMemberEpoch
        | ErrorCode::FencedMemberEpoch
        | ErrorCode::NonEmptyGroup
        | ErrorCode::PartitionNotAssigned => Code::FailedPrecondition,
        ErrorCode::StorageError | ErrorCode::Unknown => Code::Internal,
        ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownLeaderEpoch
        | ErrorCode::InvalidProducerEpoch => Code::FailedPrecondition,
        _ => Code::InvalidArgument,
    };
    let mut status = Status::new(grpc, message);
    if let Ok(value) = code.as_str_name().parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, value);
    }
    status
}

/// The [`ErrorCode`] a status carries, if it came from a Tributary broker.
pub fn error_code_of(status: &Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_str_name)
}
