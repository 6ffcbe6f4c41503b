//! The balancer: from the brokers that may hold replicas and the current assignment, a
//! target assignment in which every broker holds about as many replicas and preferred
//! leaderships as any other (within one), a partition's replicas sit in different racks
//! when the racks allow it, and as few replicas as possible move. Replicas on brokers that
//! may not hold any (gone for good, being drained) always move.
//!
//! It works in three passes: replicas on unusable brokers go to the least loaded usable
//! broker; then single replicas move from the most to the least loaded broker until the
//! counts are within one; then preferred leaders (the first replica) are reordered, which
//! moves no data, until leader counts are within one.

use std::collections::{BTreeMap, BTreeSet};

use super::placement::Candidate;

/// One partition's replicas, preferred leader first.
pub(crate) type Assignment = BTreeMap<(String, u32), Vec<i32>>;

struct Balancer<'a> {
    brokers: &'a [Candidate],
    racks: BTreeMap<i32, Option<&'a str>>,
    replicas: BTreeMap<i32, usize>,
}

impl<'a> Balancer<'a> {
    fn new(brokers: &'a [Candidate], assignment: &Assignment) -> Self {
        let racks: BTreeMap<i32, Option<&str>> =
            brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
        let mut replicas: BTreeMap<i32, usize> = brokers.iter().map(|b| (b.id, 0)).collect();
        for r in assignment.values().flatten() {
            if let Some(count) = replicas.get_mut(r) {
                *count += 1;
            }
        }
        Self {
            brokers,
            racks,
            replicas,
        }
    }

    fn rack(&self, broker: i32) -> Option<&'a str> {
        self.racks.get(&broker).copied().flatten()
    }

    /// Whether `broker` may take a replica of a partition whose other replicas are
    /// `others`: not already one, and not in a rack that already has more of them than
    /// the racks force.
    fn fits(&self, broker: i32, others: &[i32], replication_factor: usize) -> bool {
        if others.contains(&broker) {
            return false;
        }
        let racks: BTreeSet<Option<&str>> =
            self.brokers.iter().map(|b| b.rack.as_deref()).collect();
        // With k racks and r replicas, no rack needs more than ceil(r / k).
        let per_rack = replication_factor.div_ceil(racks.len().max(1));
        let rack = self.rack(broker);
        others.iter().filter(|o| self.rack(**o) == rack).count() < per_rack
    }

    /// The least loaded usable broker that fits, ties to the lowest id.
    fn least_loaded(&self, others: &[i32], replication_factor: usize) -> Option<i32> {
        self.replicas
            .iter()
            .filter(|(b, _)| self.fits(**b, others, replication_factor))
            .min_by_key(|(b, count)| (**count, **b))
            .map(|(b, _)| *b)
    }
}

