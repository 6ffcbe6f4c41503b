//! The group coordinator of a broker: for every partition of `__consumer_offsets` this broker
//! leads, the groups stored there, loaded from that partition's log when leadership arrives.
//! Commits are appended to the log with acks=all and applied in memory once the in-sync
//! replicas have them, so a committed offset survives the loss of brokers as records do.
//! The offsets log is kept small by copying the live offsets of old segments to its end
//! and moving its start past them; followers move theirs with the leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use super::classic::{Answers, JoinOutcome, JoinRequest, Joined, SyncOutcome};
use super::records::{self, OffsetValue};
use super::state::{Committed, Group, GroupState, Heartbeat, HeartbeatAnswer};
use super::{GroupConfig, GroupError, offsets_partition_for, validate_group_id};
use crate::TopicPartition;
use crate::metadata::{Acks, MetadataSnapshot, OFFSETS_TOPIC};
use crate::record;
use crate::replication::{Partition, ReplicaManager};

/// How often sessions are checked and newly led offsets partitions loaded.
const TICK: Duration = Duration::from_millis(100);
/// How long an offset commit waits for the in-sync replicas.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The offsets log is compacted when it holds more than this many times its live bytes.
const GARBAGE_RATIO: u64 = 4;

/// One offset to commit.
/// What deleting some of a group's committed offsets came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetDeletion {
    /// The partitions whose offsets are gone.
    pub deleted: Vec<TopicPartition>,
    /// The partitions kept because a member of the group reads their topic.
    pub subscribed: Vec<TopicPartition>,
}

#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub tp: TopicPartition,
    pub offset: i64,
    pub metadata: String,
}

/// The groups of one offsets partition this broker leads, at one leader epoch.
struct Shard {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// None until loaded from the log.
    groups: Mutex<Option<HashMap<String, Group>>>,
    /// Classic-protocol members waiting for their JoinGroup or SyncGroup answer, by group
    /// and member id.
    waiters: parking_lot::Mutex<Waiters>,
}

type Waiting<T> = HashMap<(String, String), oneshot::Sender<Result<T, GroupError>>>;

#[derive(Default)]
struct Waiters {
    joins: Waiting<Joined>,
    syncs: Waiting<Bytes>,
}

impl Shard {
    /// Hands answers to the members of `group` that wait for them.
    fn deliver(&self, group: &str, answers: Answers) {
        if answers.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock();
        for (member, answer) in answers.joins {
            if let Some(waiter) = waiters.joins.remove(&(group.to_string(), member)) {
                let _ = waiter.send(answer);
            }
        }
        for (member, answer) in answers.syncs {
            if let Some(waiter) = waiters.syncs.remove(&(group.to_string(), member)) {
                let _ = waiter.send(answer);
            }
        }
    }
}

/// A JoinGroup's answer: the rebalance's outcome, or the id a new member joins again with.
#[derive(Debug)]
pub enum JoinAnswer {
    Joined(Joined),
    MemberIdRequired(String),
}

/// How long past its rebalance timeout a waiting JoinGroup or SyncGroup gives up.
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// Waits for a classic member's answer; a waiter dropped unanswered means the coordinator
/// moved (or a newer request of the same member took its place).
async fn wait_for<T>(
    group: &str,
    answer: oneshot::Receiver<Result<T, GroupError>>,
    patience: Duration,
) -> Result<T, GroupError> {
    match tokio::time::timeout(patience, answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(GroupError::NotCoordinator {
            group: group.to_string(),
        }),
        Err(_) => Err(GroupError::RebalanceInProgress {
            group: group.to_string(),
        }),
    }
}

