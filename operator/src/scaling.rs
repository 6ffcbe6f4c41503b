//! What a change of `Cluster.spec.replicas` means for the StatefulSet and the Rebalancing
//! condition. The decision itself is the controller core's (`controller::scaling`), the
//! same one `tributary cluster scale` uses on a local cluster: a scale-down drains the
//! brokers that go (the highest ids: a StatefulSet removes its last pods) before the
//! StatefulSet shrinks, and one below a topic's replication factor is refused.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tributary_broker::controller::{Balance, MetadataSnapshot, Plan, ScalePhase, scaling};

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

/// `desired` brokers are wanted, `running` are in the StatefulSet now (None: none yet);
/// `balance` as for the controller's [`scaling::decide`].
pub fn decide(
    desired: i32,
    running: Option<i32>,
    snapshot: &MetadataSnapshot,
    plan: &Plan,
    auto_on_scale: bool,
    generation: Option<i64>,
    balance: Balance,
) -> Decision {
    let d = scaling::decide(
        desired,
        running.unwrap_or(desired),
        snapshot,
        plan,
        auto_on_scale,
        "set spec.replicas to",
        balance,
    );
    let refused = d.phase == ScalePhase::ScaleDownRefused;
    let message = d.message;
    Decision {
        statefulset_replicas: d.run,
        cordon: d.cordon,
        rebalance: d.rebalance,
        refused: refused.then(|| message.clone()),
        rebalancing: condition::condition(
            condition::REBALANCING,
            d.phase.moving(),
            d.phase.name(),
            message,
            generation,
        ),
    }
}

#[cfg(test)]
mod tests {
    use tributary_broker::controller::scaling::fixtures::snapshot;

    use super::*;

    #[test]
    fn the_statefulset_shrinks_only_when_the_brokers_that_go_hold_nothing() {
        let holding = snapshot(&[0, 1, 2, 3, 4], &[&[0, 3], &[1, 4], &[2, 0]]);
        let d = decide(
            3,
            Some(5),
            &holding,
            &Plan::default(),
            true,
            Some(2),
            Balance::Unknown,
        );
        assert_eq!(d.statefulset_replicas, 5, "not before the drain");
        assert_eq!(d.cordon, BTreeSet::from([3, 4]));
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.reason, "Draining");
        assert_eq!(d.rebalancing.status, "True");

        let drained = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(
            3,
            Some(5),
            &drained,
            &Plan::default(),
            true,
            Some(2),
            Balance::Unknown,
        );
        assert_eq!(d.statefulset_replicas, 3);
        assert!(!d.rebalance);
        assert_eq!(d.rebalancing.status, "False");
    }

    #[test]
    fn a_refused_scale_down_says_which_field_to_change_and_changes_nothing() {
        let s = snapshot(&[0, 1, 2], &[&[0, 1, 2]]);
        let d = decide(
            2,
            Some(3),
            &s,
            &Plan::default(),
            true,
            Some(2),
            Balance::Unknown,
        );
        assert_eq!(d.statefulset_replicas, 3);
        assert!(d.cordon.is_empty() && !d.rebalance);
        let why = d.refused.unwrap();
        assert!(
            why.contains("topic 't' keeps 3 replicas")
                && why.contains("set spec.replicas to 3 or more"),
            "{why}"
        );
        assert_eq!(d.rebalancing.reason, "ScaleDownRefused");
    }

    #[test]
    fn a_scale_up_sets_the_statefulset_at_once_and_rebalances_once_the_brokers_registered() {
        let before = snapshot(&[0, 1, 2], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(
            5,
            Some(3),
            &before,
            &Plan::default(),
            true,
            Some(2),
            Balance::Unknown,
        );
        assert_eq!(d.statefulset_replicas, 5);
        assert!(!d.rebalance);
        let joined = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide(
            5,
            Some(5),
            &joined,
            &Plan::default(),
            true,
            Some(2),
            Balance::Unknown,
        );
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.status, "True");
    }
}
