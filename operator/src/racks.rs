//! Each broker's rack, from a label of the node its pod runs on (`spec.rack.topologyKey`).
//! Pods do not carry their node's labels, so the operator reads them and hands them to the
//! cluster's controller, which places a partition's replicas in different racks. A broker
//! whose node lacks the label has no rack, and the `RackAware` condition says so.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::is_status;
use crate::context::Error;
use crate::crd::{Cluster, condition};
use crate::resources::{self, POD_INDEX_LABEL};

/// What the operator found out about the racks of a cluster's scheduled brokers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Racks {
    /// Broker id → rack, for brokers whose node has the label.
    pub known: BTreeMap<i32, String>,
    /// Brokers whose node has no such label (or an empty one), with the node.
    pub unlabelled: BTreeMap<i32, String>,
    /// Broker pods not scheduled to a node yet.
    pub unscheduled: Vec<i32>,
    /// Why Nodes could not be read (403, or the API server failing), if they could not:
    /// the racks found are then incomplete, and the controller keeps the ones it has.
    pub unreadable: Option<String>,
}

/// The racks of the cluster's brokers whose pods are scheduled; `None` when the cluster
/// does not ask for racks.
pub async fn resolve(
    client: &Client,
    cluster: &Cluster,
    namespace: &str,
) -> Result<Option<Racks>, Error> {
    let Some(rack) = &cluster.spec.rack else {
        return Ok(None);
    };
    let selector = resources::selector(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let nodes_api = Api::<Node>::all(client.clone());
    let mut racks = Racks::default();
    let mut node_labels: BTreeMap<String, Option<String>> = BTreeMap::new();
    for pod in &pods.items {
        let Some(id) = broker_id(pod) else {
            continue;
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            racks.unscheduled.push(id);
            continue;
        };
        if !node_labels.contains_key(&node) {
            let label = match nodes_api.get_opt(&node).await {
                Ok(found) => found.and_then(|n| n.labels().get(&rack.topology_key).cloned()),
                Err(error) => {
                    racks.unreadable = Some(if is_status(&error, 403) {
                        "the operator may not get Nodes: grant it get on nodes (the ClusterRole for nodes that its install makes) or remove spec.rack".to_string()
                    } else {
                        format!("reading Node {node} failed: {error}")
                    });
                    return Ok(Some(racks));
                }
            };
            node_labels.insert(node.clone(), label);
        }
        match node_labels[&node].as_deref() {
            Some(value) if !value.is_empty() => {
                racks.known.insert(id, value.to_string());
            }
            _ => {
                racks.unlabelled.insert(id, node);
            }
        }
    }
    Ok(Some(racks))
}

/// A broker pod's id: its ordinal label, or the number its name ends in.
fn broker_id(pod: &Pod) -> Option<i32> {
    pod.labels()
        .get(POD_INDEX_LABEL)
        .cloned()
        .or_else(|| pod.name_any().rsplit('-').next().map(str::to_string))?
        .parse()
        .ok()
}

/// The `RackAware` condition: True when every scheduled broker has a rack, False (a
/// warning) when one's node lacks the label or nodes cannot be read.
pub fn condition(cluster: &Cluster, racks: &Racks) -> Condition {
    let generation = cluster.metadata.generation;
    let key = cluster
        .spec
        .rack
        .as_ref()
        .map_or("", |r| r.topology_key.as_str());
    if let Some(why) = &racks.unreadable {
        return condition::condition(
            condition::RACK_AWARE,
            false,
            "NodesNotReadable",
            format!("{why}; brokers keep the racks they had"),
            generation,
        );
    }
    if !racks.unlabelled.is_empty() {
        let brokers: Vec<String> = racks.unlabelled.keys().map(i32::to_string).collect();
        let nodes: BTreeSet<&str> = racks.unlabelled.values().map(String::as_str).collect();
        return condition::condition(
            condition::RACK_AWARE,
            false,
            "NodeLabelMissing",
            format!(
                "node(s) {} of broker(s) {} have no label {key}: those brokers have no rack and their partitions' replicas may share one; label the nodes or change spec.rack.topologyKey",
                nodes.into_iter().collect::<Vec<_>>().join(", "),
                brokers.join(", ")
            ),
            generation,
        );
    }
    let distinct: BTreeSet<&str> = racks.known.values().map(String::as_str).collect();
    let pending = if racks.unscheduled.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = racks.unscheduled.iter().map(i32::to_string).collect();
        format!(
            "; broker(s) {} not scheduled yet, their racks to follow",
            ids.join(", ")
        )
    };
    condition::condition(
        condition::RACK_AWARE,
        true,
        "RacksFromNodes",
        format!(
            "{} broker(s) in {} rack(s) ({}) from node label {key}{pending}",
            racks.known.len(),
            distinct.len(),
            distinct.into_iter().collect::<Vec<_>>().join(", ")
        ),
        generation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, index: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        if let Some(index) = index {
            pod.metadata.labels = Some(BTreeMap::from([(
                POD_INDEX_LABEL.to_string(),
                index.to_string(),
            )]));
        }
        pod
    }

    #[test]
    fn a_broker_id_is_the_pods_ordinal() {
        assert_eq!(broker_id(&pod("demo-broker-7", Some("3"))), Some(3));
        assert_eq!(broker_id(&pod("demo-broker-7", None)), Some(7));
        assert_eq!(broker_id(&pod("demo-broker", None)), None);
    }
}