pub struct GroupCoordinator {
    replicas: Arc<ReplicaManager>,
    config: GroupConfig,
    shards: parking_lot::Mutex<HashMap<u32, Arc<Shard>>>,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    /// Whether it is a classic group (Kafka clients' JoinGroup/SyncGroup, or no members
    /// and only committed offsets), not one of consumer-protocol members (KIP-848).
    pub classic: bool,
    pub state: GroupState,
    pub epoch: i32,
    pub members: Vec<MemberDescription>,
    pub offsets: BTreeMap<TopicPartition, i64>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub epoch: i32,
    pub subscribed: Vec<String>,
    pub assigned: Vec<TopicPartition>,
    pub revoking: Vec<TopicPartition>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, config: GroupConfig) -> Self {
        Self {
            replicas,
            config,
            shards: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The offsets partition that holds `group`, or why there is none yet.
    pub fn offsets_partition(&self, group: &str) -> Result<TopicPartition, GroupError> {
        validate_group_id(group)?;
        let Some(partitions) = partition_count(&self.replicas.metadata(), OFFSETS_TOPIC) else {
            return Err(GroupError::CoordinatorNotAvailable {
                group: group.to_string(),
                why: "the offsets topic is being created".into(),
            });
        };
        Ok(TopicPartition::new(
            OFFSETS_TOPIC,
            offsets_partition_for(group, partitions),
        ))
    }

    /// A member's session timeout within what the coordinator allows.
    fn session_timeout(&self, asked: Duration) -> Duration {
        asked.clamp(
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        )
    }

    /// The shard holding `group`, loaded, when this broker leads its partition.
    async fn shard(&self, group: &str) -> Result<Arc<Shard>, GroupError> {
        let tp = self.offsets_partition(group)?;
        let shard = self
            .shard_at(tp.partition)
            .ok_or_else(|| GroupError::NotCoordinator {
                group: group.to_string(),
            })?;
        self.load(&shard).await?;
        Ok(shard)
    }

    /// The shard of offsets partition `partition` when this broker leads it (a new one,
    /// not loaded yet, after a leadership change).
    fn shard_at(&self, partition: u32) -> Option<Arc<Shard>> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let replica = self.replicas.partition(&tp).filter(|p| p.is_leader());
        let mut shards = self.shards.lock();
        let Some(replica) = replica else {
            shards.remove(&partition);
            return None;
        };
        let epoch = replica.leader_epoch();
        let current = shards
            .get(&partition)
            .filter(|s| s.leader_epoch == epoch && Arc::ptr_eq(&s.partition, &replica));
        if let Some(shard) = current {
            return Some(shard.clone());
        }
        let shard = Arc::new(Shard {
            partition: replica,
            leader_epoch: epoch,
            groups: Mutex::new(None),
            waiters: parking_lot::Mutex::new(Waiters::default()),
        });
        shards.insert(partition, shard.clone());
        Some(shard)
    }

    /// Reads the shard's groups from its log, once.
    async fn load(&self, shard: &Shard) -> Result<(), GroupError> {
        let mut groups = shard.groups.lock().await;
        if groups.is_some() {
            return Ok(());
        }
        let log = shard.partition.log().clone();
        let tp = shard.partition.topic_partition().clone();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, GroupError> {
            let mut groups: HashMap<String, Group> = HashMap::new();
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            let mut decoded = Vec::new();
            while offset < end {
                let read = log
                    .read(offset, 1 << 20, end)
                    .map_err(crate::replication::ReplicaError::Log)?;
                let mut next = offset;
                for (at, header) in record::batches(&read.records) {
                    let batch = read.records.slice(at..at + header.total_len());
                    decoded.clear();
                    if let Err(error) = record::decode_batch(&batch, offset, &mut decoded) {
                        tracing::warn!(partition = %tp, %error, "skipping an unreadable batch of the offsets log");
                    }
                    for r in &decoded {
                        apply(&mut groups, r);
                    }
                    next = next.max(header.next_offset());
                }
                if next <= offset {
                    break;
                }
                offset = next;
            }
            groups.retain(|_, g| !g.is_dead());
            Ok(groups)
        })
        .await
        .map_err(|e| GroupError::Invalid(format!("loading the offsets log failed: {e}")))??;
        tracing::info!(partition = %shard.partition.topic_partition(), groups = loaded.len(), elapsed = ?started.elapsed(), "loaded consumer groups");
        *groups = Some(loaded);
        Ok(())
    }

    pub async fn heartbeat(
        &self,
        group_id: &str,
        mut request: Heartbeat,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let shard = self.shard(group_id).await?;
        if request.subscribed.is_empty() && request.member_epoch != -1 {
            return Err(GroupError::Invalid(
                "the member subscribes to no topic; subscribe to at least one".into(),
            ));
        }
        request.session_timeout = self.session_timeout(request.session_timeout);
        if request.rebalance_timeout.is_zero() {
            request.rebalance_timeout = request.session_timeout;
        }
        let metadata = self.replicas.metadata();
        let counts = |topic: &str| partition_count(&metadata, topic);
        let mut guard = shard.groups.lock().await;
        let groups = guard.as_mut().expect("loaded");
        let group = match groups.get_mut(group_id) {
            Some(group) if !group.classic.members.is_empty() => {
                return Err(GroupError::InconsistentProtocol {
                    group: group_id.to_string(),
                    why: "its members are Kafka clients using the classic group protocol; stop them, or use another group".into(),
                });
            }
            Some(group) => group,
            None if request.member_epoch == 0 => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id)),
            None if request.member_epoch == -1 => {
                return Ok(HeartbeatAnswer {
                    member_id: request.member_id,
                    member_epoch: -1,
                    assignment: BTreeSet::new(),
                    heartbeat_interval: self.config.heartbeat_interval,
                });
            }
            None => {
                return Err(GroupError::UnknownMember {
                    group: group_id.to_string(),
                    member: request.member_id,
                });
            }
        };
        group.heartbeat(
            request,
            Instant::now(),
            &counts,
            self.config.heartbeat_interval,
        )
    }

    /// A classic member's JoinGroup: waits until the rebalance it takes part in has joined
    /// every member (or its rebalance timeout passed).
    pub async fn join_group(
        &self,
        group_id: &str,
        mut request: JoinRequest,
    ) -> Result<JoinAnswer, GroupError> {
        let shard = self.shard(group_id).await?;
        request.session_timeout = self.session_timeout(request.session_timeout);
        let patience = request.rebalance_timeout + WAIT_SLACK;
        let answer = {
            let mut guard = shard.groups.lock().await;
            let groups = guard.as_mut().expect("loaded");
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id));
            if !group.members.is_empty() {
                return Err(GroupError::InconsistentProtocol {
                    group: group_id.to_string(),
                    why: "its members use the consumer group protocol (KIP-848, group.protocol=consumer); use that protocol for this group too".into(),
                });
            }
            let (outcome, answers) = group.classic.join(group_id, request, Instant::now())?;
            let member_id = match outcome {
                JoinOutcome::MemberIdRequired { member_id } => {
                    return Ok(JoinAnswer::MemberIdRequired(member_id));
                }
                JoinOutcome::Wait { member_id } => member_id,
            };
            let (sender, answer) = oneshot::channel();
            shard
                .waiters
                .lock()
                .joins
                .insert((group_id.to_string(), member_id), sender);
            shard.deliver(group_id, answers);
            answer
        };
        wait_for(group_id, answer, patience)
            .await
            .map(JoinAnswer::Joined)
    }

    /// A classic member's SyncGroup: the leader's carries everyone's assignment; the others
    /// wait for it.
    pub async fn sync_group(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, GroupError> {
        let shard = self.shard(group_id).await?;
        let (answer, patience) = {
            let mut guard = shard.groups.lock().await;
            let groups = guard.as_mut().expect("loaded");
            let Some(group) = groups.get_mut(group_id) else {
                return Err(GroupError::UnknownMember {
                    group: group_id.to_string(),
                    member: member_id.to_string(),
                });
            };
            let outcome =
                group
                    .classic
                    .sync(group_id, member_id, generation, assignments, Instant::now())?;
            match outcome {
                SyncOutcome::Assigned(assignment, answers) => {
                    shard.deliver(group_id, answers);
                    return Ok(assignment);
                }
                SyncOutcome::Wait => {}
            }
            let patience = group
                .classic
                .members
                .get(member_id)
                .map_or(Duration::ZERO, |m| m.rebalance_timeout)
                + WAIT_SLACK;
            let (sender, answer) = oneshot::channel();
            shard
                .waiters
                .lock()
                .syncs
                .insert((group_id.to_string(), member_id.to_string()), sender);
            (answer, patience)
        };
        wait_for(group_id, answer, patience).await
    }

    /// A classic member's Heartbeat.
    pub async fn classic_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        let shard = self.shard(group_id).await?;
        let mut guard = shard.groups.lock().await;
        let groups = guard.as_mut().expect("loaded");
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::UnknownMember {
                group: group_id.to_string(),
                member: member_id.to_string(),
            });
        };
        group
            .classic
            .heartbeat(group_id, member_id, generation, Instant::now())
    }

    /// Classic members leaving (LeaveGroup); one result per member.
    pub async fn leave_group(
        &self,
        group_id: &str,
        member_ids: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let shard = self.shard(group_id).await?;
        let mut guard = shard.groups.lock().await;
        let groups = guard.as_mut().expect("loaded");
        let Some(group) = groups.get_mut(group_id) else {
            return Ok(member_ids
                .iter()
                .map(|m| {
                    Err(GroupError::UnknownMember {
                        group: group_id.to_string(),
                        member: m.clone(),
                    })
                })
                .collect());
        };
        let (results, answers) = group.classic.leave(group_id, member_ids, Instant::now());
        shard.deliver(group_id, answers);
        Ok(results)
    }

    /// A copy of `group` as its coordinator holds it; None when it does not exist.
    pub async fn group(&self, group_id: &str) -> Result<Option<Group>, GroupError> {
        let shard = self.shard(group_id).await?;
        let guard = shard.groups.lock().await;
        Ok(guard.as_ref().expect("loaded").get(group_id).cloned())
    }

    /// Commits offsets for a member (or, with an empty member id and epoch -1, for an
    /// administrator while the group has no members).
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<OffsetCommit>,
    ) -> Result<(), GroupError> {
        let shard = self.shard(group_id).await?;
        let metadata = self.replicas.metadata();
        for commit in &offsets {
            match partition_count(&metadata, &commit.tp.topic) {
                Some(n) if commit.tp.partition < n => {}
                _ => return Err(GroupError::UnknownPartition(commit.tp.clone())),
            }
            if commit.offset < 0 {
                return Err(GroupError::Invalid(format!(
                    "cannot commit offset {} for {}: offsets start at 0",
                    commit.offset, commit.tp
                )));
            }
        }
        let mut guard = shard.groups.lock().await;
        let groups = guard.as_mut().expect("loaded");
        let admin = member_id.is_empty() && member_epoch == -1;
        match groups.get(group_id) {
            // Classic members commit with their generation.
            Some(group) if !group.classic.members.is_empty() => {
                group
                    .classic
                    .check_commit(group_id, member_id, member_epoch)?
            }
            Some(group) => {
                group.check_commit(member_id, member_epoch, offsets.iter().map(|c| &c.tp))?
            }
            None if admin => {}
            None => {
                return Err(GroupError::UnknownMember {
                    group: group_id.to_string(),
                    member: member_id.to_string(),
                });
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let now_ms = crate::now_ms();
        let values: Vec<(TopicPartition, OffsetValue)> = offsets
            .into_iter()
            .map(|c| {
                (
                    c.tp,
                    OffsetValue {
                        offset: c.offset,
                        metadata: c.metadata,
                        commit_time_ms: now_ms,
                    },
                )
            })
            .collect();
        let first = self.append(&shard, group_id, &values).await?;
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        for (i, (tp, value)) in values.into_iter().enumerate() {
            group.offsets.insert(
                tp,
                Committed {
                    offset: value.offset,
                    metadata: value.metadata,
                    commit_time_ms: value.commit_time_ms,
                    record_offset: first + i as i64,
                },
            );
        }
        Ok(())
    }

    /// Deletes the committed offsets of `group` for `partitions` (every one it has when
    /// None), with tombstones in the offsets log that the in-sync replicas have before the
    /// offsets are forgotten; a group left with no offsets is gone. While the group has
    /// members, the offsets of topics they read are kept (`subscribed`), and the whole
    /// request is refused when it names no partitions or a member's topics are not known
    /// (a classic member of another protocol type than consumers).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<OffsetDeletion, GroupError> {
        let shard = self.shard(group_id).await?;
        let mut guard = shard.groups.lock().await;
        let groups = guard.as_mut().expect("loaded");
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GroupError::NotFound(group_id.to_string()));
        };
        let members = group.members.len() + group.classic.members.len();
        let not_empty = || GroupError::NotEmpty {
            group: group_id.to_string(),
            members,
        };
        let read: BTreeSet<String> = if members == 0 {
            BTreeSet::new()
        } else {
            if partitions.is_none_or(<[_]>::is_empty) {
                return Err(not_empty());
            }
            let mut read: BTreeSet<String> = group
                .members
                .values()
                .flat_map(|m| m.subscribed.iter().cloned())
                .collect();
            for member in group.classic.members.values() {
                read.extend(member.subscribed.clone().ok_or_else(not_empty)?);
            }
            read
        };
        let asked: Vec<TopicPartition> = match partitions {
            None => group.offsets.keys().cloned().collect(),
            Some(partitions) => partitions.to_vec(),
        };
        let (subscribed, asked): (Vec<_>, Vec<_>) =
            asked.into_iter().partition(|tp| read.contains(&tp.topic));
        let deleted: Vec<TopicPartition> = asked
            .into_iter()
            .filter(|tp| group.offsets.contains_key(tp))
            .collect();
        if !deleted.is_empty() {
            let batch = records::encode_deletions(group_id, &deleted, crate::now_ms());
            let tp = shard.partition.topic_partition().clone();
            self.replicas
                .produce(&tp, &batch, Acks::All, COMMIT_TIMEOUT)
                .await?;
            for tp in &deleted {
                group.offsets.remove(tp);
            }
        }
        if group.is_dead() {
            groups.remove(group_id);
        }
        Ok(OffsetDeletion {
            deleted,
            subscribed,
        })
    }

    /// Appends offsets of `group` to the shard's log and waits for the in-sync replicas;
    /// returns the offset of the first record.
    async fn append(
        &self,
        shard: &Shard,
        group: &str,
        values: &[(TopicPartition, OffsetValue)],
    ) -> Result<i64, GroupError> {
        let batch = records::encode(group, values);
        let tp = shard.partition.topic_partition().clone();
        let info = self
            .replicas
            .produce(&tp, &batch, Acks::All, COMMIT_TIMEOUT)
            .await?;
        Ok(info.first_offset)
    }

    /// The committed offsets of `group` (all of them when `partitions` is empty).
    pub async fn committed(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Committed>, GroupError> {
        let shard = self.shard(group_id).await?;
        let guard = shard.groups.lock().await;
        let Some(group) = guard.as_ref().expect("loaded").get(group_id) else {
            return Ok(BTreeMap::new());
        };
        Ok(group
            .offsets
            .iter()
            .filter(|(tp, _)| partitions.is_empty() || partitions.contains(tp))
            .map(|(tp, c)| (tp.clone(), c.clone()))
            .collect())
    }

    pub async fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        let shard = self.shard(group_id).await?;
        let guard = shard.groups.lock().await;
        let group = guard
            .as_ref()
            .expect("loaded")
            .get(group_id)
            .ok_or_else(|| GroupError::NotFound(group_id.to_string()))?;
        Ok(describe(group))
    }

    /// The groups of every offsets partition this broker leads.
    pub async fn list(&self) -> Vec<GroupDescription> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().values().cloned().collect();
        let mut out = Vec::new();
        for shard in shards {
            if let Some(groups) = shard.groups.lock().await.as_ref() {
                out.extend(groups.values().map(describe));
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// Loads offsets partitions as this broker becomes their leader, expires members, and
    /// compacts the offsets logs, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = ticker.tick() => {}, () = stop.cancelled() => return }
            self.tick().await;
        }
    }

    async fn tick(&self) {
        let metadata = self.replicas.metadata();
        let partitions = partition_count(&metadata, OFFSETS_TOPIC).unwrap_or(0);
        self.shards.lock().retain(|p, _| *p < partitions);
        let counts = |topic: &str| partition_count(&metadata, topic);
        for partition in 0..partitions {
            let Some(shard) = self.shard_at(partition) else {
                continue;
            };
            if let Err(error) = self.load(&shard).await {
                tracing::warn!(partition, %error, "could not load consumer groups");
                continue;
            }
            let mut guard = shard.groups.lock().await;
            let groups = guard.as_mut().expect("loaded");
            let now = Instant::now();
            for (id, group) in groups.iter_mut() {
                group.expire(now, &counts);
                shard.deliver(id, group.classic.expire(id, now));
            }
            groups.retain(|_, g| !g.is_dead());
            if let Err(error) = self.compact(&shard, groups).await {
                tracing::warn!(partition, %error, "could not compact the offsets log");
            }
        }
    }

    /// Keeps the offsets log small: once it holds much more than its live offsets and has
    /// sealed segments, the live offsets written before the active segment are written
    /// again at the end and the log start moves past everything older (on the followers
    /// too, which follow the leader's log start).
    async fn compact(
        &self,
        shard: &Shard,
        groups: &mut HashMap<String, Group>,
    ) -> Result<(), GroupError> {
        let log = shard.partition.log();
        let live: usize = groups.values().map(|g| g.offsets.len()).sum();
        let live_bytes = live as u64 * 128;
        if log.segment_count() < 2 || log.size() < GARBAGE_RATIO * live_bytes + (1 << 20) {
            return Ok(());
        }
        let active_base = log.active_segment_base();
        for (group_id, group) in groups.iter_mut() {
            let old: Vec<(TopicPartition, OffsetValue)> = group
                .offsets
                .iter()
                .filter(|(_, c)| c.record_offset < active_base)
                .map(|(tp, c)| {
                    (
                        tp.clone(),
                        OffsetValue {
                            offset: c.offset,
                            metadata: c.metadata.clone(),
                            commit_time_ms: c.commit_time_ms,
                        },
                    )
                })
                .collect();
            if old.is_empty() {
                continue;
            }
            let first = self.append(shard, group_id, &old).await?;
            for (i, (tp, _)) in old.iter().enumerate() {
                if let Some(c) = group.offsets.get_mut(tp) {
                    c.record_offset = first + i as i64;
                }
            }
        }
        let oldest_live = groups
            .values()
            .flat_map(|g| g.offsets.values().map(|c| c.record_offset))
            .min()
            .unwrap_or(i64::MAX);
        let start = oldest_live
            .min(active_base)
            .min(shard.partition.high_watermark());
        shard
            .partition
            .log()
            .advance_log_start(start)
            .map_err(crate::replication::ReplicaError::Log)?;
        Ok(())
    }
}

