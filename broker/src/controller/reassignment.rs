//! Moving a partition's replicas, one safe step at a time: the target replicas are added
//! (they start as followers and catch up), the move waits until every target replica is in
//! sync, leadership moves to the target's preferred leader, and only then are the old
//! replicas dropped (their brokers delete the data). A move whose target broker goes away
//! before it finishes is rolled back to the replicas it started from.

use std::collections::BTreeSet;

use crate::metadata::{Move, PartitionRecord};

/// What one step did to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to do yet (target replicas still catching up).
    Waiting,
    /// The partition changed; the move goes on.
    Advanced,
    /// The move is complete.
    Done,
    /// A target broker went away: the partition is back on its original replicas.
    RolledBack,
}

/// Takes the next step of `m` on `p`. `alive` says which brokers are in session.
pub(crate) fn advance(p: &mut PartitionRecord, m: &Move, alive: &dyn Fn(i32) -> bool) -> Step {
    let target: BTreeSet<i32> = m.target.iter().copied().collect();
    let current: BTreeSet<i32> = p.replicas.iter().copied().collect();
    if current == target && p.replicas == m.target {
        return Step::Done;
    }
    if m.added().iter().any(|r| !alive(*r)) {
        return roll_back(p, m, alive);
    }
    if !target.is_subset(&current) {
        for r in &m.target {
            if !p.replicas.contains(r) {
                p.replicas.push(*r);
            }
        }
        p.partition_epoch += 1;
        return Step::Advanced;
    }
    if !m.target.iter().all(|r| p.isr.contains(r)) {
        return Step::Waiting;
    }
    // Every target replica is in sync: leadership goes to the target's preferred leader
    // (in sync, so it has every acknowledged record), or the next one up, and the old
    // replicas go.
    let Some(leader) = m.target.iter().copied().find(|r| alive(*r)) else {
        return Step::Waiting;
    };
    if p.leader != leader {
        p.leader = leader;
        p.leader_epoch += 1;
    }
    p.replicas = m.target.clone();
    p.isr.retain(|r| target.contains(r));
    p.partition_epoch += 1;
    Step::Done
}

/// Puts the partition back on its original replicas, keeping a leader among them.
fn roll_back(p: &mut PartitionRecord, m: &Move, alive: &dyn Fn(i32) -> bool) -> Step {
    let original: BTreeSet<i32> = m.original.iter().copied().collect();
    if !original.contains(&p.leader) {
        let Some(leader) = m
            .original
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && alive(*r))
        else {
            // No original replica in sync and up: keep going where it is.
            return Step::Waiting;
        };
        p.leader = leader;
        p.leader_epoch += 1;
    }
    p.replicas = m.original.clone();
    p.isr.retain(|r| original.contains(r));
    p.partition_epoch += 1;
    Step::RolledBack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRecord {
        PartitionRecord {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn mv(original: &[i32], target: &[i32]) -> Move {
        Move {
            topic: "t".into(),
            partition: 0,
            original: original.to_vec(),
            target: target.to_vec(),
            started: true,
        }
    }

    #[test]
    fn a_move_adds_waits_for_sync_moves_leadership_then_drops_the_old_replicas() {
        let m = mv(&[0, 1, 2], &[3, 1, 2]);
        let mut p = partition(&[0, 1, 2], &[0, 1, 2], 0);
        let all = |_| true;
        assert_eq!(advance(&mut p, &m, &all), Step::Advanced);
        assert_eq!(p.replicas, [0, 1, 2, 3]);
        assert_eq!(
            (p.leader, p.leader_epoch),
            (0, 0),
            "leadership stays while 3 copies"
        );
        assert_eq!(advance(&mut p, &m, &all), Step::Waiting);
        p.isr.push(3); // The leader found 3 caught up.
        assert_eq!(advance(&mut p, &m, &all), Step::Done);
        assert_eq!(p.replicas, [3, 1, 2]);
        assert_eq!(p.isr, [1, 2, 3]);
        assert_eq!((p.leader, p.leader_epoch), (3, 1));
        assert_eq!(p.partition_epoch, 2);
        assert_eq!(advance(&mut p, &m, &all), Step::Done);
    }

    #[test]
    fn a_move_whose_target_broker_dies_goes_back_to_where_it_was() {
        let m = mv(&[0, 1, 2], &[3, 1, 2]);
        let mut p = partition(&[0, 1, 2], &[0, 1, 2], 0);
        assert_eq!(advance(&mut p, &m, &|_| true), Step::Advanced);
        assert_eq!(advance(&mut p, &m, &|b| b != 3), Step::RolledBack);
        assert_eq!(p.replicas, [0, 1, 2]);
        assert_eq!(p.isr, [0, 1, 2]);
        assert_eq!(p.leader, 0);
    }

    #[test]
    fn a_reorder_only_moves_leadership_to_the_new_preferred_leader() {
        let m = mv(&[0, 1, 2], &[1, 0, 2]);
        let mut p = partition(&[0, 1, 2], &[0, 1, 2], 0);
        assert_eq!(advance(&mut p, &m, &|_| true), Step::Done);
        assert_eq!(p.replicas, [1, 0, 2]);
        assert_eq!((p.leader, p.leader_epoch), (1, 1));
    }

    #[test]
    fn leadership_goes_to_a_target_replica_that_is_up() {
        let m = mv(&[0, 1], &[2, 3]);
        let mut p = partition(&[0, 1, 2, 3], &[0, 1, 2, 3], 0);
        assert_eq!(advance(&mut p, &m, &|b| b != 2), Step::RolledBack);
        let mut p = partition(&[0, 1, 2, 3], &[0, 1, 2, 3], 0);
        let m = mv(&[0, 1], &[1, 3]);
        assert_eq!(
            advance(&mut p, &m, &|b| b != 1),
            Step::Done,
            "3 leads while 1 is down"
        );
        assert_eq!((p.replicas.as_slice(), p.leader), (&[1, 3][..], 3));
    }
}
