//! The `Broker` gRPC service: produce, fetch, list offsets and metadata, as thin
//! conversions between protobuf and the replica manager.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::errors::replica_error_code;
use super::metrics::Metrics;
use super::producer_ids::ProducerIds;
use crate::TopicPartition;
use crate::metadata::{Acks, MetadataSnapshot, TopicRecord};
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::status::status;
use crate::replication::{FetchParams, OffsetQuery, ReplicaManager};

/// How long acks=all waits when the request does not say.
pub const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a fetch may wait, whatever it asks.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);
/// A fetch that leaves its limits at zero gets these (Kafka's defaults).
pub const DEFAULT_FETCH_MAX_BYTES: usize = 50 * 1024 * 1024;
pub const DEFAULT_PARTITION_MAX_BYTES: usize = 1024 * 1024;

pub struct BrokerService {
    pub(super) replicas: Arc<ReplicaManager>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) producer_ids: Arc<ProducerIds>,
}

#[tonic::async_trait]
impl proto::broker_server::Broker for BrokerService {
    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        let mut timer = self.metrics.timer("produce");
        let request = request.into_inner();
        let acks =
            Acks::try_from(request.acks).map_err(|why| status(ErrorCode::InvalidRequest, why))?;
        let timeout = match request.timeout_ms {
            0 => DEFAULT_PRODUCE_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        refuse_internal(&request.topic)?;
        let tp = TopicPartition::new(request.topic, request.partition);
        let info = self
            .replicas
            .produce(&tp, &request.records, acks, timeout)
            .await?;
        self.metrics.produced(&tp.topic, info.bytes, info.records);
        let log_start_offset = self
            .replicas
            .leader_partition(&tp)
            .map_or(-1, |p| p.log().log_start_offset());
        timer.success();
        let (base_offset, last_offset, batch_base_offsets) = match acks {
            Acks::None => (-1, -1, Vec::new()),
            _ => (
                info.first_offset,
                info.last_offset,
                info.batch_offsets.iter().map(|b| b.0).collect(),
            ),
        };
        Ok(Response::new(proto::ProduceResponse {
            base_offset,
            last_offset,
            log_append_time_ms: info.log_append_time.unwrap_or(-1),
            log_start_offset,
            batch_base_offsets,
        }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<proto::InitProducerIdRequest>,
    ) -> Result<Response<proto::InitProducerIdResponse>, Status> {
        let mut timer = self.metrics.timer("init_producer_id");
        let producer_id = self.producer_ids.next().await?;
        timer.success();
        Ok(Response::new(proto::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchRequest>,
    ) -> Result<Response<proto::FetchResponse>, Status> {
        let mut timer = self.metrics.timer("fetch");
        let request = request.into_inner();
        let limit = |requested: u32, default: usize| {
            if requested == 0 {
                default
            } else {
                requested as usize
            }
        };
        let params = FetchParams {
            max_wait: Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT),
            min_bytes: request.min_bytes as usize,
            max_bytes: limit(request.max_bytes, DEFAULT_FETCH_MAX_BYTES),
            partitions: request
                .partitions
                .into_iter()
                .map(|p| crate::replication::FetchPartition {
                    tp: TopicPartition::new(p.topic, p.partition),
                    offset: p.fetch_offset,
                    max_bytes: limit(p.max_bytes, DEFAULT_PARTITION_MAX_BYTES),
                })
                .collect(),
            in_file: false,
        };
        if params.partitions.is_empty() {
            return Err(status(
                ErrorCode::InvalidRequest,
                "a fetch must name at least one partition",
            ));
        }
        let results = self.replicas.fetch(&params).await;
        let partitions = results
            .into_iter()
            .map(|(tp, result)| {
                let read = result
                    .map_err(|e| (replica_error_code(&e), e.to_string()))
                    .and_then(|read| {
                        // Read into memory (not `in_file`): this does not touch the disk.
                        let records = read.data.records.into_bytes().map_err(|e| {
                            let error = format!("{tp}: cannot read the fetched batches: {e}");
                            (ErrorCode::StorageError, error)
                        })?;
                        Ok((read.high_watermark, read.data.log_start_offset, records))
                    });
                match read {
                    Ok((high_watermark, log_start_offset, records)) => {
                        self.metrics.fetched(&tp.topic, records.len() as u64);
                        proto::FetchedPartition {
                            topic: tp.topic,
                            partition: tp.partition,
                            error_code: ErrorCode::None.into(),
                            error_message: String::new(),
                            high_watermark,
                            log_start_offset,
                            records,
                        }
                    }
                    Err((code, error_message)) => proto::FetchedPartition {
                        error_code: code.into(),
                        error_message,
                        high_watermark: -1,
                        log_start_offset: -1,
                        records: Bytes::new(),
                        topic: tp.topic,
                        partition: tp.partition,
                    },
                }
            })
            .collect();
        timer.success();
        Ok(Response::new(proto::FetchResponse { partitions }))
    }

    async fn list_offsets(
        &self,
        request: Request<proto::ListOffsetsRequest>,
    ) -> Result<Response<proto::ListOffsetsResponse>, Status> {
        let mut timer = self.metrics.timer("list_offsets");
        let offsets = request
            .into_inner()
            .queries
            .into_iter()
            .map(|q| {
                let tp = TopicPartition::new(q.topic, q.partition);
                let query = match proto::OffsetSpec::try_from(q.spec) {
                    Ok(proto::OffsetSpec::Earliest) => Ok(OffsetQuery::Earliest),
                    Ok(proto::OffsetSpec::Latest) => Ok(OffsetQuery::Latest),
                    Ok(proto::OffsetSpec::Timestamp) => Ok(OffsetQuery::Timestamp(q.timestamp_ms)),
                    Err(_) => Err((
                        ErrorCode::InvalidRequest,
                        format!("unknown offset spec {}", q.spec),
                    )),
                };
                let answer = query.and_then(|query| {
                    self.replicas
                        .list_offset(&tp, query)
                        .map_err(|e| (replica_error_code(&e), e.to_string()))
                });
                match answer {
                    Ok((offset, timestamp)) => proto::PartitionOffset {
                        topic: tp.topic,
                        partition: tp.partition,
                        error_code: ErrorCode::None.into(),
                        error_message: String::new(),
                        offset,
                        timestamp_ms: timestamp.unwrap_or(-1),
                    },
                    Err((code, message)) => proto::PartitionOffset {
                        topic: tp.topic,
                        partition: tp.partition,
                        error_code: code.into(),
                        error_message: message,
                        offset: -1,
                        timestamp_ms: -1,
                    },
                }
            })
            .collect();
        timer.success();
        Ok(Response::new(proto::ListOffsetsResponse { offsets }))
    }

    async fn metadata(
        &self,
        request: Request<proto::MetadataRequest>,
    ) -> Result<Response<proto::MetadataResponse>, Status> {
        let mut timer = self.metrics.timer("metadata");
        let snapshot = self.replicas.metadata();
        let response = metadata_response(&snapshot, &request.into_inner().topics);
        timer.success();
        Ok(Response::new(response))
    }
}

fn metadata_response(snapshot: &MetadataSnapshot, wanted: &[String]) -> proto::MetadataResponse {
    let describe = |topic: &TopicRecord| proto::TopicMetadata {
        name: topic.name.clone(),
        error_code: ErrorCode::None.into(),
        error_message: String::new(),
        topic_id: topic.id.to_string(),
        partitions: crate::protocol::grpc::convert::partitions_to_proto(topic),
        internal: topic.is_internal(),
    };
    let topics = if wanted.is_empty() {
        snapshot.topics.values().map(describe).collect()
    } else {
        wanted
            .iter()
            .map(|name| match snapshot.topics.get(name) {
                Some(topic) => describe(topic),
                None => proto::TopicMetadata {
                    name: name.clone(),
                    error_code: ErrorCode::UnknownTopicOrPartition.into(),
                    error_message: format!("unknown topic '{name}'; create it with `tributary topic create {name} --partitions N`"),
                    ..Default::default()
                },
            })
            .collect()
    };
    proto::MetadataResponse {
        brokers: snapshot
            .brokers
            .values()
            .map(crate::protocol::grpc::convert::broker_to_proto)
            .collect(),
        controller_id: snapshot.controller_id,
        topics,
    }
}

/// Client produce requests may not write internal topics.
fn refuse_internal(topic: &str) -> Result<(), Status> {
    if topic.starts_with("__") {
        return Err(status(
            ErrorCode::InvalidTopic,
            format!("'{topic}' is an internal topic; only the brokers write to it"),
        ));
    }
    Ok(())
}
