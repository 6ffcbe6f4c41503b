//! Fetch and ListOffsets. A fetch long-polls (max.wait.ms, min.bytes) over the same reads
//! as the gRPC API and answers with the log's stored batch bytes, below the high watermark,
//! sent from the segment files (see `sendfile`).
//! Fetch sessions (KIP-227) are not kept: every answer has session id 0, which tells the
//! client to send full fetches, and an incremental fetch is refused with
//! FETCH_SESSION_ID_NOT_FOUND. Without transactions the last stable offset is the high
//! watermark under either isolation level.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::errors::replica_error;
use super::sendfile::FileRecords;
use super::{KafkaService, topic_partition};
use crate::TopicPartition;
use crate::metadata::MetadataSnapshot;
use crate::protocol::kafka::ResponseError;
use crate::protocol::kafka::StrBytes;
use crate::protocol::kafka::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use crate::protocol::kafka::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use crate::protocol::kafka::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use crate::protocol::kafka::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use crate::protocol::kafka::messages::{
    BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use crate::replication::{FetchParams, FetchPartition, OffsetQuery};
use crate::server::{DEFAULT_FETCH_MAX_BYTES, DEFAULT_PARTITION_MAX_BYTES, MAX_FETCH_WAIT};

/// Kafka's timestamps for the earliest and latest offsets in ListOffsets.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

/// A partition's error before anything is read: its leader epoch is not this leader's
/// (KIP-320), or it does not exist here.
fn epoch_error(
    snapshot: &MetadataSnapshot,
    tp: &TopicPartition,
    current_leader_epoch: i32,
) -> Option<i16> {
    let (_, partition) = snapshot.partition(tp)?;
    if current_leader_epoch < 0 || current_leader_epoch == partition.leader_epoch {
        return None;
    }
    Some(if current_leader_epoch < partition.leader_epoch {
        ResponseError::FencedLeaderEpoch.code()
    } else {
        ResponseError::UnknownLeaderEpoch.code()
    })
}

fn leader_of(snapshot: &MetadataSnapshot, tp: &TopicPartition) -> LeaderIdAndEpoch {
    snapshot
        .partition(tp)
        .map_or_else(LeaderIdAndEpoch::default, |(_, p)| {
            LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
        })
}

fn failed_partition(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

impl KafkaService {
    /// Answers a fetch; the record data stays in the segment files, standing in the
    /// response as `files`' markers.
    pub(super) async fn fetch(
        &self,
        version: i16,
        request: FetchRequest,
        files: &mut FileRecords,
    ) -> (FetchResponse, bool) {
        if request.session_id != 0 || request.session_epoch > 0 {
            return (
                FetchResponse::default()
                    .with_error_code(ResponseError::FetchSessionIdNotFound.code()),
                false,
            );
        }
        let snapshot = self.replicas.metadata();
        let names: BTreeMap<Uuid, &str> = snapshot
            .topics
            .values()
            .map(|t| (t.id, t.name.as_str()))
            .collect();
        let by_id = version >= 13;
        let limit = |requested: i32, default: usize| match usize::try_from(requested) {
            Ok(0) | Err(_) => default,
            Ok(n) => n,
        };
        // Each partition asked for: its name, or the error it gets without a read.
        let mut asked: Vec<(usize, i32, Result<TopicPartition, i16>)> = Vec::new();
        let mut partitions = Vec::new();
        for (t, topic) in request.topics.iter().enumerate() {
            let name = if by_id {
                names.get(&topic.topic_id).map(|n| (*n).to_string())
            } else {
                Some(topic.topic.0.to_string())
            };
            for p in &topic.partitions {
                let Some(name) = &name else {
                    asked.push((t, p.partition, Err(ResponseError::UnknownTopicId.code())));
                    continue;
                };
                let Some(tp) = topic_partition(name, p.partition) else {
                    asked.push((
                        t,
                        p.partition,
                        Err(ResponseError::UnknownTopicOrPartition.code()),
                    ));
                    continue;
                };
                if let Some(code) = epoch_error(&snapshot, &tp, p.current_leader_epoch) {
                    asked.push((t, p.partition, Err(code)));
                    continue;
                }
                partitions.push(FetchPartition {
                    tp: tp.clone(),
                    offset: p.fetch_offset,
                    max_bytes: limit(p.partition_max_bytes, DEFAULT_PARTITION_MAX_BYTES),
                });
                asked.push((t, p.partition, Ok(tp)));
            }
        }
        let params = FetchParams {
            max_wait: Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
                .min(MAX_FETCH_WAIT),
            min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
            max_bytes: limit(request.max_bytes, DEFAULT_FETCH_MAX_BYTES),
            partitions,
            in_file: true,
        };
        let mut results: BTreeMap<TopicPartition, _> = if params.partitions.is_empty() {
            BTreeMap::new()
        } else {
            self.replicas.fetch(&params).await.into_iter().collect()
        };
        let mut ok = true;
        let mut responses: Vec<FetchableTopicResponse> = request
            .topics
            .iter()
            .map(|topic| {
                let response = FetchableTopicResponse::default();
                if by_id {
                    response.with_topic_id(topic.topic_id)
                } else {
                    response.with_topic(topic.topic.clone())
                }
            })
            .collect();
        for (t, index, asked) in asked {
            let data = match asked {
                Err(code) => {
                    ok = false;
                    failed_partition(index, code)
                }
                Ok(tp) => match results.remove(&tp) {
                    Some(Ok(read)) => {
                        self.metrics
                            .fetched(&tp.topic, read.data.records.len() as u64);
                        PartitionData::default()
                            .with_partition_index(index)
                            .with_high_watermark(read.high_watermark)
                            .with_last_stable_offset(read.high_watermark)
                            .with_log_start_offset(read.data.log_start_offset)
                            .with_records(Some(files.stand_in(read.data.records)))
                    }
                    Some(Err(error)) => {
                        ok = false;
                        let data = failed_partition(index, replica_error(&error));
                        if version >= 12
                            && data.error_code == ResponseError::NotLeaderOrFollower.code()
                        {
                            data.with_current_leader(leader_of(&snapshot, &tp))
                        } else {
                            data
                        }
                    }
                    None => failed_partition(index, ResponseError::UnknownServerError.code()),
                },
            };
            responses[t].partitions.push(data);
        }
        (FetchResponse::default().with_responses(responses), ok)
    }

    pub(super) async fn list_offsets(
        &self,
        version: i16,
        request: ListOffsetsRequest,
    ) -> (ListOffsetsResponse, bool) {
        let snapshot = self.replicas.metadata();
        let mut ok = true;
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let name = topic.name.0.to_string();
                let partitions = topic
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let Some(tp) = topic_partition(&name, p.partition_index) else {
                            ok = false;
                            return ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                .with_offset(-1)
                                .with_timestamp(-1);
                        };
                        let query = match p.timestamp {
                            EARLIEST_TIMESTAMP => Ok(OffsetQuery::Earliest),
                            LATEST_TIMESTAMP => Ok(OffsetQuery::Latest),
                            ts if ts >= 0 => Ok(OffsetQuery::Timestamp(ts)),
                            _ => Err(ResponseError::InvalidRequest.code()),
                        };
                        let answer = query.and_then(|query| {
                            if version >= 4
                                && let Some(code) =
                                    epoch_error(&snapshot, &tp, p.current_leader_epoch)
                            {
                                return Err(code);
                            }
                            self.replicas
                                .list_offset(&tp, query)
                                .map_err(|e| replica_error(&e))
                        });
                        let response = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index);
                        match answer {
                            Ok((offset, timestamp)) => response
                                .with_offset(offset)
                                .with_timestamp(timestamp.unwrap_or(-1)),
                            Err(code) => {
                                ok = false;
                                response
                                    .with_error_code(code)
                                    .with_offset(-1)
                                    .with_timestamp(-1)
                            }
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect();
        (ListOffsetsResponse::default().with_topics(topics), ok)
    }

    /// DeleteRecords: the leader's log start moves up to the offset asked (-1: the high
    /// watermark), never past the high watermark; records below it can no longer be read,
    /// and the followers move theirs with the leader. Whole segments below it go with the
    /// next retention pass.
    pub(super) async fn delete_records(
        &self,
        _version: i16,
        request: DeleteRecordsRequest,
    ) -> (DeleteRecordsResponse, bool) {
        let mut ok = true;
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index);
                        let moved = topic_partition(&topic.name, p.partition_index)
                            .ok_or(ResponseError::UnknownTopicOrPartition.code())
                            .and_then(|tp| {
                                if tp.topic.starts_with("__") {
                                    return Err(ResponseError::InvalidTopicException.code());
                                }
                                let partition = self
                                    .replicas
                                    .leader_partition(&tp)
                                    .map_err(|e| replica_error(&e))?;
                                let high_watermark = partition.high_watermark();
                                let offset = match p.offset {
                                    -1 => high_watermark,
                                    o if (0..=high_watermark).contains(&o) => o,
                                    _ => return Err(ResponseError::OffsetOutOfRange.code()),
                                };
                                let log = partition.log();
                                log.advance_log_start(offset).map_err(|e| {
                                    replica_error(&crate::replication::ReplicaError::Log(e))
                                })?;
                                Ok(log.log_start_offset())
                            });
                        match moved {
                            Ok(low_watermark) => result.with_low_watermark(low_watermark),
                            Err(code) => {
                                ok = false;
                                result.with_error_code(code).with_low_watermark(-1)
                            }
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        (DeleteRecordsResponse::default().with_topics(topics), ok)
    }

    /// OffsetForLeaderEpoch (KIP-320): where each asked epoch ends in the leader's log, so a
    /// consumer can tell whether its position survived a leader change.
    pub(super) async fn offset_for_leader_epoch(
        &self,
        _version: i16,
        request: OffsetForLeaderEpochRequest,
    ) -> (OffsetForLeaderEpochResponse, bool) {
        let snapshot = self.replicas.metadata();
        let mut ok = true;
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let answer = EpochEndOffset::default().with_partition(p.partition);
                        let found = topic_partition(&topic.topic, p.partition)
                            .ok_or(ResponseError::UnknownTopicOrPartition.code())
                            .and_then(|tp| {
                                if let Some(code) =
                                    epoch_error(&snapshot, &tp, p.current_leader_epoch)
                                {
                                    return Err(code);
                                }
                                let partition = self
                                    .replicas
                                    .leader_partition(&tp)
                                    .map_err(|e| replica_error(&e))?;
                                Ok(partition.log().epoch_end_offset(p.leader_epoch))
                            });
                        match found {
                            Ok(Some((epoch, end))) => {
                                answer.with_leader_epoch(epoch).with_end_offset(end)
                            }
                            Ok(None) => answer.with_leader_epoch(-1).with_end_offset(-1),
                            Err(code) => {
                                ok = false;
                                answer
                                    .with_error_code(code)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            }
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions)
            })
            .collect();
        (
            OffsetForLeaderEpochResponse::default().with_topics(topics),
            ok,
        )
    }
}
