//! `Topic`: a topic of a Tributary cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A topic of the Cluster named in `cluster`: its partitions, replication factor and
/// configuration overrides. The operator creates it through the cluster's controller and
/// mirrors each partition's replicas, leader and in-sync replicas in the status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    cel,
    status = "TopicStatus",
    shortname = "tt",
    category = "tributary",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"RF","type":"integer","jsonPath":".spec.replicationFactor"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 249").message("a topic name has at most 249 characters"),
)]
#[x_kube(validation = Rule::new(
    "has(self.replicationFactor) == has(oldSelf.replicationFactor) && (!has(self.replicationFactor) || self.replicationFactor == oldSelf.replicationFactor)"
).message("replicationFactor cannot change after the topic is created: create a new topic with the replication factor you want and move the data"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The Cluster, in the same namespace, that holds the topic. Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster cannot change: create the topic in the other cluster instead"))]
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// Number of partitions. It may grow; it never shrinks (records keep their partition).
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions can only grow: a topic's partitions cannot be removed; create a new topic with fewer"))]
    pub partitions: i32,
    /// Replicas of each partition, at most the cluster's broker count. Defaults to the
    /// cluster's `config.defaultReplicationFactor`. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replication_factor: Option<i32>,
    /// Topic configuration overrides with Kafka's keys, for example `retention.ms`,
    /// `retention.bytes`, `segment.bytes`, `min.insync.replicas`, `cleanup.policy`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = crate::crd::config_keys_rule("self"))]
    #[schemars(extend("maxProperties" = 64))]
    pub config: BTreeMap<String, IntOrString>,
}

/// What the cluster has made of the topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Degraded, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The topic's id in the cluster; a re-created topic gets a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The epoch of the controller that last wrote the partitions; controllers of older
    /// epochs may not write them any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_epoch: Option<i64>,
    /// The configuration overrides in effect, as the controller recorded them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Each partition's replicas, leader and in-sync replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub partitions: Vec<PartitionStatus>,
}

/// One partition as the controller last recorded it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub id: i32,
    /// Broker ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The leader's broker id, or -1 when the partition has none.
    pub leader: i32,
    /// Replicas that have every acknowledged record.
    pub isr: Vec<i32>,
    /// Bumped on every change of leader.
    pub leader_epoch: i32,
    /// Bumped on every change of leader or in-sync replicas.
    #[serde(default)]
    pub partition_epoch: i32,
}
