//! Consumer groups over the Kafka protocol, on the same coordinator as Tributary's own
//! groups: FindCoordinator, the classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, with the assignment computed by the clients' own assignors), committed
//! offsets (OffsetCommit, OffsetFetch), ListGroups and DescribeGroups.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes};

use super::errors::group_error;
use super::{KafkaService, topic_partition};
use crate::TopicPartition;
use crate::group::classic::JoinRequest;
use crate::group::state::Heartbeat;
use crate::group::{GroupError, JoinAnswer, OffsetCommit};
use crate::protocol::kafka::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use crate::protocol::kafka::messages::find_coordinator_response::Coordinator;
use crate::protocol::kafka::messages::join_group_request;
use crate::protocol::kafka::messages::join_group_response::JoinGroupResponseMember;
use crate::protocol::kafka::messages::leave_group_response::MemberResponse;
use crate::protocol::kafka::messages::list_groups_response::ListedGroup;
use crate::protocol::kafka::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use crate::protocol::kafka::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use crate::protocol::kafka::messages::{
    BrokerId, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, ConsumerProtocolSubscription,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use crate::protocol::kafka::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    consumer_group_describe_response, consumer_group_heartbeat_response, delete_groups_response,
    offset_delete_response,
};
use crate::protocol::kafka::{Decodable, Message};
use crate::protocol::kafka::{ResponseError, StrBytes};

/// FindCoordinator's key type for consumer groups (1 is transactions, 2 share groups).
const GROUP_KEY: i8 = 0;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A committed offset as OffsetFetch answers it.
struct Fetched {
    partition: i32,
    offset: i64,
    metadata: String,
}

/// A topic's committed offsets.
type TopicOffsets = (String, Vec<Fetched>);

/// Where the coordinator of `key` is: broker id, host and Kafka port, or the error.
struct Found {
    node: i32,
    host: String,
    port: i32,
    error: i16,
    message: Option<String>,
}

impl KafkaService {
    fn find(&self, key: &str, key_type: i8) -> Found {
        let refused = |error: ResponseError, message: String| Found {
            node: -1,
            host: String::new(),
            port: -1,
            error: error.code(),
            message: Some(message),
        };
        if key_type != GROUP_KEY {
            return refused(
                ResponseError::InvalidRequest,
                "Tributary has consumer-group coordinators only; transactions and share groups are not supported".into(),
            );
        }
        let tp = match self.groups.offsets_partition(key) {
            Ok(tp) => tp,
            Err(error) => {
                if matches!(error, GroupError::CoordinatorNotAvailable { .. }) {
                    self.offsets_topic.create();
                }
                return refused(
                    ResponseError::try_from_code(group_error(&error))
                        .unwrap_or(ResponseError::CoordinatorNotAvailable),
                    error.to_string(),
                );
            }
        };
        let metadata = self.replicas.metadata();
        let leader = metadata.partition(&tp).map_or(-1, |(_, p)| p.leader);
        match metadata.brokers.get(&leader).filter(|b| b.kafka_port != 0) {
            Some(broker) => Found {
                node: broker.id,
                host: broker.host.clone(),
                port: i32::from(broker.kafka_port),
                error: 0,
                message: None,
            },
            None => refused(
                ResponseError::CoordinatorNotAvailable,
                format!("{tp}, which holds the group, has no leader right now"),
            ),
        }
    }

