//! `Cluster`: a Tributary cluster, its brokers as a StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

/// The broker image when the spec names none: the one this operator was built with.
pub fn default_image() -> String {
    format!(
        "ghcr.io/tributary-dev/tributary:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A Tributary cluster: `replicas` brokers in a StatefulSet, each with its own volume, and
/// the cluster controller, which the operator runs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    cel,
    status = "ClusterStatus",
    // `kubectl scale clusters.tributary.dev NAME --replicas=N` sets spec.replicas.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyReplicas"
    ),
    shortname = "tc",
    category = "tributary",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 40").message("a cluster name has at most 40 characters, so its pods' and services' names stay within Kubernetes' limits"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of brokers. Broker ids are the pods' ordinals: 0 to replicas - 1.
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// The broker image (it also holds the `tributary` CLI).
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    pub storage: StorageSpec,
    /// What happens to the brokers' volumes when the Cluster is deleted or scaled down.
    #[serde(default)]
    pub persistent_volume_claim_retention_policy: VolumeRetention,
    /// CPU and memory for each broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Spread replicas across racks (zones): brokers are kept apart across this topology
    /// key and each partition's replicas go to different racks when there are enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackSpec>,
    #[serde(default)]
    pub config: ClusterConfig,
    #[serde(default)]
    pub rebalance: RebalanceSpec,
    #[serde(default)]
    pub self_healing: SelfHealingSpec,
    /// Additions to the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Each broker's volume. Cannot change once the cluster exists (a StatefulSet's volume
/// claims are fixed).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("storage cannot change after the cluster is created: a StatefulSet's volume claims are fixed; resize the PersistentVolumeClaims directly"))]
pub struct StorageSpec {
    /// Volume size, for example 100Gi.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    /// The StorageClass; the cluster's default class when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "10Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// `namespace/name` of a Cluster: how the operator names the controller it hosts for it,
/// and how its brokers name their cluster.
pub fn cluster_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Cluster {
    /// `namespace/name` (see [`cluster_key`]).
    pub fn key(&self) -> String {
        cluster_key(&self.namespace().unwrap_or_default(), &self.name_any())
    }

    /// The replication factor of topics that set none: the spec's, else 3, or the broker
    /// count when smaller.
    pub fn default_replication_factor(&self) -> i32 {
        self.spec
            .config
            .default_replication_factor
            .unwrap_or_else(|| self.spec.replicas.min(3))
    }

    /// Cluster-wide topic configuration defaults as Kafka keys and values.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let config = &self.spec.config;
        let mut defaults = crate::crd::config_strings(&config.topic_defaults);
        let named = [
            (
                "min.insync.replicas",
                config.min_insync_replicas.map(i64::from),
            ),
            ("retention.ms", config.retention_ms),
            ("retention.bytes", config.retention_bytes),
            ("segment.bytes", config.segment_bytes),
        ];
        for (key, value) in named {
            if let Some(value) = value {
                defaults.insert(key.to_string(), value.to_string());
            }
        }
        defaults
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RackSpec {
    /// The node label whose value is a broker's rack, for example
    /// topology.kubernetes.io/zone.
    #[schemars(length(min = 1))]
    pub topology_key: String,
}

/// Cluster-wide defaults for topics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Replication factor of topics that do not set one (default: 3, or the broker count
    /// when smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub default_replication_factor: Option<i32>,
    /// Default `min.insync.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_insync_replicas: Option<i32>,
    /// Default `retention.ms`; -1 keeps records forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    /// Default `retention.bytes` per partition; -1 for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// Default `segment.bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 2147483647))]
    pub segment_bytes: Option<i64>,
    /// Whether a topic a Kafka client asks for by name is created when it does not exist
    /// (Kafka's auto.create.topics.enable; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create_topics: Option<bool>,
    /// Defaults for any other topic configuration key (Kafka's names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = crate::crd::config_keys_rule("self"))]
    #[schemars(extend("maxProperties" = 64))]
    pub topic_defaults: BTreeMap<String, IntOrString>,
}

/// How the cluster moves partitions when brokers come and go.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Move replicas onto new brokers when the cluster grows.
    #[serde(default = "yes")]
    pub auto_on_scale: bool,
    /// Partitions moved at the same time.
    #[serde(default = "default_max_concurrent_moves")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_moves: i32,
    /// Replication bytes per second for replicas catching up during a move; no limit when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub throttle_bytes_per_second: Option<i64>,
}

fn yes() -> bool {
    true
}

fn default_max_concurrent_moves() -> i32 {
    2
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            auto_on_scale: true,
            max_concurrent_moves: default_max_concurrent_moves(),
            throttle_bytes_per_second: None,
        }
    }
}

/// The StatefulSet's `persistentVolumeClaimRetentionPolicy` for the brokers' volumes.
/// Deleting a Cluster keeps its logs by default (a Cluster re-created under the same name
/// then finds another cluster's logs: its brokers refuse to start until those volumes are
/// deleted); scaling down deletes the volumes of the brokers removed, which the operator
/// has drained of replicas first.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRetention {
    #[serde(default = "retain")]
    pub when_deleted: RetentionAction,
    #[serde(default = "delete")]
    pub when_scaled: RetentionAction,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionAction {
    Retain,
    Delete,
}

impl RetentionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionAction::Retain => "Retain",
            RetentionAction::Delete => "Delete",
        }
    }
}

fn retain() -> RetentionAction {
    RetentionAction::Retain
}

fn delete() -> RetentionAction {
    RetentionAction::Delete
}

impl Default for VolumeRetention {
    fn default() -> Self {
        Self {
            when_deleted: retain(),
            when_scaled: delete(),
        }
    }
}

/// Re-creating the replicas of a broker that stays away.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelfHealingSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a broker may be gone before its replicas are re-created on the others,
    /// for example 30s, 10m, 1h30m.
    #[serde(default = "default_heal_after")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub after: String,
}

fn default_heal_after() -> String {
    "10m".into()
}

impl Default for SelfHealingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            after: default_heal_after(),
        }
    }
}

/// Additions to the broker pod template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the operator's anti-affinity (brokers spread across nodes, or racks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// What the cluster looks like now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Running, Reconciling, Degraded, Rebalancing or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Broker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready, Reconciling, Degraded and Rebalancing, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The brokers the controller knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub brokers: Vec<BrokerStatus>,
    /// Partitions with fewer in-sync replicas than replicas.
    #[serde(default)]
    pub under_replicated_partitions: i32,
    /// Where clients bootstrap from, one entry per listener (`kafka` for Kafka's clients and
    /// tools, `grpc` for Tributary's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub listeners: Vec<ListenerStatus>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// `kafka` or `grpc`.
    pub name: String,
    /// host:port to bootstrap from (the cluster's client Service).
    pub bootstrap_servers: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub id: i32,
    /// Where clients reach it (host:port).
    pub address: String,
    /// In session with the controller.
    pub alive: bool,
    /// Partition replicas it holds.
    pub replicas: i32,
    /// Partitions it leads.
    pub leaders: i32,
}
