//! Produce, InitProducerId and DescribeProducers: record batches are appended as the client sent them (after
//! the log's checks of length, CRC, offsets and the idempotent producer's sequence), with
//! acks 0, 1 or all; every partition of a request is written at once, in request order.

use std::time::Duration;

use bytes::Bytes;

use super::errors::{replica_error, status_error};
use super::{KafkaService, Reply, reply, topic_partition};
use crate::TopicPartition;
use crate::metadata::Acks;
use crate::protocol::kafka::frame::Request;
use crate::protocol::kafka::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use crate::protocol::kafka::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use crate::protocol::kafka::messages::{
    ApiKey, BrokerId, DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use crate::protocol::kafka::{ResponseError, StrBytes};
use crate::replication::ReplicaError;

/// What one partition's append came to.
struct Outcome {
    error: Option<(i16, String)>,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// On NOT_LEADER_OR_FOLLOWER: the leader to try, and its epoch.
    leader: Option<(i32, i32)>,
}

impl Outcome {
    fn failed(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            error: Some((error.code(), message.into())),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            leader: None,
        }
    }
}

impl KafkaService {
    pub(super) async fn produce(&self, request: &Request, body: ProduceRequest) -> (Reply, bool) {
        let version = request.api_version;
        let acks = Acks::try_from(i32::from(body.acks));
        let timeout = Duration::from_millis(u64::try_from(body.timeout_ms).unwrap_or(0));
        let refusal = match (&acks, &body.transactional_id) {
            (Err(why), _) => Some((ResponseError::InvalidRequiredAcks, why.clone())),
            (_, Some(_)) => Some((
                ResponseError::TransactionalIdAuthorizationFailed,
                "transactions are not supported by Tributary; produce without a transactional.id"
                    .to_string(),
            )),
            _ => None,
        };
        let appends = body.topic_data.iter().flat_map(|topic| {
            topic.partition_data.iter().map(|p| {
                let tp = topic_partition(&topic.name.0, p.index);
                self.append(tp, p.records.clone(), acks.clone().ok(), timeout, &refusal)
            })
        });
        // join_all polls in order, so the appends (before any wait) happen in request order.
        let outcomes = futures::future::join_all(appends).await;
        let ok = outcomes.iter().all(|o| o.error.is_none());
        let mut outcomes = outcomes.into_iter();
        let responses = body
            .topic_data
            .iter()
            .map(|topic| {
                TopicProduceResponse::default()
                    .with_name(topic.name.clone())
                    .with_partition_responses(
                        topic
                            .partition_data
                            .iter()
                            .map(|p| {
                                let outcome = outcomes.next().expect("one outcome per partition");
                                partition_response(version, p.index, outcome)
                            })
                            .collect(),
                    )
            })
            .collect();
        if acks == Ok(Acks::None) {
            // acks=0 gets no answer; a failure closes the connection so the client notices.
            return if ok {
                (Reply::Nothing, true)
            } else {
                (
                    Reply::Close("an acks=0 produce failed; the client learns of it by the closed connection".into()),
                    false,
                )
            };
        }
        let response = ProduceResponse::default().with_responses(responses);
        (reply(request, ApiKey::Produce, &response), ok)
    }

