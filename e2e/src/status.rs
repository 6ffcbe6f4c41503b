//! Readings of the status the operator writes on Clusters and Topics: when a cluster has
//! settled, whether its brokers are balanced, when a topic is ready.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use tributary_broker::metadata::PartitionRecord;
use tributary_operator::crd::condition::{DEGRADED, READY, REBALANCING, RECONCILING};
use tributary_operator::crd::{BrokerStatus, Cluster, Topic};
use tributary_operator::kube_store::assignment;

use crate::wait::Check;

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn is(conditions: &[Condition], type_: &str, status: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status)
}

/// `Ready=True (AllBrokersReady: 3 of 3 brokers are ready), ...`
pub fn summary(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return "no conditions yet".into();
    }
    conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cluster runs `spec.replicas` brokers of its current spec, every one of them in
/// session with the controller and no other, no partition is under-replicated, and no
/// rebalance is in progress.
pub fn cluster_settled(cluster: &Cluster) -> Check<()> {
    let name = cluster.name_any();
    let Some(status) = &cluster.status else {
        return Check::Waiting(format!("the Cluster {name} has no status yet"));
    };
    let replicas = cluster.spec.replicas;
    let state = format!(
        "phase {}, {} of {replicas} brokers ready, {} under-replicated partitions, brokers [{}]; {}",
        status.phase.as_deref().unwrap_or("-"),
        status.ready_replicas,
        status.under_replicated_partitions,
        brokers(&status.brokers),
        summary(&status.conditions)
    );
    let current = status.observed_generation.is_some()
        && status.observed_generation == cluster.metadata.generation;
    let conditions = &status.conditions;
    let ids: Vec<i32> = status.brokers.iter().map(|b| b.id).collect();
    let settled = current
        && is(conditions, READY, "True")
        && is(conditions, RECONCILING, "False")
        && is(conditions, DEGRADED, "False")
        && !is(conditions, REBALANCING, "True")
        && status.ready_replicas == replicas
        && ids == (0..replicas).collect::<Vec<_>>()
        && status.brokers.iter().all(|b| b.alive)
        && status.under_replicated_partitions == 0;
    if settled {
        Check::Done(())
    } else if !current {
        Check::Waiting(format!(
            "status of generation {:?}, spec at {:?}: {state}",
            status.observed_generation, cluster.metadata.generation
        ))
    } else {
        Check::Waiting(state)
    }
}

/// Every broker holds as many replicas as any other, give or take one, and leads as many
/// partitions, give or take one.
///
/// A finished rebalance reaches both without waiting for the controller's periodic
/// preferred-leader election (every 300 s): the balancer evens out the preferred leaders
/// (the first replicas) too, each move ends with leadership on its target's preferred
/// leader, and a partition left as it was keeps its leader. Leaders stray from the
/// preferred ones only when a broker stops during the test; then the next election (within
/// the scale waits' ten minutes) brings them back.
pub fn balanced(brokers: &[BrokerStatus]) -> Result<(), String> {
    let spread = |count: fn(&BrokerStatus) -> i32| {
        let counts = brokers.iter().map(count);
        counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
    };
    if spread(|b| b.replicas) > 1 || spread(|b| b.leaders) > 1 {
        return Err(format!(
            "brokers not balanced: [{}]",
            self::brokers(brokers)
        ));
    }
    Ok(())
}

