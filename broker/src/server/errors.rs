//! The one place where engine errors become wire errors: each log, replica, controller and
//! group error has its [`ErrorCode`], and a whole-request failure becomes a gRPC status
//! carrying it.

use tonic::Status;

use crate::controller::ControllerError;
use crate::group::GroupError;
use crate::log::LogError;
use crate::protocol::grpc::proto::ErrorCode;
use crate::protocol::grpc::status::status;
use crate::replication::ReplicaError;

pub fn log_error_code(error: &LogError) -> ErrorCode {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::InvalidBatch(e) if e.is_corruption() => ErrorCode::CorruptRecord,
        LogError::InvalidBatch(crate::record::BatchError::TooLarge { .. }) => {
            ErrorCode::RecordTooLarge
        }
        LogError::InvalidBatch(_) => ErrorCode::InvalidRecord,
        LogError::Io { .. } | LogError::Offline { .. } => ErrorCode::StorageError,
        LogError::Deleted { .. } => ErrorCode::UnknownTopicOrPartition,
        LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        LogError::ProducerFenced { .. } => ErrorCode::InvalidProducerEpoch,
        LogError::NotContiguous { .. } => ErrorCode::InvalidRecord,
    }
}

pub fn replica_error_code(error: &ReplicaError) -> ErrorCode {
    match error {
        ReplicaError::UnknownTopicOrPartition(_) => ErrorCode::UnknownTopicOrPartition,
        ReplicaError::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
        ReplicaError::LeaderNotAvailable { .. } => ErrorCode::LeaderNotAvailable,
        ReplicaError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
        ReplicaError::NotEnoughReplicasAfterAppend { .. } => {
            ErrorCode::NotEnoughReplicasAfterAppend
        }
        ReplicaError::EpochMismatch { theirs, ours, .. } if theirs < ours => {
            ErrorCode::FencedLeaderEpoch
        }
        ReplicaError::EpochMismatch { .. } => ErrorCode::UnknownLeaderEpoch,
        ReplicaError::NotAReplica { .. } | ReplicaError::StaleFetch { .. } => {
            ErrorCode::NotLeaderOrFollower
        }
        ReplicaError::Log(e) => log_error_code(e),
        ReplicaError::Timeout { .. } => ErrorCode::RequestTimedOut,
        ReplicaError::ShuttingDown => ErrorCode::BrokerShuttingDown,
    }
}

impl From<ReplicaError> for Status {
    fn from(error: ReplicaError) -> Self {
        status(replica_error_code(&error), error.to_string())
    }
}

impl From<ControllerError> for Status {
    fn from(error: ControllerError) -> Self {
        let code = match &error {
            ControllerError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            ControllerError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            ControllerError::InvalidTopic(_) => ErrorCode::InvalidTopic,
            ControllerError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            ControllerError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ControllerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ControllerError::Store(_) => ErrorCode::StorageError,
            ControllerError::RebalanceInProgress { .. } | ControllerError::ScaleRefused(_) => {
                ErrorCode::InvalidRequest
            }
            ControllerError::NoSession(_) | ControllerError::Closed => {
                ErrorCode::BrokerNotAvailable
            }
        };
        status(code, error.to_string())
    }
}

pub fn group_error_code(error: &GroupError) -> ErrorCode {
    match error {
        GroupError::CoordinatorNotAvailable { .. } => ErrorCode::CoordinatorNotAvailable,
        GroupError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
        GroupError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
        GroupError::StaleEpoch { .. } => ErrorCode::StaleMemberEpoch,
        GroupError::FencedEpoch { .. } => ErrorCode::FencedMemberEpoch,
        GroupError::NotFound(_) => ErrorCode::GroupIdNotFound,
        GroupError::NotEmpty { .. } => ErrorCode::NonEmptyGroup,
        GroupError::NotAssigned { .. } => ErrorCode::PartitionNotAssigned,
        GroupError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
        GroupError::Invalid(_) => ErrorCode::InvalidRequest,
        GroupError::UnknownPartition(_) => ErrorCode::UnknownTopicOrPartition,
        // The offsets partition moved while the commit waited: the coordinator moved.
        GroupError::Replica(
            ReplicaError::NotLeader { .. } | ReplicaError::UnknownTopicOrPartition(_),
        ) => ErrorCode::NotCoordinator,
        GroupError::Replica(e) => replica_error_code(e),
        GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
        GroupError::RebalanceInProgress { .. } => ErrorCode::RebalanceInProgress,
        GroupError::InconsistentProtocol { .. } => ErrorCode::InconsistentGroupProtocol,
    }
}

impl From<GroupError> for Status {
    fn from(error: GroupError) -> Self {
        status(group_error_code(&error), error.to_string())
    }
}
