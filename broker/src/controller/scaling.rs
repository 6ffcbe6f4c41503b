//! What a change of the broker count means, decided from the controller's metadata: the
//! same rule for a Cluster's `spec.replicas` on Kubernetes and for `tributary cluster
//! scale` on a local cluster. Growing adds brokers and (with auto-rebalance) moves replicas
//! onto them once they have registered; shrinking first cordons the brokers that go (the
//! highest ids: a StatefulSet removes its last pods, and a local cluster its last
//! processes), drains them by rebalancing, and lets them stop only when they hold nothing.
//! A shrink that would leave fewer brokers than a topic has replicas is refused, and
//! nothing changes.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::metadata::{MetadataSnapshot, Plan};

/// Where a change of the broker count stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScalePhase {
    /// The shrink would break a topic's replication factor; nothing changes.
    ScaleDownRefused,
    /// Replicas are being moved off the brokers that go.
    Draining,
    /// The brokers that go hold nothing and may stop.
    Drained,
    /// Brokers that should run have not registered (yet).
    WaitingForBrokers,
    /// Replicas are being moved to even out the brokers.
    Rebalancing,
    /// Nothing to do.
    Balanced,
}

impl ScalePhase {
    /// The name a condition's reason (and the CLI) shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::ScaleDownRefused => "ScaleDownRefused",
            Self::Draining => "Draining",
            Self::Drained => "Drained",
            Self::WaitingForBrokers => "WaitingForBrokers",
            Self::Rebalancing => "Rebalancing",
            Self::Balanced => "Balanced",
        }
    }

    /// Whether replicas are moving because of it.
    pub fn moving(self) -> bool {
        matches!(self, Self::Draining | Self::Rebalancing)
    }
}

/// What to do about the broker count now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleDecision {
    /// How many brokers should run now: ids 0 to `run - 1`.
    pub run: i32,
    /// The brokers that go, which take no new replicas.
    pub cordon: BTreeSet<i32>,
    /// Start a rebalance now.
    pub rebalance: bool,
    pub phase: ScalePhase,
    /// What is happening, or why the shrink is refused and what to do.
    pub message: String,
}

/// Why going from `running` to `desired` brokers is refused, if it is: a topic keeps more
/// replicas of every partition than `desired` brokers can hold. `ask` is how the user asks
/// for a broker count ("set spec.replicas to"), for the advice.
pub fn refusal(
    desired: i32,
    running: i32,
    snapshot: &MetadataSnapshot,
    ask: &str,
) -> Option<String> {
    if desired >= running {
        return None;
    }
    let (rf, topic) = snapshot
        .topics
        .values()
        .map(|t| (t.replication_factor(), t.name.clone()))
        .max()?;
    (rf > desired.max(0) as usize).then(|| {
        format!(
            "cannot scale down to {desired} brokers: topic '{topic}' keeps {rf} replicas of every partition, so at least {rf} brokers must remain; {ask} {rf} or more (or delete the topic first). The {running} brokers are left as they are"
        )
    })
}

/// What the balancer says of the brokers as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Not asked (yet): a rebalance may move something.
    Unknown,
    /// A rebalance now would move nothing (a broker may stay empty: fewer replicas than
    /// brokers, racks, cordons).
    Balanced,
}

