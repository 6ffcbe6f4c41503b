//! In-sync replica changes: leaders propose, the controller checks them against the
//! partition's current epochs and commits them.

use std::collections::{BTreeMap, BTreeSet};

use super::{Controller, ControllerError, MetadataStore};
use crate::metadata::PartitionRecord;

/// Why a leader's ISR proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrRejection {
    #[error("no such partition")]
    UnknownPartition,
    #[error("broker {0} does not lead this partition")]
    NotLeader(i32),
    #[error(
        "the proposal was made at leader epoch {proposed_leader} / partition epoch {proposed_partition}, but the partition is at {leader_epoch} / {partition_epoch}"
    )]
    Stale {
        proposed_leader: i32,
        proposed_partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A leader's proposed ISR for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic: String,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// What became of a proposal, with the partition as it is now (when it exists).
pub type IsrOutcome = (Result<(), IsrRejection>, Option<PartitionRecord>);

impl<S: MetadataStore> Controller<S> {
    /// Commits the ISRs a leader proposes, each only if the leader still leads at the epochs
    /// it saw, the ISR keeps the leader, and every member is a live replica.
    pub async fn alter_isr(
        &self,
        broker: i32,
        proposals: Vec<IsrProposal>,
    ) -> Result<Vec<IsrOutcome>, ControllerError> {
        let mut state = self.lock().await?;
        let eligible = state.eligible();
        let mut outcomes: BTreeMap<(String, u32), Result<(), IsrRejection>> = BTreeMap::new();
        for proposal in &proposals {
            let current = state
                .snapshot
                .topics
                .get(&proposal.topic)
                .and_then(|t| t.partitions.get(proposal.partition as usize));
            let verdict = match current {
                None => Err(IsrRejection::UnknownPartition),
                Some(p) if p.leader != broker => Err(IsrRejection::NotLeader(broker)),
                Some(p)
                    if p.leader_epoch != proposal.leader_epoch
                        || p.partition_epoch != proposal.partition_epoch =>
                {
                    Err(IsrRejection::Stale {
                        proposed_leader: proposal.leader_epoch,
                        proposed_partition: proposal.partition_epoch,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                    })
                }
                Some(p) => validate_isr(p, &proposal.new_isr, broker, &eligible),
            };
            outcomes.insert((proposal.topic.clone(), proposal.partition), verdict);
        }
        let accepted: BTreeMap<(String, u32), Vec<i32>> = proposals
            .iter()
            .filter(|p| {
                outcomes
                    .get(&(p.topic.clone(), p.partition))
                    .is_some_and(Result::is_ok)
            })
            .map(|p| ((p.topic.clone(), p.partition), p.new_isr.clone()))
            .collect();
        if !accepted.is_empty() {
            self.change_partitions(&mut state, |topic, i, p| {
                match accepted.get(&(topic.name.clone(), i)) {
                    Some(isr) => {
                        p.isr = isr.clone();
                        p.partition_epoch += 1;
                        true
                    }
                    None => false,
                }
            })
            .await?;
            self.publish(&mut state);
        }
        Ok(proposals
            .iter()
            .map(|proposal| {
                let key = (proposal.topic.clone(), proposal.partition);
                let current = state
                    .snapshot
                    .topics
                    .get(&proposal.topic)
                    .and_then(|t| t.partitions.get(proposal.partition as usize))
                    .cloned();
                (
                    outcomes
                        .remove(&key)
                        .unwrap_or(Err(IsrRejection::UnknownPartition)),
                    current,
                )
            })
            .collect())
    }
}

/// A proposed ISR must keep the leader and hold only live replicas of the partition.
fn validate_isr(
    p: &PartitionRecord,
    isr: &[i32],
    leader: i32,
    eligible: &BTreeSet<i32>,
) -> Result<(), IsrRejection> {
    if !isr.contains(&leader) {
        return Err(IsrRejection::Invalid(format!(
            "the ISR {isr:?} leaves out its leader {leader}"
        )));
    }
    if let Some(stranger) = isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err(IsrRejection::Invalid(format!(
            "broker {stranger} is not a replica of this partition"
        )));
    }
    let joining: Vec<i32> = isr.iter().copied().filter(|r| !p.isr.contains(r)).collect();
    if let Some(gone) = joining.iter().find(|r| !eligible.contains(r)) {
        return Err(IsrRejection::Invalid(format!(
            "broker {gone} cannot join the ISR: it is not in session"
        )));
    }
    let mut distinct = isr.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != isr.len() {
        return Err(IsrRejection::Invalid(format!(
            "the ISR {isr:?} names a replica twice"
        )));
    }
    Ok(())
}