/// `0: 3 replicas, 1 leader; 1: ...`
pub fn brokers(brokers: &[BrokerStatus]) -> String {
    brokers
        .iter()
        .map(|b| {
            format!(
                "{}{}: {} replicas, {} leaders",
                b.id,
                if b.alive { "" } else { " (down)" },
                b.replicas,
                b.leaders
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every partition of the topic as the controller recorded it (from `status.assignment`,
/// the compact form; `status.partitions` of older operators too), in partition order.
pub fn partitions(topic: &Topic) -> anyhow::Result<Vec<PartitionRecord>> {
    let status = topic.status.clone().unwrap_or_default();
    match &status.assignment {
        Some(value) => assignment::decode(value)
            .map_err(|e| anyhow::anyhow!("the Topic {}: status.assignment: {e}", topic.name_any())),
        None => Ok(status
            .partitions
            .iter()
            .map(|p| PartitionRecord {
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: 0,
            })
            .collect()),
    }
}

/// The topic has the partitions its spec asks for, each with a leader and all its
/// replicas in sync, and says Ready.
pub fn topic_ready(topic: &Topic) -> Check<()> {
    let name = topic.name_any();
    let Some(status) = &topic.status else {
        return Check::Waiting(format!("the Topic {name} has no status yet"));
    };
    let count = status.partition_count.unwrap_or(0);
    let ready = is(&status.conditions, READY, "True")
        && status.observed_generation == topic.metadata.generation
        && count == topic.spec.partitions
        && status.leaderless_partitions == 0
        && status.under_replicated_partitions == 0;
    if ready {
        Check::Done(())
    } else {
        Check::Waiting(format!(
            "{count} of {} partitions, {} without a leader, {} under-replicated; {}",
            topic.spec.partitions,
            status.leaderless_partitions,
            status.under_replicated_partitions,
            summary(&status.conditions)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_broker::controller::ScalePhase;
    use tributary_operator::crd::condition::condition;
    use tributary_operator::crd::{ClusterSpec, ClusterStatus};

    fn broker(id: i32, replicas: i32, leaders: i32) -> BrokerStatus {
        BrokerStatus {
            id,
            address: format!("demo-broker-{id}.demo-brokers.ns.svc:9095"),
            alive: true,
            replicas,
            leaders,
        }
    }

    /// A Cluster with the status the operator writes (the reasons are its reasons).
    fn cluster(replicas: i32, brokers: Vec<BrokerStatus>, rebalancing: bool) -> Cluster {
        let spec: ClusterSpec =
            serde_json::from_value(serde_json::json!({"replicas": replicas})).unwrap();
        let phase = if rebalancing {
            ScalePhase::Rebalancing
        } else {
            ScalePhase::Balanced
        };
        let mut cluster = Cluster::new("demo", spec);
        cluster.metadata.generation = Some(2);
        cluster.status = Some(ClusterStatus {
            observed_generation: Some(2),
            phase: Some("Running".into()),
            ready_replicas: replicas,
            conditions: vec![
                condition(READY, true, "AllBrokersReady", "", Some(2)),
                condition(RECONCILING, false, "UpToDate", "", Some(2)),
                condition(DEGRADED, false, "AllReplicasInSync", "", Some(2)),
                condition(REBALANCING, rebalancing, phase.name(), "", Some(2)),
            ],
            brokers,
            under_replicated_partitions: 0,
            listeners: Vec::new(),
        });
        cluster
    }

    #[test]
    fn a_cluster_has_settled_only_with_exactly_its_brokers_and_no_rebalance() {
        let three = vec![broker(0, 3, 1), broker(1, 3, 1), broker(2, 3, 1)];
        assert!(matches!(
            cluster_settled(&cluster(3, three.clone(), false)),
            Check::Done(())
        ));
        assert!(matches!(
            cluster_settled(&cluster(3, three.clone(), true)),
            Check::Waiting(_)
        ));
        let mut five = three.clone();
        five.extend([broker(3, 0, 0), broker(4, 0, 0)]);
        let Check::Waiting(state) = cluster_settled(&cluster(3, five, false)) else {
            panic!("brokers 3 and 4 are still listed");
        };
        assert!(state.contains("4: 0 replicas"), "{state}");
        let mut stale = cluster(3, three, false);
        stale.metadata.generation = Some(3);
        assert!(matches!(cluster_settled(&stale), Check::Waiting(_)));
    }

    #[test]
    fn balance_allows_a_difference_of_one() {
        assert!(balanced(&[broker(0, 2, 1), broker(1, 2, 1), broker(2, 1, 0)]).is_ok());
        let error = balanced(&[broker(0, 3, 1), broker(1, 3, 1), broker(2, 1, 1)]).unwrap_err();
        assert!(error.contains("2: 1 replicas"), "{error}");
        assert!(balanced(&[broker(0, 2, 2), broker(1, 2, 0)]).is_err());
    }
}