/// `desired` brokers are wanted and `running` exist now (ids 0 to `running - 1`); `ask` as
/// for [`refusal`]. With [`Balance::Unknown`] a growth whose new brokers are still empty
/// asks for a rebalance; the caller tries it (or a dry run) and, when nothing would move,
/// decides again with [`Balance::Balanced`].
pub fn decide(
    desired: i32,
    running: i32,
    snapshot: &MetadataSnapshot,
    plan: &Plan,
    auto_rebalance: bool,
    ask: &str,
    balance: Balance,
) -> ScaleDecision {
    let in_progress = !plan.moves.is_empty();
    if let Some(message) = refusal(desired, running, snapshot, ask) {
        return ScaleDecision {
            run: running,
            cordon: BTreeSet::new(),
            rebalance: false,
            phase: ScalePhase::ScaleDownRefused,
            message,
        };
    }
    if desired < running {
        let removing: BTreeSet<i32> = (desired..running).collect();
        let holding: Vec<String> = removing
            .iter()
            .filter(|b| snapshot.replicas_on(**b).next().is_some())
            .map(i32::to_string)
            .collect();
        if holding.is_empty() {
            return ScaleDecision {
                run: desired,
                cordon: removing,
                rebalance: false,
                phase: ScalePhase::Drained,
                message: format!(
                    "brokers {desired} to {} hold no replicas; removing them",
                    running - 1
                ),
            };
        }
        return ScaleDecision {
            run: running,
            cordon: removing,
            rebalance: !in_progress,
            phase: ScalePhase::Draining,
            message: format!(
                "moving replicas off broker(s) {} before they are removed; {}",
                holding.join(", "),
                plan.progress()
            ),
        };
    }
    let wanted = 0..desired;
    let missing: Vec<String> = wanted
        .clone()
        .filter(|b| !snapshot.brokers.contains_key(b))
        .map(|b| b.to_string())
        .collect();
    let empty_broker = wanted
        .clone()
        .any(|b| snapshot.replicas_on(b).next().is_none());
    let has_partitions = snapshot.topics.values().any(|t| !t.partitions.is_empty());
    let rebalance = auto_rebalance
        && !in_progress
        && missing.is_empty()
        && empty_broker
        && has_partitions
        && balance == Balance::Unknown;
    let (phase, message) = if !in_progress && !missing.is_empty() {
        (
            ScalePhase::WaitingForBrokers,
            format!(
                "waiting for broker(s) {} to register{}",
                missing.join(", "),
                if auto_rebalance {
                    "; replicas move onto new brokers then"
                } else {
                    ""
                }
            ),
        )
    } else if in_progress || rebalance {
        (
            ScalePhase::Rebalancing,
            format!(
                "moving replicas to even out the brokers; {}",
                plan.progress()
            ),
        )
    } else {
        (ScalePhase::Balanced, "no rebalance in progress".to_string())
    };
    ScaleDecision {
        run: desired,
        cordon: BTreeSet::new(),
        rebalance,
        phase,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::fixtures::snapshot;

    /// The decision with no move in progress, auto-rebalance on, and the balance unknown.
    fn decide_idle(desired: i32, running: i32, snapshot: &MetadataSnapshot) -> ScaleDecision {
        decide(
            desired,
            running,
            snapshot,
            &Plan::default(),
            true,
            "ask for",
            Balance::Unknown,
        )
    }

    #[test]
    fn a_scale_down_drains_first_and_lets_the_brokers_go_only_when_they_hold_nothing() {
        let holding = snapshot(&[0, 1, 2, 3, 4], &[&[0, 3], &[1, 4], &[2, 0]]);
        let d = decide_idle(3, 5, &holding);
        assert_eq!(d.run, 5, "not before the drain");
        assert_eq!(d.cordon, BTreeSet::from([3, 4]));
        assert!(d.rebalance);
        assert_eq!(d.phase, ScalePhase::Draining);
        assert!(d.message.contains("broker(s) 3, 4"), "{}", d.message);

        let drained = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide_idle(3, 5, &drained);
        assert_eq!(d.run, 3);
        assert_eq!(d.phase, ScalePhase::Drained);
        assert_eq!(
            d.cordon,
            BTreeSet::from([3, 4]),
            "they take nothing new while they stop"
        );
        assert!(!d.rebalance);
    }

    #[test]
    fn a_scale_down_below_a_topics_replication_factor_is_refused_and_changes_nothing() {
        let s = snapshot(&[0, 1, 2], &[&[0, 1, 2]]);
        let d = decide_idle(2, 3, &s);
        assert_eq!(d.run, 3);
        assert!(d.cordon.is_empty() && !d.rebalance);
        assert_eq!(d.phase, ScalePhase::ScaleDownRefused);
        assert!(
            d.message.contains("topic 't' keeps 3 replicas")
                && d.message.contains("ask for 3 or more"),
            "{}",
            d.message
        );
        assert_eq!(refusal(3, 3, &s, "ask for"), None);
        assert_eq!(refusal(4, 3, &s, "ask for"), None);
    }

    #[test]
    fn a_scale_up_rebalances_once_the_new_brokers_have_registered() {
        let before = snapshot(&[0, 1, 2], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide_idle(5, 3, &before);
        assert_eq!(d.run, 5);
        assert!(!d.rebalance, "brokers 3 and 4 are not registered yet");
        assert_eq!(d.phase, ScalePhase::WaitingForBrokers);
        assert!(d.message.contains("broker(s) 3, 4"), "{}", d.message);
        let joined = snapshot(&[0, 1, 2, 3, 4], &[&[0, 1], &[1, 2], &[2, 0]]);
        let d = decide_idle(5, 5, &joined);
        assert!(d.rebalance);
        assert_eq!(d.phase, ScalePhase::Rebalancing);
        let d = decide(
            5,
            5,
            &joined,
            &Plan::default(),
            false,
            "ask for",
            Balance::Unknown,
        );
        assert!(!d.rebalance, "auto-rebalance off");
        assert_eq!(d.phase, ScalePhase::Balanced);
        // A broker that stays empty after balancing (fewer replicas than brokers) is not a
        // rebalance forever.
        let d = decide(
            5,
            5,
            &joined,
            &Plan::default(),
            true,
            "ask for",
            Balance::Balanced,
        );
        assert!(!d.rebalance);
        assert_eq!(d.phase, ScalePhase::Balanced);
    }
}
