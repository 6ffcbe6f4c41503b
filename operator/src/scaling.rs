//! What a change of `Cluster.spec.replicas` means for the brokers, decided from the
//! controller's metadata: growing adds pods and (with `rebalance.autoOnScale`) moves
//! replicas onto them once they have registered; shrinking first cordons the brokers that
//! go (the highest ids: a StatefulSet removes its last pods), drains them by rebalancing,
//! and lets the StatefulSet shrink only when they hold nothing. A shrink that would leave
//! fewer brokers than a topic has replicas is refused, and nothing changes.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tributary_broker::controller::{MetadataSnapshot, Plan};

use crate::crd::condition;

/// What the Cluster reconciler does about the broker count.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The StatefulSet's replicas to apply.
    pub statefulset_replicas: i32,
    /// The brokers that take no new replicas.
    pub cordon: BTreeSet<i32>,
    /// Start a rebalance now.
    pub rebalance: bool,
    /// Why a scale-down is refused (the Ready condition), when it is.
    pub refused: Option<String>,
    /// The Rebalancing condition.
    pub rebalancing: Condition,
}

fn progress(plan: &Plan) -> String {
    format!("{} of {} moves done", plan.done, plan.total)
}

/// `desired` brokers are wanted, `running` are in the StatefulSet now (None: none yet).
pub fn decide(
    desired: i32,
    running: Option<i32>,
    snapshot: &MetadataSnapshot,
    plan: &Plan,
    auto_on_scale: bool,
    generation: Option<i64>,
) -> Decision {
    let running = running.unwrap_or(desired);
    let in_progress = !plan.moves.is_empty();
    let rebalancing = |active: bool, reason: &str, message: String| {
        condition::condition(condition::REBALANCING, active, reason, message, generation)
    };
    if desired < running {
        let removing: BTreeSet<i32> = (desired..running).collect();
        let widest = snapshot
            .topics
            .values()
            .map(|t| (t.replication_factor(), t.name.clone()))
            .max();
        if let Some((rf, topic)) = widest.filter(|(rf, _)| *rf > desired.max(0) as usize) {
            let message = format!(
                "cannot scale down to {desired} brokers: topic '{topic}' keeps {rf} replicas of every partition, so at least {rf} brokers must remain; set replicas to {rf} or more (or delete the topic first). The {running} brokers are left as they are"
            );
            return Decision {
                statefulset_replicas: running,
                cordon: BTreeSet::new(),
                rebalance: false,
                refused: Some(message.clone()),
                rebalancing: rebalancing(false, "ScaleDownRefused", message),
            };
        }
        let holding: Vec<i32> = removing
            .iter()
            .copied()
            .filter(|b| snapshot.replicas_on(*b).next().is_some())
            .collect();
        if holding.is_empty() {
            return Decision {
                statefulset_replicas: desired,
                cordon: BTreeSet::new(),
                rebalance: false,
                refused: None,
                rebalancing: rebalancing(
                    false,
                    "Drained",
                    format!(
                        "brokers {desired} to {} hold no replicas; removing them",
                        running - 1
                    ),
                ),
            };
        }
        let ids: Vec<String> = holding.iter().map(i32::to_string).collect();
        return Decision {
            statefulset_replicas: running,
            cordon: removing,
            rebalance: !in_progress,
            refused: None,
            rebalancing: rebalancing(
                true,
                "Draining",
                format!(
                    "moving replicas off broker(s) {} before they are removed; {}",
                    ids.join(", "),
                    progress(plan)
                ),
            ),
        };
    }
    let wanted: Vec<i32> = (0..desired).collect();
    let all_in = wanted.iter().all(|b| snapshot.brokers.contains_key(b));
    let empty_broker = wanted
        .iter()
        .any(|b| snapshot.replicas_on(*b).next().is_none());
    let has_partitions = snapshot.topics.values().any(|t| !t.partitions.is_empty());
    let rebalance = auto_on_scale && !in_progress && all_in && empty_broker && has_partitions;
    let condition = if in_progress || rebalance {
        rebalancing(
            true,
            "Rebalancing",
            format!(
                "moving replicas to even out the brokers; {}",
                progress(plan)
            ),
        )
    } else {
        rebalancing(false, "Balanced", "no rebalance in progress".to_string())
    };
    Decision {
        statefulset_replicas: desired,
        cordon: BTreeSet::new(),
        rebalance,
        refused: None,
        rebalancing: condition,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tributary_broker::controller::{BrokerInfo, PartitionRecord, TopicRecord};

    use super::*;

    fn snapshot(alive: &[i32], partitions: &[&[i32]]) -> MetadataSnapshot {
        let mut s = MetadataSnapshot::default();
        for id in alive {
            s.brokers.insert(
                *id,
                BrokerInfo {
                    id: *id,
                    host: format!("b{id}"),
                    port: 9095,
                    rack: None,
                },
            );
        }
        s.topics.insert(
            "t".into(),
            TopicRecord {
                name: "t".into(),
                id: uuid::Uuid::nil(),
                config: BTreeMap::new(),
                partitions: partitions
                    .iter()
                    .map(|r| PartitionRecord {
                        replicas: r.to_vec(),
                        isr: r.to_vec(),
                        leader: r[0],
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect(),
            },
        );
        s
    }

    #[test]
    fn a_scale_down_drains_first_and_shrinks_only_when_the_brokers_hold_nothing() {
        let holding = snapshot(&[0, 1, 2, 3, 4], &[&[0, 3], &[1, 4], &[2, 0]]);
        let d = decide(3, Some(5), &holding, &Plan::default(), true, Some(2));
        assert_eq!(d.statefulset_replicas, 5, "not before the drain");
        assert_eq!(d.cordon, BTreeSet::from([3, 4]));
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.reason, "Draining");
        assert!(
            d.rebalancing.message.contains("broker(s) 3, 4"),
            "{}",
            d.rebalancing.message
        );

        let drained = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(3, Some(5), &drained, &Plan::default(), true, Some(2));
        assert_eq!(d.statefulset_replicas, 3);
        assert!(!d.rebalance);
    }

    #[test]
    fn a_scale_down_below_a_topics_replication_factor_is_refused_and_changes_nothing() {
        let s = snapshot(&[0, 1, 2], &[&[0, 1, 2]]);
        let d = decide(2, Some(3), &s, &Plan::default(), true, Some(2));
        assert_eq!(d.statefulset_replicas, 3);
        assert!(d.cordon.is_empty() && !d.rebalance);
        let why = d.refused.unwrap();
        assert!(
            why.contains("topic 't' keeps 3 replicas") && why.contains("set replicas to 3 or more"),
            "{why}"
        );
    }

    #[test]
    fn a_scale_up_rebalances_once_the_new_brokers_have_registered() {
        let before = snapshot(&[0, 1, 2], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(5, Some(3), &before, &Plan::default(), true, Some(2));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(!d.rebalance, "brokers 3 and 4 are not registered yet");
        let joined = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(5, Some(5), &joined, &Plan::default(), true, Some(2));
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.status, "True");
        let d = decide(5, Some(5), &joined, &Plan::default(), false, Some(2));
        assert!(!d.rebalance, "autoOnScale off");
    }
}
