//! A broker's line to the controller: in-process for a standalone broker, over gRPC for a
//! broker in a cluster. Either way the broker registers, heartbeats, receives every metadata
//! snapshot and applies it, and sends topic changes, ISR proposals, controlled shutdown and
//! producer-id requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{BrokerError, identity};
use crate::controller::{Controller, FileStore, IsrProposal, Registration};
use crate::metadata::{MetadataSnapshot, NewTopic, PartitionRecord, TopicRecord};
use crate::protocol::grpc::convert;
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::status::status;
use crate::protocol::grpc::transport::{self, ClusterHeader};
use crate::replication::{IsrChange, ReplicaManager};

/// The controller's answer to one ISR proposal: the proposal, the verdict, and the
/// partition as it now is.
pub type IsrAnswer = (IsrChange, Result<(), String>, Option<PartitionRecord>);

type ControllerClient =
    proto::controller_client::ControllerClient<InterceptedService<Channel, ClusterHeader>>;

#[derive(Clone)]
pub enum ControllerLink {
    /// A standalone broker's own controller.
    Local(Arc<Controller<FileStore>>),
    Remote {
        address: String,
        client: Box<ControllerClient>,
    },
}

impl std::fmt::Debug for ControllerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => f.write_str("ControllerLink::Local"),
            Self::Remote { address, .. } => write!(f, "ControllerLink::Remote({address})"),
        }
    }
}

fn unreachable(address: &str, status: Status) -> Status {
    if crate::protocol::grpc::status::error_code_of(&status).is_some() {
        return status;
    }
    status_unavailable(format!(
        "the controller at {address} is not reachable ({}); retry shortly",
        status.message()
    ))
}

fn status_unavailable(message: String) -> Status {
    status(ErrorCode::BrokerNotAvailable, message)
}

