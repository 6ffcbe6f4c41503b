//! The `Replication` gRPC service: the leader's side of followers' fetch streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::replica_error_code;
use crate::TopicPartition;
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::replication::{ReplicaFetchPartition, ReplicaManager, ReplicaRead};

pub struct ReplicationService {
    pub(super) replicas: Arc<ReplicaManager>,
}

#[tonic::async_trait]
impl proto::replication_server::Replication for ReplicationService {
    type ReplicaFetchStream = ReceiverStream<Result<proto::ReplicaFetchResponse, Status>>;

    async fn replica_fetch(
        &self,
        request: Request<Streaming<proto::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let replicas = self.replicas.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                let partitions: Vec<ReplicaFetchPartition> = request
                    .partitions
                    .into_iter()
                    .map(|p| ReplicaFetchPartition {
                        tp: TopicPartition::new(p.topic, p.partition),
                        fetch_offset: p.fetch_offset,
                        leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                        max_bytes: p.max_bytes.max(1) as usize,
                        high_watermark: p.high_watermark,
                    })
                    .collect();
                let results = replicas
                    .replica_fetch(
                        request.replica_id,
                        &partitions,
                        Duration::from_millis(u64::from(request.max_wait_ms)),
                        request.min_bytes as usize,
                        request.max_bytes.max(1) as usize,
                    )
                    .await;
                let response = proto::ReplicaFetchResponse {
                    partitions: results.into_iter().map(|(tp, r)| answer(tp, r)).collect(),
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn answer(
    tp: TopicPartition,
    result: Result<ReplicaRead, crate::replication::ReplicaError>,
) -> proto::ReplicaFetchedPartition {
    let mut answer = proto::ReplicaFetchedPartition {
        topic: tp.topic,
        partition: tp.partition,
        error_code: ErrorCode::None.into(),
        error_message: String::new(),
        high_watermark: -1,
        log_start_offset: -1,
        log_end_offset: -1,
        diverging_epoch: None,
        records: Bytes::new(),
    };
    match result {
        Ok(ReplicaRead::Data {
            records,
            high_watermark,
            log_start_offset,
            log_end_offset,
        }) => {
            answer.records = records;
            (
                answer.high_watermark,
                answer.log_start_offset,
                answer.log_end_offset,
            ) = (high_watermark, log_start_offset, log_end_offset);
        }
        Ok(ReplicaRead::Diverging {
            epoch,
            end_offset,
            high_watermark,
            log_start_offset,
            log_end_offset,
        }) => {
            answer.diverging_epoch = Some(proto::DivergingEpoch { epoch, end_offset });
            (
                answer.high_watermark,
                answer.log_start_offset,
                answer.log_end_offset,
            ) = (high_watermark, log_start_offset, log_end_offset);
        }
        Err(error) => {
            if let crate::replication::ReplicaError::Log(crate::log::LogError::OffsetOutOfRange {
                log_start,
                log_end,
                ..
            }) = &error
            {
                (answer.log_start_offset, answer.log_end_offset) = (*log_start, *log_end);
            }
            answer.error_code = replica_error_code(&error).into();
            answer.error_message = error.to_string();
        }
    }
    answer
}
