//! What a change of `Cluster.spec.replicas` means for the StatefulSet and the Rebalancing
//! condition. The decision itself is the controller core's (`controller::scaling`), the
//! same one `tributary cluster scale` uses on a local cluster: a scale-down drains the
//! brokers that go (the highest ids: a StatefulSet removes its last pods) before the
//! StatefulSet shrinks, and one below a topic's replication factor is refused.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tributary_broker::controller::{ScaleDecision, ScalePhase};

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

/// How the Cluster's users ask for a broker count, for the advice when a shrink is refused.
pub const ASK: &str = "set spec.replicas to";

/// The controller's decision (`Controller::decide_scale` with [`ASK`]) as the StatefulSet's
/// replicas, the cordons and the Cluster's conditions.
pub fn for_cluster(d: ScaleDecision, generation: Option<i64>) -> Decision {
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
    use tributary_broker::controller::scaling::{Balance, decide};
    use tributary_broker::metadata::fixtures::snapshot;
    use tributary_broker::metadata::{MetadataSnapshot, Plan};

    use super::*;

    /// As the reconciler does: `desired` brokers, `running` in the StatefulSet.
    fn cluster_decision(desired: i32, running: i32, s: &MetadataSnapshot) -> Decision {
        let d = decide(
            desired,
            running,
            s,
            &Plan::default(),
            true,
            ASK,
            Balance::Unknown,
        );
        for_cluster(d, Some(2))
    }

    #[test]
    fn the_statefulset_shrinks_only_when_the_brokers_that_go_hold_nothing() {
        let holding = snapshot(&[0, 1, 2, 3, 4], &[&[0, 3], &[1, 4], &[2, 0]]);
        let d = cluster_decision(3, 5, &holding);
        assert_eq!(d.statefulset_replicas, 5, "not before the drain");
        assert_eq!(d.cordon, BTreeSet::from([3, 4]));
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.reason, "Draining");
        assert_eq!(d.rebalancing.status, "True");

        let drained = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = cluster_decision(3, 5, &drained);
        assert_eq!(d.statefulset_replicas, 3);
        assert!(!d.rebalance);
        assert_eq!(d.rebalancing.status, "False");
    }

    #[test]
    fn a_refused_scale_down_says_which_field_to_change_and_changes_nothing() {
        let s = snapshot(&[0, 1, 2], &[&[0, 1, 2]]);
        let d = cluster_decision(2, 3, &s);
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
        let d = cluster_decision(5, 3, &before);
        assert_eq!(d.statefulset_replicas, 5);
        assert!(!d.rebalance);
        let joined = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = cluster_decision(5, 5, &joined);
        assert!(d.rebalance);
        assert_eq!(d.rebalancing.status, "True");
    }
}