/// The target assignment for `current` on `brokers` (those that may hold replicas).
/// Partitions keep their replication factor; when fewer brokers are usable than a
/// partition has replicas, it keeps what it can and the rest stay where they are.
pub(crate) fn balance(brokers: &[Candidate], current: &Assignment) -> Assignment {
    if brokers.is_empty() {
        return current.clone();
    }
    let mut target = current.clone();
    let mut balancer = Balancer::new(brokers, current);

    // 1. Replicas on brokers that may not hold any move to the least loaded that fits.
    for replicas in target.values_mut() {
        let rf = replicas.len();
        for i in 0..replicas.len() {
            if balancer.replicas.contains_key(&replicas[i]) {
                continue;
            }
            let others: Vec<i32> = replicas
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| *r)
                .collect();
            let chosen = balancer
                .least_loaded(&others, rf)
                .or_else(|| balancer.least_loaded(&others, usize::MAX));
            if let Some(chosen) = chosen {
                replicas[i] = chosen;
                *balancer.replicas.entry(chosen).or_default() += 1;
            }
        }
    }

    // 2. One replica at a time from the most loaded broker to the least loaded one.
    loop {
        let (max_broker, max) = balancer
            .replicas
            .iter()
            .max_by_key(|(b, c)| (**c, std::cmp::Reverse(**b)))
            .map(|(b, c)| (*b, *c))
            .expect("brokers");
        let min = *balancer.replicas.values().min().expect("brokers");
        if max - min <= 1 {
            break;
        }
        // A partition on the most loaded broker whose replica can go to a broker with
        // the fewest replicas; non-leader replicas first, so leadership moves less.
        let mut moved = false;
        let candidates: Vec<(String, u32)> = target
            .iter()
            .filter(|(_, r)| r.contains(&max_broker))
            .map(|(k, _)| k.clone())
            .collect();
        'search: for prefer_follower in [true, false] {
            for key in &candidates {
                let replicas = &target[key];
                let i = replicas
                    .iter()
                    .position(|r| *r == max_broker)
                    .expect("on it");
                if prefer_follower && i == 0 {
                    continue;
                }
                let others: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|r| *r != max_broker)
                    .collect();
                let receivers: Vec<i32> = balancer
                    .replicas
                    .iter()
                    .filter(|(b, c)| **c == min && balancer.fits(**b, &others, replicas.len()))
                    .map(|(b, _)| *b)
                    .collect();
                if let Some(&to) = receivers.first() {
                    let replicas = target.get_mut(key).expect("present");
                    replicas[i] = to;
                    *balancer.replicas.get_mut(&max_broker).expect("usable") -= 1;
                    *balancer.replicas.get_mut(&to).expect("usable") += 1;
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            // The racks allow no better spread.
            break;
        }
    }

    // 3. Preferred leaders: reorder replicas (no data moves) until leader counts are
    // within one.
    let mut leaders: BTreeMap<i32, usize> = brokers.iter().map(|b| (b.id, 0)).collect();
    for replicas in target.values() {
        if let Some(count) = replicas.first().and_then(|l| leaders.get_mut(l)) {
            *count += 1;
        }
    }
    // Each step hands one preferred leadership from a broker to another replica of the
    // same partition with at least two fewer, the widest such gap first.
    loop {
        let swap = target
            .iter()
            .filter_map(|(key, replicas)| {
                let leader = *replicas.first()?;
                let from = *leaders.get(&leader)?;
                replicas
                    .iter()
                    .skip(1)
                    .filter_map(|r| Some((*r, *leaders.get(r)?)))
                    .filter(|(_, to)| to + 1 < from)
                    .map(|(r, to)| (from - to, key.clone(), leader, r))
                    .max_by_key(|(gap, _, _, r)| (*gap, std::cmp::Reverse(*r)))
            })
            .max_by_key(|(gap, key, _, _)| (*gap, std::cmp::Reverse(key.clone())));
        let Some((_, key, from, to)) = swap else {
            break;
        };
        let replicas = target.get_mut(&key).expect("present");
        let i = replicas.iter().position(|r| *r == to).expect("a replica");
        replicas.swap(0, i);
        *leaders.get_mut(&from).expect("usable") -= 1;
        *leaders.get_mut(&to).expect("usable") += 1;
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::placement::{Load, assign};

    /// How many replicas would move to get from `current` to `target`.
    fn moves(current: &Assignment, target: &Assignment) -> usize {
        target
            .iter()
            .map(|(key, replicas)| {
                let before = current.get(key).map(Vec::as_slice).unwrap_or(&[]);
                replicas.iter().filter(|r| !before.contains(r)).count()
            })
            .sum()
    }

    fn brokers(ids: &[i32], rack: impl Fn(i32) -> Option<&'static str>) -> Vec<Candidate> {
        ids.iter()
            .map(|id| Candidate {
                id: *id,
                rack: rack(*id).map(str::to_string),
            })
            .collect()
    }

    /// `partitions` partitions of `rf` replicas placed on `on` as a new topic's would be.
    fn placed(on: &[Candidate], partitions: u32, rf: usize) -> Assignment {
        assign(on, &mut Load::default(), partitions, rf)
            .into_iter()
            .enumerate()
            .map(|(p, r)| (("t".to_string(), p as u32), r))
            .collect()
    }

    fn spreads(brokers: &[Candidate], assignment: &Assignment) -> (usize, usize) {
        let mut replicas: BTreeMap<i32, usize> = brokers.iter().map(|b| (b.id, 0)).collect();
        let mut leaders = replicas.clone();
        for r in assignment.values() {
            for b in r {
                *replicas.get_mut(b).unwrap() += 1;
            }
            *leaders.get_mut(&r[0]).unwrap() += 1;
        }
        let range =
            |m: &BTreeMap<i32, usize>| m.values().max().unwrap() - m.values().min().unwrap();
        (range(&replicas), range(&leaders))
    }

    #[test]
    fn new_brokers_get_their_share_with_the_fewest_moves() {
        for (partitions, rf) in [(12, 3), (30, 3), (7, 2), (5, 1), (16, 3)] {
            let three = brokers(&[0, 1, 2], |_| None);
            let current = placed(&three, partitions, rf);
            let five = brokers(&[0, 1, 2, 3, 4], |_| None);
            let target = balance(&five, &current);
            let (replica_spread, leader_spread) = spreads(&five, &target);
            assert!(
                replica_spread <= 1 && leader_spread <= 1,
                "p={partitions} rf={rf}: {target:?}"
            );
            // The fewest moves: exactly the new brokers' share.
            let total = partitions as usize * rf;
            let share: usize = [3, 4]
                .iter()
                .map(|b| target.values().filter(|r| r.contains(b)).count())
                .sum();
            assert_eq!(moves(&current, &target), share, "p={partitions} rf={rf}");
            assert!(share <= (total * 2).div_ceil(5), "p={partitions} rf={rf}");
            for r in target.values() {
                assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), rf, "{r:?}");
            }
        }
    }

    #[test]
    fn a_balanced_assignment_is_left_alone() {
        let five = brokers(&[0, 1, 2, 3, 4], |_| None);
        let current = placed(&five, 20, 3);
        assert_eq!(balance(&five, &current), current);
    }

    #[test]
    fn replicas_leave_brokers_that_may_not_hold_any() {
        let five = brokers(&[0, 1, 2, 3, 4], |_| None);
        let current = placed(&five, 20, 3);
        let three = brokers(&[0, 1, 2], |_| None);
        let target = balance(&three, &current);
        for r in target.values() {
            assert!(r.iter().all(|b| *b <= 2), "{r:?}");
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        let (replica_spread, leader_spread) = spreads(&three, &target);
        assert!(replica_spread == 0 && leader_spread <= 1, "{target:?}");
        // Replicas already on the remaining brokers stay.
        for (key, before) in &current {
            for b in before.iter().filter(|b| **b <= 2) {
                assert!(
                    target[key].contains(b),
                    "{key:?}: {before:?} -> {:?}",
                    target[key]
                );
            }
        }
    }

    #[test]
    fn moves_keep_replicas_of_a_partition_in_different_racks() {
        let rack = |id: i32| Some(["a", "b", "c"][id as usize % 3]);
        let three = brokers(&[0, 1, 2], rack);
        let current = placed(&three, 12, 3);
        let six = brokers(&[0, 1, 2, 3, 4, 5], rack);
        let target = balance(&six, &current);
        for r in target.values() {
            let racks: BTreeSet<_> = r.iter().map(|b| rack(*b)).collect();
            assert_eq!(racks.len(), 3, "{r:?}");
        }
        let (replica_spread, leader_spread) = spreads(&six, &target);
        assert!(replica_spread <= 1 && leader_spread <= 1, "{target:?}");
    }

    #[test]
    fn with_too_few_brokers_a_partition_keeps_what_it_can() {
        let three = brokers(&[0, 1, 2], |_| None);
        let current = placed(&three, 3, 3);
        let two = brokers(&[0, 1], |_| None);
        let target = balance(&two, &current);
        for (key, r) in &target {
            assert_eq!(r.len(), 3, "the replication factor is not lowered");
            assert!(r.contains(&0) && r.contains(&1), "{key:?}: {r:?}");
        }
    }
}