/// The number of partitions of `topic`, None when it does not exist.
fn partition_count(metadata: &MetadataSnapshot, topic: &str) -> Option<u32> {
    metadata
        .topics
        .get(topic)
        .map(|t| t.partitions.len() as u32)
}

fn apply(groups: &mut HashMap<String, Group>, record: &record::Record) {
    let Some((key, value)) = records::decode(record) else {
        return;
    };
    let group = groups
        .entry(key.group.clone())
        .or_insert_with(|| Group::new(&key.group));
    let tp = TopicPartition::new(key.topic, key.partition);
    match value {
        Some(v) => {
            group.offsets.insert(
                tp,
                Committed {
                    offset: v.offset,
                    metadata: v.metadata,
                    commit_time_ms: v.commit_time_ms,
                    record_offset: record.offset,
                },
            );
        }
        None => {
            group.offsets.remove(&tp);
        }
    }
}

fn describe(group: &Group) -> GroupDescription {
    GroupDescription {
        group_id: group.id.clone(),
        classic: group.members.is_empty(),
        state: group.state(),
        epoch: group.epoch,
        members: group
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                client_id: m.client_id.clone(),
                epoch: m.epoch,
                subscribed: m.subscribed.iter().cloned().collect(),
                assigned: m.assigned.iter().cloned().collect(),
                revoking: m.revoking.iter().cloned().collect(),
            })
            .collect(),
        offsets: group
            .offsets
            .iter()
            .map(|(tp, c)| (tp.clone(), c.offset))
            .collect(),
    }
}
