use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{
    DATA_DIR, GRPC_PORT, HTTP_PORT, Names, SHUTDOWN_TIMEOUT_SECONDS, Settings, owned_meta,
};
use crate::crd::Cluster;

/// The replication factor of topics that set none: the spec's, else 3, or the broker
/// count when smaller.
pub fn default_replication_factor(cluster: &Cluster) -> i32 {
    cluster
        .spec
        .config
        .default_replication_factor
        .unwrap_or_else(|| cluster.spec.replicas.min(3))
}

/// Cluster-wide topic configuration defaults as Kafka keys and values.
pub fn topic_defaults(cluster: &Cluster) -> BTreeMap<String, String> {
    let config = &cluster.spec.config;
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

/// The brokers' configuration, as the environment variables `tributary-broker` reads.
pub fn config_map(cluster: &Cluster, settings: &Settings) -> ConfigMap {
    let defaults: Vec<String> = topic_defaults(cluster)
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let mut data = BTreeMap::from([
        ("TRIBUTARY_DATA_DIR".to_string(), DATA_DIR.to_string()),
        (
            "TRIBUTARY_LISTEN".to_string(),
            format!("0.0.0.0:{GRPC_PORT}"),
        ),
        (
            "TRIBUTARY_HTTP_LISTEN".to_string(),
            format!("0.0.0.0:{HTTP_PORT}"),
        ),
        (
            "TRIBUTARY_CONTROLLER".to_string(),
            settings.controller_address.clone(),
        ),
        // The operator's controller serves every cluster; brokers name theirs.
        (
            "TRIBUTARY_CLUSTER".to_string(),
            crate::hosting::cluster_key(
                &cluster.namespace().unwrap_or_default(),
                &cluster.name_any(),
            ),
        ),
        (
            "TRIBUTARY_DEFAULT_REPLICATION_FACTOR".to_string(),
            default_replication_factor(cluster).to_string(),
        ),
        (
            "TRIBUTARY_SHUTDOWN_TIMEOUT_MS".to_string(),
            (SHUTDOWN_TIMEOUT_SECONDS * 1000).to_string(),
        ),
        ("TRIBUTARY_LOG".to_string(), "info".to_string()),
        (
            "TRIBUTARY_REPLICATION_THROTTLE_BYTES_PER_SEC".to_string(),
            cluster
                .spec
                .rebalance
                .throttle_bytes_per_second
                .unwrap_or(0)
                .to_string(),
        ),
    ]);
    if !defaults.is_empty() {
        data.insert("TRIBUTARY_TOPIC_DEFAULTS".into(), defaults.join(","));
    }
    ConfigMap {
        metadata: owned_meta(cluster, &Names::of(cluster).config_map),
        data: Some(data),
        ..ConfigMap::default()
    }
}
