//! How a partition's leader and in-sync replicas change when a broker goes away (dies, is
//! fenced, shuts down) or comes back. Every leadership change bumps the leader epoch, and
//! every change bumps the partition epoch.
//!
//! A leader is taken from the ISR, in replica order (the first replica is the preferred
//! leader). Only with `unclean.leader.election.enable` may an out-of-sync replica lead, and
//! then the ISR restarts with it alone: records only the lost replicas had are gone.

use crate::metadata::PartitionRecord;

fn choose(
    p: &PartitionRecord,
    eligible: &dyn Fn(i32) -> bool,
    unclean: bool,
) -> Option<(i32, bool)> {
    let clean = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && eligible(*r));
    match clean {
        Some(leader) => Some((leader, false)),
        None if unclean => p
            .replicas
            .iter()
            .copied()
            .find(|r| eligible(*r))
            .map(|r| (r, true)),
        None => None,
    }
}

fn set_leader(p: &mut PartitionRecord, leader: Option<(i32, bool)>) {
    match leader {
        Some((leader, unclean)) => {
            p.leader = leader;
            if unclean {
                p.isr = vec![leader];
            }
        }
        None => p.leader = -1,
    }
    p.leader_epoch += 1;
}

/// Takes `broker` out of the partition's service: out of the ISR (unless it is the last
/// member: the ISR then still says who has the data), and if it led, the leadership goes to
/// the next eligible in-sync replica, or to nobody. Returns whether anything changed.
pub(crate) fn remove_broker(
    p: &mut PartitionRecord,
    broker: i32,
    eligible: &dyn Fn(i32) -> bool,
    unclean: bool,
) -> bool {
    let mut changed = false;
    if p.isr.contains(&broker) && p.isr.len() > 1 {
        p.isr.retain(|&r| r != broker);
        changed = true;
    }
    if p.leader == broker {
        let others = |r: i32| r != broker && eligible(r);
        set_leader(p, choose(p, &others, unclean));
        changed = true;
    }
    if changed {
        p.partition_epoch += 1;
    }
    changed
}

/// Moves `broker` out of the partition's service for a controlled shutdown: its leadership
/// goes to another eligible in-sync replica (if there is none it keeps leading, so the
/// partition stays available until the broker actually stops), and it leaves the ISR if
/// others remain. Never unclean. Returns whether anything changed.
pub(crate) fn retire_broker(
    p: &mut PartitionRecord,
    broker: i32,
    eligible: &dyn Fn(i32) -> bool,
) -> bool {
    let mut changed = false;
    if p.leader == broker {
        let others = |r: i32| r != broker && eligible(r);
        if let Some(leader) = choose(p, &others, false) {
            set_leader(p, Some(leader));
            changed = true;
        }
    }
    if p.leader != broker && p.isr.contains(&broker) && p.isr.len() > 1 {
        p.isr.retain(|&r| r != broker);
        changed = true;
    }
    if changed {
        p.partition_epoch += 1;
    }
    changed
}

/// Gives a leaderless partition a leader if an eligible replica may now lead. Returns
/// whether anything changed.
pub(crate) fn elect_if_leaderless(
    p: &mut PartitionRecord,
    eligible: &dyn Fn(i32) -> bool,
    unclean: bool,
) -> bool {
    if p.leader >= 0 {
        return false;
    }
    match choose(p, eligible, unclean) {
        Some(leader) => {
            set_leader(p, Some(leader));
            p.partition_epoch += 1;
            true
        }
        None => false,
    }
}

/// Gives leadership back to the preferred leader (the first replica) when it is in sync
/// and eligible, so leadership evens out again after brokers return. Returns whether
/// anything changed.
pub(crate) fn elect_preferred(p: &mut PartitionRecord, eligible: &dyn Fn(i32) -> bool) -> bool {
    let Some(&preferred) = p.replicas.first() else {
        return false;
    };
    if p.leader == preferred || !p.isr.contains(&preferred) || !eligible(preferred) {
        return false;
    }
    set_leader(p, Some((preferred, false)));
    p.partition_epoch += 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRecord {
        PartitionRecord {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 9,
        }
    }

    #[test]
    fn a_dead_leader_is_replaced_by_the_next_in_sync_replica_in_replica_order() {
        let mut p = partition(&[1, 2, 3], &[1, 3, 2], 1);
        assert!(remove_broker(&mut p, 1, &|_| true, false));
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (2, vec![3, 2], 6, 10)
        );
    }

    #[test]
    fn a_dead_follower_leaves_the_isr_and_the_leader_stays() {
        let mut p = partition(&[1, 2, 3], &[1, 2, 3], 1);
        assert!(remove_broker(&mut p, 3, &|_| true, false));
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (1, vec![1, 2], 5, 10)
        );
        assert!(
            !remove_broker(&mut p, 3, &|_| true, false),
            "nothing left to change"
        );
    }

    #[test]
    fn the_last_in_sync_replica_stays_in_the_isr_and_the_partition_waits_for_it() {
        let mut p = partition(&[1, 2], &[1], 1);
        assert!(remove_broker(&mut p, 1, &|_| true, false));
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (-1, vec![1], 6));
        // Replica 2 is alive but out of sync: it may not lead.
        assert!(!elect_if_leaderless(&mut p, &|r| r == 2, false));
        // When 1 returns it leads again.
        assert!(elect_if_leaderless(&mut p, &|r| r == 1 || r == 2, false));
        assert_eq!((p.leader, p.leader_epoch), (1, 7));
    }

    #[test]
    fn unclean_election_lets_an_out_of_sync_replica_lead_alone() {
        let mut p = partition(&[1, 2], &[1], 1);
        assert!(remove_broker(&mut p, 1, &|r| r == 2, true));
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn a_controlled_shutdown_hands_over_leadership_but_never_leaves_a_partition_leaderless() {
        let mut p = partition(&[1, 2, 3], &[1, 2, 3], 1);
        assert!(retire_broker(&mut p, 1, &|r| r != 1));
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (2, vec![2, 3], 6)
        );
        let mut alone = partition(&[1, 2], &[1], 1);
        assert!(!retire_broker(&mut alone, 1, &|r| r != 1));
        assert_eq!((alone.leader, alone.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn ineligible_replicas_are_passed_over() {
        let mut p = partition(&[1, 2, 3], &[1, 2, 3], 1);
        assert!(remove_broker(&mut p, 1, &|r| r != 2, false));
        assert_eq!(p.leader, 3);
    }
}