    async fn append(
        &self,
        tp: Option<TopicPartition>,
        records: Option<Bytes>,
        acks: Option<Acks>,
        timeout: Duration,
        refusal: &Option<(ResponseError, String)>,
    ) -> Outcome {
        if let Some((error, why)) = refusal {
            return Outcome::failed(*error, why.clone());
        }
        let Some(tp) = tp else {
            return Outcome::failed(
                ResponseError::UnknownTopicOrPartition,
                "no partition has a negative index",
            );
        };
        let Some(acks) = acks else {
            return Outcome::failed(ResponseError::InvalidRequiredAcks, "invalid acks");
        };
        if tp.topic.starts_with("__") {
            return Outcome::failed(
                ResponseError::InvalidTopicException,
                format!(
                    "'{}' is an internal topic; only the brokers write to it",
                    tp.topic
                ),
            );
        }
        let Some(records) = records.filter(|r| !r.is_empty()) else {
            return Outcome::failed(
                ResponseError::CorruptMessage,
                "the request holds no record batch",
            );
        };
        match self.replicas.produce(&tp, &records, acks, timeout).await {
            Ok(info) => {
                self.metrics.produced(&tp.topic, info.bytes, info.records);
                Outcome {
                    error: None,
                    base_offset: info.first_offset,
                    log_append_time: info.log_append_time.unwrap_or(-1),
                    log_start_offset: self
                        .replicas
                        .leader_partition(&tp)
                        .map_or(-1, |p| p.log().log_start_offset()),
                    leader: None,
                }
            }
            Err(error) => {
                let leader = match &error {
                    ReplicaError::NotLeader { .. } => self
                        .replicas
                        .metadata()
                        .partition(&tp)
                        .map(|(_, p)| (p.leader, p.leader_epoch)),
                    _ => None,
                };
                Outcome {
                    error: Some((replica_error(&error), error.to_string())),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                    leader,
                }
            }
        }
    }

    pub(super) async fn init_producer_id(
        &self,
        _version: i16,
        request: InitProducerIdRequest,
    ) -> (InitProducerIdResponse, bool) {
        if request.transactional_id.is_some() {
            return (
                InitProducerIdResponse::default()
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                false,
            );
        }
        match self.producer_ids.next().await {
            Ok(id) => (
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0),
                true,
            ),
            Err(status) => {
                tracing::warn!(error = %status.message(), "could not hand out a producer id");
                (
                    InitProducerIdResponse::default()
                        .with_error_code(status_error(&status))
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                    false,
                )
            }
        }
    }
}

fn partition_response(version: i16, index: i32, outcome: Outcome) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(outcome.base_offset)
        .with_log_append_time_ms(outcome.log_append_time)
        .with_log_start_offset(outcome.log_start_offset);
    if let Some((code, message)) = outcome.error {
        response = response.with_error_code(code);
        if version >= 8 {
            response = response.with_error_message(Some(StrBytes::from_string(message)));
        }
        if version >= 10
            && let Some((leader, epoch)) = outcome.leader
        {
            response = response.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
            );
        }
    }
    response
}

impl KafkaService {
    /// The idempotent producers with batches in each partition asked for, from its leader
    /// (what `kafka-transactions.sh describe-producers` shows). Without transactions, no
    /// producer has a coordinator epoch or an open transaction.
    pub(super) async fn describe_producers(
        &self,
        _version: i16,
        request: DescribeProducersRequest,
    ) -> (DescribeProducersResponse, bool) {
        let mut ok = true;
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let response = PartitionResponse::default().with_partition_index(index);
                        let Some(tp) = topic_partition(&topic.name, index) else {
                            ok = false;
                            return response
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        match self.replicas.active_producers(&tp) {
                            Ok(producers) => response.with_active_producers(
                                producers
                                    .into_iter()
                                    .map(|p| {
                                        ProducerState::default()
                                            .with_producer_id(ProducerId(p.producer_id))
                                            .with_producer_epoch(i32::from(p.epoch))
                                            .with_last_sequence(p.last_sequence)
                                            .with_last_timestamp(p.last_timestamp)
                                            .with_coordinator_epoch(-1)
                                            .with_current_txn_start_offset(-1)
                                    })
                                    .collect(),
                            ),
                            Err(error) => {
                                ok = false;
                                response
                                    .with_error_code(replica_error(&error))
                                    .with_error_message(Some(StrBytes::from_string(
                                        error.to_string(),
                                    )))
                            }
                        }
                    })
                    .collect();
                TopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        (DescribeProducersResponse::default().with_topics(topics), ok)
    }
}
