//! Looking up offsets (earliest, latest, by timestamp) from partition leaders.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::cluster::Cluster;
use super::error::{Error, Result};
use crate::TopicPartition;
use crate::protocol::grpc::proto::{self, ErrorCode, OffsetSpec};

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

/// Asks each partition's leader; one request per leader. Fails if any partition's
/// lookup fails.
pub async fn list_offsets(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    query: OffsetQuery,
) -> Result<BTreeMap<TopicPartition, Found>> {
    let wait = cluster.request_timeout();
    list_offsets_each(cluster, partitions, query, wait)
        .await
        .into_iter()
        .map(|(tp, found)| found.map(|found| (tp, found)))
        .collect()
}

/// Asks every leader at once, each for at most `wait`; the answer for each partition is
/// its own, so one unreachable leader does not hide what the others said.
pub async fn list_offsets_each(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    query: OffsetQuery,
    wait: Duration,
) -> BTreeMap<TopicPartition, Result<Found>> {
    let mut results = BTreeMap::new();
    let mut by_leader: HashMap<String, Vec<TopicPartition>> = HashMap::new();
    for tp in partitions {
        match cluster.leader(tp).await {
            Ok(leader) => by_leader.entry(leader).or_default().push(tp.clone()),
            Err(error) => {
                results.insert(tp.clone(), Err(error));
            }
        }
    }
    let (spec, timestamp_ms) = match query {
        OffsetQuery::Earliest => (OffsetSpec::Earliest, 0),
        OffsetQuery::Latest => (OffsetSpec::Latest, 0),
        OffsetQuery::Timestamp(ts) => (OffsetSpec::Timestamp, ts),
    };
    let asks = by_leader.into_iter().map(|(leader, tps)| async move {
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
        let call = async {
            cluster
                .broker_client(&leader)?
                .list_offsets(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| Error::from_status(s, &leader))
        };
        let answer = tokio::time::timeout(wait, call).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: format!("offsets from the leader at {leader}"),
                waited_ms: wait.as_millis() as u64,
            })
        });
        (tps, answer)
    });
    for (tps, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(response) => {
                for answer in response.offsets {
                    let tp = TopicPartition::new(answer.topic, answer.partition);
                    let found = if answer.error_code == i32::from(ErrorCode::None) {
                        Ok((answer.offset >= 0).then_some((answer.offset, answer.timestamp_ms)))
                    } else {
                        let code =
                            ErrorCode::try_from(answer.error_code).unwrap_or(ErrorCode::Unknown);
                        Err(Error::broker(code, answer.error_message))
                    };
                    results.insert(tp, found);
                }
            }
            Err(error) => {
                for tp in tps {
                    results.insert(tp, Err(error.clone()));
                }
            }
        }
    }
    results
}
