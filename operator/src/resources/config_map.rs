use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{
    DATA_DIR, GRPC_PORT, HTTP_PORT, KAFKA_PORT, Names, SHUTDOWN_TIMEOUT_SECONDS, Settings,
    owned_meta,
};
use crate::crd::Cluster;

/// The brokers' configuration, as the environment variables `tributary-broker` reads.
pub fn config_map(cluster: &Cluster, settings: &Settings) -> ConfigMap {
    let defaults: Vec<String> = cluster
        .topic_defaults()
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
            "TRIBUTARY_KAFKA_LISTEN".to_string(),
            format!("0.0.0.0:{KAFKA_PORT}"),
        ),
        (
            "TRIBUTARY_AUTO_CREATE_TOPICS".to_string(),
            cluster
                .spec
                .config
                .auto_create_topics
                .unwrap_or(true)
                .to_string(),
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
        ("TRIBUTARY_CLUSTER".to_string(), cluster.key()),
        (
            "TRIBUTARY_DEFAULT_REPLICATION_FACTOR".to_string(),
            cluster.default_replication_factor().to_string(),
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
