//! Cluster metadata (and the requests that change it) between the engine's types and the
//! wire; the client uses it too.

use std::collections::BTreeSet;

use super::proto;
use crate::TopicPartition;
use crate::metadata::{
    BrokerInfo, MetadataSnapshot, Move, NewTopic, PartitionRecord, Plan, TopicRecord,
};

/// A topic creation as sent to a broker or the controller (replication factor 0 means the
/// cluster default).
pub fn create_topic_request(topic: NewTopic, validate_only: bool) -> proto::CreateTopicRequest {
    proto::CreateTopicRequest {
        name: topic.name,
        partitions: topic.partitions,
        replication_factor: topic.replication_factor.unwrap_or(0),
        config: topic.config.into_iter().collect(),
        validate_only,
    }
}

pub fn new_topic_from_request(request: proto::CreateTopicRequest) -> NewTopic {
    NewTopic {
        name: request.name,
        partitions: request.partitions,
        replication_factor: (request.replication_factor > 0).then_some(request.replication_factor),
        config: request.config.into_iter().collect(),
    }
}

/// Partitions grouped by topic, as consumer-group requests carry them.
pub fn group_partitions_to_proto<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> Vec<proto::GroupTopicPartitions> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| proto::GroupTopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

pub fn group_partitions_from_proto(
    groups: Vec<proto::GroupTopicPartitions>,
) -> BTreeSet<TopicPartition> {
    groups
        .into_iter()
        .flat_map(|g| {
            let topic = g.topic;
            g.partitions
                .into_iter()
                .map(move |p| TopicPartition::new(topic.clone(), p))
        })
        .collect()
}

pub fn partition_to_proto(index: u32, p: &PartitionRecord) -> proto::PartitionMetadata {
    proto::PartitionMetadata {
        partition: index,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        offline_replicas: Vec::new(),
        partition_epoch: p.partition_epoch,
    }
}

pub fn partition_from_proto(p: &proto::PartitionMetadata) -> PartitionRecord {
    PartitionRecord {
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
    }
}

/// Partitions in order of their index.
fn partitions_from_proto(mut partitions: Vec<proto::PartitionMetadata>) -> Vec<PartitionRecord> {
    partitions.sort_by_key(|p| p.partition);
    partitions.iter().map(partition_from_proto).collect()
}

pub fn partitions_to_proto(topic: &TopicRecord) -> Vec<proto::PartitionMetadata> {
    topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| partition_to_proto(i as u32, p))
        .collect()
}

pub fn broker_to_proto(b: &BrokerInfo) -> proto::BrokerInfo {
    proto::BrokerInfo {
        id: b.id,
        host: b.host.clone(),
        port: u32::from(b.port),
        rack: b.rack.clone().unwrap_or_default(),
        kafka_port: u32::from(b.kafka_port),
    }
}

pub fn broker_from_proto(b: &proto::BrokerInfo) -> BrokerInfo {
    BrokerInfo {
        id: b.id,
        host: b.host.clone(),
        port: b.port as u16,
        kafka_port: b.kafka_port as u16,
        rack: (!b.rack.is_empty()).then(|| b.rack.clone()),
    }
}

pub fn topic_description(topic: &TopicRecord) -> proto::TopicDescription {
    proto::TopicDescription {
        name: topic.name.clone(),
        topic_id: topic.id.to_string(),
        partitions: partitions_to_proto(topic),
        config: topic.config.clone().into_iter().collect(),
        internal: topic.is_internal(),
    }
}

pub fn topic_from_description(d: proto::TopicDescription) -> Result<TopicRecord, String> {
    Ok(TopicRecord {
        id: d
            .topic_id
            .parse()
            .map_err(|e| format!("topic {} has a bad id: {e}", d.name))?,
        config: d.config.into_iter().collect(),
        partitions: partitions_from_proto(d.partitions),
        name: d.name,
    })
}

pub fn snapshot_to_proto(s: &MetadataSnapshot) -> proto::ClusterMetadata {
    proto::ClusterMetadata {
        version: s.version,
        cluster_id: s.cluster_id.clone(),
        controller_id: s.controller_id,
        controller_epoch: s.controller_epoch,
        brokers: s.brokers.values().map(broker_to_proto).collect(),
        topics: s
            .topics
            .values()
            .map(|t| proto::TopicState {
                name: t.name.clone(),
                topic_id: t.id.to_string(),
                config: t.config.clone().into_iter().collect(),
                partitions: partitions_to_proto(t),
            })
            .collect(),
    }
}

