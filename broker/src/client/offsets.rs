//! Looking up offsets (earliest, latest, by timestamp) from partition leaders.

use std::collections::{BTreeMap, HashMap};

use super::cluster::Cluster;
use super::error::{Error, Result};
use crate::TopicPartition;
use crate::proto::{self, ErrorCode, OffsetSpec};

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The first offset still in the log.
    Earliest,
    /// The high watermark: where the next committed record will go.
    Latest,
    /// The first record with a timestamp at or after this (milliseconds since the epoch).
    Timestamp(i64),
}

/// An offset found by a timestamp query, or None when no record is that recent.
pub type Found = Option<(i64, i64)>;

/// Asks each partition's leader; one request per leader.
pub async fn list_offsets(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    query: OffsetQuery,
) -> Result<BTreeMap<TopicPartition, Found>> {
    let mut by_leader: HashMap<String, Vec<&TopicPartition>> = HashMap::new();
    for tp in partitions {
        by_leader
            .entry(cluster.leader(tp).await?)
            .or_default()
            .push(tp);
    }
    let (spec, timestamp_ms) = match query {
        OffsetQuery::Earliest => (OffsetSpec::Earliest, 0),
        OffsetQuery::Latest => (OffsetSpec::Latest, 0),
        OffsetQuery::Timestamp(ts) => (OffsetSpec::Timestamp, ts),
    };
    let mut found = BTreeMap::new();
    for (leader, tps) in by_leader {
        let request = proto::ListOffsetsRequest {
            queries: tps
                .iter()
                .map(|tp| proto::OffsetQuery {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    spec: spec.into(),
                    timestamp_ms,
                })
                .collect(),
        };
        let response = cluster
            .broker_client(&leader)?
            .list_offsets(request)
            .await
            .map_err(|s| Error::from_status(s, &leader))?
            .into_inner();
        for answer in response.offsets {
            let tp = TopicPartition::new(answer.topic, answer.partition);
            if answer.error_code != i32::from(ErrorCode::None) {
                let code = ErrorCode::try_from(answer.error_code).unwrap_or(ErrorCode::Unknown);
                return Err(Error::broker(code, answer.error_message));
            }
            let value = (answer.offset >= 0).then_some((answer.offset, answer.timestamp_ms));
            found.insert(tp, value);
        }
    }
    Ok(found)
}
