//! Metadata for tests: of scaling decisions and replication here, and in the operator.

use std::collections::BTreeMap;

use super::{BrokerInfo, MetadataSnapshot, PartitionRecord, TopicRecord};

/// Brokers `alive` in session and one topic 't' whose partitions have these replicas
/// (all in sync, the first leading).
pub fn snapshot(alive: &[i32], partitions: &[&[i32]]) -> MetadataSnapshot {
    let mut s = MetadataSnapshot::default();
    for id in alive {
        s.brokers.insert(
            *id,
            BrokerInfo {
                id: *id,
                host: format!("b{id}"),
                port: 9095,
                kafka_port: 9092,
                rack: None,
            },
        );
    }
    s.topics.insert(
        "t".into(),
        TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            config: BTreeMap::new(),
            partitions: partitions
                .iter()
                .map(|r| PartitionRecord {
                    replicas: r.to_vec(),
                    isr: r.to_vec(),
                    leader: r[0],
                    leader_epoch: 0,
                    partition_epoch: 0,
                })
                .collect(),
        },
    );
    s
}
