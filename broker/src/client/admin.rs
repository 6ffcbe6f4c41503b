//! Topic administration and cluster inspection.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{Cluster, ClusterView};
use super::error::{Error, Result};
use super::group::{Coordinator, commit as group_commit};
use super::offsets::{Found, OffsetQuery, list_offsets, list_offsets_each};
use crate::TopicPartition;
pub use crate::metadata::NewTopic;
use crate::protocol::grpc::convert::group_partitions_from_proto;
use crate::protocol::grpc::proto;

/// How long a describe waits for the partition leaders' offsets.
const DESCRIBE_OFFSETS_WAIT: Duration = Duration::from_secs(5);

/// One partition of a described topic. Field names are the JSON keys of
/// `tributary topic describe --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    pub name: String,
    pub id: String,
    pub internal: bool,
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub internal: bool,
}

/// Creates, deletes, lists and describes topics.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        let cluster = Cluster::new(bootstrap, Duration::from_secs(30))?;
        cluster.refresh().await?;
        Ok(Self { cluster })
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(proto::admin_client::AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.cluster
            .with_any_broker(|address| {
                let client = self.cluster.admin_client(&address);
                let call = client.map(&call);
                async move {
                    match call {
                        Ok(call) => call
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|s| Error::from_status(s, &address)),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    /// Creates a topic; it is ready to use when this returns.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicDescription> {
        self.create(topic, false).await
    }

    /// Checks a topic could be created, without creating it.
    pub async fn validate_topic(&self, topic: NewTopic) -> Result<TopicDescription> {
        self.create(topic, true).await
    }

    async fn create(&self, topic: NewTopic, validate_only: bool) -> Result<TopicDescription> {
        let request = crate::protocol::grpc::convert::create_topic_request(topic, validate_only);
        let created = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.create_topic(request).await }
            })
            .await?;
        let _ = self.cluster.refresh().await;
        Ok(describe(created, &BTreeMap::new(), &BTreeMap::new()))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = proto::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.call(|mut c| {
            let request = request.clone();
            async move { c.delete_topic(request).await }
        })
        .await?;
        let _ = self.cluster.refresh().await;
        Ok(())
    }

    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicSummary>> {
        let response = self
            .call(|mut c| async move {
                c.list_topics(proto::ListTopicsRequest { include_internal })
                    .await
            })
            .await?;
        Ok(response
            .topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                internal: t.internal,
            })
            .collect())
    }

    /// The topic's partitions with their replicas, leaders and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = proto::DescribeTopicRequest {
            name: name.to_string(),
        };
        let description = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.describe_topic(request).await }
            })
            .await?;
        self.cluster.refresh().await?;
        let partitions: Vec<TopicPartition> = description
            .partitions
            .iter()
            .map(|p| TopicPartition::new(name, p.partition))
            .collect();
        // Offsets come from each leader, briefly: a partition whose leader is unknown or
        // does not answer reports -1.
        let (starts, ends) = tokio::join!(
            list_offsets_each(
                &self.cluster,
                &partitions,
                OffsetQuery::Earliest,
                DESCRIBE_OFFSETS_WAIT
            ),
            list_offsets_each(
                &self.cluster,
                &partitions,
                OffsetQuery::Latest,
                DESCRIBE_OFFSETS_WAIT
            ),
        );
        let found = |each: BTreeMap<TopicPartition, Result<Found>>| {
            each.into_iter()
                .filter_map(|(tp, found)| Some((tp, found.ok()?)))
                .collect()
        };
        Ok(describe(description, &found(starts), &found(ends)))
    }

    /// Offsets per partition (earliest, latest, or by timestamp) from their leaders.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        query: OffsetQuery,
    ) -> Result<BTreeMap<TopicPartition, Found>> {
        list_offsets(&self.cluster, partitions, query).await
    }

    /// The brokers and topics as the cluster reports them now.
    pub async fn cluster(&self) -> Result<std::sync::Arc<ClusterView>> {
        self.cluster.refresh().await
    }

    /// Every consumer group of the cluster (each broker lists those it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let view = self.cluster.refresh().await?;
        let mut groups = BTreeMap::new();
        for address in view.brokers.values() {
            let mut client = self.cluster.group_client(address)?;
            let listed = client
                .list_groups(proto::ListGroupsRequest {})
                .await
                .map_err(|s| Error::from_status(s, address))?
                .into_inner();
            for g in listed.groups {
                groups.insert(
                    g.group_id.clone(),
                    GroupListing {
                        group: g.group_id,
                        state: g.state,
                        members: g.members,
                        coordinator: g.coordinator,
                    },
                );
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A group's members and, per partition it has an offset for or reads, the member that
    /// has it, the committed offset, the log end offset and the lag.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = Coordinator::new(group);
        let request = proto::DescribeGroupRequest {
            group_id: group.to_string(),
        };
        let described = coordinator
            .call(&self.cluster, |mut client, _| {
                let request = request.clone();
                async move { client.describe_group(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
        let members: Vec<GroupMemberDescription> = described
            .members
            .into_iter()
            .map(|m| {
                let assigned: Vec<TopicPartition> = group_partitions_from_proto(m.assigned)
                    .into_iter()
                    .collect();
                for tp in &assigned {
                    owners.insert(tp.clone(), m.member_id.clone());
                }
                GroupMemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    member_epoch: m.member_epoch,
                    subscribed: m.subscribed_topics,
                    assigned,
                }
            })
            .collect();
        let committed: BTreeMap<TopicPartition, i64> = described
            .offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect();
        let partitions: Vec<TopicPartition> = committed
            .keys()
            .chain(owners.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Leaders may have moved since this client last looked.
        let _ = self.cluster.refresh().await;
        let ends = list_offsets_each(
            &self.cluster,
            &partitions,
            OffsetQuery::Latest,
            Duration::from_secs(5),
        )
        .await;
        let partitions = partitions
            .into_iter()
            .map(|tp| {
                let log_end_offset = ends
                    .get(&tp)
                    .and_then(|r| r.as_ref().ok().copied().flatten())
                    .map(|(o, _)| o);
                let committed_offset = committed.get(&tp).copied();
                GroupPartition {
                    member: owners.get(&tp).cloned(),
                    lag: log_end_offset.map(|end| (end - committed_offset.unwrap_or(0)).max(0)),
                    topic: tp.topic,
                    partition: tp.partition,
                    committed_offset,
                    log_end_offset,
                }
            })
            .collect();
        Ok(GroupDescription {
            group: described.group_id,
            state: described.state,
            coordinator: described.coordinator,
            members,
            partitions,
        })
    }

    /// Sets a group's committed offsets for the partitions of `topic` (only while the
    /// group has no members). Returns what was committed.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let count = self.cluster.partition_count(topic).await?;
        let partitions: Vec<TopicPartition> =
            (0..count).map(|p| TopicPartition::new(topic, p)).collect();
        let offsets: BTreeMap<TopicPartition, i64> = match to {
            ResetTo::Offset(n) if n < 0 => {
                return Err(Error::Invalid(format!(
                    "cannot reset to offset {n}: offsets start at 0"
                )));
            }
            ResetTo::Offset(n) => partitions.into_iter().map(|tp| (tp, n)).collect(),
            ResetTo::Earliest | ResetTo::Latest => {
                let query = if to == ResetTo::Earliest {
                    OffsetQuery::Earliest
                } else {
                    OffsetQuery::Latest
                };
                list_offsets(&self.cluster, &partitions, query)
                    .await?
                    .into_iter()
                    .map(|(tp, found)| (tp, found.map_or(0, |(o, _)| o)))
                    .collect()
            }
        };
        let coordinator = Coordinator::new(group);
        group_commit(&self.cluster, &coordinator, "", -1, &offsets).await?;
        Ok(offsets)
    }
}

/// Where `reset_group_offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: u32,
    pub coordinator: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub coordinator: i32,
    pub members: Vec<GroupMemberDescription>,
    pub partitions: Vec<GroupPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: i32,
    pub subscribed: Vec<String>,
    pub assigned: Vec<TopicPartition>,
}

/// One partition of `group describe --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: u32,
    /// The member reading it, if any.
    pub member: Option<String>,
    pub committed_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    /// Log end offset minus the committed offset (all of it when nothing is committed).
    pub lag: Option<i64>,
}

fn describe(
    topic: proto::TopicDescription,
    starts: &BTreeMap<TopicPartition, Found>,
    ends: &BTreeMap<TopicPartition, Found>,
) -> TopicDescription {
    let offset = |found: &BTreeMap<TopicPartition, Found>, partition: u32| {
        found
            .get(&TopicPartition::new(&topic.name, partition))
            .copied()
            .flatten()
            .map_or(-1, |(o, _)| o)
    };
    let mut partitions: Vec<PartitionDescription> = topic
        .partitions
        .iter()
        .map(|p| PartitionDescription {
            partition: p.partition,
            leader: p.leader,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader_epoch: p.leader_epoch,
            log_start_offset: offset(starts, p.partition),
            high_watermark: offset(ends, p.partition),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicDescription {
        id: topic.topic_id,
        internal: topic.internal,
        config: topic.config.into_iter().collect(),
        partitions,
        name: topic.name,
    }
}
