//! One consumer group as its coordinator keeps it: members, the target assignment and how
//! far each member has come towards it, and committed offsets. Pure state: the coordinator
//! feeds it requests and the time, and writes commits to the offsets log before applying
//! them here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::GroupError;
use super::assignor::{self, MemberSpec};
use super::classic::{ClassicGroup, ClassicState};
use crate::TopicPartition;

/// While a member's partitions are moving it is asked to heartbeat this often.
pub const RECONCILING_HEARTBEAT: Duration = Duration::from_millis(100);

/// A committed offset, with where its record is in the offsets log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
    pub commit_time_ms: i64,
    /// Offset of the record holding it in the offsets partition.
    pub record_offset: i64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub epoch: i32,
    pub subscribed: BTreeSet<String>,
    /// The partitions the member may own.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions taken from the member that it has not yet said it gave up.
    pub revoking: BTreeSet<TopicPartition>,
    revoking_since: Option<Instant>,
    last_heartbeat: Instant,
    session_timeout: Duration,
    rebalance_timeout: Duration,
}

/// A heartbeat as the coordinator got it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub subscribed: BTreeSet<String>,
    pub owned: BTreeSet<TopicPartition>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: BTreeSet<TopicPartition>,
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    Reconciling,
    Stable,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Reconciling => "Reconciling",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub id: String,
    /// Bumped whenever membership, subscriptions or subscribed partition counts change.
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// The assignment the members are moving to, computed at `epoch`.
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The partition counts `target` was computed with.
    partition_counts: BTreeMap<String, u32>,
    pub offsets: BTreeMap<TopicPartition, Committed>,
    /// Members of the classic protocol (JoinGroup/SyncGroup); a group has members of one
    /// protocol at a time.
    pub classic: ClassicGroup,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            ..Self::default()
        }
    }

    pub fn state(&self) -> GroupState {
        if !self.classic.members.is_empty() {
            return if self.classic.state == ClassicState::Stable {
                GroupState::Stable
            } else {
                GroupState::Reconciling
            };
        }
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.members.values().all(|m| self.is_reconciled(m)) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    fn is_reconciled(&self, member: &Member) -> bool {
        member.revoking.is_empty()
            && self
                .target
                .get(&member.id)
                .is_some_and(|t| *t == member.assigned)
    }

    /// Handles a member's heartbeat. `counts` gives the partition count of a topic (None
    /// when it does not exist); `heartbeat_interval` is the steady-state interval.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        now: Instant,
        counts: &dyn Fn(&str) -> Option<u32>,
        heartbeat_interval: Duration,
    ) -> Result<HeartbeatAnswer, GroupError> {
        if request.member_epoch == -1 {
            if self.members.remove(&request.member_id).is_some() {
                tracing::info!(group = %self.id, member = %request.member_id, "member left");
                self.recompute(counts);
            }
            return Ok(HeartbeatAnswer {
                member_id: request.member_id,
                member_epoch: -1,
                assignment: BTreeSet::new(),
                heartbeat_interval,
            });
        }
        let member_id = if request.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            request.member_id.clone()
        };
        let mut changed = false;
        let joining = request.member_epoch == 0;
        match self.members.get(&member_id) {
            None if request.member_epoch != 0 => {
                return Err(GroupError::UnknownMember {
                    group: self.id.clone(),
                    member: member_id,
                });
            }
            None => {
                // A new member, or one coming back (to a new coordinator, say) with the
                // partitions it had: it keeps those nobody else has.
                let others: BTreeSet<&TopicPartition> = self
                    .members
                    .values()
                    .flat_map(|m| m.assigned.iter().chain(&m.revoking))
                    .collect();
                let assigned = request
                    .owned
                    .iter()
                    .filter(|tp| !others.contains(tp))
                    .cloned()
                    .collect();
                tracing::info!(group = %self.id, member = %member_id, "member joined");
                self.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        client_id: request.client_id.clone(),
                        epoch: self.epoch,
                        subscribed: request.subscribed.clone(),
                        assigned,
                        revoking: BTreeSet::new(),
                        revoking_since: None,
                        last_heartbeat: now,
                        session_timeout: request.session_timeout,
                        rebalance_timeout: request.rebalance_timeout,
                    },
                );
                changed = true;
            }
            Some(member) if request.member_epoch > member.epoch => {
                return Err(GroupError::FencedEpoch {
                    group: self.id.clone(),
                    member: member_id,
                    theirs: request.member_epoch,
                    ours: member.epoch,
                });
            }
            Some(member) if request.member_epoch != 0 && request.member_epoch < member.epoch => {
                return Err(GroupError::StaleEpoch {
                    group: self.id.clone(),
                    member: member_id,
                    theirs: request.member_epoch,
                    ours: member.epoch,
                });
            }
            Some(_) => {}
        }
        let member = self.members.get_mut(&member_id).expect("present");
        member.last_heartbeat = now;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.client_id = request.client_id;
        // Revoked partitions the member no longer reports are free for their next owner.
        member.revoking.retain(|tp| request.owned.contains(tp));
        if member.revoking.is_empty() {
            member.revoking_since = None;
        }
        if member.subscribed != request.subscribed {
            member.subscribed = request.subscribed;
            changed = true;
        }
        if changed || self.subscribed_counts(counts) != self.partition_counts {
            self.recompute(counts);
        }
        Ok(self.reconcile(&member_id, joining, now, heartbeat_interval))
    }

    /// The partition counts of the topics members subscribe to (those that exist).
    fn subscribed_counts(&self, counts: &dyn Fn(&str) -> Option<u32>) -> BTreeMap<String, u32> {
        let subscribed: BTreeSet<&String> =
            self.members.values().flat_map(|m| &m.subscribed).collect();
        subscribed
            .into_iter()
            .filter_map(|t| Some((t.clone(), counts(t)?)))
            .collect()
    }

    /// Bumps the group epoch and computes a new target assignment, starting from what the
    /// members have now.
    fn recompute(&mut self, counts: &dyn Fn(&str) -> Option<u32>) {
        self.epoch += 1;
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    MemberSpec {
                        subscribed: m.subscribed.clone(),
                        current: m.assigned.clone(),
                    },
                )
            })
            .collect();
        self.partition_counts = self.subscribed_counts(counts);
        self.target = assignor::assign(&specs, &self.partition_counts);
        tracing::info!(group = %self.id, epoch = self.epoch, members = self.members.len(), "new target assignment");
    }

    /// Moves `member_id` towards its target: partitions it must give up are taken from its
    /// assignment at once (it stops reading them and commits), partitions it gains are
    /// given once no other member holds them, and not in the answer to a join, so that
    /// members joining together (after a coordinator change) all say what they own before
    /// any of them is given what nobody claimed yet.
    fn reconcile(
        &mut self,
        member_id: &str,
        joining: bool,
        now: Instant,
        interval: Duration,
    ) -> HeartbeatAnswer {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().chain(&m.revoking))
            .cloned()
            .collect();
        let epoch = self.epoch;
        let member = self.members.get_mut(member_id).expect("present");
        let before = member.assigned.clone();
        let revoke: Vec<TopicPartition> = member.assigned.difference(&target).cloned().collect();
        for tp in revoke {
            member.assigned.remove(&tp);
            member.revoking.insert(tp);
            member.revoking_since.get_or_insert(now);
        }
        for tp in target.difference(&before) {
            if !joining && !held_by_others.contains(tp) {
                member.assigned.insert(tp.clone());
            }
        }
        let reconciled = member.revoking.is_empty() && member.assigned == target;
        // Three heartbeats per session timeout, so that one lost heartbeat is not fatal.
        let interval = interval.min(member.session_timeout / 3);
        // A joining member gets the group epoch (at least 1, so never the 0 of a join).
        if joining || member.assigned != before || reconciled {
            member.epoch = epoch;
        }
        HeartbeatAnswer {
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            assignment: member.assigned.clone(),
            heartbeat_interval: if reconciled {
                interval
            } else {
                interval.min(RECONCILING_HEARTBEAT)
            },
        }
    }

    /// Removes members whose session expired or that held revoked partitions longer than
    /// their rebalance timeout. Returns the ids removed.
    pub fn expire(&mut self, now: Instant, counts: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now.saturating_duration_since(m.last_heartbeat) > m.session_timeout
                    || m.revoking_since.is_some_and(|since| {
                        now.saturating_duration_since(since) > m.rebalance_timeout
                    })
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member removed: its session or rebalance timeout expired");
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.recompute(counts);
        }
        expired
    }

    /// Checks that a commit may go ahead: by a current member for partitions it holds, or
    /// (an empty member id with epoch -1) by an administrator while the group has no members.
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        member_epoch: i32,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() && member_epoch == -1 {
            if !self.members.is_empty() {
                return Err(GroupError::NotEmpty {
                    group: self.id.clone(),
                    members: self.members.len(),
                });
            }
            return Ok(());
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(GroupError::UnknownMember {
                group: self.id.clone(),
                member: member_id.to_string(),
            });
        };
        if member_epoch < member.epoch {
            return Err(GroupError::StaleEpoch {
                group: self.id.clone(),
                member: member_id.to_string(),
                theirs: member_epoch,
                ours: member.epoch,
            });
        }
        if member_epoch > member.epoch {
            return Err(GroupError::FencedEpoch {
                group: self.id.clone(),
                member: member_id.to_string(),
                theirs: member_epoch,
                ours: member.epoch,
            });
        }
        for tp in partitions {
            if !member.assigned.contains(tp) && !member.revoking.contains(tp) {
                return Err(GroupError::NotAssigned {
                    group: self.id.clone(),
                    member: member_id.to_string(),
                    partition: tp.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether the group has anything worth keeping: members or committed offsets.
    pub fn is_dead(&self) -> bool {
        self.members.is_empty() && self.classic.is_empty() && self.offsets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);
    const SESSION: Duration = Duration::from_secs(10);

    fn counts(topic: &str) -> Option<u32> {
        (topic == "t").then_some(6)
    }

    fn beat(id: &str, epoch: i32, owned: &BTreeSet<TopicPartition>) -> Heartbeat {
        Heartbeat {
            member_id: id.to_string(),
            member_epoch: epoch,
            client_id: "test".into(),
            subscribed: ["t".to_string()].into(),
            owned: owned.clone(),
            session_timeout: SESSION,
            rebalance_timeout: SESSION,
        }
    }

    /// A member as its client would run it: it owns what it was last given.
    struct Client {
        id: String,
        epoch: i32,
        owned: BTreeSet<TopicPartition>,
    }

    impl Client {
        fn join(group: &mut Group, now: Instant) -> Self {
            let answer = group
                .heartbeat(beat("", 0, &BTreeSet::new()), now, &counts, INTERVAL)
                .unwrap();
            Self {
                id: answer.member_id,
                epoch: answer.member_epoch,
                owned: answer.assignment,
            }
        }

        fn beat(&mut self, group: &mut Group, now: Instant) -> HeartbeatAnswer {
            let answer = group
                .heartbeat(
                    beat(&self.id, self.epoch, &self.owned),
                    now,
                    &counts,
                    INTERVAL,
                )
                .unwrap();
            self.epoch = answer.member_epoch;
            self.owned = answer.assignment.clone();
            answer
        }
    }

    /// A group whose two members have settled on three partitions each.
    fn two_settled_members(now: Instant) -> (Group, Client, Client) {
        let mut group = Group::new("g");
        let mut a = Client::join(&mut group, now);
        let mut b = Client::join(&mut group, now);
        for _ in 0..3 {
            a.beat(&mut group, now);
            b.beat(&mut group, now);
        }
        (group, a, b)
    }

    /// No partition is owned by two clients at once, ever.
    fn check_exclusive(clients: &[&Client]) {
        let mut seen = BTreeSet::new();
        for c in clients {
            for tp in &c.owned {
                assert!(seen.insert(tp.clone()), "{tp} owned twice");
            }
        }
    }

    #[test]
    fn partitions_move_to_a_new_member_only_after_their_owner_gave_them_up() {
        let now = Instant::now();
        let mut group = Group::new("g");
        let mut a = Client::join(&mut group, now);
        assert!(
            a.owned.is_empty(),
            "partitions come with the next heartbeat"
        );
        a.beat(&mut group, now);
        assert_eq!(a.owned.len(), 6);
        assert_eq!(group.state(), GroupState::Stable);

        let mut b = Client::join(&mut group, now);
        assert!(b.owned.is_empty(), "a still owns everything");
        assert_eq!(group.state(), GroupState::Reconciling);
        let answer = a.beat(&mut group, now);
        assert_eq!(answer.assignment.len(), 3, "a is told to give three up");
        assert_eq!(answer.heartbeat_interval, RECONCILING_HEARTBEAT);
        check_exclusive(&[&a, &b]);
        // a's next heartbeat no longer reports them: b gets them.
        a.beat(&mut group, now);
        let answer = b.beat(&mut group, now);
        assert_eq!(answer.assignment.len(), 3);
        check_exclusive(&[&a, &b]);
        a.beat(&mut group, now);
        assert_eq!(group.state(), GroupState::Stable);
        assert_eq!(a.epoch, group.epoch);
        assert_eq!(b.epoch, group.epoch);
    }

    #[test]
    fn a_silent_member_is_removed_and_its_partitions_go_to_the_others() {
        let now = Instant::now();
        let (mut group, mut a, b) = two_settled_members(now);
        assert_eq!((a.owned.len(), b.owned.len()), (3, 3));
        let later = now + SESSION - Duration::from_millis(1);
        a.beat(&mut group, later);
        assert!(group.expire(later, &counts).is_empty());
        let expired = group.expire(now + SESSION + Duration::from_millis(1), &counts);
        assert_eq!(expired, vec![b.id.clone()]);
        a.beat(&mut group, later);
        assert_eq!(a.owned.len(), 6);

        // The removed member is fenced: it can neither heartbeat nor commit.
        let err = group
            .heartbeat(beat(&b.id, b.epoch, &b.owned), later, &counts, INTERVAL)
            .unwrap_err();
        assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
        let err = group.check_commit(&b.id, b.epoch, &b.owned).unwrap_err();
        assert!(matches!(err, GroupError::UnknownMember { .. }), "{err}");
    }

    #[test]
    fn a_member_that_keeps_partitions_it_must_give_up_is_removed_after_its_rebalance_timeout() {
        let now = Instant::now();
        let (mut group, mut a, mut b) = two_settled_members(now);
        let mut c = Client::join(&mut group, now);
        // b heartbeats on time but never lets go of what it is told to give up.
        let stubborn = |group: &mut Group, b: &mut Client, at: Instant| {
            let answer = group
                .heartbeat(beat(&b.id, b.epoch, &b.owned), at, &counts, INTERVAL)
                .unwrap();
            assert!(
                answer.assignment.len() < b.owned.len(),
                "b is told to give some up"
            );
            b.epoch = answer.member_epoch;
        };
        a.beat(&mut group, now);
        stubborn(&mut group, &mut b, now);
        let half = now + SESSION / 2;
        a.beat(&mut group, half);
        stubborn(&mut group, &mut b, half);
        assert!(
            group.expire(half, &counts).is_empty(),
            "within its rebalance timeout"
        );
        let late = now + SESSION + Duration::from_millis(1);
        a.beat(&mut group, late);
        c.beat(&mut group, late);
        assert_eq!(group.expire(late, &counts), vec![b.id.clone()]);

        // Its partitions go to the members that follow the assignment.
        for _ in 0..3 {
            a.beat(&mut group, late);
            c.beat(&mut group, late);
        }
        assert_eq!((a.owned.len(), c.owned.len()), (3, 3));
        check_exclusive(&[&a, &c]);
    }

    #[test]
    fn commits_need_the_current_epoch_and_an_assigned_partition() {
        let now = Instant::now();
        let mut group = Group::new("g");
        let mut a = Client::join(&mut group, now);
        a.beat(&mut group, now);
        let old_epoch = a.epoch;
        let mut b = Client::join(&mut group, now);
        a.beat(&mut group, now);
        a.beat(&mut group, now);
        b.beat(&mut group, now);
        assert!(a.epoch > old_epoch);
        let mine = a.owned.iter().next().unwrap().clone();
        let theirs = b.owned.iter().next().unwrap().clone();
        group.check_commit(&a.id, a.epoch, [&mine]).unwrap();
        let err = group.check_commit(&a.id, old_epoch, [&mine]).unwrap_err();
        assert!(matches!(err, GroupError::StaleEpoch { .. }), "{err}");
        let err = group.check_commit(&a.id, a.epoch, [&theirs]).unwrap_err();
        assert!(matches!(err, GroupError::NotAssigned { .. }), "{err}");
        let err = group.check_commit("", -1, [&mine]).unwrap_err();
        assert!(matches!(err, GroupError::NotEmpty { .. }), "{err}");
    }

    #[test]
    fn a_member_that_rejoins_with_its_partitions_keeps_them() {
        let now = Instant::now();
        let (_, mut a, mut b) = two_settled_members(now);
        // A new coordinator knows nobody: both join again with what they own.
        let mut fresh = Group::new("g");
        for c in [&mut a, &mut b] {
            let answer = fresh
                .heartbeat(beat(&c.id, 0, &c.owned), now, &counts, INTERVAL)
                .unwrap();
            c.epoch = answer.member_epoch;
        }
        let (a_had, b_had) = (a.owned.clone(), b.owned.clone());
        a.beat(&mut fresh, now);
        b.beat(&mut fresh, now);
        assert_eq!((a.owned.clone(), b.owned.clone()), (a_had, b_had));
        assert_eq!(fresh.state(), GroupState::Stable);
    }

    #[test]
    fn a_member_that_leaves_hands_its_partitions_over_at_once() {
        let now = Instant::now();
        let (mut group, mut a, b) = two_settled_members(now);
        group
            .heartbeat(beat(&b.id, -1, &BTreeSet::new()), now, &counts, INTERVAL)
            .unwrap();
        assert_eq!(a.beat(&mut group, now).assignment.len(), 6);
    }
}
