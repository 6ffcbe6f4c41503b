//! The uniform, sticky assignor of consumer groups: every subscribed partition goes to
//! exactly one member subscribed to its topic, members' partition counts end within one of
//! each other (when their subscriptions allow it), and a partition stays with the member
//! that has it whenever the balance allows, so as few partitions as possible move.

use std::collections::{BTreeMap, BTreeSet};

use crate::TopicPartition;

/// What the assignor knows of a member.
#[derive(Debug, Clone, Default)]
pub struct MemberSpec {
    pub subscribed: BTreeSet<String>,
    /// The partitions the member has now.
    pub current: BTreeSet<TopicPartition>,
}

/// Member id to the partitions it should have.
pub type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

/// Computes the target assignment of `members` over topics with the given partition counts
/// (topics missing from `partition_counts` do not exist, and get nobody).
pub fn assign(
    members: &BTreeMap<String, MemberSpec>,
    partition_counts: &BTreeMap<String, u32>,
) -> Assignment {
    let mut target: Assignment = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let eligible = |member: &str, tp: &TopicPartition| {
        members[member].subscribed.contains(&tp.topic)
            && partition_counts
                .get(&tp.topic)
                .is_some_and(|&n| tp.partition < n)
    };
    // 1. Members keep what they have and may still have (a partition claimed by two members
    //    goes to the first).
    let mut taken = BTreeSet::new();
    for (member, spec) in members {
        for tp in &spec.current {
            if eligible(member, tp) && taken.insert(tp.clone()) {
                target
                    .get_mut(member)
                    .expect("every member")
                    .insert(tp.clone());
            }
        }
    }
    // 2. Every other subscribed partition goes to the least loaded member subscribed to it.
    let subscribed: BTreeSet<&String> = members.values().flat_map(|m| &m.subscribed).collect();
    for topic in subscribed {
        let Some(&count) = partition_counts.get(topic) else {
            continue;
        };
        for partition in 0..count {
            let tp = TopicPartition::new(topic.clone(), partition);
            if taken.contains(&tp) {
                continue;
            }
            if let Some(member) = least_loaded(&target, |m| eligible(m, &tp)) {
                target
                    .get_mut(&member)
                    .expect("every member")
                    .insert(tp.clone());
                taken.insert(tp);
            }
        }
    }
    // 3. Move partitions from the most loaded members to members with at least two fewer,
    //    one at a time, until no such move is left.
    while let Some((from, tp, to)) = next_move(&target, &eligible) {
        target.get_mut(&from).expect("every member").remove(&tp);
        target.get_mut(&to).expect("every member").insert(tp);
    }
    target
}

fn least_loaded(target: &Assignment, can_take: impl Fn(&str) -> bool) -> Option<String> {
    target
        .iter()
        .filter(|(m, _)| can_take(m))
        .min_by_key(|(m, partitions)| (partitions.len(), *m))
        .map(|(m, _)| m.clone())
}