    pub(super) async fn find_coordinator(
        &self,
        version: i16,
        request: FindCoordinatorRequest,
    ) -> (FindCoordinatorResponse, bool) {
        if version < 4 {
            let found = self.find(&request.key, request.key_type);
            let ok = found.error == 0;
            let mut response = FindCoordinatorResponse::default()
                .with_error_code(found.error)
                .with_node_id(BrokerId(found.node))
                .with_host(text(found.host))
                .with_port(found.port);
            if version >= 1 {
                response = response.with_error_message(found.message.map(text));
            }
            return (response, ok);
        }
        let mut ok = true;
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let found = self.find(key, request.key_type);
                ok &= found.error == 0;
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(found.node))
                    .with_host(text(found.host))
                    .with_port(found.port)
                    .with_error_code(found.error)
                    .with_error_message(found.message.map(text))
            })
            .collect();
        (
            FindCoordinatorResponse::default().with_coordinators(coordinators),
            ok,
        )
    }

    pub(super) async fn join_group(
        &self,
        version: i16,
        request: JoinGroupRequest,
        peer: SocketAddr,
        client_id: &str,
    ) -> (JoinGroupResponse, bool) {
        let session_timeout = millis(request.session_timeout_ms);
        // v0 has no rebalance timeout: the session timeout serves for both.
        let rebalance_timeout = if version == 0 {
            session_timeout
        } else {
            millis(request.rebalance_timeout_ms)
        };
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|i| i.to_string()),
            client_id: client_id.to_string(),
            client_host: format!("/{}", peer.ip()),
            protocol_type: request.protocol_type.to_string(),
            subscribed: consumer_subscription(&request.protocol_type, &request.protocols),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            session_timeout,
            rebalance_timeout,
            require_known_member_id: version >= 4,
        };
        let failed = |code: i16, member_id: String| {
            JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_member_id(text(member_id))
        };
        match self.groups.join_group(&request.group_id, join).await {
            Ok(JoinAnswer::MemberIdRequired(member_id)) => (
                failed(ResponseError::MemberIdRequired.code(), member_id),
                true,
            ),
            Ok(JoinAnswer::Joined(joined)) => {
                let mut response = JoinGroupResponse::default()
                    .with_generation_id(joined.generation)
                    .with_protocol_name(joined.protocol.map(text))
                    .with_leader(text(joined.leader))
                    .with_member_id(text(joined.member_id))
                    .with_members(
                        joined
                            .members
                            .into_iter()
                            .map(|(id, instance, metadata)| {
                                let member = JoinGroupResponseMember::default()
                                    .with_member_id(text(id))
                                    .with_metadata(metadata);
                                if version >= 5 {
                                    member.with_group_instance_id(instance.map(text))
                                } else {
                                    member
                                }
                            })
                            .collect(),
                    );
                if version >= 7 {
                    response = response.with_protocol_type(joined.protocol_type.map(text));
                }
                (response, true)
            }
            Err(error) => (
                failed(group_error(&error), request.member_id.to_string()),
                false,
            ),
        }
    }

    pub(super) async fn sync_group(
        &self,
        version: i16,
        request: SyncGroupRequest,
    ) -> (SyncGroupResponse, bool) {
        let assignments: Vec<(String, Bytes)> = request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let answer = self
            .groups
            .sync_group(
                &request.group_id,
                &request.member_id,
                request.generation_id,
                assignments,
            )
            .await;
        let mut response = match &answer {
            Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment.clone()),
            Err(error) => SyncGroupResponse::default().with_error_code(group_error(error)),
        };
        if version >= 5 && answer.is_ok() {
            // The group's protocol, which the client checks against its own.
            if let Ok(Some(group)) = self.groups.group(&request.group_id).await {
                response = response
                    .with_protocol_type(group.classic.protocol_type.map(text))
                    .with_protocol_name(group.classic.protocol.map(text));
            }
        }
        (response, answer.is_ok())
    }

    pub(super) async fn heartbeat(
        &self,
        _version: i16,
        request: HeartbeatRequest,
    ) -> (HeartbeatResponse, bool) {
        match self
            .groups
            .classic_heartbeat(&request.group_id, &request.member_id, request.generation_id)
            .await
        {
            Ok(()) => (HeartbeatResponse::default(), true),
            Err(error) => (
                HeartbeatResponse::default().with_error_code(group_error(&error)),
                false,
            ),
        }
    }

    pub(super) async fn leave_group(
        &self,
        version: i16,
        request: LeaveGroupRequest,
    ) -> (LeaveGroupResponse, bool) {
        // v0-2 name one member; v3+ a batch (KIP-345).
        let members: Vec<String> = if version < 3 {
            vec![request.member_id.to_string()]
        } else {
            request
                .members
                .iter()
                .map(|m| m.member_id.to_string())
                .collect()
        };
        match self.groups.leave_group(&request.group_id, &members).await {
            Err(error) => (
                LeaveGroupResponse::default().with_error_code(group_error(&error)),
                false,
            ),
            Ok(results) if version < 3 => {
                let error = results
                    .first()
                    .and_then(|r| r.as_ref().err())
                    .map_or(0, group_error);
                (
                    LeaveGroupResponse::default().with_error_code(error),
                    error == 0,
                )
            }
            Ok(results) => {
                let ok = results.iter().all(Result::is_ok);
                let members = request
                    .members
                    .into_iter()
                    .zip(results)
                    .map(|(m, result)| {
                        MemberResponse::default()
                            .with_member_id(m.member_id)
                            .with_group_instance_id(m.group_instance_id)
                            .with_error_code(result.err().map_or(0, |e| group_error(&e)))
                    })
                    .collect();
                (LeaveGroupResponse::default().with_members(members), ok)
            }
        }
    }

    pub(super) async fn offset_commit(
        &self,
        _version: i16,
        request: OffsetCommitRequest,
    ) -> (OffsetCommitResponse, bool) {
        // Partitions with no valid index are answered on their own; the rest commit as one.
        let mut commits = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                if let Some(tp) = topic_partition(&topic.name, p.partition_index) {
                    commits.push(OffsetCommit {
                        tp,
                        offset: p.committed_offset,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        let outcome = self
            .groups
            .commit(
                &request.group_id,
                &request.member_id,
                request.generation_id_or_member_epoch,
                commits,
            )
            .await;
        let code = outcome.as_ref().err().map_or(0, group_error);
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                OffsetCommitResponseTopic::default()
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|p| {
                                let error = if p.partition_index < 0 {
                                    ResponseError::UnknownTopicOrPartition.code()
                                } else {
                                    code
                                };
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
                    .with_name(topic.name)
            })
            .collect();
        (
            OffsetCommitResponse::default().with_topics(topics),
            code == 0,
        )
    }

    /// The committed offsets of `group` for `wanted` (every committed one when None), by
    /// topic (-1 for a partition without one), or the group's error code.
    async fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<TopicOffsets>, i16> {
        let asked: Vec<TopicPartition> = wanted
            .iter()
            .flatten()
            .flat_map(|(topic, partitions)| {
                partitions.iter().filter_map(|p| topic_partition(topic, *p))
            })
            .collect();
        let committed = self
            .groups
            .committed(group, &asked)
            .await
            .map_err(|e| group_error(&e))?;
        Ok(match wanted {
            None => {
                let mut by_topic: Vec<TopicOffsets> = Vec::new();
                for (tp, c) in committed {
                    let entry = Fetched {
                        partition: tp.partition as i32,
                        offset: c.offset,
                        metadata: c.metadata,
                    };
                    match by_topic.last_mut() {
                        Some((topic, partitions)) if *topic == tp.topic => partitions.push(entry),
                        _ => by_topic.push((tp.topic, vec![entry])),
                    }
                }
                by_topic
            }
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let answers = partitions
                        .into_iter()
                        .map(|p| {
                            let found =
                                topic_partition(&topic, p).and_then(|tp| committed.get(&tp));
                            Fetched {
                                partition: p,
                                offset: found.map_or(-1, |c| c.offset),
                                metadata: found.map(|c| c.metadata.clone()).unwrap_or_default(),
                            }
                        })
                        .collect();
                    (topic, answers)
                })
                .collect(),
        })
    }

    pub(super) async fn offset_fetch(
        &self,
        version: i16,
        request: OffsetFetchRequest,
    ) -> (OffsetFetchResponse, bool) {
        if version < 8 {
            let wanted = request.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            return match self.fetch_offsets(&request.group_id, wanted).await {
                Ok(topics) => (
                    OffsetFetchResponse::default().with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopic::default()
                                    .with_name(TopicName(text(topic)))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|f| {
                                                OffsetFetchResponsePartition::default()
                                                    .with_partition_index(f.partition)
                                                    .with_committed_offset(f.offset)
                                                    .with_metadata(Some(text(f.metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    true,
                ),
                Err(code) if version >= 2 => {
                    (OffsetFetchResponse::default().with_error_code(code), false)
                }
                Err(_) => (OffsetFetchResponse::default(), false),
            };
        }
        let mut ok = true;
        let mut groups = Vec::new();
        for group in request.groups {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let response =
                OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
            groups.push(match self.fetch_offsets(&group.group_id, wanted).await {
                Ok(topics) => response.with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(text(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|f| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(f.partition)
                                                .with_committed_offset(f.offset)
                                                .with_metadata(Some(text(f.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(code) => {
                    ok = false;
                    response.with_error_code(code)
                }
            });
        }
        (OffsetFetchResponse::default().with_groups(groups), ok)
    }

    pub(super) async fn list_groups(
        &self,
        version: i16,
        request: ListGroupsRequest,
    ) -> (ListGroupsResponse, bool) {
        let groups = self
            .groups
            .list()
            .await
            .into_iter()
            .filter_map(|g| {
                let state = g.state.as_str();
                let wanted = request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(state));
                wanted.then(|| {
                    let listed = ListedGroup::default()
                        .with_group_id(GroupId(text(g.group_id)))
                        .with_protocol_type(text("consumer"));
                    let listed = if version >= 4 {
                        listed.with_group_state(text(state))
                    } else {
                        listed
                    };
                    if version >= 5 {
                        listed.with_group_type(text(if g.classic { "classic" } else { "consumer" }))
                    } else {
                        listed
                    }
                })
            })
            .collect();
        (ListGroupsResponse::default().with_groups(groups), true)
    }

    pub(super) async fn describe_groups(
        &self,
        version: i16,
        request: DescribeGroupsRequest,
    ) -> (DescribeGroupsResponse, bool) {
        let mut ok = true;
        let mut described = Vec::new();
        for group_id in request.groups {
            let answer = DescribedGroup::default().with_group_id(group_id.clone());
            described.push(match self.groups.group(&group_id).await {
                Err(error) => {
                    ok = false;
                    answer.with_error_code(group_error(&error))
                }
                // Kafka describes a group it does not know as Dead, without an error.
                Ok(None) => answer.with_group_state(text("Dead")),
                Ok(Some(group)) if !group.members.is_empty() => answer
                    .with_group_state(text(group.state().as_str()))
                    .with_protocol_type(text("consumer"))
                    .with_members(
                        group
                            .members
                            .values()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(m.id.clone()))
                                    .with_client_id(text(m.client_id.clone()))
                            })
                            .collect(),
                    ),
                Ok(Some(group)) => {
                    let classic = group.classic;
                    let protocol = classic.protocol.clone().unwrap_or_default();
                    answer
                        .with_group_state(text(classic.state.as_str()))
                        .with_protocol_type(text(classic.protocol_type.clone().unwrap_or_default()))
                        .with_protocol_data(text(protocol.clone()))
                        .with_members(
                            classic
                                .members
                                .values()
                                .map(|m| {
                                    let member = DescribedGroupMember::default()
                                        .with_member_id(text(m.id.clone()));
                                    let member = if version >= 4 {
                                        member.with_group_instance_id(
                                            m.group_instance_id.clone().map(text),
                                        )
                                    } else {
                                        member
                                    };
                                    member
                                        .with_client_id(text(m.client_id.clone()))
                                        .with_client_host(text(m.client_host.clone()))
                                        .with_member_metadata(m.metadata(&protocol))
                                        .with_member_assignment(m.assignment.clone())
                                })
                                .collect(),
                        )
                }
            });
        }
        (DescribeGroupsResponse::default().with_groups(described), ok)
    }
}

impl KafkaService {
    /// Partitions by topic id, as the consumer protocol names them.
    fn by_topic_id(
        &self,
        partitions: &std::collections::BTreeSet<TopicPartition>,
    ) -> Vec<(uuid::Uuid, String, Vec<i32>)> {
        let snapshot = self.replicas.metadata();
        let mut out: Vec<(uuid::Uuid, String, Vec<i32>)> = Vec::new();
        for tp in partitions {
            let Some(id) = snapshot.topics.get(&tp.topic).map(|t| t.id) else {
                continue;
            };
            match out.last_mut() {
                Some((last, _, list)) if *last == id => list.push(tp.partition as i32),
                _ => out.push((id, tp.topic.clone(), vec![tp.partition as i32])),
            }
        }
        out
    }

    /// KIP-848's ConsumerGroupHeartbeat, on the coordinator Tributary's own consumers use:
    /// the subscription and owned partitions a member leaves out are the ones it sent last.
    pub(super) async fn consumer_group_heartbeat(
        &self,
        _version: i16,
        request: ConsumerGroupHeartbeatRequest,
        client_id: &str,
    ) -> (ConsumerGroupHeartbeatResponse, bool) {
        let failed = |code: i16, message: String| {
            (
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(text(message))),
                false,
            )
        };
        if request.subscribed_topic_regex.is_some() {
            return failed(
                ResponseError::InvalidRequest.code(),
                "subscribing by pattern is not supported; subscribe to topic names".into(),
            );
        }
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        // What the member sent before, for the fields it leaves out.
        let known = match self.groups.group(&group_id).await {
            Ok(group) => group.and_then(|g| g.members.get(&member_id).cloned()),
            Err(error) => return failed(group_error(&error), error.to_string()),
        };
        let subscribed = match request.subscribed_topic_names {
            Some(names) => names.iter().map(|n| n.to_string()).collect(),
            None => known
                .as_ref()
                .map(|m| m.subscribed.clone())
                .unwrap_or_default(),
        };
        let snapshot = self.replicas.metadata();
        let names: std::collections::BTreeMap<uuid::Uuid, &str> = snapshot
            .topics
            .values()
            .map(|t| (t.id, t.name.as_str()))
            .collect();
        let owned = match request.topic_partitions {
            Some(owned) => owned
                .iter()
                .filter_map(|t| names.get(&t.topic_id).map(|n| (*n, &t.partitions)))
                .flat_map(|(name, partitions)| {
                    partitions
                        .iter()
                        .filter_map(move |p| topic_partition(name, *p))
                })
                .collect(),
            None => known
                .as_ref()
                .map(|m| m.assigned.union(&m.revoking).cloned().collect())
                .unwrap_or_default(),
        };
        let heartbeat = Heartbeat {
            member_id,
            // -2 is a static member leaving for a while; here every member is dynamic.
            member_epoch: request.member_epoch.max(-1),
            client_id: client_id.to_string(),
            subscribed,
            owned,
            session_timeout: self.settings.consumer_session_timeout,
            rebalance_timeout: millis(request.rebalance_timeout_ms),
        };
        match self.groups.heartbeat(&group_id, heartbeat).await {
            Ok(answer) => {
                let assignment = self
                    .by_topic_id(&answer.assignment)
                    .into_iter()
                    .map(|(id, _, partitions)| {
                        consumer_group_heartbeat_response::TopicPartitions::default()
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect();
                let leaving = answer.member_epoch < 0;
                let response = ConsumerGroupHeartbeatResponse::default()
                    .with_member_id(Some(text(answer.member_id)))
                    .with_member_epoch(answer.member_epoch)
                    .with_heartbeat_interval_ms(answer.heartbeat_interval.as_millis() as i32);
                let response = if leaving {
                    response
                } else {
                    response.with_assignment(Some(
                        consumer_group_heartbeat_response::Assignment::default()
                            .with_topic_partitions(assignment),
                    ))
                };
                (response, true)
            }
            Err(error) => failed(group_error(&error), error.to_string()),
        }
    }

    /// KIP-848's ConsumerGroupDescribe: members with their subscriptions and assignments.
    pub(super) async fn consumer_group_describe(
        &self,
        _version: i16,
        request: ConsumerGroupDescribeRequest,
    ) -> (ConsumerGroupDescribeResponse, bool) {
        let mut ok = true;
        let mut described = Vec::new();
        for group_id in request.group_ids {
            let answer = consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(group_id.clone());
            described.push(match self.groups.group(&group_id).await {
                Err(error) => {
                    ok = false;
                    answer
                        .with_error_code(group_error(&error))
                        .with_error_message(Some(text(error.to_string())))
                }
                Ok(None) => {
                    ok = false;
                    answer
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(text(format!(
                            "group '{}' does not exist",
                            &*group_id
                        ))))
                }
                Ok(Some(group)) if !group.classic.members.is_empty() => {
                    ok = false;
                    answer
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(text(format!(
                            "group '{}' is a classic group; describe it with DescribeGroups",
                            &*group_id
                        ))))
                }
                Ok(Some(group)) => {
                    let to_assignment =
                        |partitions: &std::collections::BTreeSet<TopicPartition>| {
                            consumer_group_describe_response::Assignment::default()
                                .with_topic_partitions(
                                self.by_topic_id(partitions)
                                    .into_iter()
                                    .map(|(id, name, partitions)| {
                                        consumer_group_describe_response::TopicPartitions::default()
                                            .with_topic_id(id)
                                            .with_topic_name(TopicName(text(name)))
                                            .with_partitions(partitions)
                                    })
                                    .collect(),
                            )
                        };
                    let state = match group.state() {
                        crate::group::GroupState::Empty => "Empty",
                        crate::group::GroupState::Reconciling => "Reconciling",
                        crate::group::GroupState::Stable => "Stable",
                    };
                    answer
                        .with_group_state(text(state))
                        .with_group_epoch(group.epoch)
                        .with_assignment_epoch(group.epoch)
                        .with_assignor_name(text("uniform"))
                        .with_members(
                            group
                                .members
                                .values()
                                .map(|m| {
                                    consumer_group_describe_response::Member::default()
                                        .with_member_id(text(m.id.clone()))
                                        .with_member_epoch(m.epoch)
                                        .with_client_id(text(m.client_id.clone()))
                                        .with_subscribed_topic_names(
                                            m.subscribed
                                                .iter()
                                                .map(|t| TopicName(text(t.clone())))
                                                .collect(),
                                        )
                                        .with_assignment(to_assignment(&m.assigned))
                                        .with_target_assignment(to_assignment(&m.assigned))
                                })
                                .collect(),
                        )
                }
            });
        }
        (
            ConsumerGroupDescribeResponse::default().with_groups(described),
            ok,
        )
    }
}

impl KafkaService {
    /// DeleteGroups: a group without members is deleted with its committed offsets.
    pub(super) async fn delete_groups(
        &self,
        _version: i16,
        request: DeleteGroupsRequest,
    ) -> (DeleteGroupsResponse, bool) {
        let mut ok = true;
        let mut results = Vec::new();
        for group in request.groups_names {
            let code = match self.groups.delete_offsets(&group, None).await {
                Ok(_) => 0,
                Err(error) => {
                    ok = false;
                    group_error(&error)
                }
            };
            results.push(
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(group)
                    .with_error_code(code),
            );
        }
        (DeleteGroupsResponse::default().with_results(results), ok)
    }

    /// OffsetDelete: committed offsets of a group are deleted, except those of topics its
    /// members read (GROUP_SUBSCRIBED_TO_TOPIC for each of those partitions).
    pub(super) async fn offset_delete(
        &self,
        _version: i16,
        request: OffsetDeleteRequest,
    ) -> (OffsetDeleteResponse, bool) {
        let partitions: Vec<TopicPartition> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter_map(|p| topic_partition(&t.name, p.partition_index))
            })
            .collect();
        let (code, subscribed) = match self
            .groups
            .delete_offsets(&request.group_id, Some(&partitions))
            .await
        {
            Ok(deletion) => (0, deletion.subscribed),
            Err(error) => (group_error(&error), Vec::new()),
        };
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let read = topic_partition(&t.name, p.partition_index)
                            .is_some_and(|tp| subscribed.contains(&tp));
                        offset_delete_response::OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(if read {
                                ResponseError::GroupSubscribedToTopic.code()
                            } else {
                                0
                            })
                    })
                    .collect();
                offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_partitions(partitions)
                    .with_name(t.name)
            })
            .collect();
        (
            OffsetDeleteResponse::default()
                .with_error_code(code)
                .with_topics(topics),
            code == 0 && subscribed.is_empty(),
        )
    }
}

/// The topics a classic member reads, from its subscription, when its group is one of
/// consumers (protocol type "consumer", whose protocols' metadata is Kafka's
/// ConsumerProtocolSubscription); None for other groups or a subscription that does not
/// decode.
fn consumer_subscription(
    protocol_type: &str,
    protocols: &[join_group_request::JoinGroupRequestProtocol],
) -> Option<BTreeSet<String>> {
    if protocol_type != "consumer" {
        return None;
    }
    let mut metadata = protocols.first()?.metadata.clone();
    let version = metadata.try_get_i16().ok()?;
    // Later versions only add fields: read what this crate knows of them.
    let subscription = ConsumerProtocolSubscription::decode(
        &mut metadata,
        version.min(ConsumerProtocolSubscription::VERSIONS.max),
    )
    .ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}
