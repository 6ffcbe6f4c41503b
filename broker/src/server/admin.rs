//! The `Admin` gRPC service: topic creation, deletion, listing and description. Changes go
//! to the controller (in this process for a standalone broker, else over the network); the
//! answer comes once this broker has applied them, so a topic is ready to use when
//! `create` returns.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::controller_link::ControllerLink;
use super::metrics::Metrics;
use crate::protocol::grpc::convert::{self, topic_description};
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::status::status;
use crate::replication::ReplicaManager;

/// How long an admin change may take to reach this broker before the request fails.
const APPLY_WAIT: Duration = Duration::from_secs(10);

pub struct AdminService {
    pub(super) controller: ControllerLink,
    pub(super) replicas: Arc<ReplicaManager>,
    pub(super) metrics: Arc<Metrics>,
}

fn not_applied() -> Status {
    status(
        ErrorCode::RequestTimedOut,
        "the change was made but this broker has not learned of it yet; check again shortly",
    )
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let mut timer = self.metrics.timer("create_topic");
        let request = request.into_inner();
        let validate_only = request.validate_only;
        let topic = convert::new_topic_from_request(request);
        let record = self.controller.create_topic(topic, validate_only).await?;
        if !validate_only {
            let (name, id) = (record.name.clone(), record.id);
            let applied = self
                .replicas
                .wait_for_metadata(APPLY_WAIT, |m| {
                    m.topics.get(&name).is_some_and(|t| t.id == id)
                })
                .await;
            if !applied {
                return Err(not_applied());
            }
        }
        timer.success();
        Ok(Response::new(topic_description(&record)))
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        let mut timer = self.metrics.timer("delete_topic");
        let name = request.into_inner().name;
        self.controller.delete_topic(&name).await?;
        if !self
            .replicas
            .wait_for_metadata(APPLY_WAIT, |m| !m.topics.contains_key(&name))
            .await
        {
            return Err(not_applied());
        }
        timer.success();
        Ok(Response::new(proto::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        let mut timer = self.metrics.timer("list_topics");
        let include_internal = request.into_inner().include_internal;
        let topics = self
            .replicas
            .metadata()
            .topics
            .values()
            .filter(|t| include_internal || !t.is_internal())
            .map(|t| proto::TopicSummary {
                name: t.name.clone(),
                partitions: t.partitions.len() as u32,
                replication_factor: t.replication_factor() as u32,
                internal: t.is_internal(),
            })
            .collect();
        timer.success();
        Ok(Response::new(proto::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<proto::DescribeTopicRequest>,
    ) -> Result<Response<proto::TopicDescription>, Status> {
        let mut timer = self.metrics.timer("describe_topic");
        let name = request.into_inner().name;
        let snapshot = self.replicas.metadata();
        let topic = snapshot.topics.get(&name).ok_or_else(|| {
            status(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "unknown topic '{name}'; `tributary topic list` shows the topics that exist"
                ),
            )
        })?;
        timer.success();
        Ok(Response::new(topic_description(topic)))
    }
}
