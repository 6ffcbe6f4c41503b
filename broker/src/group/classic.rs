//! The classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), as Kafka's
//! clients before KIP-848 speak it: members join, the coordinator picks a protocol all of
//! them support and a leader, the leader computes the assignment on the client side and
//! hands it over in SyncGroup, and every rebalance bumps the generation. Pure state, like
//! `state.rs`: the coordinator feeds it requests and the time, and delivers the answers of
//! members that wait (in JoinGroup until the rebalance completes, in SyncGroup until the
//! leader's assignment arrives).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::GroupError;

/// Where a classic group is in its rebalance cycle (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassicState {
    #[default]
    Empty,
    /// Waiting for every member to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    Stable,
}

impl ClassicState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClassicMember {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The assignors it supports, most preferred first, with its subscription for each.
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned it in the last SyncGroup.
    pub assignment: Bytes,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// The topics it reads, when its protocol says (consumers); None when not known.
    pub subscribed: Option<BTreeSet<String>>,
    last_heartbeat: Instant,
    /// Whether it joined in the rebalance under way (and waits for its answer).
    joined: bool,
}

impl ClassicMember {
    /// Its subscription for the group's protocol.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request as the coordinator got it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// JoinGroup v4+: a new member first gets an id (MEMBER_ID_REQUIRED) and joins with it
    /// (KIP-394), so that a member whose answer was lost does not leave a ghost behind.
    pub require_known_member_id: bool,
    /// The topics the member reads, when its protocol says (a consumer's subscription).
    pub subscribed: Option<BTreeSet<String>>,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member and its subscription: for the leader only, empty for the others.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a JoinGroup gets now.
#[derive(Debug)]
pub enum JoinOutcome {
    /// It waits for the rebalance; its answer comes out of [`ClassicGroup::complete_join`].
    Wait { member_id: String },
    /// A new member's id, to join again with (KIP-394).
    MemberIdRequired { member_id: String },
}

/// Answers for members that were waiting, produced by a state change.
#[derive(Debug, Default)]
pub struct Answers {
    pub joins: Vec<(String, Result<Joined, GroupError>)>,
    pub syncs: Vec<(String, Result<Bytes, GroupError>)>,
}

impl Answers {
    fn extend(&mut self, other: Answers) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
    }

    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.syncs.is_empty()
    }
}

/// What a SyncGroup gets now.
#[derive(Debug)]
pub enum SyncOutcome {
    /// It waits for the leader's assignment.
    Wait,
    /// Its assignment (and, when the leader's sync completed the rebalance, the answers of
    /// the members that were waiting).
    Assigned(Bytes, Answers),
}

#[derive(Debug, Clone, Default)]
pub struct ClassicGroup {
    pub state: ClassicState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, ClassicMember>,
    /// Ids handed out with MEMBER_ID_REQUIRED that have not joined yet, each until its
    /// session timeout passes.
    pending: BTreeMap<String, Instant>,
    /// Members whose SyncGroup waits for the leader's.
    awaiting_sync: BTreeSet<String>,
    /// When the rebalance under way gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
}

impl ClassicGroup {
    fn unknown(group: &str, member: &str) -> GroupError {
        GroupError::UnknownMember {
            group: group.to_string(),
            member: member.to_string(),
        }
    }

