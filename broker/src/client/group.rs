//! Talking to a consumer group's coordinator: finding it (and finding it again when it
//! moves), and calling it with retries on the errors that mean "ask again".

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::error::{Error, Result};
use crate::TopicPartition;
use crate::protocol::grpc::convert::group_partitions_to_proto;
use crate::protocol::grpc::proto::{self, ErrorCode};

/// How long a call waits for a coordinator to become available before it gives up.
const COORDINATOR_WAIT: Duration = Duration::from_secs(30);

/// The coordinator of one group, found on first use.
pub(crate) struct Coordinator {
    pub group: String,
    address: Mutex<Option<String>>,
}

impl Coordinator {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_string(),
            address: Mutex::new(None),
        }
    }

    async fn find(&self, cluster: &Cluster) -> Result<String> {
        if let Some(address) = self.address.lock().clone() {
            return Ok(address);
        }
        let group = self.group.clone();
        let found = cluster
            .with_any_broker(|address| {
                let group = group.clone();
                async move {
                    cluster
                        .group_client(&address)?
                        .find_coordinator(proto::FindCoordinatorRequest { group_id: group })
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|s| Error::from_status(s, &address))
                }
            })
            .await?;
        let address = format!("{}:{}", found.host, found.port);
        *self.address.lock() = Some(address.clone());
        Ok(address)
    }

    /// Forgets the coordinator, so the next call finds it again.
    pub fn lost(&self) {
        *self.address.lock() = None;
    }

    /// Calls the coordinator; finds it again (waiting while it is not available) when it
    /// moved or does not answer.
    pub async fn call<T, F, Fut>(&self, cluster: &Cluster, mut call: F) -> Result<T>
    where
        F: FnMut(proto::group_client::GroupClient<tonic::transport::Channel>, String) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let result = match self.find(cluster).await {
                Ok(address) => {
                    let client = cluster.group_client(&address)?;
                    match tokio::time::timeout(
                        cluster.request_timeout(),
                        call(client, address.clone()),
                    )
                    .await
                    {
                        Ok(result) => result.map_err(|s| Error::from_status(s, &address)),
                        Err(_) => Err(Error::Timeout {
                            what: format!("the coordinator of group '{}' at {address}", self.group),
                            waited_ms: cluster.request_timeout().as_millis() as u64,
                        }),
                    }
                }
                Err(error) => Err(error),
            };
            match result {
                Err(error) if Instant::now() < deadline && coordinator_moved(&error) => {
                    tracing::debug!(group = %self.group, %error, "finding the coordinator again");
                    self.lost();
                    if let Error::Connection { address, .. } = &error {
                        cluster.reset(address);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

/// Errors after which the coordinator should be looked up again.
fn coordinator_moved(error: &Error) -> bool {
    matches!(error, Error::Connection { .. } | Error::Timeout { .. })
        || matches!(
            error.code(),
            Some(
                ErrorCode::NotCoordinator
                    | ErrorCode::CoordinatorNotAvailable
                    | ErrorCode::BrokerShuttingDown
                    | ErrorCode::NotLeaderOrFollower
                    | ErrorCode::NotEnoughReplicas
                    | ErrorCode::RequestTimedOut
            )
        )
}

/// The committed offsets of `group` for `partitions` (all when empty).
pub(crate) async fn committed(
    cluster: &Cluster,
    coordinator: &Coordinator,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let request = proto::OffsetFetchRequest {
        group_id: coordinator.group.clone(),
        partitions: group_partitions_to_proto(partitions),
    };
    let response = coordinator
        .call(cluster, |mut client, _| {
            let request = request.clone();
            async move { client.offset_fetch(request).await.map(|r| r.into_inner()) }
        })
        .await?;
    Ok(response
        .offsets
        .into_iter()
        .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
        .collect())
}

/// Commits `offsets` for `group` as member `member_id` at `epoch` (an administrative commit
/// with "" and -1).
pub(crate) async fn commit(
    cluster: &Cluster,
    coordinator: &Coordinator,
    member_id: &str,
    epoch: i32,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let request = proto::OffsetCommitRequest {
        group_id: coordinator.group.clone(),
        member_id: member_id.to_string(),
        member_epoch: epoch,
        offsets: offsets
            .iter()
            .map(|(tp, offset)| proto::CommittedOffset {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect(),
    };
    coordinator
        .call(cluster, |mut client, _| {
            let request = request.clone();
            async move { client.offset_commit(request).await.map(|_| ()) }
        })
        .await
}