pub fn snapshot_from_proto(m: proto::ClusterMetadata) -> Result<MetadataSnapshot, String> {
    let topics = m
        .topics
        .into_iter()
        .map(|t| {
            let record = TopicRecord {
                id: t
                    .topic_id
                    .parse()
                    .map_err(|e| format!("topic {} has a bad id: {e}", t.name))?,
                config: t.config.into_iter().collect(),
                partitions: partitions_from_proto(t.partitions),
                name: t.name.clone(),
            };
            Ok((t.name, record))
        })
        .collect::<Result<_, String>>()?;
    Ok(MetadataSnapshot {
        version: m.version,
        cluster_id: m.cluster_id,
        controller_id: m.controller_id,
        controller_epoch: m.controller_epoch,
        brokers: m
            .brokers
            .iter()
            .map(|b| (b.id, broker_from_proto(b)))
            .collect(),
        topics,
    })
}

pub fn plan_to_proto(plan: &Plan) -> proto::RebalancePlan {
    proto::RebalancePlan {
        moves: plan
            .moves
            .iter()
            .map(|m| proto::PartitionMove {
                topic: m.topic.clone(),
                partition: m.partition,
                original: m.original.clone(),
                target: m.target.clone(),
                started: m.started,
            })
            .collect(),
        total: plan.total as u32,
        done: plan.done as u32,
        rolled_back: plan.rolled_back as u32,
        max_concurrent: plan.max_concurrent as u32,
        bytes_remaining: plan.bytes_remaining,
    }
}

pub fn plan_from_proto(plan: proto::RebalancePlan) -> Plan {
    Plan {
        moves: plan
            .moves
            .into_iter()
            .map(|m| Move {
                topic: m.topic,
                partition: m.partition,
                original: m.original,
                target: m.target,
                started: m.started,
            })
            .collect(),
        total: plan.total as usize,
        done: plan.done as usize,
        rolled_back: plan.rolled_back as usize,
        max_concurrent: plan.max_concurrent as usize,
        bytes_remaining: plan.bytes_remaining,
    }
}

pub fn replica_sizes_to_proto(sizes: Vec<(TopicPartition, u64)>) -> Vec<proto::ReplicaSize> {
    sizes
        .into_iter()
        .map(|(tp, bytes)| proto::ReplicaSize {
            topic: tp.topic,
            partition: tp.partition,
            bytes,
        })
        .collect()
}

pub fn replica_sizes_from_proto(sizes: Vec<proto::ReplicaSize>) -> Vec<(TopicPartition, u64)> {
    sizes
        .into_iter()
        .map(|s| (TopicPartition::new(s.topic, s.partition), s.bytes))
        .collect()
}

/// Every broker the metadata names (in session, cordoned, or holding replicas), with its
/// replica and leader counts.
pub fn cluster_status(
    snapshot: &MetadataSnapshot,
    cordoned: &BTreeSet<i32>,
    plan: &Plan,
    scale: Option<proto::ScaleStatus>,
) -> proto::ClusterStatusResponse {
    let mut counts = snapshot.load();
    for b in snapshot.brokers.keys().chain(cordoned.iter()) {
        counts.entry(*b).or_default();
    }
    let partitions = snapshot
        .topics
        .values()
        .map(|t| t.partitions.len())
        .sum::<usize>();
    proto::ClusterStatusResponse {
        brokers: counts
            .into_iter()
            .map(|(id, (replicas, leaders))| {
                let broker = snapshot.brokers.get(&id);
                proto::BrokerStatus {
                    id,
                    address: broker.map(|b| b.address()).unwrap_or_default(),
                    alive: broker.is_some(),
                    cordoned: cordoned.contains(&id),
                    replicas,
                    leaders,
                }
            })
            .collect(),
        partitions: partitions as u32,
        under_replicated_partitions: snapshot.under_replicated() as u32,
        rebalance: Some(plan_to_proto(plan)),
        controller_epoch: snapshot.controller_epoch,
        scale,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn snapshots_survive_the_wire() {
        let topic = TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            config: BTreeMap::from([("retention.ms".into(), "5".into())]),
            partitions: vec![
                PartitionRecord {
                    replicas: vec![1, 2],
                    isr: vec![2],
                    leader: 2,
                    leader_epoch: 3,
                    partition_epoch: 7,
                },
                PartitionRecord {
                    replicas: vec![2, 1],
                    isr: vec![2, 1],
                    leader: -1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            ],
        };
        let snapshot = MetadataSnapshot {
            version: 9,
            cluster_id: "c2tVmkJ7Q6GfcZbQvY3k2A".into(),
            controller_id: 0,
            controller_epoch: 4,
            brokers: BTreeMap::from([(
                1,
                BrokerInfo {
                    id: 1,
                    host: "h".into(),
                    port: 9095,
                    kafka_port: 9092,
                    rack: Some("a".into()),
                },
            )]),
            topics: BTreeMap::from([("t".into(), topic.clone())]),
        };
        assert_eq!(
            snapshot_from_proto(snapshot_to_proto(&snapshot)).unwrap(),
            snapshot
        );
        assert_eq!(
            topic_from_description(topic_description(&topic)).unwrap(),
            topic
        );
    }
}
