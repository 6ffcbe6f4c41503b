//! A consumer's membership in its group: a task that heartbeats to the coordinator with
//! the subscription and the partitions the consumer owns, and keeps the assignment the
//! coordinator hands out for the consumer to take up in `poll`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::error::Error;
use super::group::Coordinator;
use crate::TopicPartition;
use crate::protocol::grpc::convert::{group_partitions_from_proto, group_partitions_to_proto};
use crate::protocol::grpc::proto::{self, ErrorCode};

#[derive(Debug, Default)]
pub(crate) struct MemberState {
    pub member_id: String,
    pub epoch: i32,
    /// What the coordinator said the consumer may own, as of its last answer.
    pub assignment: BTreeSet<TopicPartition>,
    /// What the consumer owns now (set by `poll` after it took an assignment up).
    pub owned: BTreeSet<TopicPartition>,
    /// The coordinator no longer knows the member: its partitions are lost (someone else
    /// may have them already), to be dropped without committing.
    pub lost: bool,
    /// The last error heartbeats met, while they keep failing.
    pub error: Option<Error>,
}

pub(crate) struct Membership {
    pub coordinator: Arc<Coordinator>,
    pub state: Arc<Mutex<MemberState>>,
    /// Wakes the heartbeat task (the consumer gave partitions up: say so at once).
    pub wake: Arc<Notify>,
    /// Signalled after every answer from the coordinator.
    pub answered: Arc<Notify>,
    task: JoinHandle<()>,
    cluster: Cluster,
    settings: Settings,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub client_id: String,
}

impl Settings {
    /// A heartbeat of member `member_id` at `epoch` (0 joins, -1 leaves) owning `owned`.
    fn heartbeat(
        &self,
        group: &str,
        member_id: String,
        epoch: i32,
        owned: Vec<proto::GroupTopicPartitions>,
    ) -> proto::GroupHeartbeatRequest {
        proto::GroupHeartbeatRequest {
            group_id: group.to_string(),
            member_id,
            member_epoch: epoch,
            subscribed_topics: self.topics.clone(),
            owned,
            session_timeout_ms: self.session_timeout.as_millis() as u32,
            rebalance_timeout_ms: self.rebalance_timeout.as_millis() as u32,
            client_id: self.client_id.clone(),
        }
    }
}

impl Membership {
    pub fn start(cluster: Cluster, group: &str, settings: Settings) -> Self {
        let coordinator = Arc::new(Coordinator::new(group));
        let state = Arc::new(Mutex::new(MemberState::default()));
        let wake = Arc::new(Notify::new());
        let answered = Arc::new(Notify::new());
        let task = tokio::spawn(heartbeats(
            cluster.clone(),
            coordinator.clone(),
            state.clone(),
            wake.clone(),
            answered.clone(),
            settings.clone(),
        ));
        Self {
            coordinator,
            state,
            wake,
            answered,
            task,
            cluster,
            settings,
        }
    }

    /// Leaves the group (its partitions go to the others at once) and stops heartbeating.
    pub async fn leave(self) {
        self.task.abort();
        let member_id = self.state.lock().member_id.clone();
        if member_id.is_empty() {
            return;
        }
        let request = self
            .settings
            .heartbeat(&self.coordinator.group, member_id, -1, Vec::new());
        let left = self
            .coordinator
            .call(&self.cluster, |mut client, _| {
                let request = request.clone();
                async move { client.heartbeat(request).await.map(|_| ()) }
            })
            .await;
        if let Err(error) = left {
            tracing::info!(%error, "could not leave the group; the coordinator will remove this member when its session expires");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeats(
    cluster: Cluster,
    coordinator: Arc<Coordinator>,
    state: Arc<Mutex<MemberState>>,
    wake: Arc<Notify>,
    answered: Arc<Notify>,
    settings: Settings,
) {
    loop {
        let request = {
            let state = state.lock();
            // Lost partitions are not the member's any more, whatever `poll` has done.
            let owned = if state.lost {
                Vec::new()
            } else {
                group_partitions_to_proto(&state.owned)
            };
            settings.heartbeat(
                &coordinator.group,
                state.member_id.clone(),
                state.epoch,
                owned,
            )
        };
        let result = coordinator
            .call(&cluster, |mut client, _| {
                let request = request.clone();
                async move { client.heartbeat(request).await.map(|r| r.into_inner()) }
            })
            .await;
        let wait = match result {
            Ok(answer) => {
                let mut state = state.lock();
                state.member_id = answer.member_id;
                state.epoch = answer.member_epoch;
                state.assignment = group_partitions_from_proto(answer.assignment);
                state.error = None;
                Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(10)))
            }
            Err(error) => {
                let mut state = state.lock();
                match error.code() {
                    Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => {
                        tracing::info!(group = %coordinator.group, %error, "fenced from the group; joining again");
                        state.member_id.clear();
                        state.epoch = 0;
                        state.assignment.clear();
                        state.lost = true;
                        Duration::ZERO
                    }
                    // A lost answer: join again under the same id, keeping the partitions.
                    Some(ErrorCode::StaleMemberEpoch) => {
                        state.epoch = 0;
                        Duration::ZERO
                    }
                    _ => {
                        tracing::warn!(group = %coordinator.group, %error, "heartbeat failed; retrying");
                        state.error = Some(error);
                        Duration::from_millis(500)
                    }
                }
            }
        };
        answered.notify_waiters();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}
