//! Cluster metadata as the controller records it and brokers receive it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TopicPartition;

/// A broker the controller knows about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    /// The gRPC port.
    pub port: u16,
    /// The Kafka protocol's port, on the same host (0 in metadata written before brokers
    /// had one, until the broker registers again).
    #[serde(default)]
    pub kafka_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Where one partition lives. The first replica is the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when the partition has no leader.
    pub leader: i32,
    /// Bumped on every leadership change.
    pub leader_epoch: i32,
    /// Bumped on every change to the record (leader or ISR).
    pub partition_epoch: i32,
}

/// A topic: its id, configuration overrides and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

impl TopicRecord {
    /// Internal topics have names starting with `__`.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// Everything a broker needs to know about the cluster, as of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSnapshot {
    /// Grows with every change the controller publishes.
    pub version: u64,
    /// The cluster's id: a UUID in URL-safe base64 (Kafka's form), made once.
    pub cluster_id: String,
    pub controller_id: i32,
    pub controller_epoch: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicRecord>,
}

impl MetadataSnapshot {
    pub fn partition(&self, tp: &TopicPartition) -> Option<(&TopicRecord, &PartitionRecord)> {
        let topic = self.topics.get(&tp.topic)?;
        Some((topic, topic.partitions.get(tp.partition as usize)?))
    }

    /// How many replicas and leaderships each broker holding any has: `(replicas,
    /// leaders)` by broker id.
    pub fn load(&self) -> BTreeMap<i32, (u32, u32)> {
        let mut load: BTreeMap<i32, (u32, u32)> = BTreeMap::new();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            for r in &p.replicas {
                load.entry(*r).or_default().0 += 1;
            }
            if p.leader >= 0 {
                load.entry(p.leader).or_default().1 += 1;
            }
        }
        load
    }

    /// Partitions with fewer replicas in sync than replicas.
    pub fn under_replicated(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.isr.len() < p.replicas.len())
            .count()
    }

    /// Every partition that has a replica on `broker`.
    pub fn replicas_on(
        &self,
        broker: i32,
    ) -> impl Iterator<Item = (TopicPartition, &TopicRecord, &PartitionRecord)> {
        self.topics.values().flat_map(move |topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.replicas.contains(&broker))
                .map(move |(i, p)| (TopicPartition::new(&topic.name, i as u32), topic, p))
        })
    }
}
