use std::path::PathBuf;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Deserialize;

use super::*;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn topic(partitions: i32) -> Topic {
    let mut topic: Topic = serde_yaml::from_str(&format!(
        "apiVersion: tributary.dev/v1alpha1\nkind: Topic\nmetadata: {{name: orders}}\n\
         spec: {{cluster: demo, partitions: {partitions}, replicationFactor: 3}}"
    ))
    .unwrap();
    topic.meta_mut().namespace = Some("default".into());
    topic
}

fn rejected_because(result: Result<(), kube::core::cel::ValidationErrors>, message: &str) {
    let error = result.expect_err("the rule should refuse this").to_string();
    assert!(error.contains(message), "expected '{message}' in: {error}");
}

#[test]
fn the_committed_crds_are_what_the_operator_prints() {
    for (file, crd) in all() {
        let path = repository().join("crds").join(&file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == to_yaml(&crd),
            "crds/{file} is stale: regenerate it with `cargo run -p tributary-operator -- crd --write crds`"
        );
    }
}

#[test]
fn the_examples_are_valid_resources() {
    let cluster: Cluster = serde_yaml::from_str(
        &std::fs::read_to_string(repository().join("examples/cluster.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(cluster.spec.replicas, 3);
    cluster.validate_cel().unwrap();
    let text = std::fs::read_to_string(repository().join("examples/topics.yaml")).unwrap();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let topic = Topic::deserialize(document).unwrap();
        assert_eq!(topic.spec.cluster, cluster.metadata.name.clone().unwrap());
        topic.validate_cel().unwrap();
    }
}

#[test]
fn partitions_may_grow_but_never_shrink() {
    topic(6).validate_cel_update(&topic(3)).unwrap();
    rejected_because(
        topic(2).validate_cel_update(&topic(3)),
        "partitions can only grow",
    );
}

#[test]
fn a_topics_cluster_and_replication_factor_cannot_change() {
    let mut moved = topic(3);
    moved.spec.cluster = "other".into();
    rejected_because(
        moved.validate_cel_update(&topic(3)),
        "cluster cannot change",
    );
    let mut more_copies = topic(3);
    more_copies.spec.replication_factor = Some(5);
    rejected_because(
        more_copies.validate_cel_update(&topic(3)),
        "replicationFactor cannot change",
    );
    let mut defaulted = topic(3);
    defaulted.spec.replication_factor = None;
    rejected_because(
        defaulted.validate_cel_update(&topic(3)),
        "replicationFactor cannot change",
    );
}

#[test]
fn unknown_topic_configuration_keys_are_refused_with_the_known_ones() {
    let mut t = topic(3);
    t.spec
        .config
        .insert("retention.ms".into(), IntOrString::Int(1000));
    t.validate_cel().unwrap();
    t.spec
        .config
        .insert("retention.hours".into(), IntOrString::Int(1));
    rejected_because(t.validate_cel(), "the keys are: segment.bytes");
}

#[test]
fn a_clusters_storage_cannot_change() {
    let cluster = |size: &str| -> Cluster {
        serde_yaml::from_str(&format!(
            "apiVersion: tributary.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\n\
             spec: {{replicas: 3, storage: {{size: {size}}}}}"
        ))
        .unwrap()
    };
    cluster("10Gi")
        .validate_cel_update(&cluster("10Gi"))
        .unwrap();
    rejected_because(
        cluster("20Gi").validate_cel_update(&cluster("10Gi")),
        "storage cannot change",
    );
}

#[test]
fn a_cluster_spec_gets_defaults_for_what_it_leaves_out() {
    let cluster: Cluster = serde_yaml::from_str(
        "apiVersion: tributary.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec: {replicas: 1}",
    )
    .unwrap();
    assert_eq!(cluster.spec.image, default_image());
    assert_eq!(cluster.spec.storage.size, "10Gi");
    assert!(cluster.spec.rebalance.auto_on_scale);
    assert_eq!(cluster.spec.self_healing.after, "10m");
}
