//! Where new partitions' replicas go: spread so that every broker carries about the same
//! number of replicas and of preferred leaderships across the cluster (counting what it
//! already has), and so that a partition's replicas sit in different racks when the racks
//! allow it.

use std::collections::{BTreeMap, BTreeSet};

/// A broker that can take replicas, with its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// How many replicas and preferred leaderships each broker has.
#[derive(Debug, Clone, Default)]
pub(crate) struct Load {
    pub replicas: BTreeMap<i32, usize>,
    pub leaders: BTreeMap<i32, usize>,
}

impl Load {
    pub fn add(&mut self, replicas: &[i32]) {
        for (i, broker) in replicas.iter().enumerate() {
            *self.replicas.entry(*broker).or_default() += 1;
            if i == 0 {
                *self.leaders.entry(*broker).or_default() += 1;
            }
        }
    }
}

/// Replica lists for `partitions` new partitions of `replication_factor` replicas each;
/// the first replica of each is its preferred leader. `load` is updated as they are placed.
pub(crate) fn assign(
    brokers: &[Candidate],
    load: &mut Load,
    partitions: u32,
    replication_factor: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    (0..partitions as usize)
        .map(|p| {
            // Ties go round-robin from a different broker for each partition.
            let tiebreak = |i: usize| (i + n - p % n) % n;
            let count = |map: &BTreeMap<i32, usize>, id: i32| map.get(&id).copied().unwrap_or(0);
            let leader = (0..n)
                .min_by_key(|&i| {
                    (
                        count(&load.leaders, brokers[i].id),
                        count(&load.replicas, brokers[i].id),
                        tiebreak(i),
                    )
                })
                .expect("at least one broker");
            let mut chosen = vec![leader];
            let mut racks: BTreeSet<Option<&str>> =
                BTreeSet::from([brokers[leader].rack.as_deref()]);
            while chosen.len() < replication_factor {
                let unused_rack_left = (0..n)
                    .any(|i| !chosen.contains(&i) && !racks.contains(&brokers[i].rack.as_deref()));
                let next = (0..n)
                    .filter(|i| !chosen.contains(i))
                    .filter(|&i| !unused_rack_left || !racks.contains(&brokers[i].rack.as_deref()))
                    .min_by_key(|&i| (count(&load.replicas, brokers[i].id), tiebreak(i)))
                    .expect("enough brokers for the replication factor");
                racks.insert(brokers[next].rack.as_deref());
                chosen.push(next);
            }
            let replicas: Vec<i32> = chosen.iter().map(|&i| brokers[i].id).collect();
            load.add(&replicas);
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[&str]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                id: i as i32 + 1,
                rack: (!r.is_empty()).then(|| r.to_string()),
            })
            .collect()
    }

    fn spread(load: &Load, brokers: &[Candidate]) -> (usize, usize) {
        let range = |map: &BTreeMap<i32, usize>| {
            let counts: Vec<usize> = brokers
                .iter()
                .map(|b| map.get(&b.id).copied().unwrap_or(0))
                .collect();
            counts.iter().max().unwrap() - counts.iter().min().unwrap()
        };
        (range(&load.replicas), range(&load.leaders))
    }

    #[test]
    fn replicas_and_leaders_stay_within_one_of_each_other_across_topics() {
        for (n, partitions, rf) in [(3, 7, 2), (5, 12, 3), (4, 1, 1), (6, 50, 3), (3, 3, 3)] {
            let all = brokers(&vec![""; n]);
            let mut load = Load::default();
            for topic_partitions in [partitions, 1, partitions + 2] {
                let assignment = assign(&all, &mut load, topic_partitions, rf);
                for replicas in &assignment {
                    let distinct: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(distinct.len(), rf, "{replicas:?}");
                }
                let (replica_spread, leader_spread) = spread(&load, &all);
                assert!(
                    replica_spread <= 1 && leader_spread <= 1,
                    "n={n} p={partitions} rf={rf}: {load:?}"
                );
            }
        }
    }

    #[test]
    fn replicas_of_a_partition_go_to_different_racks_when_they_can() {
        let all = brokers(&["a", "a", "b", "b", "c", "c"]);
        let mut load = Load::default();
        for replicas in assign(&all, &mut load, 12, 3) {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|id| all[*id as usize - 1].rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        assert!(spread(&load, &all).0 <= 1);
        // Two racks for three replicas: both racks are used.
        let two = brokers(&["a", "a", "b", "b"]);
        for replicas in assign(&two, &mut Load::default(), 4, 3) {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|id| two[*id as usize - 1].rack.clone())
                .collect();
            assert_eq!(racks.len(), 2);
        }
    }
}