    /// Handles a JoinGroup. The member then waits until every member has rejoined (or the
    /// rebalance timeout passed); [`Self::complete_join`] gives the answers.
    pub fn join(
        &mut self,
        group: &str,
        request: JoinRequest,
        now: Instant,
    ) -> Result<(JoinOutcome, Answers), GroupError> {
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return Err(GroupError::InconsistentProtocol {
                group: group.to_string(),
                why: "the member names no protocol type or no assignor".into(),
            });
        }
        if let Some(kind) = &self.protocol_type
            && !self.members.is_empty()
            && (*kind != request.protocol_type
                || !request
                    .protocols
                    .iter()
                    .any(|(name, _)| self.supported_by_all(name)))
        {
            return Err(GroupError::InconsistentProtocol {
                group: group.to_string(),
                why: format!(
                    "the member's protocol type '{}' or assignors ({}) match none the group's members share",
                    request.protocol_type,
                    request
                        .protocols
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        // A static member (group.instance.id) takes over its old member id.
        let static_id = request.group_instance_id.as_ref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.group_instance_id.as_ref() == Some(instance))
                .map(|m| m.id.clone())
        });
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            if let Some(id) = static_id.clone() {
                member_id = id;
            } else {
                let id = format!(
                    "{}-{}",
                    if request.client_id.is_empty() {
                        "member"
                    } else {
                        &request.client_id
                    },
                    uuid::Uuid::new_v4()
                );
                if request.require_known_member_id {
                    self.pending
                        .insert(id.clone(), now + request.session_timeout);
                    return Ok((
                        JoinOutcome::MemberIdRequired { member_id: id },
                        Answers::default(),
                    ));
                }
                member_id = id;
            }
        } else if !self.members.contains_key(&member_id)
            && self.pending.remove(&member_id).is_none()
        {
            return Err(Self::unknown(group, &member_id));
        }
        let mut answers = Answers::default();
        let known = self.members.get(&member_id);
        let unchanged = known.is_some_and(|m| m.protocols == request.protocols);
        match known {
            Some(_) => {}
            None => tracing::info!(group, member = %member_id, "member joined"),
        }
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| ClassicMember {
                id: member_id.clone(),
                group_instance_id: request.group_instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                subscribed: None,
                last_heartbeat: now,
                joined: false,
            });
        member.protocols = request.protocols;
        member.subscribed = request.subscribed;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.last_heartbeat = now;
        member.joined = true;
        self.protocol_type = Some(request.protocol_type);
        // A follower that rejoins a stable group with nothing changed gets the current
        // generation back without a rebalance for everyone.
        if self.state == ClassicState::Stable
            && unchanged
            && self.leader.as_deref() != Some(&member_id)
        {
            if let Some(m) = self.members.get_mut(&member_id) {
                m.joined = false;
            }
            let joined = self.joined_answer(&member_id);
            answers.joins.push((member_id.clone(), Ok(joined)));
            return Ok((JoinOutcome::Wait { member_id }, answers));
        }
        if self.state != ClassicState::PreparingRebalance {
            answers.extend(self.prepare_rebalance(group, now));
        }
        answers.extend(self.complete_join(group, now));
        Ok((JoinOutcome::Wait { member_id }, answers))
    }

    fn supported_by_all(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(name, _)| name == protocol))
    }

    /// Starts a rebalance: every member must join again. SyncGroups that waited get
    /// REBALANCE_IN_PROGRESS.
    fn prepare_rebalance(&mut self, group: &str, now: Instant) -> Answers {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = ClassicState::PreparingRebalance;
        self.rebalance_deadline = Some(now + longest);
        tracing::info!(
            group,
            generation = self.generation,
            members = self.members.len(),
            "rebalance started"
        );
        Answers {
            joins: Vec::new(),
            syncs: std::mem::take(&mut self.awaiting_sync)
                .into_iter()
                .map(|m| {
                    (
                        m,
                        Err(GroupError::RebalanceInProgress {
                            group: group.to_string(),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// Completes the rebalance under way once every member has rejoined or the rebalance
    /// timeout passed (members that did not rejoin are removed): a new generation, its
    /// protocol and leader, and the JoinGroup answers.
    pub fn complete_join(&mut self, group: &str, now: Instant) -> Answers {
        if self.state != ClassicState::PreparingRebalance {
            return Answers::default();
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return Answers::default();
        }
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            tracing::info!(group, member = %id, "member removed: it did not rejoin within the rebalance timeout");
            self.members.remove(id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol = None;
            self.leader = None;
            return Answers::default();
        }
        self.protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = ClassicState::CompletingRebalance;
        for member in self.members.values_mut() {
            member.joined = false;
            member.last_heartbeat = now;
        }
        tracing::info!(group, generation = self.generation, protocol = ?self.protocol, leader = ?self.leader, members = self.members.len(), "rebalance joined; waiting for the leader's assignment");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        Answers {
            joins: ids
                .into_iter()
                .map(|id| {
                    let joined = self.joined_answer(&id);
                    (id, Ok(joined))
                })
                .collect(),
            syncs: Vec::new(),
        }
    }

    fn joined_answer(&self, member_id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            member_id: member_id.to_string(),
            members: if leader == member_id {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.group_instance_id.clone(),
                            m.metadata(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            leader,
        }
    }

    /// The assignor every member supports with the most votes (each member votes for the
    /// first of its own it can), as Kafka chooses.
    fn choose_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.supported_by_all(name))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Most votes; on a tie, the first in the first member's order.
        let mut chosen: Option<(&String, usize)> = None;
        for name in candidates {
            let count = votes.get(name).copied().unwrap_or(0);
            if chosen.is_none_or(|(_, best)| count > best) {
                chosen = Some((name, count));
            }
        }
        chosen.map(|(name, _)| name.clone())
    }

    fn check_member(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(Self::unknown(group, member_id));
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                group: group.to_string(),
                member: member_id.to_string(),
                theirs: generation,
                ours: self.generation,
            });
        }
        Ok(())
    }

    /// Handles a SyncGroup: the leader's carries the assignment of every member.
    pub fn sync(
        &mut self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncOutcome, GroupError> {
        self.check_member(group, member_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match self.state {
            ClassicState::Empty | ClassicState::PreparingRebalance => {
                Err(GroupError::RebalanceInProgress {
                    group: group.to_string(),
                })
            }
            ClassicState::Stable => Ok(SyncOutcome::Assigned(
                self.members[member_id].assignment.clone(),
                Answers::default(),
            )),
            ClassicState::CompletingRebalance => {
                if self.leader.as_deref() != Some(member_id) {
                    self.awaiting_sync.insert(member_id.to_string());
                    return Ok(SyncOutcome::Wait);
                }
                let mut assigned: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for member in self.members.values_mut() {
                    member.assignment = assigned.remove(&member.id).unwrap_or_default();
                }
                self.state = ClassicState::Stable;
                tracing::info!(group, generation, "rebalance complete");
                let answers = Answers {
                    joins: Vec::new(),
                    syncs: std::mem::take(&mut self.awaiting_sync)
                        .into_iter()
                        .map(|m| {
                            let assignment = self.members[&m].assignment.clone();
                            (m, Ok(assignment))
                        })
                        .collect(),
                };
                Ok(SyncOutcome::Assigned(
                    self.members[member_id].assignment.clone(),
                    answers,
                ))
            }
        }
    }

    /// Handles a Heartbeat: REBALANCE_IN_PROGRESS tells the member to join again.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.state == ClassicState::Empty {
            return Err(Self::unknown(group, member_id));
        }
        self.check_member(group, member_id, generation)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        if self.state == ClassicState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: group.to_string(),
            });
        }
        Ok(())
    }

    /// Removes members that leave; the others rebalance. Each id gets its own result.
    pub fn leave(
        &mut self,
        group: &str,
        member_ids: &[String],
        now: Instant,
    ) -> (Vec<Result<(), GroupError>>, Answers) {
        let mut results = Vec::new();
        let mut answers = Answers::default();
        let mut left = false;
        for id in member_ids {
            if self.members.remove(id).is_some() {
                tracing::info!(group, member = %id, "member left");
                self.awaiting_sync.remove(id);
                answers
                    .joins
                    .push((id.clone(), Err(Self::unknown(group, id))));
                results.push(Ok(()));
                left = true;
            } else {
                results.push(Err(Self::unknown(group, id)));
            }
        }
        if left {
            answers.extend(self.member_gone(group, now));
        }
        (results, answers)
    }

    /// A member left or expired: the rest rebalance, or the group is empty.
    fn member_gone(&mut self, group: &str, now: Instant) -> Answers {
        if self.members.is_empty() {
            let mut answers = Answers::default();
            if self.state != ClassicState::Empty {
                self.generation += 1;
            }
            self.state = ClassicState::Empty;
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
            answers.syncs = std::mem::take(&mut self.awaiting_sync)
                .into_iter()
                .map(|m| {
                    (
                        m,
                        Err(GroupError::RebalanceInProgress {
                            group: group.to_string(),
                        }),
                    )
                })
                .collect();
            return answers;
        }
        let mut answers = Answers::default();
        if self.state != ClassicState::PreparingRebalance {
            answers.extend(self.prepare_rebalance(group, now));
        }
        answers.extend(self.complete_join(group, now));
        answers
    }

    /// Removes members whose session expired (members waiting in JoinGroup are bound by
    /// the rebalance timeout instead) and completes a rebalance whose timeout passed.
    pub fn expire(&mut self, group: &str, now: Instant) -> Answers {
        self.pending.retain(|_, until| now < *until);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                !(self.state == ClassicState::PreparingRebalance && m.joined)
                    && now.saturating_duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        let mut answers = Answers::default();
        for id in &expired {
            tracing::info!(group, member = %id, "member removed: its session timeout expired");
            self.members.remove(id);
            self.awaiting_sync.remove(id);
        }
        if !expired.is_empty() {
            answers.extend(self.member_gone(group, now));
        }
        answers.extend(self.complete_join(group, now));
        answers
    }

    /// Whether the group has no members, and none about to join.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Checks a commit by a member of generation `generation` (-1 with an empty member id:
    /// a consumer outside the group, allowed while the group has no members).
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(GroupError::NotEmpty {
                group: group.to_string(),
                members: self.members.len(),
            });
        }
        self.check_member(group, member_id, generation)?;
        // Members commit what they processed before they rejoin (PreparingRebalance), but
        // not between the join and the new assignment, as Kafka's coordinator does.
        if self.state == ClassicState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: group.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("{p}-sub"))))
                .collect(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            require_known_member_id: true,
            subscribed: None,
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and the answers.
    fn join_new(group: &mut ClassicGroup, protocols: &[&str], now: Instant) -> (String, Answers) {
        let (outcome, _) = group.join("g", request("", protocols), now).unwrap();
        let JoinOutcome::MemberIdRequired { member_id } = outcome else {
            panic!("a new member first gets an id");
        };
        let (outcome, answers) = group
            .join("g", request(&member_id, protocols), now)
            .unwrap();
        assert!(matches!(outcome, JoinOutcome::Wait { .. }));
        (member_id, answers)
    }

    #[test]
    fn a_lone_member_joins_leads_assigns_and_is_stable() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        let (a, answers) = join_new(&mut group, &["range"], now);
        let joined = answers.joins[0].1.as_ref().unwrap();
        assert_eq!((joined.generation, joined.leader.as_str()), (1, a.as_str()));
        assert_eq!(joined.members.len(), 1, "the leader sees every member");
        assert_eq!(group.state, ClassicState::CompletingRebalance);
        let SyncOutcome::Assigned(mine, _) = group
            .sync(
                "g",
                &a,
                1,
                vec![(a.clone(), Bytes::from_static(b"all"))],
                now,
            )
            .unwrap()
        else {
            panic!("the leader gets its assignment at once");
        };
        assert_eq!(mine, Bytes::from_static(b"all"));
        assert_eq!(group.state, ClassicState::Stable);
        group.heartbeat("g", &a, 1, now).unwrap();
        group.check_commit("g", &a, 1).unwrap();
    }

    #[test]
    fn a_second_member_makes_everyone_rejoin_and_followers_wait_for_the_leaders_sync() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        let (a, _) = join_new(&mut group, &["range", "roundrobin"], now);
        group.sync("g", &a, 1, vec![], now).unwrap();
        let (b, answers) = join_new(&mut group, &["roundrobin", "range"], now);
        assert!(answers.joins.is_empty(), "b waits for a to rejoin");
        assert!(matches!(
            group.heartbeat("g", &a, 1, now),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        // a commits what it has before it rejoins.
        group.check_commit("g", &a, 1).unwrap();
        let (_, answers) = group
            .join("g", request(&a, &["range", "roundrobin"]), now)
            .unwrap();
        assert_eq!(answers.joins.len(), 2);
        for (member, joined) in &answers.joins {
            let joined = joined.as_ref().unwrap();
            assert_eq!(joined.generation, 2);
            assert_eq!(joined.leader, a);
            assert_eq!(joined.members.len(), if *member == a { 2 } else { 0 });
        }
        assert!(matches!(
            group.sync("g", &b, 2, vec![], now).unwrap(),
            SyncOutcome::Wait
        ));
        assert!(matches!(
            group.check_commit("g", &b, 2),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        let SyncOutcome::Assigned(_, answers) = group
            .sync(
                "g",
                &a,
                2,
                vec![
                    (a.clone(), Bytes::from_static(b"0")),
                    (b.clone(), Bytes::from_static(b"1")),
                ],
                now,
            )
            .unwrap()
        else {
            panic!("the leader's sync completes the rebalance");
        };
        assert_eq!(answers.syncs.len(), 1);
        let (member, assignment) = &answers.syncs[0];
        assert_eq!(
            (member, assignment.as_ref().unwrap()),
            (&b, &Bytes::from_static(b"1"))
        );
        assert!(matches!(
            group.check_commit("g", &b, 1),
            Err(GroupError::IllegalGeneration { .. })
        ));
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        let (a, _) = join_new(&mut group, &["range"], now);
        group.sync("g", &a, 1, vec![], now).unwrap();
        let (b, _) = join_new(&mut group, &["range"], now);
        let later = now + SESSION / 2;
        group.heartbeat("g", &a, 1, later).ok();
        let answers = group.expire("g", now + REBALANCE + Duration::from_millis(1));
        assert_eq!(answers.joins.len(), 1);
        assert_eq!(answers.joins[0].0, b);
        assert!(!group.members.contains_key(&a));
        assert_eq!(group.leader.as_deref(), Some(b.as_str()));
    }

    #[test]
    fn a_silent_member_is_removed_and_a_leaving_one_at_once() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        let (a, _) = join_new(&mut group, &["range"], now);
        group.sync("g", &a, 1, vec![], now).unwrap();
        assert!(group.expire("g", now + SESSION / 2).is_empty());
        group.expire("g", now + SESSION + Duration::from_millis(1));
        assert_eq!(group.state, ClassicState::Empty);
        group.check_commit("g", "", -1).unwrap();

        let (b, _) = join_new(&mut group, &["range"], now);
        let (results, _) = group.leave("g", &[b.clone(), "stranger".into()], now);
        assert!(results[0].is_ok() && results[1].is_err());
        assert_eq!(group.state, ClassicState::Empty);
    }

    #[test]
    fn members_must_share_an_assignor_and_unknown_ids_are_refused() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        join_new(&mut group, &["range"], now);
        assert!(matches!(
            group.join("g", request("", &["sticky"]), now),
            Err(GroupError::InconsistentProtocol { .. })
        ));
        assert!(matches!(
            group.join("g", request("made-up", &["range"]), now),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn the_assignor_with_most_votes_among_those_all_support_is_chosen() {
        let now = Instant::now();
        let mut group = ClassicGroup::default();
        let mut first = request("", &["cooperative-sticky", "range", "roundrobin"]);
        first.require_known_member_id = false;
        group.join("g", first, now).unwrap();
        for protocols in [
            &["roundrobin", "range"][..],
            &["roundrobin", "cooperative-sticky"],
        ] {
            let mut next = request("", protocols);
            next.require_known_member_id = false;
            group.join("g", next, now).unwrap();
        }
        // Only roundrobin is supported by all three.
        assert_eq!(group.choose_protocol().as_deref(), Some("roundrobin"));
        let mut group = ClassicGroup::default();
        for protocols in [
            &["range", "roundrobin"][..],
            &["roundrobin", "range"],
            &["range"],
        ] {
            let mut next = request("", protocols);
            next.require_known_member_id = false;
            group.join("g", next, now).unwrap();
        }
        assert_eq!(group.choose_protocol().as_deref(), Some("range"));
    }
}
