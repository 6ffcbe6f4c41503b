//! The `Group` gRPC service: consumer-group requests, converted for the group coordinator.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::offsets_topic::OffsetsTopic;
use crate::TopicPartition;
use crate::group::state::Heartbeat;
use crate::group::{GroupCoordinator, GroupError, OffsetCommit, validate_group_id};
use crate::protocol::grpc::convert;
use crate::protocol::grpc::proto;
use crate::replication::ReplicaManager;

pub struct GroupService {
    pub(super) coordinator: Arc<GroupCoordinator>,
    pub(super) replicas: Arc<ReplicaManager>,
    pub(super) offsets_topic: OffsetsTopic,
}

#[tonic::async_trait]
impl proto::group_server::Group for GroupService {
    async fn find_coordinator(
        &self,
        request: Request<proto::FindCoordinatorRequest>,
    ) -> Result<Response<proto::FindCoordinatorResponse>, Status> {
        let group = request.into_inner().group_id;
        let tp = match self.coordinator.offsets_partition(&group) {
            Ok(tp) => tp,
            Err(error @ GroupError::CoordinatorNotAvailable { .. }) => {
                self.offsets_topic.create();
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        let metadata = self.replicas.metadata();
        let leader = metadata.partition(&tp).map_or(-1, |(_, p)| p.leader);
        let Some(broker) = metadata.brokers.get(&leader) else {
            return Err(GroupError::CoordinatorNotAvailable {
                group,
                why: format!("{tp} has no leader right now"),
            }
            .into());
        };
        Ok(Response::new(proto::FindCoordinatorResponse {
            broker_id: broker.id,
            host: broker.host.clone(),
            port: u32::from(broker.port),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::GroupHeartbeatRequest>,
    ) -> Result<Response<proto::GroupHeartbeatResponse>, Status> {
        let r = request.into_inner();
        let heartbeat = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            client_id: r.client_id,
            subscribed: r.subscribed_topics.into_iter().collect(),
            owned: convert::group_partitions_from_proto(r.owned),
            session_timeout: Duration::from_millis(u64::from(r.session_timeout_ms)),
            rebalance_timeout: Duration::from_millis(u64::from(r.rebalance_timeout_ms)),
        };
        let answer = self.coordinator.heartbeat(&r.group_id, heartbeat).await?;
        Ok(Response::new(proto::GroupHeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            heartbeat_interval_ms: answer.heartbeat_interval.as_millis() as u32,
            assignment: convert::group_partitions_to_proto(&answer.assignment),
        }))
    }

    async fn offset_commit(
        &self,
        request: Request<proto::OffsetCommitRequest>,
    ) -> Result<Response<proto::OffsetCommitResponse>, Status> {
        let r = request.into_inner();
        let offsets = r
            .offsets
            .into_iter()
            .map(|o| OffsetCommit {
                tp: TopicPartition::new(o.topic, o.partition),
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.coordinator
            .commit(&r.group_id, &r.member_id, r.member_epoch, offsets)
            .await?;
        Ok(Response::new(proto::OffsetCommitResponse {}))
    }

    async fn offset_fetch(
        &self,
        request: Request<proto::OffsetFetchRequest>,
    ) -> Result<Response<proto::OffsetFetchResponse>, Status> {
        let r = request.into_inner();
        let partitions: Vec<TopicPartition> = convert::group_partitions_from_proto(r.partitions)
            .into_iter()
            .collect();
        let committed = self.coordinator.committed(&r.group_id, &partitions).await?;
        Ok(Response::new(proto::OffsetFetchResponse {
            offsets: committed
                .into_iter()
                .map(|(tp, c)| proto::CommittedOffset {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset: c.offset,
                    metadata: c.metadata,
                })
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let broker = self.replicas.broker_id();
        let groups = self.coordinator.list().await;
        Ok(Response::new(proto::ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|g| proto::GroupListing {
                    group_id: g.group_id,
                    state: g.state.as_str().into(),
                    members: g.members.len() as u32,
                    coordinator: broker,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        let group = request.into_inner().group_id;
        validate_group_id(&group)?;
        let g = self.coordinator.describe(&group).await?;
        Ok(Response::new(proto::DescribeGroupResponse {
            group_id: g.group_id,
            state: g.state.as_str().into(),
            group_epoch: g.epoch,
            coordinator: self.replicas.broker_id(),
            members: g
                .members
                .into_iter()
                .map(|m| proto::GroupMember {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    member_epoch: m.epoch,
                    subscribed_topics: m.subscribed,
                    assigned: convert::group_partitions_to_proto(&m.assigned),
                    revoking: convert::group_partitions_to_proto(&m.revoking),
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|(tp, offset)| proto::CommittedOffset {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset,
                    metadata: String::new(),
                })
                .collect(),
        }))
    }
}
