//! The `Controller` gRPC service: broker sessions, ISR proposals, controlled shutdown, topic
//! changes and producer ids, as thin adapters over the controller core.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::{
    Controller, IsrProposal, IsrRejection, MetadataStore, Registration, ScaleDecision,
};
use crate::metadata::MetadataSnapshot;
use crate::protocol::grpc::convert;
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::status::status;
use crate::protocol::grpc::transport::{CLUSTER_HEADER, MAX_MESSAGE_BYTES};

/// Finds the controller of the cluster a request names.
pub trait ControllerDirectory: Send + Sync + 'static {
    type Store: MetadataStore;
    /// The controller of `cluster` (None: the request named none), or the status to answer.
    fn find(&self, cluster: Option<&str>) -> Result<Arc<Controller<Self::Store>>, Status>;
}

/// One controller serves every request, whatever cluster it names.
impl<S: MetadataStore> ControllerDirectory for Arc<Controller<S>> {
    type Store = S;

    fn find(&self, _cluster: Option<&str>) -> Result<Arc<Controller<S>>, Status> {
        Ok(self.clone())
    }
}

pub struct ControllerService<D> {
    directory: D,
}

/// The gRPC service of the controllers in `directory`.
pub fn controller_server<D: ControllerDirectory>(
    directory: D,
) -> proto::controller_server::ControllerServer<ControllerService<D>> {
    proto::controller_server::ControllerServer::new(ControllerService { directory })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl<D: ControllerDirectory> ControllerService<D> {
    fn controller<T>(&self, request: &Request<T>) -> Result<Arc<Controller<D::Store>>, Status> {
        let cluster = request
            .metadata()
            .get(CLUSTER_HEADER)
            .map(|v| {
                v.to_str().map_err(|_| {
                    status(
                        ErrorCode::InvalidRequest,
                        format!("the {CLUSTER_HEADER} header is not text"),
                    )
                })
            })
            .transpose()?;
        self.directory.find(cluster)
    }
}

fn scale_to_proto(desired: i32, decision: &ScaleDecision) -> proto::ScaleStatus {
    proto::ScaleStatus {
        brokers: desired.max(0) as u32,
        run: decision.run.max(0) as u32,
        phase: decision.phase.name().to_string(),
        message: decision.message.clone(),
    }
}

fn session_response(snapshot: &MetadataSnapshot) -> proto::SessionResponse {
    proto::SessionResponse {
        controller_epoch: snapshot.controller_epoch,
        metadata: Some(convert::snapshot_to_proto(snapshot)),
    }
}

#[tonic::async_trait]
impl<D: ControllerDirectory> proto::controller_server::Controller for ControllerService<D> {
    type SessionStream = ReceiverStream<Result<proto::SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<proto::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let controller = self.controller(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.and_then(|m| m.kind);
        let Some(proto::session_request::Kind::Register(registration)) = first else {
            return Err(status(
                ErrorCode::InvalidRequest,
                "a session starts with the broker's registration",
            ));
        };
        let broker = registration.broker_id;
        let info = convert::broker_from_proto(&proto::BrokerInfo {
            id: broker,
            host: registration.host,
            port: registration.port,
            rack: registration.rack,
            kafka_port: registration.kafka_port,
        });
        let session = controller
            .register_broker(Registration {
                broker: info,
                incarnation: registration.incarnation,
            })
            .await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut updates = controller.subscribe();
            let first = updates.borrow_and_update().clone();
            let mut open = tx.send(Ok(session_response(&first))).await.is_ok();
            while open {
                tokio::select! {
                    () = controller.closed() => {
                        let closed = crate::controller::ControllerError::Closed;
                        let _ = tx.send(Err(status(ErrorCode::BrokerNotAvailable, closed.to_string()))).await;
                        return;
                    }
                    changed = updates.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snapshot = updates.borrow_and_update().clone();
                        open = tx.send(Ok(session_response(&snapshot))).await.is_ok();
                    }
                    message = inbound.message() => match message {
                        Ok(Some(proto::SessionRequest { kind: Some(proto::session_request::Kind::Heartbeat(beat)) })) => {
                            let beaten = controller.heartbeat(broker, session).await;
                            let reported = match beaten {
                                Ok(()) => controller.report_replica_sizes(broker, convert::replica_sizes_from_proto(beat.replica_sizes)).await,
                                Err(error) => Err(error),
                            };
                            if let Err(error) = reported {
                                let _ = tx.send(Err(status(ErrorCode::BrokerNotAvailable, error.to_string()))).await;
                                break;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            if let Err(error) = controller.end_session(broker, session).await {
                tracing::error!(broker, %error, "could not end the session");
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn alter_isr(
        &self,
        request: Request<proto::AlterIsrRequest>,
    ) -> Result<Response<proto::AlterIsrResponse>, Status> {
        let controller = self.controller(&request)?;
        let request = request.into_inner();
        let proposals: Vec<IsrProposal> = request
            .partitions
            .iter()
            .map(|p| IsrProposal {
                topic: p.topic.clone(),
                partition: p.partition,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: p.new_isr.clone(),
            })
            .collect();
        let outcomes = controller
            .alter_isr(request.broker_id, proposals.clone())
            .await?;
        let results = proposals
            .into_iter()
            .zip(outcomes)
            .map(|(p, (verdict, state))| {
                let (error_code, error_message) = match verdict {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(rejection) => {
                        let code = match rejection {
                            IsrRejection::UnknownPartition => ErrorCode::UnknownTopicOrPartition,
                            IsrRejection::NotLeader(_) => ErrorCode::NotLeaderOrFollower,
                            IsrRejection::Stale { .. } => ErrorCode::FencedLeaderEpoch,
                            IsrRejection::Invalid(_) => ErrorCode::InvalidRequest,
                        };
                        (code, rejection.to_string())
                    }
                };
                proto::AlterIsrResult {
                    error_code: error_code.into(),
                    error_message,
                    state: state
                        .as_ref()
                        .map(|s| convert::partition_to_proto(p.partition, s)),
                    topic: p.topic,
                    partition: p.partition,
                }
            })
            .collect();
        Ok(Response::new(proto::AlterIsrResponse { results }))
    }

    async fn controlled_shutdown(
        &self,
        request: Request<proto::ControlledShutdownRequest>,
    ) -> Result<Response<proto::ControlledShutdownResponse>, Status> {
        let controller = self.controller(&request)?;
        let remaining = controller
            .controlled_shutdown(request.into_inner().broker_id)
            .await?;
        Ok(Response::new(proto::ControlledShutdownResponse {
            remaining_leaderships: remaining,
        }))
    }

    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let controller = self.controller(&request)?;
        let request = request.into_inner();
        let validate_only = request.validate_only;
        let (record, _) = controller
            .create_topic(convert::new_topic_from_request(request), validate_only)
            .await?;
        Ok(Response::new(convert::topic_description(&record)))
    }

    async fn create_offsets_topic(
        &self,
        request: Request<proto::CreateOffsetsTopicRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let record = self.controller(&request)?.create_offsets_topic().await?;
        Ok(Response::new(convert::topic_description(&record)))
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        self.controller(&request)?
            .delete_topic(&request.into_inner().name)
            .await?;
        Ok(Response::new(proto::DeleteTopicResponse {}))
    }

    async fn create_partitions(
        &self,
        request: Request<proto::CreatePartitionsRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let controller = self.controller(&request)?;
        let request = request.into_inner();
        let (record, _) = controller
            .create_partitions(&request.topic, request.partitions)
            .await?;
        Ok(Response::new(convert::topic_description(&record)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<proto::AlterTopicConfigRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let controller = self.controller(&request)?;
        let request = request.into_inner();
        let (record, _) = controller
            .alter_topic_config(&request.topic, request.config.into_iter().collect())
            .await?;
        Ok(Response::new(convert::topic_description(&record)))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<proto::AllocateProducerIdsRequest>,
    ) -> Result<Response<proto::AllocateProducerIdsResponse>, Status> {
        let controller = self.controller(&request)?;
        let (first_id, count) = controller
            .allocate_producer_ids(request.into_inner().broker_id)
            .await?;
        Ok(Response::new(proto::AllocateProducerIdsResponse {
            first_id,
            count,
        }))
    }

    async fn rebalance(
        &self,
        request: Request<proto::RebalanceRequest>,
    ) -> Result<Response<proto::RebalancePlan>, Status> {
        let controller = self.controller(&request)?;
        let plan = controller.rebalance(request.into_inner().dry_run).await?;
        Ok(Response::new(convert::plan_to_proto(&plan)))
    }

    async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        let controller = self.controller(&request)?;
        let plan = controller.rebalance_status().await?;
        let cordoned = controller.cordoned().await?;
        let scale = controller
            .scale_status()
            .await?
            .map(|(desired, decision)| scale_to_proto(desired, &decision));
        let snapshot = controller.snapshot();
        Ok(Response::new(convert::cluster_status(
            &snapshot, &cordoned, &plan, scale,
        )))
    }

    async fn scale(
        &self,
        request: Request<proto::ScaleRequest>,
    ) -> Result<Response<proto::ScaleStatus>, Status> {
        let controller = self.controller(&request)?;
        let brokers = request.into_inner().brokers;
        let desired = i32::try_from(brokers).map_err(|_| {
            Status::invalid_argument(format!("cannot scale to {brokers} brokers: too many"))
        })?;
        let decision = controller.scale(desired).await?;
        Ok(Response::new(scale_to_proto(desired, &decision)))
    }

    async fn cordon(
        &self,
        request: Request<proto::CordonRequest>,
    ) -> Result<Response<proto::CordonResponse>, Status> {
        let controller = self.controller(&request)?;
        let brokers = request.into_inner().broker_ids.into_iter().collect();
        controller.cordon(brokers).await?;
        Ok(Response::new(proto::CordonResponse {}))
    }
}
