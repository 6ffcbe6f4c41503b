//! One partition replica on this broker: its log, its role, and (as leader) what each
//! follower has, from which the high watermark and the in-sync replica set follow.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use super::{IsrChange, ReplicaError};
use crate::TopicPartition;
use crate::config::TopicConfig;
use crate::log::{AppendInfo, Log, ReadResult, Records, replace_file};
use crate::metadata::PartitionRecord;

const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// What this replica does for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// No leader, or this broker is not (yet) told its part.
    Offline,
}

/// The leader, and its epoch, a follower's fetch went to: its answer applies only while
/// this replica still follows that leader at that epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedFrom {
    pub leader: i32,
    pub epoch: i32,
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct FollowerState {
    /// The follower has every offset below this; -1 until it fetches.
    log_end: i64,
    last_fetch: Instant,
    /// The leader's log end when the follower last fetched.
    leader_end_at_last_fetch: i64,
    /// Last time the follower had everything the leader had.
    last_caught_up: Instant,
}

struct State {
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    /// As the controller committed it.
    isr: Vec<i32>,
    /// An ISR change proposed to the controller and not yet answered.
    pending_isr: Option<IsrChange>,
    followers: HashMap<i32, FollowerState>,
    min_insync_replicas: u32,
}

impl State {
    /// The committed ISR plus replicas a pending expansion adds: the high watermark waits
    /// for all of them, so it never gets ahead of what a committed ISR has.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        for r in self.pending_isr.iter().flat_map(|p| &p.new_isr) {
            if !isr.contains(r) {
                isr.push(*r);
            }
        }
        isr
    }
}

/// A replica's view of the partition, for describing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub role: Role,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

pub struct Partition {
    tp: TopicPartition,
    topic_id: Uuid,
    broker_id: i32,
    log: Arc<Log>,
    state: RwLock<State>,
    /// Consumers read below it; every advance wakes waiting fetches and acks=all producers.
    high_watermark: watch::Sender<i64>,
    /// Every append wakes followers long-polling for data.
    log_end: watch::Sender<i64>,
    /// The leader epoch this replica leads at, or -1: acks=all producers waiting here stop
    /// waiting when it changes, since a leader that moved on cannot vouch for them.
    leading: watch::Sender<i32>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition").field("tp", &self.tp).finish()
    }
}

/// What a successful consumer read found.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub data: ReadResult<Records>,
    pub high_watermark: i64,
}

