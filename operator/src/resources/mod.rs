//! The objects a `Cluster` becomes, as pure functions of its spec: ServiceAccount, headless
//! and client Services, ConfigMap, StatefulSet and PodDisruptionBudget. Each carries the
//! Cluster as its controlling owner, so Kubernetes deletes them with it.

pub mod config_map;
mod pdb;
mod service_account;
mod services;
mod statefulset;

pub use config_map::config_map;
pub use pdb::pod_disruption_budget;
pub use service_account::service_account;
pub use services::{client_service, headless_service};
pub use statefulset::statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::Cluster;

/// The broker's gRPC port: clients and other brokers.
pub const GRPC_PORT: i32 = 9095;
/// The Kafka protocol: Kafka's clients and tools.
pub const KAFKA_PORT: i32 = 9092;
/// Health, readiness, preStop and metrics.
pub const HTTP_PORT: i32 = 8080;
/// Where each broker's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/tributary";
/// How long a broker may take to stop: half for handing leaderships over, the rest for
/// requests in flight and closing its logs. The pod's grace period is longer.
pub const SHUTDOWN_TIMEOUT_SECONDS: i64 = 30;

/// What the operator tells every cluster's brokers, beyond the Cluster's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// host:port of the controller the operator runs, as brokers reach it (a Service).
    pub controller_address: String,
}

/// Kubernetes labels each StatefulSet pod with its ordinal, which is the broker id.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Names of a cluster's objects.
pub struct Names {
    /// The StatefulSet, its ServiceAccount, ConfigMap and PodDisruptionBudget; pods are
    /// `<statefulset>-<broker id>`.
    pub statefulset: String,
    /// The headless Service that gives each pod its DNS name.
    pub headless: String,
    /// The Service clients bootstrap from: the cluster's own name.
    pub client: String,
    pub config_map: String,
    /// The ConfigMap where the controller keeps what no Topic's status holds: its epoch,
    /// broker incarnations, producer ids, and topics made outside Kubernetes.
    pub metadata: String,
}

impl Names {
    pub fn of(cluster: &Cluster) -> Self {
        let name = cluster.name_any();
        Self {
            statefulset: format!("{name}-broker"),
            headless: format!("{name}-brokers"),
            client: name.clone(),
            config_map: format!("{name}-broker-config"),
            metadata: format!("{name}-controller-metadata"),
        }
    }
}

/// Labels that select a cluster's broker pods.
pub fn selector(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "tributary".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), cluster.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// Labels on every object of a cluster.
pub fn labels(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut labels = selector(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "tributary-operator".into(),
    );
    labels
}

/// Metadata of an object named `name` that belongs to `cluster`.
pub fn owned_meta(cluster: &Cluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: cluster.namespace(),
        labels: Some(labels(cluster)),
        owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Everything a Cluster owns, in the order it is applied.
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub headless_service: Service,
    pub client_service: Service,
    pub config_map: ConfigMap,
    pub statefulset: StatefulSet,
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// The objects `cluster` becomes.
pub fn owned(cluster: &Cluster, settings: &Settings) -> Owned {
    let config_map = config_map(cluster, settings);
    let hash = config_hash(&config_map);
    Owned {
        service_account: service_account(cluster),
        headless_service: headless_service(cluster),
        client_service: client_service(cluster),
        statefulset: statefulset(cluster, &hash),
        config_map,
        pod_disruption_budget: pod_disruption_budget(cluster),
    }
}

/// A digest of the broker configuration; it changes (and the pods roll) when it does.
fn config_hash(config_map: &ConfigMap) -> String {
    let data = serde_json::to_vec(&config_map.data).expect("a ConfigMap serializes");
    format!("{:08x}", crc32c::crc32c(&data))
}

impl Owned {
    /// Each object as JSON (with its apiVersion and kind), as `kubectl apply` takes it.
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        let json =
            |object: serde_json::Result<serde_json::Value>| object.expect("objects serialize");
        vec![
            json(serde_json::to_value(&self.service_account)),
            json(serde_json::to_value(&self.headless_service)),
            json(serde_json::to_value(&self.client_service)),
            json(serde_json::to_value(&self.config_map)),
            json(serde_json::to_value(&self.statefulset)),
            json(serde_json::to_value(&self.pod_disruption_budget)),
        ]
    }
}

#[cfg(test)]
mod tests;