impl ControllerLink {
    /// The controller at `address`; `cluster` names this broker's cluster to a controller
    /// host that serves several.
    pub fn remote(address: &str, cluster: Option<&str>) -> Result<Self, String> {
        let header = ClusterHeader::new(cluster)?;
        let channel = transport::endpoint(address)
            .map_err(|e| format!("invalid controller address '{address}': {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .connect_lazy();
        Ok(Self::Remote {
            address: address.to_string(),
            client: Box::new(
                proto::controller_client::ControllerClient::with_interceptor(channel, header),
            ),
        })
    }

    pub async fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<TopicRecord, Status> {
        match self {
            Self::Local(controller) => Ok(controller.create_topic(topic, validate_only).await?.0),
            Self::Remote { address, client } => {
                let request = convert::create_topic_request(topic, validate_only);
                let description = client
                    .clone()
                    .create_topic(request)
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                convert::topic_from_description(description)
                    .map_err(|e| status(ErrorCode::Unknown, e))
            }
        }
    }

    /// Creates `__consumer_offsets` unless it exists.
    pub async fn create_offsets_topic(&self) -> Result<TopicRecord, Status> {
        match self {
            Self::Local(controller) => Ok(controller.create_offsets_topic().await?),
            Self::Remote { address, client } => {
                let description = client
                    .clone()
                    .create_offsets_topic(proto::CreateOffsetsTopicRequest {})
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                convert::topic_from_description(description)
                    .map_err(|e| status(ErrorCode::Unknown, e))
            }
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), Status> {
        match self {
            Self::Local(controller) => controller
                .delete_topic(name)
                .await
                .map(|_| ())
                .map_err(Status::from),
            Self::Remote { address, client } => {
                let request = proto::DeleteTopicRequest {
                    name: name.to_string(),
                };
                client
                    .clone()
                    .delete_topic(request)
                    .await
                    .map_err(|s| unreachable(address, s))?;
                Ok(())
            }
        }
    }

    /// Grows `topic` to `partitions` partitions.
    pub async fn create_partitions(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicRecord, Status> {
        match self {
            Self::Local(controller) => Ok(controller.create_partitions(topic, partitions).await?.0),
            Self::Remote { address, client } => {
                let request = proto::CreatePartitionsRequest {
                    topic: topic.to_string(),
                    partitions,
                };
                let description = client
                    .clone()
                    .create_partitions(request)
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                convert::topic_from_description(description)
                    .map_err(|e| status(ErrorCode::Unknown, e))
            }
        }
    }

    /// Replaces `topic`'s configuration overrides with `config`.
    pub async fn alter_topic_config(
        &self,
        topic: &str,
        config: BTreeMap<String, String>,
    ) -> Result<TopicRecord, Status> {
        match self {
            Self::Local(controller) => Ok(controller.alter_topic_config(topic, config).await?.0),
            Self::Remote { address, client } => {
                let request = proto::AlterTopicConfigRequest {
                    topic: topic.to_string(),
                    config: config.into_iter().collect(),
                };
                let description = client
                    .clone()
                    .alter_topic_config(request)
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                convert::topic_from_description(description)
                    .map_err(|e| status(ErrorCode::Unknown, e))
            }
        }
    }

    pub async fn alter_isr(
        &self,
        broker: i32,
        changes: Vec<IsrChange>,
    ) -> Result<Vec<IsrAnswer>, Status> {
        match self {
            Self::Local(controller) => {
                let proposals = changes
                    .iter()
                    .map(|c| IsrProposal {
                        topic: c.tp.topic.clone(),
                        partition: c.tp.partition,
                        leader_epoch: c.leader_epoch,
                        partition_epoch: c.partition_epoch,
                        new_isr: c.new_isr.clone(),
                    })
                    .collect();
                let outcomes = controller.alter_isr(broker, proposals).await?;
                Ok(changes
                    .into_iter()
                    .zip(outcomes)
                    .map(|(c, (verdict, state))| (c, verdict.map_err(|e| e.to_string()), state))
                    .collect())
            }
            Self::Remote { address, client } => {
                let request = proto::AlterIsrRequest {
                    broker_id: broker,
                    partitions: changes
                        .iter()
                        .map(|c| proto::AlterIsrPartition {
                            topic: c.tp.topic.clone(),
                            partition: c.tp.partition,
                            leader_epoch: c.leader_epoch,
                            partition_epoch: c.partition_epoch,
                            new_isr: c.new_isr.clone(),
                        })
                        .collect(),
                };
                let response = client
                    .clone()
                    .alter_isr(request)
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                if response.results.len() != changes.len() {
                    return Err(Status::internal(format!(
                        "the controller at {address} answered {} of {} ISR proposals",
                        response.results.len(),
                        changes.len()
                    )));
                }
                Ok(changes
                    .into_iter()
                    .zip(response.results)
                    .map(|(change, r)| {
                        let verdict = if r.error_code == i32::from(ErrorCode::None) {
                            Ok(())
                        } else {
                            Err(r.error_message)
                        };
                        (
                            change,
                            verdict,
                            r.state.as_ref().map(convert::partition_from_proto),
                        )
                    })
                    .collect())
            }
        }
    }

    pub async fn controlled_shutdown(&self, broker: i32) -> Result<u32, Status> {
        match self {
            Self::Local(controller) => Ok(controller.controlled_shutdown(broker).await?),
            Self::Remote { address, client } => Ok(client
                .clone()
                .controlled_shutdown(proto::ControlledShutdownRequest { broker_id: broker })
                .await
                .map_err(|s| unreachable(address, s))?
                .into_inner()
                .remaining_leaderships),
        }
    }

    pub async fn allocate_producer_ids(&self, broker: i32) -> Result<(i64, u32), Status> {
        match self {
            Self::Local(controller) => Ok(controller.allocate_producer_ids(broker).await?),
            Self::Remote { address, client } => {
                let block = client
                    .clone()
                    .allocate_producer_ids(proto::AllocateProducerIdsRequest { broker_id: broker })
                    .await
                    .map_err(|s| unreachable(address, s))?
                    .into_inner();
                Ok((block.first_id, block.count))
            }
        }
    }

    /// Holds this broker's session until `stop`: registers, heartbeats every `heartbeat`,
    /// and applies every snapshot the controller sends. A lost session is re-established.
    /// Ends with an error when the controller's cluster is not the one whose logs the data
    /// directory holds.
    pub async fn run_session(
        self,
        registration: Registration,
        replicas: Arc<ReplicaManager>,
        heartbeat: Duration,
        stop: CancellationToken,
    ) -> Result<(), BrokerError> {
        match self {
            Self::Local(controller) => {
                run_local_session(controller, registration, replicas, heartbeat, stop).await
            }
            Self::Remote { address, client } => {
                run_remote_session(address, *client, registration, replicas, heartbeat, stop).await
            }
        }
    }
}

/// Applies a snapshot from the controller, once the data directory is known to hold this
/// cluster's logs (see `identity::claim_cluster`): metadata of another cluster would
/// delete them as logs of topics that no longer exist.
async fn apply(
    replicas: &Arc<ReplicaManager>,
    snapshot: Arc<MetadataSnapshot>,
) -> Result<(), BrokerError> {
    let replicas = replicas.clone();
    let applied = tokio::task::spawn_blocking(move || {
        // The metadata applied so far came from this cluster: its id is claimed already.
        if replicas.metadata().cluster_id != snapshot.cluster_id {
            identity::claim_cluster(replicas.logs().data_dir(), &snapshot.cluster_id)?;
        }
        replicas.apply_metadata(snapshot);
        Ok(())
    })
    .await;
    match applied {
        Ok(claimed) => claimed,
        Err(_) => {
            tracing::error!("applying metadata panicked");
            Ok(())
        }
    }
}

async fn run_local_session(
    controller: Arc<Controller<FileStore>>,
    registration: Registration,
    replicas: Arc<ReplicaManager>,
    heartbeat: Duration,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let broker = registration.broker.id;
    let mut updates = controller.subscribe();
    let mut session = None;
    let mut heartbeats = tokio::time::interval(heartbeat);
    let mut expiry = tokio::time::interval(crate::controller::SESSION_CHECK_INTERVAL);
    let mut changed = true;
    loop {
        if session.is_none() {
            match controller.register_broker(registration.clone()).await {
                Ok(id) => session = Some(id),
                Err(error) => tracing::error!(%error, "could not register with the controller"),
            }
        }
        if std::mem::take(&mut changed) {
            let snapshot = updates.borrow_and_update().clone();
            apply(&replicas, snapshot).await?;
        }
        tokio::select! {
            update = updates.changed() => {
                if update.is_err() {
                    return Ok(());
                }
                changed = true;
            }
            _ = heartbeats.tick() => {
                if let Some(id) = session {
                    let beaten = match controller.heartbeat(broker, id).await {
                        Ok(()) => controller.report_replica_sizes(broker, replicas.replica_sizes()).await,
                        Err(error) => Err(error),
                    };
                    if beaten.is_err() {
                        session = None;
                    }
                }
            }
            _ = expiry.tick() => {
                if let Err(error) = controller.tick().await {
                    tracing::error!(%error, "the controller's periodic work (sessions, rebalance) failed");
                }
            }
            () = stop.cancelled() => return Ok(()),
        }
    }
}

async fn run_remote_session(
    address: String,
    mut client: ControllerClient,
    registration: Registration,
    replicas: Arc<ReplicaManager>,
    heartbeat: Duration,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let broker = registration.broker.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let (requests, outgoing) = mpsc::channel(4);
        let register = proto::SessionRequest {
            kind: Some(proto::session_request::Kind::Register(
                proto::BrokerRegistration {
                    broker_id: broker.id,
                    host: broker.host.clone(),
                    port: u32::from(broker.port),
                    rack: broker.rack.clone().unwrap_or_default(),
                    incarnation: registration.incarnation.clone(),
                    kafka_port: u32::from(broker.kafka_port),
                },
            )),
        };
        let _ = requests.send(register).await;
        let opened = tokio::select! {
            opened = client.session(ReceiverStream::new(outgoing)) => opened,
            () = stop.cancelled() => return Ok(()),
        };
        let mut responses = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(controller = %address, error = %status.message(), "cannot open a session with the controller; retrying");
                tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return Ok(()) }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::info!(controller = %address, "session with the controller established");
        backoff = Duration::from_millis(100);
        let beats = requests.clone();
        let sizes = replicas.clone();
        let beating = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(heartbeat);
            loop {
                ticker.tick().await;
                let beat = proto::SessionRequest {
                    kind: Some(proto::session_request::Kind::Heartbeat(proto::Heartbeat {
                        broker_id: broker.id,
                        replica_sizes: convert::replica_sizes_to_proto(sizes.replica_sizes()),
                    })),
                };
                if beats.send(beat).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let message = tokio::select! {
                message = responses.message() => message,
                () = stop.cancelled() => {
                    beating.abort();
                    return Ok(());
                }
            };
            match message {
                Ok(Some(response)) => {
                    if let Some(metadata) = response.metadata {
                        match convert::snapshot_from_proto(metadata) {
                            Ok(snapshot) => {
                                if let Err(refused) = apply(&replicas, Arc::new(snapshot)).await {
                                    beating.abort();
                                    return Err(refused);
                                }
                            }
                            Err(error) => {
                                tracing::error!(%error, "the controller sent metadata that does not parse")
                            }
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!(controller = %address, "the controller ended the session; registering again");
                    break;
                }
                Err(status) => {
                    tracing::warn!(controller = %address, error = %status.message(), "session with the controller lost; reconnecting");
                    break;
                }
            }
        }
        beating.abort();
        tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return Ok(()) }
    }
}
