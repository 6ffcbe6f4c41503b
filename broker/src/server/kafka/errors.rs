//! Kafka's error codes for what the engine reports. The engine's errors are classified once
//! (`server/errors.rs`, as Tributary's own codes); this maps that classification onto
//! Kafka's codes, so both protocols always agree on what went wrong.

use tonic::Status;

use crate::protocol::grpc::proto::ErrorCode;
use crate::protocol::grpc::status::error_code_of;
use crate::protocol::kafka::ResponseError;
use crate::replication::ReplicaError;

/// The Kafka error for one of Tributary's codes.
pub fn kafka_error(code: ErrorCode) -> ResponseError {
    use ResponseError as K;
    match code {
        ErrorCode::None | ErrorCode::Unknown => K::UnknownServerError,
        ErrorCode::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        ErrorCode::CorruptRecord => K::CorruptMessage,
        ErrorCode::InvalidRecord => K::InvalidRecord,
        ErrorCode::RecordTooLarge => K::MessageTooLarge,
        ErrorCode::NotLeaderOrFollower => K::NotLeaderOrFollower,
        ErrorCode::LeaderNotAvailable => K::LeaderNotAvailable,
        ErrorCode::RequestTimedOut => K::RequestTimedOut,
        ErrorCode::NotEnoughReplicas => K::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend => K::NotEnoughReplicasAfterAppend,
        ErrorCode::StorageError => K::KafkaStorageError,
        ErrorCode::InvalidRequest => K::InvalidRequest,
        ErrorCode::TopicAlreadyExists => K::TopicAlreadyExists,
        ErrorCode::InvalidTopic => K::InvalidTopicException,
        ErrorCode::InvalidPartitions => K::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor => K::InvalidReplicationFactor,
        ErrorCode::InvalidConfig => K::InvalidConfig,
        ErrorCode::BrokerNotAvailable => K::BrokerNotAvailable,
        // Kafka has no code of its own for this: clients retry on a retriable one and
        // refresh their metadata, as they should.
        ErrorCode::BrokerShuttingDown => K::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch => K::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch => K::UnknownLeaderEpoch,
        ErrorCode::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequence => K::DuplicateSequenceNumber,
        ErrorCode::InvalidProducerEpoch => K::InvalidProducerEpoch,
        ErrorCode::TopicDeletionInProgress => K::UnknownTopicOrPartition,
        ErrorCode::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator => K::NotCoordinator,
        ErrorCode::UnknownMemberId => K::UnknownMemberId,
        ErrorCode::StaleMemberEpoch => K::StaleMemberEpoch,
        ErrorCode::FencedMemberEpoch => K::FencedMemberEpoch,
        ErrorCode::GroupIdNotFound => K::GroupIdNotFound,
        ErrorCode::NonEmptyGroup => K::NonEmptyGroup,
        ErrorCode::PartitionNotAssigned => K::UnknownTopicOrPartition,
        ErrorCode::InvalidGroupId => K::InvalidGroupId,
        ErrorCode::IllegalGeneration => K::IllegalGeneration,
        ErrorCode::RebalanceInProgress => K::RebalanceInProgress,
        ErrorCode::InconsistentGroupProtocol => K::InconsistentGroupProtocol,
    }
}

/// The Kafka error code for a replica error.
pub fn replica_error(error: &ReplicaError) -> i16 {
    kafka_error(super::super::errors::replica_error_code(error)).code()
}

/// The Kafka error code for a group coordinator error.
pub fn group_error(error: &crate::group::GroupError) -> i16 {
    kafka_error(super::super::errors::group_error_code(error)).code()
}

/// The Kafka error code for a failed call to the controller or coordinator.
pub fn status_error(status: &Status) -> i16 {
    match error_code_of(status) {
        Some(code) => kafka_error(code).code(),
        None if status.code() == tonic::Code::Unavailable => {
            ResponseError::BrokerNotAvailable.code()
        }
        None if status.code() == tonic::Code::DeadlineExceeded => {
            ResponseError::RequestTimedOut.code()
        }
        None => ResponseError::UnknownServerError.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_clients_act_on_are_kafkas_own() {
        assert_eq!(kafka_error(ErrorCode::NotLeaderOrFollower).code(), 6);
        assert_eq!(kafka_error(ErrorCode::UnknownTopicOrPartition).code(), 3);
        assert_eq!(kafka_error(ErrorCode::OffsetOutOfRange).code(), 1);
        assert_eq!(kafka_error(ErrorCode::NotEnoughReplicas).code(), 19);
        assert_eq!(kafka_error(ErrorCode::FencedLeaderEpoch).code(), 74);
        assert_eq!(kafka_error(ErrorCode::OutOfOrderSequence).code(), 45);
        assert_eq!(kafka_error(ErrorCode::TopicAlreadyExists).code(), 36);
        assert_eq!(kafka_error(ErrorCode::RequestTimedOut).code(), 7);
    }
}