/// The leader's answer to one partition of a follower's fetch.
#[derive(Debug, Clone)]
pub enum ReplicaRead {
    Data {
        records: Bytes,
        high_watermark: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// The follower's log differs from the leader's: truncate to `end_offset` of `epoch`.
    Diverging {
        epoch: i32,
        end_offset: i64,
        high_watermark: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
}

impl Partition {
    pub(super) fn new(
        tp: TopicPartition,
        topic_id: Uuid,
        broker_id: i32,
        log: Arc<Log>,
        high_watermark: Option<i64>,
    ) -> Self {
        let leo = log.log_end_offset();
        let hw = high_watermark
            .unwrap_or(0)
            .clamp(log.log_start_offset(), leo);
        Self {
            tp,
            topic_id,
            broker_id,
            state: RwLock::new(State {
                role: Role::Offline,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                pending_isr: None,
                followers: HashMap::new(),
                min_insync_replicas: 1,
            }),
            high_watermark: watch::Sender::new(hw),
            log_end: watch::Sender::new(leo),
            leading: watch::Sender::new(-1),
            log,
        }
    }

    /// The topic id recorded in a log directory, if any.
    pub(super) fn recorded_topic_id(dir: &Path) -> Option<Uuid> {
        let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("topic_id:"))
            .and_then(|id| id.trim().parse().ok())
    }

    /// Records which topic (by id) this log belongs to, so that a topic deleted and created
    /// again under the same name never picks up the old data.
    pub(super) fn record_topic_id(dir: &Path, topic_id: Uuid) -> std::io::Result<()> {
        replace_file(
            &dir.join(PARTITION_METADATA_FILE),
            format!("version: 0\ntopic_id: {topic_id}\n").as_bytes(),
        )
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn role(&self) -> Role {
        self.state.read().role
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    pub fn status(&self) -> PartitionStatus {
        let state = self.state.read();
        PartitionStatus {
            role: state.role,
            leader_epoch: state.leader_epoch,
            isr: state.isr.clone(),
            high_watermark: self.high_watermark(),
            log_end_offset: self.log.log_end_offset(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    fn set_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|current| {
            let changed = *current != hw;
            *current = hw;
            changed
        });
    }

    /// Applies what the controller says of the partition. Returns the role this replica now
    /// has and whether it changed leadership epoch (so a follower must check its log against
    /// the leader before fetching again).
    pub(super) fn apply(
        &self,
        record: &PartitionRecord,
        config: &TopicConfig,
    ) -> Result<(Role, bool), ReplicaError> {
        let mut state = self.state.write();
        let role = if record.leader == self.broker_id {
            Role::Leader
        } else if record.leader >= 0 && record.replicas.contains(&self.broker_id) {
            Role::Follower {
                leader: record.leader,
            }
        } else {
            Role::Offline
        };
        let new_epoch = record.leader_epoch != state.leader_epoch || role != state.role;
        if record.partition_epoch != state.partition_epoch {
            state.pending_isr = None;
        }
        state.replicas = record.replicas.clone();
        state.isr = record.isr.clone();
        state.partition_epoch = record.partition_epoch;
        state.min_insync_replicas = config.min_insync_replicas;
        if new_epoch {
            state.leader_epoch = record.leader_epoch;
            state.role = role;
            self.leading.send_replace(if role == Role::Leader {
                record.leader_epoch
            } else {
                -1
            });
            if role == Role::Leader {
                self.log.begin_leader_epoch(record.leader_epoch)?;
                let now = Instant::now();
                let leo = self.log.log_end_offset();
                // Followers get a full lag period to show they are caught up.
                state.followers = record
                    .replicas
                    .iter()
                    .filter(|r| **r != self.broker_id)
                    .map(|r| {
                        (
                            *r,
                            FollowerState {
                                log_end: -1,
                                last_fetch: now,
                                leader_end_at_last_fetch: leo,
                                last_caught_up: now,
                            },
                        )
                    })
                    .collect();
            } else {
                state.followers.clear();
            }
        } else if role == Role::Leader {
            // The same leader, other replicas (a reassignment adds or drops them): track
            // the new ones from their first fetch, forget the dropped ones.
            let now = Instant::now();
            let leo = self.log.log_end_offset();
            state.followers.retain(|r, _| record.replicas.contains(r));
            for r in record.replicas.iter().filter(|r| **r != self.broker_id) {
                state.followers.entry(*r).or_insert(FollowerState {
                    log_end: -1,
                    last_fetch: now,
                    leader_end_at_last_fetch: leo,
                    last_caught_up: now,
                });
            }
        }
        if role == Role::Leader {
            self.update_high_watermark(&state);
        }
        Ok((role, new_epoch))
    }

    /// Takes the replica out of service before it is deleted: no role, so answers to fetches
    /// still in flight are dropped and requests still holding it are refused.
    pub(super) fn retire(&self) {
        let mut state = self.state.write();
        state.role = Role::Offline;
        state.leader_epoch = -1;
        state.pending_isr = None;
        state.followers.clear();
        self.leading.send_replace(-1);
    }

    /// The high watermark: the smallest log end over the (maximal) ISR. It only moves
    /// forward, except that it never exceeds this replica's own log end.
    fn update_high_watermark(&self, state: &State) {
        let leo = self.log.log_end_offset();
        let mut hw = leo;
        for replica in state.maximal_isr() {
            if replica != self.broker_id {
                hw = hw.min(state.followers.get(&replica).map_or(-1, |f| f.log_end));
            }
        }
        let current = self.high_watermark();
        if hw > current {
            self.set_high_watermark(hw);
        }
    }

    /// Appends a producer's batches as leader. With acks=all the ISR must hold at least
    /// `min.insync.replicas`, or nothing is written.
    pub fn append_as_leader(
        &self,
        records: &Bytes,
        require_min_isr: bool,
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), ReplicaError> {
        let state = self.state.read();
        if state.role != Role::Leader {
            return Err(ReplicaError::NotLeader {
                tp: self.tp.clone(),
                leader: None,
            });
        }
        if require_min_isr && (state.isr.len() as u32) < state.min_insync_replicas {
            return Err(ReplicaError::NotEnoughReplicas {
                tp: self.tp.clone(),
                isr: state.isr.len(),
                required: state.min_insync_replicas,
            });
        }
        let info = self
            .log
            .append_as_leader(records, state.leader_epoch, now_ms)?;
        self.log_end.send_replace(self.log.log_end_offset());
        self.update_high_watermark(&state);
        Ok((info, state.leader_epoch))
    }

    /// Waits until the high watermark reaches `offset` (every in-sync replica has the
    /// records below it) or `wait` runs out, while this replica still leads at
    /// `leader_epoch` (the epoch of the append); then the ISR must still hold at least
    /// `min.insync.replicas`.
    pub async fn wait_for_replication(
        &self,
        offset: i64,
        wait: Duration,
        leader_epoch: i32,
    ) -> Result<(), ReplicaError> {
        let not_leader = || ReplicaError::NotLeader {
            tp: self.tp.clone(),
            leader: None,
        };
        let mut hw = self.subscribe();
        let mut leading = self.leading.subscribe();
        let replicated = tokio::time::timeout(wait, hw.wait_for(|&hw| hw >= offset));
        tokio::select! {
            result = replicated => match result {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(ReplicaError::ShuttingDown),
                Err(_) => {
                    return Err(ReplicaError::Timeout {
                        tp: self.tp.clone(),
                        waited: wait,
                    });
                }
            },
            // Leadership moved (or the replica went): the records may be truncated by the
            // next leader, so they are not acknowledged here. The producer retries there.
            _ = leading.wait_for(|&epoch| epoch != leader_epoch) => return Err(not_leader()),
        }
        // Reached as leader at the epoch of the append, or not at all.
        if *self.leading.borrow() != leader_epoch {
            return Err(not_leader());
        }
        let state = self.state.read();
        if (state.isr.len() as u32) < state.min_insync_replicas {
            return Err(ReplicaError::NotEnoughReplicasAfterAppend {
                tp: self.tp.clone(),
                isr: state.isr.len(),
                required: state.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// Reads committed batches (below the high watermark) for a consumer; leaders only. With
    /// `in_file`, the batches are left in their segment file for the caller to send.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        in_file: bool,
    ) -> Result<PartitionRead, ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader {
                tp: self.tp.clone(),
                leader: None,
            });
        }
        let high_watermark = self.high_watermark();
        let data = if in_file {
            self.log.read_file(offset, max_bytes, high_watermark)?
        } else {
            let read = self.log.read(offset, max_bytes, high_watermark)?;
            ReadResult {
                records: Records::Memory(read.records),
                log_start_offset: read.log_start_offset,
                log_end_offset: read.log_end_offset,
            }
        };
        Ok(PartitionRead {
            data,
            high_watermark,
        })
    }

    /// The leader's side of a follower's fetch: records what the follower has, moves the
    /// high watermark and proposes ISR additions, checks the follower's log against this
    /// one, and reads what the follower needs next (up to the log end).
    pub(super) fn replica_read(
        &self,
        follower: i32,
        fetch_offset: i64,
        follower_epoch: i32,
        last_fetched_epoch: i32,
        max_bytes: usize,
        proposals: &dyn Fn(IsrChange),
    ) -> Result<ReplicaRead, ReplicaError> {
        let mut state = self.state.write();
        // A follower at a newer epoch heard of a leadership change before this broker did:
        // say so (UNKNOWN_LEADER_EPOCH) whatever this broker's role still is, so it asks
        // again shortly instead of taking this broker for a former leader.
        if follower_epoch > state.leader_epoch {
            return Err(ReplicaError::EpochMismatch {
                tp: self.tp.clone(),
                theirs: follower_epoch,
                ours: state.leader_epoch,
            });
        }
        if state.role != Role::Leader {
            return Err(ReplicaError::NotLeader {
                tp: self.tp.clone(),
                leader: None,
            });
        }
        if follower_epoch != state.leader_epoch {
            return Err(ReplicaError::EpochMismatch {
                tp: self.tp.clone(),
                theirs: follower_epoch,
                ours: state.leader_epoch,
            });
        }
        if !state.replicas.contains(&follower) {
            return Err(ReplicaError::NotAReplica {
                tp: self.tp.clone(),
                broker: follower,
            });
        }
        let log_start = self.log.log_start_offset();
        let leo = self.log.log_end_offset();
        let hw = self.high_watermark();
        if last_fetched_epoch >= 0 {
            let end = self.log.epoch_end_offset(last_fetched_epoch);
            let diverges = match end {
                Some((epoch, end)) => epoch != last_fetched_epoch || end < fetch_offset,
                None => true,
            };
            if diverges {
                let (epoch, end_offset) = end.unwrap_or((-1, log_start));
                return Ok(ReplicaRead::Diverging {
                    epoch,
                    end_offset,
                    high_watermark: hw,
                    log_start_offset: log_start,
                    log_end_offset: leo,
                });
            }
        }
        if fetch_offset < log_start || fetch_offset > leo {
            return Err(ReplicaError::Log(crate::log::LogError::OffsetOutOfRange {
                partition: self.tp.clone(),
                requested: fetch_offset,
                log_start,
                log_end: leo,
            }));
        }
        let now = Instant::now();
        if let Some(f) = state.followers.get_mut(&follower) {
            if fetch_offset >= leo {
                f.last_caught_up = now;
            } else if fetch_offset >= f.leader_end_at_last_fetch {
                f.last_caught_up = f.last_fetch;
            }
            f.log_end = fetch_offset;
            f.last_fetch = now;
            f.leader_end_at_last_fetch = leo;
        }
        // A follower that has everything up to the high watermark (and this epoch's start)
        // joins the ISR.
        let epoch_start = self.log.latest_epoch().map_or(0, |e| e.start_offset);
        if !state.maximal_isr().contains(&follower)
            && state.pending_isr.is_none()
            && fetch_offset >= hw
            && fetch_offset >= epoch_start
        {
            let mut new_isr = state.isr.clone();
            new_isr.push(follower);
            self.propose(&mut state, new_isr, proposals);
        }
        self.update_high_watermark(&state);
        drop(state);
        let data = self.log.read(fetch_offset, max_bytes, i64::MAX)?;
        Ok(ReplicaRead::Data {
            records: data.records,
            high_watermark: self.high_watermark(),
            log_start_offset: data.log_start_offset,
            log_end_offset: data.log_end_offset,
        })
    }

    /// Takes `unseen`, a time this broker was stalled, off every follower's lag (never
    /// past `now`).
    pub(super) fn discount_stall(&self, unseen: Duration, now: Instant) {
        for follower in self.state.write().followers.values_mut() {
            follower.last_caught_up = (follower.last_caught_up + unseen).min(now);
            follower.last_fetch = (follower.last_fetch + unseen).min(now);
        }
    }

    /// Proposes dropping in-sync followers that have not caught up for `lag_max`.
    pub(super) fn check_isr_lag(&self, lag_max: Duration, proposals: &dyn Fn(IsrChange)) {
        let mut state = self.state.write();
        if state.role != Role::Leader || state.pending_isr.is_some() {
            return;
        }
        let lagging: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| *r != self.broker_id)
            .filter(|r| {
                state
                    .followers
                    .get(r)
                    .is_some_and(|f| f.last_caught_up.elapsed() > lag_max)
            })
            .collect();
        if lagging.is_empty() {
            return;
        }
        let new_isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        tracing::info!(partition = %self.tp, ?lagging, "followers fell behind; proposing to shrink the ISR");
        self.propose(&mut state, new_isr, proposals);
    }

    /// Proposes `new_isr` at the current epochs and keeps it as the pending change.
    fn propose(&self, state: &mut State, new_isr: Vec<i32>, proposals: &dyn Fn(IsrChange)) {
        let change = IsrChange {
            tp: self.tp.clone(),
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr,
        };
        state.pending_isr = Some(change.clone());
        proposals(change);
    }

    /// The controller answered the ISR proposal `change`: `committed` is the partition as it
    /// now is. An answer to an older proposal (from before a leadership change) leaves a
    /// newer one pending.
    /// Whether fewer replicas are in sync than there are replicas.
    pub fn is_under_replicated(&self) -> bool {
        let state = self.state.read();
        state.isr.len() < state.replicas.len()
    }

    /// Whether `broker` is in this partition's ISR, as the metadata last said.
    pub(super) fn in_sync(&self, broker: i32) -> bool {
        self.state.read().isr.contains(&broker)
    }

    pub(super) fn isr_answered(&self, change: &IsrChange, committed: Option<&PartitionRecord>) {
        let mut state = self.state.write();
        if state.pending_isr.as_ref() == Some(change) {
            state.pending_isr = None;
        }
        if let Some(record) = committed
            && record.leader_epoch == state.leader_epoch
            && record.partition_epoch >= state.partition_epoch
        {
            state.isr = record.isr.clone();
            state.partition_epoch = record.partition_epoch;
        }
        if state.role == Role::Leader {
            self.update_high_watermark(&state);
        }
    }

    /// Answers to a follower's fetch change its log only while it still follows the leader
    /// it asked, at the same epoch: one that arrives after a leadership change (the broker
    /// was paused, say, with the answer waiting in its socket) is dropped. The caller holds
    /// the state lock through the change, so no role change can come in between.
    fn check_following(&self, state: &State, from: FetchedFrom) -> Result<(), ReplicaError> {
        if state.role
            == (Role::Follower {
                leader: from.leader,
            })
            && state.leader_epoch == from.epoch
        {
            Ok(())
        } else {
            Err(ReplicaError::StaleFetch {
                tp: self.tp.clone(),
                leader: from.leader,
                epoch: from.epoch,
            })
        }
    }

    /// The follower's side: appends what the leader sent and takes its high watermark (up to
    /// this replica's own log end).
    pub(super) fn append_as_follower(
        &self,
        from: FetchedFrom,
        records: &Bytes,
        leader_high_watermark: i64,
        now_ms: i64,
    ) -> Result<(), ReplicaError> {
        let state = self.state.read();
        self.check_following(&state, from)?;
        if !records.is_empty() {
            self.log.append_as_follower(records, now_ms)?;
            self.log_end.send_replace(self.log.log_end_offset());
        }
        self.set_high_watermark(
            leader_high_watermark
                .min(self.log.log_end_offset())
                .max(self.log.log_start_offset()),
        );
        Ok(())
    }

    /// Truncates a follower's log where it diverges from the leader's.
    pub(super) fn truncate_to(&self, from: FetchedFrom, offset: i64) -> Result<(), ReplicaError> {
        let state = self.state.read();
        self.check_following(&state, from)?;
        self.log.truncate_to(offset)?;
        let leo = self.log.log_end_offset();
        self.log_end.send_replace(leo);
        if self.high_watermark() > leo {
            self.set_high_watermark(leo);
        }
        Ok(())
    }

    /// Starts a follower's log again at the leader's log start.
    pub(super) fn reset_to(&self, from: FetchedFrom, offset: i64) -> Result<(), ReplicaError> {
        let state = self.state.read();
        self.check_following(&state, from)?;
        self.log.reset_to(offset)?;
        self.log_end.send_replace(offset);
        self.set_high_watermark(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::log::LogConfig;

    fn leader_of(dir: &Path) -> Partition {
        let tp = TopicPartition::new("t", 0);
        let (log, _) = Log::open(dir, tp.clone(), LogConfig::default(), true, (None, None))
            .expect("open the log");
        Partition::new(tp, Uuid::new_v4(), 1, Arc::new(log), None)
    }

    fn record(leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> PartitionRecord {
        PartitionRecord {
            replicas: vec![1, 2],
            isr: isr.to_vec(),
            leader: 1,
            leader_epoch,
            partition_epoch,
        }
    }

    /// Broker 2 fetches from the start at `epoch`; returns the ISR changes it set off.
    fn fetch(partition: &Partition, epoch: i32) -> Vec<IsrChange> {
        let proposed = RefCell::new(Vec::new());
        partition
            .replica_read(2, 0, epoch, -1, 1024, &|c| proposed.borrow_mut().push(c))
            .expect("the fetch is answered");
        proposed.into_inner()
    }

    #[test]
    fn an_answer_to_an_older_isr_proposal_leaves_the_newer_one_pending() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader_of(dir.path());
        let config = TopicConfig::default();
        partition.apply(&record(1, 1, &[1]), &config).unwrap();
        let first = fetch(&partition, 1);
        assert_eq!(
            first.len(),
            1,
            "a caught-up follower is proposed for the ISR"
        );
        assert!(fetch(&partition, 1).is_empty(), "one proposal at a time");

        // A new leader epoch (this broker again) drops the first proposal; the follower's
        // next fetch proposes again, at the new epochs.
        partition.apply(&record(2, 2, &[1]), &config).unwrap();
        let second = fetch(&partition, 2);
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].leader_epoch, second[0].partition_epoch), (2, 2));

        // The controller's refusal of the first arrives late: the second stays pending.
        partition.isr_answered(&first[0], Some(&record(2, 2, &[1])));
        assert!(
            fetch(&partition, 2).is_empty(),
            "the second proposal is still pending"
        );
        assert_eq!(partition.status().isr, vec![1]);

        partition.isr_answered(&second[0], Some(&record(2, 3, &[1, 2])));
        assert_eq!(partition.status().isr, vec![1, 2]);
    }

    #[test]
    fn a_fetch_at_a_newer_epoch_than_this_brokers_says_it_is_behind_whatever_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader_of(dir.path());
        let config = TopicConfig::default();
        // This broker still follows broker 2 at epoch 1; broker 2 already knows that the
        // controller made this broker leader at epoch 2.
        let mut follower = record(1, 1, &[1, 2]);
        follower.leader = 2;
        partition.apply(&follower, &config).unwrap();
        let ahead = partition.replica_read(2, 0, 2, -1, 1024, &|_| {});
        assert!(
            matches!(
                ahead,
                Err(ReplicaError::EpochMismatch {
                    theirs: 2,
                    ours: 1,
                    ..
                })
            ),
            "{ahead:?}"
        );
        // At the same epoch, a follower is not fetched from.
        let same = partition.replica_read(2, 0, 1, -1, 1024, &|_| {});
        assert!(
            matches!(same, Err(ReplicaError::NotLeader { .. })),
            "{same:?}"
        );
        // And a leader refuses a follower behind its epoch.
        partition.apply(&record(3, 3, &[1, 2]), &config).unwrap();
        let behind = partition.replica_read(2, 0, 2, -1, 1024, &|_| {});
        assert!(
            matches!(
                behind,
                Err(ReplicaError::EpochMismatch {
                    theirs: 2,
                    ours: 3,
                    ..
                })
            ),
            "{behind:?}"
        );
    }

    fn batch() -> Bytes {
        let mut builder = crate::record::BatchBuilder::new(crate::record::Compression::None, 64);
        builder.append(0, None, Some(b"v"), &[]);
        builder.build().expect("a batch")
    }

    #[tokio::test]
    async fn an_acks_all_wait_ends_unacknowledged_when_leadership_moves() {
        let dir = tempfile::tempdir().unwrap();
        let partition = Arc::new(leader_of(dir.path()));
        let config = TopicConfig::default();
        partition.apply(&record(1, 1, &[1, 2]), &config).unwrap();
        let (info, epoch) = partition.append_as_leader(&batch(), true, 0).unwrap();
        let waiting = tokio::spawn({
            let partition = partition.clone();
            async move {
                partition
                    .wait_for_replication(info.last_offset + 1, Duration::from_secs(30), epoch)
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "broker 2 has not fetched it");
        // Broker 2 leads now; this replica follows and might lose the record.
        let mut moved = record(2, 2, &[1, 2]);
        moved.leader = 2;
        partition.apply(&moved, &config).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends at once, not at its timeout")
            .unwrap();
        assert!(
            matches!(result, Err(ReplicaError::NotLeader { .. })),
            "{result:?}"
        );
    }
}
