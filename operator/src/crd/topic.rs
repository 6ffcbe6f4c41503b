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
#[x_kube(validation = Rule::new("has(self.topicName) == has(oldSelf.topicName)").message("topicName cannot be added or removed after the topic is created: it names the topic in the cluster"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The topic's name in the cluster when it differs from this object's name, for names
    /// Kubernetes does not allow (uppercase letters, `_`); Kafka's rules apply: letters,
    /// digits, `.`, `_` and `-`, at most 249. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topicName cannot change: create a new Topic for the other name"))]
    #[x_kube(validation = Rule::new("self != '.' && self != '..'").message("a topic cannot be named '.' or '..'"))]
    pub topic_name: Option<String>,
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
    /// How many partitions the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<i32>,
    /// Partitions without a leader (none of their in-sync replicas' brokers is up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leaderless_partitions: i32,
    /// Partitions with replicas out of sync.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub under_replicated_partitions: i32,
    /// The first partitions (by id, at most 20) without a leader or with replicas out of
    /// sync; `tributary topic describe` lists every partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub unhealthy_partitions: Vec<PartitionStatus>,
    /// The controller's record of every partition (replicas, leader, in-sync replicas,
    /// epochs), compressed so that the largest topic fits in one object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// Every partition, as operators before `assignment` recorded them: read once, then
    /// replaced by `assignment`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub partitions: Vec<PartitionStatus>,
}

impl Topic {
    /// The topic's name in the cluster: `spec.topicName`, or the object's name.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
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