/// The move that most reduces the imbalance: from the most loaded member that has a
/// partition some member with two fewer can take, its last such partition, to the least
/// loaded of those members.
fn next_move(
    target: &Assignment,
    eligible: &impl Fn(&str, &TopicPartition) -> bool,
) -> Option<(String, TopicPartition, String)> {
    let mut by_load: Vec<(&String, &BTreeSet<TopicPartition>)> = target.iter().collect();
    by_load.sort_by_key(|(m, partitions)| (std::cmp::Reverse(partitions.len()), *m));
    for (from, partitions) in by_load {
        for tp in partitions.iter().rev() {
            let to = least_loaded(target, |m| {
                m != from.as_str() && eligible(m, tp) && target[m].len() + 1 < partitions.len()
            });
            if let Some(to) = to {
                return Some((from.clone(), tp.clone(), to));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (member id, subscribed topics, partitions it has now).
    type Spec<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, u32)]);

    fn members(specs: &[Spec]) -> BTreeMap<String, MemberSpec> {
        specs
            .iter()
            .map(|(id, topics, current)| {
                (
                    id.to_string(),
                    MemberSpec {
                        subscribed: topics.iter().map(|t| t.to_string()).collect(),
                        current: current
                            .iter()
                            .map(|(t, p)| TopicPartition::new(*t, *p))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    fn counts(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// Every partition of `topics` once, and the members' counts within one.
    fn check_uniform(target: &Assignment, topics: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for partitions in target.values() {
            for tp in partitions {
                assert!(seen.insert(tp.clone()), "{tp} assigned twice: {target:?}");
            }
        }
        let all: usize = topics.values().map(|&n| n as usize).sum();
        assert_eq!(seen.len(), all, "{target:?}");
        let loads: Vec<usize> = target.values().map(BTreeSet::len).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 1, "unbalanced: {target:?}");
    }

    fn moved(before: &Assignment, after: &Assignment) -> usize {
        after
            .iter()
            .map(|(m, partitions)| {
                let had = before.get(m).cloned().unwrap_or_default();
                partitions.difference(&had).count()
            })
            .sum()
    }

    fn with_current(
        target: &Assignment,
        topics: &[&str],
        extra: &[&str],
    ) -> BTreeMap<String, MemberSpec> {
        let subscribed: BTreeSet<String> = topics.iter().map(|t| t.to_string()).collect();
        let mut specs: BTreeMap<String, MemberSpec> = target
            .iter()
            .map(|(m, current)| {
                (
                    m.clone(),
                    MemberSpec {
                        subscribed: subscribed.clone(),
                        current: current.clone(),
                    },
                )
            })
            .collect();
        for m in extra {
            specs.insert(
                m.to_string(),
                MemberSpec {
                    subscribed: subscribed.clone(),
                    current: BTreeSet::new(),
                },
            );
        }
        specs
    }

    #[test]
    fn six_partitions_over_three_members_give_two_each() {
        let topics = counts(&[("t", 6)]);
        let target = assign(
            &members(&[("a", &["t"], &[]), ("b", &["t"], &[]), ("c", &["t"], &[])]),
            &topics,
        );
        check_uniform(&target, &topics);
        assert!(target.values().all(|p| p.len() == 2));
    }

    #[test]
    fn a_member_joining_or_leaving_moves_only_what_balance_needs() {
        let topics = counts(&[("t", 6), ("u", 5)]);
        let three = assign(
            &with_current(&Assignment::new(), &["t", "u"], &["a", "b", "c"]),
            &topics,
        );
        check_uniform(&three, &topics);

        // A fourth member takes two or three partitions (11 / 4), and nothing else moves.
        let four = assign(&with_current(&three, &["t", "u"], &["d"]), &topics);
        check_uniform(&four, &topics);
        assert_eq!(moved(&three, &four), four["d"].len());
        for m in ["a", "b", "c"] {
            assert!(four[m].is_subset(&three[m]), "{m} only gave partitions up");
        }

        // b leaves: only b's partitions move.
        let mut without_b = with_current(&four, &["t", "u"], &[]);
        let b_had = without_b.remove("b").unwrap().current;
        let three_again = assign(&without_b, &topics);
        check_uniform(&three_again, &topics);
        assert_eq!(moved(&four, &three_again), b_had.len());
    }

    #[test]
    fn a_member_rejoining_with_its_partitions_keeps_them() {
        let topics = counts(&[("t", 6)]);
        let before = assign(
            &with_current(&Assignment::new(), &["t"], &["a", "b", "c"]),
            &topics,
        );
        let again = assign(&with_current(&before, &["t"], &[]), &topics);
        assert_eq!(before, again);
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to_and_missing_topics_are_skipped() {
        let topics = counts(&[("t", 4), ("u", 2)]);
        let target = assign(
            &members(&[
                ("a", &["t"], &[("u", 0), ("t", 9)]),
                ("b", &["t", "u", "gone"], &[]),
            ]),
            &topics,
        );
        assert!(target["a"].iter().all(|tp| tp.topic == "t"));
        assert_eq!(target.values().map(BTreeSet::len).sum::<usize>(), 6);
        // a can only take t; b has both u partitions and the t partitions that even it out.
        assert_eq!((target["a"].len(), target["b"].len()), (3, 3));
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let topics = counts(&[("t", 2)]);
        let target = assign(
            &with_current(&Assignment::new(), &["t"], &["a", "b", "c"]),
            &topics,
        );
        check_uniform(&target, &topics);
        assert_eq!(target.values().filter(|p| p.is_empty()).count(), 1);
    }
}
